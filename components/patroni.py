"""PatroniNode and GroupLeader: a region group's PostgreSQL nodes, run by Patroni.

Patroni (Debian's 3.0.2) runs every node: it bootstraps the group's first node,
clones the others, keeps replication slots, promotes a replica when the leader's
lock in the group's etcd expires, demotes a leader cut off from etcd, and rewinds
a former leader when it comes back. dbfleet declares and verifies:

- `PatroniNode`: one node's Patroni configuration and process (`patroni.sh`);
- `GroupLeader`: the group as a whole (`patroni_leader.sh`): the dynamic
  configuration (timings, durability, PostgreSQL settings every node shares), the
  leader the fleet file prefers (a switchover when it is not the live one), and the
  roles and database on the leader.

Timings: `ttl` 10 s, `loop_wait` 2 s, `retry_timeout` 4 s (Patroni needs
loop_wait + 2 x retry_timeout <= ttl). A leader that dies leaves its lock for at
most ttl, so a replica is promoted within about ttl + loop_wait; a leader that
cannot reach etcd demotes itself within retry_timeout + loop_wait, before its lock
expires elsewhere (docs/high-availability.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import pulumi

from components.hostcmd import Connection, HostScript
from components.tls import TlsFiles, ca_environment

NODE_TYPE = "dbfleet:patroni:PatroniNode"
LEADER_TYPE = "dbfleet:patroni:GroupLeader"
# The node component of dbfleet before Patroni.
PRE_PATRONI_NODE_TYPE = "dbfleet:postgres:PostgresNode"

TTL_S = 10
LOOP_WAIT_S = 2
RETRY_TIMEOUT_S = 4

# Settings every node of a group shares (a hot standby refuses to run with
# max_wal_senders lower than its primary's), kept by Patroni in etcd.
MAX_WAL_SENDERS = 16
MAX_REPLICATION_SLOTS = 16
WAL_KEEP_SIZE = "256MB"
SUPERUSER_RESERVED_CONNECTIONS = 3
# Replicas do not hold back VACUUM on the primary (no bloat from long reports);
# a query on a replica that conflicts with replay is cancelled after this long,
# so replay never waits longer (docs/high-availability.md, "Long queries on replicas").
HOT_STANDBY_FEEDBACK = "off"
MAX_STANDBY_STREAMING_DELAY = "30s"


# With continuous archiving, a quiet leader still hands its current WAL segment to
# the backup repository after this long: at most this much of committed work exists
# only in the group (docs/backups.md).
ARCHIVE_TIMEOUT = "60s"


def dcs_config(
    durability: Literal["async", "sync"],
    max_lag_on_failover: int,
    max_connections: int,
    archive_command: str | None = None,
) -> dict:
    """The group's dynamic configuration (Patroni keeps it in etcd). `archive_command`:
    continuous archiving (components/backup.py) from whichever node leads — it is in
    the dynamic configuration, so it follows every failover and switchover."""
    config = {
        "ttl": TTL_S,
        "loop_wait": LOOP_WAIT_S,
        "retry_timeout": RETRY_TIMEOUT_S,
        "maximum_lag_on_failover": max_lag_on_failover,
        "synchronous_mode": durability == "sync",
        # Without etcd quorum the leader keeps writes only while it reaches every
        # other member's REST API (none of them can have been promoted), instead
        # of demoting itself: losing etcd alone then costs no outage.
        "failsafe_mode": True,
        "postgresql": {
            "use_pg_rewind": True,
            "use_slots": True,
            "parameters": {
                "max_connections": max_connections,
                "superuser_reserved_connections": SUPERUSER_RESERVED_CONNECTIONS,
                "wal_level": "replica",
                "wal_log_hints": "on",
                "hot_standby": "on",
                "max_wal_senders": MAX_WAL_SENDERS,
                "max_replication_slots": MAX_REPLICATION_SLOTS,
                "wal_keep_size": WAL_KEEP_SIZE,
                "hot_standby_feedback": HOT_STANDBY_FEEDBACK,
                "max_standby_streaming_delay": MAX_STANDBY_STREAMING_DELAY,
            },
        },
    }
    if archive_command:
        config["postgresql"]["parameters"].update(
            {
                "archive_mode": "on",
                "archive_command": archive_command,
                "archive_timeout": ARCHIVE_TIMEOUT,
            }
        )
    return config


def member_name(region: str, k: int) -> str:
    """A node's name in its group's Patroni cluster (and etcd): `fra-0`."""
    return f"{region}-{k}"


def password_environment(passwords: pulumi.Output[dict[str, str]]) -> pulumi.Output[dict[str, str]]:
    """Maps the group's Vault secrets to the variables the host scripts read."""
    return pulumi.Output.secret(passwords).apply(
        lambda p: {
            "PG_SUPERUSER_PASSWORD": p["superuser_password"],
            "PG_REPLICATION_PASSWORD": p["replication_password"],
            "PG_APP_PASSWORD": p["app_password"],
        }
    )


