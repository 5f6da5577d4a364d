"""RegionProxy: the HAProxy that serves one region of a group managed by Patroni.

Writes go to whichever node of the group Patroni's REST API calls the primary
(`/primary`), so they follow a failover with no `up`. Reads go to this region's own
nodes while Patroni says they are within the lag budget (`/read-only?lag=`) and,
when none is, to the nearest other regions of the same group in order (as HAProxy
backup servers). Each node takes at most `server_maxconn` connections per listener;
more clients queue for `queue_timeout_s`. The checks speak HTTPS to Patroni and verify
each node against the group's CA (`ca`), which haproxy.sh writes beside the config.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript
from components.tls import ca_environment

TYPE = "dbfleet:proxy:RegionProxy"


@dataclass(frozen=True)
class ProxyServer:
    """One PostgreSQL node as the proxy sees it: where clients go (`host:port`) and
    where its Patroni REST API answers the health checks (`host:rest_port`)."""

    host: str
    port: int
    rest_port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def env(self) -> str:
        """`host:pgport:restport`, the form haproxy.sh reads."""
        return f"{self.host}:{self.port}:{self.rest_port}"


def _servers(items: tuple[ProxyServer, ...]) -> str:
    return " ".join(s.env() for s in items)


@dataclass(frozen=True)
class RegionProxyArgs:
    connection: Connection
    run_as: str
    proxy_dir: str
    host: str
    read_port: int
    write_port: int
    stats_port: int
    # Every node of the group, the declared primary region first.
    write_servers: tuple[ProxyServer, ...]
    read_local: tuple[ProxyServer, ...]
    read_backups: tuple[ProxyServer, ...]
    read_lag_bytes: int
    server_maxconn: int
    queue_timeout_s: int
    # The group's CA (PEM): the health checks verify each node's REST API with it.
    ca: str = ""
    # The fleet the proxy belongs to: its directory's marker names it, and only
    # that fleet's haproxy.sh reuses or deletes the directory. "" marks no fleet.
    fleet: str = ""

    def __post_init__(self) -> None:
        if not self.read_local:
            raise ValueError(f"proxy {self.host}: a region proxy needs at least one local node")
        ports = {self.read_port, self.write_port, self.stats_port}
        if len(ports) != 3:
            raise ValueError(f"proxy {self.host}: read, write and stats ports must differ")
        if not self.write_servers:
            raise ValueError(f"proxy {self.host}: the write listener needs the group's nodes")
        local = {s.address for s in self.read_local}
        overlap = local & {s.address for s in self.read_backups}
        if overlap:
            raise ValueError(f"proxy {self.host}: {sorted(overlap)} are both local and backup")
        for name in ("read_lag_bytes", "server_maxconn", "queue_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"proxy {self.host}: {name} must be at least 1")
        if not self.ca.strip():
            raise ValueError(f"proxy {self.host}: no CA to verify the nodes' REST APIs with")

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "PROXY_DIR": self.proxy_dir,
            "PROXY_HOST": self.host,
            "READ_PORT": str(self.read_port),
            "WRITE_PORT": str(self.write_port),
            "STATS_PORT": str(self.stats_port),
            "WRITE_SERVERS": _servers(self.write_servers),
            "READ_LOCAL": _servers(self.read_local),
            "READ_BACKUPS": _servers(self.read_backups),
            "READ_LAG_BYTES": str(self.read_lag_bytes),
            "SERVER_MAXCONN": str(self.server_maxconn),
            "QUEUE_TIMEOUT_S": str(self.queue_timeout_s),
            **ca_environment(self.ca),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
        if self.connection.kind == "ssh":
            env["TARGET"] = "ssh"  # listen on the host's own address, not loopback
        return env


class RegionProxy(pulumi.ComponentResource):
    read_endpoint: pulumi.Output[str]
    write_endpoint: pulumi.Output[str]

    def __init__(
        self, name: str, args: RegionProxyArgs, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__(TYPE, name, None, opts)
        proxy = HostScript(
            f"{name}-haproxy",
            connection=args.connection,
            script="haproxy.sh",
            environment=args.environment(),
            replace_on_env=["PROXY_DIR", "RUN_AS"],
            check_drift=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.read_endpoint = proxy.summary.apply(lambda _: f"{args.host}:{args.read_port}")
        self.write_endpoint = proxy.summary.apply(lambda _: f"{args.host}:{args.write_port}")
        self.register_outputs(
            {"read_endpoint": self.read_endpoint, "write_endpoint": self.write_endpoint}
        )
