"""RegionProxy: the HAProxy that serves one region of a group.

Writes go to the group's primary. Reads go to this region's own nodes first and,
when none of them is healthy, to the nearest other regions of the same group in
order (as HAProxy backup servers); health checks route around a dead node.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.hostcmd import Connection, HostScript

TYPE = "dbfleet:proxy:RegionProxy"


@dataclass(frozen=True)
class RegionProxyArgs:
    connection: Connection
    run_as: str
    proxy_dir: str
    host: str
    read_port: int
    write_port: int
    stats_port: int
    write_backend: str
    read_local: tuple[str, ...]
    read_backups: tuple[str, ...]
    # The fleet the proxy belongs to: its directory's marker names it, and only
    # that fleet's haproxy.sh reuses or deletes the directory. "" marks no fleet.
    fleet: str = ""

    def __post_init__(self) -> None:
        if not self.read_local:
            raise ValueError(f"proxy {self.host}: a region proxy needs at least one local node")
        ports = {self.read_port, self.write_port, self.stats_port}
        if len(ports) != 3:
            raise ValueError(f"proxy {self.host}: read, write and stats ports must differ")
        overlap = set(self.read_local) & set(self.read_backups)
        if overlap:
            raise ValueError(f"proxy {self.host}: {sorted(overlap)} are both local and backup")

    def environment(self) -> dict[str, str]:
        env = {
            "RUN_AS": self.run_as,
            "PROXY_DIR": self.proxy_dir,
            "PROXY_HOST": self.host,
            "READ_PORT": str(self.read_port),
            "WRITE_PORT": str(self.write_port),
            "STATS_PORT": str(self.stats_port),
            "WRITE_BACKEND": self.write_backend,
            "READ_LOCAL": " ".join(self.read_local),
            "READ_BACKUPS": " ".join(self.read_backups),
        }
        if self.fleet:
            env["FLEET_NAME"] = self.fleet
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
