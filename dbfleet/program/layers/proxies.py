"""proxies-<group>: one HAProxy per region — reads local first while within the lag
budget, writes to whichever node Patroni calls the primary, each node behind a
connection limit — and in front of each, the region's PgBouncer (transaction pooling;
docs/pooling.md)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pulumi

from components.pooler import READ_SUFFIX, RegionPooler, RegionPoolerArgs
from components.proxy import ProxyServer, RegionProxy, RegionProxyArgs
from components.tls import ServerCertificate, ServerCertificateArgs, TlsFiles
from dbfleet import vault
from dbfleet.model.spec import RESERVED_CONNECTIONS
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import UpstreamError, prefetch, read_outputs, require_regions


def server_maxconn(max_connections: int, regions: int) -> int:
    """Connections one listener of one region's proxy may open to one node.

    Every region of the group runs a proxy with a read and a write listener, and
    either may reach any node of the group (writes follow the leader anywhere, reads
    fall back to other regions), so a node's slots — its `max_connections` less the
    `RESERVED_CONNECTIONS` kept for superusers, Patroni and `dbfleet status` — are
    shared by 2 × `regions` listeners. With each one capped at that share the proxies
    together never exceed what the node accepts, and a client beyond it waits in
    HAProxy's queue instead of getting "remaining connection slots are reserved".
    Never below 1: a proxy that admits nobody is no proxy.
    """
    return max(1, (max_connections - RESERVED_CONNECTIONS) // (2 * regions))


def _port(value: object) -> int:
    """A port from the replicas stack's outputs. In a preview against planned outputs
    a new node's port reads `(known after apply)`: kept as that text, so the plan
    shows it instead of failing."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return value  # type: ignore[return-value]


def _servers(stack: str, region: str, node: dict, net: dict) -> tuple[ProxyServer, ...]:
    """A region's nodes with their Patroni REST ports: the replicas stack's `rest_port`
    of each member, or else the networks stack's `patroni_ports` entry of the node
    listening on that port (node k: node_ports[k], patroni_ports[k])."""
    servers = []
    for m in node["members"]:
        rest_port = m.get("rest_port")
        if rest_port is None:
            node_ports, rest_ports = net.get("node_ports", []), net.get("patroni_ports") or []
            if m["port"] not in node_ports or node_ports.index(m["port"]) >= len(rest_ports):
                raise UpstreamError(
                    f"{stack} has no Patroni REST port for node {m['host']}:{m['port']} of "
                    f"region {region}: run `up` on the networks layer first"
                )
            rest_port = rest_ports[node_ports.index(m["port"])]
        servers.append(ProxyServer(m["host"], _port(m["port"]), _port(rest_port)))
    return tuple(servers)


def ca_file(fleet: str, group: str, env: dict | None = None) -> Path:
    """Where dbfleet keeps group `group`'s CA certificate for this machine's clients
    (the connection URIs' `sslrootcert`): beside the state, `$DBFLEET_HOME/tls`."""
    env = os.environ if env is None else env
    home = env.get("DBFLEET_HOME") or str(Path(__file__).resolve().parents[3] / ".dbfleet")
    return Path(home) / "tls" / f"{fleet}-{group}-ca.pem"


