"""Reads an earlier layer's outputs through a pulumi.StackReference.

The values are awaited while the program is being declared, so a layer can plan
with plain data and fail early, with a message naming the stack and the output,
when the layer it builds on is not deployed yet.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime.sync_await import _sync_await


class UpstreamError(pulumi.RunError):
    pass


_REFS: dict[tuple[str, str], pulumi.StackReference] = {}


def forget_references() -> None:
    """Called at the start of a program run: references belong to one run."""
    _REFS.clear()


def stack_reference(stack: str) -> pulumi.StackReference:
    """One StackReference per stack and program run (a second one would clash on its URN)."""
    key = (pulumi.get_stack(), stack)
    if key not in _REFS:
        _REFS[key] = pulumi.StackReference(stack)
    return _REFS[key]


def prefetch(*stacks: str) -> None:
    """Starts reading every stack a layer needs at once: the engine serves the reads in
    parallel, and `read_outputs` then waits for each one (instead of one after the other)."""
    for stack in stacks:
        stack_reference(stack)


def read_outputs(stack: str, required: tuple[str, ...]) -> dict[str, Any]:
    """All outputs of `stack`, checking that every name in `required` is present."""
    ref = stack_reference(stack)
    try:
        outputs = _sync_await(ref.outputs.future()) or {}
    except Exception as exc:  # noqa: BLE001 — the engine reports a missing stack as a failed read
        raise UpstreamError(
            f"stack {stack} is not deployed yet ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
            f"deploy it first: pulumi up -s {stack}  (or: dbfleet up)"
        ) from None
    missing = [name for name in required if name not in outputs]
    if missing:
        raise UpstreamError(
            f"stack {stack} has no output {', '.join(missing)}: it is not deployed yet or was deployed "
            f"by an older dbfleet; run: pulumi up -s {stack}"
        )
    return _ints(outputs)


def require_regions(stack: str, outputs: dict[str, Any], key: str, wanted) -> None:
    """Every region of the fleet file must be in the upstream stack's `key` output:
    a region added to the file reaches a layer only after its upstream layers."""
    missing = [r for r in wanted if r not in (outputs.get(key) or {})]
    if missing:
        raise UpstreamError(
            f"region(s) {', '.join(missing)} of the fleet file are not in {stack}'s `{key}` yet: "
            f"bring that stack up first: pulumi up -s {stack}  (or: dbfleet up)"
        )


def _ints(value: Any) -> Any:
    """Stack outputs travel as JSON numbers: give whole numbers back their int type."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value
