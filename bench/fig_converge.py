"""Figure 2: converge time of the default fleet.

Each run builds a fresh isolated environment and does what `make up` does, step by
step and timed: start the local Vault (first start: init + unseal), `dbfleet
validate`, `dbfleet up` (from nothing: no stack, no secret), `dbfleet prove`,
`dbfleet endpoints`. Then, on the converged fleet, a no-change `dbfleet preview`
of all 8 stacks and a no-change `dbfleet up`. Right after, in the same environment,
the baseline: the empty program in the same shape (2 groups in parallel, 4 stacks
each) — `up` from nothing and a no-change `preview`. The last environment is kept
for the engine-floor, proxy and replication-lag figures.
"""

from __future__ import annotations

import json
import sys
import time

from bench import procs
from bench.context import BENCH_DIR, Ctx
from bench.fleetenv import REPO, FleetEnv
from bench.floor import EmptyFleet
from bench.stats import Summary, paired_ratios

HOOK_BIN = BENCH_DIR / "hook" / "bin"
GOAL_UP_S = 60.0
GOAL_PREVIEW_S = 20.0
MAKE_UP_STEPS = ("setup", "vault", "validate", "up", "prove", "endpoints")


def _stack_seconds(doc_text: str) -> dict[str, float]:
    try:
        doc = json.loads(doc_text)
    except json.JSONDecodeError:
        return {}
    return {s["stack"]: s["seconds"] for s in doc.get("stacks", []) if "stack" in s}


def _statuses(doc_text: str) -> dict[str, str]:
    try:
        doc = json.loads(doc_text)
    except json.JSONDecodeError:
        return {}
    return {s["stack"]: s["status"] for s in doc.get("stacks", []) if "stack" in s}


def warm_setup(ctx: Ctx) -> float:
    """`make setup` on a warm machine (part of `make up`): the repo's own setup."""
    t = procs.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        cwd=REPO,
        timeout=1800,
        log=ctx.logs / "setup.log",
    )
    return t.seconds


def one_run(ctx: Ctx, i: int, setup_s: float) -> tuple[dict, FleetEnv]:
    fe = FleetEnv("converge", code=ctx.code, log_dir=ctx.logs)
    row: dict = {"env": fe.root.name, "setup": setup_s}
    ctx.say(
        f"converge {i + 1}/{ctx.plan.converge_runs}: make-up steps in {fe.root} (127.{fe.octet}.0.0/16)"
    )
    row["vault"] = fe.start_vault().seconds
    row["validate"] = fe.dbfleet("validate", str(fe.spec)).seconds
    up = fe.dbfleet("up", "--json", timeout=1800)
    row["up"] = up.seconds
    row["up_stacks"] = _stack_seconds(up.stdout)
    row["up_scripts"] = fe.scripts_during(up)
    row["prove"] = fe.dbfleet("prove", timeout=600).seconds
    row["endpoints"] = fe.dbfleet("endpoints").seconds
    row["make_up"] = sum(row[k] for k in MAKE_UP_STEPS)
    ctx.say(
        f"converge {i + 1}: up {row['up']:.1f} s, make up {row['make_up']:.1f} s; no-change preview"
    )
    pv = fe.dbfleet("preview", "--json", "-", timeout=900, ok_codes=(0, 2))
    row["preview"] = pv.seconds
    row["preview_stacks"] = _stack_seconds(pv.stdout)
    row["preview_exit"] = pv.returncode
    row["preview_scripts"] = fe.scripts_during(pv)
    pn = fe.dbfleet("preview", "--no-policies", "--json", "-", timeout=900, ok_codes=(0, 2))
    row["preview_no_policies"] = pn.seconds
    row["preview_no_policies_stacks"] = _stack_seconds(pn.stdout)
    noop = fe.dbfleet("up", "--json", timeout=900)
    row["noop_up"] = noop.seconds
    row["noop_up_stacks"] = _stack_seconds(noop.stdout)
    row["noop_statuses"] = sorted(set(_statuses(noop.stdout).values()))
    row["noop_up_scripts"] = fe.scripts_during(noop)
    ctx.say(
        f"converge {i + 1}: preview {row['preview']:.1f} s (exit {pv.returncode}), "
        f"no-change up {row['noop_up']:.1f} s; empty-program baseline"
    )
    floor = EmptyFleet(fe)
    try:
        row["floor_up"] = floor.up()
        row["floor_preview"] = floor.preview()
    finally:
        floor.remove()
    return row, fe


def cli_calls(log_text: str) -> list[dict]:
    """Lines of bench/hook/bin/pulumi's log → {start, end, seconds, command, stack}."""
    out = []
    for line in log_text.splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 4:
            continue
        try:
            t0, t1 = float(parts[0]), float(parts[1])
        except ValueError:
            continue
        words = parts[3].split()
        cmd = []
        for w in words:
            if w.startswith("-"):
                break
            cmd.append(w)
        stack = ""
        for flag in ("--stack", "-s"):
            if flag in words and words.index(flag) + 1 < len(words):
                stack = words[words.index(flag) + 1]
        out.append(
            {
                "start": t0,
                "end": t1,
                "seconds": t1 - t0,
                "command": " ".join(cmd[:2]) or "?",
                "stack": stack,
            }
        )
    return out


