"""Figure 6: wall time of the unit suite (`scripts/test.sh unit`), against the
start-up of pytest itself on a single trivial test (same interpreter, same flags)."""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

from bench import procs
from bench.context import Ctx
from bench.fleetenv import REPO
from bench.markdown import figure_meta, fmt, fmt_ratio, med, table, verdict
from bench.stats import Summary, paired_ratios

GOAL_S = 10.0
_PASSED = re.compile(r"(\d+) passed")


def _env(ctx: Ctx) -> dict:
    import os

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PULUMI_", "VAULT_", "DBFLEET_"))
    }
    env["PATH"] = f"{REPO / '.venv' / 'bin'}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ctx.code)
    return env


def run(ctx: Ctx) -> dict:
    env = _env(ctx)
    trivial = Path(tempfile.mkdtemp(prefix="dbfleet-bench-pytest-"))
    (trivial / "test_trivial.py").write_text("def test_ok():\n    assert True\n")
    python = str(REPO / ".venv" / "bin" / "python")
    suite_argv = ["bash", str(ctx.code / "scripts" / "test.sh"), "unit"]
    base_argv = [python, "-m", "pytest", str(trivial), "-q", "-p", "no:cacheprovider"]
    suite, base, counts, bad = [], [], [], []
    try:
        procs.run(base_argv, env=env, cwd=trivial, timeout=300)  # warm the page cache
        attempts = 0
        while len(suite) < ctx.plan.runs and attempts < 2 * ctx.plan.runs:
            attempts += 1
            ctx.say(f"unit suite run {len(suite) + 1}/{ctx.plan.runs}")
            b = procs.run(base_argv, env=env, cwd=trivial, timeout=300)
            t = procs.run(
                suite_argv,
                env=env,
                cwd=ctx.code,
                timeout=900,
                ok_codes=None,
                log=ctx.logs / "unit.log",
            )
            m = _PASSED.search(t.stdout)
            if t.returncode != 0:
                # A run that did not finish green is not a timing of the suite; keep why.
                last = t.tail(3).splitlines()
                bad.append(
                    {"exit": t.returncode, "seconds": t.seconds, "tail": last[-1] if last else ""}
                )
                ctx.say(f"unit suite exited {t.returncode}, not counted: {t.tail(2)}")
                continue
            counts.append(int(m.group(1)) if m else 0)
            suite.append(t.seconds)
            base.append(b.seconds)
        prof = profile(ctx, env, python) if ctx.profile else {}
    finally:
        import shutil

        shutil.rmtree(trivial, ignore_errors=True)
    return {
        "profile": prof,
        "suite_s": suite,
        "pytest_floor_s": base,
        "summary": Summary.of(suite),
        "baseline": Summary.of(base),
        "ratio": paired_ratios(suite, base),
        "tests": max(counts) if counts else 0,
        "failed_runs": bad,
        "goal_s": GOAL_S,
    }


_DURATION = re.compile(r"^\s*([\d.]+)s (call|setup|teardown)\s+(\S+)")


