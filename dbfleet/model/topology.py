"""Topology of a region group: nearest-first order and the local network plan.

Pure functions of the fleet file and the catalogue (apart from `port_is_free`, which the
caller injects into `find_port_clashes`), so every layer and every test computes the same
answer without touching anything.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from dbfleet.model.catalogue import REGIONS, distance_km
from dbfleet.model.spec import FleetSpec

# On the local target the kernel gives every loopback client the source address
# 127.0.0.1, whatever address it connects to (libpq cannot bind another), so pg_hba
# admits it besides the group's region addresses: the replicas layer adds it, and the
# authentication policy allows it.
LOCAL_SOURCE = "127.0.0.1"


def nearest_first(regions: list[str]) -> dict[str, list[str]]:
    """For each region, the other given regions sorted by distance (ties by code)."""
    codes = list(dict.fromkeys(regions))
    unknown = [code for code in codes if code not in REGIONS]
    if unknown:
        raise KeyError(f"unknown region codes: {', '.join(unknown)}")
    return {
        here: sorted((c for c in codes if c != here), key=lambda c: (distance_km(here, c), c))
        for here in codes
    }


@dataclass(frozen=True)
class RegionNet:
    """Where one region of a group listens. Node k (0-based) listens on
    node_hosts[k]:postgres_port + k; the region's proxy on `host` (node 0's host)."""

    region: str
    host: str
    postgres_port: int
    read_port: int
    write_port: int
    stats_port: int
    node_ports: tuple[int, ...]
    # One address per node: on the local target all of them are the region's
    # loopback address, on the ssh target the region's hosts in the file's order.
    node_hosts: tuple[str, ...] = ()
    # The region's PgBouncer, on `host` beside the proxy (0: a plan made before pooling).
    pool_port: int = 0
    # Node k's Patroni REST API: node_hosts[k]:patroni_ports[k].
    patroni_ports: tuple[int, ...] = ()
    # The region's etcd member, on `host`: client and peer ports.
    etcd_port: int = 0
    etcd_peer_port: int = 0


def region_host(fleet: FleetSpec, region: str) -> str:
    """The region's loopback address: `<first two octets of cidr>.<catalogue index>.1`.

    It depends only on the catalogue and the fleet's cidr, never on the file's order or
    on other groups, so adding a group or a region never moves an existing one.
    """
    first, second = str(fleet.network.network.network_address).split(".")[:2]
    return f"{first}.{second}.{REGIONS[region].index}.1"


def plan_network(fleet: FleetSpec, group: str) -> dict[str, RegionNet]:
    """Address and ports of every region of `group`, in the file's region order."""
    net = fleet.network
    spec = fleet.groups[group]
    ssh = fleet.group_target(group) == "ssh"
    plans = {}
    for code, region in spec.regions.items():
        if ssh:
            hosts = tuple(h.address for h in region.hosts or ())
        else:
            hosts = (region_host(fleet, code),) * region.nodes
        plans[code] = RegionNet(
            region=code,
            host=hosts[0],
            postgres_port=net.postgres_port,
            read_port=net.read_port,
            write_port=net.write_port,
            stats_port=net.stats_port,
            node_ports=tuple(net.postgres_port + k for k in range(region.nodes)),
            node_hosts=hosts,
            pool_port=net.pool_port,
            patroni_ports=tuple(net.patroni_port + k for k in range(region.nodes)),
            etcd_port=net.etcd_port,
            etcd_peer_port=net.etcd_peer_port,
        )
    return plans


def group_addresses(fleet: FleetSpec, group: str) -> list[str]:
    """Every address the group's nodes and proxies use, each once, in plan order."""
    return list(
        dict.fromkeys(h for net in plan_network(fleet, group).values() for h in net.node_hosts)
    )


def _listeners(net: RegionNet) -> list[tuple[int, str]]:
    nodes = [(port, f"PostgreSQL node {k}") for k, port in enumerate(net.node_ports)]
    nodes += [(port, f"Patroni REST API of node {k}") for k, port in enumerate(net.patroni_ports)]
    if net.etcd_port:
        nodes += [(net.etcd_port, "etcd client port"), (net.etcd_peer_port, "etcd peer port")]
    proxies = [
        (net.read_port, "read listener"),
        (net.write_port, "write listener"),
        (net.stats_port, "stats listener"),
    ]
    if net.pool_port:
        proxies.append((net.pool_port, "pooler listener"))
    return nodes + proxies


def find_port_clashes(
    nets: Mapping[str, RegionNet],
    is_free: Callable[[str, int], bool],
    *,
    group: str | None = None,
) -> list[str]:
    """One message per planned listener whose address is already taken.

    `nets` is what `plan_network` returns; `group` only makes messages say `eu/lhr`.
    """
    clashes: list[str] = []
    for net in nets.values():
        owner = f"{group}/{net.region}" if group else net.region
        for port, role in _listeners(net):
            if not is_free(net.host, port):
                clashes.append(f"{net.host}:{port} ({role} of {owner}) is already in use")
    return clashes


def port_is_free(host: str, port: int) -> bool:
    """True when a TCP socket can bind host:port right now.

    SO_REUSEADDR is on, as PostgreSQL and HAProxy set it: connections still in
    TIME_WAIT (right after `make down`) do not hold a port, a live listener does.
    An address that does not exist on this machine counts as not free (unless the
    kernel allows non-local binds).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def listener_commands(host: str, port: int) -> list[str]:
    """Command lines of the processes listening on host:port (those this user may see)."""
    want = f"{_hex_addr(host)}:{port:04X}"
    inodes = set()
    try:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(fields[9])
    except OSError:
        return []
    if not inodes:
        return []
    commands = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = {os.readlink(fd) for fd in (proc / "fd").iterdir()}
            if any(f"socket:[{inode}]" in links for inode in inodes):
                commands.append(
                    (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
        except OSError:
            continue
    return commands


def _hex_addr(host: str) -> str:
    # /proc/net/tcp shows IPv4 addresses as little-endian hex.
    return "".join(f"{int(octet):02X}" for octet in reversed(host.split(".")))


def slot_name(region: str, index: int) -> str:
    """The replication slot the primary keeps for node `index` of `region`."""
    return f"dbfleet_{region}_{index}"
