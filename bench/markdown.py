"""Formatting shared by every figure's rendering: summaries, ratios, verdicts and tables
as Markdown (plain values in, strings out; no I/O)."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any


def num(v: Any) -> float:
    """`v` as a float; NaN when it is missing or not a number."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def has_value(v: Any) -> bool:
    return not math.isnan(num(v))


def med(summary: Mapping | None) -> float:
    """The median of a `bench.stats.Summary` as JSON; NaN when there is none."""
    return num((summary or {}).get("median"))


def fmt(summary: Mapping | None, unit: str = "s", digits: int = 1) -> str:
    """`12.3 s (11.9–13.0)`; one run: `12.3 s (1 run)`; nothing: `–`."""
    if not summary or not summary.get("n") or not has_value(summary.get("median")):
        return "–"
    sp = " " if unit and unit not in ("×", "%") else ""
    median = f"{summary['median']:.{digits}f}{sp}{unit}"
    if summary["n"] == 1:
        return f"{median} (1 run)"
    return f"{median} ({summary['min']:.{digits}f}–{summary['max']:.{digits}f})"


def fmt_ratio(summary: Mapping | None, digits: int = 2) -> str:
    return fmt(summary, "×", digits)


def scaled(summary: Mapping | None, factor: float) -> dict | None:
    """A summary with its median, min and max multiplied (seconds → ms, bytes → KiB)."""
    if not summary:
        return None
    return {**summary, **{k: num(summary.get(k)) * factor for k in ("median", "min", "max")}}


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "–"
    return "met" if ok else "**missed**"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def when(ts: float | None) -> str:
    if not ts:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


def load_average(la) -> str:
    return " / ".join(f"{x:.2f}" for x in la) if la else "?"


def figure_meta(fig: Mapping) -> str:
    """The italic line under a figure's heading: when, how long, the load around it."""
    meta = fig.get("_meta") or {}
    if not meta:
        return ""
    return (
        f"*Measured {when(meta.get('started'))} in {meta.get('seconds', 0) / 60:.1f} min; load average "
        f"{load_average(meta.get('load_start'))} at the start, {load_average(meta.get('load_end'))} at the end.*"
    )
