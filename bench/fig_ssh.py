"""Figure 7: the ssh target on a lab of six hosts, next to the local target in the same run.

Two fleets of the default fleet's shape (groups us and eu, 8 stacks) live side by side,
each in its own bench.fleetenv environment (state, passphrase, Vault, fleet name):

- the local target, on a loopback /16 (the baseline);
- the ssh target on a lab of its own (bench builds it with dbfleet.ops.lab on a /24 of
  198.18.0.0/15 that no interface uses; tests.fleets.lab_fleet_text, one host per node).

Each is brought up from nothing (timed), then both get `ctx.plan.runs` no-change
`dbfleet preview`s of all 8 stacks (policy pack included, as `dbfleet preview` does),
alternating which goes first so that drifting load hits both alike; each ssh preview
is divided by the local one next to it. Every timed ssh command gets a fresh, empty
`DBFLEET_SSH_CONTROL_DIR`, so it opens the connections it needs itself (the cold case:
a run more than ControlPersist after the last one). One more ssh preview reuses the
masters the last one left (the warm case: runs back to back).

SSH connections are counted where they arrive: each lab host's sshd logs every accepted
login at its default LogLevel (INFO) to its own log, and the lines a command added are
the connections it opened to that host. The control sockets a command left in its
directory (one per master) are counted as a cross-check.

Needs root (network namespaces). Everything is removed at the end, also on failure:
the lab fleet destroyed, its masters closed, the lab taken down, both environments closed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from bench import procs
from bench.context import Ctx
from bench.fleetenv import FleetEnv
from bench.markdown import figure_meta, fmt, fmt_ratio, med, table, verdict
from bench.stats import Summary, paired_ratios
from dbfleet.model.stackname import LAYERS
from tests.fleets import lab_fleet_text

GOAL_PREVIEW_RATIO = 1.3
# One connection per host per stack run: a host serves one group, and every stack of
# its group is a run that may touch it.
GOAL_CONNECTIONS_PER_HOST = len(LAYERS)
GROUPS = ("us", "eu")
_ACCEPTED = re.compile(r"\bAccepted \S+ for \S+ from ")


# --------------------------------------------------------------------------- measuring


def accepted(text: str) -> int:
    """Logins an sshd log excerpt records (one per connection)."""
    return sum(1 for line in text.splitlines() if _ACCEPTED.search(line))


def control_sockets(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if stat.S_ISSOCK(p.lstat().st_mode))


def close_masters(directory: Path) -> None:
    """Asks every master connection with a socket in `directory` to exit."""
    for sock in control_sockets(directory):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "lab"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )


class SshLog:
    """Where each lab host's sshd writes its log, and how far it was read."""

    def __init__(self, lab) -> None:
        self.files = {h.address: lab.host_dir(h) / "sshd.log" for h in lab.spec.hosts}
        self.marks: dict[str, int] = {}

    def mark(self) -> None:
        self.marks = {a: (f.stat().st_size if f.exists() else 0) for a, f in self.files.items()}

    def since_mark(self) -> dict[str, int]:
        out = {}
        for address, f in self.files.items():
            with f.open("rb") as fh:
                fh.seek(self.marks.get(address, 0))
                out[address] = accepted(fh.read().decode(errors="replace"))
        return out


def _stacks(doc_text: str) -> tuple[dict[str, float], list[str]]:
    """(seconds per stack, stacks with changes or errors) of a `--json` document."""
    try:
        doc = json.loads(doc_text)
    except json.JSONDecodeError:
        return {}, ["(no JSON document)"]
    secs = {s["stack"]: s["seconds"] for s in doc.get("stacks", []) if "stack" in s}
    return secs, list(doc.get("changed_stacks") or []) + list(doc.get("failed_stacks") or [])