def profile(ctx: Ctx, env: dict, python: str) -> dict:
    """Where the suite's time goes: collection alone, and the slowest tests."""
    ctx.say("unit suite: profile (collection, slowest tests)")
    base = [python, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"]
    collect = procs.run(
        [*base, "--collect-only"], env=env, cwd=ctx.code, timeout=600, ok_codes=None
    )
    t = procs.run(
        [*base, "--durations=0", "--durations-min=0.05"],
        env=env,
        cwd=ctx.code,
        timeout=900,
        ok_codes=None,
        log=ctx.logs / "unit-durations.log",
    )
    rows = []
    for line in t.stdout.splitlines():
        m = _DURATION.match(line)
        if m:
            rows.append({"seconds": float(m.group(1)), "phase": m.group(2), "test": m.group(3)})
    by_file: dict[str, float] = {}
    for r in rows:
        f = r["test"].split("::", 1)[0]
        by_file[f] = by_file.get(f, 0.0) + r["seconds"]
    m = re.search(r"in ([\d.]+)s", t.stdout)
    return {
        "collect_s": collect.seconds,
        "run_s": t.seconds,
        "pytest_reported_s": float(m.group(1)) if m else None,
        "over_50ms_s": sum(r["seconds"] for r in rows),
        "over_50ms_count": len(rows),
        "slowest": sorted(rows, key=lambda r: -r["seconds"])[:10],
        "by_file": dict(sorted(by_file.items(), key=lambda kv: -kv[1])[:8]),
    }


def make_test(ctx: Ctx) -> dict:
    """`make test` (warm): every test — unit, policy, integration — once. Not part of the
    default run (it takes many minutes and brings up fleets of its own): --only maketest."""
    env = _env(ctx)
    ctx.say("make test: scripts/test.sh (unit + policy + integration), once")
    setup = procs.run(["bash", str(REPO / "scripts" / "setup.sh")], cwd=REPO, timeout=1800)
    t = procs.run(
        ["bash", str(ctx.code / "scripts" / "test.sh")],
        env=env,
        cwd=ctx.code,
        timeout=7200,
        ok_codes=None,
        log=ctx.logs / "make-test.log",
    )
    last = [
        ln for ln in t.stdout.splitlines() if " in " in ln and ("passed" in ln or "failed" in ln)
    ]
    return {
        "seconds": setup.seconds + t.seconds,
        "setup_s": setup.seconds,
        "tests_s": t.seconds,
        "exit": t.returncode,
        "result": last[-1].strip("= ") if last else t.tail(1),
    }


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 6 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(unit: Mapping) -> bool | None:
    if not unit.get("summary"):
        return None
    return med(unit["summary"]) < unit.get("goal_s", GOAL_S)


def summary_rows(unit: Mapping) -> list[list[str]]:
    if not unit.get("summary"):
        return []
    return [
        [
            f"6. Unit suite ({unit.get('tests', '?')} tests)",
            f"< {unit.get('goal_s', GOAL_S):g} s",
            fmt(unit["summary"]),
            f"pytest on one trivial test {fmt(unit.get('baseline'))}; ratio {fmt_ratio(unit.get('ratio'), 1)}",
            verdict(ok(unit)),
        ]
    ]


def section(unit: Mapping) -> str:
    if not unit:
        return ""
    if unit.get("error"):
        return f"## 6. Unit suite\n\nFailed: {unit['error']}"
    parts = [
        "## 6. Unit suite",
        "",
        figure_meta(unit),
        "",
        (
            f"`scripts/test.sh unit` (`pytest tests/unit -q`, {unit.get('tests', '?')} tests, in the snapshot) "
            f"against pytest on one trivial test with the same interpreter and flags, alternating. "
            f"Goal: < {unit.get('goal_s', GOAL_S):g} s."
        ),
        "",
        table(
            ["", "wall time", "goal"],
            [
                ["unit suite", fmt(unit.get("summary")), verdict(ok(unit))],
                ["pytest floor (one trivial test)", fmt(unit.get("baseline"), "s", 2), ""],
                ["ratio", fmt_ratio(unit.get("ratio"), 1), ""],
            ],
        ),
    ]
    if unit.get("failed_runs"):
        parts += [
            "",
            f"{len(unit['failed_runs'])} run(s) did not finish green and are not counted: "
            + "; ".join(
                f"exit {b['exit']} after {b['seconds']:.1f} s (`{b['tail']}`)"
                for b in unit["failed_runs"]
            )
            + ".",
        ]
    prof = unit.get("profile") or {}
    if prof:
        slow = prof.get("slowest") or []
        files = prof.get("by_file") or {}
        parts += [
            "",
            "### Where the time goes (profile)",
            "",
            f"One more run with `--durations`: pytest reported {prof.get('pytest_reported_s') or math.nan:.1f} s "
            f"({prof.get('run_s', math.nan):.1f} s wall); collecting the suite alone (`--collect-only`: "
            f"interpreter start, importing every test module and what it imports — pulumi, grpc, pydantic, "
            f"hvac, pulumi_policy) takes {prof.get('collect_s', math.nan):.1f} s. "
            f"{prof.get('over_50ms_count', 0)} test phases took over 50 ms, {prof.get('over_50ms_s', 0):.1f} s "
            "together; by file: "
            + ", ".join(f"`{k.rsplit('/', 1)[-1]}` {v:.1f} s" for k, v in files.items())
            + ". Slowest: "
            + "; ".join(f"`{r['test'].rsplit('/', 1)[-1]}` {r['seconds']:.2f} s" for r in slow[:5])
            + ".",
        ]
    return "\n".join(parts)
