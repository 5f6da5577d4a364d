"""Machine details for the report: cores, memory, CPU, load, tool versions."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mem_total_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        text = (out.stdout or out.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except (OSError, subprocess.TimeoutExpired):
        return "not found"


def busy_processes(limit: int = 5) -> list[str]:
    """The processes using the most CPU right now (what else is running)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,comm", "--sort=-pcpu", "--no-headers"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [" ".join(line.split()) for line in out[:limit]]


def describe(pg_bin: str) -> dict:
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model(),
        "mem_gib": round(mem_total_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pulumi": _version(["pulumi", "version"]),
        "postgres": _version([f"{pg_bin}/postgres", "--version"]),
        "haproxy": _version(["haproxy", "-v"]),
        "pgbench": _version([f"{pg_bin}/pgbench", "--version"]),
    }


class LoadLog:
    """Load average at named moments of a run (the machine is shared)."""

    def __init__(self) -> None:
        self.marks: list[dict] = []

    def mark(self, what: str) -> tuple[float, float, float]:
        la = loadavg()
        self.marks.append({"what": what, "time": time.time(), "load": [round(x, 2) for x in la]})
        return la

    def to_json(self) -> list[dict]:
        return list(self.marks)
