"""What every layer is given: the parsed stack name, the fleet and the host connection."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from components.hostcmd import LOCAL, Connection
from dbfleet.model.spec import FleetSpec, GroupSpec
from dbfleet.model.stackname import StackName


@dataclass(frozen=True)
class LayerContext:
    stack: StackName
    fleet: FleetSpec
    home: Path

    @property
    def group_name(self) -> str:
        return self.stack.group

    @property
    def group(self) -> GroupSpec:
        return self.fleet.groups[self.stack.group]

    @property
    def connection(self) -> Connection:
        return LOCAL

    def account_user(self) -> str:
        """The group's OS user: its own system user as root, else the current user
        (PostgreSQL refuses to run as root, and only root can create users)."""
        if os.geteuid() == 0:
            return f"{self.fleet.name}-{self.stack.group}"
        return pwd.getpwuid(os.geteuid()).pw_name

    def data_root(self) -> str:
        return str(self.home / "data" / f"{self.fleet.name}-{self.stack.group}")
