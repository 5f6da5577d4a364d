"""EtcdMember: one region's member of its group's etcd cluster (Patroni's consensus store).

A region group runs one etcd cluster, one member per region of the group, each on its
region's address; a cluster never spans another group. Every member is one HostScript
running `etcd.sh`, which starts the member detached as the group's OS user and decides
by itself whether it bootstraps a new cluster (a brand-new group: every member starts at
once, none has quorum, all start "new") or joins the cluster its peers already form
(`member add`, then `--initial-cluster-state existing`); its delete leaves the cluster
(`member remove`) before stopping, so the rest of the group counts its quorum right.

Clients speak HTTPS to a member, which presents its own certificate from the group's CA
(naming its address) and admits only clients whose certificate that CA signed
(`--client-cert-auth`): Patroni with its node's certificate, etcd.sh's etcdctl with the
member's. Another group's certificates, or none, are refused in the TLS handshake. The
member's key is secret (the host script's secret environment). Peer traffic (raft) is
HTTPS with the same certificate both ways (`--peer-client-cert-auth`): a member admits
only peers whose certificate the group's CA signed. A member that ran its peers on plain
http (an older dbfleet) moves to https in its update (`member update`, then a restart);
the replicas layer updates a group's members one after another, so that only one is
ever down.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript
from components.tls import TlsFiles

TYPE = "dbfleet:etcd:EtcdMember"
# A member name is a region code; etcd.sh accepts exactly this.
_MEMBER_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_TOKEN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
# One member's place in the cluster: (name, host, peer port).
ClusterMember = tuple[str, str, int]


def _ipv4(value: str) -> bool:
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        return False
    return True


def _hostport(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return _ipv4(host) and port.isdigit() and 1 <= int(port) <= 65535


def cluster_spec(
    members: Iterable[tuple[str, str, int, int]],
) -> tuple[tuple[ClusterMember, ...], tuple[str, ...]]:
    """`(cluster, clients)` for EtcdMemberArgs from every member's (name, host,
    client_port, peer_port), in the order given (the same for every member)."""
    members = tuple(members)
    return (
        tuple((name, host, peer) for name, host, _client, peer in members),
        tuple(f"{host}:{client}" for _name, host, client, _peer in members),
    )


@dataclass(frozen=True)
class EtcdMemberArgs:
    connection: Connection
    # the group's OS user, which runs etcd
    run_as: str
    # the member's directory (data/, etcd.log, etcd.pid), in the group's data root
    etcd_dir: str
    # this member's name: its region code
    member_name: str
    # the address it listens on (clients and peers), and its ports
    host: str
    client_port: int
    peer_port: int
    # every member of the group, this one included: (name, host, peer_port)
    cluster: tuple[ClusterMember, ...]
    # every member's client endpoint, host:port, this one included
    clients: tuple[str, ...]
    # --initial-cluster-token: `<fleet>-<group>`, so that two groups never merge
    token: str
    # The member's certificate from its group's CA, its key, and the CA.
    tls: TlsFiles | None = None
    # The fleet the member belongs to (its directory's marker names it); "" none.
    fleet: str = ""

    def __post_init__(self) -> None:
        who = f"etcd member {self.member_name}"
        if self.tls is None:
            raise ValueError(f"{who}: no TLS certificate (etcd admits TLS clients only)")
        if not _MEMBER_NAME.match(self.member_name):
            raise ValueError(f"{who}: the name must be a region code (a-z, 0-9, -)")
        if not self.etcd_dir.startswith("/"):
            raise ValueError(f"{who}: etcd_dir must be absolute, got {self.etcd_dir!r}")
        if not _ipv4(self.host):
            raise ValueError(f"{who}: host {self.host!r} is not an IPv4 address")
        for what in ("client_port", "peer_port"):
            if not 1024 <= getattr(self, what) <= 65535:
                raise ValueError(f"{who}: {what} {getattr(self, what)} is outside 1024..65535")
        if self.client_port == self.peer_port:
            raise ValueError(f"{who}: client and peer port are both {self.peer_port}")
        if not _TOKEN.match(self.token):
            raise ValueError(f"{who}: token {self.token!r} may only hold letters, digits, . _ -")
        self._check_cluster(who)

    def _check_cluster(self, who: str) -> None:
        """The cluster and its client endpoints agree with each other and list this member."""
        names = [name for name, _host, _port in self.cluster]
        peers = [(host, port) for _name, host, port in self.cluster]
        for name, host, port in self.cluster:
            if not _MEMBER_NAME.match(name) or not _hostport(f"{host}:{port}"):
                raise ValueError(f"{who}: cluster member ({name!r}, {host!r}, {port}) is invalid")
        if len(set(names)) != len(names) or len(set(peers)) != len(peers):
            raise ValueError(f"{who}: the cluster lists a member name or peer address twice")
        if (self.member_name, self.host, self.peer_port) not in self.cluster:
            raise ValueError(
                f"{who}: the cluster does not list it as "
                f"({self.member_name!r}, {self.host!r}, {self.peer_port})"
            )
        bad = [c for c in self.clients if not _hostport(c)]
        if bad:
            raise ValueError(f"{who}: clients {bad} are not host:port")
        if len(set(self.clients)) != len(self.clients):
            raise ValueError(f"{who}: the clients list an endpoint twice")
        if len(self.clients) != len(self.cluster):
            raise ValueError(
                f"{who}: {len(self.clients)} client endpoints for {len(self.cluster)} members"
            )
        if f"{self.host}:{self.client_port}" not in self.clients:
            raise ValueError(
                f"{who}: the clients do not list its own {self.host}:{self.client_port}"
            )

    @property
    def client_url(self) -> str:
        return f"https://{self.host}:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"https://{self.host}:{self.peer_port}"

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "ETCD_DIR": self.etcd_dir,
            "MEMBER_NAME": self.member_name,
            "ETCD_HOST": self.host,
            "ETCD_CLIENT_PORT": str(self.client_port),
            "ETCD_PEER_PORT": str(self.peer_port),
            "ETCD_CLUSTER": ",".join(
                f"{name}=https://{host}:{port}" for name, host, port in self.cluster
            ),
            "ETCD_CLIENTS": " ".join(self.clients),
            "ETCD_TOKEN": self.token,
            **(self.tls.environment() if self.tls else {}),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        if self.connection.kind == "ssh":
            env["TARGET"] = "ssh"  # listen on the host's own address, not loopback
        return env

    def secret_environment(self) -> pulumi.Output[dict[str, str]]:
        """The member's certificate and key (TLS_CERT, TLS_KEY)."""
        if self.tls is None:
            return pulumi.Output.secret({})
        return self.tls.secret_environment()


class EtcdMember(pulumi.ComponentResource):
    client_url: pulumi.Output[str]

    def __init__(self, name: str, args: EtcdMemberArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(TYPE, name, None, opts)
        member = HostScript(
            f"{name}-etcd",
            connection=args.connection,
            script="etcd.sh",
            environment=args.environment(),
            secret_environment=args.secret_environment(),
            # The directory and its owner, and the peer URL and name (the member's
            # identity in the cluster, which a restart cannot change): a replacement,
            # i.e. leave the cluster and join it again as a new member. Everything
            # else (a member added elsewhere, the client port) is an update.
            replace_on_env=["ETCD_DIR", "RUN_AS", "MEMBER_NAME", "ETCD_HOST", "ETCD_PEER_PORT"],
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.client_url = member.summary.apply(lambda _: args.client_url)
        self.register_outputs({"client_url": self.client_url})
