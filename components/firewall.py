"""HostFirewall: a region group's nftables rules on one host of the ssh target.

Owned by the networks layer: on real machines, who may reach which port is the
network's business. The group's node and stats ports admit only the group's own
hosts (and the fleet file's operators); its proxy's read and write ports also the
clients the fleet file names. One table per group (`inet <table>`), replaced in
one transaction, so a group never touches another group's or fleet's rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:firewall:HostFirewall"

_TABLE = re.compile(r"^[a-z][a-z0-9_]{0,40}$")


def table_name(fleet: str, group: str) -> str:
    """nftables table of a group: `dbfleet_<fleet>_<group>` (hyphens become _)."""
    return f"dbfleet_{fleet}_{group}".replace("-", "_")


@dataclass(frozen=True)
class HostFirewallArgs:
    connection: Connection
    table: str
    host: str
    node_ports: tuple[int, ...]
    stats_port: int | None
    client_ports: tuple[int, ...]
    group_sources: tuple[str, ...]
    client_sources: tuple[str, ...] = ()
    operator_sources: tuple[str, ...] = ()
    # sshd address:port of the group's other hosts: each must answer from here
    peers: tuple[str, ...] = ()
    # pgBackRest's TLS server (a group with backups, docs/backups.md): the group's
    # own hosts only, not even the operators (nothing outside the group speaks to it)
    backup_port: int | None = None

    def __post_init__(self) -> None:
        if not _TABLE.match(self.table):
            raise ValueError(f"firewall table {self.table!r} is not an nftables name")
        if self.host not in self.group_sources:
            raise ValueError(f"firewall of {self.host}: the host is not one of its group's sources")

    def environment(self) -> dict[str, str]:
        return {
            "FW_TABLE": self.table,
            "HOST_ADDRESS": self.host,
            "NODE_PORTS": " ".join(map(str, self.node_ports)),
            "STATS_PORT": "" if self.stats_port is None else str(self.stats_port),
            "CLIENT_PORTS": " ".join(map(str, self.client_ports)),
            "GROUP_SOURCES": " ".join(self.group_sources),
            "CLIENT_SOURCES": " ".join(self.client_sources),
            "OPERATOR_SOURCES": " ".join(self.operator_sources),
            "PEERS": " ".join(self.peers),
            # only when set: a group without backups keeps the environment it had
            **({} if self.backup_port is None else {"BACKUP_PORT": str(self.backup_port)}),
        }


class HostFirewall(pulumi.ComponentResource):
    summary: pulumi.Output[str]

    def __init__(
        self, name: str, args: HostFirewallArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        rules = HostScript(
            f"{name}-firewall",
            connection=args.connection,
            script="firewall.sh",
            environment=args.environment(),
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.summary = rules.summary
        self.register_outputs({"summary": self.summary})
