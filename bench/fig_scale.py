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
import time

from bench import timeline
from bench.context import Ctx
from bench.fleetenv import FleetEnv, scale_fleet_text
from bench.floor import EmptyFleet
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
