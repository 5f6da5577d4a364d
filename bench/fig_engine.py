"""Figure 1: the engine floor — a no-change `pulumi preview` of each dbfleet stack
against the same preview of the empty program (same backend, toolchain, venv).

Runs interleave: E S1 S2 E S3 S4 E ... E, and each stack is divided by the mean of
the empty-program previews just before and just after its pair, so load that drifts
during a round (the machine is shared) cancels out. `--expect-no-changes` makes any
planned change an error: these are no-change previews or nothing.

The profile pass (one more preview of each, with the engine's verbose log and the
bench hook) explains where the time goes: see bench.timeline and bench/hook.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from bench import procs, timeline
from bench.context import Ctx
from bench.fleetenv import FleetEnv
from bench.floor import ensure_floor_stack, preview_floor
from bench.markdown import figure_meta, fmt, fmt_ratio, med, table, verdict
from bench.stats import Summary, median
from dbfleet.model.stackname import LAYERS

GOAL_RATIO = 1.5


def stacks_of(groups: tuple[str, ...]) -> list[str]:
    return [f"{layer}-{g}" for g in groups for layer in LAYERS]


def _preview(fe: FleetEnv, stack: str, extra: tuple[str, ...] = (), **kw) -> procs.Timed:
    return fe.pulumi("preview", "-s", stack, "--expect-no-changes", *extra, timeout=600, **kw)


def run(ctx: Ctx, fe: FleetEnv, groups: tuple[str, ...] = ("us", "eu")) -> dict:
    stacks = stacks_of(groups)
    ensure_floor_stack(fe)
    # One untimed pass: page cache, plugin cache, __pycache__ of the snapshot.
    preview_floor(fe)
    for s in stacks:
        _preview(fe, s)
    times: dict[str, list[float]] = {s: [] for s in stacks}
    ratios: dict[str, list[float]] = {s: [] for s in stacks}
    empty: list[float] = []
    pairs = [stacks[i : i + 2] for i in range(0, len(stacks), 2)]
    for r in range(ctx.plan.runs):
        ctx.say(f"engine floor round {r + 1}/{ctx.plan.runs}")
        before = preview_floor(fe).seconds
        empty.append(before)
        for pair in pairs:
            got = {s: _preview(fe, s).seconds for s in pair}
            after = preview_floor(fe).seconds
            empty.append(after)
            for s, sec in got.items():
                times[s].append(sec)
                ratios[s].append(sec / ((before + after) / 2))
            before = after
    out = {
        "goal_ratio": GOAL_RATIO,
        "empty": Summary.of(empty),
        "empty_s": empty,
        "stacks": {
            s: {"summary": Summary.of(times[s]), "ratio": Summary.of(ratios[s]), "runs_s": times[s]}
            for s in stacks
        },
    }
    ctx.results["engine"] = out
    ctx.save()
    if ctx.profile:
        out["profile"] = profile(ctx, fe, stacks)
    return out


def _hook_env(fe: FleetEnv, script_log: Path, prof_dir: Path) -> dict:
    env = fe.env  # bench/hook is already first on its PYTHONPATH
    env["DBFLEET_BENCH_SCRIPT_LOG"] = str(script_log)
    env["DBFLEET_BENCH_CPROFILE_DIR"] = str(prof_dir)
    return env


def profile(ctx: Ctx, fe: FleetEnv, stacks: list[str]) -> dict:
    """One verbose preview per stack (and of the empty program), with host-script timing
    and cProfile of the program; plus the cost of the passphrase secrets manager."""
    ctx.say("engine floor: profile pass")
    pdir = ctx.out / "profile"
    pdir.mkdir(parents=True, exist_ok=True)
    verbose = ("--logtostderr", "-v=9", "--logflow")
    out: dict = {"timelines": {}, "scripts": {}, "program_top": {}, "program_split": {}}
    for name in ["empty", *stacks]:
        script_log = pdir / f"scripts-{name}.jsonl"
        prof_dir = pdir / f"cprofile-{name}"
        script_log.unlink(missing_ok=True)
        shutil.rmtree(prof_dir, ignore_errors=True)  # only this run's profiles count
        env = _hook_env(fe, script_log, prof_dir)
        if name == "empty":
            t = fe.pulumi("preview", "-s", "floor", *verbose, cwd=fe.empty_project(), env=env)
        else:
            t = fe.pulumi(
                "preview", "-s", name, "--expect-no-changes", *verbose, env=env, timeout=600
            )
        (pdir / f"engine-{name}.log").write_text(timeline.keep(t.stderr))
        tl = timeline.phases(t.stderr).to_json()
        tl["wall"] = t.seconds
        out["timelines"][name] = tl
        out["scripts"][name] = script_summary(script_log)
        out["program_top"][name] = cprofile_top(prof_dir)
        out["program_split"][name] = cprofile_split(prof_dir)
    pack = ctx.code / "policies"
    if (pack / "PulumiPolicy.yaml").is_file():
        # What `dbfleet preview` adds by default: the CrossGuard pack. (Not with -v=9: the
        # Python analyzer host takes the propagated log flags for its program path.)
        out["policy_pack"] = policy_cost(ctx, fe, stacks[3], pack)
    out["secrets_manager"] = secrets_manager_cost(ctx, fe, stacks[1])
    out["salt_experiment"] = salt_experiment(ctx, fe)
    out["imports"] = import_costs(fe)
    return out


def script_summary(path: Path) -> dict:
    rows = []
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    secs = [r["seconds"] for r in rows]
    by_action: dict[str, int] = {}
    for r in rows:
        by_action[r["action"]] = by_action.get(r["action"], 0) + 1
    if rows:
        span = max(r["start"] + r["seconds"] for r in rows) - min(r["start"] for r in rows)
    else:
        span = 0.0
    return {
        "count": len(rows),
        "actions": by_action,
        "total_s": sum(secs),
        "median_s": median(secs) if secs else 0.0,
        "max_s": max(secs) if secs else 0.0,
        "span_s": span,
    }


def cprofile_top(prof_dir: Path, n: int = 8) -> list[dict]:
    """dbfleet's own heaviest functions in the program, by cumulative time (cProfile)."""
    import pstats

    files = sorted(prof_dir.glob("program-*.prof")) if prof_dir.exists() else []
    if not files:
        return []
    st = pstats.Stats(str(files[0]))
    for f in files[1:]:
        st.add(str(f))
    rows = []
    for (fname, line, func), (_cc, _nc, _tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        if "dbfleet-bench-code-" in fname or fname.endswith("__main__.py"):
            rows.append({"function": f"{_short(fname)}:{line}({func})", "cumulative_s": ct})
    rows.sort(key=lambda r: -r["cumulative_s"])
    return rows[:n]


def cprofile_split(prof_dir: Path) -> dict:
    """Where the program's time goes under cProfile: importing modules, waiting for
    the engine (the event loop's epoll, i.e. registrations, provider start, Diff
    calls) and the rest (Python work)."""
    import pstats

    files = sorted(prof_dir.glob("program-*.prof")) if prof_dir.exists() else []
    if not files:
        return {}
    st = pstats.Stats(str(files[0]))
    total = wait = imports = 0.0
    for (fname, _line, func), (_cc, _nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        total += tt
        if func == "<method 'poll' of 'select.epoll' objects>":
            wait += tt
        if "importlib._bootstrap" in fname and func == "_find_and_load":
            imports = max(imports, ct)
    return {"total_s": total, "engine_wait_s": wait, "imports_s": imports}


def _short(path: str) -> str:
    for marker in ("site-packages/", "dbfleet-bench-code-"):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker.startswith("dbfleet-bench") else tail
    return os.path.basename(path)


def secrets_manager_cost(ctx: Ctx, fe: FleetEnv, stack: str) -> dict:
    """`pulumi stack export` of a stack with and without --show-secrets: the difference is
    building the passphrase decrypter (PBKDF2, 1,000,000 rounds of SHA-256), which every
    StackReference to a stack with its own salt pays again."""
    plain, shown = [], []
    for _ in range(max(3, ctx.plan.runs)):
        plain.append(fe.pulumi("stack", "export", "-s", stack).seconds)
        shown.append(fe.pulumi("stack", "export", "--show-secrets", "-s", stack).seconds)
    return {
        "stack": stack,
        "export": Summary.of(plain),
        "export_show_secrets": Summary.of(shown),
        "decrypter_s": median(shown) - median(plain),
    }


def import_costs(fe: FleetEnv, runs: int = 3) -> dict:
    """Interpreter start-up + imports of the empty program vs dbfleet's program."""
    py = fe.env.get("PYTHON", "python3")
    code = {
        "python": "pass",
        "import pulumi": "import pulumi",
        "import dbfleet.program.main": "import pulumi, dbfleet.program.main",
        "import pulumi.dynamic": "import pulumi, pulumi.dynamic",
        "pip list (GetRequiredPlugins)": None,
    }
    out: dict = {}
    for name, src in code.items():
        argv = (
            [py, "-m", "pip", "list", "-v", "--format", "json"] if src is None else [py, "-c", src]
        )
        out[name] = Summary.of(
            procs.run(argv, env=fe.env, cwd=fe.project).seconds for _ in range(runs)
        )
    t = procs.run(
        [py, "-X", "importtime", "-c", "import pulumi, dbfleet.program.main"],
        env=fe.env,
        cwd=fe.project,
    )
    out["importtime"] = top_imports(t.stderr)
    return out


IMPORT_PACKAGES = (
    "pulumi",
    "grpc",
    "google.protobuf",
    "dbfleet.program.main",
    "hvac",
    "requests",
    "pydantic",
    "yaml",
    "dbfleet.model.spec",
    "dbfleet.vault",
    "dbfleet.program.layers.replicas",
)


def top_imports(text: str, packages: tuple[str, ...] = IMPORT_PACKAGES) -> list[dict]:
    """`python -X importtime` output → seconds to import each of `packages` the first time
    (cumulative: with everything it imported that was not loaded yet)."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("import time:") or line.count("|") < 2:
            continue
        _self, cum, name = line[len("import time:") :].split("|", 2)
        name = name.strip()
        if name in packages and name not in found:
            try:
                found[name] = int(cum.strip()) / 1e6
            except ValueError:
                continue
    return [{"package": k, "seconds": found[k]} for k in packages if k in found]


REFS_PROGRAM = """import os
import pulumi

for name in filter(None, os.environ.get("BENCH_REFS", "").split(",")):
    pulumi.export(name, pulumi.StackReference(name).outputs)
"""


def salt_experiment(ctx: Ctx, fe: FleetEnv, refs: int = 3) -> dict:
    """Does a StackReference cost one passphrase key derivation per referenced stack?

    A program reading `refs` StackReferences is previewed (a) when every stack has its
    own encryption salt (what a plain `pulumi stack init` does) and (b) when every
    stack shares one salt (what dbfleet's stacks do; the engine caches a passphrase
    secrets manager per salt), and (c) reading nothing, as the zero point.
    """
    ctx.say("engine floor: StackReference / salt experiment")
    project = fe.root / "refs"
    project.mkdir(exist_ok=True)
    (project / "Pulumi.yaml").write_text("name: benchrefs\nruntime:\n  name: python\n")
    (project / "__main__.py").write_text(REFS_PROGRAM)

    def init(stack: str, salt_from: str | None = None) -> None:
        if salt_from is not None:
            salt = [
                ln
                for ln in (project / f"Pulumi.{salt_from}.yaml").read_text().splitlines()
                if ln.startswith("encryptionsalt:")
            ]
            (project / f"Pulumi.{stack}.yaml").write_text("\n".join(salt) + "\n")
        fe.pulumi("stack", "init", stack, cwd=project)

    env = fe.env
    env["BENCH_REFS"] = ""
    distinct = [f"d{i}" for i in range(refs)]
    shared = [f"s{i}" for i in range(refs)]
    for st in distinct:
        init(st)
    init("s0")
    for st in shared[1:]:
        init(st, salt_from="s0")
    init("rd")
    init("rs", salt_from="s0")
    init("r0")
    for st in [*distinct, *shared, "rd", "rs", "r0"]:
        fe.pulumi("up", "--yes", "--skip-preview", "-s", st, cwd=project, env=env)
    variants = {
        "own salt per stack": ("rd", distinct),
        "one shared salt": ("rs", shared),
        "no reference": ("r0", []),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(max(3, ctx.plan.runs)):
        for name, (reader, targets) in variants.items():
            e = dict(env, BENCH_REFS=",".join(targets))
            times[name].append(fe.pulumi("preview", "-s", reader, cwd=project, env=e).seconds)
    out = {"refs": refs, "previews": {k: Summary.of(v) for k, v in times.items()}}
    zero = median(times["no reference"])
    out["per_ref_own_salt_s"] = (median(times["own salt per stack"]) - zero) / refs
    out["per_ref_shared_salt_s"] = (median(times["one shared salt"]) - zero) / refs
    return out


def policy_cost(ctx: Ctx, fe: FleetEnv, stack: str, pack: Path) -> dict:
    """A no-change preview of `stack` with and without the policy pack, interleaved."""
    ctx.say(f"engine floor: policy pack cost on {stack}")
    plain, packed = [], []
    for _ in range(max(3, ctx.plan.runs)):
        plain.append(_preview(fe, stack).seconds)
        packed.append(_preview(fe, stack, extra=("--policy-pack", str(pack))).seconds)
    return {
        "stack": stack,
        "without": Summary.of(plain),
        "with": Summary.of(packed),
        "added_s": median(packed) - median(plain),
    }


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 1 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(eng: Mapping) -> bool | None:
    stacks = eng.get("stacks") or {}
    if not stacks:
        return None
    return all(med(s["ratio"]) <= eng.get("goal_ratio", GOAL_RATIO) for s in stacks.values())


def summary_rows(eng: Mapping) -> list[list[str]]:
    if not eng.get("stacks"):
        return []
    worst = max(eng["stacks"].items(), key=lambda kv: med(kv[1]["ratio"]))
    best = min(eng["stacks"].items(), key=lambda kv: med(kv[1]["ratio"]))
    return [
        [
            "1. Engine floor: no-change `pulumi preview` per stack ÷ empty program",
            f"≤ {eng.get('goal_ratio', GOAL_RATIO)}× every stack",
            f"{best[0]} {fmt_ratio(best[1]['ratio'])} … {worst[0]} {fmt_ratio(worst[1]['ratio'])}",
            f"empty program {fmt(eng.get('empty'))}",
            verdict(ok(eng)),
        ]
    ]


def section(eng: Mapping) -> str:
    if not eng:
        return ""
    if eng.get("error"):
        return f"## 1. Engine floor\n\nFailed: {eng['error']}"
    goal = eng.get("goal_ratio", GOAL_RATIO)
    rows = [["empty program (`import pulumi`)", fmt(eng.get("empty"), "s", 2), "1×", ""]]
    for stack, s in eng.get("stacks", {}).items():
        rows.append(
            [
                f"`{stack}`",
                fmt(s["summary"], "s", 2),
                fmt_ratio(s["ratio"]),
                verdict(med(s["ratio"]) <= goal),
            ]
        )
    parts = [
        "## 1. Engine floor",
        "",
        figure_meta(eng),
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
        parts += ["", _profile_section(eng, prof)]
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
                f"{python_launches(t)}: {python_launch_seconds(t):.2f}" if t["launches"] else "0"
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


def _profile_section(eng: Mapping, prof: Mapping) -> str:
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
    facts = _measured_alongside(prof, names)
    if facts:
        parts += ["", "Measured alongside:", "", *facts]
    added = _added_over_empty(prof)
    if added:
        parts += [
            "",
            (
                "What a dbfleet stack adds on top of the empty program in these profiled runs "
                "(every stack, the `-eu` ones included):"
            ),
            "",
            *added,
        ]
    return "\n".join(parts)


def _measured_alongside(prof: Mapping, names: list[str]) -> list[str]:
    imp = prof.get("imports") or {}
    sm = prof.get("secrets_manager") or {}
    salt = prof.get("salt_experiment") or {}
    pol = prof.get("policy_pack") or {}
    top = prof.get("program_top") or {}
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
            f"building the decrypter costs ≈ {sm.get('decrypter_s', math.nan):.2f} s."
        )
    if salt:
        pv = salt.get("previews") or {}
        facts.append(
            f"- **StackReference experiment** (a program reading {salt.get('refs')} stacks, "
            "bench/fig_engine.py `salt_experiment`): preview "
            + "; ".join(f"{k}: {fmt(v, 's', 2)}" for k, v in pv.items())
            + f". Each reference costs ≈ {salt.get('per_ref_own_salt_s', math.nan):.2f} s when every stack "
            f"has its own salt and ≈ {max(0.0, salt.get('per_ref_shared_salt_s', math.nan)):.2f} s when they "
            "share one."
        )
    if pol:
        facts.append(
            f"- **Policy pack** (what `dbfleet preview` adds by default): `pulumi preview -s {pol.get('stack')}` "
            f"{fmt(pol.get('without'), 's', 2)} without it, {fmt(pol.get('with'), 's', 2)} with "
            f"`--policy-pack policies` (≈ {pol.get('added_s', math.nan):+.2f} s)."
        )
    heavy = next((n for n in names[::-1] if top.get(n)), None)
    if heavy:
        facts.append(
            "- **dbfleet's own code in the program under cProfile** (heaviest by cumulative time, `"
            + heavy
            + "`; waiting on the engine counts): "
            + "; ".join(f"`{r['function']}` {r['cumulative_s']:.2f} s" for r in top[heavy][:6])
            + "."
        )
    return facts


def python_launches(tl: Mapping) -> int:
    """How often the dynamic provider host was started (results before the count was
    kept recorded one launch per plugin name)."""
    counts = tl.get("launch_counts")
    if counts is None:
        return sum(1 for k in tl.get("launches", {}) if "python" in k)
    return sum(v for k, v in counts.items() if "python" in k)


def python_launch_seconds(tl: Mapping) -> float:
    """Seconds spent starting the dynamic provider host, all its launches together."""
    return sum(v for k, v in tl.get("launches", {}).items() if "python" in k)


def _added_over_empty(prof: Mapping) -> list[str]:
    """What the profiled stacks add to the empty program's run: ranges over the stacks,
    and the split of the stack that adds most."""
    tls = prof.get("timelines") or {}
    empty = tls.get("empty") or {}
    extra = [
        (name, tl.get("wall", 0) - empty.get("wall", 0), tl)
        for name, tl in tls.items()
        if name != "empty"
    ]
    if not empty or not extra:
        return []
    refs = [len(tl["stack_refs"]) for _, _, tl in extra]
    ref_s = [tl["stack_ref_seconds"] for _, _, tl in extra if tl["stack_refs"]]
    launch = [python_launch_seconds(tl) for _, _, tl in extra if tl["launches"]]
    n_launch = [python_launches(tl) for _, _, tl in extra if tl["launches"]]
    chk = [s for n, s in (prof.get("scripts") or {}).items() if n != "empty" and s.get("count")]
    start_extra = [tl["program_start"] - empty.get("program_start", 0) for _, _, tl in extra]
    lines = [
        f"- **StackReference reads:** {min(refs)}–{max(refs)} per stack"
        + (f", {min(ref_s):.2f}–{max(ref_s):.2f} s in all." if ref_s else ".")
    ]
    if launch or chk:
        lines.append(
            "- **The dynamic provider:** "
            + (
                f"{min(launch):.2f}–{max(launch):.2f} s to start the `pulumi-python` provider host "
                f"in every stack that has a HostScript, {max(n_launch)} time(s) per preview. "
                if launch
                else ""
            )
            + (
                f"Its `check` scripts ran {min(s['count'] for s in chk)}–{max(s['count'] for s in chk)} "
                f"per stack, {max(s['total_s'] for s in chk):.2f} s at most in all."
                if chk
                else ""
            )
        )
    lines.append(
        f"- **Program start:** {min(start_extra):+.1f} to {max(start_extra):+.1f} s later than the "
        "empty program's."
    )
    split = prof.get("program_split") or {}
    without = [v["engine_wait_s"] for n, v in split.items() if n.startswith("networks") and v]
    with_ = [
        v["engine_wait_s"]
        for n, v in split.items()
        if n != "empty" and not n.startswith("networks") and v
    ]
    if without and with_:
        lines.append(
            f"- **Waiting for the engine** (cProfile): a program whose stack has no HostScript "
            f"(`networks`) waits {max(without):.2f} s, one with HostScripts "
            f"{min(with_):.2f}–{max(with_):.2f} s."
        )
    name, gap, tl = max(extra, key=lambda e: e[1])
    if gap > 0:
        items = [
            ("program imports and start-up", tl["program_start"] - empty.get("program_start", 0)),
            ("StackReference reads", tl["stack_ref_seconds"]),
            ("dynamic provider start", python_launch_seconds(tl)),
            ("Diff calls with their check scripts", tl["diff_span"]),
        ]
        rest = gap - sum(v for _, v in items)
        text = (
            f"- **The stack that adds most,** `{name}` (profiled run: {tl['wall']:.1f} s against "
            f"{empty['wall']:.1f} s): the {gap:.1f} s it adds split into "
            + ", ".join(f"{label} {v:.2f} s ({v / gap * 100:.0f} %)" for label, v in items)
            + f", and {rest:.2f} s of everything else (registering resources, reading Vault, the "
            "engine's steps)."
        )
        own = split.get(name) or {}
        if own.get("total_s"):
            py = own["total_s"] - own["engine_wait_s"] - own["imports_s"]
            text += (
                f" Under cProfile its program ran {own['total_s']:.2f} s: "
                f"{own['imports_s']:.2f} s importing modules (the SDK's own included), "
                f"{own['engine_wait_s']:.2f} s waiting for the engine and "
                f"{max(0.0, py):.2f} s of Python work."
            )
        label, biggest = max(items, key=lambda p: p[1])
        text += f" The largest item is the {label} ({biggest / gap * 100:.0f} % of what the stack adds)."
        lines.append(text)
    return lines
