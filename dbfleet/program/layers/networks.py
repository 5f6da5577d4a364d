"""networks-<group>: every region's address and ports, and nearest-first order.

On the local target each region is its own loopback address; every address of
127.0.0.0/8 reaches every other one, so reachability needs no resource here.
On the ssh target the addresses are the fleet file's hosts (DNS names resolved
once, here), and every host gets the group's firewall (`HostFirewall`), whose
create also proves that the host reaches every other host of the group.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket

import pulumi

from components.firewall import HostFirewall, HostFirewallArgs, table_name
from dbfleet.model.topology import (
    RegionNet,
    find_port_clashes,
    listener_commands,
    nearest_first,
    plan_network,
    port_is_free,
)
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import UpstreamError, read_outputs


def build(ctx: LayerContext) -> None:
    # This stack's own outputs first, alone (see the replicas layer for why).
    previous_regions = _own_previous_regions(str(ctx.stack))
    accounts = read_outputs(ctx.stack.upstream("accounts"), ("group", "data_root"))
    nets = plan_network(ctx.fleet, ctx.group_name)
    if ctx.target == "ssh":
        nets = {r: _resolved(net) for r, net in nets.items()}
        _firewalls(ctx, nets)
        _export(ctx, nets)
        return

    # A port held by something else must stop the rollout before any database
    # starts. Ports this stack already handed out are in use by the group itself.
    handed_out = {
        (r["host"], port)
        for r in previous_regions.values()
        for port in (
            *r.get("node_ports", []),
            *r.get("patroni_ports", []),
            r.get("etcd_port"),
            r.get("etcd_peer_port"),
            r.get("read_port"),
            r.get("write_port"),
            r.get("stats_port"),
            r.get("pool_port"),
        )
    }

    def free_or_ours(host: str, port: int) -> bool:
        if (host, port) in handed_out or port_is_free(host, port):
            return True
        # Held by one of this group's own databases, proxies or poolers (their command
        # lines name the group's data root): not a clash either.
        return any(accounts["data_root"] + "/" in cmd for cmd in listener_commands(host, port))

    clashes = find_port_clashes(nets, free_or_ours, group=ctx.group_name)
    if clashes:
        raise UpstreamError("ports already in use: " + "; ".join(clashes))

    _export(ctx, nets)


def _export(ctx: LayerContext, nets: dict[str, RegionNet]) -> None:
    regions = {r: _region_output(n) for r, n in nets.items()}
    if ctx.target == "ssh" and ctx.group.backup is not None:
        # pgBackRest's TLS server on every host of a group with backups (docs/backups.md)
        for out in regions.values():
            out["backup_port"] = ctx.fleet.network.backup_port
    pulumi.export("regions", regions)
    pulumi.export("nearest", nearest_first(list(ctx.group.regions)))


def _region_output(net: RegionNet) -> dict:
    return {
        "host": net.host,
        "node_hosts": list(net.node_hosts),
        "postgres_port": net.postgres_port,
        "node_ports": list(net.node_ports),
        "read_port": net.read_port,
        "write_port": net.write_port,
        "stats_port": net.stats_port,
        "pool_port": net.pool_port,
        "patroni_ports": list(net.patroni_ports),
        "etcd_port": net.etcd_port,
        "etcd_peer_port": net.etcd_peer_port,
    }


def _ipv4(name: str) -> str:
    try:
        ipaddress.IPv4Address(name)
        return name
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise UpstreamError(f"host {name} does not resolve to an IPv4 address: {exc}") from None
    return str(infos[0][4][0])


def _resolved(net: RegionNet) -> RegionNet:
    """The plan with every host as its IPv4 address: what PostgreSQL's pg_hba, the
    firewall and the proxies are given (a name can resolve differently later)."""
    hosts = tuple(_ipv4(h) for h in net.node_hosts)
    return dataclasses.replace(net, host=hosts[0], node_hosts=hosts)


def _firewalls(ctx: LayerContext, nets: dict[str, RegionNet]) -> None:
    table = table_name(ctx.fleet.name, ctx.group_name)
    group = tuple(dict.fromkeys(h for n in nets.values() for h in n.node_hosts))
    ssh_ports = {
        (region, k): host.port
        for region, spec in ctx.group.regions.items()
        for k, host in enumerate(spec.hosts or [])
    }
    addresses = {(r, k): nets[r].node_hosts[k] for r, k in ctx.hosts()}
    for region, k in ctx.hosts():
        net, me = nets[region], addresses[(region, k)]
        proxy_here = k == 0
        HostFirewall(
            f"{region}-{k}",
            HostFirewallArgs(
                connection=ctx.node_connection(region, k),
                table=table,
                host=me,
                # PostgreSQL, Patroni REST and (beside the proxy) etcd: the group's
                # own hosts and the operators only.
                node_ports=tuple(
                    p
                    for j in range(len(net.node_ports))
                    if net.node_hosts[j] == me
                    for p in (net.node_ports[j], *net.patroni_ports[j : j + 1])
                )
                + ((net.etcd_port, net.etcd_peer_port) if proxy_here and net.etcd_port else ()),
                stats_port=net.stats_port if proxy_here else None,
                client_ports=(net.read_port, net.write_port, net.pool_port) if proxy_here else (),
                group_sources=group,
                client_sources=tuple(ctx.fleet.firewall.clients),
                operator_sources=tuple(ctx.fleet.firewall.operators),
                peers=tuple(
                    f"{addresses[other]}:{ssh_ports[other]}"
                    for other in ctx.hosts()
                    if other != (region, k)
                ),
                backup_port=(
                    ctx.fleet.network.backup_port if ctx.group.backup is not None else None
                ),
            ),
        )


def _own_previous_regions(stack: str) -> dict:
    try:
        return read_outputs(stack, ()).get("regions") or {}
    except UpstreamError:
        return {}
