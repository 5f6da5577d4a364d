"""`dbfleet status`: the live state of every region, read from the fleet itself.

Where things are comes from the stack outputs (`networks-<g>`: each region's
address and stats port; `replicas-<g>`: every node and its declared role), but
every fact reported is asked of the running processes:

- each PostgreSQL node: reachable or not, its actual role (`pg_is_in_recovery`),
  and for a replica its lag behind the primary — bytes (the primary's
  `pg_stat_replication`, or the slot's retained WAL when the replica is not
  connected) and seconds (the replica's `pg_last_xact_replay_timestamp`, zero
  when it has replayed everything the primary sent);
- each region's HAProxy: whether its stats listener answers, and the state of
  every backend server it checks (write → primary, read → local nodes, then the
  backups in failover order), from its CSV stats page (or its stats socket);
- each region's PgBouncer: whether it answers, and its pools (`SHOW POOLS` on its
  admin console, asked as the application user, whom the pooler lets run SHOW
  commands and nothing else).

Probes run in parallel with short timeouts, so a dead node costs at most one
connect timeout, not one per node.
"""

from __future__ import annotations

import csv
import io
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from dbfleet import vault
from dbfleet.model.topology import slot_name
from dbfleet.ops import rollout

CONNECT_TIMEOUT_S = 2
HTTP_TIMEOUT_S = 2.0

OutputsReader = Callable[[str], "dict | None"]
SecretReader = Callable[[str, str], Mapping[str, str]]


@dataclass
class NodeStatus:
    group: str
    region: str
    index: int
    host: str
    port: int
    declared_role: str
    up: bool = False
    role: str | None = None  # what the node says it is: primary | replica
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    streaming: bool | None = None  # a replica's WAL receiver is streaming
    error: str = ""
    # False when the node could not be asked at all (no password: Vault cannot be
    # read): its state is unknown, which is not the same as down.
    probed: bool = True

    @property
    def name(self) -> str:
        return f"{self.region}-{self.index}"

    @property
    def slot(self) -> str:
        return slot_name(self.region, self.index)

    @property
    def healthy(self) -> bool:
        return self.up and self.role == self.declared_role and self.streaming is not False


@dataclass
class BackendStatus:
    listener: str  # read | write
    server: str  # node name (fra-0) when the address is a known node, else the address
    address: str
    kind: str  # primary | local | backup
    status: str  # UP, DOWN, MAINT, no check ... as HAProxy reports it

    @property
    def up(self) -> bool:
        return self.status.upper().startswith("UP") or self.status.lower() == "no check"


@dataclass
class ProxyStatus:
    group: str
    region: str
    host: str
    stats_port: int
    up: bool = False
    backends: list[BackendStatus] = field(default_factory=list)
    error: str = ""

    @property
    def healthy(self) -> bool:
        write_ok = any(b.up for b in self.backends if b.listener == "write")
        read_ok = any(b.up for b in self.backends if b.listener == "read")
        return self.up and write_ok and read_ok


@dataclass
class PoolStatus:
    database: str  # <app_db> (writes) or <app_db>_read
    clients_active: int
    clients_waiting: int
    servers_active: int
    servers_idle: int


@dataclass
class PoolerStatus:
    group: str
    region: str
    host: str
    port: int
    up: bool = False
    pools: list[PoolStatus] = field(default_factory=list)
    error: str = ""
    probed: bool = True

    @property
    def healthy(self) -> bool:
        return self.up


