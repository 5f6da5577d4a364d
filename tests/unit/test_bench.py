"""The pure parts of bench/: statistics, fitting, the engine-log timeline, /proc
parsing, the fleets it generates, and report rendering (each figure's section, and the
hand-written analysis kept byte for byte). No engine, no I/O."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest

from bench import (
    fig_apps,
    fig_backup,
    fig_converge,
    fig_engine,
    fig_ha,
    fig_lag,
    fig_proxy,
    fig_scale,
    fig_ssh,
    fig_tls,
    fig_unit,
    markdown,
    procs,
    report,
    stats,
    timeline,
)
from bench.context import _json_default
from bench.fleetenv import SCALE_REGIONS, default_fleet_text, scale_fleet_text, script_stats
from dbfleet.model.catalogue import REGIONS
from dbfleet.model.spec import parse_fleet

# --------------------------------------------------------------------------- statistics


def test_percentile_interpolates_between_closest_ranks():
    xs = [1, 2, 3, 4]
    assert stats.percentile(xs, 0) == 1
    assert stats.percentile(xs, 100) == 4
    assert stats.percentile(xs, 50) == 2.5
    assert stats.percentile(range(1, 101), 99) == pytest.approx(99.01)
    assert stats.percentile([7], 99) == 7
    assert math.isnan(stats.percentile([], 50))
    with pytest.raises(ValueError):
        stats.percentile(xs, 101)


def test_median_ignores_order():
    assert stats.median([5, 1, 3]) == 3
    assert stats.median([4, 1, 3, 2]) == 2.5


def test_summary_is_median_with_min_and_max_and_drops_missing_values():
    s = stats.Summary.of([3.0, 1.0, 2.0, None, float("nan")])
    assert (s.median, s.lo, s.hi, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.spread == 1.0
    assert stats.Summary.from_json(s.to_json()) == s
    empty = stats.Summary.of([])
    assert empty.n == 0 and math.isnan(empty.median)


def test_ratio_and_paired_ratios():
    assert stats.ratio(3, 2) == 1.5
    assert math.isnan(stats.ratio(1, 0))
    assert math.isnan(stats.ratio(1, float("nan")))
    # Pairs drift together: the per-pair ratio stays 2 even though the load changed.
    s = stats.paired_ratios([2, 4, 8], [1, 2, 4])
    assert (s.median, s.lo, s.hi) == (2, 2, 2)
    with pytest.raises(ValueError):
        stats.paired_ratios([1], [1, 2])


def test_fit_line_recovers_an_exact_line():
    fit = stats.fit_line([3, 6, 9, 12], [10.5, 12.0, 13.5, 15.0])
    assert fit.slope == pytest.approx(0.5)
    assert fit.intercept == pytest.approx(9.0)
    assert fit.r2 == pytest.approx(1.0)
    assert fit.max_rel_residual == pytest.approx(0.0, abs=1e-12)
    assert fit.at(20) == pytest.approx(19.0)
    assert fit.to_json()["n"] == 4


def test_fit_line_reports_how_well_a_curve_fits():
    xs = [3, 6, 9, 12]
    quad = [x * x for x in xs]
    fit = stats.fit_line(xs, quad)
    assert fit.slope == pytest.approx(15.0)
    assert fit.r2 < 0.99
    assert fit.max_rel_residual > 0.1
    assert stats.incremental_slopes(xs, quad) == [9.0, 15.0, 21.0]
    assert stats.growth_exponent(xs, quad) == pytest.approx(2.0)
    assert stats.growth_exponent(xs, [2 * x for x in xs]) == pytest.approx(1.0)


def test_fit_line_needs_two_distinct_points():
    with pytest.raises(ValueError):
        stats.fit_line([3, 3], [1, 2])
    with pytest.raises(ValueError):
        stats.fit_line([3], [1])
    # NaN points are left out.
    assert stats.fit_line([1, 2, 3], [1, float("nan"), 3]).slope == pytest.approx(1.0)


# --------------------------------------------------------------------------- /proc


def test_parse_stat_handles_names_with_spaces_and_parentheses():
    raw = (
        "4242 (pulumi-language) S 4000 4242 4000 0 -1 4194560 "
        + " ".join(["0"] * 14)
        + " 2500 0 0\n"
    )
    p = procs.parse_stat(raw)
    assert (p.pid, p.ppid, p.comm) == (4242, 4000, "pulumi-language")
    assert p.rss == 2500 * procs.PAGE
    odd = "7 (a (b) c) R 1 " + " ".join(["0"] * 19) + " 10 0\n"
    assert procs.parse_stat(odd).comm == "a (b) c"
    assert procs.parse_stat("garbage") is None


def _tree():
    P = procs.Proc
    return {
        1: P(1, 0, "init", 1),
        10: P(10, 1, "python3", 100),  # the dbfleet CLI (root)
        11: P(11, 10, "pulumi", 200),
        12: P(12, 11, "pulumi-language", 30),
        13: P(13, 12, "python3", 80),  # the program
        14: P(14, 11, "pulumi-resource", 5),
        15: P(15, 14, "python3", 60),  # dynamic provider host
        16: P(16, 15, "bash", 4),  # a host script
        17: P(17, 11, "pulumi-analyzer", 5),
        18: P(18, 17, "python3", 40),
        99: P(99, 1, "postgres", 500),  # not ours
    }


def test_descendants_and_classify_the_pulumi_process_tree():
    procs_ = _tree()
    tree = procs.descendants(procs_, 10)
    assert {p.pid for p in tree} == {10, 11, 12, 13, 14, 15, 16, 17, 18}
    kinds = procs.classify(tree, 10)
    assert kinds == {
        10: "cli",
        11: "engine",
        12: "language host",
        13: "program",
        14: "provider",
        15: "provider",
        16: "other",
        17: "policy",
        18: "policy",
    }
    peak = procs.MemoryPeak()
    peak.add(tree, kinds)
    assert peak.pulumi_total == 200 + 30 + 80 + 5 + 60 + 5 + 40
    assert peak.tree_total == peak.pulumi_total + 100 + 4
    smaller = [p for p in tree if p.pid != 13]
    peak.add(smaller, kinds)
    assert peak.pulumi_total == 420 and peak.by_kind["program"] == 80 and peak.samples == 2


def test_union_seconds_merges_overlapping_intervals():
    assert procs.union_seconds([]) == 0
    assert procs.union_seconds([(0, 1), (0.5, 2), (3, 4)]) == 3
    assert procs.union_seconds([(5, 6), (0, 10)]) == 10


def test_script_stats_counts_actions_and_busy_time():
    rows = [
        {"action": "check", "target": "fra-0", "start": 0.0, "seconds": 1.0},
        {"action": "check", "target": "lhr-0", "start": 0.5, "seconds": 1.0},
        {"action": "create", "target": "proxy-fra", "start": 5.0, "seconds": 0.25},
    ]
    s = script_stats(rows)
    assert s["count"] == 3 and s["actions"] == {"check": 2, "create": 1}
    assert s["sum_s"] == 2.25 and s["busy_s"] == 1.75
    assert s["slowest"][0]["seconds"] == 1.0


# --------------------------------------------------------------------------- fleets


def test_generated_fleets_are_valid_and_isolated():
    fleet = parse_fleet(default_fleet_text("b123456", 42))
    assert fleet.name == "b123456" and str(fleet.network.cidr) == "127.42.0.0/16"
    assert set(fleet.groups) == {"us", "eu"}
    for n in (3, 6, 9, 12):
        f = parse_fleet(scale_fleet_text("b1", 30, n))
        assert list(f.groups) == ["scale"]
        assert len(f.groups["scale"].regions) == n
    assert len(set(SCALE_REGIONS)) == 12
    assert {REGIONS[c].zone for c in SCALE_REGIONS} == {"US"}
    with pytest.raises(ValueError):
        scale_fleet_text("b1", 30, 13)


# --------------------------------------------------------------------------- engine log

LOG = """\
I1122 01:08:15.900000   100 log.go:81] skipping update check
I1122 01:08:16.500000   100 log.go:81] *** Starting Update(preview=true) ***
I1122 01:08:16.600000   100 log.go:81] langhost[python].GetRequiredPlugins(proj=dbfleet,pwd=/p,program=.) executing
I1122 01:08:16.700000   200 log.go:81] this line is from another process and is ignored
I1122 01:08:18.600000   100 log.go:81] langhost[python].GetRequiredPlugins(proj=dbfleet,pwd=/p,program=.) success: #versions=0
I1122 01:08:18.700000   100 log.go:81] langhost[python].Run(pwd=/p,program=.,#args=0,proj=dbfleet,stack=replicas-us,#config=0,dryrun=true) executing
I1122 01:08:20.500000   100 log.go:81] reading resource: ty=pulumi:pulumi:StackReference, name=accounts-us, id=accounts-us
I1122 01:08:20.600000   100 log.go:81] StepExecutor worker(2): applying step read on urn:pulumi:replicas-us::dbfleet::pulumi:pulumi:StackReference::accounts-us (preview true)
I1122 01:08:21.200000   100 log.go:81] StepExecutor worker(2): step read on urn:pulumi:replicas-us::dbfleet::pulumi:pulumi:StackReference::accounts-us retired
I1122 01:08:21.300000   100 log.go:81] Launching plugin 'pulumi-python (resource)' from '/x/pulumi-resource-pulumi-python' with args: 127.0.0.1:1
I1122 01:08:22.000000   100 log.go:81] Provider[pulumi-python, 0x4]: GetPluginInfo() executing
I1122 01:08:22.050000   100 log.go:81] Provider[pulumi-python, 0x466cf232f50].GetPluginInfo() success (#version=0.1.0) success
I1122 01:08:22.100000   100 log.go:81] Provider[pulumi-python, 0x466cf232f50].Diff(urn:pulumi:replicas-us::dbfleet::dbfleet:postgres:PostgresNode$pulumi-python:dynamic:Resource::iad-0-server,localhost:iad-0-server): executing (#oldInputs=10)
I1122 01:08:22.400000   100 log.go:81] Provider[pulumi-python, 0x466cf232f50].Diff(urn:pulumi:replicas-us::dbfleet::dbfleet:postgres:PostgresNode$pulumi-python:dynamic:Resource::iad-0-server,localhost:iad-0-server) success: changes=1
I1122 01:08:23.900000   100 log.go:81] langhost[python].Run(pwd=/p,program=.,...,dryrun=true) success: progerr=, bail=false
I1122 01:08:24.000000   100 log.go:81] *** Update(preview=true) complete ***
"""


def test_timeline_splits_an_engine_log_into_phases():
    tl = timeline.phases(LOG)
    assert tl.total == pytest.approx(8.1)
    assert tl.before_update == pytest.approx(0.6)
    assert tl.plugins == pytest.approx(2.0)
    assert tl.program_start == pytest.approx(1.8)
    assert tl.program_run == pytest.approx(5.2)
    assert tl.after_run == pytest.approx(0.1)
    assert [(s.name, round(s.seconds, 3)) for s in tl.stack_refs] == [("accounts-us", 0.6)]
    assert [(s.name, round(s.seconds, 3)) for s in tl.launches] == [("pulumi-python", 0.75)]
    assert [(s.name, round(s.seconds, 3)) for s in tl.diffs] == [("iad-0-server", 0.3)]
    doc = tl.to_json()
    assert doc["stack_ref_seconds"] == pytest.approx(0.6) and doc["diffs"] == 1


SECRET = "Zk3-not-a-real-password-9QwE"
# Pulumi v3.79.0 starts the dynamic provider twice in a preview, and at -v=9 the engine
# prints every input, secrets included.
TWICE = LOG.replace(
    "I1122 01:08:22.100000",
    "I1122 01:08:22.060000   100 log.go:81] Launching plugin 'pulumi-python (resource)' from '/x/p' with args: 127.0.0.1:1\n"
    "I1122 01:08:22.080000   100 log.go:81] Provider[pulumi-python, 0x5].GetPluginInfo() success (#version=0.1.0) success\n"
    "I1122 01:08:22.090000   100 log.go:81] Marshaling property for RPC[ResourceMonitor.RegisterResource(pulumi-python:dynamic:Resource,iad-0-server)]: "
    f"PG_APP_PASSWORD={{{SECRET}}}\n"
    "I1122 01:08:22.095000   100 log.go:81] Planner decided not to update 'urn:x' after diff (same) "
    f"(inputs=map[PG_APP_PASSWORD:{{{SECRET}}}])\n"
    "I1122 01:08:22.100000",
    1,
)


def test_every_launch_of_a_plugin_counts():
    doc = timeline.phases(TWICE).to_json()
    assert doc["launch_counts"] == {"pulumi-python": 2}
    assert doc["launches"]["pulumi-python"] == pytest.approx(0.75 + 0.02)
    row = fig_engine.python_launches(doc)
    assert row == 2
    # results written before the count was kept: one launch per plugin name
    assert fig_engine.python_launches({"launches": {"pulumi-python": 0.4}}) == 1


def test_a_kept_engine_log_has_no_property_values_and_the_same_timeline():
    kept = timeline.keep(TWICE)
    assert SECRET not in kept and SECRET in TWICE
    assert "Marshaling property" not in kept
    assert timeline.phases(kept).to_json() == timeline.phases(TWICE).to_json()


def test_a_verbose_engine_run_is_logged_without_its_secrets(tmp_path):
    log, engine_log = tmp_path / "commands.log", tmp_path / "engine.log"
    engine_log.write_text(TWICE)
    script = f"import sys; sys.stderr.write(open({str(engine_log)!r}).read()); print('done')"
    t = procs.run(["python3", "-c", script, "--logtostderr"], log=log)
    assert SECRET in t.stderr  # the run itself keeps everything for parsing
    assert SECRET not in log.read_text() and "done" in log.read_text()
    assert SECRET not in t.tail(100)


def test_timeline_of_nothing_is_empty():
    assert timeline.phases("no glog lines here").total == 0


# --------------------------------------------------------------------------- report


def S(median, lo=None, hi=None, n=5):
    return {
        "median": median,
        "min": median if lo is None else lo,
        "max": median if hi is None else hi,
        "n": n,
    }


RESULTS = {
    "meta": {
        "machine": {
            "nproc": 2,
            "cpu": "Test CPU",
            "mem_gib": 23.5,
            "kernel": "6.1",
            "python": "3.11.7",
            "pulumi": "v3.79.0",
            "postgres": "postgres (PostgreSQL) 15.8",
            "haproxy": "HAProxy version 2.6",
        },
        "plan": {
            "name": "full",
            "runs": 5,
            "converge_runs": 5,
            "scale_points": [3, 6, 9, 12],
            "scale_up_runs": 1,
            "scale_preview_runs": 5,
        },
        "snapshot": {"commit": "0123456789abcdef", "source": "HEAD", "dirty": []},
        "started": 1_700_000_000,
        "finished": 1_700_003_000,
        "command": "python -m bench",
        "load": [
            {"what": "start", "time": 1_700_000_000, "load": [5.1, 4.0, 3.0]},
            {"what": "end", "time": 1_700_003_000, "load": [2.0, 3.0, 3.5]},
        ],
    },
    "engine": {
        "goal_ratio": 1.5,
        "empty": S(3.0),
        "stacks": {
            "accounts-us": {"summary": S(4.0), "ratio": S(1.33, 1.2, 1.4)},
            "replicas-us": {"summary": S(6.0), "ratio": S(2.0, 1.8, 2.2)},
        },
    },
    "converge": {
        "goal_up_s": 60,
        "goal_preview_s": 20,
        "up": S(72.0, 70, 90),
        "preview": S(18.0),
        "floor_up": S(30.0),
        "floor_preview": S(12.0),
        "ratio_up": S(2.4),
        "ratio_preview": S(1.5),
        "runs": [
            {
                "up_scripts": {
                    "count": 20,
                    "sum_s": 40.0,
                    "busy_s": 30.0,
                    "slowest": [{"script": "create iad-0", "seconds": 6.0}],
                }
            }
        ],
    },
    "scale": {
        "goal_preview_slope_s": 1.0,
        "points": {
            str(n): {
                "up": S(30 + 5 * n, n=1),
                "preview": S(10 + 0.5 * n),
                "floor_preview": S(9.0),
                "ratio_preview": S(1.2),
                "up_s": [30 + 5 * n],
                "preview_s": [10 + 0.5 * n] * 5,
                "up_memory": {"pulumi_total_mb": 300 + n},
                "preview_memory": {"pulumi_total_mb": 250},
            }
            for n in (3, 6, 9, 12)
        },
        "fit_preview": {
            "slope": 0.5,
            "intercept": 10.0,
            "r2": 1.0,
            "max_rel_residual": 0.0,
            "n": 4,
        },
        "steps_preview": [0.5, 0.5, 0.5],
        "exponent_preview": 0.3,
        "fit_up": {"slope": 5.0, "intercept": 30.0, "r2": 1.0, "max_rel_residual": 0.0, "n": 4},
    },
    "proxy": {
        "group": "eu",
        "primary": "fra",
        "goal_read_p50_ratio": 1.3,
        "runs": 5,
        "queries_per_run": 2000,
        "reads": {
            "lhr": {
                "role": "replica",
                "proxy_p50_ms": S(0.30),
                "direct_p50_ms": S(0.20),
                "ratio_p50": S(1.5),
                "proxy_p99_ms": S(0.9),
                "direct_p99_ms": S(0.6),
                "ratio_p99": S(1.5),
            }
        },
        "writes": {
            "lhr": {
                "proxy_p50_ms": S(1.1),
                "direct_p50_ms": S(1.0),
                "ratio_p50": S(1.1),
                "proxy_p99_ms": S(2.0),
                "direct_p99_ms": S(1.8),
                "ratio_p99": S(1.1),
            }
        },
    },
    "lag": {
        "group": "eu",
        "primary": "fra",
        "goal_p99_s": 1.0,
        "clients": 4,
        "load": {
            "rate": 200,
            "seconds": 30,
            "writes_per_s": S(199.5),
            "latency_ms": S(1.2),
            "wal_kib_per_s": S(60.0),
            "failed": 0,
        },
        "baseline_load": {"rate": 10, "seconds": 15},
        "slots": {
            "dbfleet_lhr_0": {
                "replay_lag_p50": S(0.001),
                "replay_lag_p99": S(0.004),
                "replay_lag_max": S(0.01),
                "lsn_p99": S(2048),
                "baseline_replay_lag_p50": S(0.001),
                "baseline_replay_lag_p99": S(0.002),
                "ratio_p99": S(2.0),
            }
        },
        "replicas": {"lhr": {"age_p99": S(0.006)}},
        "runs": [{}] * 5,
    },
    "unit": {
        "goal_s": 10,
        "summary": S(12.5),
        "baseline": S(0.9),
        "ratio": S(13.9),
        "tests": 629,
        "failed_runs": [{"exit": 3, "seconds": 9.0, "tail": "INTERNALERROR"}],
    },
}


def test_report_renders_every_figure_with_goals_ratios_and_verdicts():
    text = report.render(RESULTS, plot="bench/scale.png")
    assert text.startswith("# dbfleet benchmarks")
    for heading in (
        "## Summary",
        "## 1. Engine floor",
        "## 2. Converge time",
        "## 3. Scale",
        "## 4. Proxy cost",
        "## 5. Replication lag",
        "## 6. Unit suite",
        "## Load during the run",
    ):
        assert heading in text
    assert "2 CPUs (Test CPU)" in text and "5.10 / 4.00 / 3.00" in text
    assert "`0123456789ab`" in text
    assert "1.33× (1.20–1.40)" in text and "2.00× (1.80–2.20)" in text
    assert "72.0 s (70.0–90.0)" in text
    assert "+0.50 s/region" in text
    assert "![time and memory against regions](bench/scale.png)" in text
    assert "US zone" in text and "only 8 EU regions" in text
    assert "writes/s" in text and "4.0 ms" in text
    assert "not counted" in text
    # Misses say so; a met goal does not.
    assert text.count("**missed**") >= 4  # replicas-us, up, proxy, unit
    # What the figures mean is left to the hand-written blocks, one per figure.
    assert "What would fix it" not in text
    assert list(report.analysis_blocks(text)) == [
        "intro",
        "engine",
        "converge",
        "scale",
        "proxy",
        "lag",
        "unit",
    ]


def test_verdicts():
    assert fig_engine.ok(RESULTS["engine"]) is False
    assert fig_converge.ok(RESULTS["converge"]) == (False, True)
    assert fig_scale.ok(RESULTS["scale"]) is True
    assert fig_proxy.ok(RESULTS["proxy"]) is False
    assert fig_lag.ok(RESULTS["lag"]) is True
    assert fig_unit.ok(RESULTS["unit"]) is False
    assert fig_engine.ok({}) is None


def test_linear_rejects_accelerating_growth():
    sc = {
        "fit_preview": {"slope": 2.0, "r2": 0.95, "max_rel_residual": 0.2},
        "steps_preview": [0.5, 1.5, 3.0],
    }
    assert fig_scale.linear(sc, "preview") is False
    sc["steps_preview"] = [0.5, 0.6, 0.55]
    assert fig_scale.linear(sc, "preview") is True


def test_format_helpers():
    assert markdown.fmt(S(1.234, 1.0, 2.0), "s", 2) == "1.23 s (1.00–2.00)"
    assert markdown.fmt(S(1.5, n=1)) == "1.5 s (1 run)"
    assert markdown.fmt(None) == "–"
    assert markdown.fmt_ratio(S(1.25, 1.2, 1.3)) == "1.25× (1.20–1.30)"
    assert markdown.table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_report_of_a_failed_figure_says_so():
    text = report.render({"meta": {}, "scale": {"error": "RuntimeError: boom"}})
    assert "Failed: RuntimeError: boom" in text
    assert "`scale`: RuntimeError: boom" in text


# --------------------------------------------------------------------------- hand-written analysis

HAND = (
    "<!-- analysis lag: begin — by hand -->\n"
    "### Reading it\n\nLag is  the round trip.   \n\n\n"  # odd spacing must survive as it is
    "<!-- analysis lag: end -->"
)


def test_a_rewrite_keeps_each_hand_written_block_byte_for_byte_after_its_figure():
    old = report.render(RESULTS, analysis={"lag": HAND})
    assert report.analysis_blocks(old)["lag"] == HAND
    again = report.render(RESULTS, analysis=report.analysis_blocks(old))
    assert again == old
    lag, unit = again.index("## 5. Replication lag"), again.index("## 6. Unit suite")
    assert lag < again.index(HAND) < unit


def test_blocks_whose_place_is_gone_are_kept_at_the_end():
    other = "<!-- analysis notes: begin -->\nkept\n<!-- analysis notes: end -->"
    text = report.render({"meta": {}}, analysis={"lag": HAND, "notes": other})
    assert text.rstrip("\n").endswith(HAND + "\n\n" + other)
    # The figure itself is not in these results: no empty section is made up for it.
    assert "## 5. Replication lag" not in text


@pytest.mark.parametrize(
    "doc, problem",
    [
        ("<!-- analysis lag: begin -->\ntext\n", "no end marker"),
        (
            (
                "<!-- analysis lag: begin -->\n<!-- analysis unit: begin -->\n"
                "<!-- analysis unit: end -->\n<!-- analysis lag: end -->"
            ),
            "begins inside",
        ),
        (HAND + "\n\n" + HAND, "appears twice"),
    ],
)
def test_blocks_that_cannot_be_read_back_safely_are_an_error(doc, problem):
    with pytest.raises(report.AnalysisError, match=problem):
        report.analysis_blocks(doc)


def test_the_committed_benchmarks_keep_their_analysis_in_readable_blocks():
    doc = (Path(__file__).resolve().parents[2] / "BENCHMARKS.md").read_text()
    blocks = report.analysis_blocks(doc)
    assert {"intro", "engine", "converge", "scale", "proxy", "lag"} <= set(blocks)
    assert "### Reading" in blocks["engine"]


# --------------------------------------------------------------------------- figure helpers


def test_scale_fits_correct_for_load_drift_between_points():
    points = {}
    for n, load in ((3, 1.0), (6, 2.0), (9, 1.0), (12, 1.5)):
        floor = [10.0 * load] * 3
        preview = [(20.0 + 0.5 * n) * load] * 3  # true cost 20 + 0.5/region, scaled by the load
        points[str(n)] = {
            "up": S(60 + 4 * n),
            "preview": S(preview[0]),
            "floor_preview": S(floor[0]),
            "floor_preview_s": floor,
            "floor_up_s": [30.0],
            "ratio_preview": stats.paired_ratios(preview, floor),
            "ratio_up": S((60 + 4 * n) / 30.0),
        }
    out = fig_scale.fits(points)
    # Each point's ratio to its own baseline, times the median baseline of all runs, is exactly
    # linear again whatever the load was at each point.
    assert out["fit_preview_normalized"].r2 == pytest.approx(1.0)
    ref = sorted([10, 10, 10, 20, 20, 20, 10, 10, 10, 15, 15, 15])[6]
    assert out["fit_preview_normalized"].slope == pytest.approx(0.5 * ref / 10.0)
    assert out["fit_preview"].r2 < 0.9  # as measured, the load drift hides the line
    assert out["series_preview_normalized"][0] == pytest.approx((20 + 1.5) / 10.0 * ref)


def test_cli_calls_are_grouped_by_command():
    log = "10.0 12.0 1 preview --stack accounts-us --non-interactive --color never\n10.5 11.0 2 version\n12.0 12.5 3 stack output --json --show-secrets --stack accounts-us\n12.5 13.5 4 stack output --json --stack accounts-us\ngarbage"
    calls = fig_converge.cli_calls(log)
    assert [c["command"] for c in calls] == ["preview", "version", "stack output", "stack output"]
    assert calls[0]["stack"] == "accounts-us" and calls[1]["stack"] == ""
    s = fig_converge.summarize_cli(calls, wall=4.0)
    assert s["calls"] == 4 and s["stacks"] == 1
    assert s["by_command"]["stack output"] == {"count": 2, "seconds": 1.5}
    assert s["sum_s"] == 4.0 and s["busy_s"] == 3.5
    assert next(iter(s["by_command"])) == "preview"  # heaviest first


def test_lag_summary_takes_percentiles_per_replica_and_pairs_the_baseline():
    def run(rate, lag):
        return {
            "rate": rate,
            "seconds": 30,
            "wall": 30.5,
            "writes_per_s": rate * 0.99,
            "wal_bytes_per_s": 60_000.0,
            "sampler_error": "",
            "pgbench": {"tps": rate, "latency_ms": 1.0, "transactions": rate * 30, "failed": 0},
            "slots": {
                "dbfleet_lhr_0": {
                    "replay_lag_p50": lag / 2,
                    "replay_lag_p99": lag,
                    "replay_lag_max": lag * 2,
                    "lsn_p50": 0.0,
                    "lsn_p99": 1024.0,
                    "samples": 290,
                    "null_samples": 3,
                }
            },
            "replicas": {
                "lhr": {"age_p50": 0.003, "age_p99": 0.01, "age_max": 0.02, "samples": 290}
            },
        }

    out = fig_lag.summarize(
        "eu",
        "fra",
        {"lhr": {}},
        [run(200, 0.004), run(200, 0.006)],
        [run(10, 0.002), run(10, 0.002)],
    )
    slot = out["slots"]["dbfleet_lhr_0"]
    assert slot["replay_lag_p99"].median == pytest.approx(0.005)
    assert slot["ratio_p99"].median == pytest.approx(2.5)
    assert slot["null_samples"] == 6 and slot["samples"] == 580
    assert out["load"]["writes_per_s"].median == pytest.approx(198)
    assert out["replicas"]["lhr"]["age_p99"].median == pytest.approx(0.01)


def test_the_header_describes_the_full_run_and_names_a_later_only_run():
    full = {
        "started": 1796151000.0,
        "finished": 1796152320.0,
        "command": "python -m bench ",
        "snapshot": {"source": "HEAD", "commit": "aaaaaaaaaaaa1111"},
        "plan": {"name": "full", "runs": 5},
        "figures": ["unit", "converge"],
        "load": [{"time": 1796151000.0, "what": "start", "load": [0.5, 0.5, 0.5]}],
    }
    later = {
        "started": 1796153000.0,
        "finished": 1796153480.0,
        "command": "python -m bench --only maketest",
        "snapshot": {"source": "HEAD", "commit": "bbbbbbbbbbbb2222"},
        "plan": {"name": "full", "runs": 5},
        "figures": ["maketest"],
        "load": [{"time": 1796153000.0, "what": "start", "load": [1.5, 1.5, 1.5]}],
        "base": full,
    }
    text = report.header({"meta": later})
    assert "22 minutes this time" in text
    assert "commit `aaaaaaaaaaaa`" in text
    assert (
        "Re-measured since:** maketest with `python -m bench --only maketest` at commit `bbbbbbbbbbbb`"
        in text
    )
    assert "0.50 / 0.50 / 0.50 at the start" in text
    assert "Re-measured since" not in report.header({"meta": full})


def test_a_sandbox_is_private_and_its_environment_points_only_at_it(tmp_path, monkeypatch):
    from bench.sandbox import PROJECT_FILES, make_sandbox

    for f in PROJECT_FILES:
        (tmp_path / f).write_text(f"# {f}\n")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///the/users/state")
    monkeypatch.setenv("VAULT_TOKEN", "the-users-token")
    monkeypatch.setenv("DBFLEET_SPEC", "/the/users/fleet.yaml")
    sb = make_sandbox("dbfleet-unit-", tmp_path)
    try:
        env = sb.env(VAULT_ADDR="http://127.0.0.1:1")
        assert env["PULUMI_BACKEND_URL"] == f"file://{sb.home / 'state'}"
        assert env["DBFLEET_SPEC"] == str(sb.spec) and "VAULT_TOKEN" not in env
        assert env["VAULT_ADDR"] == "http://127.0.0.1:1"
        assert (sb.project / "__main__.py").read_text() == "# __main__.py\n"
        assert (sb.project / "stacks").is_dir() and (sb.home / "state").is_dir()
        assert sb.passphrase.stat().st_mode & 0o077 == 0  # the passphrase is the owner's alone
        assert sb.root.stat().st_mode & 0o005 == 0o005  # the group's OS user reaches its data
    finally:
        shutil.rmtree(sb.root)


# --------------------------------------------------------------------------- the ssh target


def _ssh_row(local: float, ssh: float, per_host: dict[str, int], changed=()) -> dict:
    return {
        "local": local,
        "ssh": ssh,
        "local_stacks": {"replicas-us": local / 4},
        "ssh_stacks": {"replicas-us": ssh / 4},
        "local_changed": [],
        "ssh_changed": list(changed),
        "local_scripts": 18,
        "connections": {"per_host": per_host, "masters": len(per_host)},
    }


HOSTS = {"198.18.7.11": "us/iad", "198.18.7.12": "us/ord", "198.18.7.21": "eu/fra"}


def _ssh_results(rows: list[dict]) -> dict:
    """Results as the report reads them: JSON, as bench/out/results.json holds them."""
    res = {
        "goal_preview_ratio": 1.3,
        "goal_connections_per_host": 4,
        "net": "198.18.7.0/24",
        "hosts": HOSTS,
        "local_up": 14.0,
        "ssh_up": 21.0,
        "lab_up": 1.5,
        "up_connections": {"per_host": dict.fromkeys(HOSTS, 4), "masters": 3},
        "warm": {"ssh": 12.0, "connections": {"per_host": dict.fromkeys(HOSTS, 0)}},
        "runs": rows,
        **fig_ssh.summarize(rows),
    }
    return json.loads(json.dumps(res, default=_json_default))


def test_ssh_summary_pairs_each_preview_with_the_local_one_next_to_it():
    rows = [
        _ssh_row(10.0, 15.0, dict.fromkeys(HOSTS, 1)),
        _ssh_row(20.0, 22.0, {**dict.fromkeys(HOSTS, 1), "198.18.7.21": 3}),
    ]
    out = fig_ssh.summarize(rows)
    # Paired run by run (1.5 and 1.1), not the ratio of the medians (18.5 / 15).
    assert out["ratio_preview"].median == pytest.approx(1.3)
    assert (out["ratio_preview"].lo, out["ratio_preview"].hi) == pytest.approx((1.1, 1.5))
    assert out["connections"].lo == 3 and out["connections"].hi == 5
    assert out["per_host"]["198.18.7.21"].hi == 3 and out["per_host"]["198.18.7.11"].hi == 1
    assert out["per_stack"]["replicas-us"]["ssh"].median == pytest.approx(18.5 / 4)
    assert out["changed"] == []


def test_ssh_verdicts_hold_the_ratio_to_its_goal_and_each_host_to_one_connection_per_stack():
    good = _ssh_results([_ssh_row(10.0, 12.0, dict.fromkeys(HOSTS, 1))] * 3)
    assert fig_ssh.ok(good) == (True, True)
    slow = _ssh_results([_ssh_row(10.0, 14.0, dict.fromkeys(HOSTS, 1))] * 3)
    assert fig_ssh.ok(slow) == (False, True)
    # One host opened a connection per resource in one run: more than its 4 stack runs.
    chatty = _ssh_results(
        [
            _ssh_row(10.0, 12.0, dict.fromkeys(HOSTS, 1)),
            _ssh_row(10.0, 12.0, {**dict.fromkeys(HOSTS, 1), "198.18.7.12": 9}),
        ]
    )
    assert fig_ssh.ok(chatty) == (True, False)
    # A preview that planned a change is no no-change preview: neither goal counts as met.
    changed = _ssh_results([_ssh_row(10.0, 12.0, dict.fromkeys(HOSTS, 1), ["proxies-eu"])])
    assert fig_ssh.ok(changed) == (False, False)
    assert fig_ssh.ok({}) == (None, None)


def test_ssh_section_shows_both_targets_the_connections_per_host_and_the_verdicts():
    res = _ssh_results(
        [
            _ssh_row(10.0, 15.0, dict.fromkeys(HOSTS, 1)),
            _ssh_row(10.0, 16.0, dict.fromkeys(HOSTS, 2)),
        ]
    )
    text = fig_ssh.section(res)
    assert text.startswith("## 7. The ssh target")
    assert "198.18.7.0/24" in text and "2 no-change previews" in text
    assert (
        "| **`dbfleet up`** (8 stacks, from nothing) | 14.0 s (1 run) | 21.0 s (1 run) | 1.50×"
        in text
    )
    assert "1.55× (1.50–1.60)" in text and "**missed**" in text
    assert "| 198.18.7.12 (us/ord) | 4 | 1.5 (1–2) | 0 |" in text
    assert "**4.5 (3–6)** (met)" in text
    assert "18 host scripts" in text
    rows = fig_ssh.summary_rows(res)
    assert [r[0][:3] for r in rows] == ["7a.", "7b.", "7c."]
    assert rows[1][-1] == "**missed**" and rows[2][-1] == "met"
    assert "≤ 12 in all" in rows[2][1] and "still up: 0" in rows[2][3]
    changed = fig_ssh.section(
        _ssh_results([_ssh_row(10.0, 12.0, dict.fromkeys(HOSTS, 1), ["proxies-eu"])])
    )
    assert "**Not no-change previews:**" in changed and "`proxies-eu`" in changed
    assert fig_ssh.section({"error": "RuntimeError: the lab needs root"}).endswith(
        "Failed: RuntimeError: the lab needs root"
    )
    assert fig_ssh.section({}) == "" and fig_ssh.summary_rows({}) == []
    # What a second try fixed is said in one line; what is left behind stands out.
    retried = fig_ssh.section({**res, "cleanup_retried": ["destroy exited 1:\n  userdel x"]})
    assert "second try: destroy exited 1: userdel x." in retried and "Left behind" not in retried
    assert "**Left behind**" in fig_ssh.section({**res, "cleanup_problems": ["lab down: boom"]})


def test_the_ssh_figure_comes_last_with_its_own_analysis_block():
    res = _ssh_results([_ssh_row(10.0, 12.0, dict.fromkeys(HOSTS, 1))])
    text = report.render({**RESULTS, "ssh": res})
    assert text.index("## 6. Unit suite") < text.index("## 7. The ssh target")
    assert "7b. no-change `dbfleet preview`" in text.split("## 1. Engine floor")[0]
    assert list(report.analysis_blocks(text))[-1] == "ssh"


def test_sshd_logins_are_counted_from_its_log():
    log = (
        "Server listening on 198.18.7.11 port 22.\n"
        "Accepted publickey for root from 198.18.7.1 port 40112 ssh2: ED25519 SHA256:abc\n"
        "Connection closed by authenticating user root 198.18.7.1 port 40114 [preauth]\n"
        "Accepted publickey for root from 198.18.7.1 port 40116 ssh2: ED25519 SHA256:abc\n"
        "Received disconnect from 198.18.7.1 port 40112:11: disconnected by user\n"
    )
    assert fig_ssh.accepted(log) == 2
    assert fig_ssh.accepted("") == 0


# --------------------------------------------------------------------------- applications


def _ryw_row(kind: str, wait: float, read: float, stale=False, fallback=False) -> dict:
    return {
        "write_ms": 1.0 if kind == "plain" else 1.5,
        "wait_ms": wait,
        "read_ms": read,
        "stale": stale,
        "fallback": fallback,
    }


def _round(path: str, qps: float, connected: int, refused: int = 0) -> dict:
    return {
        "path": path,
        "qps": qps,
        "connected": connected,
        "refused": refused,
        "refusals": {"FATAL: sorry, too many clients already": refused} if refused else {},
        "errors": {},
        "unfinished": 0,
        "connect_all_s": 0.5,
        "connect_ms": fig_apps.dist([2.0, 4.0]),
        "query_ms": fig_apps.dist([0.2, 0.4]),
    }


def _apps_results(token_stale: int = 0, pooled_refused: int = 0) -> dict:
    """Results as the report reads them: JSON, as bench/out/results.json holds them."""
    plain = [_ryw_row("plain", 0.0, 0.2, stale=i < 3) for i in range(10)]
    token = [_ryw_row("token", 0.5, 0.2, stale=i < token_stale) for i in range(10)]
    rounds = [
        _round("direct", 1000.0, 97, 103),
        _round("pooled", 3000.0, 200 - pooled_refused, pooled_refused),
        _round("pooled", 2400.0, 200),
        _round("direct", 1200.0, 97, 103),
    ]
    setup = {
        "direct": {"connect_ms": fig_apps.dist([4.0, 6.0]), "first_ms": fig_apps.dist([5.0])},
        "pooled": {"connect_ms": fig_apps.dist([2.0, 3.0]), "first_ms": fig_apps.dist([2.5])},
    }
    for s in setup.values():
        s.update(failed=0, errors={})
    res = {
        "group": "eu",
        "region": "lhr",
        "primary": "fra",
        "goal_stale": 0,
        "clients": 200,
        "throughput_s": 4.0,
        "max_wait_s": 0.5,
        "up_s": 30.0,
        "ryw": fig_apps.summarize_ryw({"plain": plain, "token": token}),
        "setup": setup,
        "rounds": rounds,
        "throughput": fig_apps.summarize_throughput(rounds),
    }
    return json.loads(json.dumps(res, default=_json_default))


def test_apps_summaries_count_stale_reads_and_pair_the_rounds_in_abba_order():
    res = _apps_results(token_stale=1)
    plain, token = res["ryw"]["plain"], res["ryw"]["token"]
    assert (plain["n"], plain["stale"], token["stale"], token["fallbacks"]) == (10, 3, 1, 0)
    # A read with a token is timed with its wait; the wait is also shown alone.
    assert token["read_ms"]["p50"] == pytest.approx(0.7)
    assert token["wait_ms"]["p95"] == pytest.approx(0.5)
    tp = res["throughput"]
    assert tp["direct"]["qps"]["median"] == pytest.approx(1100.0)
    assert tp["direct"]["refused"] == 103 and tp["pooled"]["connected"] == 200
    # Round 1 (pooled) pairs with round 0 (direct), round 2 with round 3: 3.0 and 2.0.
    assert tp["ratio_qps"]["median"] == pytest.approx(2.5)
    assert math.isnan(fig_apps.dist([])["p50"]) and fig_apps.dist([])["n"] == 0


def test_apps_verdicts_hold_stale_reads_to_zero_and_every_pooled_client_to_being_served():
    assert fig_apps.ok(_apps_results()) == (True, True)
    assert fig_apps.ok(_apps_results(token_stale=1)) == (False, True)
    assert fig_apps.ok(_apps_results(pooled_refused=1)) == (True, False)
    assert fig_apps.ok({}) == (None, None)


def test_apps_section_shows_both_reads_both_paths_and_the_verdicts():
    res = _apps_results(token_stale=1)
    text = fig_apps.section(res)
    assert text.startswith("## 8. Applications: read-your-writes and the pooler")
    assert "| plain (no token) | 3 of 10 (30.0 %) |" in text
    assert "| **with a token** | 1 of 10 (10.0 %) | p50 0.50 ms, p95 0.50 ms |" in text
    assert "**missed**" in text and "in 30.0 s" in text
    assert "| pooled ÷ direct (p50) | 0.50× | 0.50× |" in text
    assert "| direct | 97 / 103 |" in text and "| pooled | 200 / 0 |" in text
    assert "2.50× (2.00–3.00)" in text
    assert "206 × `FATAL: sorry, too many clients already`" in text
    rows = fig_apps.summary_rows(res)
    assert [r[0][:3] for r in rows] == ["8a.", "8b.", "8c."]
    assert [r[-1] for r in rows] == ["**missed**", "–", "met"]
    assert "plain read: 3 of 10 (30.0 %) stale" in rows[0][3]
    assert "103 of 200 refused" in rows[2][3]
    assert fig_apps.section({"error": "RuntimeError: boom"}).endswith("Failed: RuntimeError: boom")
    assert fig_apps.section({}) == "" and fig_apps.summary_rows({}) == []
    assert "**Left behind**" in fig_apps.section({**res, "cleanup_problems": ["destroy exited 1"]})


def test_the_apps_figure_comes_after_the_ssh_figure_with_its_own_analysis_block():
    text = report.render({**RESULTS, "apps": _apps_results()})
    assert text.index("## 6. Unit suite") < text.index("## 8. Applications")
    assert "8c. `SELECT 1` throughput" in text.split("## 1. Engine floor")[0]
    assert list(report.analysis_blocks(text))[-1] == "apps"


def _ha_kill(new: str, lost: int, recovery: tuple[float, float, float], p50: float) -> dict:
    return {
        "old": "fra-0",
        "new": new,
        "leader_s": min(recovery) - 1.0,
        "recovery_s": dict(zip(("fra", "lhr", "arn"), recovery, strict=True)),
        "acked": 3000,
        "lost": lost,
        "read_only_errors": 0,
        "errors": 40,
        "latency_p50_ms": p50,
        "latency_p99_ms": 4 * p50,
        "latency_n": 1500,
        "restore_s": 20.0,
    }


def _ha_results(
    sync_lost: int = 0, slowest: float = 13.0, up_s: float = 16.0, preview_exit: int = 0
) -> dict:
    """Figure 9's results as results.json holds them."""
    modes = {
        "async": fig_ha.summarize_mode(
            [
                _ha_kill("lhr-0", 2, (11.0, 12.0, 12.5), 1.0),
                _ha_kill("arn-0", 0, (11.5, 12.0, 12.0), 1.2),
            ]
        ),
        "sync": fig_ha.summarize_mode(
            [
                _ha_kill("lhr-0", sync_lost, (12.0, 12.5, slowest), 2.0),
                _ha_kill("lhr-0", 0, (11.0, 11.0, 11.0), 2.4),
            ]
        ),
    }
    runs = [
        {
            "up_s": up_s,
            "preview_s": 12.0,
            "preview_exit": preview_exit,
            "floor_up_s": 8.0,
            "floor_preview_s": 5.0,
        },
        {
            "up_s": up_s,
            "preview_s": 13.0,
            "preview_exit": preview_exit,
            "floor_up_s": 8.0,
            "floor_preview_s": 5.0,
        },
    ]
    res = {
        "group": "eu",
        "rate": 200,
        "warm_s": 8.0,
        "kills_per_mode": 2,
        "timings": fig_ha.TIMINGS,
        "goal_recovery_s": 15.0,
        "goal_up_ratio": 1.25,
        "before": fig_ha.BEFORE,
        "members": ["arn-0", "fra-0", "lhr-0"],
        "modes": modes,
        "latency_ratio": {"p50": 2.0, "p99": 2.0},
        "converge": fig_ha.summarize_converge(runs),
    }
    return json.loads(json.dumps(res, default=_json_default))


