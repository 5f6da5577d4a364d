"""proxies-<group>: one HAProxy per region — reads local first, writes to the primary."""

from __future__ import annotations

from urllib.parse import quote

import pulumi

from components.proxy import RegionProxy, RegionProxyArgs
from dbfleet import vault
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import prefetch, read_outputs, require_regions


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

    reads, writes = {}, {}
    for region in ctx.group.regions:
        net = networks["regions"][region]
        backups = tuple(m for other in networks["nearest"][region] for m in _members(nodes[other]))
        proxy = RegionProxy(
            region,
            RegionProxyArgs(
                connection=ctx.connection,
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

    secrets = vault.read_group_secrets(
        vault.client_from_env(), replicas["secret_mount"], replicas["secret_path"]
    )
    password = quote(secrets["app_password"], safe="")
    user, db = replicas["app_user"], replicas["app_db"]

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
