"""Ordered rollouts across a fleet's stacks, on the Pulumi Automation API.

Layers of one group run in dependency order (reverse for destroy) and a group
stops at its first failed stack; different groups run in parallel.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pulumi import automation as auto

from dbfleet.stackname import LAYERS

PROJECT_DIR_ENV = "DBFLEET_PROJECT_DIR"


def project_dir() -> Path:
    """The directory holding Pulumi.yaml (tests run a copy of the project)."""
    return Path(os.environ.get(PROJECT_DIR_ENV) or Path(__file__).resolve().parent.parent)


@dataclass
class StackResult:
    stack: str
    status: str  # applied | unchanged | failed | not started | destroyed | previewed
    seconds: float = 0.0
    changes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    outputs: dict = field(default_factory=dict)


Printer = Callable[[str, str], None]  # (stack, line)


def _quiet(_stack: str, _line: str) -> None:
    pass


def select(stack: str) -> auto.Stack:
    return auto.create_or_select_stack(stack_name=stack, work_dir=str(project_dir()))


def _error_text(exc: Exception) -> str:
    text = getattr(exc, "stderr", "") or str(exc)
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # The engine's own summary lines ("error: ...") say what went wrong.
    errors = [ln.strip() for ln in lines if "error:" in ln]
    return "\n".join(errors[-6:] or lines[-6:])


def _changes(summary: dict | None) -> dict[str, int]:
    # "read"/"discard" are StackReferences being read or dropped, not changes.
    return {k: v for k, v in (summary or {}).items() if k not in ("same", "read", "discard") and v}


def _run_group(
    group: str, layers: Iterable[str], action: str, printer: Printer
) -> list[StackResult]:
    results: list[StackResult] = []
    failed = False
    for layer in layers:
        name = f"{layer}-{group}"
        if failed:
            results.append(StackResult(name, "not started"))
            continue
        t0 = time.monotonic()

        def out(line: str, _name: str = name) -> None:
            printer(_name, line.rstrip("\n"))

        try:
            stack = select(name)
            if action == "up":
                res = stack.up(on_output=out, color="never")
                changes = _changes(res.summary.resource_changes)
                results.append(
                    StackResult(
                        name,
                        "applied" if changes else "unchanged",
                        time.monotonic() - t0,
                        changes,
                        outputs={k: ("[secret]" if v.secret else v.value) for k, v in res.outputs.items()},
                    )
                )
            elif action == "destroy":
                res = stack.destroy(on_output=out, color="never")
                results.append(
                    StackResult(name, "destroyed", time.monotonic() - t0, _changes(res.summary.resource_changes))
                )
            else:
                raise ValueError(f"unknown action {action}")
        except Exception as exc:  # noqa: BLE001 — every failure becomes a reported result
            failed = True
            results.append(StackResult(name, "failed", time.monotonic() - t0, error=_error_text(exc)))
    return results


def run(
    groups: list[str],
    action: str,
    *,
    layers: list[str] | None = None,
    printer: Printer = _quiet,
) -> dict[str, list[StackResult]]:
    chosen = [layer for layer in LAYERS if layers is None or layer in layers]
    if action == "destroy":
        chosen.reverse()
    lock = threading.Lock()

    def locked(stack: str, line: str) -> None:
        with lock:
            printer(stack, line)

    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        futures = {g: pool.submit(_run_group, g, chosen, action, locked) for g in groups}
        return {g: f.result() for g, f in futures.items()}


def outputs(stack: str) -> dict:
    """A deployed stack's outputs, secrets included (for the CLI's own use)."""
    return {k: v.value for k, v in select(stack).outputs().items()}
