"""What every layer is given: the parsed stack name, the fleet, and where each
host script runs (the host connections of the group's target)."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.hostcmd import LOCAL, Connection
from dbfleet.model.spec import FleetSpec, GroupSpec
from dbfleet.model.stackname import StackName

# Where a group's data root lives on the hosts of the ssh target.
SSH_DATA_DIR = "/var/lib/dbfleet"


@dataclass(frozen=True)
class LayerContext:
    stack: StackName
    fleet: FleetSpec
    home: Path
    # ssh target: the login (private key, pinned host keys) from Vault, a secret
    # Output; None on the local target.
    ssh_login: Any = None

    @property
    def group_name(self) -> str:
        return self.stack.group

    @property
    def group(self) -> GroupSpec:
        return self.fleet.groups[self.stack.group]

    @property
    def target(self) -> str:
        return self.fleet.group_target(self.stack.group)

    @property
    def connection(self) -> Connection:
        """The local target's one connection (every host script runs here)."""
        return LOCAL

    def node_connection(self, region: str, k: int) -> Connection:
        """Where node `k` of `region` runs; node 0's host also runs the region's proxy."""
        if self.target != "ssh":
            return LOCAL
        ssh = self.fleet.ssh
        assert ssh is not None  # the fleet file's rules require it for ssh groups
        host = (self.group.regions[region].hosts or [])[k]
        return Connection(
            kind="ssh",
            host=host.address,
            port=host.port,
            user=ssh.user,
            proxy=ssh.proxy,
            dial_error_limit=ssh.dial_error_limit,
            per_dial_timeout_s=ssh.per_dial_timeout_s,
            credentials=self.ssh_login,
        )

    def hosts(self) -> list[tuple[str, int]]:
        """(region, node index) of every host of the group, in the file's order."""
        return [(r, k) for r, spec in self.group.regions.items() for k in range(spec.nodes)]

    def account_user(self) -> str:
        """The group's OS user: its own system user as root (and always on the ssh
        target, which logs in as root or with sudo), else the current user
        (PostgreSQL refuses to run as root, and only root can create users)."""
        if self.target == "ssh" or os.geteuid() == 0:
            return f"{self.fleet.name}-{self.stack.group}"
        return pwd.getpwuid(os.geteuid()).pw_name

    def data_root(self) -> str:
        if self.target == "ssh":
            return f"{SSH_DATA_DIR}/{self.fleet.name}-{self.stack.group}"
        return str(self.home / "data" / f"{self.fleet.name}-{self.stack.group}")