def _write_public(path: Path, text: str) -> None:
    """A public file (a CA certificate), written atomically, 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.chmod(0o644)
    tmp.replace(path)


def build(ctx: LayerContext) -> None:
    prefetch(*ctx.stack.upstream_stacks())
    networks = read_outputs(ctx.stack.upstream("networks"), ("regions", "nearest"))
    replicas = read_outputs(
        ctx.stack.upstream("replicas"),
        ("primary_region", "nodes", "secret_mount", "secret_path", "app_db", "app_user"),
    )
    accounts = read_outputs(
        ctx.stack.upstream("accounts"), ("user", "data_root", "pki_mount", "ca_certificate")
    )
    require_regions(ctx.stack.upstream("networks"), networks, "regions", ctx.group.regions)
    require_regions(ctx.stack.upstream("replicas"), replicas, "nodes", ctx.group.regions)
    nodes: dict = replicas["nodes"]
    primary_region = replicas["primary_region"]
    primary = nodes[primary_region]
    # The declared primary: the pooler's hint only; the write listeners follow the
    # live leader through Patroni.
    write_backend = f"{primary['members'][0]['host']}:{primary['members'][0]['port']}"
    servers = {
        region: _servers(
            ctx.stack.upstream("networks"), region, nodes[region], networks["regions"][region]
        )
        for region in ctx.group.regions
    }
    # Every node of the group, the declared primary region first (a stable order: the
    # config changes only when the group does, not when Patroni moves the leader).
    write_servers = tuple(
        s
        for region in [primary_region, *(r for r in ctx.group.regions if r != primary_region)]
        for s in servers[region]
    )
    maxconn = server_maxconn(ctx.fleet.limits.max_connections, len(ctx.group.regions))

    secrets = vault.read_group_secrets(
        vault.client_from_env(), replicas["secret_mount"], replicas["secret_path"]
    )
    app_password = pulumi.Output.secret(secrets["app_password"])
    user, db = replicas["app_user"], replicas["app_db"]

    reads, writes, pooled, certs = {}, {}, {}, {}
    for region in ctx.group.regions:
        net = networks["regions"][region]
        backups = tuple(s for other in networks["nearest"][region] for s in servers[other])
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
                write_servers=write_servers,
                read_local=servers[region],
                read_backups=backups,
                read_lag_bytes=ctx.group.read_lag_budget_bytes,
                server_maxconn=maxconn,
                queue_timeout_s=ctx.fleet.limits.queue_timeout_s,
                ca=accounts["ca_certificate"],
            ),
        )
        reads[region] = proxy.read_endpoint
        writes[region] = proxy.write_endpoint
        if not net.get("pool_port"):
            raise UpstreamError(
                f"{ctx.stack.upstream('networks')} has no pool_port for region {region}: "
                "run `up` on the networks layer first"
            )
        pooler_cert = ServerCertificate(
            f"{region}-pool-tls",
            ServerCertificateArgs(
                mount=accounts["pki_mount"],
                common_name=f"{ctx.group_name}-{region}-pooler",
                ip_sans=(net["host"],),
                ttl_s=ctx.fleet.tls.cert_ttl_s,
                renew_fraction=ctx.fleet.tls.renew_fraction,
            ),
        )
        certs[f"{region}-pooler"] = pooler_cert.expiration
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
                tls=TlsFiles.of(pooler_cert, accounts["ca_certificate"]),
            ),
            # After the proxy: on a switchover HAProxy points at the new primary
            # before the pooler renews its server connections.
            opts=pulumi.ResourceOptions(depends_on=[proxy]),
        )
        pooled[region] = pooler.endpoint

    password = quote(secrets["app_password"], safe="")
    # Clients verify the server's certificate and its address against the group's CA.
    ca_path = ca_file(ctx.fleet.name, ctx.group_name)
    if not pulumi.runtime.is_dry_run():
        _write_public(ca_path, accounts["ca_certificate"].strip() + "\n")
    tls = f"?sslmode=verify-full&sslrootcert={quote(str(ca_path), safe='/')}"

    def uris(endpoints: list) -> dict:
        read_eps, write_eps = endpoints
        return {
            region: {
                "read": f"postgresql://{user}:{password}@{read_eps[region]}/{db}{tls}",
                "write": f"postgresql://{user}:{password}@{write_eps[region]}/{db}{tls}",
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
                "read": f"postgresql://{user}:{password}@{ep}/{db}{READ_SUFFIX}{tls}",
                "write": f"postgresql://{user}:{password}@{ep}/{db}{tls}",
            }
            for region, ep in endpoints.items()
        }

    pulumi.export("pooled_endpoints", pooled)
    pulumi.export("ca_certificate", accounts["ca_certificate"])
    pulumi.export("ca_file", str(ca_path))
    pulumi.export("certificates", certs)
    pulumi.export(
        "pooled_connection_uris",
        pulumi.Output.secret(pulumi.Output.from_input(pooled).apply(pooled_uris)),
    )
