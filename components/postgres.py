"""PostgresNode: one PostgreSQL 15 instance of a region group.

A node is either the group's primary (initdb, scram-sha-256, pg_hba open only to
the group's addresses, WAL settings and one physical slot per replica) or a
streaming replica (pg_basebackup from the primary through its own slot).

The role is an input, not the resource's type: when a group's primary moves, the
same node resource is updated from replica to primary (promotion) or the other
way round (rewind and follow), so no data directory is ever replaced for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:postgres:PostgresNode"

SCRIPTS = {"primary": "pg_primary.sh", "replica": "pg_replica.sh"}


@dataclass(frozen=True)
class PostgresNodeArgs:
    connection: Connection
    role: Literal["primary", "replica"]
    run_as: str
    node_dir: str
    host: str
    port: int
    allowed_hosts: tuple[str, ...]
    # superuser_password, replication_password, app_password — as a secret Output.
    passwords: pulumi.Output[dict[str, str]]
    # For the primary: the slots of every replica. For a replica: its primary and slot.
    replica_slots: tuple[str, ...] = ()
    primary_host: str | None = None
    primary_port: int | None = None
    slot: str | None = None
    app_db: str = "app"
    app_user: str = "app"
    # The fleet the node belongs to: its directory's marker names it, and only
    # that fleet's scripts reuse or delete the directory. "" marks no fleet (as
    # before fleets were named; the accounts layer's data root still does).
    fleet: str = ""

    def __post_init__(self) -> None:
        if self.role not in SCRIPTS:
            raise ValueError(f"role must be primary or replica, got {self.role!r}")
        if self.role == "replica" and not (self.primary_host and self.primary_port and self.slot):
            raise ValueError("a replica needs primary_host, primary_port and slot")
        if not 1024 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is outside 1024..65535")
        if not self.node_dir.startswith("/"):
            raise ValueError(f"node directory must be an absolute path, got {self.node_dir!r}")

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "NODE_DIR": self.node_dir,
            "PG_HOST": self.host,
            "PG_PORT": str(self.port),
            "ALLOWED_HOSTS": " ".join(self.allowed_hosts),
            "APP_DB": self.app_db,
            "APP_USER": self.app_user,
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        if self.role == "primary":
            env["REPLICA_SLOTS"] = " ".join(self.replica_slots)
        else:
            env.update(
                PRIMARY_HOST=str(self.primary_host),
                PRIMARY_PORT=str(self.primary_port),
                SLOT=str(self.slot),
            )
        return env


def password_environment(passwords: pulumi.Output[dict[str, str]]) -> pulumi.Output[dict[str, str]]:
    """Maps the group's Vault secrets to the variables the host scripts read."""
    return pulumi.Output.secret(passwords).apply(
        lambda p: {
            "PG_SUPERUSER_PASSWORD": p["superuser_password"],
            "PG_REPLICATION_PASSWORD": p["replication_password"],
            "PG_APP_PASSWORD": p["app_password"],
        }
    )


class PostgresNode(pulumi.ComponentResource):
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    role: pulumi.Output[str]

    def __init__(
        self, name: str, args: PostgresNodeArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        server = HostScript(
            f"{name}-server",
            connection=args.connection,
            script=SCRIPTS[args.role],
            environment=args.environment(),
            secret_environment=password_environment(args.passwords),
            # A node's data directory is its identity: moving it is a replacement.
            replace_on_env=["NODE_DIR", "RUN_AS"],
            check_drift=True,
            timeout_s=600,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.host = server.summary.apply(lambda _: args.host)
        self.port = server.summary.apply(lambda _: args.port)
        self.role = server.summary.apply(lambda _: args.role)
        self.register_outputs({"host": self.host, "port": self.port, "role": self.role})
