"""What a preview (or an update) changes, read from the Pulumi engine's events.

The engine reports every step as a `ResourcePreEvent` carrying the resource's old
and new inputs; the stack's planned outputs arrive as a `ResOutputsEvent` of the
`pulumi:pulumi:Stack` resource. `ChangeCollector` turns that stream into plain data:
one `ResourceChange` per resource that changes, each with its property-level
differences, and the differences of the stack's outputs.

Secrets never come out of here in plaintext: the engine already replaces secret
values by a marker object, which this module renders as ``[secret]``; values only
known after apply render as ``(known after apply)``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pulumi.automation import events

SECRET = "[secret]"
UNKNOWN = "(known after apply)"

# Signatures of the engine's special property values (pulumi/sdk resource/properties.go).
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
ASSET_SIG = "c44067f5952c0a294b673a41bacd8c17"
ARCHIVE_SIG = "0def7320c3a5731c473e5ecbe6d01bc7"
RESOURCE_REF_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
SIG_KEY = "4dabf18193072939515e22adb298388d"
UNKNOWN_SENTINEL = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

STACK_TYPE = "pulumi:pulumi:Stack"
# Steps that change nothing: the resource is kept, or a StackReference is read.
NO_CHANGE_OPS = frozenset(
    {"same", "read", "refresh", "discard", "discard-replaced", "remove-pending-replace"}
)
REPLACE_OPS = frozenset(
    {"replace", "create-replacement", "delete-replaced", "read-replacement", "import-replacement"}
)
# How tables, reports and progress lines mark an operation.
SYMBOL = {"create": "+", "update": "~", "replace": "+-", "delete": "-", "import": "="}
# Engine-internal inputs that say nothing to a reviewer.
HIDDEN_INPUTS = frozenset({"__provider", "__defaults"})

# The order in which a report lists operations: what destroys data comes first.
OP_ORDER = ("delete", "replace", "create", "update", "import")


def is_secret(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get(SIG_KEY) == SECRET_SIG


def mask(value: Any) -> Any:
    """A value as a reviewer may see it: secrets, unknowns and assets replaced by markers."""
    if isinstance(value, Mapping):
        sig = value.get(SIG_KEY)
        if sig == SECRET_SIG:
            return SECRET
        if sig in (ASSET_SIG, ARCHIVE_SIG):
            return "[asset " + str(value.get("hash") or value.get("path") or "")[:16] + "]"
        if sig == RESOURCE_REF_SIG:
            return f"[resource {value.get('urn', '')}]"
        return {str(k): mask(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    if isinstance(value, str) and UNKNOWN_SENTINEL in value:
        return value.replace(UNKNOWN_SENTINEL, UNKNOWN)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and UNKNOWN in value


@dataclass(frozen=True)
class PropertyChange:
    """One property that differs. `path` is dotted (`environment.READ_PORT`, `nodes[0]`)."""

    path: str
    kind: str  # add | delete | update
    old: Any = None
    new: Any = None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def diff_values(old: Any, new: Any, path: str = "") -> list[PropertyChange]:
    """Differences between two masked values, down to the leaves that differ."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out: list[PropertyChange] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = _join(path, str(key))
            if key not in new:
                out.append(PropertyChange(sub, "delete", old[key], None))
            elif key not in old:
                out.append(PropertyChange(sub, "add", None, new[key]))
            else:
                out += diff_values(old[key], new[key], sub)
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out += diff_values(a, b, f"{path}[{i}]")
        return out
    if old == new:
        return []
    return [PropertyChange(path, "update", old, new)]


def leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every leaf of nested mappings (lists stay whole: one line each)."""
    if isinstance(value, Mapping) and value:
        out: list[tuple[str, Any]] = []
        for key in sorted(value, key=str):
            out += leaves(value[key], _join(path, str(key)))
        return out
    if not path and isinstance(value, Mapping):
        return []  # nothing at all (a component has no inputs)
    return [(path, value)]


def urn_name(urn: str) -> str:
    return urn.rsplit("::", 1)[-1]


def urn_type(urn: str) -> str:
    parts = urn.split("::")
    return parts[2].rsplit("$", 1)[-1] if len(parts) >= 4 else ""


@dataclass
class ResourceChange:
    """One resource that a preview plans to change (or an update changed)."""

    urn: str
    name: str
    type: str
    op: str  # create | update | replace | delete | import
    replace_keys: list[str] = field(default_factory=list)
    diffs: list[PropertyChange] = field(default_factory=list)
    # An update with no input difference: the resource's provider saw the real
    # thing differ from its state (for HostScript: the `check` action found drift).
    drift: bool = False
    detail: str = ""  # e.g. the host script a HostScript runs

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.detail})" if self.detail else self.name


def _describe(type_: str, inputs: Mapping[str, Any] | None) -> str:
    # A dynamic resource's type says nothing; the host script it runs says what it is.
    if (
        type_ == "pulumi-python:dynamic:Resource"
        and inputs
        and isinstance(inputs.get("script"), str)
    ):
        return f"HostScript {inputs['script']}"
    return type_


def _inputs(state: events.StepEventStateMetadata | None) -> dict[str, Any]:
    if state is None or not state.inputs:
        return {}
    return {k: mask(v) for k, v in state.inputs.items() if k not in HIDDEN_INPUTS}


@dataclass
class PolicyViolation:
    policy: str
    pack: str
    level: str  # advisory | mandatory | disabled
    message: str
    resource: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ChangeCollector:
    """Feed it engine events (`on_event`); read `resources`, `outputs` and friends.

    Safe to feed from the Automation API's event thread while another thread reads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changes: dict[str, ResourceChange] = {}
        self._stack_old: dict[str, Any] | None = None
        self._stack_new: dict[str, Any] | None = None
        self._stack_new_raw: dict[str, Any] | None = None
        self.policy: list[PolicyViolation] = []
        self.errors: list[str] = []
        self.failed_resources: list[str] = []
        self.summary: dict[str, int] | None = None

    # -- events ------------------------------------------------------------------
    def __call__(self, event: events.EngineEvent) -> None:
        with self._lock:
            if event.resource_pre_event is not None:
                self._step(event.resource_pre_event.metadata)
            elif event.res_outputs_event is not None:
                self._outputs(event.res_outputs_event.metadata)
            elif event.res_op_failed_event is not None:
                self.failed_resources.append(urn_name(event.res_op_failed_event.metadata.urn))
            elif event.diagnostic_event is not None:
                diag = event.diagnostic_event
                if diag.severity == "error" and diag.message.strip():
                    where = f"{urn_name(diag.urn)}: " if diag.urn else ""
                    self.errors.append(where + diag.message.strip())
            elif event.policy_event is not None:
                p = event.policy_event
                self.policy.append(
                    PolicyViolation(
                        p.policy_name,
                        p.policy_pack_name,
                        p.enforcement_level,
                        p.message.strip(),
                        urn_name(p.resource_urn or ""),
                    )
                )
            elif event.summary_event is not None:
                self.summary = dict(event.summary_event.resource_changes or {})

    def _step(self, meta: events.StepEventMetadata) -> None:
        op = meta.op.value if hasattr(meta.op, "value") else str(meta.op)
        if meta.type == STACK_TYPE:
            if meta.old is not None and self._stack_old is None:
                self._stack_old = dict(meta.old.outputs or {})
            return
        if op in NO_CHANGE_OPS:
            return
        op = "replace" if op in REPLACE_OPS else op
        old_in, new_in = _inputs(meta.old), _inputs(meta.new)
        change = self._changes.get(meta.urn)
        if change is None:
            type_ = meta.type or urn_type(meta.urn)
            change = ResourceChange(
                meta.urn,
                urn_name(meta.urn),
                type_,
                op,
                detail=_describe(
                    type_, (meta.new or meta.old).inputs if (meta.new or meta.old) else None
                ),
            )
            self._changes[meta.urn] = change
        elif op == "replace":
            change.op = "replace"
        if meta.keys and change.op == "replace":
            change.replace_keys = sorted(set(change.replace_keys) | set(meta.keys))
        if change.op in ("update", "replace") and meta.old is not None and meta.new is not None:
            change.diffs = diff_values(old_in, new_in)
            change.drift = change.op == "update" and not change.diffs
        elif change.op == "create":
            change.diffs = [PropertyChange(p, "add", None, v) for p, v in leaves(new_in)]
        elif change.op == "delete":
            change.diffs = [PropertyChange(p, "delete", v, None) for p, v in leaves(old_in)]

    def _outputs(self, meta: events.StepEventMetadata) -> None:
        if meta.type != STACK_TYPE or meta.new is None:
            return
        if meta.old is not None and self._stack_old is None:
            self._stack_old = dict(meta.old.outputs or {})
        # The last outputs event of the stack carries what the program exported.
        self._stack_new_raw = dict(meta.new.outputs or {})
        self._stack_new = self._stack_new_raw

    # -- results -----------------------------------------------------------------
    @property
    def resources(self) -> list[ResourceChange]:
        with self._lock:
            items = list(self._changes.values())
        rank = {op: i for i, op in enumerate(OP_ORDER)}
        return sorted(items, key=lambda c: (rank.get(c.op, len(rank)), c.name))

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.resources:
            out[c.op] = out.get(c.op, 0) + 1
        return out

    @property
    def planned_outputs(self) -> dict[str, Any] | None:
        """The stack's outputs as the program exported them (raw event values)."""
        with self._lock:
            return None if self._stack_new_raw is None else dict(self._stack_new_raw)

    @property
    def old_outputs(self) -> dict[str, Any] | None:
        with self._lock:
            return None if self._stack_old is None else dict(self._stack_old)

    def output_changes(self) -> list[PropertyChange]:
        """Differences of the stack's outputs. A value only known after apply is not
        counted as a change where an old value exists (it usually stays the same)."""
        with self._lock:
            old, new = self._stack_old, self._stack_new
        if new is None:
            return []
        changes = diff_values(mask(old or {}), mask(new))
        return [c for c in changes if not (c.kind == "update" and is_unknown(c.new))]