def summarize_cli(calls: list[dict], wall: float) -> dict:
    by: dict[str, dict] = {}
    for c in calls:
        b = by.setdefault(c["command"], {"count": 0, "seconds": 0.0})
        b["count"] += 1
        b["seconds"] += c["seconds"]
    stacks = {c["stack"] for c in calls if c["stack"]}
    return {
        "wall": wall,
        "calls": len(calls),
        "stacks": len(stacks),
        "sum_s": sum(c["seconds"] for c in calls),
        "busy_s": procs.union_seconds([(c["start"], c["end"]) for c in calls]),
        "by_command": dict(sorted(by.items(), key=lambda kv: -kv[1]["seconds"])),
    }


def cli_profile(ctx: Ctx, fe: FleetEnv) -> dict:
    """Every Pulumi CLI call a no-change `dbfleet preview` / `dbfleet up` makes (through the
    Automation API), timed by the bench/hook/bin/pulumi shim."""
    import shutil

    real = shutil.which("pulumi", path=fe.env.get("PATH"))
    out = {}
    for name, args in (
        ("preview", ("preview", "-q")),
        ("preview --no-policies", ("preview", "-q", "--no-policies")),
        ("up (no change)", ("up", "-q")),
    ):
        log = ctx.out / "profile" / f"cli-{name.split()[0]}{'-np' if 'no-pol' in name else ''}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)
        env = fe.env
        env["PATH"] = f"{HOOK_BIN}:{env['PATH']}"
        env["DBFLEET_BENCH_REAL_PULUMI"] = real or "pulumi"
        env["DBFLEET_BENCH_CLI_LOG"] = str(log)
        t = procs.run(
            [sys.executable, "-m", "dbfleet", *args],
            env=env,
            cwd=fe.project,
            timeout=900,
            ok_codes=(0, 2),
            log=fe.log,
        )
        out[name] = summarize_cli(cli_calls(log.read_text() if log.exists() else ""), t.seconds)
    return out


def run(ctx: Ctx) -> tuple[dict, FleetEnv | None]:
    ctx.say("warm `make setup`")
    setup_s = warm_setup(ctx)
    rows: list[dict] = []
    kept: FleetEnv | None = None
    n = ctx.plan.converge_runs
    for i in range(n):
        row, fe = one_run(ctx, i, setup_s)
        rows.append(row)
        if i == n - 1:
            kept = fe
        else:
            ctx.say(f"converge {i + 1}: destroy")
            t0 = time.monotonic()
            problems = fe.close(keep=ctx.keep)
            row["destroy"] = time.monotonic() - t0
            if problems:
                raise RuntimeError(f"could not clean up {fe.root}: {problems}")
        ctx.results["converge"] = summarize(rows)
        ctx.save()
    if kept is not None and ctx.profile:
        ctx.say("converge: profile of the Pulumi CLI calls dbfleet makes")
        ctx.results["converge"]["cli_profile"] = cli_profile(ctx, kept)
    return ctx.results["converge"], kept


def summarize(rows: list[dict]) -> dict:
    def col(key: str) -> list[float]:
        return [r[key] for r in rows if key in r]

    out: dict = {"runs": rows, "goal_up_s": GOAL_UP_S, "goal_preview_s": GOAL_PREVIEW_S}
    for key in (
        "setup",
        "vault",
        "validate",
        "up",
        "prove",
        "endpoints",
        "make_up",
        "preview",
        "preview_no_policies",
        "noop_up",
        "floor_up",
        "floor_preview",
        "destroy",
    ):
        if col(key):
            out[key] = Summary.of(col(key))
    paired = [r for r in rows if "floor_up" in r]
    if paired:
        out["ratio_up"] = paired_ratios([r["up"] for r in paired], [r["floor_up"] for r in paired])
        out["ratio_preview"] = paired_ratios(
            [r["preview"] for r in paired], [r["floor_preview"] for r in paired]
        )
        out["ratio_preview_no_policies"] = paired_ratios(
            [r["preview_no_policies"] for r in paired], [r["floor_preview"] for r in paired]
        )
        out["ratio_noop_up"] = paired_ratios(
            [r["noop_up"] for r in paired], [r["floor_preview"] for r in paired]
        )
    per_stack: dict[str, dict[str, Summary]] = {}
    for kind in ("up_stacks", "preview_stacks", "preview_no_policies_stacks", "noop_up_stacks"):
        stacks = sorted({s for r in rows for s in r.get(kind, {})})
        per_stack[kind] = {
            s: Summary.of([r[kind][s] for r in rows if s in r.get(kind, {})]) for s in stacks
        }
    out["per_stack"] = per_stack
    out["preview_exits"] = sorted({r.get("preview_exit") for r in rows})
    return out