class LabFleet:
    """The lab fleet's environment, its lab, and one fresh control directory per command."""

    def __init__(self, ctx: Ctx) -> None:
        from dbfleet.ops.lab import Lab, free_lab_network, read_spec

        self.net = free_lab_network()
        self.fe = FleetEnv(
            "ssh-lab",
            fleet_text=lambda name, _octet: lab_fleet_text(name, self.net, GROUPS),
            code=ctx.code,
            log_dir=ctx.logs,
        )
        self.lab = Lab(read_spec(self.fe.spec), self.fe.home)
        self.log = SshLog(self.lab)
        self.controls: list[Path] = []
        self.lab_up = False
        self.retried: list[str] = []

    def new_control(self) -> Path:
        # Short (a socket path is at most 107 bytes) and private (mkdtemp: 0700).
        path = Path(tempfile.mkdtemp(prefix="dbf-ctl-", dir="/tmp"))
        self.controls.append(path)
        self.fe.base_env["DBFLEET_SSH_CONTROL_DIR"] = str(path)
        return path

    def counted(self, *args: str, control: Path | None = None, **kw) -> tuple[procs.Timed, dict]:
        """`dbfleet ARGS` in a control directory (a fresh one unless given), with the
        connections it opened per host and the masters it left."""
        if control is None:
            control = self.new_control()
        else:
            self.fe.base_env["DBFLEET_SSH_CONTROL_DIR"] = str(control)
        self.log.mark()
        t = self.fe.dbfleet(*args, **kw)
        return t, {"per_host": self.log.since_mark(), "masters": len(control_sockets(control))}

    def close(self, keep: bool) -> list[str]:
        """Destroys the fleet, closes the masters, takes the lab down, closes the
        environment; returns what is left undone (`retried`: what a second try fixed)."""
        problems: list[str] = []
        fe = self.fe
        if self.lab_up and fe.vault_started and (fe.home / "state").exists():
            # Twice at most: the lab's hosts share one /etc/passwd, and on a loaded machine
            # the group's hosts removing its OS user at once can collide; the next run
            # finds it gone and converges.
            for attempt in (1, 2):
                self.new_control()
                d = fe.dbfleet("destroy", "--yes", "-q", ok_codes=None, timeout=900)
                if d.returncode == 0:
                    # Destroyed: close() below only purges the Vault and removes the directory.
                    shutil.rmtree(fe.home / "state", ignore_errors=True)
                    break
                failed = f"destroy exited {d.returncode}: {_one_line(d.tail(5))}"
                (problems if attempt == 2 else self.retried).append(failed)
        for control in self.controls:
            close_masters(control)
            shutil.rmtree(control, ignore_errors=True)
        # Twice at most too: a namespace's veth can vanish between lab down's check and its
        # `ip link del`; the second pass finds the rest from the lab's state file.
        for attempt in (1, 2):
            try:
                self.lab.down(fe.env)
                break
            except Exception as exc:  # noqa: BLE001 — the environment is still closed
                (problems if attempt == 2 else self.retried).append(f"lab down: {exc}")
        return problems + fe.close(keep=keep)


PREVIEW = ("preview", "--json", "-")


def _preview(fe: FleetEnv) -> procs.Timed:
    return fe.dbfleet(*PREVIEW, timeout=900, ok_codes=(0, 2))


