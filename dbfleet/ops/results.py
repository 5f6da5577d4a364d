"""What a rollout ends with: each stack's `StackResult` and its `Status`, and the
operator tool's exit codes.

Both the rollout (which makes results) and the displays and reports (which show
them) import this module, so neither has to import the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, Any

from dbfleet.model.stackname import parse_stack_name

# Only for annotations: `changes` imports the Automation API, and `dbfleet validate`
# and `--help` (which use the exit codes) must start without it.
if TYPE_CHECKING:
    from dbfleet.ops.changes import PolicyViolation, PropertyChange, ResourceChange


class Status(StrEnum):
    """How one stack ended. A StrEnum, so JSON documents and tables show its value."""

    # applying (up / destroy)
    APPLIED = "applied"
    UNCHANGED = "unchanged"
    DESTROYED = "destroyed"
    ABSENT = "absent"  # destroy: nothing was deployed
    # previewing
    CHANGES = "changes"
    NO_CHANGES = "no changes"
    PENDING = "pending"  # waits for an upstream stack that is not deployed yet
    ORPHANED = "orphaned"  # deployed, but its group is no longer in the fleet file
    # any action
    FAILED = "failed"
    BLOCKED = "blocked"  # not attempted: an upstream is missing or a downstream still deployed
    NOT_STARTED = "not started"  # an earlier stack of the group failed


ERROR_STATUSES = frozenset({Status.FAILED, Status.BLOCKED})


class ExitCode(IntEnum):
    """The exit codes of `dbfleet` commands (README: "Exit codes")."""

    OK = 0
    ERROR = 1  # anything failed or was blocked; a usage error of preview; the fleet cannot be read
    CHANGES = 2  # preview: changes pending, and no error
    DEGRADED = 3  # status: something down or not in its declared role
    INTERRUPTED = 130  # Ctrl-C, as a shell reports SIGINT


@dataclass
class StackResult:
    stack: str
    status: Status
    seconds: float = 0.0
    changes: dict[str, int] = field(default_factory=dict)
    error: str = ""
    outputs: dict = field(default_factory=dict)
    resources: list[ResourceChange] = field(default_factory=list)
    output_changes: list[PropertyChange] = field(default_factory=list)
    policy: list[PolicyViolation] = field(default_factory=list)
    note: str = ""
    started: float = 0.0  # wall clock (time.time()), 0 when it never started
    finished: float = 0.0

    @property
    def group(self) -> str:
        return parse_stack_name(self.stack).group

    @property
    def layer(self) -> str:
        return parse_stack_name(self.stack).layer

    @property
    def has_changes(self) -> bool:
        return (
            bool(self.changes)
            or bool(self.output_changes)
            or self.status in (Status.PENDING, Status.ORPHANED)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "stack": self.stack,
            "group": self.group,
            "layer": self.layer,
            "status": str(self.status),
            "seconds": round(self.seconds, 2),
            "started": self.started or None,
            "finished": self.finished or None,
            "changes": dict(self.changes),
            "resources": [r.to_json() for r in self.resources],
            "output_changes": [vars(c) for c in self.output_changes],
            "policy": [p.to_json() for p in self.policy],
            "note": self.note,
            "error": self.error,
        }
