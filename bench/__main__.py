"""`python -m bench` — measure dbfleet on this machine and write BENCHMARKS.md.

    python -m bench                 every figure, full repetitions (what `make bench` runs)
    python -m bench --quick         fewer repetitions and scale points, for iterating;
                                    writes bench/out/quick/ only, never BENCHMARKS.md
    python -m bench --only scale    some figures; their results replace those figures in
                                    bench/out/results.json, the others are kept
    python -m bench --only tls      connection setup and a point read through HAProxy with TLS
                                    (verify-full) and without, on a server of its own
    python -m bench --only ssh      the ssh target on a lab of six hosts next to the local
                                    target (optional: needs root, takes minutes)
    python -m bench --only apps     read-your-writes through dbfleet.client, and the pooler
                                    next to the direct endpoint (optional: a fleet of its own)
    python -m bench --only backup   pgBackRest: full backup, WAL archive lag, point-in-time
                                    restore, next to pg_basebackup (optional: a fleet of its own)
    python -m bench --render        re-render BENCHMARKS.md and the plot from results.json

BENCHMARKS.md is generated except its hand-written analysis (between `<!-- analysis
NAME: begin ... -->` and `<!-- analysis NAME: end -->`), which every run keeps as it is.

Everything runs in throw-away environments under /tmp (own state, Vault, fleet name,
loopback range) against a snapshot of HEAD, and is destroyed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

from bench import machine, report, snapshot
from bench.context import (
    FIGURES,
    FULL,
    OPTIONAL_FIGURES,
    OUT_DIR,
    PG_BIN,
    QUICK,
    REPO,
    Ctx,
    _json_default,
)
from bench.fleetenv import FleetEnv

DOC = REPO / "BENCHMARKS.md"
# Figures measured only when named with --only: `make test` once, the ssh target on a lab
# (needs root, takes minutes), and applications on a fleet of their own (read-your-writes,
# the pooler). (The place of ssh, apps and ha is bench.context.OPTIONAL_FIGURES.)
OPTIONAL = (*OPTIONAL_FIGURES, "ssh", "apps", "ha", "backup")
PLOT = REPO / "bench" / "scale.png"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--quick", action="store_true", help="few repetitions; results in bench/out/quick/"
    )
    p.add_argument(
        "--only",
        action="append",
        choices=FIGURES + OPTIONAL,
        metavar="FIGURE",
        help=f"only these figures (repeatable): {', '.join(FIGURES + OPTIONAL)}; "
        "maketest (`make test`, once), ssh (the lab, needs root) and apps (read-your-writes, "
        "the pooler) run only when named",
    )
    p.add_argument("--runs", type=int, help="repetitions of each figure (default: 5, quick: 2)")
    p.add_argument("--scale-points", help="comma-separated region counts (default 3,6,9,12)")
    p.add_argument(
        "--worktree",
        action="store_true",
        help="measure the working tree as it is now instead of HEAD",
    )
    p.add_argument(
        "--no-profile", action="store_true", help="skip the profile pass of the engine floor"
    )
    p.add_argument("--keep", action="store_true", help="keep the temp directories (for debugging)")
    p.add_argument("--render", action="store_true", help="only re-render from results.json")
    return p.parse_args(argv)


def plan_of(args: argparse.Namespace):
    plan = QUICK if args.quick else FULL
    if args.runs:
        plan = replace(
            plan, runs=args.runs, converge_runs=max(1, args.runs) if not args.quick else 1
        )
    if args.scale_points:
        plan = replace(plan, scale_points=tuple(int(x) for x in args.scale_points.split(",")))
    return plan


def outputs(quick: bool) -> tuple[Path, Path, Path]:
    """(results dir, markdown, plot)."""
    if quick:
        out = OUT_DIR / "quick"
        return out, out / "BENCHMARKS.md", out / "scale.png"
    return OUT_DIR, DOC, PLOT


def hand_written(doc: Path) -> dict[str, str]:
    """The hand-written analysis blocks of the document about to be rewritten, to put
    back unchanged (report.analysis_blocks raises when they cannot be read safely)."""
    return report.analysis_blocks(doc.read_text()) if doc.exists() else {}


def render(results: dict, doc: Path, plot_path: Path) -> None:
    from bench import plot

    scale = results.get("scale") or {}
    made = None
    if "error" not in scale and scale.get("points"):
        try:
            made = plot.scale_plot(scale, plot_path)
        except Exception as exc:  # noqa: BLE001 — the document is still written
            print(f"bench: plot failed: {exc}", file=sys.stderr)
    rel_plot = None
    if made is not None:
        try:
            rel_plot = str(made.relative_to(doc.parent))
        except ValueError:
            rel_plot = str(made)
    doc.write_text(report.render(results, plot=rel_plot, analysis=hand_written(doc)))
    print(f"bench: wrote {doc}" + (f" and {made}" if made else ""), file=sys.stderr)


# The driver runs every figure in its order and shares one fleet among some of
# them: one branch per figure, kept in one place so the order reads top to bottom.
def main(argv: list[str] | None = None) -> int:  # noqa: C901, PLR0912, PLR0915
    args = parse(argv)
    out, doc, plot_path = outputs(args.quick)
    results_file = out / "results.json"
    try:
        # Checked before measuring: a run that could not write its document at the end
        # would waste half an hour.
        hand_written(doc)
    except report.AnalysisError as exc:
        print(f"bench: {doc}: {exc}; fix its markers first (nothing was run)", file=sys.stderr)
        return 2
    if args.render:
        render(json.loads(results_file.read_text()), doc, plot_path)
        return 0
    figures = [f for f in FIGURES + OPTIONAL if (f in args.only if args.only else f in FIGURES)]
    plan = plan_of(args)
    snap = snapshot.take(worktree=args.worktree)
    ctx = Ctx(plan=plan, snapshot=snap, out=out, keep=args.keep, profile=not args.no_profile)
    previous = json.loads(results_file.read_text()) if results_file.exists() and args.only else {}
    ctx.results = {k: v for k, v in previous.items() if k not in figures and k != "meta"}
    ctx.results["meta"] = {
        "machine": machine.describe(PG_BIN),
        "plan": plan.to_json(),
        "snapshot": snap.to_json(),
        "figures": figures,
        "started": time.time(),
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "busy_at_start": machine.busy_processes(),
        "load": ctx.load.marks,
    }
    if previous.get("meta") and not set(FIGURES) <= set(figures):
        # The run whose figures were kept stays the one the report describes first;
        # this `--only` run is named as a re-measurement.
        ctx.results["meta"]["base"] = previous["meta"].get("base") or previous["meta"]
    ctx.say(
        f"measuring {snap.source} at {snap.commit[:12]} ({snap.path}); figures: {', '.join(figures)}; "
        f"plan {plan.name}"
    )
    ctx.load.mark("start")
    failures = 0
    fleet: FleetEnv | None = None

    def figure(name: str, fn) -> None:
        nonlocal failures
        ctx.load.mark(f"{name} start")
        t0 = time.time()
        try:
            res = fn()
        except Exception as exc:  # noqa: BLE001 — one figure failing keeps the others
            failures += 1
            ctx.say(f"{name} FAILED: {exc}")
            res = {
                "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-4000:],
            }
        la = ctx.load.mark(f"{name} end")
        res["_meta"] = {
            "commit": snap.commit,
            "source": snap.source,
            "started": t0,
            "seconds": time.time() - t0,
            "load_start": next(
                m["load"] for m in reversed(ctx.load.marks) if m["what"] == f"{name} start"
            ),
            "load_end": [round(x, 2) for x in la],
            "plan": plan.name,
        }
        ctx.results[name] = res
        ctx.save()

    try:
        if "unit" in figures:
            from bench import fig_unit

            figure("unit", lambda: fig_unit.run(ctx))
        fleet_figures = [f for f in ("engine", "proxy", "lag") if f in figures]
        if "converge" in figures:
            from bench import fig_converge

            def converge():
                nonlocal fleet
                res, fleet = fig_converge.run(ctx)
                return res

            figure("converge", converge)
        elif fleet_figures:
            ctx.say("bringing up the default fleet for " + ", ".join(fleet_figures))
            fleet = FleetEnv("fleet", code=ctx.code, log_dir=ctx.logs)
            fleet.start_vault()
            fleet.dbfleet("up", "-q", timeout=1800)
        if fleet is not None:
            if "engine" in figures:
                from bench import fig_engine

                figure("engine", lambda: fig_engine.run(ctx, fleet))
            if "proxy" in figures:
                from bench import fig_proxy

                figure("proxy", lambda: fig_proxy.run(ctx, fleet))
            if "lag" in figures:
                from bench import fig_lag

                figure("lag", lambda: fig_lag.run(ctx, fleet))
            ctx.say("destroying the default fleet")
            problems = fleet.close(keep=ctx.keep)
            if problems:
                ctx.say(f"cleanup problems: {problems}")
        if "tls" in figures:
            from bench import fig_tls

            figure("tls", lambda: fig_tls.run(ctx))
        if "maketest" in figures:
            from bench import fig_unit

            figure("maketest", lambda: fig_unit.make_test(ctx))
        if "ssh" in figures:
            from bench import fig_ssh

            figure("ssh", lambda: fig_ssh.run(ctx))
        if "apps" in figures:
            from bench import fig_apps

            figure("apps", lambda: fig_apps.run(ctx))
        if "ha" in figures:
            from bench import fig_ha

            figure("ha", lambda: fig_ha.run(ctx))
        if "backup" in figures:
            from bench import fig_backup

            figure("backup", lambda: fig_backup.run(ctx))
        if "scale" in figures:
            from bench import fig_scale

            figure("scale", lambda: fig_scale.run(ctx))
    finally:
        for fe in list(FleetEnv._live):
            problems = fe.close(keep=ctx.keep)
            if problems:
                ctx.say(f"cleanup problems in {fe.root}: {problems}")
        ctx.load.mark("end")
        ctx.results["meta"]["finished"] = time.time()
        ctx.results["meta"]["busy_at_end"] = machine.busy_processes()
        ctx.save()
        if not ctx.keep:
            snap.remove()
    results = json.loads(json.dumps(ctx.results, default=_json_default))
    render(results, doc, plot_path)
    ctx.say(f"done: {results_file}" + (f"; {failures} figure(s) failed" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
