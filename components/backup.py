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

On the ssh target (`HostBackups`, one per host of the group) the repository is on one
host of the group (the fleet file's `backup.repo_region`, its hosts[0]) and pgBackRest
crosses hosts through its own TLS server (`pgbackrest server`) on every host of the
group, with a certificate per host from the group's PKI (`BackupCertificate`, Vault
role `pgbackrest`: server and client use, the host's address as its name). Each
server admits, by certificate name, only the group's other end: the repository host
every node host, a node host only the repository host (`tls-server-auth`, for the
group's stanza only). Everything of a host is in `<data root>/pgbackrest/<region>-<k>`
(the lab's hosts share one filesystem; real hosts would not need the subdirectory).
What survives a reboot there is cron's: one root-owned file per host (`cron_file`)
that starts the TLS server after a reboot and whenever it stopped, and on the
repository host runs the scheduler's check (`scheduler.sh DIR once`) every few minutes
— no scheduler process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript
from components.tls import CERTIFICATE_OUTPUTS, TlsFiles, _needs_new_certificate, renew_after

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


def host_backup_dir(data_root: str, node: str) -> str:
    """The ssh target: one host's configuration, TLS files, queue (and, on the repository
    host, the repository) — per node directory name `<region>-<k>`, since the lab's hosts
    share one filesystem."""
    return f"{backup_dir(data_root)}/{node}"


CRON_DIR = "/etc/cron.d"


def cron_file(stanza: str, node: str) -> str:
    """The ssh target's cron file of one host of a group (pgbackrest.sh writes it):
    the stanza names fleet and group, `node` (`<region>-<k>`) the host, so the lab's
    hosts, which share one /etc/cron.d, never write the same file."""
    return f"{CRON_DIR}/dbfleet-{stanza}-{node}"


def host_config_path(data_root: str) -> str:
    """The ssh target's configuration path as the archive command names it: `${d##*/}`
    is the archiving node's directory name (`d` is its data directory's parent)."""
    return f"{backup_dir(data_root)}/${{d##*/}}/pgbackrest.conf"


def archive_command(data_root: str, stanza: str, per_host: bool = False) -> str:
    """The archive_command of every node of the group. PostgreSQL runs it through
    the shell in the node's data directory, so `$PWD` names the node that archives
    (pgBackRest reads the WAL to push from its pg1-path); the configuration file
    holds everything else, the passphrase included, so nothing secret is here."""
    if per_host:
        # The same command on every host (it is the group's dynamic configuration); each
        # host's configuration is in the node's own subdirectory. `%/` is not one of
        # PostgreSQL's archive_command escapes, so it reaches the shell as written.
        return (
            f'd="${{PWD%/pgdata}}"; pgbackrest --config={host_config_path(data_root)} '
            f'--stanza={stanza} --pg1-path="$PWD" archive-push %p'
        )
    return (
        f"pgbackrest --config={config_path(data_root)} --stanza={stanza} "
        '--pg1-path="$PWD" archive-push %p'
    )


def check_schedule(schedule_hours: int, full_every_days: int, full_keep: int) -> None:
    """The schedule and retention within what the fleet file allows (spec.py)."""
    for name, value, low, high in (
        ("schedule_hours", schedule_hours, 1, 168),
        ("full_every_days", full_every_days, 1, 90),
        ("full_keep", full_keep, 1, 50),
    ):
        if not low <= value <= high:
            raise ValueError(f"{name} {value} is outside {low}..{high}")


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
            # The ssh target's hosts each get a HostBackups (the repository on one of them).
            raise ValueError("GroupBackups is the local target's; the ssh target uses HostBackups")
        if not _STANZA.match(self.stanza):
            raise ValueError(f"stanza {self.stanza!r} is not a stanza name")
        paths = [self.data_root, *(n.path for n in self.nodes), *(n.socket_dir for n in self.nodes)]
        for path in paths:
            if not _SAFE_PATH.match(path) or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not an absolute, plain path")
        if not self.nodes:
            raise ValueError(f"stanza {self.stanza} has no nodes")
        check_schedule(self.schedule_hours, self.full_every_days, self.full_keep)

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


# --- the ssh target ------------------------------------------------------------------
_ADDRESS = re.compile(r"^[0-9]{1,3}(\.[0-9]{1,3}){3}$")


def _issue(props: dict) -> dict:
    """A certificate for one host's address: the address is its common name (what
    `tls-server-auth` matches), its IP SAN and — for pgBackRest 2.45, which compares only
    DNS names and the common name with the host it dialled — a DNS SAN."""
    import time

    import hvac.exceptions

    from dbfleet import vault

    client = vault.client_from_env()
    mount, address, ttl = props["mount"], props["common_name"], int(props["ttl_s"])
    now = time.time()

    def issue() -> dict:
        return client.write_data(
            f"{mount}/issue/{vault.BACKUP_PKI_ROLE}",
            data={
                "common_name": address,
                "alt_names": address,
                "ip_sans": address,
                "ttl": f"{ttl}s",
                "private_key_format": "pkcs8",
            },
        )

    try:
        resp = issue()
    except hvac.exceptions.VaultError as exc:
        # `dbfleet up` (the accounts layer, with an admin token) makes the role; a
        # group's PKI from before backups on ssh gets it at its next such `up`.
        if "unknown role" in str(exc):
            raise vault.VaultError(
                f"{mount} has no role {vault.BACKUP_PKI_ROLE} yet: run `dbfleet up` with an admin token first"
            ) from None
        raise
    data = resp["data"]
    expiration = float(data.get("expiration") or 0) or now + ttl
    return {
        **props,
        "certificate": str(data["certificate"]).strip(),
        "private_key": str(data["private_key"]).strip(),
        "issuing_ca": str(data.get("issuing_ca") or "").strip(),
        "serial": str(data.get("serial_number") or ""),
        "issued_at": now,
        "expiration": expiration,
        "renew_after": renew_after(now, expiration, float(props["renew_fraction"])),
    }


class BackupCertificateProvider(pulumi.dynamic.ResourceProvider):
    """Issues on create, and again when the address, CA or lifetime changed or the
    renewal window opened (as components/tls.py's server certificates)."""

    def create(self, props: dict) -> pulumi.dynamic.CreateResult:
        out = _issue(props)
        return pulumi.dynamic.CreateResult(id_=f"{props['mount']}:{out['serial']}", outs=out)

    def diff(self, _id: str, olds: dict, news: dict) -> pulumi.dynamic.DiffResult:
        return pulumi.dynamic.DiffResult(
            changes=_needs_new_certificate(olds, news),
            replaces=[],
            stables=[],
            delete_before_replace=False,
        )

    def update(self, _id: str, olds: dict, news: dict) -> pulumi.dynamic.UpdateResult:
        return pulumi.dynamic.UpdateResult(outs=_issue(news))

    def delete(self, _id: str, _props: dict) -> None:
        return None


class BackupCertificate(pulumi.dynamic.Resource):
    """One host's pgBackRest certificate (server and client) from the group's CA."""

    certificate: pulumi.Output[str]
    private_key: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        mount: str,
        address: str,
        ttl_s: int,
        renew_fraction: float,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if not _ADDRESS.match(address):
            raise ValueError(f"{address!r} is not an IPv4 address")
        if not 0 < renew_fraction < 1:
            raise ValueError(f"renew_fraction {renew_fraction} is not between 0 and 1")
        super().__init__(
            BackupCertificateProvider(),
            name,
            {
                "mount": mount,
                "common_name": address,
                "ip_sans": [address],
                "ttl_s": ttl_s,
                "renew_fraction": renew_fraction,
                **CERTIFICATE_OUTPUTS,
            },
            pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(additional_secret_outputs=["private_key"]), opts
            ),
        )


@dataclass(frozen=True)
class Peer:
    """Another host of the group as the repository host reaches it."""

    address: str
    node: Node


@dataclass(frozen=True)
class HostBackupsArgs:
    """One host of the group on the ssh target: `repo` is True on the repository host,
    whose `peers` are every other host (the nodes it backs up through their TLS
    servers); on a node host `peers` is empty and `repo_address` names the repository
    host its archive command pushes to."""

    connection: Connection
    run_as: str
    data_root: str
    stanza: str
    name: str  # the node's directory name, `<region>-<k>`
    node: Node  # this host's node
    address: str  # this host's address: its TLS server listens there, its certificate's name
    tls_port: int
    repo: bool
    repo_address: str
    repo_name: str  # the repository host's node directory name
    peers: tuple[Peer, ...]
    schedule_hours: int
    full_every_days: int
    full_keep: int
    # superuser_password (and, for the repository host, backup_passphrase) from Vault.
    secrets: pulumi.Output[dict[str, str]]
    tls: TlsFiles
    fleet: str = ""

    def __post_init__(self) -> None:
        if self.connection.kind != "ssh":
            raise ValueError("HostBackups is for the ssh target (GroupBackups is the local one)")
        if not _STANZA.match(self.stanza):
            raise ValueError(f"stanza {self.stanza!r} is not a stanza name")
        for name in (self.name, self.repo_name):
            if not re.match(r"^[a-z]{2,8}-[0-9]$", name):
                raise ValueError(f"{name!r} is not a node name <region>-<k>")
        nodes = (self.node, *(p.node for p in self.peers))
        paths = [self.data_root, *(n.path for n in nodes), *(n.socket_dir for n in nodes)]
        for path in paths:
            if not _SAFE_PATH.match(path) or "/../" in f"{path}/":
                raise ValueError(f"{path!r} is not an absolute, plain path")
        for address in (self.address, self.repo_address, *(p.address for p in self.peers)):
            if not _ADDRESS.match(address):
                raise ValueError(f"{address!r} is not an IPv4 address")
        if self.repo != (self.address == self.repo_address):
            raise ValueError(f"{self.address}: repo is set on a host that is not the repository's")
        if self.peers and not self.repo:
            raise ValueError(f"{self.address}: only the repository host backs up other hosts")
        if self.address in (p.address for p in self.peers):
            raise ValueError(f"{self.address} is listed as its own peer")
        if not 1 <= self.tls_port <= 65535:
            raise ValueError(f"tls_port {self.tls_port} is not a port")
        check_schedule(self.schedule_hours, self.full_every_days, self.full_keep)

    def environment(self) -> dict[str, str]:
        n = self.node
        env = {
            "BACKUP_MODE": "repo" if self.repo else "node",
            "RUN_AS": self.run_as,
            "BACKUP_DIR": host_backup_dir(self.data_root, self.name),
            "DATA_ROOT": self.data_root,
            "STANZA": self.stanza,
            "NODES": f"{n.path}:{n.port}:{n.socket_dir}",
            "REMOTE_NODES": " ".join(
                f"{p.address}:{p.node.path}:{p.node.port}:{p.node.socket_dir}" for p in self.peers
            ),
            "TLS_ADDRESS": self.address,
            "TLS_PORT": str(self.tls_port),
            "REPO_HOST": self.repo_address,
            "REPO_NODE": self.repo_name,
            # the certificate names this host's server admits (for the group's stanza)
            "TLS_CLIENTS": " ".join(p.address for p in self.peers)
            if self.repo
            else self.repo_address,
            "SCHEDULE_HOURS": str(self.schedule_hours),
            "FULL_EVERY_DAYS": str(self.full_every_days),
            "FULL_KEEP": str(self.full_keep),
            **self.tls.environment(),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        return env

    def secret_environment(self) -> pulumi.Output[dict[str, str]]:
        repo = self.repo
        return pulumi.Output.secret(
            pulumi.Output.all(pulumi.Output.secret(self.secrets), self.tls.secret_environment())
        ).apply(lambda st: {**host_secrets(repo, st[0]), **st[1]})


def host_secrets(repo: bool, secrets: dict[str, str]) -> dict[str, str]:
    """The Vault secrets one host's pgbackrest.sh gets: the superuser's password (its
    TLS server's forks connect to its PostgreSQL), and on the repository host only the
    passphrase — the repository host encrypts, the nodes never hold the key."""
    out = {"PG_SUPERUSER_PASSWORD": secrets["superuser_password"]}
    if repo:
        out["PG_BACKUP_PASSPHRASE"] = secrets["backup_passphrase"]
    return out


class HostBackups(pulumi.ComponentResource):
    """pgbackrest.sh on one host of the ssh target (BACKUP_MODE repo or node)."""

    summary: pulumi.Output[str]

    def __init__(
        self, name: str, args: HostBackupsArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE.replace("GroupBackups", "HostBackups"), name, None, opts)
        script = HostScript(
            f"{name}-pgbackrest",
            connection=args.connection,
            script=SCRIPT,
            environment=args.environment(),
            secret_environment=args.secret_environment(),
            replace_on_env=["BACKUP_DIR", "STANZA", "RUN_AS", "BACKUP_MODE"],
            check_drift=True,
            timeout_s=600,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.summary = script.summary
        self.register_outputs({"summary": self.summary})
