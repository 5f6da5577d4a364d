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
import math
import sys
import time
from collections.abc import Mapping

from bench import procs
from bench.context import BENCH_DIR, Ctx
from bench.fleetenv import REPO, FleetEnv
from bench.floor import EmptyFleet
from bench.markdown import figure_meta, fmt, fmt_ratio, med, table, verdict
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


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 2 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(conv: Mapping) -> tuple[bool | None, bool | None]:
    """(up met its goal, no-change preview met its goal); None when not measured."""
    up = med(conv.get("up"))
    pv = med(conv.get("preview"))
    return (
        None if math.isnan(up) else up < conv.get("goal_up_s", GOAL_UP_S),
        None if math.isnan(pv) else pv < conv.get("goal_preview_s", GOAL_PREVIEW_S),
    )


def summary_rows(conv: Mapping) -> list[list[str]]:
    if not conv.get("up"):
        return []
    up_ok, pv_ok = ok(conv)
    return [
        [
            "2a. `dbfleet up` of the default fleet from nothing",
            f"< {conv.get('goal_up_s', GOAL_UP_S):.0f} s",
            fmt(conv.get("up")),
            f"empty program, 8 stacks: {fmt(conv.get('floor_up'))}; ratio {fmt_ratio(conv.get('ratio_up'))}",
            verdict(up_ok),
        ],
        [
            "2b. no-change `dbfleet preview` of all 8 stacks",
            f"< {conv.get('goal_preview_s', GOAL_PREVIEW_S):.0f} s",
            fmt(conv.get("preview")),
            f"empty program, 8 stacks: {fmt(conv.get('floor_preview'))}; ratio {fmt_ratio(conv.get('ratio_preview'))}",
            verdict(pv_ok),
        ],
    ]


def section(conv: Mapping) -> str:
    if not conv:
        return ""
    if conv.get("error"):
        return f"## 2. Converge time\n\nFailed: {conv['error']}"
    up_ok, pv_ok = ok(conv)
    n = len(conv.get("runs") or [])
    rows = [
        [
            "`make up` from nothing: warm setup + Vault start + validate + up + prove + endpoints",
            fmt(conv.get("make_up")),
            "",
            "",
        ],
        ["&nbsp;&nbsp;warm `make setup`", fmt(conv.get("setup"), "s", 2), "", ""],
        [
            "&nbsp;&nbsp;local Vault first start (init, unseal, KV mount)",
            fmt(conv.get("vault")),
            "",
            "",
        ],
        ["&nbsp;&nbsp;`dbfleet validate`", fmt(conv.get("validate"), "s", 2), "", ""],
        [
            "&nbsp;&nbsp;**`dbfleet up`** (8 stacks, from nothing)",
            fmt(conv.get("up")),
            f"{fmt(conv.get('floor_up'))} → {fmt_ratio(conv.get('ratio_up'))}",
            verdict(up_ok),
        ],
        ["&nbsp;&nbsp;`dbfleet prove`", fmt(conv.get("prove")), "", ""],
        ["&nbsp;&nbsp;`dbfleet endpoints`", fmt(conv.get("endpoints")), "", ""],
        [
            "**no-change `dbfleet preview`** (8 stacks, policy pack when present)",
            fmt(conv.get("preview")),
            f"{fmt(conv.get('floor_preview'))} → {fmt_ratio(conv.get('ratio_preview'))}",
            verdict(pv_ok),
        ],
        [
            "no-change `dbfleet up` (8 stacks)",
            fmt(conv.get("noop_up")),
            f"{fmt(conv.get('floor_preview'))} → {fmt_ratio(conv.get('ratio_noop_up'))}",
            "",
        ],
        ["`dbfleet destroy` (8 stacks)", fmt(conv.get("destroy")), "", ""],
    ]
    parts = [
        "## 2. Converge time",
        "",
        figure_meta(conv),
        "",
        (
            f"{n} run{'s' if n != 1 else ''}, each in a fresh environment: the steps of `make up` "
            "(scripts/up.sh) one by one, then a no-change preview and a no-change up of the converged "
            "fleet. Baseline, right after in the same environment: the empty program in dbfleet's shape — "
            "two groups in parallel, four stacks one after the other in each — `up` from nothing (stack "
            f"init + up) and a no-change preview. Goals: up < {conv.get('goal_up_s', GOAL_UP_S):.0f} s, "
            f"preview < {conv.get('goal_preview_s', GOAL_PREVIEW_S):.0f} s."
        ),
        "",
        table(["step", "time", "empty program, same shape → ratio", "goal"], rows),
    ]
    ps = conv.get("per_stack") or {}
    if ps.get("up_stacks"):
        srows = []
        for stack in ps["up_stacks"]:
            srows.append(
                [
                    f"`{stack}`",
                    fmt(ps["up_stacks"].get(stack)),
                    fmt((ps.get("preview_stacks") or {}).get(stack)),
                    fmt((ps.get("noop_up_stacks") or {}).get(stack)),
                ]
            )
        parts += [
            "",
            "Per stack (the two groups run in parallel, so stack times add up per group, not overall):",
            "",
            table(["stack", "up from nothing", "no-change preview", "no-change up"], srows),
        ]
    scripts = _up_scripts(conv)
    if scripts:
        parts += ["", scripts]
    cli = conv.get("cli_profile") or {}
    if cli:
        parts += ["", cli_section(cli)]
    return "\n".join(parts)


