"""One figure run by itself (`python -m bench.fig_NAME`): the same snapshot, context,
load marks and `_meta` as `python -m bench --only NAME`, its result put into
results.json under NAME (the other figures kept) and its section printed."""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable, Mapping

from bench import machine, snapshot
from bench.context import FULL, OUT_DIR, PG_BIN, QUICK, Ctx, _json_default


def main(
    name: str,
    run: Callable[[Ctx], dict],
    section: Callable[[Mapping], str],
    argv: list[str] | None = None,
    doc: str | None = None,
) -> int:
    """`python -m bench.fig_NAME [--quick] [--worktree] [--keep]`: its result replaces
    NAME in results.json (bench/out/, or bench/out/quick/); exit 1 when it failed."""
    p = argparse.ArgumentParser(prog=f"python -m bench.fig_{name}", description=doc)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worktree", action="store_true")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args(argv)
    out = OUT_DIR / "quick" if args.quick else OUT_DIR
    snap = snapshot.take(worktree=args.worktree)
    ctx = Ctx(plan=QUICK if args.quick else FULL, snapshot=snap, out=out, keep=args.keep)
    results_file = out / "results.json"
    ctx.results = json.loads(results_file.read_text()) if results_file.exists() else {}
    ctx.results.setdefault("meta", {"machine": machine.describe(PG_BIN)})
    load_start = ctx.load.mark(f"{name} start")
    t0 = time.time()
    try:
        res = run(ctx)
    except Exception as exc:  # noqa: BLE001 — the failure is the figure's result
        res = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}
    finally:
        if not ctx.keep:
            snap.remove()
    res["_meta"] = {
        "commit": snap.commit,
        "source": snap.source,
        "started": t0,
        "seconds": time.time() - t0,
        "load_start": [round(x, 2) for x in load_start],
        "load_end": [round(x, 2) for x in ctx.load.mark(f"{name} end")],
        "plan": ctx.plan.name,
    }
    ctx.results[name] = json.loads(json.dumps(res, default=_json_default))
    ctx.save()
    print(section(ctx.results[name]))
    return 1 if "error" in res else 0