def test_ha_summaries_take_every_endpoint_of_every_kill_and_compare_with_before():
    res = _ha_results()
    a = res["modes"]["async"]
    assert a["recovery_s"]["n"] == 6 and a["recovery_s"]["max"] == 12.5
    # every endpoint back: the slowest endpoint of each kill
    assert (a["all_endpoints_s"]["min"], a["all_endpoints_s"]["max"]) == (12.0, 12.5)
    assert a["per_region_s"]["fra"]["median"] == pytest.approx(11.25)
    assert (a["lost_total"], a["acked_total"]) == (2, 6000)
    assert a["latency_p50_ms"]["median"] == pytest.approx(1.1)
    conv = res["converge"]
    assert conv["up_ratio_before"] == pytest.approx(16.0 / 14.1)
    assert conv["preview_ratio_before"] == pytest.approx(12.5 / 11.0)
    assert conv["up_floor_ratio"]["median"] == pytest.approx(2.0)
    assert conv["up_normalised_before"] == pytest.approx(2.0 / 1.88)
    assert conv["preview_exits"] == [0]


def test_ha_verdicts_hold_recovery_under_15_s_sync_losses_to_zero_and_up_to_125_percent():
    assert fig_ha.ok(_ha_results()) == (True, True, True)
    assert fig_ha.ok(_ha_results(slowest=15.0)) == (False, True, True)
    assert fig_ha.ok(_ha_results(sync_lost=1)) == (True, False, True)
    # the goal compares ratios to the same-run empty program (here 8.0 s): 19/8 ÷ 1.88 > 1.25
    assert fig_ha.ok(_ha_results(up_s=19.0)) == (True, True, False)
    assert fig_ha.ok(_ha_results(up_s=18.0)) == (True, True, True)
    # a no-change preview that failed is no measure of one: the cost goal is missed
    assert fig_ha.ok(_ha_results(preview_exit=1)) == (True, True, False)
    text = fig_ha.section(_ha_results(preview_exit=1))
    assert "**The no-change `dbfleet preview` exited [1]**" in text
    assert "(exited [1])" in fig_ha.summary_rows(_ha_results(preview_exit=1))[3][2]
    assert fig_ha.ok({}) == (None, None, None)