@dataclass
class GroupStatus:
    group: str
    primary_region: str = ""
    nodes: list[NodeStatus] = field(default_factory=list)
    proxies: list[ProxyStatus] = field(default_factory=list)
    poolers: list[PoolerStatus] = field(default_factory=list)
    error: str = ""

    @property
    def readable(self) -> bool:
        """Whether dbfleet could ask every node: False when the stacks are missing or
        the group's password cannot be read (then `status` cannot judge the group)."""
        return not (self.error and not self.nodes) and all(n.probed for n in self.nodes)

    @property
    def healthy(self) -> bool:
        return (
            not self.error
            and all(n.healthy for n in self.nodes)
            and all(p.healthy and all(b.up for b in p.backends) for p in self.proxies)
            and all(p.healthy for p in self.poolers if p.probed)
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["healthy"] = self.healthy
        doc["readable"] = self.readable
        for node, raw in zip(self.nodes, doc["nodes"], strict=True):
            raw["name"] = node.name
            raw["healthy"] = node.healthy
        for proxy, raw in zip(self.proxies, doc["proxies"], strict=True):
            raw["healthy"] = proxy.healthy
            for b, rb in zip(proxy.backends, raw["backends"], strict=True):
                rb["up"] = b.up
        for pooler, raw in zip(self.poolers, doc["poolers"], strict=True):
            raw["healthy"] = pooler.healthy
        return doc


# -- PostgreSQL --------------------------------------------------------------------------
def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def probe_node(
    node: NodeStatus, password: str, timeout_s: int = CONNECT_TIMEOUT_S
) -> dict[str, Any]:
    """Connects to one node; fills in up/role and returns what a primary knows of its
    replicas: {slot: {"bytes": int, "seconds": float | None}} (empty for a replica)."""
    import psycopg

    replicas: dict[str, dict[str, Any]] = {}
    try:
        with psycopg.connect(
            host=node.host,
            port=node.port,
            user="postgres",
            password=password,
            dbname="postgres",
            connect_timeout=timeout_s,
            autocommit=True,
            application_name="dbfleet-status",
        ) as conn:
            (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            node.up = True
            node.role = "replica" if in_recovery else "primary"
            if in_recovery:
                behind, age, streaming = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),"
                    " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),"
                    " EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"
                ).fetchone()
                node.streaming = bool(streaming)
                replicas["self"] = {
                    "unreplayed": int(behind or 0),
                    "age": float(age) if age is not None else None,
                }
            else:
                for slot, sent_behind, lag in conn.execute(
                    "SELECT s.application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), s.replay_lsn),"
                    " EXTRACT(EPOCH FROM s.replay_lag) FROM pg_stat_replication s"
                ).fetchall():
                    replicas[slot] = {
                        "bytes": int(sent_behind or 0),
                        "seconds": float(lag) if lag else None,
                    }
                for slot, retained in conn.execute(
                    "SELECT slot_name, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)"
                    " FROM pg_replication_slots WHERE NOT active AND restart_lsn IS NOT NULL"
                ).fetchall():
                    replicas.setdefault(
                        slot, {"bytes": int(retained or 0), "seconds": None, "detached": True}
                    )
    except Exception as exc:  # noqa: BLE001 — an unreachable node is a status, not a crash
        node.up = False
        node.error = _first_line(exc)
    return replicas


def _lag(nodes: list[NodeStatus], facts: dict[str, dict[str, Any]]) -> None:
    """Replication lag of each replica, from the primary's view and its own."""
    primaries = [n for n in nodes if n.up and n.role == "primary"]
    seen = facts.get(primaries[0].name, {}) if primaries else {}
    for n in nodes:
        if not n.up or n.role != "replica":
            continue
        own = facts.get(n.name, {}).get("self", {})
        from_primary = seen.get(n.slot)
        if from_primary is not None:
            n.lag_bytes = from_primary["bytes"]
        if n.lag_bytes == 0 and not own.get("unreplayed"):
            n.lag_seconds = 0.0  # caught up: no transaction is waiting to be replayed
        elif own.get("age") is not None:
            n.lag_seconds = round(own["age"], 3)
        elif from_primary is not None:
            n.lag_seconds = from_primary.get("seconds")


# -- HAProxy -----------------------------------------------------------------------------
def parse_haproxy_csv(text: str) -> list[dict[str, str]]:
    """HAProxy's `show stat` / `;csv` output as rows (the header starts with `# `)."""
    text = text.lstrip()
    if text.startswith("#"):
        text = text[1:].lstrip()
    return [dict(row) for row in csv.DictReader(io.StringIO(text)) if row.get("pxname")]


