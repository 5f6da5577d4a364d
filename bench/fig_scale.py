"""Figure 3: how one group's cost grows with its number of regions.

For each point (3, 6, 9, 12 regions, one node each; a US group, because the EU zone
has only 8 regions in the catalogue): a fresh isolated environment, `dbfleet up`
from nothing, then no-change `dbfleet preview` runs, each paired with the
empty-program baseline of the same shape (4 stacks in a row) measured just before
it. Peak memory of the engine, language host, program and providers is sampled from
/proc during the up and during one extra (untimed) preview. Then a least-squares
line through the medians gives the cost per added region.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Mapping

from bench import timeline
from bench.context import Ctx
from bench.fleetenv import SCALE_REGIONS, FleetEnv, scale_fleet_text
from bench.floor import EmptyFleet
from bench.markdown import figure_meta, fmt, fmt_ratio, has_value, table, verdict
from bench.stats import Summary, fit_line, growth_exponent, incremental_slopes, paired_ratios

GOAL_PREVIEW_SLOPE_S = 1.0
GROUP = "scale"


def _statuses(text: str) -> list[str]:
    try:
        return sorted({s["status"] for s in json.loads(text).get("stacks", [])})
    except json.JSONDecodeError:
        return []


def one_point(ctx: Ctx, n: int) -> dict:
    fe = FleetEnv(
        f"scale{n}",
        functools.partial(scale_fleet_text, regions=n, group=GROUP),
        code=ctx.code,
        log_dir=ctx.logs,
    )
    point: dict = {
        "regions": n,
        "env": fe.root.name,
        "up_s": [],
        "preview_s": [],
        "floor_preview_s": [],
        "floor_up_s": [],
    }
    try:
        fe.start_vault()
        for u in range(ctx.plan.scale_up_runs):
            if u:
                fe.dbfleet("destroy", "--yes", "-q", timeout=1800)
            ctx.say(f"scale {n} regions: up {u + 1}/{ctx.plan.scale_up_runs}")
            up = fe.dbfleet("up", "--json", timeout=3600, sample_memory=True)
            point["up_s"].append(up.seconds)
            point["up_memory"] = up.memory.to_json() if up.memory else None
            point["up_scripts"] = fe.scripts_during(up)
        floor = EmptyFleet(fe, groups=(GROUP,))
        point["floor_up_s"].append(floor.up())
        for r in range(ctx.plan.scale_preview_runs):
            ctx.say(f"scale {n} regions: preview {r + 1}/{ctx.plan.scale_preview_runs}")
            point["floor_preview_s"].append(floor.preview())
            pv = fe.dbfleet("preview", "--json", "-", timeout=1800, ok_codes=(0, 2))
            point["preview_s"].append(pv.seconds)
            point.setdefault("preview_exits", []).append(pv.returncode)
            point["preview_scripts"] = fe.scripts_during(pv)
        pv = fe.dbfleet("preview", "-q", timeout=1800, ok_codes=(0, 2), sample_memory=True)
        point["preview_memory"] = pv.memory.to_json() if pv.memory else None
        if ctx.profile:
            point["profile"] = profile(fe)
        floor.remove()
        t0 = time.monotonic()
        problems = fe.close(keep=ctx.keep)
        point["destroy_s"] = time.monotonic() - t0
        if problems:
            raise RuntimeError(f"could not clean up {fe.root}: {problems}")
    finally:
        fe.close(keep=ctx.keep)
    point["up"] = Summary.of(point["up_s"])
    point["preview"] = Summary.of(point["preview_s"])
    point["floor_preview"] = Summary.of(point["floor_preview_s"])
    point["ratio_preview"] = paired_ratios(point["preview_s"], point["floor_preview_s"])
    point["floor_up"] = Summary.of(point["floor_up_s"])
    point["ratio_up"] = Summary.of(u / point["floor_up"].median for u in point["up_s"])
    return point


def profile(fe: FleetEnv) -> dict:
    """One verbose plain `pulumi preview` of each stack that grows with regions: where
    its time goes (bench.timeline) and its host `check` scripts."""
    out = {}
    for layer in ("replicas", "proxies"):
        stack = f"{layer}-{GROUP}"
        t = fe.pulumi(
            "preview",
            "-s",
            stack,
            "--expect-no-changes",
            "--logtostderr",
            "-v=9",
            "--logflow",
            timeout=1200,
        )
        tl = timeline.phases(t.stderr).to_json()
        tl["wall"] = t.seconds
        tl["scripts"] = fe.scripts_during(t)
        out[stack] = tl
    return out


def run(ctx: Ctx) -> dict:
    points: dict[str, dict] = {}
    out: dict = {"group": GROUP, "goal_preview_slope_s": GOAL_PREVIEW_SLOPE_S, "points": points}
    for n in ctx.plan.scale_points:
        points[str(n)] = one_point(ctx, n)
        out.update(fits(points))
        ctx.results["scale"] = out
        ctx.save()
    return out


def _median(summary) -> float:
    return summary["median"] if isinstance(summary, dict) else summary.median


def fits(points: dict[str, dict]) -> dict:
    xs = sorted(int(k) for k in points)
    if len(xs) < 2:
        return {}

    def series(key: str) -> list[float]:
        return [
            points[str(x)][key]["median"]
            if isinstance(points[str(x)][key], dict)
            else points[str(x)][key].median
            for x in xs
        ]

    def normalized(key: str, floor_key: str) -> list[float]:
        # Load drifts between points (the machine is shared): each point's ratio to its own
        # baseline, times the baseline's median over all points, is its time at a common load.
        floors = [v for x in xs for v in points[str(x)].get(f"{floor_key}_s") or []]
        if not floors:
            return [float("nan")] * len(xs)
        ref = sorted(floors)[len(floors) // 2]
        return [
            _median(points[str(x)].get(f"ratio_{key}") or {"median": float("nan")}) * ref
            for x in xs
        ]

    def mem(key: str) -> list[float]:
        return [(points[str(x)].get(key) or {}).get("pulumi_total_mb", float("nan")) for x in xs]

    out = {}
    for name, ys in (
        ("up", series("up")),
        ("preview", series("preview")),
        ("floor_preview", series("floor_preview")),
        ("preview_normalized", normalized("preview", "floor_preview")),
        ("up_normalized", normalized("up", "floor_up")),
        ("up_memory_mb", mem("up_memory")),
        ("preview_memory_mb", mem("preview_memory")),
    ):
        out[f"series_{name}"] = ys
        try:
            out[f"fit_{name}"] = fit_line(xs, ys)
        except ValueError:
            continue
        out[f"steps_{name}"] = incremental_slopes(xs, ys)
        out[f"exponent_{name}"] = growth_exponent(xs, ys)
    return out


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 3 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def linear(sc: Mapping, key: str) -> bool:
    """Linear enough: the line explains ≥ 90 % of the variance, or the points deviate
    from it by under 10 %, and the last step costs < 2× the first (not quadratic)."""
    fit = sc.get(f"fit_{key}") or {}
    steps = [s for s in sc.get(f"steps_{key}") or [] if has_value(s)]
    close = fit.get("r2", 0) >= 0.9 or fit.get("max_rel_residual", 1) < 0.10
    accelerating = len(steps) >= 2 and steps[0] > 0 and steps[-1] > 2 * steps[0] and steps[-1] > 0.5
    return bool(close and not accelerating)


def ok(sc: Mapping) -> bool | None:
    """Judged on the preview at a common load when there is one, else as measured."""
    fit = sc.get("fit_preview_normalized") or sc.get("fit_preview")
    if not fit:
        return None
    key = "preview_normalized" if sc.get("fit_preview_normalized") else "preview"
    return fit["slope"] < sc.get("goal_preview_slope_s", GOAL_PREVIEW_SLOPE_S) and linear(sc, key)


def summary_rows(sc: Mapping) -> list[list[str]]:
    if not sc.get("fit_preview"):
        return []
    fp = sc.get("fit_preview_normalized") or sc["fit_preview"]
    fu = sc.get("fit_up_normalized") or sc.get("fit_up") or {}
    fb = sc.get("fit_floor_preview") or {}
    return [
        [
            "3. Scale: one group, " + ", ".join(sorted(sc.get("points", {}), key=int)) + " regions",
            f"linear; preview < {sc.get('goal_preview_slope_s', GOAL_PREVIEW_SLOPE_S):g} s per added region",
            (
                f"preview {fp['slope']:+.2f} s/region (r² {fp['r2']:.2f}); up {fu.get('slope', math.nan):+.2f} s/region "
                "(at a common load)"
            ),
            f"empty program drifted {fb.get('slope', math.nan):+.2f} s/region (load)",
            verdict(ok(sc)),
        ]
    ]


def section(sc: Mapping, plot: str | None) -> str:
    if not sc:
        return ""
    if sc.get("error"):
        return f"## 3. Scale\n\nFailed: {sc['error']}"
    points = sc.get("points") or {}
    xs = sorted(points, key=int)
    norm_pv = sc.get("series_preview_normalized") or []
    norm_up = sc.get("series_up_normalized") or []
    rows = []
    for i, x in enumerate(xs):
        p = points[x]
        um = p.get("up_memory") or {}
        pm = p.get("preview_memory") or {}
        rows.append(
            [
                x,
                fmt(p.get("up")),
                fmt(p.get("floor_up")),
                f"{norm_up[i]:.1f} s" if i < len(norm_up) and has_value(norm_up[i]) else "–",
                fmt(p.get("preview")),
                fmt(p.get("floor_preview")),
                fmt_ratio(p.get("ratio_preview")),
                f"{norm_pv[i]:.1f} s" if i < len(norm_pv) and has_value(norm_pv[i]) else "–",
                f"{um.get('pulumi_total_mb', math.nan):.0f}" if um else "–",
                f"{pm.get('pulumi_total_mb', math.nan):.0f}" if pm else "–",
            ]
        )
    up_runs = sorted({len(points[x].get("up_s") or []) for x in xs})
    pv_runs = sorted({len(points[x].get("preview_s") or []) for x in xs})
    parts = [
        "## 3. Scale",
        "",
        figure_meta(sc),
        "",
        "One group with "
        + ", ".join(xs)
        + " regions, one node each, in a fresh environment per point: "
        "`dbfleet up` from nothing, the empty program's 4 stacks brought up next to it (baseline), then "
        "no-change `dbfleet preview` runs, each paired with 4 empty-program previews measured just before "
        "it. The group is in the **US zone** because the catalogue has only 8 EU regions "
        "(ams, arn, cdg, fra, lhr, mad, otp, waw) and 12 US ones; regions are added in the order "
        + ", ".join(SCALE_REGIONS)
        + ". "
        f"`up` ran {'/'.join(map(str, up_runs))} time(s) per point and the preview "
        f"{'/'.join(map(str, pv_runs))} times: an `up` from nothing of 12 regions plus its destroy takes "
        "several minutes here, so the full run keeps one `up` per point (four points are what tells "
        "linear from not) and repeats the cheaper preview. Peak memory is the largest simultaneous RSS of "
        "the engine, language host, program, providers and policy pack (sampled from /proc every 0.1 s).",
        "",
        (
            "The points are minutes apart and the load moved between them (see the baseline column: the "
            "empty program does not depend on regions at all), so each point is also given **at a common "
            "load**: its ratio to its own baseline times the median baseline of all points. The goal is "
            "judged on that series."
        ),
        "",
        table(
            [
                "regions",
                "up",
                "empty program up (4 stacks)",
                "up at common load",
                "no-change preview",
                "empty program (4 previews)",
                "preview ÷ empty",
                "preview at common load",
                "peak MiB, up",
                "peak MiB, preview",
            ],
            rows,
        ),
    ]
    fit_rows = _fit_rows(sc)
    if fit_rows:
        parts += [
            "",
            (
                "Least-squares line through the medians (per added region), the cost per region of each step "
                "between points, and the log-log slope (1 = proportional, < 1 = a fixed cost dominates, "
                "≥ 2 = quadratic):"
            ),
            "",
            table(
                [
                    "series",
                    "per added region",
                    "fixed part",
                    "r²",
                    "worst point off the line",
                    "per region, step by step",
                    "log-log slope",
                ],
                fit_rows,
            ),
        ]
    if plot:
        parts += ["", f"![time and memory against regions]({plot})"]
    prof_rows = _profile_rows(points, xs)
    if prof_rows:
        parts += [
            "",
            (
                "Profile of one plain `pulumi preview` of the two stacks that grow with regions, per point "
                "(engine log, `bench/timeline.py`; seconds):"
            ),
            "",
            table(
                [
                    "regions",
                    "stack",
                    "wall",
                    "program run",
                    "StackReference reads",
                    "Diff calls: span",
                    "check scripts: sum",
                ],
                prof_rows,
            ),
        ]
    return "\n".join(parts)


def _fit_rows(sc: Mapping) -> list[list[str]]:
    rows = []
    for key, label in (
        ("preview_normalized", "**no-change preview, common load**"),
        ("preview", "no-change preview, as measured"),
        ("floor_preview", "empty-program previews (load drift)"),
        ("up_normalized", "up from nothing, common load"),
        ("up", "up from nothing, as measured"),
        ("up_memory_mb", "peak memory during up (MiB)"),
        ("preview_memory_mb", "peak memory during preview (MiB)"),
    ):
        f = sc.get(f"fit_{key}")
        if not f:
            continue
        unit = "MiB" if "memory" in key else "s"
        steps = ", ".join(f"{s:+.2f}" for s in sc.get(f"steps_{key}") or [])
        rows.append(
            [
                label,
                f"{f['slope']:+.2f} {unit}",
                f"{f['intercept']:.1f} {unit}",
                f"{f['r2']:.3f}",
                f"{f['max_rel_residual'] * 100:.0f} %",
                steps,
                f"{sc.get(f'exponent_{key}', math.nan):.2f}",
            ]
        )
    return rows


def _profile_rows(points: Mapping, xs: list[str]) -> list[list[str]]:
    rows = []
    for x in xs:
        for stack, tl in sorted((points[x].get("profile") or {}).items()):
            scripts = tl.get("scripts") or {}
            rows.append(
                [
                    x,
                    f"`{stack}`",
                    f"{tl.get('wall', math.nan):.2f}",
                    f"{tl.get('program_run', math.nan):.2f}",
                    f"{tl.get('stack_ref_seconds', math.nan):.2f}",
                    f"{tl.get('diffs', 0)}: {tl.get('diff_span', 0):.2f}",
                    f"{scripts.get('count', 0)}: {scripts.get('sum_s', 0):.2f}",
                ]
            )
    return rows
