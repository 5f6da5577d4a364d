"""BENCHMARKS.md from the results of a run (plain JSON in, Markdown out; no I/O).

Every figure is shown as median (min–max) over its runs, with its goal, the baseline
measured in the same run and the ratio to it. Where a figure misses its goal, the
text says why, from what the profile pass measured, and what would fix it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

LAYERS = ("accounts", "networks", "replicas", "proxies")


# --------------------------------------------------------------------------- formatting


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _ok(v: Any) -> bool:
    return not math.isnan(_num(v))


def fmt(summary: Mapping | None, unit: str = "s", digits: int = 1) -> str:
    """`12.3 s (11.9–13.0)`; one run: `12.3 s (1 run)`; nothing: `–`."""
    if not summary or not summary.get("n") or not _ok(summary.get("median")):
        return "–"
    sp = " " if unit and unit not in ("×", "%") else ""
    med = f"{summary['median']:.{digits}f}{sp}{unit}"
    if summary["n"] == 1:
        return f"{med} (1 run)"
    return f"{med} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f})"


def fmt_ratio(summary: Mapping | None, digits: int = 2) -> str:
    return fmt(summary, "×", digits)


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "–"
    return "met" if ok else "**missed**"


def _med(summary: Mapping | None) -> float:
    return _num((summary or {}).get("median"))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _when(ts: float | None) -> str:
    if not ts:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def _load(la) -> str:
    return " / ".join(f"{x:.2f}" for x in la) if la else "?"


# --------------------------------------------------------------------------- verdicts


def engine_ok(engine: Mapping) -> bool | None:
    stacks = engine.get("stacks") or {}
    if not stacks:
        return None
    return all(_med(s["ratio"]) <= engine.get("goal_ratio", 1.5) for s in stacks.values())


def converge_ok(conv: Mapping) -> tuple[bool | None, bool | None]:
    up = _med(conv.get("up"))
    pv = _med(conv.get("preview"))
    return (
        None if math.isnan(up) else up < conv.get("goal_up_s", 60),
        None if math.isnan(pv) else pv < conv.get("goal_preview_s", 20),
    )


def linear(scale: Mapping, key: str) -> bool:
    """Linear enough: the line explains ≥ 90 % of the variance, or the points deviate
    from it by under 10 %, and the last step costs < 2× the first (not quadratic)."""
    fit = scale.get(f"fit_{key}") or {}
    steps = [s for s in scale.get(f"steps_{key}") or [] if _ok(s)]
    close = fit.get("r2", 0) >= 0.9 or fit.get("max_rel_residual", 1) < 0.10
    accelerating = len(steps) >= 2 and steps[0] > 0 and steps[-1] > 2 * steps[0] and steps[-1] > 0.5
    return bool(close and not accelerating)


def proxy_ok(proxy: Mapping) -> bool | None:
    reads = proxy.get("reads") or {}
    if not reads:
        return None
    return all(_med(r["ratio_p50"]) < proxy.get("goal_read_p50_ratio", 1.3) for r in reads.values())


def lag_ok(lag: Mapping) -> bool | None:
    slots = lag.get("slots") or {}
    if not slots:
        return None
    return all(_med(s["replay_lag_p99"]) < lag.get("goal_p99_s", 1.0) for s in slots.values())


def unit_ok(unit: Mapping) -> bool | None:
    if not unit.get("summary"):
        return None
    return _med(unit["summary"]) < unit.get("goal_s", 10)


# --------------------------------------------------------------------------- sections


def _run_meta(results: Mapping) -> Mapping:
    """The run the report describes: the last full run, when `--only` runs re-measured
    some figures since (they are named in the header as re-measurements)."""
    meta = results.get("meta") or {}
    return meta.get("base") or meta


def header(results: Mapping) -> str:
    latest = results.get("meta") or {}
    meta = _run_meta(results)
    m = meta.get("machine") or {}
    snap = meta.get("snapshot") or {}
    plan = meta.get("plan") or {}
    marks = meta.get("load") or []
    loads = [mk["load"][0] for mk in marks if mk.get("load")]
    lines = [
        "# dbfleet benchmarks",
        "",
        "How fast dbfleet plans and converges, how it scales, and what its proxies cost, measured on",
        "this machine by `make bench` (`python -m bench`; "
        + (
            f"{(meta['finished'] - meta['started']) / 60:.0f} minutes this time"
            if meta.get("finished") and meta.get("started")
            else "half an hour or more"
        )
        + "; `python -m bench --quick`",
        "for a short run that never overwrites this file). Every figure is the **median of its runs",
        "with min–max**, next to a **baseline measured in the same run** and the ratio to it, because",
        "absolute times drift on a shared machine. Generated by `bench/report.py`: do not edit by hand.",
        "",
        (
            f"- **Measured:** {snap.get('source', '?')} at commit `{str(snap.get('commit', '?'))[:12]}`, "
            f"{_when(meta.get('started'))} – {_when(meta.get('finished'))}, plan `{plan.get('name', '?')}` "
            f"({plan.get('runs', '?')} runs per figure; `{meta.get('command', '')}`)."
        ),
        (
            f"- **Machine:** {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), {m.get('mem_gib', '?')} GiB RAM, "
            f"Linux {m.get('kernel', '?')}; Python {m.get('python', '?')}, Pulumi {m.get('pulumi', '?')}, "
            f"{m.get('postgres', '?')}, {m.get('haproxy', '?').split(' - ')[0]}."
        ),
    ]
    commits: dict[str, list[str]] = {}
    for name, fig in results.items():
        c = (fig.get("_meta") or {}).get("commit") if isinstance(fig, Mapping) else None
        if name != "meta" and c:
            commits.setdefault(str(c)[:12], []).append(name)
    if latest is not meta:
        lines.append(
            f"- **Re-measured since:** {', '.join(latest.get('figures') or [])} with "
            f"`{latest.get('command', '')}` at commit `{str((latest.get('snapshot') or {}).get('commit', '?'))[:12]}`, "
            f"{_when(latest.get('started'))} – {_when(latest.get('finished'))}."
        )
    if len(commits) > 1:
        lines.append(
            "- **Figures from more than one run** (`--only` re-measured some): "
            + "; ".join(f"{', '.join(names)} at `{c}`" for c, names in commits.items())
            + ". Each figure's own date is under its heading; the load marks below are the first run's."
        )
    if marks:
        lines.append(
            f"- **Load average (1/5/15 min):** {_load(marks[0]['load'])} at the start, "
            f"{_load(marks[-1]['load'])} at the end; the 1-minute load ranged "
            f"{min(loads):.1f}–{max(loads):.1f} over the run (per figure below). The load counts the benchmark's own processes "
            "(engine, Pythons, PostgreSQL, HAProxy, pgbench) as well as anything else running; "
            "absolute times move with it, so the ratios to the same-run baselines are the figures "
            "to compare."
        )
    busy = meta.get("busy_at_start") or []
    if busy:
        lines.append(f"- **Busiest processes at the start** (%CPU, name): {', '.join(busy)}.")
    lines.append(
        "- **Isolation:** each environment is a fresh temp dir under /tmp with its own state "
        "(file backend), passphrase, Vault (scripts/vault.sh on free ports), fleet name and "
        "loopback range 127.20–99.x; all of it is destroyed at the end. The code measured is a "
        "snapshot (`git archive HEAD`), so edits made in the shared checkout during the run do not leak in."
    )
    return "\n".join(lines)


def summary_table(results: Mapping) -> str:
    rows = []
    eng = results.get("engine") or {}
    if eng.get("stacks"):
        worst = max(eng["stacks"].items(), key=lambda kv: _med(kv[1]["ratio"]))
        best = min(eng["stacks"].items(), key=lambda kv: _med(kv[1]["ratio"]))
        rows.append(
            [
                "1. Engine floor: no-change `pulumi preview` per stack ÷ empty program",
                f"≤ {eng.get('goal_ratio', 1.5)}× every stack",
                f"{best[0]} {fmt_ratio(best[1]['ratio'])} … {worst[0]} {fmt_ratio(worst[1]['ratio'])}",
                f"empty program {fmt(eng.get('empty'))}",
                verdict(engine_ok(eng)),
            ]
        )
    conv = results.get("converge") or {}
    if conv.get("up"):
        up_ok, pv_ok = converge_ok(conv)
        rows.append(
            [
                "2a. `dbfleet up` of the default fleet from nothing",
                f"< {conv.get('goal_up_s', 60):.0f} s",
                fmt(conv.get("up")),
                f"empty program, 8 stacks: {fmt(conv.get('floor_up'))}; ratio {fmt_ratio(conv.get('ratio_up'))}",
                verdict(up_ok),
            ]
        )
        rows.append(
            [
                "2b. no-change `dbfleet preview` of all 8 stacks",
                f"< {conv.get('goal_preview_s', 20):.0f} s",
                fmt(conv.get("preview")),
                f"empty program, 8 stacks: {fmt(conv.get('floor_preview'))}; ratio {fmt_ratio(conv.get('ratio_preview'))}",
                verdict(pv_ok),
            ]
        )
    sc = results.get("scale") or {}
    if sc.get("fit_preview"):
        fp = sc.get("fit_preview_normalized") or sc["fit_preview"]
        fu = sc.get("fit_up_normalized") or sc.get("fit_up") or {}
        fb = sc.get("fit_floor_preview") or {}
        rows.append(
            [
                "3. Scale: one group, "
                + ", ".join(sorted(sc.get("points", {}), key=int))
                + " regions",
                f"linear; preview < {sc.get('goal_preview_slope_s', 1.0):g} s per added region",
                (
                    f"preview {fp['slope']:+.2f} s/region (r² {fp['r2']:.2f}); up {fu.get('slope', math.nan):+.2f} s/region "
                    "(at a common load)"
                ),
                f"empty program drifted {fb.get('slope', math.nan):+.2f} s/region (load)",
                verdict(scale_ok(sc)),
            ]
        )
    px = results.get("proxy") or {}
    if px.get("reads"):
        worst = max(px["reads"].items(), key=lambda kv: _med(kv[1]["ratio_p50"]))
        rows.append(
            [
                "4. Proxy cost: read p50 via read endpoint ÷ direct to the node",
                f"< {px.get('goal_read_p50_ratio', 1.3)}× at p50",
                f"worst region {worst[0]}: {fmt_ratio(worst[1]['ratio_p50'])}",
                f"direct p50 {fmt(worst[1]['direct_p50_ms'], 'ms', 3)}",
                verdict(proxy_ok(px)),
            ]
        )
    lag = results.get("lag") or {}
    if lag.get("slots"):
        worst = max(lag["slots"].items(), key=lambda kv: _med(kv[1]["replay_lag_p99"]))
        load = lag.get("load") or {}
        rows.append(
            [
                f"5. Replication lag p99 at {load.get('rate', '?')} writes/s",
                f"< {lag.get('goal_p99_s', 1.0):g} s",
                f"worst replica {worst[0]}: {fmt(_scale_summary(worst[1]['replay_lag_p99'], 1000), 'ms', 1)}",
                (
                    f"at {(lag.get('baseline_load') or {}).get('rate', '?')} writes/s: "
                    f"{fmt(_scale_summary(worst[1]['baseline_replay_lag_p99'], 1000), 'ms', 1)}"
                ),
                verdict(lag_ok(lag)),
            ]
        )
    unit = results.get("unit") or {}
    if unit.get("summary"):
        rows.append(
            [
                f"6. Unit suite ({unit.get('tests', '?')} tests)",
                f"< {unit.get('goal_s', 10):g} s",
                fmt(unit["summary"]),
                f"pytest on one trivial test {fmt(unit.get('baseline'))}; ratio {fmt_ratio(unit.get('ratio'), 1)}",
                verdict(unit_ok(unit)),
            ]
        )
    failed = [
        f"`{k}`: {v['error']}"
        for k, v in results.items()
        if isinstance(v, Mapping) and v.get("error")
    ]
    text = "## Summary\n\n" + table(
        ["figure", "goal", "result (median, min–max)", "baseline, same run", "verdict"], rows
    )
    if failed:
        text += "\n\nFigures that failed in this run: " + "; ".join(failed)
    return text


def _scale_summary(summary: Mapping | None, factor: float) -> dict | None:
    if not summary:
        return None
    return {**summary, **{k: _num(summary.get(k)) * factor for k in ("median", "min", "max")}}


def _figure_meta(fig: Mapping) -> str:
    meta = fig.get("_meta") or {}
    if not meta:
        return ""
    return (
        f"*Measured {_when(meta.get('started'))} in {meta.get('seconds', 0) / 60:.1f} min; load average "
        f"{_load(meta.get('load_start'))} at the start, {_load(meta.get('load_end'))} at the end.*"
    )


# ----------------------------------------------------------------------- 1. engine floor


def engine_section(eng: Mapping) -> str:
    if not eng:
        return ""
    if eng.get("error"):
        return f"## 1. Engine floor\n\nFailed: {eng['error']}"
    goal = eng.get("goal_ratio", 1.5)
    rows = [["empty program (`import pulumi`)", fmt(eng.get("empty"), "s", 2), "1×", ""]]
    for stack, s in eng.get("stacks", {}).items():
        rows.append(
            [
                f"`{stack}`",
                fmt(s["summary"], "s", 2),
                fmt_ratio(s["ratio"]),
                verdict(_med(s["ratio"]) <= goal),
            ]
        )
    parts = [
        "## 1. Engine floor",
        "",
        _figure_meta(eng),
        "",
        (
            f"A no-change `pulumi preview -s STACK --expect-no-changes` of every stack of the default fleet, "
            f"against `pulumi preview` of an empty Python program (`import pulumi`) on the same file "
            f"backend, passphrase, CLI, language host and virtualenv. Runs interleave empty, two stacks, "
            f"empty, …; each stack is divided by the mean of the empty previews on either side of it. "
            f"Goal: at most {goal}× for every stack."
        ),
        "",
        table(["stack", "preview", "÷ empty program", f"≤ {goal}×"], rows),
    ]
    prof = eng.get("profile")
    if prof:
        parts += ["", profile_section(eng, prof)]
    return "\n".join(parts)


def _phase_rows(tls: Mapping, scripts: Mapping, names: list[str]) -> list[list[str]]:
    def cell(name: str, fn) -> str:
        tl = tls.get(name)
        if not tl:
            return "–"
        try:
            return fn(tl, scripts.get(name) or {})
        except (KeyError, TypeError, ValueError):
            return "–"

    def secs(v: float) -> str:
        return f"{v:.2f}"

    spec = [
        ("wall time of the preview", lambda t, s: secs(t["wall"])),
        (
            "CLI start, stack + secrets load (before the update starts)",
            lambda t, s: secs(t["wall"] - t["total"] + t["before_update"]),
        ),
        ("plugin discovery: language host runs `pip list`", lambda t, s: secs(t["plugins"])),
        ("program start-up (Run until its first resource)", lambda t, s: secs(t["program_start"])),
        (
            "StackReference reads (count: seconds)",
            lambda t, s: (
                f"{len(t['stack_refs'])}: {t['stack_ref_seconds']:.2f}" if t["stack_refs"] else "0"
            ),
        ),
        (
            "dynamic provider start (pulumi-python plugin; launches: seconds)",
            lambda t, s: (
                f"{_python_launches(t)}: {_python_launch_seconds(t):.2f}" if t["launches"] else "0"
            ),
        ),
        (
            "provider Diff calls (count: wall span)",
            lambda t, s: f"{t['diffs']}: {t['diff_span']:.2f}" if t["diffs"] else "0",
        ),
        (
            "host `check` scripts run (count: sum, longest)",
            lambda t, s: (
                f"{s['count']}: {s['total_s']:.2f}, {s['max_s']:.2f}" if s.get("count") else "0"
            ),
        ),
        ("whole program run (Run call)", lambda t, s: secs(t["program_run"])),
        (
            "after the program (engine wrap-up, CLI exit)",
            lambda t, s: secs(
                t["wall"]
                - t["before_update"]
                - (t["wall"] - t["total"])
                - t["plugins"]
                - t["program_run"]
            ),
        ),
    ]
    return [[label, *[cell(n, fn) for n in names]] for label, fn in spec]


def profile_section(eng: Mapping, prof: Mapping) -> str:
    tls = prof.get("timelines") or {}
    scripts = prof.get("scripts") or {}
    names = ["empty", *[s for s in eng.get("stacks", {}) if s.endswith("-us")]]
    names = [n for n in names if n in tls]
    head = ["seconds (one verbose run each)", *[f"`{n}`" for n in names]]
    parts = [
        "### Where the time goes (profile)",
        "",
        (
            "One more preview of each stack with the engine's own log (`--logtostderr -v=9 --logflow`, "
            "timestamps per step, parsed by `bench/timeline.py`), every host script the dynamic provider "
            "runs timed by `bench/hook/sitecustomize.py`, and the program under cProfile. Verbose logging "
            "slows a run a little; the split is what matters. The `-eu` stacks look the same. Logs: "
            "`bench/out/profile/`."
        ),
        "",
        table(head, _phase_rows(tls, scripts, names)),
    ]
    imp = prof.get("imports") or {}
    sm = prof.get("secrets_manager") or {}
    salt = prof.get("salt_experiment") or {}
    facts = []
    if imp:
        facts.append(
            "- **Interpreter and imports** (same venv, `python -c`): "
            + ", ".join(f"{k} {fmt(v, 's', 2)}" for k, v in imp.items() if k != "importtime")
            + "."
            + (
                " First import of each (`python -X importtime` of `import pulumi, dbfleet.program.main`; each "
                "includes what it pulls in that was not loaded yet, so the figures nest): "
                + ", ".join(f"{r['package']} {r['seconds']:.2f} s" for r in imp["importtime"])
                + "."
                if imp.get("importtime")
                else ""
            )
        )
    if sm:
        facts.append(
            f"- **Passphrase secrets manager:** `pulumi stack export -s {sm.get('stack')}` takes "
            f"{fmt(sm.get('export'), 's', 2)}, with `--show-secrets` {fmt(sm.get('export_show_secrets'), 's', 2)}: "
            f"building the decrypter costs ≈ {sm.get('decrypter_s', math.nan):.2f} s (PBKDF2-SHA256 with "
            "1,000,000 rounds, `sdk/go/common/resource/config/crypt.go` in Pulumi v3.79.0)."
        )
    if salt:
        pv = salt.get("previews") or {}
        facts.append(
            f"- **StackReference experiment** (a program reading {salt.get('refs')} stacks, "
            "bench/fig_engine.py `salt_experiment`): preview "
            + "; ".join(f"{k}: {fmt(v, 's', 2)}" for k, v in pv.items())
            + f". Each reference costs ≈ {salt.get('per_ref_own_salt_s', math.nan):.2f} s when every stack "
            f"has its own salt and ≈ {max(0.0, salt.get('per_ref_shared_salt_s', math.nan)):.2f} s when they share one "
            "(the engine caches one secrets manager per salt, `pkg/secrets/passphrase/manager.go`). "
            "This is why the stacks `dbfleet` creates take their group's salt (`dbfleet/ops/workspace.py`); "
            "stacks created by hand with `pulumi stack init` pay the first figure."
        )
    pol = prof.get("policy_pack") or {}
    if pol:
        facts.append(
            f"- **Policy pack** (what `dbfleet preview` adds by default): `pulumi preview -s {pol.get('stack')}` "
            f"{fmt(pol.get('without'), 's', 2)} without it, {fmt(pol.get('with'), 's', 2)} with "
            f"`--policy-pack policies` (≈ {pol.get('added_s', math.nan):+.2f} s: the analyzer plugin starts "
            "another Python that imports pulumi_policy and dbfleet's catalogue and fleet-file parser)."
        )
    top = prof.get("program_top") or {}
    heavy = next((top[n] for n in names[::-1] if top.get(n)), None)
    if heavy:
        facts.append(
            "- **dbfleet's own code in the program under cProfile** (heaviest by cumulative time, `"
            + next(n for n in names[::-1] if top.get(n))
            + "`; waiting on the engine counts): "
            + "; ".join(f"`{r['function']}` {r['cumulative_s']:.2f} s" for r in heavy[:6])
            + "."
        )
    if facts:
        parts += ["", "Measured alongside:", "", *facts]
    parts += ["", engine_analysis(eng, prof)]
    return "\n".join(parts)


def _wait_note(prof: Mapping) -> str:
    """How long programs with and without a HostScript wait for the engine (cProfile)."""
    split = prof.get("program_split") or {}
    without = [v["engine_wait_s"] for n, v in split.items() if n.startswith("networks") and v]
    with_ = [
        v["engine_wait_s"]
        for n, v in split.items()
        if n != "empty" and not n.startswith("networks") and v
    ]
    if not without or not with_:
        return ""
    return (
        f"a program whose stack has no HostScript (`networks`) waits {max(without):.2f} s for the "
        f"engine, one with HostScripts {min(with_):.2f}–{max(with_):.2f} s; "
    )


def _python_launches(tl: Mapping) -> int:
    """How often the dynamic provider host was started (results before the count was
    kept recorded one launch per plugin name)."""
    counts = tl.get("launch_counts")
    if counts is None:
        return sum(1 for k in tl.get("launches", {}) if "python" in k)
    return sum(v for k, v in counts.items() if "python" in k)


def _python_launch_seconds(tl: Mapping) -> float:
    """Seconds spent starting the dynamic provider host, all its launches together."""
    return sum(v for k, v in tl.get("launches", {}).items() if "python" in k)


def engine_analysis(eng: Mapping, prof: Mapping) -> str:
    """Why the floor is what it is, from the measured split, and what would fix it."""
    tls = prof.get("timelines") or {}
    empty = tls.get("empty") or {}
    stacks = eng.get("stacks") or {}
    goal = eng.get("goal_ratio", 1.5)
    missed = [s for s, v in stacks.items() if _med(v["ratio"]) > goal]
    lines = ["### Reading the profile"]
    if empty:
        lines += [
            "",
            (
                f"The empty program's {empty.get('wall', math.nan):.1f} s is mostly fixed cost that every "
                f"stack pays as well: plugin discovery ({empty.get('plugins', math.nan):.1f} s — the Python "
                "language host of v3.79.0 runs `python -m pip list -v --format json` on every operation to "
                "find provider packages) and starting Python with the Pulumi SDK "
                f"({empty.get('program_start', math.nan):.1f} s)."
            ),
        ]
    extra = []
    for name, tl in tls.items():
        if name == "empty" or not empty:
            continue
        extra.append((name, tl.get("wall", 0) - empty.get("wall", 0), tl))
    if extra:
        lines += ["", "What a dbfleet stack adds on top of the empty program, per the table above:"]
        refs = [len(tl["stack_refs"]) for _, _, tl in extra]
        ref_s = [tl["stack_ref_seconds"] for _, _, tl in extra if tl["stack_refs"]]
        launch = [_python_launch_seconds(tl) for _, _, tl in extra if tl["launches"]]
        n_launch = [_python_launches(tl) for _, _, tl in extra if tl["launches"]]
        chk = [s for n, s in (prof.get("scripts") or {}).items() if n != "empty" and s.get("count")]
        start_extra = [tl["program_start"] - empty.get("program_start", 0) for _, _, tl in extra]
        lines += [
            f"- **StackReference reads:** {min(refs)}–{max(refs)} per stack, "
            + (f"{min(ref_s):.2f}–{max(ref_s):.2f} s in all. " if ref_s else "")
            + "A reference loads the other stack's checkpoint and needs its passphrase decrypter; the "
            "stacks of a group share one salt, so the key is derived once per preview, not once per "
            "reference (see the experiment above). `replicas` and `networks` also read their *own* "
            "stack (previous primary, previous ports).",
            "- **The dynamic provider:** "
            + (
                f"{min(launch):.2f}–{max(launch):.2f} s to start the `pulumi-python` provider host "
                "(another Python with the SDK and dill) in every stack that has a HostScript, "
                f"{max(n_launch)} time(s) per preview: in Pulumi v3.79.0 the provider registry "
                "launches one instance to check the provider's config (`Registry.Check`) and another "
                "to serve the resources (`Registry.Same`, `pkg/resource/deploy/providers/registry.go`), "
                "one after the other. "
                if launch
                else ""
            )
            + (
                f"Its `check` scripts (drift probes: a bash + psql/pg_ctl status per node or proxy) ran "
                f"{min(s['count'] for s in chk)}–{max(s['count'] for s in chk)} per stack, "
                f"{max(s['total_s'] for s in chk):.2f} s at most in all."
                if chk
                else ""
            ),
            (
                f"- **Program imports:** the program starts {min(start_extra):+.1f} to {max(start_extra):+.1f} s "
                "later than the empty one: `dbfleet.program.main` imports pydantic and PyYAML (the fleet file), "
                "every layer and the components before it registers anything, reads and validates the "
                "fleet file and, in the layers that need passwords, connects to Vault (hvac with requests "
                "is imported only there)."
            ),
        ]
    if missed:
        why = (
            f"**Why the goal is missed** ({', '.join(f'`{s}`' for s in missed)} above {goal}×): the empty "
            "program is a small denominator — most of its time is the fixed cost above — and a dbfleet "
            "stack has to do real work on top of it in every preview: import its modules, read its "
            "upstream stacks, start the dynamic provider and probe its hosts."
        )
        worst = max(extra, key=lambda e: e[1]) if extra else None
        if worst is not None and worst[1] > 0:
            name, gap, tl = worst
            launch_w = _python_launch_seconds(tl)
            parts = [
                (
                    "program imports and start-up",
                    tl["program_start"] - empty.get("program_start", 0),
                ),
                ("StackReference reads", tl["stack_ref_seconds"]),
                ("dynamic provider start", launch_w),
                ("Diff calls with their check scripts", tl["diff_span"]),
            ]
            rest = gap - sum(v for _, v in parts)
            why += (
                f" For `{name}` (profiled run: {tl['wall']:.1f} s against {empty['wall']:.1f} s) the "
                f"{gap:.1f} s it adds split into "
                + ", ".join(f"{label} {v:.2f} s ({v / gap * 100:.0f} %)" for label, v in parts)
                + f", and {rest:.2f} s of everything else (registering resources, reading Vault, the "
                "engine's steps)."
            )
            split = (prof.get("program_split") or {}).get(name) or {}
            if split.get("total_s"):
                py = split["total_s"] - split["engine_wait_s"] - split["imports_s"]
                why += (
                    f" Under cProfile its program ran {split['total_s']:.2f} s: "
                    f"{split['imports_s']:.2f} s importing modules (the SDK's own included), "
                    f"{split['engine_wait_s']:.2f} s waiting for the engine — which is when the engine "
                    "starts the dynamic provider and runs its Check and Diff calls — and "
                    f"{max(0.0, py):.2f} s of Python work (building the resources, the Vault calls)."
                )
            label, biggest = max(parts, key=lambda p: p[1])
            if biggest >= 0.35 * gap:
                why += (
                    f" The largest item is the {label} ({biggest / gap * 100:.0f} % of what the stack "
                    "adds): fix 1 below removes it, fix 2 part of the imports."
                )
            else:
                why += (
                    " No single item dominates, so no single fix reaches the goal; the fixes below "
                    "would remove most of the provider start and part of the imports."
                )
        lines += ["", why]
        lines += [
            "",
            (
                "**What would fix it**, cheapest first (what is done already: one salt per group, hvac "
                "imported only where used, a layer's upstream reads started together so the engine "
                "serves them in parallel, the program's long-lived objects frozen out of the cyclic GC "
                "(`gc.freeze()`: the program's exit went from ≈ 0.17 s to ≈ 0.02 s), no `stack "
                "select`/read-back around the engine — see figure 2):"
            ),
            (
                "1. A native provider instead of the Python dynamic provider: "
                + _wait_note(prof)
                + "it would save both provider-host starts (a compiled plugin starts in milliseconds) and "
                "the unpickling of the provider in each Check and Diff call (pulumi-command is not "
                "buildable here, see README; a provider of dbfleet's own in Go would be, from the same "
                "tagged `sdk/v3` module as the CLI). Deployed stacks could move to it without "
                "replacing anything: the engine diffs a resource whose *default* provider changed "
                "with the new provider's DiffConfig and Diff instead of replacing it "
                "(`stepGenerator.providerChanged`, `pkg/resource/deploy/step_generator.go`), so "
                "each HostScript needs only an alias of its old type."
            ),
            (
                "2. A smaller program start: hvac with requests (≈ 0.2 s, imported by the three layers "
                "that read Vault for three HTTP calls), the fleet-file models (pydantic) and every layer "
                "are imported and the fleet file validated in every stack; a minimal Vault client on "
                "urllib and importing only the stack's own layer would cut part of it."
            ),
            (
                "3. Outside dbfleet: the `pip list` in GetRequiredPlugins (≈ 1 s) is paid by every program "
                "and is mostly pip's own start-up — the 10 packages this benchmark added for its plot "
                "(matplotlib and its dependencies) cost ≈ 0.06 s of it (5 runs each with and without, by "
                "hand) — so only the language host can remove it, by caching what it found. It is in the "
                "baseline too, but it is why the baseline is short and every addition weighs a lot."
            ),
        ]
    elif stacks:
        lines += ["", f"Every stack is within {goal}× of the empty program."]
    return "\n".join(lines)


# ----------------------------------------------------------------------- 2. converge


def converge_section(conv: Mapping) -> str:
    if not conv:
        return ""
    if conv.get("error"):
        return f"## 2. Converge time\n\nFailed: {conv['error']}"
    up_ok, pv_ok = converge_ok(conv)
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
        _figure_meta(conv),
        "",
        (
            f"{n} run{'s' if n != 1 else ''}, each in a fresh environment: the steps of `make up` "
            "(scripts/up.sh) one by one, then a no-change preview and a no-change up of the converged "
            "fleet. Baseline, right after in the same environment: the empty program in dbfleet's shape — "
            "two groups in parallel, four stacks one after the other in each — `up` from nothing (stack "
            f"init + up) and a no-change preview. Goals: up < {conv.get('goal_up_s', 60):.0f} s, "
            f"preview < {conv.get('goal_preview_s', 20):.0f} s."
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
    cli = conv.get("cli_profile") or {}
    if cli:
        parts += ["", cli_section(cli)]
    parts += ["", converge_analysis(conv)]
    return "\n".join(parts)


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


def _runs_scripts(conv: Mapping, key: str) -> list[dict]:
    return [r[key] for r in conv.get("runs") or [] if r.get(key)]


def _cmd(cli: Mapping, kind: str, command: str) -> dict:
    return ((cli.get(kind) or {}).get("by_command") or {}).get(command) or {
        "count": 0,
        "seconds": 0.0,
    }


def converge_analysis(conv: Mapping) -> str:
    up_ok, pv_ok = converge_ok(conv)
    cli = conv.get("cli_profile") or {}
    lines = ["### Reading it"]
    ups = _runs_scripts(conv, "up_scripts")
    up_med = _med(conv.get("up"))
    if ups:
        busy = sorted(s["busy_s"] for s in ups)[len(ups) // 2]
        ssum = sorted(s["sum_s"] for s in ups)[len(ups) // 2]
        slow = ups[-1].get("slowest") or []
        lines += [
            "",
            f"**Up.** Host scripts (initdb, pg_basebackup, starting PostgreSQL and HAProxy, creating the "
            f"OS user) ran for {ssum:.1f} s in all during `dbfleet up`, and at least one was running during "
            f"{busy:.1f} s of the {up_med:.1f} s (median run). The other ≈ {up_med - busy:.0f} s "
            f"({(up_med - busy) / up_med * 100:.0f} %) is the engine, the program and dbfleet's "
            "orchestration: the fixed cost of figure 1 paid by 8 stacks in two parallel chains of 4 on 2 "
            "cores. Slowest scripts in the last run: "
            + ", ".join(f"{s['script']} {s['seconds']:.1f} s" for s in slow)
            + ".",
        ]
    floor_up, floor_pv = _med(conv.get("floor_up")), _med(conv.get("floor_preview"))
    if up_ok and conv.get("up"):
        u = conv["up"]
        lines += [
            "",
            (
                f"**Up meets {conv.get('goal_up_s', 60):.0f} s** in the median of {u['n']} runs, but the spread "
                f"({u['min']:.0f}–{u['max']:.0f} s) follows the machine's load: the empty-program baseline next "
                f"to each run moved as much ({fmt(conv.get('floor_up'))}), the ratio to it "
                f"({fmt_ratio(conv.get('ratio_up'))}) less."
            ),
        ]
    if up_ok is False and not math.isnan(floor_up):
        lines += [
            "",
            (
                f"**Up misses {conv.get('goal_up_s', 60):.0f} s.** The empty program in the same shape — 8 stacks "
                f"with no resource at all — already takes {fmt(conv.get('floor_up'))} on this machine at this load, "
                f"{floor_up / conv.get('goal_up_s', 60) * 100:.0f} % of the budget, before any database exists; "
                f"dbfleet is {fmt_ratio(conv.get('ratio_up'))} of it."
            ),
        ]
    if cli:
        up_kind = next((k for k in cli if k.startswith("up")), None)
        pv = cli.get("preview") or {}
        pn = cli.get("preview --no-policies") or {}

        def around(kind: str, main: str) -> str:
            other = {
                c: v
                for c, v in ((cli.get(kind) or {}).get("by_command") or {}).items()
                if c != main
            }
            if not other:
                return "no other CLI call"
            return (
                f"{sum(v['count'] for v in other.values())} other CLI call(s) "
                f"({sum(v['seconds'] for v in other.values()):.1f} s: "
                + ", ".join(f"`{c}` {v['count']}×" for c, v in other.items())
                + ")"
            )

        if pv and pn:
            per_stack = (
                _cmd(cli, "preview", "preview")["seconds"]
                - _cmd(cli, "preview --no-policies", "preview")["seconds"]
            ) / max(1, pv.get("stacks", 8))
            lines += [
                "",
                (
                    f"**Preview.** With the policy pack (the default when `policies/` exists) the 8 engine "
                    f"previews took {_cmd(cli, 'preview', 'preview')['seconds']:.0f} s of CLI time, without it "
                    f"{_cmd(cli, 'preview --no-policies', 'preview')['seconds']:.0f} s: the pack costs ≈ "
                    f"{per_stack:.1f} s per stack in this run (see also figure 1's profile). Around the "
                    f"previews dbfleet makes {around('preview', 'preview')}: one workspace serves the whole "
                    "command and a stack that exists is not selected first (`dbfleet/ops/workspace.py`)."
                ),
            ]
        if up_kind:
            u = _cmd(cli, up_kind, "up")
            lines += [
                "",
                (
                    f"**No-change up.** The 8 `pulumi up` calls took {u['seconds']:.0f} s of CLI time; around "
                    f"them dbfleet makes {around(up_kind, 'up')}. Changes and outputs come from the engine "
                    "events of the same run, not from `stack output`/`stack history` read-backs (which "
                    "the Automation API's `Stack.up()` otherwise adds: 3 more CLI processes per stack, 27 % of "
                    "all CLI time in the first benchmark run)."
                ),
            ]
    if pv_ok is False:
        text = f"**Preview misses {conv.get('goal_preview_s', 20):.0f} s.** "
        if not math.isnan(floor_pv):
            text += (
                f"Eight no-change previews of the *empty* program in the same shape take "
                f"{fmt(conv.get('floor_preview'))} here"
                + (
                    ", already over the goal: on this machine the goal is below the floor of "
                    "the toolchain itself (≈ 1.5–2 s of `pip list` and Python start-up per stack "
                    "before any program runs, see figure 1). "
                    if floor_pv >= conv.get("goal_preview_s", 20)
                    else ". "
                )
                + f"dbfleet's preview is {fmt_ratio(conv.get('ratio_preview'))} of that with the policy "
                f"pack and {fmt_ratio(conv.get('ratio_preview_no_policies'))} without. "
            )
        lines += ["", text]
    if up_ok is False or pv_ok is False:
        pv = cli.get("preview") or {}
        total = pv.get("sum_s") or 0.0
        engine = _cmd(cli, "preview --no-policies", "preview")["seconds"]
        policy = _cmd(cli, "preview", "preview")["seconds"] - engine
        books = total - _cmd(cli, "preview", "preview")["seconds"]

        def share(v: float) -> str:
            return f" (≈ {v / total * 100:.0f} % of the preview's CLI time here)" if total else ""

        lines += [
            "",
            "**What would fix it**, largest share first:",
            "1. The engine previews themselves"
            + share(engine)
            + ": the per-stack floor of figure 1, paid 8 times per command (see there for what is "
            "left of it).",
            "2. The policy pack"
            + share(max(0.0, policy))
            + ": a second Python per stack that imports pulumi_policy and dbfleet's fleet-file "
            "parser. `dbfleet preview --no-policies` is the fast path for drift checks; CI review and "
            "the preview before an `up` should keep it.",
            "3. The remaining CLI calls around the previews" + share(max(0.0, books)) + ".",
            (
                "4. Not previewing what cannot have changed (a design change, not measured): a stack whose "
                "fleet-file section, code digest and upstream outputs are unchanged since its last `up` could be "
                "reported unchanged without starting the engine, losing only the drift probes, which "
                "`dbfleet status` covers."
            ),
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------- 3. scale


def scale_section(sc: Mapping, plot: str | None) -> str:
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
                f"{norm_up[i]:.1f} s" if i < len(norm_up) and _ok(norm_up[i]) else "–",
                fmt(p.get("preview")),
                fmt(p.get("floor_preview")),
                fmt_ratio(p.get("ratio_preview")),
                f"{norm_pv[i]:.1f} s" if i < len(norm_pv) and _ok(norm_pv[i]) else "–",
                f"{um.get('pulumi_total_mb', math.nan):.0f}" if um else "–",
                f"{pm.get('pulumi_total_mb', math.nan):.0f}" if pm else "–",
            ]
        )
    up_runs = sorted({len(points[x].get("up_s") or []) for x in xs})
    pv_runs = sorted({len(points[x].get("preview_s") or []) for x in xs})
    parts = [
        "## 3. Scale",
        "",
        _figure_meta(sc),
        "",
        "One group with "
        + ", ".join(xs)
        + " regions, one node each, in a fresh environment per point: "
        "`dbfleet up` from nothing, the empty program's 4 stacks brought up next to it (baseline), then "
        "no-change `dbfleet preview` runs, each paired with 4 empty-program previews measured just before "
        "it. The group is in the **US zone** because the catalogue has only 8 EU regions "
        "(ams, arn, cdg, fra, lhr, mad, otp, waw) and 12 US ones; regions are added in the order "
        "iad, ord, sjc, dfw, sea, atl, den, lax, bos, mia, phx, ewr. "
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
    fits = []
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
        fits.append(
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
    if fits:
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
                fits,
            ),
        ]
    if plot:
        parts += ["", f"![time and memory against regions]({plot})"]
    prof_rows = []
    for x in xs:
        for stack, tl in sorted((points[x].get("profile") or {}).items()):
            sc_ = tl.get("scripts") or {}
            prof_rows.append(
                [
                    x,
                    f"`{stack}`",
                    f"{tl.get('wall', math.nan):.2f}",
                    f"{tl.get('program_run', math.nan):.2f}",
                    f"{tl.get('stack_ref_seconds', math.nan):.2f}",
                    f"{tl.get('diffs', 0)}: {tl.get('diff_span', 0):.2f}",
                    f"{sc_.get('count', 0)}: {sc_.get('sum_s', 0):.2f}",
                ]
            )
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
    parts += ["", scale_analysis(sc, xs)]
    return "\n".join(parts)


def scale_analysis(sc: Mapping, xs: list[str]) -> str:
    ok = scale_ok(sc)
    f = sc.get("fit_preview_normalized") or sc.get("fit_preview") or {}
    if ok is None or not f:
        return ""
    goal = sc.get("goal_preview_slope_s", 1.0)
    lines = ["### Reading it"]
    raw = sc.get("fit_preview") or {}
    floor = sc.get("fit_floor_preview") or {}
    lines.append(
        (
            f"At a common load the no-change preview grows by {f['slope']:+.2f} s per added region ("
            if abs(f["slope"]) >= 0.05
            else f"At a common load the no-change preview does not grow measurably with regions "
            f"({f['slope']:+.2f} s per added region, the fixed cost per stack dominates; "
        )
        + f"r² {f['r2']:.2f}; as measured {raw.get('slope', math.nan):+.2f} s/region, of which the load drift "
        f"alone — the empty program's slope — is {floor.get('slope', math.nan):+.2f} s/region). "
        + (
            (
                f"That meets the goal: linear and under {goal:g} s per region"
                + (
                    f"; so does the series as measured ({raw.get('slope', math.nan):+.2f} s/region)."
                    if raw.get("slope", math.inf) < goal
                    else "."
                )
            )
            if ok
            else "**Missed:** "
            + (
                f"{f['slope']:+.2f} s per region is over the {goal:g} s goal"
                if f["slope"] >= goal
                else "the growth is not linear (see the steps between points)"
            )
            + "."
        )
    )
    pts = sc.get("points") or {}
    first, last = pts.get(xs[0], {}).get("profile") or {}, pts.get(xs[-1], {}).get("profile") or {}
    if first and last and len(xs) > 1:
        dx = int(xs[-1]) - int(xs[0])
        parts, walls = [], []
        for stack in sorted(last):
            a, b = first.get(stack) or {}, last[stack]
            if not a:
                continue
            walls.append((b.get("wall", 0) - a.get("wall", 0)) / dx)
            parts.append(
                f"`{stack}` {a.get('wall', 0):.1f} → {b.get('wall', 0):.1f} s (Diff calls {a.get('diffs', 0)} → "
                f"{b.get('diffs', 0)}, their span {a.get('diff_span', 0):.2f} → {b.get('diff_span', 0):.2f} s; "
                f"check scripts {(a.get('scripts') or {}).get('sum_s', 0):.2f} → "
                f"{(b.get('scripts') or {}).get('sum_s', 0):.2f} s; StackReference reads "
                f"{a.get('stack_ref_seconds', 0):.2f} → {b.get('stack_ref_seconds', 0):.2f} s)"
            )
        if parts:
            lines.append(
                f"Where a region's cost is, from the single profiled plain previews at {xs[0]} and {xs[-1]} "
                "regions: "
                + "; ".join(parts)
                + f". Together that is {sum(walls):+.2f} s per added region for "
                "the two stacks that grow, single runs on a shared machine (so only indicative): each region "
                "adds a PostgreSQL node and a proxy, each one resource with one Diff call that runs its "
                "read-only `check` script (a bash that sources the shared library and asks pg_ctl/psql or "
                "HAProxy for status), and slightly larger StackReference outputs to read."
            )
    mem = sc.get("fit_preview_memory_mb") or {}
    if mem:
        lines.append(
            f"Memory is almost flat: {mem.get('slope', math.nan):+.1f} MiB per region during a preview on a "
            f"base of ≈ {mem.get('intercept', math.nan):.0f} MiB (engine, language host, program, dynamic "
            "provider and policy-pack Pythons at their peak together)."
        )
    if not ok:
        lines.append(
            "What would fix it: cheaper drift probes (one `check` per host reporting every node and proxy "
            "on it, or reading the pid files plus a TCP connect instead of starting psql), and fewer "
            "resources per region (the proxy and node of a region as one HostScript)."
        )
    return "\n\n".join(lines)


def scale_ok(sc: Mapping) -> bool | None:
    fit = sc.get("fit_preview_normalized") or sc.get("fit_preview")
    if not fit:
        return None
    key = "preview_normalized" if sc.get("fit_preview_normalized") else "preview"
    return fit["slope"] < sc.get("goal_preview_slope_s", 1.0) and linear(sc, key)


# ----------------------------------------------------------------------- 4. proxy


def proxy_section(px: Mapping) -> str:
    if not px:
        return ""
    if px.get("error"):
        return f"## 4. Proxy cost\n\nFailed: {px['error']}"
    goal = px.get("goal_read_p50_ratio", 1.3)
    reads = []
    for region, r in (px.get("reads") or {}).items():
        reads.append(
            [
                f"{px.get('group')}/{region} ({r.get('role', '?')})",
                fmt(r["proxy_p50_ms"], "ms", 3),
                fmt(r["direct_p50_ms"], "ms", 3),
                fmt_ratio(r["ratio_p50"]),
                fmt(r["proxy_p99_ms"], "ms", 3),
                fmt(r["direct_p99_ms"], "ms", 3),
                fmt_ratio(r["ratio_p99"]),
                verdict(_med(r["ratio_p50"]) < goal),
            ]
        )
    writes = []
    for region, r in (px.get("writes") or {}).items():
        writes.append(
            [
                f"{px.get('group')}/{region} → {px.get('primary')}",
                fmt(r["proxy_p50_ms"], "ms", 3),
                fmt(r["direct_p50_ms"], "ms", 3),
                fmt_ratio(r["ratio_p50"]),
                fmt(r["proxy_p99_ms"], "ms", 3),
                fmt(r["direct_p99_ms"], "ms", 3),
                fmt_ratio(r["ratio_p99"]),
            ]
        )
    parts = [
        "## 4. Proxy cost",
        "",
        _figure_meta(px),
        "",
        (
            f"psycopg 3, one persistent connection per path, autocommit, as the application user, on the "
            f"converged default fleet (group `{px.get('group')}`). Reads: `SELECT v FROM bench_kv WHERE k = $1` "
            f"(1,000-row table, random key) through the region's read endpoint vs straight to the region's "
            f"node. Writes: a one-row `INSERT` through the region's write endpoint vs straight to the "
            f"primary. {px.get('runs')} runs of {px.get('queries_per_run')} queries per path, the two paths back "
            f"to back in alternating order (after 100 warm-up queries each); p50/p99 per run, median (min–max) over runs. "
            f"Goal: read p50 through the proxy < {goal}× direct."
        ),
        "",
        "Reads:",
        "",
        table(
            [
                "region (role)",
                "p50 via proxy",
                "p50 direct",
                "p50 ratio",
                "p99 via proxy",
                "p99 direct",
                "p99 ratio",
                f"p50 < {goal}×",
            ],
            reads,
        ),
        "",
        "Writes:",
        "",
        table(
            [
                "write endpoint → primary",
                "p50 via proxy",
                "p50 direct",
                "p50 ratio",
                "p99 via proxy",
                "p99 direct",
                "p99 ratio",
            ],
            writes,
        ),
    ]
    ok = proxy_ok(px)
    rr = px.get("range_read") or {}
    point = (px.get("reads") or {}).get(rr.get("region", ""), {})
    if rr:
        parts += [
            "",
            (
                f"Same comparison with a heavier read on {px.get('group')}/{rr.get('region')} "
                "(`SELECT k, v FROM bench_kv WHERE k BETWEEN $1 AND $1 + 99`, 100 rows): p50 via proxy "
                f"{fmt(rr['proxy_p50_ms'], 'ms', 3)}, direct {fmt(rr['direct_p50_ms'], 'ms', 3)}, ratio "
                f"{fmt_ratio(rr['ratio_p50'])}."
            ),
        ]
    if ok is not None:
        add = {
            r: (_med(v["proxy_p50_ms"]) - _med(v["direct_p50_ms"])) * 1000
            for r, v in (px.get("reads") or {}).items()
        }
        st = px.get("settings") or {}
        if st.get("variants"):
            rows = [["straight to the node", fmt(st.get("direct_p50_ms"), "ms", 3), "1×", "–"]]
            for n, v in st["variants"].items():
                rows.append(
                    [
                        f"HAProxy, dbfleet's defaults + `{n}`"
                        if n != "dbfleet"
                        else "HAProxy as dbfleet runs it",
                        fmt(v["p50_ms"], "ms", 3),
                        fmt_ratio(v["ratio_p50"]),
                        fmt(v["hop_us"], "µs", 0),
                    ]
                )
            parts += [
                "",
                (
                    f"HAProxy settings that could shorten the hop, each in a standalone HAProxy in front of "
                    f"{st.get('region')}'s node, the same point read, {st.get('blocks')} blocks of "
                    f"{st.get('queries_per_block')} queries per path in a shuffled order (bench/fig_proxy.py "
                    "`hop_experiment`):"
                ),
                "",
                table(["path", "p50", "÷ direct", "hop (p50 difference)"], rows),
            ]
        parts += ["", "### Reading it", ""]
        text = (
            f"Through the proxy a point read costs {min(add.values()):.0f}–{max(add.values()):.0f} µs more at p50 "
            "than straight to the node: HAProxy in TCP mode adds one more loopback connection and a "
            "pass through its event loop in each direction. "
        )
        if rr and point:
            heavy_add = (_med(rr["proxy_p50_ms"]) - _med(rr["direct_p50_ms"])) * 1000
            text += (
                f"With 100 rows per reply the difference is {heavy_add:.0f} µs against "
                f"{add.get(rr.get('region'), math.nan):.0f} µs for one row: the hop is a roughly fixed cost "
                "per round trip, so the ratio depends on how cheap the query is. "
            )
        st = px.get("settings") or {}
        variants = st.get("variants") or {}
        if variants:
            hops = {n: _med(v["hop_us"]) for n, v in variants.items()}
            base = hops.get("dbfleet", math.nan)
            text += (
                f"In front of the same node ({st.get('region')}), standalone HAProxies with dbfleet's "
                "TCP defaults plus one setting each cost "
                + ", ".join(f"{h:.0f} µs (`{n}`)" for n, h in hops.items())
                + " per point read (table above). "
            )
            busy = hops.get("nbthread 1 + busy-polling")
            if busy is not None and busy < 0.7 * base:
                text += (
                    f"Only `busy-polling` shortens the hop ({base:.0f} → {busy:.0f} µs"
                    + (
                        ": through a HAProxy that never sleeps the read is even faster than straight "
                        "to the node, so most of the hop is the time it takes to wake HAProxy's sleeping "
                        "poller (and the core it runs on), not the extra copy"
                        if busy <= 0
                        else ""
                    )
                    + "). But HAProxy then never sleeps in its poller: it spins one core per thread "
                    "for as long as it runs — one core per region's proxy, all the time, is not a "
                    "default dbfleet can take on shared hosts, and on this 2-core machine (6 proxies) "
                    "it would starve PostgreSQL. "
                )
                settings_note = (
                    "only `busy-polling` removes part of the hop, at the price of a core per proxy "
                    "(measured above, not guessed)"
                )
            else:
                text += "No setting removes the hop. "
                settings_note = (
                    "nothing in HAProxy's configuration removes the hop (the settings above were "
                    "measured, not guessed)"
                )
        else:
            settings_note = "nothing measured here removes the hop"
        if ok:
            text += "Even for the sub-millisecond point read used here it stays within the goal."
        else:
            text += (
                "\n\n**Missed:** the point read takes ≈ "
                f"{min(_med(v['direct_p50_ms']) for v in (px.get('reads') or {}).values()) * 1000:.0f} µs "
                "straight to the node on loopback — about the cheapest query PostgreSQL answers — so a fixed "
                "hop of tens of µs is a large fraction of it; on 2 shared cores HAProxy's wake-ups also "
                "compete with the client and PostgreSQL for a CPU. Across a real network, where a round "
                "trip costs 0.5 ms or more, the same hop would be ≈ 10 % or less (an estimate, not measured "
                "here). What would fix it on this target: "
                + settings_note
                + "; clients that need the last tens of "
                "µs can connect straight to the node listed in `replicas-<g>`'s `nodes` output (losing "
                "the failover the proxy gives)."
            )
        parts.append(text)
    return "\n".join(parts)


# ----------------------------------------------------------------------- 5. lag


def lag_section(lag: Mapping) -> str:
    if not lag:
        return ""
    if lag.get("error"):
        return f"## 5. Replication lag\n\nFailed: {lag['error']}"
    load = lag.get("load") or {}
    base = lag.get("baseline_load") or {}
    goal = lag.get("goal_p99_s", 1.0)
    rows = []
    for slot, s in (lag.get("slots") or {}).items():
        region = slot.split("_")[1] if slot.count("_") >= 2 else slot
        age = (lag.get("replicas") or {}).get(region) or {}
        rows.append(
            [
                f"`{slot}`",
                fmt(_scale_summary(s["replay_lag_p50"], 1000), "ms", 1),
                fmt(_scale_summary(s["replay_lag_p99"], 1000), "ms", 1),
                fmt(_scale_summary(s["replay_lag_max"], 1000), "ms", 1),
                fmt(_scale_summary(s["lsn_p99"], 1 / 1024), "KiB", 1),
                fmt(_scale_summary(age.get("age_p99"), 1000), "ms", 1),
                fmt(_scale_summary(s["baseline_replay_lag_p99"], 1000), "ms", 1),
                fmt_ratio(s.get("ratio_p99")),
                verdict(_med(s["replay_lag_p99"]) < goal),
            ]
        )
    n = len(lag.get("runs") or [])
    parts = [
        "## 5. Replication lag",
        "",
        _figure_meta(lag),
        "",
        (
            f"Group `{lag.get('group')}` (primary {lag.get('primary')}), {n} runs. **Load:** pgbench "
            f"`-R {load.get('rate')}` with {lag.get('clients')} clients for {load.get('seconds')} s per run, "
            "one single-row INSERT (≈ 100-byte payload) per transaction on the primary: achieved "
            f"{fmt(load.get('writes_per_s'), 'writes/s', 1)}, pgbench latency {fmt(load.get('latency_ms'), 'ms', 2)}, "
            f"WAL {fmt(load.get('wal_kib_per_s'), 'KiB/s', 0)}, {load.get('failed', 0)} failed transactions. "
            "Sampled every 100 ms (the first second of each run is dropped): `replay_lag` and the LSN "
            "distance in `pg_stat_replication` on the primary, and on each replica the age of the newest "
            "applied transaction (`clock_timestamp() - pg_last_xact_replay_timestamp()`; it includes the "
            "time since the last commit, up to one gap between commits — 5 ms on average at 200 writes/s — so "
            "it is an upper bound). `replay_lag` is NULL when a replica has nothing left to apply; those "
            "samples are left out. Baseline: the "
            f"same at {base.get('rate')} writes/s for {base.get('seconds')} s per run, right after each loaded run. "
            f"Goal: p99 < {goal:g} s."
        ),
        "",
        table(
            [
                "replica (slot)",
                "replay_lag p50",
                "replay_lag p99",
                "replay_lag max",
                "LSN distance p99",
                "applied-txn age p99 (replica)",
                f"p99 at {base.get('rate')} writes/s",
                "p99 ratio",
                f"p99 < {goal:g} s",
            ],
            rows,
        ),
    ]
    if lag.get("sampler_errors"):
        parts += ["", "Sampler errors: " + "; ".join(lag["sampler_errors"])]
    ok = lag_ok(lag)
    if ok is not None:
        parts += ["", "### Reading it", ""]
        worst = max((lag.get("slots") or {}).items(), key=lambda kv: _med(kv[1]["replay_lag_p99"]))
        w99 = _med(worst[1]["replay_lag_p99"])
        if ok:
            parts.append(
                f"Streaming replication on loopback keeps up with this load: the worst replica's p99 "
                f"`replay_lag` is {w99 * 1000:.1f} ms, {goal / w99:.0f}× under the goal, and the LSN distance "
                "stays within a few WAL records, so lag does not build up over a run. Under the light "
                "load the same percentiles are of the same order: at these rates the lag is the "
                "replication round trip (WAL sent, written, applied, reported back), not a queue."
            )
        else:
            parts.append(
                f"**Missed:** the worst replica's p99 `replay_lag` is {w99 * 1000:.0f} ms. On this shared "
                "2-core machine the replicas' startup (WAL apply) processes compete with pgbench, the "
                "primary and anything else on the machine; see the LSN distance column for whether WAL piles "
                "up (a queue) or only the reports are late. What would fix it: fewer co-tenants on the "
                "cores, or batching writes into fewer, larger transactions."
            )
    return "\n".join(parts)


# ----------------------------------------------------------------------- 6. unit


def unit_section(unit: Mapping) -> str:
    if not unit:
        return ""
    if unit.get("error"):
        return f"## 6. Unit suite\n\nFailed: {unit['error']}"
    ok = unit_ok(unit)
    parts = [
        "## 6. Unit suite",
        "",
        _figure_meta(unit),
        "",
        (
            f"`scripts/test.sh unit` (`pytest tests/unit -q`, {unit.get('tests', '?')} tests, in the snapshot) "
            f"against pytest on one trivial test with the same interpreter and flags, alternating. "
            f"Goal: < {unit.get('goal_s', 10):g} s."
        ),
        "",
        table(
            ["", "wall time", "goal"],
            [
                ["unit suite", fmt(unit.get("summary")), verdict(ok)],
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
        if ok is False:
            reported = prof.get("pytest_reported_s") or prof.get("run_s") or math.nan
            heavy = prof.get("over_50ms_s", 0.0)
            collect = prof.get("collect_s", math.nan)
            n_fast = max(0, (unit.get("tests") or 0) - (prof.get("over_50ms_count") or 0))
            parts += [
                "",
                (
                    f"**Missed:** collection ({collect:.1f} s) and the {prof.get('over_50ms_count', 0)} test "
                    f"phases over 50 ms ({heavy:.1f} s) are {(collect + heavy) / reported * 100:.0f} % of the "
                    f"{reported:.1f} s; the other ≈ {n_fast} tests share the remaining "
                    f"{max(0.0, reported - collect - heavy):.1f} s. The slow ones start processes: "
                    "`test_workflow_review.py` runs `bash scripts/ci_review.sh` end to end in a temp git repo, "
                    "`test_python_dash_m_dbfleet` starts `python -m dbfleet` (a fresh interpreter importing "
                    "pydantic and the CLI). What would fix it: mark those process-level tests `integration` "
                    "(or share one run of the script across their assertions), and import heavy modules "
                    "(pulumi_policy, hvac, pulumi.automation) lazily so collection stops paying for them."
                ),
            ]
    return "\n".join(parts)


# ----------------------------------------------------------------------- load + method


def load_section(results: Mapping) -> str:
    marks = _run_meta(results).get("load") or []
    if not marks:
        return ""
    t0 = marks[0]["time"]
    rows = [[f"{(m['time'] - t0) / 60:5.1f}", m["what"], _load(m["load"])] for m in marks]
    return "\n".join(
        [
            "## Load during the run",
            "",
            (
                "Load average (1/5/15 min) when each figure started and ended. Anything above 2 means runnable "
                "processes were waiting for one of the 2 CPUs — the benchmark's own, or other work on a shared "
                "machine — which is why every figure is paired with a baseline measured next to it."
            ),
            "",
            table(["minute", "moment", "load average"], rows),
        ]
    )


def method_section(results: Mapping) -> str:
    plan = _run_meta(results).get("plan") or {}
    return "\n".join(
        [
            "## How to run, and how it measures",
            "",
            "```sh",
            "make bench                       # = source scripts/env.sh && python -m bench; writes this file and bench/scale.png",
            "python -m bench --quick          # fewer runs, 2 scale points; bench/out/quick/ only",
            "python -m bench --only scale     # re-measure some figures; the others are kept from bench/out/results.json",
            "python -m bench --render         # re-render this file from bench/out/results.json",
            "python -m bench --worktree       # measure the uncommitted working tree instead of HEAD",
            "```",
            "",
            (
                f"- Repetitions (plan `{plan.get('name', '?')}`): {plan.get('runs', '?')} runs of the engine floor, "
                f"proxy, lag and unit figures; {plan.get('converge_runs', '?')} fleets brought up from nothing; scale "
                f"points {', '.join(map(str, plan.get('scale_points', [])))} with {plan.get('scale_up_runs', '?')} "
                f"up and {plan.get('scale_preview_runs', '?')} previews each."
            ),
            (
                "- Times are wall-clock, from spawning the command to its exit, with nothing else of the benchmark "
                "running. Raw numbers of every run: `bench/out/results.json`; command output: `bench/out/logs/`."
            ),
            (
                "- Statistics (`bench/stats.py`): median and min–max; percentiles with linear interpolation; "
                "ratios paired run by run with the baseline measured next to them; ordinary least squares for "
                "the scale fit. Unit-tested in `tests/unit/test_bench*.py`."
            ),
            (
                "- Cleanup: every stack is destroyed (`dbfleet destroy --yes`), every Vault purged "
                "(`scripts/vault.sh purge`) and every temp dir removed, also when a figure fails."
            ),
        ]
    )


def readme_figures(results: Mapping) -> dict[str, str]:
    """The README's "Figures" table, from these results."""
    conv = results.get("converge") or {}
    unit = results.get("unit") or {}
    mt = results.get("maketest") or {}
    out = {
        "MAKE_UP": fmt(conv.get("make_up"), "s", 0) if conv.get("make_up") else "–",
        "NOOP_UP": fmt(conv.get("noop_up"), "s", 0) if conv.get("noop_up") else "–",
        "UNIT_TIME": fmt(unit.get("summary"), "s", 1) if unit.get("summary") else "–",
        "MAKE_TEST": "–",
    }
    if mt.get("seconds"):
        out["MAKE_TEST"] = f"{mt['seconds'] / 60:.1f} min (1 run; {mt.get('result', '')})"
    return out


