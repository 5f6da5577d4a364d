"""GroupAccount: a region group's isolation boundary on a host.

Creates the group's OS user (when running as root) and its data root, owned by
that user with mode 0700. Every database and proxy of the group runs as this
user and keeps its files under this root.

Both are marked with the fleet's name, and account.sh takes over or removes only
what its own fleet marked: fleets on one host may have groups of the same name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:account:GroupAccount"


FLEET_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class GroupAccountArgs:
    connection: Connection
    # The fleet the account belongs to (`name:` of the fleet file): the owner
    # its user and data root are marked with.
    fleet: str
    user: str
    data_root: str

    def __post_init__(self) -> None:
        if not FLEET_NAME.match(self.fleet):
            raise ValueError(f"fleet name {self.fleet!r} is not a DNS label")
        if not self.data_root.startswith("/"):
            raise ValueError(f"data root must be an absolute path, got {self.data_root!r}")
        if not self.user or len(self.user) > 32:
            raise ValueError(f"OS user name {self.user!r} must be 1 to 32 characters")


class GroupAccount(pulumi.ComponentResource):
    user: pulumi.Output[str]
    data_root: pulumi.Output[str]

    def __init__(
        self, name: str, args: GroupAccountArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        # The user and the root are the identity of everything the group runs:
        # changing either is a replacement, never an in-place edit. FLEET_NAME
        # is not: giving it to an account deployed without it is an update,
        # which re-marks the user and the root for this fleet.
        account = HostScript(
            f"{name}-account",
            connection=args.connection,
            script="account.sh",
            environment={
                "ACCOUNT_USER": args.user,
                "DATA_ROOT": args.data_root,
                "FLEET_NAME": args.fleet,
            },
            replace_on_env=["ACCOUNT_USER", "DATA_ROOT"],
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.user = account.summary.apply(lambda _: args.user)
        self.data_root = account.summary.apply(lambda _: args.data_root)
        self.register_outputs({"user": self.user, "data_root": self.data_root})