def fetch_stats_http(host: str, port: int, timeout_s: float = HTTP_TIMEOUT_S) -> str:
    with urllib.request.urlopen(f"http://{host}:{port}/;csv", timeout=timeout_s) as resp:
        return resp.read().decode("utf-8", "replace")


def fetch_stats_socket(path: str, timeout_s: float = HTTP_TIMEOUT_S) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(path)
        s.sendall(b"show stat\n")
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", "replace")


def backends_from_rows(rows: list[dict[str, str]], names: Mapping[str, str]) -> list[BackendStatus]:
    """Server rows of the `read` and `write` listeners; `names` maps host:port → node name."""
    out = []
    for row in rows:
        listener, server = row.get("pxname", ""), row.get("svname", "")
        if listener not in ("read", "write") or server in ("FRONTEND", "BACKEND"):
            continue
        address = row.get("addr") or (server.split("_", 1)[1] if "_" in server else server)
        if listener == "write":
            kind = "primary"
        else:
            kind = "backup" if row.get("bck") == "1" or server.startswith("backup") else "local"
        out.append(
            BackendStatus(
                listener, names.get(address, address), address, kind, row.get("status", "?")
            )
        )
    # Primary first, then local nodes, then backups in the proxy's failover order.
    rank = {"primary": 0, "local": 1, "backup": 2}
    return sorted(out, key=lambda b: (b.listener != "write", rank[b.kind]))


def probe_proxy(
    proxy: ProxyStatus,
    names: Mapping[str, str],
    socket_path: Callable[[], str | None] | None = None,
) -> ProxyStatus:
    """Reads the proxy's CSV stats over HTTP; when the listener does not answer,
    from its stats socket (`socket_path()`, asked only then)."""
    try:
        text = fetch_stats_http(proxy.host, proxy.stats_port)
    except (OSError, urllib.error.URLError) as exc:
        path = socket_path() if socket_path else None
        if not path or not os.path.exists(path):
            proxy.error = _first_line(exc)
            return proxy
        try:
            text = fetch_stats_socket(path)
        except OSError as exc2:
            proxy.error = f"{_first_line(exc)}; stats socket: {_first_line(exc2)}"
            return proxy
    proxy.up = True
    proxy.backends = backends_from_rows(parse_haproxy_csv(text), names)
    return proxy


# -- PgBouncer ---------------------------------------------------------------------------
def pools_from_rows(rows: list[dict[str, Any]], databases: tuple[str, ...]) -> list[PoolStatus]:
    """`SHOW POOLS` rows (column name → value) of the given databases, in that order."""
    out = []
    for row in rows:
        if row.get("database") not in databases:
            continue
        out.append(
            PoolStatus(
                str(row["database"]),
                int(row.get("cl_active") or 0),
                int(row.get("cl_waiting") or 0),
                int(row.get("sv_active") or 0),
                int(row.get("sv_idle") or 0),
            )
        )
    return sorted(out, key=lambda p: databases.index(p.database))


def show_pools(
    host: str, port: int, user: str, password: str, timeout_s: int = CONNECT_TIMEOUT_S
) -> list[dict[str, Any]]:
    """`SHOW POOLS` on a PgBouncer's admin console (database `pgbouncer`)."""
    import psycopg

    # The admin console speaks the simple query protocol only: a ClientCursor with
    # no parameters sends the text as it is.
    with psycopg.connect(
        host=host,
        port=port,
        user=user,
        password=password,
        dbname="pgbouncer",
        connect_timeout=timeout_s,
        autocommit=True,
        cursor_factory=psycopg.ClientCursor,
    ) as conn:
        cur = conn.execute("SHOW POOLS")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def probe_pooler(
    pooler: PoolerStatus, user: str, password: str, databases: tuple[str, ...]
) -> PoolerStatus:
    try:
        rows = show_pools(pooler.host, pooler.port, user, password)
    except Exception as exc:  # noqa: BLE001 — an unreachable pooler is a status, not a crash
        pooler.error = _first_line(exc)
        return pooler
    pooler.up = True
    pooler.pools = pools_from_rows(rows, databases)
    return pooler