def test_ha_section_shows_both_modes_each_kill_the_latency_cost_and_the_before_numbers():
    res = _ha_results(sync_lost=1)
    text = fig_ha.section(res)
    assert text.startswith("## 9. High availability (Patroni + etcd)")
    assert "ttl 10 s, loop_wait 2 s, retry_timeout 4 s" in text
    assert "| `async` | 10.2 s (10.0–10.5) | 12.2 s (12.0–12.5) | 11.2 s (11.0–11.5) |" in text
    assert "| 2 of 6000 (1 (0–2) per kill) | 0 |" in text
    assert (
        "| `sync` 1 | fra-0 → lhr-0 | 11.0 s | arn 13.0 s, fra 12.0 s, lhr 12.5 s | 1 of 3000 | 2.00 / 8.00 ms | 20.0 s |"
        in text
    )
    assert "| sync ÷ async | 2.00× | 2.00× |  |" in text
    assert "before** Patroni (commit `cb84ddf142cf`" in text
    assert (
        "| `dbfleet up` from nothing | 14.1 s (13.4–18.3) | 16.0 s (16.0–16.0) | 1.13× | 1.88× (1.77–2.53) | 2.00× (2.00–2.00) | 1.06× | met |"
        in text
    )
    assert "indicative" in text
    rows = fig_ha.summary_rows(res)
    assert [r[0][:3] for r in rows] == ["9a.", "9b.", "9c.", "9d."]
    assert [r[-1] for r in rows] == ["met", "**missed**", "–", "met"]
    assert rows[1][2] == "sync 1 of 6000" and rows[1][3] == "async: 2 of 6000"
    assert fig_ha.section({"error": "RuntimeError: boom"}).endswith("Failed: RuntimeError: boom")
    assert fig_ha.section({}) == "" and fig_ha.summary_rows({}) == []


