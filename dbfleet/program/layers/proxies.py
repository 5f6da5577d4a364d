"""proxies-<group>: one HAProxy per region — reads local first, writes to the primary —
and in front of each, the region's PgBouncer (transaction pooling; docs/pooling.md)."""

from __future__ import annotations

from urllib.parse import quote

import pulumi

from components.pooler import READ_SUFFIX, RegionPooler, RegionPoolerArgs
from components.proxy import RegionProxy, RegionProxyArgs
from dbfleet import vault
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import UpstreamError, prefetch, read_outputs, require_regions


def _members(node: dict) -> tuple[str, ...]:
    return tuple(f"{m['host']}:{m['port']}" for m in node["members"])


def build(ctx: LayerContext) -> None:
    prefetch(*ctx.stack.upstream_stacks())
    networks = read_outputs(ctx.stack.upstream("networks"), ("regions", "nearest"))
    replicas = read_outputs(
        ctx.stack.upstream("replicas"),
        ("primary_region", "nodes", "secret_mount", "secret_path", "app_db", "app_user"),
    )
    accounts = read_outputs(ctx.stack.upstream("accounts"), ("user", "data_root"))
    require_regions(ctx.stack.upstream("networks"), networks, "regions", ctx.group.regions)
    require_regions(ctx.stack.upstream("replicas"), replicas, "nodes", ctx.group.regions)
    nodes: dict = replicas["nodes"]
    primary = nodes[replicas["primary_region"]]
    write_backend = f"{primary['members'][0]['host']}:{primary['members'][0]['port']}"

    secrets = vault.read_group_secrets(
        vault.client_from_env(), replicas["secret_mount"], replicas["secret_path"]
    )
    app_password = pulumi.Output.secret(secrets["app_password"])
    user, db = replicas["app_user"], replicas["app_db"]

    reads, writes, pooled = {}, {}, {}
    for region in ctx.group.regions:
        net = networks["regions"][region]
        backups = tuple(m for other in networks["nearest"][region] for m in _members(nodes[other]))
        proxy = RegionProxy(
            region,
            RegionProxyArgs(
                # node 0's host runs the region's proxy (the local target: this machine)
                connection=ctx.node_connection(region, 0),
                fleet=ctx.fleet.name,
                run_as=accounts["user"],
                proxy_dir=f"{accounts['data_root']}/proxy-{region}",
                host=net["host"],
                read_port=net["read_port"],
                write_port=net["write_port"],
                stats_port=net["stats_port"],
                write_backend=write_backend,
                read_local=_members(nodes[region]),
                read_backups=backups,
            ),
        )
        reads[region] = proxy.read_endpoint
        writes[region] = proxy.write_endpoint
        if not net.get("pool_port"):
            raise UpstreamError(
                f"{ctx.stack.upstream('networks')} has no pool_port for region {region}: "
                "run `up` on the networks layer first"
            )
        pooler = RegionPooler(
            f"{region}-pool",
            RegionPoolerArgs(
                # beside the region's proxy, on node 0's host
                connection=ctx.node_connection(region, 0),
                fleet=ctx.fleet.name,
                run_as=accounts["user"],
                pool_dir=f"{accounts['data_root']}/pooler-{region}",
                host=net["host"],
                port=net["pool_port"],
                write_target=f"{net['host']}:{net['write_port']}",
                read_target=f"{net['host']}:{net['read_port']}",
                primary=write_backend,
                app_password=app_password,
                app_db=db,
                app_user=user,
                default_pool_size=ctx.fleet.pooling.default_pool_size,
                max_client_conn=ctx.fleet.pooling.max_client_conn,
            ),
            # After the proxy: on a switchover HAProxy points at the new primary
            # before the pooler renews its server connections.
            opts=pulumi.ResourceOptions(depends_on=[proxy]),
        )
        pooled[region] = pooler.endpoint

    password = quote(secrets["app_password"], safe="")

    def uris(endpoints: list) -> dict:
        read_eps, write_eps = endpoints
        return {
            region: {
                "read": f"postgresql://{user}:{password}@{read_eps[region]}/{db}",
                "write": f"postgresql://{user}:{password}@{write_eps[region]}/{db}",
            }
            for region in read_eps
        }

    pulumi.export("read_endpoints", reads)
    pulumi.export("write_endpoints", writes)
    pulumi.export(
        "connection_uris", pulumi.Output.secret(pulumi.Output.all(reads, writes).apply(uris))
    )

    def pooled_uris(endpoints: dict) -> dict:
        return {
            region: {
                "read": f"postgresql://{user}:{password}@{ep}/{db}{READ_SUFFIX}",
                "write": f"postgresql://{user}:{password}@{ep}/{db}",
            }
            for region, ep in endpoints.items()
        }

    pulumi.export("pooled_endpoints", pooled)
    pulumi.export(
        "pooled_connection_uris",
        pulumi.Output.secret(pulumi.Output.from_input(pooled).apply(pooled_uris)),
    )