# -- one group ---------------------------------------------------------------------------
def _default_outputs(stack: str) -> dict | None:
    return rollout.stack_outputs(stack)


def _default_secrets(mount: str, path: str) -> Mapping[str, str]:
    return vault.read_group_secrets(vault.client_from_env(), mount, path)


def collect_group(
    group: str,
    *,
    outputs: OutputsReader = _default_outputs,
    secrets: SecretReader = _default_secrets,
    pool: ThreadPoolExecutor | None = None,
) -> GroupStatus:
    status = GroupStatus(group)
    nets = outputs(f"networks-{group}") or {}
    reps = outputs(f"replicas-{group}") or {}
    if not nets.get("regions") or not reps.get("nodes"):
        missing = [
            s for s, o in ((f"networks-{group}", nets), (f"replicas-{group}", reps)) if not o
        ]
        status.error = (
            f"{', '.join(missing) or f'replicas-{group}'} not deployed: run dbfleet up {group}"
        )
        return status
    status.primary_region = reps.get("primary_region", "")
    # The primary's region first, then the others (outputs come sorted by name).
    order = sorted(reps["nodes"], key=lambda r: (r != status.primary_region, r))
    for region in order:
        node = reps["nodes"][region]
        for k, m in enumerate(node.get("members") or [node]):
            status.nodes.append(
                NodeStatus(
                    group,
                    region,
                    k,
                    m["host"],
                    int(m["port"]),
                    m.get("role") or node.get("role", ""),
                )
            )
    names = {f"{n.host}:{n.port}": n.name for n in status.nodes}

    def socket_of(region: str) -> Callable[[], str | None]:
        def path() -> str | None:
            data_root = (outputs(f"accounts-{group}") or {}).get("data_root")
            return f"{data_root}/proxy-{region}/haproxy.sock" if data_root else None

        return path

    for region in sorted(nets["regions"], key=lambda r: (r != status.primary_region, r)):
        net = nets["regions"][region]
        status.proxies.append(ProxyStatus(group, region, net["host"], int(net["stats_port"])))
        if net.get("pool_port"):  # a networks stack from before pooling has none
            status.poolers.append(PoolerStatus(group, region, net["host"], int(net["pool_port"])))
    app_password = None
    try:
        group_secrets = secrets(reps["secret_mount"], reps["secret_path"])
        password = group_secrets["superuser_password"]
        app_password = group_secrets.get("app_password")
    except Exception as exc:  # noqa: BLE001
        status.error = f"cannot read the group's superuser password from Vault: {_first_line(exc)}"
        password = None
    app_user, app_db = reps.get("app_user", "app"), reps.get("app_db", "app")

    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=8)
    try:
        node_jobs = (
            {n.name: pool.submit(probe_node, n, password) for n in status.nodes}
            if password is not None
            else {}
        )
        proxy_jobs = [
            pool.submit(probe_proxy, p, names, socket_of(p.region)) for p in status.proxies
        ]
        pooler_jobs = (
            [
                pool.submit(probe_pooler, p, app_user, app_password, (app_db, f"{app_db}_read"))
                for p in status.poolers
            ]
            if app_password is not None
            else []
        )
        facts = {name: job.result() for name, job in node_jobs.items()}
        for job in proxy_jobs + pooler_jobs:
            job.result()
    finally:
        if own_pool:
            pool.shutdown(wait=True)
    if password is None:
        for n in status.nodes:
            n.probed = False
            n.error = "not probed: no password (Vault)"
    if app_password is None:
        for p in status.poolers:
            p.probed = False
            p.error = "not probed: no application password (Vault)"
    _lag(status.nodes, facts)
    return status


