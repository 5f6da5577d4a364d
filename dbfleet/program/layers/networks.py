"""networks-<group>: every region's address and ports, and nearest-first order.

On the local target each region is its own loopback address; every address of
127.0.0.0/8 reaches every other one, so reachability needs no resource here.
"""

from __future__ import annotations

import pulumi

from dbfleet.model.topology import (
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

    # A port held by something else must stop the rollout before any database
    # starts. Ports this stack already handed out are in use by the group itself.
    handed_out = {
        (r["host"], port)
        for r in previous_regions.values()
        for port in (
            *r.get("node_ports", []),
            r.get("read_port"),
            r.get("write_port"),
            r.get("stats_port"),
        )
    }

    def free_or_ours(host: str, port: int) -> bool:
        if (host, port) in handed_out or port_is_free(host, port):
            return True
        # Held by one of this group's own databases or proxies (their command
        # lines name the group's data root): not a clash either.
        return any(accounts["data_root"] + "/" in cmd for cmd in listener_commands(host, port))

    clashes = find_port_clashes(nets, free_or_ours, group=ctx.group_name)
    if clashes:
        raise UpstreamError("ports already in use: " + "; ".join(clashes))

    pulumi.export("regions", {r: _region_output(n) for r, n in nets.items()})
    pulumi.export("nearest", nearest_first(list(ctx.group.regions)))


def _region_output(net) -> dict:
    return {
        "host": net.host,
        "postgres_port": net.postgres_port,
        "node_ports": list(net.node_ports),
        "read_port": net.read_port,
        "write_port": net.write_port,
        "stats_port": net.stats_port,
    }


def _own_previous_regions(stack: str) -> dict:
    try:
        return read_outputs(stack, ()).get("regions") or {}
    except UpstreamError:
        return {}