def readme_section(results: Mapping) -> str:
    figs = readme_figures(results)
    mt = results.get("maketest") or {}
    rows = [
        ["`make up` of the default fleet, warm machine, from nothing", figs["MAKE_UP"], "< 60 s"],
        ["a no-change `dbfleet up` of all 8 stacks", figs["NOOP_UP"], ""],
        ["unit suite", figs["UNIT_TIME"], "< 10 s"],
        ["`make test` (warm)", figs["MAKE_TEST"], ""],
    ]
    text = [
        "## The README's figures",
        "",
        'The table in README.md ("Figures"), from this run: `make up` is the sum of its steps in figure 2, '
        "the no-change up is figure 2's, the unit suite figure 6. `make test` is not part of `make bench` "
        "(it runs the integration suite, which brings up fleets of its own, for many minutes): "
        "`python -m bench --only maketest` measures it once"
        + (
            f", last on {_when((mt.get('_meta') or {}).get('started'))}"
            if mt.get("seconds")
            else ""
        )
        + ".",
        "",
        table(["what", "measured", "goal"], rows),
    ]
    return "\n".join(text)


def render(results: Mapping, plot: str | None = None) -> str:
    sections = [
        header(results),
        summary_table(results),
        engine_section(results.get("engine") or {}),
        converge_section(results.get("converge") or {}),
        scale_section(results.get("scale") or {}, plot),
        proxy_section(results.get("proxy") or {}),
        lag_section(results.get("lag") or {}),
        unit_section(results.get("unit") or {}),
        readme_section(results),
        load_section(results),
        method_section(results),
    ]
    return "\n\n".join(s for s in sections if s).rstrip() + "\n"
