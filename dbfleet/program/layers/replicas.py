"""replicas-<group>: the primary PostgreSQL and one streaming replica per other node."""

from __future__ import annotations

import pulumi

from components.fence import PrimaryFence, PrimaryFenceArgs
from components.postgres import PostgresNode, PostgresNodeArgs
from dbfleet import vault
from dbfleet.model.topology import LOCAL_SOURCE, slot_name
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import UpstreamError, prefetch, read_outputs, require_regions

APP_DB = "app"
APP_USER = "app"


def build(ctx: LayerContext) -> None:
    # This stack's own outputs first, alone: the engine rewrites this stack's state file
    # after every read, and reading a state file while it is rewritten can fail (the
    # file backend's metadata sidecar is not written atomically). The upstream stacks'
    # files are not written during this run, so those reads go out together.
    previous = _previous_primary(str(ctx.stack))
    prefetch(*ctx.stack.upstream_stacks())
    accounts = read_outputs(
        ctx.stack.upstream("accounts"), ("user", "data_root", "secret_mount", "secret_path")
    )
    networks = read_outputs(ctx.stack.upstream("networks"), ("regions",))
    require_regions(ctx.stack.upstream("networks"), networks, "regions", ctx.group.regions)
    regions: dict = networks["regions"]
    short = [
        r for r, spec in ctx.group.regions.items() if len(regions[r]["node_ports"]) < spec.nodes
    ]
    if short:
        raise UpstreamError(
            f"{ctx.stack.upstream('networks')} has fewer node ports than the fleet file's nodes for "
            f"{', '.join(short)}: bring it up first: pulumi up -s {ctx.stack.upstream('networks')}  (or: dbfleet up)"
        )
    passwords = pulumi.Output.secret(
        vault.read_group_secrets(
            vault.client_from_env(), accounts["secret_mount"], accounts["secret_path"]
        )
    )
    primary_region = ctx.group.primary
    allowed = tuple(sorted(r["host"] for r in regions.values()))
    if ctx.connection.kind == "local":
        # On one machine the kernel gives every loopback client the source address
        # 127.0.0.1, whatever address it connects to (libpq cannot bind another),
        # so replication and proxy connections arrive from there. The group's
        # passwords (scram-sha-256) are what keep other groups out on this target.
        allowed = (*allowed, LOCAL_SOURCE)

    # Primary first, then the replicas of every region in the file's order.
    members = [
        (region, k)
        for region in [primary_region, *(r for r in ctx.group.regions if r != primary_region)]
        for k in range(ctx.group.regions[region].nodes)
    ]
    primary_net = regions[primary_region]
    replica_slots = tuple(slot_name(r, k) for r, k in members[1:])

    def args(region: str, k: int) -> PostgresNodeArgs:
        net = regions[region]
        common = {
            "connection": ctx.connection,
            "run_as": accounts["user"],
            "node_dir": f"{accounts['data_root']}/{region}-{k}",
            "host": net["host"],
            "port": net["node_ports"][k],
            "allowed_hosts": allowed,
            "passwords": passwords,
            "app_db": APP_DB,
            "app_user": APP_USER,
            "fleet": ctx.fleet.name,
        }
        if (region, k) == members[0]:
            return PostgresNodeArgs(role="primary", replica_slots=replica_slots, **common)
        return PostgresNodeArgs(
            role="replica",
            primary_host=primary_net["host"],
            primary_port=primary_net["node_ports"][0],
            slot=slot_name(region, k),
            **common,
        )

    node_dir = {m: args(*m).node_dir for m in members}
    if previous and previous != primary_region:
        # Made visible in every preview: a switchover is the one change here that
        # moves writes. Order: fence (clean stop of the old primary), promote the
        # new primary, then re-point every replica, the old primary included.
        pulumi.log.warn(
            f"switchover in group {ctx.group_name}: {previous} -> {primary_region}: "
            f"{previous}-0 is stopped cleanly, {primary_region}-0 is promoted, "
            f"{', '.join(f'{r}-{k}' for r, k in members[1:])} follow {primary_region}-0"
        )
    fence = PrimaryFence(
        "primary",
        PrimaryFenceArgs(
            connection=ctx.connection,
            run_as=accounts["user"],
            primary_node_dir=node_dir[members[0]],
            replica_node_dirs=tuple(node_dir[m] for m in members[1:]),
        ),
    )
    primary = PostgresNode(
        f"{primary_region}-0", args(*members[0]), pulumi.ResourceOptions(depends_on=[fence])
    )
    nodes = {members[0]: primary}
    for region, k in members[1:]:
        nodes[(region, k)] = PostgresNode(
            f"{region}-{k}", args(region, k), pulumi.ResourceOptions(depends_on=[primary])
        )

    def node_out(region: str) -> dict:
        mine = [(k, n) for (r, k), n in nodes.items() if r == region]
        first = mine[0][1]
        return {
            "host": regions[region]["host"],
            "port": first.port,
            "role": first.role,
            "members": [
                {"host": regions[region]["host"], "port": n.port, "role": n.role} for _, n in mine
            ],
        }

    pulumi.export("primary_region", primary_region)
    pulumi.export("nodes", {region: node_out(region) for region in ctx.group.regions})
    pulumi.export("secret_mount", accounts["secret_mount"])
    pulumi.export("secret_path", accounts["secret_path"])
    pulumi.export("app_db", APP_DB)
    pulumi.export("app_user", APP_USER)


def _previous_primary(stack: str) -> str | None:
    """The primary region this stack deployed last time (None on first deploy)."""
    try:
        return read_outputs(stack, ()).get("primary_region")
    except UpstreamError:
        return None