@dataclass(frozen=True)
class PatroniNodeArgs:
    connection: Connection
    run_as: str
    node_dir: str
    member: str
    scope: str
    host: str
    port: int
    rest_port: int
    etcd_hosts: tuple[str, ...]
    allowed_hosts: tuple[str, ...]
    dcs: dict
    # superuser_password, replication_password, app_password — as a secret Output.
    passwords: pulumi.Output[dict[str, str]]
    # The node's certificate from its group's CA, its key, and the CA.
    tls: TlsFiles | None = None
    # The fleet the node belongs to: its directory's marker names it.
    fleet: str = ""

    def __post_init__(self) -> None:
        if self.tls is None:
            raise ValueError(f"node {self.member}: no TLS certificate (PostgreSQL takes TLS only)")
        for name, port in (("port", self.port), ("rest_port", self.rest_port)):
            if not 1024 <= port <= 65535:
                raise ValueError(f"{name} {port} is outside 1024..65535")
        if not self.node_dir.startswith("/"):
            raise ValueError(f"node directory must be an absolute path, got {self.node_dir!r}")
        if not self.etcd_hosts:
            raise ValueError(f"node {self.member}: Patroni needs at least one etcd member")

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "NODE_DIR": self.node_dir,
            "PG_HOST": self.host,
            "PG_PORT": str(self.port),
            "REST_PORT": str(self.rest_port),
            "MEMBER_NAME": self.member,
            "SCOPE": self.scope,
            "ETCD_HOSTS": " ".join(self.etcd_hosts),
            "ALLOWED_HOSTS": " ".join(self.allowed_hosts),
            "DCS_CONFIG": json.dumps(self.dcs, sort_keys=True),
            **(self.tls.environment() if self.tls else {}),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        if self.connection.kind == "ssh":
            env["TARGET"] = "ssh"  # listen on the host's own address, not loopback
        return env

    def secret_environment(self) -> pulumi.Output[dict[str, str]]:
        """The passwords and the node's certificate and key (TLS_CERT, TLS_KEY)."""
        tls = self.tls.secret_environment() if self.tls else pulumi.Output.from_input({})
        return pulumi.Output.secret(
            pulumi.Output.all(password_environment(self.passwords), tls).apply(
                lambda parts: {**parts[0], **parts[1]}
            )
        )


class PatroniNode(pulumi.ComponentResource):
    host: pulumi.Output[str]
    port: pulumi.Output[int]
    rest_port: pulumi.Output[int]

    def __init__(
        self, name: str, args: PatroniNodeArgs, opts: pulumi.ResourceOptions | None = None
    ):
        # A node deployed before Patroni (a PostgresNode running pg_primary.sh or
        # pg_replica.sh) is this resource: the alias keeps its identity, so the
        # upgrade is an update of the same data directory, never a delete.
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(aliases=[pulumi.Alias(type_=PRE_PATRONI_NODE_TYPE)])
        )
        super().__init__(NODE_TYPE, name, None, opts)
        server = HostScript(
            f"{name}-server",
            connection=args.connection,
            script="patroni.sh",
            environment=args.environment(),
            secret_environment=args.secret_environment(),
            # A node's data directory is its identity: moving it is a replacement.
            replace_on_env=["NODE_DIR", "RUN_AS"],
            check_drift=True,
            timeout_s=900,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.host = server.summary.apply(lambda _: args.host)
        self.port = server.summary.apply(lambda _: args.port)
        self.rest_port = server.summary.apply(lambda _: args.rest_port)
        self.register_outputs({"host": self.host, "port": self.port, "rest_port": self.rest_port})


@dataclass(frozen=True)
class GroupLeaderArgs:
    connection: Connection
    run_as: str
    scope: str
    # member name -> (host, PostgreSQL port, REST port)
    members: dict[str, tuple[str, int, int]]
    preferred: str
    dcs: dict
    passwords: pulumi.Output[dict[str, str]]
    # The group's CA (PEM): every call to a member's REST API (HTTPS) verifies it.
    ca: str = ""
    app_db: str = "app"
    app_user: str = "app"

    def __post_init__(self) -> None:
        if self.preferred not in self.members:
            raise ValueError(f"preferred leader {self.preferred} is not a member of {self.scope}")
        if not self.ca.strip():
            raise ValueError(f"{self.scope}: no CA to verify the members' REST APIs (HTTPS) with")

    def environment(self) -> dict[str, str]:
        return {
            "RUN_AS": self.run_as,
            "SCOPE": self.scope,
            "MEMBERS": " ".join(
                f"{name}={host}:{port}:{rest}" for name, (host, port, rest) in self.members.items()
            ),
            "PREFERRED": self.preferred,
            "DCS_CONFIG": json.dumps(self.dcs, sort_keys=True),
            "APP_DB": self.app_db,
            "APP_USER": self.app_user,
            **ca_environment(self.ca),
        }


class GroupLeader(pulumi.ComponentResource):
    summary: pulumi.Output[str]

    def __init__(
        self, name: str, args: GroupLeaderArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(LEADER_TYPE, name, None, opts)
        leader = HostScript(
            f"{name}-leader",
            connection=args.connection,
            script="patroni_leader.sh",
            environment=args.environment(),
            secret_environment=password_environment(args.passwords),
            # Asked on every preview: a failover (the live leader is not the
            # preferred one) or changed dynamic configuration plans an update.
            check_drift=True,
            timeout_s=900,  # a switchover, then restarts applying the configuration
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.summary = leader.summary
        self.register_outputs({"summary": self.summary})