def collect(
    groups: list[str], *, outputs: OutputsReader | None = None, **kwargs: Any
) -> list[GroupStatus]:
    """Every group's status; the stack outputs are read first, all in parallel."""
    if outputs is None:
        fetched = rollout.many_outputs(
            [f"{layer}-{g}" for g in groups for layer in ("networks", "replicas")]
        )

        def outputs(stack: str) -> dict | None:
            if stack not in fetched:  # accounts-<g>, only for the stats socket fallback
                fetched[stack] = rollout.stack_outputs(stack)
            return fetched[stack]

    with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
        jobs = [pool.submit(collect_group, g, outputs=outputs, **kwargs) for g in groups]
        return [j.result() for j in jobs]


# -- rendering ---------------------------------------------------------------------------
def _state_text(n: NodeStatus) -> str:
    if not n.probed:
        return "?"
    return "up" if n.up else "DOWN"


def _lag_text(n: NodeStatus) -> str:
    if n.role != "replica" or not n.up:
        return "-"
    b = "?" if n.lag_bytes is None else _bytes(n.lag_bytes)
    s = "?" if n.lag_seconds is None else f"{n.lag_seconds:.1f} s"
    return f"{b}, {s}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def render(groups: list[GroupStatus]) -> str:
    lines: list[str] = []
    for g in groups:
        if lines:
            lines.append("")
        head = f"group {g.group}"
        if g.primary_region:
            head += f"  primary {g.primary_region}"
        head += "  healthy" if g.healthy else ("  DEGRADED" if g.readable else "  UNKNOWN")
        lines.append(head)
        if g.error:
            lines.append(f"  ! {g.error}")
        if g.nodes:
            lines.append(
                f"  {'node':<8} {'address':<22} {'role':<9} {'state':<6} {'lag (bytes, seconds)':<22} note"
            )
            for n in g.nodes:
                role = n.role or n.declared_role
                note = n.error
                if n.up and n.role != n.declared_role:
                    note = f"declared {n.declared_role}, runs as {n.role}"
                elif n.up and n.streaming is False:
                    note = "not streaming from the primary"
                lines.append(
                    f"  {n.name:<8} {n.host + ':' + str(n.port):<22} {role:<9} "
                    f"{_state_text(n):<6} {_lag_text(n):<22} {note}".rstrip()
                )
        if g.proxies:
            lines.append(f"  {'proxy':<8} {'stats':<22} {'state':<6} backends")
            for p in g.proxies:
                if not p.up:
                    lines.append(
                        f"  {p.region:<8} {p.host + ':' + str(p.stats_port):<22} {'DOWN':<6} {p.error}"
                    )
                    continue
                parts = []
                for listener in ("write", "read"):
                    bs = [b for b in p.backends if b.listener == listener]
                    parts.append(
                        f"{listener}: "
                        + ", ".join(
                            f"{b.server}{' (backup)' if b.kind == 'backup' else ''} {b.status}"
                            for b in bs
                        )
                    )
                lines.append(
                    f"  {p.region:<8} {p.host + ':' + str(p.stats_port):<22} {'up':<6} {'; '.join(parts)}"
                )
        if g.poolers:
            lines.append(f"  {'pooler':<8} {'address':<22} {'state':<6} pools")
            for pl in g.poolers:
                where = f"{pl.host}:{pl.port}"
                state = "up" if pl.up else ("?" if not pl.probed else "DOWN")
                lines.append(f"  {pl.region:<8} {where:<22} {state:<6} {_pools_text(pl)}".rstrip())
    return "\n".join(lines)


def _pools_text(pooler: PoolerStatus) -> str:
    if not pooler.up:
        return pooler.error
    if not pooler.pools:
        return "no pools yet (a pool opens with its first client)"
    return "; ".join(
        f"{p.database}: {p.clients_active} clients ({p.clients_waiting} waiting), "
        f"{p.servers_active} active + {p.servers_idle} idle servers"
        for p in pooler.pools
    )
