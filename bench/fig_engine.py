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
import os
import shutil
from pathlib import Path

from bench import procs, timeline
from bench.context import Ctx
from bench.fleetenv import FleetEnv
from bench.floor import LAYERS, ensure_floor_stack, preview_floor
from bench.stats import Summary, median

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