def run(ctx: Ctx) -> dict:
    if os.geteuid() != 0:
        raise RuntimeError("the lab needs root (network namespaces): run python -m bench as root")
    local = FleetEnv("ssh-local", code=ctx.code, log_dir=ctx.logs)
    lab: LabFleet | None = None
    out: dict = {
        "goal_preview_ratio": GOAL_PREVIEW_RATIO,
        "goal_connections_per_host": GOAL_CONNECTIONS_PER_HOST,
    }
    try:
        ctx.say(f"ssh: local fleet up from nothing (127.{local.octet}.0.0/16)")
        local.start_vault()
        out["local_up"] = local.dbfleet("up", "-q", timeout=1800).seconds
        lab = LabFleet(ctx)
        fe = lab.fe
        out["net"] = f"{lab.net}.0/24"
        out["hosts"] = {h.address: f"{h.group}/{h.region}" for h in lab.lab.spec.hosts}
        ctx.say(f"ssh: lab of {len(out['hosts'])} hosts on {out['net']}; lab fleet up from nothing")
        fe.start_vault()
        lab.lab_up = True  # from here on close() destroys the fleet and takes the lab down
        t0 = time.monotonic()
        lab.lab.up(fe.env)
        out["lab_up"] = time.monotonic() - t0
        up, conns = lab.counted("up", "-q", timeout=1800)
        out["ssh_up"] = up.seconds
        out["up_connections"] = conns
        ctx.say(f"ssh: up local {out['local_up']:.1f} s, ssh {up.seconds:.1f} s; previews")
        # One untimed pass each: page cache, __pycache__ of the snapshot, policy pack venv.
        _preview(local)
        lab.counted(*PREVIEW, timeout=900, ok_codes=(0, 2))
        rows = []
        for i in range(ctx.plan.runs):
            row: dict = {}
            last = i == ctx.plan.runs - 1

            def local_preview(row: dict = row) -> None:
                pv = _preview(local)
                row["local"] = pv.seconds
                row["local_exit"] = pv.returncode
                row["local_stacks"], row["local_changed"] = _stacks(pv.stdout)
                row["local_scripts"] = local.scripts_during(pv).get("count", 0)

            def ssh_preview(row: dict = row, last: bool = last) -> None:
                control = lab.new_control()
                pv, conns = lab.counted(*PREVIEW, control=control, timeout=900, ok_codes=(0, 2))
                row["ssh"] = pv.seconds
                row["ssh_exit"] = pv.returncode
                row["ssh_stacks"], row["ssh_changed"] = _stacks(pv.stdout)
                row["connections"] = conns
                if last:
                    # Right away, within ControlPersist of this run's last session: the
                    # masters it left are still up (runs back to back).
                    pv, conns = lab.counted(*PREVIEW, control=control, timeout=900, ok_codes=(0, 2))
                    out["warm"] = {"ssh": pv.seconds, "connections": conns, "exit": pv.returncode}

            for step in (
                (local_preview, ssh_preview) if i % 2 == 0 else (ssh_preview, local_preview)
            ):
                step()
            rows.append(row)
            ctx.say(
                f"ssh: preview {i + 1}/{ctx.plan.runs}: local {row['local']:.1f} s, ssh "
                f"{row['ssh']:.1f} s, {sum(row['connections']['per_host'].values())} connection(s)"
            )
        out["runs"] = rows
        out.update(summarize(rows))
        return out
    finally:
        problems = lab.close(ctx.keep) if lab is not None else []
        problems += local.close(keep=ctx.keep)
        if lab is not None and lab.retried:
            out["cleanup_retried"] = lab.retried
        if problems:
            ctx.say(f"ssh: cleanup problems: {problems}")
            out["cleanup_problems"] = problems


def summarize(rows: list[dict]) -> dict:
    """Medians with min–max of the paired previews, and the connections per preview."""
    out: dict = {}
    if not rows:
        return out
    out["local_preview"] = Summary.of(r["local"] for r in rows)
    out["ssh_preview"] = Summary.of(r["ssh"] for r in rows)
    out["ratio_preview"] = paired_ratios([r["ssh"] for r in rows], [r["local"] for r in rows])
    out["connections"] = Summary.of(sum(r["connections"]["per_host"].values()) for r in rows)
    out["masters"] = Summary.of(r["connections"]["masters"] for r in rows)
    hosts = sorted({a for r in rows for a in r["connections"]["per_host"]})
    out["per_host"] = {
        a: Summary.of(r["connections"]["per_host"].get(a, 0) for r in rows) for a in hosts
    }
    stacks = sorted(
        {s for r in rows for s in r.get("local_stacks", {})}
        | {s for r in rows for s in r.get("ssh_stacks", {})}
    )
    out["per_stack"] = {
        s: {
            "local": Summary.of(
                r["local_stacks"][s] for r in rows if s in r.get("local_stacks", {})
            ),
            "ssh": Summary.of(r["ssh_stacks"][s] for r in rows if s in r.get("ssh_stacks", {})),
        }
        for s in stacks
    }
    out["changed"] = sorted(
        {s for r in rows for s in r.get("local_changed", []) + r.get("ssh_changed", [])}
    )
    out["local_scripts"] = Summary.of(r.get("local_scripts", math.nan) for r in rows)
    return out


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 7 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def _most_per_host(res: Mapping) -> float:
    """The most connections any host got in any one cold preview."""
    hosts = res.get("per_host") or {}
    return max((h.get("max", math.nan) for h in hosts.values()), default=math.nan)