def test_the_ha_figure_comes_last_with_its_own_analysis_block():
    text = report.render({**RESULTS, "apps": _apps_results(), "ha": _ha_results()})
    assert text.index("## 8. Applications") < text.index("## 9. High availability")
    assert "9d. `dbfleet up` from nothing" in text.split("## 1. Engine floor")[0]
    assert list(report.analysis_blocks(text))[-1] == "ha"


class _FakeConn:
    def __init__(self) -> None:
        self.closed = False

    def execute(self, _sql: str, *_args):
        return self

    def fetchone(self) -> tuple[int]:
        return (1,)

    def close(self) -> None:
        self.closed = True


def test_throughput_counts_refused_clients_and_bounds_each_loop_by_its_query_count(monkeypatch):
    import psycopg

    monkeypatch.setattr(fig_apps, "MAX_QUERIES_PER_CLIENT", 7)
    made: list[_FakeConn] = []
    calls = iter(range(10))

    def connect(uri: str, **kw) -> _FakeConn:
        assert kw["prepare_threshold"] is None and kw["autocommit"] is True
        if next(calls) % 2:
            raise psycopg.OperationalError(
                'connection failed: connection to server at "127.0.0.1", port 6432 failed: '
                "FATAL:  sorry, too many clients already"
            )
        made.append(_FakeConn())
        return made[-1]

    # A window far longer than the test: only the query bound can end the loops.
    out = fig_apps.throughput("postgresql://app:pw@h/app", 10, 600.0, connect=connect)
    assert (out["connected"], out["refused"], out["unfinished"]) == (5, 5, 0)
    assert out["queries"] == 35 and out["query_ms"]["n"] == 35
    assert out["refusals"] == {"connection failed: FATAL: sorry, too many clients already": 5}
    assert all(c.closed for c in made) and out["all_tried"] is True


