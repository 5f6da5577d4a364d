"""What one benchmark run needs: how many repetitions, where to write, what is measured."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.machine import LoadLog
from bench.snapshot import Snapshot

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
PG_BIN = "/usr/lib/postgresql/15/bin"

FIGURES = ("unit", "converge", "engine", "proxy", "lag", "tls", "scale")
OPTIONAL_FIGURES = ("maketest",)  # only with --only


@dataclass(frozen=True)
class Plan:
    """Repetitions of each figure. `full` is what `make bench` runs; `quick` is for
    iterating on the benchmarks themselves (numbers from it are not reported)."""

    name: str
    runs: int  # repetitions of cheap figures (previews, unit suite, proxy/lag runs)
    converge_runs: int  # fleets brought up from nothing (and destroyed)
    scale_points: tuple[int, ...]
    scale_up_runs: int  # `up` from nothing per scale point (the expensive part)
    scale_preview_runs: int
    proxy_queries: int  # queries per measured block (one block = one run)
    lag_seconds: int  # pgbench duration per run
    lag_rate: int  # writes/s under test
    lag_baseline_rate: int  # writes/s of the light-load baseline
    lag_baseline_seconds: int

    def to_json(self) -> dict:
        return asdict(self)


FULL = Plan(
    name="full",
    runs=5,
    converge_runs=5,
    scale_points=(3, 6, 9, 12),
    scale_up_runs=1,
    scale_preview_runs=5,
    proxy_queries=2000,
    lag_seconds=30,
    lag_rate=200,
    lag_baseline_rate=10,
    lag_baseline_seconds=15,
)
QUICK = Plan(
    name="quick",
    runs=2,
    converge_runs=1,
    scale_points=(3, 6),
    scale_up_runs=1,
    scale_preview_runs=2,
    proxy_queries=300,
    lag_seconds=8,
    lag_rate=200,
    lag_baseline_rate=10,
    lag_baseline_seconds=5,
)


@dataclass
class Ctx:
    plan: Plan
    snapshot: Snapshot
    out: Path
    keep: bool = False
    profile: bool = True
    load: LoadLog = field(default_factory=LoadLog)
    results: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def logs(self) -> Path:
        return self.out / "logs"

    @property
    def code(self) -> Path:
        return self.snapshot.path

    def say(self, text: str) -> None:
        elapsed = time.time() - self.started
        print(f"[bench {elapsed:6.0f}s] {text}", file=sys.stderr, flush=True)

    def save(self) -> Path:
        """results.json after every figure, so a failed run keeps what it measured."""
        self.out.mkdir(parents=True, exist_ok=True)
        path = self.out / "results.json"
        path.write_text(json.dumps(self.results, indent=1, default=_json_default))
        return path


def _json_default(obj):
    if hasattr(obj, "to_json"):
        return obj.to_json()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