def merge_planned(deployed: Any, planned: Any) -> Any:
    """The outputs a downstream stack should see once `planned` is applied.

    `planned` comes from a preview: values only known after apply are the engine's
    unknown sentinel, and secrets are markers without their value. Where the deployed
    outputs hold a value at the same place it is kept (an update keeps a node's port,
    and a secret keeps its encrypted value); otherwise the value becomes the text
    ``(known after apply)`` (or ``[secret]``).
    """
    if is_secret(planned) or (isinstance(planned, str) and UNKNOWN_SENTINEL in planned):
        if deployed is not None:
            return deployed
        # The engine's unknown sentinel would make a StackReference's whole `outputs`
        # unknown; a readable placeholder keeps the rest of the plan visible.
        return SECRET if is_secret(planned) else planned.replace(UNKNOWN_SENTINEL, UNKNOWN)
    if isinstance(planned, Mapping):
        base = deployed if isinstance(deployed, Mapping) and not is_secret(deployed) else {}
        return {k: merge_planned(base.get(k), v) for k, v in planned.items()}
    if isinstance(planned, list):
        base_list = deployed if isinstance(deployed, list) else []
        return [
            merge_planned(base_list[i] if i < len(base_list) else None, v)
            for i, v in enumerate(planned)
        ]
    return planned


def outputs_differ(deployed: Mapping[str, Any] | None, planned: Mapping[str, Any] | None) -> bool:
    """Whether a downstream stack would read different outputs after the change."""
    if planned is None:
        return False
    return mask(merge_planned(dict(deployed or {}), dict(planned))) != mask(dict(deployed or {}))


def count_text(counts: Mapping[str, int]) -> str:
    rank = {op: i for i, op in enumerate(OP_ORDER)}
    items = sorted(
        ((k, v) for k, v in counts.items() if v), key=lambda kv: (rank.get(kv[0], 99), kv[0])
    )
    return ", ".join(f"{k} {v}" for k, v in items)


def flatten(changes: Iterable[ResourceChange]) -> list[tuple[str, str]]:
    """(op, name) pairs — what a test or a summary line needs."""
    return [(c.op, c.name) for c in changes]