def ok(res: Mapping) -> tuple[bool | None, bool | None]:
    """(preview ratio met its goal, connections met theirs); None when not measured.
    A preview that planned changes is no no-change preview: its figure does not count."""
    if res.get("changed"):
        return False, False
    ratio = med(res.get("ratio_preview"))
    most = _most_per_host(res)
    goal_conn = res.get("goal_connections_per_host", GOAL_CONNECTIONS_PER_HOST)
    return (
        None if math.isnan(ratio) else ratio <= res.get("goal_preview_ratio", GOAL_PREVIEW_RATIO),
        None if math.isnan(most) else most <= goal_conn,
    )


def _n_hosts(res: Mapping) -> int:
    return len(res.get("hosts") or res.get("per_host") or {})


def _count(summary: Mapping | None) -> str:
    """`6 (6–7)`; `6` when every run agreed."""
    if not summary or not summary.get("n"):
        return "–"
    lo, hi, m = summary["min"], summary["max"], summary["median"]
    return f"{m:g}" if lo == hi else f"{m:g} ({lo:g}–{hi:g})"


def summary_rows(res: Mapping) -> list[list[str]]:
    if not res.get("ssh_up") and not res.get("ratio_preview"):
        return []
    pv_ok, conn_ok = ok(res)
    hosts = _n_hosts(res)
    goal_conn = res.get("goal_connections_per_host", GOAL_CONNECTIONS_PER_HOST)
    up_ratio = (
        f"; ratio {res['ssh_up'] / res['local_up']:.2f}×"
        if res.get("ssh_up") and res.get("local_up")
        else ""
    )
    warm = (res.get("warm") or {}).get("connections") or {}
    return [
        [
            f"7a. `dbfleet up` of the {hosts}-host lab fleet from nothing (ssh target)",
            "next to the local target",
            _secs(res.get("ssh_up")),
            f"local target: {_secs(res.get('local_up'))}{up_ratio}",
            "–",
        ],
        [
            "7b. no-change `dbfleet preview` of the lab fleet's 8 stacks, ssh ÷ local target",
            f"≤ {res.get('goal_preview_ratio', GOAL_PREVIEW_RATIO):g}×",
            f"{fmt_ratio(res.get('ratio_preview'))}; ssh {fmt(res.get('ssh_preview'))}",
            f"local target: {fmt(res.get('local_preview'))}",
            verdict(pv_ok),
        ],
        [
            "7c. SSH connections opened per no-change preview (fresh control directory)",
            f"≤ 1 per host per stack run (≤ {goal_conn} per host, ≤ {goal_conn * hosts} in all)",
            f"{_count(res.get('connections'))} in all; at most {_most(res)} to one host",
            "masters of the previous run still up: "
            + (f"{sum(warm.get('per_host', {}).values())}" if warm else "–"),
            verdict(conn_ok),
        ],
    ]


def _secs(v) -> str:
    return f"{v:.1f} s (1 run)" if isinstance(v, int | float) else "–"


def _most(res: Mapping) -> str:
    most = _most_per_host(res)
    return "–" if math.isnan(most) else f"{most:g}"