def test_setup_times_alternate_the_paths_and_count_failures_per_path(monkeypatch):
    import psycopg

    order: list[str] = []

    def connect(uri: str, **kw) -> _FakeConn:
        order.append(uri)
        if uri == "pooled" and len(order) == 2:
            raise psycopg.OperationalError("password=secret rejected")
        return _FakeConn()

    monkeypatch.setattr(fig_apps.psycopg, "connect", connect)
    out = fig_apps.setup_times({"direct": "direct", "pooled": "pooled"}, 3, 60.0)
    assert order == ["direct", "pooled", "pooled", "direct", "direct", "pooled"]
    assert out["direct"]["connect_ms"]["n"] == 3 and out["pooled"]["connect_ms"]["n"] == 2
    assert out["pooled"]["failed"] == 1
    assert out["pooled"]["errors"] == {"password=**** rejected": 1}


# --------------------------------------------------------------------------- figure 10: TLS cost


def _tls_results(read_ratio: float = 1.05) -> dict:
    def d(p50: float, p99: float, n: int = 500) -> dict:
        return {"p50": p50, "p95": p99 * 0.8, "p99": p99, "max": p99 * 2, "n": n}

    return {
        "goal_read_p50_ratio": 1.3,
        "runs": 5,
        "queries_per_run": 2000,
        "setup_connections": 500,
        "session": {"ssl": True, "version": "TLSv1.3", "cipher": "TLS_AES_256_GCM_SHA384"},
        "setup": {
            "plain": {"connect_ms": d(9.0, 15.0), "first_ms": d(10.0, 16.0), "failed": 0},
            "tls": {"connect_ms": d(12.5, 20.0), "first_ms": d(13.5, 22.0), "failed": 1},
        },
        "read": {
            "tls_p50_ms": S(0.21),
            "tls_p99_ms": S(0.9),
            "plain_p50_ms": S(0.20),
            "plain_p99_ms": S(0.8),
            "ratio_p50": S(read_ratio, read_ratio - 0.05, read_ratio + 0.05),
            "ratio_p99": S(1.12),
        },
    }


