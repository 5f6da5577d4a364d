"""PrimaryFence: makes sure a region group never runs two primaries.

Declared before the group's primary node, it shuts down cleanly any node that
runs as a primary but is declared a replica. When a group's primary moves —
a planned switchover or `dbfleet failover` — this is the step that stops the old
primary (which first ships all of its WAL to the standbys) before the new one is
promoted; on every preview its read-only check reports a split brain as drift.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:fence:PrimaryFence"


@dataclass(frozen=True)
class PrimaryFenceArgs:
    connection: Connection
    run_as: str
    primary_node_dir: str
    replica_node_dirs: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.primary_node_dir in self.replica_node_dirs:
            raise ValueError(
                f"{self.primary_node_dir} cannot be both the primary and a fenced replica"
            )


class PrimaryFence(pulumi.ComponentResource):
    summary: pulumi.Output[str]

    def __init__(
        self, name: str, args: PrimaryFenceArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        fence = HostScript(
            f"{name}-fence",
            connection=args.connection,
            script="pg_fence.sh",
            environment={
                "RUN_AS": args.run_as,
                "PRIMARY_NODE": args.primary_node_dir,
                "FENCED_NODES": " ".join(args.replica_node_dirs),
            },
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.summary = fence.summary
        self.register_outputs({"summary": self.summary})