def section(res: Mapping) -> str:
    if not res:
        return ""
    title = "## 7. The ssh target: the lab fleet next to the local target"
    if res.get("error"):
        return f"{title}\n\nFailed: {res['error']}"
    pv_ok, conn_ok = ok(res)
    n = len(res.get("runs") or [])
    hosts = _n_hosts(res)
    goal_conn = res.get("goal_connections_per_host", GOAL_CONNECTIONS_PER_HOST)
    warm = res.get("warm") or {}
    rows = [
        [
            f"lab up ({hosts} namespaces, an sshd each, keys in Vault)",
            "",
            _secs(res.get("lab_up")),
            "",
            "",
        ],
        [
            "**`dbfleet up`** (8 stacks, from nothing)",
            _secs(res.get("local_up")),
            _secs(res.get("ssh_up")),
            f"{res['ssh_up'] / res['local_up']:.2f}× (1 run)"
            if res.get("ssh_up") and res.get("local_up")
            else "–",
            "",
        ],
        [
            "**no-change `dbfleet preview`** (8 stacks, policy pack), connections opened by the run",
            fmt(res.get("local_preview")),
            fmt(res.get("ssh_preview")),
            fmt_ratio(res.get("ratio_preview")),
            verdict(pv_ok),
        ],
        [
            "no-change `dbfleet preview` right after the last, its masters still up",
            "",
            _secs(warm.get("ssh")),
            "",
            "",
        ],
    ]
    parts = [
        title,
        "",
        figure_meta(res),
        "",
        (
            f"The default fleet's shape twice in one run: on the local target (loopback) and on the ssh "
            f"target, on a lab of {hosts} hosts ({res.get('net', 'a /24 of 198.18.0.0/15')}: one network "
            "namespace and sshd per host, one host per node; `tests/fleets.lab_fleet_text`). Each fleet is "
            f"brought up from nothing once, then {n} no-change previews of each alternate (ssh ÷ the local "
            "one next to it). Every timed ssh command starts with an empty control directory "
            "(`DBFLEET_SSH_CONTROL_DIR`), so it pays for the connections it needs, as a run more than "
            "ControlPersist (60 s) after the last one does. Goals: preview over ssh ≤ "
            f"{res.get('goal_preview_ratio', GOAL_PREVIEW_RATIO):g}× the local target; at most one SSH "
            f"connection per host per stack run ({goal_conn} stacks touch each host)."
        ),
        "",
        table(["step", "local target", "ssh target (lab)", "ssh ÷ local", "goal"], rows),
    ]
    if res.get("changed"):
        parts += [
            "",
            "**Not no-change previews:** these stacks planned changes or failed in some run: "
            + ", ".join(f"`{s}`" for s in res["changed"])
            + ". The verdicts do not count.",
        ]
    parts += ["", _connections(res, conn_ok)]
    ps = res.get("per_stack") or {}
    if ps:
        srows = [
            [f"`{s}`", fmt(v.get("local")), fmt(v.get("ssh")), _stack_ratio(v)]
            for s, v in ps.items()
        ]
        parts += [
            "",
            (
                "Per stack, no-change preview (the two groups run in parallel, so stack times add up per "
                "group, not overall):"
            ),
            "",
            table(["stack", "local target", "ssh target", "ratio of medians"], srows),
        ]
    if res.get("cleanup_retried"):
        parts += [
            "",
            "Cleanup that succeeded on its second try: "
            + "; ".join(_one_line(p) for p in res["cleanup_retried"])
            + ".",
        ]
    if res.get("cleanup_problems"):
        parts += [
            "",
            "**Left behind** (cleanup failed): "
            + "; ".join(_one_line(p) for p in res["cleanup_problems"]),
        ]
    return "\n".join(parts)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _stack_ratio(v: Mapping) -> str:
    a, b = med(v.get("ssh")), med(v.get("local"))
    return "–" if math.isnan(a) or math.isnan(b) or not b else f"{a / b:.2f}×"


def _connections(res: Mapping, conn_ok: bool | None) -> str:
    """Connections per host: the sshd logs' accepted logins."""
    hosts = res.get("hosts") or {}
    per_host = res.get("per_host") or {}
    up = (res.get("up_connections") or {}).get("per_host") or {}
    warm = ((res.get("warm") or {}).get("connections") or {}).get("per_host") or {}
    rows = [
        [
            f"{a} ({hosts.get(a, '?')})",
            str(up.get(a, "–")),
            _count(per_host.get(a)),
            str(warm.get(a, "–")),
        ]
        for a in sorted(set(per_host) | set(up), key=_address_key)
    ]
    rows.append(
        [
            "**all hosts**",
            str(sum(up.values())) if up else "–",
            f"**{_count(res.get('connections'))}** ({verdict(conn_ok)})",
            str(sum(warm.values())) if warm else "–",
        ]
    )
    scripts = med(res.get("local_scripts"))
    masters = res.get("masters")
    notes = []
    if masters and masters.get("n"):
        notes.append(
            f"Masters left in the control directory after each preview (one socket each): "
            f"{_count(masters)}."
        )
    if not math.isnan(scripts) and scripts:
        notes.append(
            f"The same preview on the local target runs {scripts:g} host scripts (median); over ssh each "
            "runs as a session of its host's one connection."
        )
    return "\n".join(
        [
            (
                "SSH connections opened, counted where they arrive: the logins each lab host's sshd logged "
                "(`Accepted publickey`) while the command ran."
            ),
            "",
            table(
                ["host", "`dbfleet up` from nothing", "per cold no-change preview", "warm preview"],
                rows,
            ),
            *(["", " ".join(notes)] if notes else []),
        ]
    )


def _address_key(address: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in address.split("."))
    except ValueError:
        return (0,)
