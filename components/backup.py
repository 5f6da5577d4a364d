"""GroupBackups: a region group's pgBackRest stanza, encrypted repository and backup scheduler.

One HostScript (`pgbackrest.sh`) per group, on the local target, declares everything
under `<data root>/pgbackrest` (owned by the group's OS user, 0700):

- `pgbackrest.conf` (0600): the repository `repo/` encrypted with aes-256-cbc (its
  passphrase comes from Vault, through the script's secret environment, and lands only
  in this file), retention, async archiving (`spool/`), and every node of the group as
  `pgN-path` — pgBackRest finds the leader among them by itself, so a backup runs on
  whichever node leads;
- the stanza `<fleet>-<group>`, created (and checked with `pgbackrest check`, which
  proves that the leader's archive_command reaches the repository) when missing;
- the scheduler: a small process per group (`scheduler.sh`, detached, as the group's
  user) that takes a backup whenever the newest one is older than the schedule — a full
  one when the newest full is older than `full_every_days`, else a differential — and
  whose absence is drift, like a stopped etcd member.

The archive command itself is not this component's: it is in the group's Patroni
dynamic configuration (components/patroni.py `dcs_config`), built by
`archive_command()` here, so it follows failovers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:backup:GroupBackups"
SCRIPT = "pgbackrest.sh"
_STANZA = re.compile(r"^[a-z0-9][a-z0-9-]{0,127}$")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")


def stanza_name(fleet: str, group: str) -> str:
    """A group's stanza: its Patroni scope, `<fleet>-<group>`."""
    return f"{fleet}-{group}"


def backup_dir(data_root: str) -> str:
    """Where a group's repository, configuration and scheduler live: its data root."""
    return f"{data_root}/pgbackrest"


def config_path(data_root: str) -> str:
    return f"{backup_dir(data_root)}/pgbackrest.conf"


def archive_command(data_root: str, stanza: str) -> str:
    """The archive_command of every node of the group. PostgreSQL runs it through
    the shell in the node's data directory, so `$PWD` names the node that archives
    (pgBackRest reads the WAL to push from its pg1-path); the configuration file
    holds everything else, the passphrase included, so nothing secret is here."""
    return (
        f"pgbackrest --config={config_path(data_root)} --stanza={stanza} "
        '--pg1-path="$PWD" archive-push %p'
    )


@dataclass(frozen=True)
class Node:
    """A node as pgBackRest reaches it: data directory, port, socket directory."""

    path: str
    port: int
    socket_dir: str


@dataclass(frozen=True)
class GroupBackupsArgs:
    connection: Connection
    run_as: str
    data_root: str
    stanza: str
    # every node of the group, the preferred leader first
    nodes: tuple[Node, ...]
    schedule_hours: int
    full_every_days: int
    full_keep: int
    # superuser_password and backup_passphrase (Vault), as a secret Output.
    secrets: pulumi.Output[dict[str, str]]
    fleet: str = ""

    def __post_init__(self) -> None:
        if self.connection.kind != "local":
            # spec.py refuses backup: on the ssh target; this is the last line of defence.
            raise ValueError("backups run on the local target only (docs/backups.md)")
        if not _STANZA.match(self.stanza):
            raise ValueError(f"stanza {self.stanza!r} is not a stanza name")
        paths = [self.data_root, *(n.path for n in self.nodes), *(n.socket_dir for n in self.nodes)]
        for path in paths:
            if not _SAFE_PATH.match(path) or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not an absolute, plain path")
        if not self.nodes:
            raise ValueError(f"stanza {self.stanza} has no nodes")
        for name, value, low, high in (
            ("schedule_hours", self.schedule_hours, 1, 168),
            ("full_every_days", self.full_every_days, 1, 90),
            ("full_keep", self.full_keep, 1, 50),
        ):
            if not low <= value <= high:
                raise ValueError(f"{name} {value} is outside {low}..{high}")

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "BACKUP_DIR": backup_dir(self.data_root),
            "DATA_ROOT": self.data_root,
            "STANZA": self.stanza,
            "NODES": " ".join(f"{n.path}:{n.port}:{n.socket_dir}" for n in self.nodes),
            "SCHEDULE_HOURS": str(self.schedule_hours),
            "FULL_EVERY_DAYS": str(self.full_every_days),
            "FULL_KEEP": str(self.full_keep),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        return env


def secret_environment(secrets: pulumi.Output[dict[str, str]]) -> pulumi.Output[dict[str, str]]:
    """The group's Vault secrets as the variables pgbackrest.sh reads."""
    return pulumi.Output.secret(secrets).apply(
        lambda s: {
            "PG_SUPERUSER_PASSWORD": s["superuser_password"],
            "PG_BACKUP_PASSPHRASE": s["backup_passphrase"],
        }
    )


class GroupBackups(pulumi.ComponentResource):
    summary: pulumi.Output[str]

    def __init__(
        self, name: str, args: GroupBackupsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        script = HostScript(
            f"{name}-stanza",
            connection=args.connection,
            script=SCRIPT,
            environment=args.environment(),
            secret_environment=secret_environment(args.secrets),
            # Another repository is another set of backups: never an in-place edit.
            replace_on_env=["BACKUP_DIR", "STANZA", "RUN_AS"],
            # Asked on every preview: a stopped scheduler or a broken stanza plans an update.
            check_drift=True,
            timeout_s=600,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.summary = script.summary
        self.register_outputs({"summary": self.summary})
