"""Pure statistics for the benchmarks: summaries, percentiles, ratios, a line fit.

No engine, no I/O: everything here is unit-tested in tests/unit/test_bench*.py.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default, "type 7"); NaN for no values."""
    xs = sorted(float(v) for v in values)
    if not xs:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    return percentile(values, 50)


@dataclass(frozen=True)
class Summary:
    """Median with min–max of repeated measurements of one figure."""

    median: float
    lo: float
    hi: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Summary:
        xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
        if not xs:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(median(xs), min(xs), max(xs), len(xs))

    @classmethod
    def from_json(cls, doc: dict) -> Summary:
        return cls(doc["median"], doc["min"], doc["max"], doc["n"])

    def to_json(self) -> dict:
        return {"median": self.median, "min": self.lo, "max": self.hi, "n": self.n}

    @property
    def spread(self) -> float:
        """(max − min) / median: how noisy the runs were."""
        return (self.hi - self.lo) / self.median if self.median else math.nan


def ratio(value: float, baseline: float) -> float:
    """value / baseline; NaN when the baseline is missing or zero."""
    if baseline is None or value is None or baseline == 0 or math.isnan(baseline):
        return math.nan
    return value / baseline


def paired_ratios(values: Sequence[float], baselines: Sequence[float]) -> Summary:
    """Ratios of measurements taken in pairs (run i of the figure against run i of its
    baseline, back to back), summarised: the median of per-pair ratios is robust to
    load that drifts between pairs."""
    if len(values) != len(baselines):
        raise ValueError("paired ratios need as many baselines as values")
    return Summary.of(ratio(v, b) for v, b in zip(values, baselines, strict=True))


@dataclass(frozen=True)
class LineFit:
    """Least-squares line y = intercept + slope·x, with its coefficient of
    determination (r²) and the largest relative residual."""

    slope: float
    intercept: float
    r2: float
    max_rel_residual: float
    n: int

    def at(self, x: float) -> float:
        return self.intercept + self.slope * x

    def to_json(self) -> dict:
        return {
            "slope": self.slope,
            "intercept": self.intercept,
            "r2": self.r2,
            "max_rel_residual": self.max_rel_residual,
            "n": self.n,
        }


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> LineFit:
    """Ordinary least squares through (x, y) points (at least two distinct x)."""
    if len(xs) != len(ys):
        raise ValueError("fit_line needs as many x as y")
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if not math.isnan(float(y))]
    n = len(pts)
    if n < 2 or len({x for x, _ in pts}) < 2:
        raise ValueError("fit_line needs at least two points with distinct x")
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    sxy = sum((x - mx) * (y - my) for x, y in pts)
    slope = sxy / sxx
    intercept = my - slope * mx
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in pts)
    ss_tot = sum((y - my) ** 2 for _, y in pts)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    rel = [abs(y - (intercept + slope * x)) / abs(y) for x, y in pts if y]
    return LineFit(slope, intercept, r2, max(rel) if rel else 0.0, n)


def growth_exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """The slope of log y against log x: about 1 for linear growth (with no fixed
    cost), 2 for quadratic. With a large fixed cost it reads below 1, so it is an
    upper-bound check for "no worse than linear", not a fit."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if x > 0 and y > 0]
    if len(pts) < 2:
        return math.nan
    return fit_line([p[0] for p in pts], [p[1] for p in pts]).slope


def incremental_slopes(xs: Sequence[float], ys: Sequence[float]) -> list[float]:
    """The cost per added unit between consecutive points (sorted by x); a linear
    series has roughly equal increments, a super-linear one growing increments."""
    pts = sorted(zip(xs, ys, strict=True))
    return [(y2 - y1) / (x2 - x1) for (x1, y1), (x2, y2) in itertools.pairwise(pts) if x2 != x1]
