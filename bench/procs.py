"""Running commands for the benchmarks: wall time, exit code, and (optionally) the peak
resident memory of the whole process tree, sampled from /proc.

A tree's memory is the sum of the RSS of every live descendant at one instant; the
peak is the largest such sum seen. Processes are classed by name so a report can say
what the engine, the language host, the program and the providers each held.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.timeline import keep

PAGE = os.sysconf("SC_PAGE_SIZE")

# What counts as "the engine plus the language host" (and what they start for the
# program): everything Pulumi runs, not the database/proxy processes host scripts start.
PULUMI_KINDS = ("engine", "language host", "program", "provider", "policy")


@dataclass
class Proc:
    pid: int
    ppid: int
    comm: str
    rss: int  # bytes


def read_procs(proc_dir: str = "/proc") -> dict[int, Proc]:
    """Every process: pid → Proc (pid, parent, short name, resident bytes)."""
    out: dict[int, Proc] = {}
    for entry in os.scandir(proc_dir):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc_dir}/{entry.name}/stat", "rb") as fh:
                raw = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        proc = parse_stat(raw)
        if proc is not None:
            out[proc.pid] = proc
    return out


def parse_stat(raw: str) -> Proc | None:
    """One /proc/<pid>/stat line → Proc. The name is in parentheses and may itself
    contain spaces and parentheses, so fields are counted from the last ')'."""
    try:
        pid = int(raw[: raw.index(" ")])
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        rest = raw[raw.rindex(")") + 2 :].split()
        # rest[0] is field 3 (state); ppid is field 4, rss (pages) field 24.
        return Proc(pid, int(rest[1]), comm, int(rest[21]) * PAGE)
    except (ValueError, IndexError):
        return None


def descendants(procs: Mapping[int, Proc], root: int) -> list[Proc]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(procs[pid])
        todo.extend(children.get(pid, []))
    return out


def classify(tree: Sequence[Proc], root: int) -> dict[int, str]:
    """pid → kind: cli (the root), engine, language host, program, provider, policy,
    other (host scripts and what they run)."""
    by_pid = {p.pid: p for p in tree}
    kinds: dict[int, str] = {}

    def kind(p: Proc) -> str:
        if p.pid in kinds:
            return kinds[p.pid]
        if p.pid == root:
            k = "cli"
        elif p.comm == "pulumi":
            k = "engine"
        elif p.comm.startswith("pulumi-language"):
            k = "language host"
        elif p.comm.startswith("pulumi-resource"):
            k = "provider"
        elif p.comm.startswith("pulumi-analyzer"):
            k = "policy"
        elif p.comm.startswith("python"):
            parent = by_pid.get(p.ppid)
            pk = kind(parent) if parent is not None else "other"
            k = {"language host": "program", "provider": "provider", "policy": "policy"}.get(pk, pk)
            if k in ("cli", "engine"):
                k = "other"
        else:
            k = "other"
        kinds[p.pid] = k
        return k

    for p in tree:
        kind(p)
    return kinds


@dataclass
class MemoryPeak:
    """The largest simultaneous RSS seen, of the Pulumi processes and of each kind."""

    pulumi_total: int = 0  # bytes: engine + language host + program + providers + policy
    tree_total: int = 0  # bytes: every process of the tree, the CLI and host scripts too
    by_kind: dict[str, int] = field(default_factory=dict)  # each kind's own peak
    samples: int = 0

    def add(self, tree: Sequence[Proc], kinds: Mapping[int, str]) -> None:
        sums: dict[str, int] = {}
        for p in tree:
            k = kinds.get(p.pid, "other")
            sums[k] = sums.get(k, 0) + p.rss
        self.samples += 1
        self.tree_total = max(self.tree_total, sum(sums.values()))
        self.pulumi_total = max(
            self.pulumi_total, sum(v for k, v in sums.items() if k in PULUMI_KINDS)
        )
        for k, v in sums.items():
            self.by_kind[k] = max(self.by_kind.get(k, 0), v)

    def to_json(self) -> dict:
        return {
            "pulumi_total_mb": self.pulumi_total / 2**20,
            "tree_total_mb": self.tree_total / 2**20,
            "by_kind_mb": {k: v / 2**20 for k, v in sorted(self.by_kind.items())},
            "samples": self.samples,
        }


@dataclass
class Timed:
    argv: list[str]
    seconds: float
    returncode: int
    stdout: str
    stderr: str
    memory: MemoryPeak | None = None
    started: float = 0.0  # wall clock (time.time()) at spawn
    ended: float = 0.0

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def safe_stderr(self) -> str:
        """stderr as it may be shown or kept: an engine log at -v=9 (`--logtostderr`)
        prints every resource input, secrets included, so only its timing lines stay."""
        if "--logtostderr" in self.argv:
            return keep(self.stderr or "")
        return self.stderr or ""

    def tail(self, lines: int = 15) -> str:
        text = self.safe_stderr + "\n" + (self.stdout or "")
        return "\n".join(text.strip().splitlines()[-lines:])


class CommandFailed(RuntimeError):
    def __init__(self, timed: Timed, what: str = "") -> None:
        self.timed = timed
        super().__init__(
            f"{what or ' '.join(timed.argv)} exited {timed.returncode} after {timed.seconds:.1f} s:\n"
            f"{timed.tail()}"
        )


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float = 1800,
    sample_memory: bool = False,
    interval: float = 0.1,
    ok_codes: Sequence[int] | None = (0,),
    log: Path | None = None,
) -> Timed:
    """Runs argv to completion; wall time from spawn to exit. With `sample_memory`, a
    thread walks /proc every `interval` seconds (it costs a little CPU, so timing runs
    leave it off). Raises CommandFailed on an exit code outside `ok_codes`."""
    peak = MemoryPeak() if sample_memory else None
    wall0 = time.time()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        env=dict(env) if env is not None else None,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    stop = threading.Event()
    sampler = None
    if peak is not None:

        def sample() -> None:
            while not stop.is_set():
                procs = read_procs()
                tree = descendants(procs, proc.pid)
                peak.add(tree, classify(tree, proc.pid))
                stop.wait(interval)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[bench] killed after {timeout} s"
    seconds = time.monotonic() - t0
    stop.set()
    if sampler is not None:
        sampler.join()
    timed = Timed(list(argv), seconds, proc.returncode, out, err, peak, wall0, wall0 + seconds)
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as fh:
            fh.write(
                f"$ {' '.join(argv)}  # {seconds:.2f} s, exit {proc.returncode}\n"
                f"{out}{timed.safe_stderr}\n"
            )
    if ok_codes is not None and proc.returncode not in ok_codes:
        raise CommandFailed(timed)
    return timed


def union_seconds(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length covered by at least one of the (start, end) intervals."""
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total