def test_tls_setup_cost_compares_the_tls_path_with_the_plain_one_at_p50_and_p99():
    s = fig_tls.setup_cost(_tls_results())
    assert (s["tls_p50"], s["plain_p50"], s["tls_p99"], s["plain_p99"]) == (13.5, 10.0, 22.0, 16.0)
    assert s["ratio_p50"] == pytest.approx(1.35) and s["extra_p50"] == pytest.approx(3.5)
    assert fig_tls.setup_cost(_tls_results(), "connect_ms")["extra_p50"] == pytest.approx(3.5)
    # A path without samples gives no ratio rather than a made-up one.
    assert math.isnan(fig_tls.setup_cost({"setup": {"tls": {}}})["ratio_p50"])


def test_tls_verdict_holds_the_read_p50_ratio_to_its_goal_and_setup_has_none():
    assert fig_tls.ok(_tls_results(1.05)) is True
    assert fig_tls.ok(_tls_results(1.4)) is False
    assert fig_tls.ok({}) is None
    rows = fig_tls.summary_rows(_tls_results(1.4))
    assert [r[0][:4] for r in rows] == ["10a.", "10b."]
    assert [r[-1] for r in rows] == ["–", "**missed**"]
    assert rows[0][2] == "p50 13.50 ms, p99 22.00 ms"
    assert "p50 ratio 1.35× (+3.50 ms)" in rows[0][3]
    assert rows[1][2] == "1.40× (1.35–1.45)"
    assert fig_tls.summary_rows({}) == []