def _up_scripts(conv: Mapping) -> str:
    """How much of `dbfleet up` the host scripts account for (medians over the runs)."""
    ups = [r["up_scripts"] for r in conv.get("runs") or [] if r.get("up_scripts")]
    up_med = med(conv.get("up"))
    if not ups or math.isnan(up_med):
        return ""
    busy = sorted(s["busy_s"] for s in ups)[len(ups) // 2]
    ssum = sorted(s["sum_s"] for s in ups)[len(ups) // 2]
    slow = ups[-1].get("slowest") or []
    return (
        f"Host scripts during `dbfleet up` (initdb, pg_basebackup, starting PostgreSQL and HAProxy, "
        f"creating the OS user): {ssum:.1f} s in all, and at least one was running during {busy:.1f} s "
        f"of the {up_med:.1f} s (median run); none during the other ≈ {up_med - busy:.0f} s "
        f"({(up_med - busy) / up_med * 100:.0f} %). Slowest scripts in the last run: "
        + ", ".join(f"{s['script']} {s['seconds']:.1f} s" for s in slow)
        + "."
    )


def cli_section(cli: Mapping) -> str:
    """The Pulumi CLI calls dbfleet's Automation API makes, per command."""
    kinds = list(cli)
    commands: list[str] = []
    for k in kinds:
        for c in cli[k].get("by_command") or {}:
            if c not in commands:
                commands.append(c)
    rows = []
    for c in commands:
        cells = []
        for k in kinds:
            b = (cli[k].get("by_command") or {}).get(c)
            cells.append(f"{b['count']} × → {b['seconds']:.1f} s" if b else "–")
        rows.append([f"`pulumi {c}`", *cells])
    rows.append(
        [
            "**all calls** (sum; wall time of the command)",
            *[
                f"{cli[k]['calls']} → {cli[k]['sum_s']:.1f} s; {cli[k]['wall']:.1f} s"
                for k in kinds
            ],
        ]
    )
    return "\n".join(
        [
            "### What dbfleet asks of the Pulumi CLI (profile)",
            "",
            (
                "Every `pulumi` call made by the Automation API during one more no-change run of each command, timed "
                "by a shim first on PATH (`bench/hook/bin/pulumi`); calls of the two groups overlap, so sums exceed "
                "the wall time. Each call is a new CLI process (Go start-up, backend and stack load)."
            ),
            "",
            table(["CLI call", *[f"`dbfleet {k}`" for k in kinds]], rows),
        ]
    )
