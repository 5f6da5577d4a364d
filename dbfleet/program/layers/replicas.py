"""replicas-<group>: the group's etcd cluster (a member per region) and its PostgreSQL
nodes run by Patroni, the fleet file's primary preferred as leader."""

from __future__ import annotations

import json
import ssl
import urllib.request

import pulumi

from components import backup
from components.etcd import EtcdMember, EtcdMemberArgs
from components.patroni import (
    GroupLeader,
    GroupLeaderArgs,
    PatroniNode,
    PatroniNodeArgs,
    dcs_config,
    member_name,
)
from components.tls import ServerCertificate, ServerCertificateArgs, TlsFiles
from dbfleet import vault
from dbfleet.model.topology import LOCAL_SOURCE
from dbfleet.program.layers.context import LayerContext
from dbfleet.program.upstream import UpstreamError, prefetch, read_outputs, require_regions

APP_DB = "app"
APP_USER = "app"


def _node_hosts(net: dict) -> list[str]:
    """Node k's address: `node_hosts[k]` (a networks stack of an older dbfleet has
    only the region's `host`, which every node of the local target shares)."""
    return list(net.get("node_hosts") or [net["host"]] * len(net["node_ports"]))


def build(ctx: LayerContext) -> None:
    # This stack's own outputs first, alone: the engine rewrites this stack's state file
    # after every read, and reading a state file while it is rewritten can fail (the
    # file backend's metadata sidecar is not written atomically). The upstream stacks'
    # files are not written during this run, so those reads go out together.
    previous = _previous_primary(str(ctx.stack))
    previous_repo = _previous_repo_region(str(ctx.stack)) if ctx.target == "ssh" else None
    prefetch(*ctx.stack.upstream_stacks())
    accounts = read_outputs(
        ctx.stack.upstream("accounts"),
        ("user", "data_root", "secret_mount", "secret_path", "pki_mount", "ca_certificate"),
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
    # Backups (docs/backups.md): every group on the local target; on the ssh target a
    # group whose fleet file names `backup:` (the repository's host is a choice).
    backups = ctx.target == "local" or ctx.group.backup is not None
    passwords = pulumi.Output.secret(
        vault.read_group_secrets(
            vault.client_from_env(),
            accounts["secret_mount"],
            accounts["secret_path"],
            also=(vault.BACKUP_KEY,) if backups else (),
        )
    )
    primary_region = ctx.group.primary
    allowed = tuple(sorted({h for r in regions.values() for h in _node_hosts(r)}))
    if ctx.target == "ssh":
        # The operators' networks (dbfleet status, failover) the fleet file names;
        # the firewall admits them too.
        allowed = (*allowed, *ctx.fleet.firewall.operators)
    else:
        # On one machine the kernel gives every loopback client the source address
        # 127.0.0.1, whatever address it connects to (libpq cannot bind another),
        # so replication and proxy connections arrive from there. The group's
        # passwords (scram-sha-256) are what keep other groups out on this target.
        allowed = (*allowed, LOCAL_SOURCE)

    # The preferred leader first, then the nodes of every region in the file's order.
    members = [
        (region, k)
        for region in [primary_region, *(r for r in ctx.group.regions if r != primary_region)]
        for k in range(ctx.group.regions[region].nodes)
    ]
    scope = f"{ctx.fleet.name}-{ctx.group_name}"
    dcs = dcs_config(
        ctx.group.durability,
        ctx.group.max_lag_on_failover_bytes,
        ctx.fleet.limits.max_connections,
        archive_command=(
            backup.archive_command(accounts["data_root"], scope, per_host=ctx.target == "ssh")
            if backups
            else None
        ),
    )
    certs: dict[str, ServerCertificate] = {}
    etcd = _etcd_members(ctx, accounts, regions, scope, certs)

    def address(region: str, k: int) -> tuple[str, int, int]:
        net = regions[region]
        return _node_hosts(net)[k], net["node_ports"][k], _rest_ports(net)[k]

    # Clients verify a node under the address they dialled: its own, or any region's
    # proxy of the group (HAProxy passes TLS through; writes may reach any node).
    proxy_hosts = tuple(regions[r]["host"] for r in ctx.group.regions)

    def tls(region: str, k: int) -> TlsFiles:
        cert = ServerCertificate(
            f"{member_name(region, k)}-tls",
            ServerCertificateArgs(
                mount=accounts["pki_mount"],
                common_name=member_name(region, k),
                ip_sans=(_node_hosts(regions[region])[k], *proxy_hosts),
                ttl_s=ctx.fleet.tls.cert_ttl_s,
                renew_fraction=ctx.fleet.tls.renew_fraction,
            ),
        )
        certs[member_name(region, k)] = cert
        return TlsFiles.of(cert, accounts["ca_certificate"])

    def args(region: str, k: int) -> PatroniNodeArgs:
        host, port, rest = address(region, k)
        return PatroniNodeArgs(
            connection=ctx.node_connection(region, k),
            run_as=accounts["user"],
            node_dir=f"{accounts['data_root']}/{region}-{k}",
            member=member_name(region, k),
            scope=scope,
            host=host,
            port=port,
            rest_port=rest,
            # Its own region's member first: the nearest, and the one it shares a
            # fate with.
            etcd_hosts=_etcd_hosts(regions, list(ctx.group.regions), region),
            allowed_hosts=allowed,
            dcs=dcs,
            passwords=passwords,
            tls=tls(region, k),
            fleet=ctx.fleet.name,
        )

    if previous and previous != primary_region:
        # Made visible in every preview: a switchover is the one change here that
        # moves writes.
        pulumi.log.warn(
            f"switchover in group {ctx.group_name}: {previous} -> {primary_region}: Patroni "
            f"stops {previous}'s leader cleanly (every committed write reaches "
            f"{member_name(primary_region, 0)} first), promotes {member_name(primary_region, 0)}, "
            "and the other nodes follow it"
        )
    _warn_if_failed_over(
        ctx,
        [member_name(*m) for m in members],
        [address(*m) for m in members],
        accounts["ca_certificate"],
    )
    # The preferred leader's node first: on a new group it bootstraps the cluster
    # (initdb), and every other node clones it.
    primary = PatroniNode(
        member_name(*members[0]), args(*members[0]), pulumi.ResourceOptions(depends_on=etcd)
    )
    nodes = {members[0]: primary}
    for region, k in members[1:]:
        nodes[(region, k)] = PatroniNode(
            member_name(region, k), args(region, k), pulumi.ResourceOptions(depends_on=[primary])
        )
    leader = GroupLeader(
        "leader",
        GroupLeaderArgs(
            connection=ctx.node_connection(*members[0]),
            run_as=accounts["user"],
            scope=scope,
            members={member_name(*m): address(*m) for m in members},
            preferred=member_name(*members[0]),
            dcs=dcs,
            passwords=passwords,
            ca=accounts["ca_certificate"],
            app_db=APP_DB,
            app_user=APP_USER,
        ),
        pulumi.ResourceOptions(depends_on=list(nodes.values())),
    )
    if backups and ctx.target == "ssh":
        repo_region = repo_region_of(ctx, previous_repo)
        _host_backups(ctx, accounts, regions, members, scope, passwords, leader, repo_region)
    elif backups:
        ports = {m: address(*m)[1] for m in members}
        _backups(ctx, accounts, ports, scope, passwords, leader)

    def node_out(region: str) -> dict:
        mine = sorted(((k, n) for (r, k), n in nodes.items() if r == region), key=lambda x: x[0])
        first = mine[0][1]
        hosts = _node_hosts(regions[region])
        role = "primary" if region == primary_region else "replica"

        def role_of(k: int) -> str:
            return "primary" if (region, k) == members[0] else "replica"

        return {
            "host": hosts[0],
            "port": first.port,
            "role": role,
            "members": [
                {"host": hosts[k], "port": n.port, "role": role_of(k), "rest_port": n.rest_port}
                for k, n in mine
            ],
        }

    pulumi.export("primary_region", primary_region)
    pulumi.export("ca_certificate", accounts["ca_certificate"])
    # When each node's certificate expires (epoch seconds): `dbfleet status` shows the days.
    pulumi.export("certificates", {name: c.expiration for name, c in certs.items()})
    pulumi.export("nodes", {region: node_out(region) for region in ctx.group.regions})
    pulumi.export("secret_mount", accounts["secret_mount"])
    pulumi.export("secret_path", accounts["secret_path"])
    pulumi.export("app_db", APP_DB)
    pulumi.export("app_user", APP_USER)
    pulumi.export("read_lag_budget", ctx.group.read_lag_budget_bytes)
    pulumi.export(
        "etcd",
        {r: f"{_node_hosts(regions[r])[0]}:{regions[r]['etcd_port']}" for r in ctx.group.regions},
    )


def _backups(
    ctx: LayerContext,
    accounts: dict,
    ports: dict[tuple[str, int], int],
    scope: str,
    passwords: pulumi.Output,
    leader: GroupLeader,
) -> None:
    """The group's stanza, repository and scheduler, once its leader runs with the
    archive command (docs/backups.md)."""
    root = accounts["data_root"]
    spec = ctx.group.backups
    backup.GroupBackups(
        "backups",
        backup.GroupBackupsArgs(
            connection=ctx.connection,
            run_as=accounts["user"],
            data_root=root,
            stanza=scope,
            # The preferred leader first (ports keeps the members' order).
            nodes=tuple(
                backup.Node(f"{root}/{region}-{k}/pgdata", port, f"{root}/{region}-{k}/run")
                for (region, k), port in ports.items()
            ),
            schedule_hours=spec.schedule_hours,
            full_every_days=spec.full_every_days,
            full_keep=spec.full_keep,
            secrets=passwords,
            fleet=ctx.fleet.name,
        ),
        pulumi.ResourceOptions(depends_on=[leader]),
    )
    pulumi.export(
        "backup",
        {
            "stanza": scope,
            "dir": backup.backup_dir(root),
            "data_root": root,
            "user": accounts["user"],
            "schedule_hours": spec.schedule_hours,
            "full_every_days": spec.full_every_days,
            "full_keep": spec.full_keep,
        },
    )


def _host_backups(
    ctx: LayerContext,
    accounts: dict,
    regions: dict,
    members: list[tuple[str, int]],
    scope: str,
    passwords: pulumi.Output,
    leader: GroupLeader,
    repo_region: str,
) -> None:
    """The ssh target: the repository on the first host of the group's repository
    region, pgBackRest's TLS server on every host (docs/backups.md)."""
    root = accounts["data_root"]
    spec = ctx.group.backups
    repo_member = (repo_region, 0)

    def addr(m: tuple[str, int]) -> str:
        return _node_hosts(regions[m[0]])[m[1]]

    def node(m: tuple[str, int]) -> backup.Node:
        d = f"{root}/{member_name(*m)}"
        return backup.Node(f"{d}/pgdata", regions[m[0]]["node_ports"][m[1]], f"{d}/run")

    def args(m: tuple[str, int]) -> backup.HostBackupsArgs:
        port = regions[m[0]].get("backup_port") or ctx.fleet.network.backup_port
        cert = backup.BackupCertificate(
            f"{member_name(*m)}-pgbackrest-tls",
            accounts["pki_mount"],
            addr(m),
            ctx.fleet.tls.cert_ttl_s,
            ctx.fleet.tls.renew_fraction,
        )
        repo = m == repo_member
        return backup.HostBackupsArgs(
            connection=ctx.node_connection(*m),
            run_as=accounts["user"],
            data_root=root,
            stanza=scope,
            name=member_name(*m),
            node=node(m),
            address=addr(m),
            tls_port=int(port),
            repo=repo,
            repo_address=addr(repo_member),
            repo_name=member_name(*repo_member),
            peers=tuple(backup.Peer(addr(o), node(o)) for o in members if o != m) if repo else (),
            schedule_hours=spec.schedule_hours,
            full_every_days=spec.full_every_days,
            full_keep=spec.full_keep,
            secrets=passwords,
            tls=TlsFiles(cert.certificate, cert.private_key, accounts["ca_certificate"]),
            fleet=ctx.fleet.name,
        )

    # The nodes' TLS servers first: the repository host's stanza-create and check reach them.
    others = [
        backup.HostBackups(
            f"backups-{member_name(*m)}", args(m), pulumi.ResourceOptions(depends_on=[leader])
        )
        for m in members
        if m != repo_member
    ]
    backup.HostBackups(
        f"backups-{member_name(*repo_member)}",
        args(repo_member),
        pulumi.ResourceOptions(depends_on=[leader, *others]),
    )
    host = (ctx.group.regions[repo_region].hosts or [])[0]
    pulumi.export(
        "backup",
        {
            "stanza": scope,
            "dir": backup.host_backup_dir(root, member_name(*repo_member)),
            "data_root": root,
            "user": accounts["user"],
            "schedule_hours": spec.schedule_hours,
            "full_every_days": spec.full_every_days,
            "full_keep": spec.full_keep,
            "target": "ssh",
            "repo_region": repo_region,
            "repo_address": addr(repo_member),
            # where `dbfleet backup` and status log in to ask the repository
            "repo_ssh": {"host": host.address, "port": host.port},
        },
    )


def repo_region_of(ctx: LayerContext, previous: str | None) -> str:
    """Where the repository is: the fleet file's `repo_region`; without one, where it
    already is (the default, a non-primary region, would otherwise move with every
    switchover — and a moved repository is a new, empty one); else the default."""
    named = ctx.group.backups.repo_region
    if named:
        if previous and previous != named and previous in ctx.group.regions:
            pulumi.log.warn(
                f"group {ctx.group_name}: the backup repository moves from {previous} to "
                f"{named}: a new, empty repository (full backup first); the backups in "
                f"{previous} are deleted with its host's pgBackRest resource"
            )
        return named
    if previous and previous in ctx.group.regions:
        return previous
    return ctx.group.backup_repo_region


def _previous_repo_region(stack: str) -> str | None:
    """The repository region this stack deployed last time (None: none yet)."""
    try:
        got = read_outputs(stack, ()).get("backup") or {}
    except UpstreamError:
        return None
    region = got.get("repo_region") if isinstance(got, dict) else None
    return str(region) if region else None


def _rest_ports(net: dict) -> list[int]:
    """Node k's Patroni REST port (a networks stack of an older dbfleet has none:
    the default plan's)."""
    return list(net.get("patroni_ports") or [8008 + k for k in range(len(net["node_ports"]))])


def _etcd_hosts(regions: dict, group_regions: list[str], first: str) -> tuple[str, ...]:
    order = [first, *(r for r in group_regions if r != first)]
    return tuple(f"{_node_hosts(regions[r])[0]}:{regions[r]['etcd_port']}" for r in order)


def _etcd_members(
    ctx: LayerContext,
    accounts: dict,
    regions: dict,
    scope: str,
    certs: dict[str, ServerCertificate],
) -> list:
    """One etcd member per region of the group, beside the region's first node:
    the group's consensus never spans another group (nor leaves its zone). Each
    has a certificate from the group's CA naming its address (recorded in `certs`
    as `etcd-<region>`): clients verify it, and it admits only clients with a
    certificate from that CA."""

    def tls(region: str) -> TlsFiles:
        cert = ServerCertificate(
            f"etcd-{region}-tls",
            ServerCertificateArgs(
                mount=accounts["pki_mount"],
                common_name=f"etcd-{region}",
                ip_sans=(_node_hosts(regions[region])[0],),
                ttl_s=ctx.fleet.tls.cert_ttl_s,
                renew_fraction=ctx.fleet.tls.renew_fraction,
            ),
        )
        certs[f"etcd-{region}"] = cert
        return TlsFiles.of(cert, accounts["ca_certificate"])

    cluster = tuple(
        (r, _node_hosts(regions[r])[0], regions[r]["etcd_peer_port"]) for r in ctx.group.regions
    )
    clients = tuple(
        f"{_node_hosts(regions[r])[0]}:{regions[r]['etcd_port']}" for r in ctx.group.regions
    )
    # One member after another, never all at once: an update that restarts the
    # members (new flags, peers moving from http to https) then takes only one of
    # them down at a time, and etcd.sh waits until it serves again before the next
    # starts. A brand-new group still bootstraps: the first members start "new"
    # (nobody answers before a quorum is up), the last ones join the quorum.
    members: list[EtcdMember] = []
    for region in ctx.group.regions:
        members.append(
            EtcdMember(
                f"etcd-{region}",
                EtcdMemberArgs(
                    connection=ctx.node_connection(region, 0),
                    run_as=accounts["user"],
                    etcd_dir=f"{accounts['data_root']}/etcd-{region}",
                    member_name=region,
                    host=_node_hosts(regions[region])[0],
                    client_port=regions[region]["etcd_port"],
                    peer_port=regions[region]["etcd_peer_port"],
                    cluster=cluster,
                    clients=clients,
                    token=scope,
                    tls=tls(region),
                    fleet=ctx.fleet.name,
                ),
                pulumi.ResourceOptions(depends_on=members[-1:]),
            )
        )
    return members


def _warn_if_failed_over(
    ctx: LayerContext, names: list[str], addresses: list[tuple[str, int, int]], ca: str
) -> None:
    """After an automatic failover the live leader is not the fleet file's
    preferred one: say so, with both ways out, instead of switching back unasked."""
    live = live_leader([(host, rest) for host, _, rest in addresses], ca)
    if live is None or live == names[0]:
        return
    region = live.rsplit("-", 1)[0]
    pulumi.log.warn(
        f"group {ctx.group_name} is led by {live}, not by {names[0]} as the fleet file "
        f"prefers (a failover happened). Either keep {live}: set groups.{ctx.group_name}."
        f"primary: {region} in the fleet file and commit it; or switch back: "
        f"`dbfleet up {ctx.group_name}` (a switchover to {names[0]}, no committed write lost)"
    )


def live_leader(rest: list[tuple[str, int]], ca: str, timeout_s: float = 1.0) -> str | None:
    """The group's live leader as Patroni's REST API reports it (None when no
    member answers: a new group, or one this machine cannot reach). HTTPS, the
    member verified against the group's CA `ca` (PEM) under the address dialled."""
    try:
        context = ssl.create_default_context(cadata=ca)
    except (ssl.SSLError, ValueError):
        return None  # no usable CA yet (a preview of a new group)
    for host, port in rest:
        try:
            with urllib.request.urlopen(
                f"https://{host}:{port}/cluster", timeout=timeout_s, context=context
            ) as r:
                view = json.load(r)
        except (OSError, ValueError):
            continue
        for m in view.get("members", []):
            if m.get("role") in ("leader", "master", "primary"):
                return str(m["name"])
        return None
    return None


def _previous_primary(stack: str) -> str | None:
    """The primary region this stack deployed last time (None on first deploy)."""
    try:
        return read_outputs(stack, ()).get("primary_region")
    except UpstreamError:
        return None