def test_tls_section_shows_setup_and_read_of_both_paths_the_session_and_failures():
    text = fig_tls.section(_tls_results())
    assert text.startswith("## 10. TLS cost")
    assert "TLSv1.3, TLS_AES_256_GCM_SHA384" in text
    assert "500 connections of each path" in text and "Failed: plain 0, tls 1." in text
    assert (
        "| connect + first `SELECT 1` | 10.00 ms | 13.50 ms | 1.35× | 3.50 ms | 16.00 ms | 22.00 ms |"
        in text
    )
    assert "0.210 ms (0.210–0.210) | 1.05× (1.00–1.10)" in text and text.rstrip().endswith("met |")
    assert fig_tls.section({"error": "RuntimeError: boom"}).endswith("Failed: RuntimeError: boom")
    assert fig_tls.section({}) == ""


def test_the_tls_figure_comes_last_with_its_own_analysis_block():
    text = report.render({**RESULTS, "ha": _ha_results(), "tls": _tls_results()})
    assert text.index("## 9. High availability") < text.index("## 10. TLS cost")
    assert "10b. point read p50" in text.split("## 1. Engine floor")[0]
    assert list(report.analysis_blocks(text))[-1] == "tls"


def test_the_tls_server_accepts_the_bench_user_with_and_without_tls_and_is_set_up_as_a_node():
    hba = fig_tls.pg_hba("bench").splitlines()
    assert "hostssl all bench 127.0.0.1/32 scram-sha-256" in hba
    assert "hostnossl all bench 127.0.0.1/32 scram-sha-256" in hba
    # No `host` line (either kind) and no TCP trust: only the private socket is trusted.
    assert not [
        line for line in hba if line.startswith("host ") or "trust" in line and "local" not in line
    ]
    conf = fig_tls.server_conf(5999, Path("/tmp/x/run"))
    for setting in (
        "ssl = on",
        "ssl_min_protocol_version = 'TLSv1.2'",
        "password_encryption = scram-sha-256",
        "listen_addresses = '127.0.0.1'",
        "port = 5999",
    ):
        assert setting in conf
    assert "IP:127.0.0.1" in fig_tls.SERVER_EXT and "CA:FALSE" in fig_tls.SERVER_EXT


def test_the_tls_paths_differ_only_in_sslmode_and_the_password_stays_out_of_repr(tmp_path):
    from psycopg.conninfo import conninfo_to_dict

    server = fig_tls.TlsServer(root=tmp_path, password="s3cret-pw", proxy_port=6001)
    plain, tls = (conninfo_to_dict(server.conninfo(p)) for p in ("plain", "tls"))
    assert plain["sslmode"] == "disable" and "sslrootcert" not in plain
    assert tls["sslmode"] == "verify-full" and tls["sslrootcert"] == str(tmp_path / "ca.crt")
    # The client verifies the address it dials: the proxy's, on 127.0.0.1 like the SAN.
    assert plain["host"] == tls["host"] == "127.0.0.1" and plain["port"] == tls["port"] == "6001"
    assert {k: v for k, v in plain.items() if k != "sslmode"} == {
        k: v for k, v in tls.items() if k not in ("sslmode", "sslrootcert")
    }
    assert "s3cret-pw" not in repr(server)


def test_tls_paths_must_be_what_they_claim():
    fig_tls.check_paths({"plain": {"ssl": False}, "tls": {"ssl": True}})
    for seen in (
        {"plain": {"ssl": True}, "tls": {"ssl": True}},
        {"plain": {"ssl": False}, "tls": {"ssl": False}},
    ):
        with pytest.raises(RuntimeError, match="not what they claim"):
            fig_tls.check_paths(seen)


class _TimedConn:
    """A connection whose every query takes `ms` (on a fake clock) and records its name."""

    def __init__(self, name: str, ms: float, log: list[str], clock: list[int]) -> None:
        self.name, self.ms, self.log, self.clock = name, ms, log, clock
        self.description = None

    def cursor(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def execute(self, _sql, _args) -> None:
        self.log.append(self.name)
        self.clock[0] += int(self.ms * 1e6)


def test_compare_names_its_paths_alternates_them_and_divides_the_first_by_the_second(monkeypatch):
    from bench.context import QUICK

    clock = [0]
    monkeypatch.setattr(fig_proxy.time, "perf_counter_ns", lambda: clock[0])
    monkeypatch.setattr(fig_proxy, "WARMUP", 1)
    log: list[str] = []
    ctx = type("C", (), {"plan": dataclasses.replace(QUICK, runs=3, proxy_queries=2)})()
    out = fig_proxy._compare(
        ctx,
        _TimedConn("tls", 0.3, log, clock),
        _TimedConn("plain", 0.2, log, clock),
        "SELECT 1",
        lambda: (),
        names=("tls", "plain"),
    )
    # Warm-up, then blocks of two queries: tls first, plain first, tls first.
    assert log == ["tls", "plain"] + ["tls"] * 2 + ["plain"] * 4 + ["tls"] * 4 + ["plain"] * 2
    assert out["tls_p50_ms"].median == pytest.approx(0.3)
    assert out["plain_p99_ms"].median == pytest.approx(0.2)
    assert out["ratio_p50"].median == pytest.approx(1.5) and out["ratio_p50"].n == 3


# --------------------------------------------------------------------------- figure 11: backups


def test_a_wal_file_name_is_its_segment_number_whatever_the_timeline():
    assert fig_backup.segno("000000010000000000000003") == 3
    assert fig_backup.segno("000000020000000100000002") == 0x102
    assert fig_backup.segno(None) is None and fig_backup.segno("") is None


def test_archive_lag_is_the_wait_of_the_oldest_finished_segment_and_zero_when_none_waits():
    samples = [
        {"t": 0.0, "current": 5, "archived": 4},  # only the current segment unarchived
        {"t": 0.5, "current": 6, "archived": 4},  # 5 finished after 0.0
        {"t": 1.0, "current": 6, "archived": 4},
        {"t": 1.5, "current": 7, "archived": 4},  # 6 finished after 1.0; 5 waits ≤ 1.5 s
        {"t": 2.0, "current": 7, "archived": 6},  # both archived by 2.0
        {"t": 2.5, "current": 7, "archived": 6},
    ]
    out = fig_backup.archive_lag(samples)
    assert out["samples"] == 6
    assert out["lag_s_max"] == 1.5 and out["segments_behind_max"] == 2
    assert out["lag_s_p50"] == 0.25  # of 0, 0.5, 1.0, 1.5, 0, 0
    # upper bounds: segment 5 waited at most 2.0 s, segment 6 at most 1.0 s
    assert out["segments_archived"] == 2
    assert out["segment_delay_s"]["min"] == 1.0 and out["segment_delay_s"]["max"] == 2.0
    assert fig_backup.archive_lag([])["samples"] == 0


def test_a_backlog_at_the_first_sample_counts_from_it_and_its_segments_have_no_delay():
    out = fig_backup.archive_lag(
        [{"t": 10.0, "current": 9, "archived": 6}, {"t": 11.0, "current": 9, "archived": 6}]
    )
    assert out["segments_behind_max"] == 2 and out["lag_s_max"] == 1.0
    assert out["segments_archived"] == 0


def test_the_outage_runs_from_the_first_failed_write_to_the_next_acknowledged_one():
    attempts = [(0.0, True), (1.0, True), (2.0, False), (3.0, False), (4.0, True), (5.0, False)]
    assert fig_backup.outage(attempts, 0.5) == {
        "writes_stop_s": 1.5,
        "writes_back_s": 3.5,
        "outage_s": 2.0,
        "failed_attempts": 3,
    }
    never = fig_backup.outage([(1.0, True)], 0.0)
    assert never["writes_stop_s"] is None and never["outage_s"] is None
    gone = fig_backup.outage([(1.0, False)], 0.0)
    assert gone["writes_stop_s"] == 1.0 and gone["writes_back_s"] is None
    w = fig_ha.Writer("postgresql://unused", "probe", 0.2)  # never started
    w.acked = [("probe-1", 0.0, 0.01, "h"), ("probe-4", 4.0, 4.01, "h")]
    w.errors = [(2.0, "25006"), (3.0, None)]
    assert fig_backup.attempts(w) == [(0.0, True), (2.0, False), (3.0, False), (4.0, True)]
    assert fig_backup.outage(fig_backup.attempts(w), 0.5)["outage_s"] == 2.0


def test_the_password_leaves_the_uri_for_the_environment():
    conninfo, password = fig_backup.without_password(
        "postgresql://app:s3cret@127.1.0.1:6432/app?sslmode=verify-full&sslrootcert=/x/ca.crt"
    )
    assert password == "s3cret" and "s3cret" not in conninfo
    assert "sslmode=verify-full" in conninfo and "sslrootcert=/x/ca.crt" in conninfo


def test_the_backup_fleet_is_one_group_of_three_regions_with_backups():
    fleet = parse_fleet(fig_backup.fleet_text("b000001", 42))
    assert list(fleet.groups) == ["eu"]
    group = fleet.groups["eu"]
    assert len(group.regions) == 3 and group.backup is not None


def _backup_results(backup_s=(30.0, 34.0), lag_p99: float = 1.5, exact: bool = True) -> dict:
    MiB = 2**20
    pairs = [
        {
            "backup": {
                "seconds": s,
                "label": f"2026-F{i}",
                "type": "full",
                "db_bytes": 180 * MiB,
                "repo_bytes": 12 * MiB,
                "pgbackrest_s": s - 3,
                "repository_total_bytes": 40 * MiB,
            },
            "basebackup": {"seconds": 10.0, "bytes": 200 * MiB},
        }
        for i, s in enumerate(backup_s)
    ]
    res = {
        "group": "eu",
        "scale": 10,
        "rate": 200,
        "load_s": 60,
        "sample_s": 0.5,
        "goal_archive_p99_s": 60.0,
        "goal_backup_ratio": 3.0,
        "up_s": 40.0,
        "leader": "fra-0",
        "first_backup_s": 20.0,
        "init_s": 25.0,
        "db_bytes": 190 * MiB,
        "pairs": pairs,
        "archive": {
            "rate": 200,
            "seconds": 60,
            "wall_s": 60.2,
            "pgbench": {"tps": 199.8, "latency_ms": 3.1, "transactions": 11990, "failed": 0},
            "writes_per_s": 199.8,
            "wal_mib_per_s": 1.2,
            "archiver_failures": 0,
            "sampler_error": "",
            "samples": 120,
            "segments_behind_p50": 0,
            "segments_behind_p99": 1,
            "segments_behind_max": 1,
            "lag_s_p50": 0.0,
            "lag_s_p99": lag_p99,
            "lag_s_max": lag_p99,
            "segments_archived": 4,
            "segment_delay_s": {"median": 0.5, "min": 0.5, "max": 1.0, "n": 4},
        },
        "restore": {
            "target": "2026-12-02 08:00:00+00:00",
            "seconds": 50.0,
            "reported": "",
            "writes_stop_s": 1.0,
            "writes_back_s": 48.0,
            "outage_s": 47.0,
            "failed_attempts": 200,
            "rows_at_t": 1000000,
            "sum_at_t": 11990,
            "rows_after": 1000000,
            "sum_after": 11990 if exact else 12990,
            "exact": exact,
        },
    }
    res.update(fig_backup.summarize(pairs))
    return json.loads(json.dumps(res, default=_json_default))


def test_backup_summaries_pair_each_backup_with_its_basebackup():
    res = _backup_results()
    assert res["backup_s"]["median"] == 32.0 and res["basebackup_s"]["median"] == 10.0
    assert res["time_ratio"]["median"] == pytest.approx(3.2)
    assert res["size_ratio"]["median"] == pytest.approx(12 / 200)
    assert res["backup_mib"]["median"] == 12.0


def test_backup_verdicts_hold_the_backup_to_3x_the_floor_the_lag_under_60_s_and_the_data_at_t():
    assert fig_backup.ok(_backup_results(backup_s=(28.0, 30.0))) == (True, True, True)
    assert fig_backup.ok(_backup_results()) == (False, True, True)
    assert fig_backup.ok(_backup_results(backup_s=(28.0, 30.0), lag_p99=60.0)) == (
        True,
        False,
        True,
    )
    assert fig_backup.ok(_backup_results(backup_s=(28.0, 30.0), exact=False)) == (
        True,
        True,
        False,
    )
    res = _backup_results(backup_s=(28.0, 30.0))
    res["archive"]["sampler_error"] = "OperationalError: gone"
    assert fig_backup.ok(res)[1] is False
    assert fig_backup.ok({}) == (None, None, None)


def test_backup_section_shows_each_pair_the_lag_and_the_restore():
    res = _backup_results(exact=False)
    text = fig_backup.section(res)
    assert text.startswith("## 11. Backups and point-in-time recovery (pgBackRest)")
    assert "| 1 | 30.0 s | 27 s | 12.0 MiB of 180.0 MiB | 10.0 s | 200.0 MiB | 3.00× |" in text
    assert "| archive lag | 0.0 s | 1.5 s | 1.5 s |" in text
    assert "4 segment(s) finished and archived in the window, each at most 0.5 s (0.5–1.0)" in text
    assert "writes stopped 1.0 s after the command started and worked again after 48.0 s" in text
    assert "**not the data at T**" in text and "indicative" in text
    rows = fig_backup.summary_rows(res)
    assert [r[0][:4] for r in rows] == ["11a.", "11b.", "11c."]
    assert [r[-1] for r in rows] == ["**missed**", "met", "**missed**"]
    assert "12 MiB (12–12) in the repository; 3.20× (3.00–3.40)" in rows[0][2]
    assert fig_backup.section({"error": "RuntimeError: boom"}).endswith(
        "Failed: RuntimeError: boom"
    )
    assert fig_backup.section({}) == "" and fig_backup.summary_rows({}) == []


def test_the_backup_figure_follows_ha_with_its_own_analysis_block():
    text = report.render({**RESULTS, "ha": _ha_results(), "backup": _backup_results()})
    assert text.index("## 9. High availability") < text.index("## 11. Backups")
    assert "11c. point-in-time restore" in text.split("## 1. Engine floor")[0]
    assert list(report.analysis_blocks(text))[-1] == "backup"


def test_a_failed_destroy_after_the_backup_figure_is_named_with_what_lingered():
    res = _backup_results()
    assert "dbfleet destroy` of the fleet afterwards" not in fig_backup.section(res)
    res["destroy"] = {
        "seconds": 50.0,
        "exit": 1,
        "last_processes": ["12 pgbackrest archive-get:async"],
        "lingering": [],
        "lingered_s": 3.0,
    }
    text = fig_backup.section(res)
    assert "**`dbfleet destroy` of the fleet afterwards exited 1**" in text
    assert "(12 pgbackrest archive-get:async); they ended 3.0 s later" in text
