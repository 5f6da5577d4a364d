"""`dbfleet status`: the live state of every region group, read from the fleet itself.

Where things are comes from the stack outputs (`networks-<g>`: each region's
address and stats port; `replicas-<g>`: every node, its declared role, its Patroni
REST port, the group's etcd members and its `read_lag_budget`), but every fact
reported is asked of the running processes:

- Patroni's view of the group (`GET /cluster`, asked of every node's REST API in
  parallel; the first answer that names a leader wins): the live leader and its
  timeline, and each member's Patroni role and state. The declared primary is
  only the fleet file's preference: a live leader elsewhere means a failover
  happened, which is reported but is not by itself a fault;
- each etcd member of the group (`GET /health`): up or down, and whether the
  members that answer still form a quorum (without one Patroni cannot fail over);
  etcd admits only clients with a certificate from the group's CA, so status asks
  Vault for a short-lived one (role `server` of the group's PKI, 5 minutes) and
  holds its key in a private temporary file only while loading it;
- each PostgreSQL node: reachable or not, its actual role (`pg_is_in_recovery`),
  whether a replica's WAL receiver streams, and its lag behind the leader — bytes
  from the leader's `pg_stat_replication` (keyed by application_name, the Patroni
  member name) or, for a replica that is not connected, the WAL its slot retains;
  seconds from the replica's `pg_last_xact_replay_timestamp`, 0 whenever the
  leader has nothing outstanding for it, never negative;
- each region's HAProxy: whether its stats listener answers, and the state of
  every backend server it checks, from its CSV stats page (or its stats socket).
  Each server is judged against what Patroni says it should be: in the write
  listener exactly the leader is UP; a read server is UP unless its node is down
  or behind the read lag budget (then its DOWN is expected, and the node carries
  the fault);
- each region's PgBouncer: whether it answers, and its pools (`SHOW POOLS` on its
  admin console, asked as the application user, whom the pooler lets run SHOW
  commands and nothing else).

A group is healthy when every node runs under Patroni in the role Patroni gives
it, every replica streams within the lag budget, there is a leader, every etcd
member is up, and every proxy backend is in the state it should be in.

Probes run in parallel with short timeouts, so a dead node costs at most one
connect timeout, not one per node.
"""

from __future__ import annotations

import csv
import io
import json
import os
import socket
import ssl
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from dbfleet import vault
from dbfleet.ops import rollout

CONNECT_TIMEOUT_S = 2
HTTP_TIMEOUT_S = 2.0

OutputsReader = Callable[[str], "dict | None"]
SecretReader = Callable[[str, str], Mapping[str, str]]
# (PKI mount) -> (certificate PEM, private key PEM): a client certificate for etcd.
ClientCertIssuer = Callable[[str], tuple[str, str]]
# How long status's etcd client certificate lives: one run, with room to spare.
CLIENT_CERT_TTL_S = 300

# Patroni's roles (GET /cluster) of the member that holds the leader key.
LEADER_ROLES = ("leader", "standby_leader")


def member_name(region: str, index: int) -> str:
    """Patroni's member name of node `index` of `region` (also the walsender's
    application_name)."""
    return f"{region}-{index}"


def member_slot(name: str) -> str:
    """The replication slot Patroni keeps for a member: its name with `-` as `_`."""
    return name.replace("-", "_")


@dataclass
class NodeStatus:
    group: str
    region: str
    index: int
    host: str
    port: int
    declared_role: str
    up: bool = False
    role: str | None = None  # what PostgreSQL says it is: primary | replica
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    streaming: bool | None = None  # a replica's WAL receiver is streaming
    error: str = ""
    # False when the node could not be asked at all (no password: Vault cannot be
    # read): its state is unknown, which is not the same as down.
    probed: bool = True
    rest_port: int | None = None  # its Patroni REST API, on `host`
    # Patroni's view (GET /cluster): None when Patroni could not be asked;
    # patroni_state "absent" when the cluster has no such member (Patroni does
    # not run there, or its member key expired).
    patroni_role: str | None = None  # leader | replica | sync_standby | standby_leader
    patroni_state: str | None = None  # running | stopped | starting | ... | absent
    timeline: int | None = None
    patroni_lag: int | str | None = None  # Patroni's own lag figure (bytes or "unknown")
    lag_budget: int | None = None  # the group's read_lag_budget (bytes)

    @property
    def name(self) -> str:
        return member_name(self.region, self.index)

    @property
    def slot(self) -> str:
        return member_slot(self.name)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_leader(self) -> bool:
        return self.patroni_role in LEADER_ROLES

    @property
    def lagging(self) -> bool:
        """Behind the leader by more than the read lag budget (HAProxy takes it out
        of the read pool)."""
        return (
            self.up
            and self.role == "replica"
            and self.lag_budget is not None
            and self.lag_bytes is not None
            and self.lag_bytes > self.lag_budget
        )

    @property
    def problem(self) -> str:
        """Why the node is not healthy; "" when it is."""
        if not self.probed or not self.up:
            return self.error or ("not probed" if not self.probed else "down")
        return self._patroni_problem() or self._replica_problem()

    def _patroni_problem(self) -> str:
        if self.patroni_state == "absent":
            return "Patroni does not run it (not a member of the cluster)"
        if self.patroni_state not in (None, "running"):
            return f"Patroni: {self.patroni_state}"
        if self.patroni_role is not None:
            if self.is_leader and self.role != "primary":
                return "Patroni's leader, but PostgreSQL is still in recovery"
            if not self.is_leader and self.role == "primary":
                return "runs as a primary but is not Patroni's leader"
        return ""

    def _replica_problem(self) -> str:
        if self.role == "replica" and self.streaming is False:
            return "not streaming from the leader"
        if self.lagging:
            return (
                f"lag above the read_lag_budget ({_bytes(self.lag_budget or 0)}): "
                "out of the read pool until it catches up"
            )
        return ""

    @property
    def healthy(self) -> bool:
        return not self.problem


@dataclass
class BackendStatus:
    listener: str  # read | write
    server: str  # node name (fra-0) when the address is a known node, else the address
    address: str
    kind: str  # write | local | backup
    status: str  # UP, DOWN, MAINT, no check ... as HAProxy reports it
    # What Patroni's view says the state should be: True (must be UP), False (must
    # be DOWN: a write server that is not the leader), None (either: its node is
    # down or lagging, a fault already counted on the node, or nothing is known).
    expected_up: bool | None = True
    note: str = ""  # why its DOWN is expected (node down, lag) or what is wrong

    @property
    def up(self) -> bool:
        return self.status.upper().startswith("UP") or self.status.lower() == "no check"

    @property
    def ok(self) -> bool:
        return self.expected_up is None or self.up == self.expected_up


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
class EtcdStatus:
    region: str
    endpoint: str  # host:port, the member's client URL
    up: bool = False  # it answered /health at all
    healthy: bool = False  # it answered {"health": "true"}: it sees a raft leader
    error: str = ""
    probed: bool = True  # False: not asked (no client certificate for it)


# A backup may be this much later than its schedule before status calls it stale: the
# scheduler polls every minute and a full backup of a large group takes a while.
BACKUP_GRACE_S = 3600
# 16 MiB WAL segments (PostgreSQL's default, which dbfleet keeps).
WAL_SEGMENTS_PER_XLOGID = 0x100


@dataclass
class BackupStatus:
    """A group's backups (pgBackRest) and its leader's WAL archiving (pg_stat_archiver)."""

    stanza: str
    schedule_hours: int
    asked: bool = False
    error: str = ""  # why the repository could not be read
    stanza_status: str = ""  # pgBackRest's status message ("ok", "no valid backups", ...)
    last_full: str = ""  # label
    last_full_age_s: float | None = None
    last_diff: str = ""
    last_diff_age_s: float | None = None
    newest_age_s: float | None = None
    repo_bytes: int | None = None
    # the leader's archiver
    archived_wal: str = ""
    archived_age_s: float | None = None
    archive_lag_segments: int | None = None
    failed_count: int = 0
    failed_wal: str = ""
    failing: bool = False

    @property
    def problems(self) -> list[str]:
        out = []
        if self.error:
            out.append(f"backups: {self.error}")
        if not self.asked:
            pass
        elif self.newest_age_s is None:
            out.append("no backup yet (the scheduler takes the first within a minute of `up`)")
        elif self.newest_age_s > self.schedule_hours * 3600 + BACKUP_GRACE_S:
            out.append(
                f"the newest backup is {self.newest_age_s / 3600:.1f} h old; the schedule "
                f"allows {self.schedule_hours} h"
            )
        if self.failing:
            out.append(
                f"WAL archiving fails on the leader ({self.failed_count} failures, last "
                f"{self.failed_wal or '?'}): see the repository and <data root>/pgbackrest/log"
            )
        return out


def wal_segment_number(name: str) -> int | None:
    """The position of a WAL segment file name (timeline ignored); None if not one."""
    if len(name) < 24 or not all(c in "0123456789ABCDEF" for c in name[:24]):
        return None
    return int(name[8:16], 16) * WAL_SEGMENTS_PER_XLOGID + int(name[16:24], 16)


def apply_backup_info(b: BackupStatus, doc: Mapping[str, Any], now: float) -> None:
    """Fills `b` from `{"info": <pgbackrest info --output=json>, "repo_bytes": n}`."""
    stanzas = doc.get("info") or []
    stanza = stanzas[0] if stanzas else {}
    b.asked = True
    b.repo_bytes = doc.get("repo_bytes")
    b.stanza_status = str((stanza.get("status") or {}).get("message", ""))
    backups = sorted(stanza.get("backup") or [], key=lambda x: x["timestamp"]["stop"])
    for kind in ("full", "diff"):
        mine = [x for x in backups if x.get("type") == kind]
        if mine:
            setattr(b, f"last_{kind}", mine[-1]["label"])
            setattr(b, f"last_{kind}_age_s", max(0.0, now - mine[-1]["timestamp"]["stop"]))
    if backups:
        b.newest_age_s = max(0.0, now - backups[-1]["timestamp"]["stop"])
    code = (stanza.get("status") or {}).get("code")
    if code not in (None, 0, 2):  # 2: no valid backup yet, judged above
        b.error = f"stanza {b.stanza}: {b.stanza_status or 'unreadable'}"


def apply_archiver(b: BackupStatus, row: Mapping[str, Any]) -> None:
    """Fills `b` from the leader's pg_stat_archiver plus its current WAL file name."""
    b.archived_wal = row.get("last_archived_wal") or ""
    b.archived_age_s = row.get("archived_age_s")
    b.failed_count = int(row.get("failed_count") or 0)
    b.failed_wal = row.get("last_failed_wal") or ""
    failed_at, archived_at = row.get("last_failed_time"), row.get("last_archived_time")
    b.failing = bool(failed_at and (archived_at is None or failed_at > archived_at))
    current, done = (
        wal_segment_number(row.get("current_wal") or ""),
        wal_segment_number(b.archived_wal),
    )
    if current is not None and done is not None:
        # The current segment is still being written: archived up to the one
        # before it is no lag.
        b.archive_lag_segments = max(0, current - done - 1)


def probe_archiver(node: NodeStatus, password: str, timeout_s: int = CONNECT_TIMEOUT_S) -> dict:
    import psycopg
    from psycopg.rows import dict_row

    with psycopg.connect(
        host=node.host, port=node.port, user="postgres", password=password, dbname="postgres",
        connect_timeout=timeout_s, autocommit=True, application_name="dbfleet-status",
        row_factory=dict_row,
    ) as conn:  # fmt: skip
        return conn.execute(
            "SELECT last_archived_wal, last_archived_time, failed_count, last_failed_wal,"
            " last_failed_time, pg_walfile_name(pg_current_wal_lsn()) AS current_wal,"
            " EXTRACT(EPOCH FROM now() - last_archived_time)::float AS archived_age_s"
            " FROM pg_stat_archiver"
        ).fetchone()


def _default_backup_info(facts: Mapping[str, Any]) -> dict:
    """`pgbackrest info` of the group's stanza and its repository's size, asked as the
    group's user on the local target (pgbackrest_ops.sh)."""
    from dbfleet.ops import backup

    return backup.read_info(backup.base_env(facts, ""))


@dataclass
class GroupStatus:
    group: str
    primary_region: str = ""  # the DECLARED primary (the fleet file's preference)
    nodes: list[NodeStatus] = field(default_factory=list)
    proxies: list[ProxyStatus] = field(default_factory=list)
    poolers: list[PoolerStatus] = field(default_factory=list)
    error: str = ""
    # Patroni's view: asked when the nodes have a REST port (a replicas stack from
    # before Patroni has none, and then there is no view to ask for).
    patroni_asked: bool = False
    leader: str | None = None  # the live leader's member name
    timeline: int | None = None
    patroni_error: str = ""  # why no member answered GET /cluster
    etcd: list[EtcdStatus] = field(default_factory=list)
    read_lag_budget: int | None = None
    # server (node or `<region>-pooler`) -> days until its certificate expires
    certificates: dict[str, float] = field(default_factory=dict)
    backup: BackupStatus | None = None

    @property
    def readable(self) -> bool:
        """Whether dbfleet could ask every node: False when the stacks are missing or
        the group's password cannot be read (then `status` cannot judge the group)."""
        return not (self.error and not self.nodes) and all(n.probed for n in self.nodes)

    @property
    def preferred_leader(self) -> str | None:
        """The node the fleet file prefers as leader (the declared primary)."""
        return next((n.name for n in self.nodes if n.declared_role == "primary"), None)

    @property
    def failed_over(self) -> bool:
        """The live leader is not the declared primary: served, but not as declared."""
        return bool(self.leader and self.preferred_leader and self.leader != self.preferred_leader)

    @property
    def etcd_up(self) -> int:
        return sum(1 for e in self.etcd if e.up)

    @property
    def etcd_quorum(self) -> bool | None:
        if not self.etcd or not all(e.probed for e in self.etcd):
            return None
        return self.etcd_up >= len(self.etcd) // 2 + 1

    @property
    def primaries(self) -> list[NodeStatus]:
        return [n for n in self.nodes if n.up and n.role == "primary"]

    @property
    def problems(self) -> list[str]:
        """Every group-level reason it is not healthy (node faults are on the nodes)."""
        out = []
        if self.error:
            out.append(self.error)
        if self.patroni_asked and self.patroni_error:
            out.append(f"Patroni: {self.patroni_error}")
        elif self.patroni_asked and self.nodes and not self.leader:
            out.append("Patroni has no leader")
        if len(self.primaries) > 1:
            out.append("more than one node runs as a primary")
        unasked = [e for e in self.etcd if not e.probed]
        if unasked:
            out.append(f"etcd {unasked[0].error}")
        elif any(not e.up or not e.healthy for e in self.etcd):
            out.append("etcd")
        expired = sorted(n for n, days in self.certificates.items() if days <= 0)
        if expired:
            out.append(f"expired certificate: {', '.join(expired)} (run dbfleet up {self.group})")
        if self.backup is not None:
            out.extend(self.backup.problems)
        return out

    @property
    def healthy(self) -> bool:
        return (
            not self.problems
            and all(n.healthy for n in self.nodes)
            and all(p.healthy and all(b.ok for b in p.backends) for p in self.proxies)
            and all(p.healthy for p in self.poolers if p.probed)
        )

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["healthy"] = self.healthy
        doc["readable"] = self.readable
        doc["preferred_leader"] = self.preferred_leader
        doc["failed_over"] = self.failed_over
        doc["etcd_quorum"] = self.etcd_quorum
        for node, raw in zip(self.nodes, doc["nodes"], strict=True):
            raw["name"] = node.name
            raw["healthy"] = node.healthy
            raw["lagging"] = node.lagging
            raw["problem"] = node.problem
        for proxy, raw in zip(self.proxies, doc["proxies"], strict=True):
            raw["healthy"] = proxy.healthy
            for b, rb in zip(proxy.backends, raw["backends"], strict=True):
                rb["up"] = b.up
                rb["ok"] = b.ok
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
    """Connects to one node; fills in up/role/streaming and returns what it knows of
    replication: a replica {"self": {"unreplayed": bytes, "age": s | None}}; a
    primary, per walsender application_name (member name) and per inactive slot
    (slot name), {"bytes": int, "seconds": float | None}."""
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
                # clock_timestamp(), not now(): now() is the start of this
                # transaction, which a commit replayed since can postdate.
                behind, age, streaming = conn.execute(
                    "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()),"
                    " EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()),"
                    " EXISTS (SELECT 1 FROM pg_stat_wal_receiver WHERE status = 'streaming')"
                ).fetchone()
                node.streaming = bool(streaming)
                replicas["self"] = {
                    "unreplayed": int(behind or 0),
                    "age": float(age) if age is not None else None,
                }
            else:
                for name, sent_behind, lag in conn.execute(
                    "SELECT s.application_name, pg_wal_lsn_diff(pg_current_wal_lsn(), s.replay_lsn),"
                    " EXTRACT(EPOCH FROM s.replay_lag) FROM pg_stat_replication s"
                ).fetchall():
                    replicas[name] = {
                        "bytes": int(sent_behind or 0),
                        "seconds": float(lag) if lag is not None else None,
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
    """Replication lag of each replica: bytes from the leader's view (its walsender
    for the member, else the member's inactive slot).

    Seconds are 0 whenever the leader has nothing outstanding for the replica: the
    replica's last replayed commit may be old (an idle group, a node demoted a
    while ago), which is not lag. Otherwise they are the walsender's replay_lag
    (PostgreSQL makes a stuck replay's grow), else — a replica not connected —
    the age of its last replayed commit. Never negative: the leader's clock stamps
    a commit, the replica's reads it."""
    leaders = [n for n in nodes if n.up and n.role == "primary"]
    # With two primaries, the one Patroni calls leader is the one the others follow.
    leaders.sort(key=lambda n: not n.is_leader)
    seen = facts.get(leaders[0].name, {}) if leaders else {}
    for n in nodes:
        if not n.up or n.role != "replica":
            continue
        own = facts.get(n.name, {}).get("self", {})
        from_leader = seen.get(n.name) or seen.get(n.slot)
        if from_leader is None:
            continue  # nothing known of what is outstanding: bytes and seconds stay "?"
        n.lag_bytes = max(0, int(from_leader["bytes"]))
        if n.lag_bytes == 0:
            n.lag_seconds = 0.0
        elif from_leader.get("seconds") is not None:
            n.lag_seconds = round(max(0.0, from_leader["seconds"]), 3)
        elif own.get("age") is not None:
            n.lag_seconds = round(max(0.0, own["age"]), 3)


# -- Patroni and etcd --------------------------------------------------------------------
def tls_context(ca_pem: str | None) -> ssl.SSLContext:
    """A client context that trusts only the group's CA (PEM) and checks that the
    server's certificate names the address dialled: Patroni's REST API and etcd speak
    HTTPS with certificates from that CA."""
    if not ca_pem or not ca_pem.strip():
        raise ValueError("no CA certificate of the group in its stacks' outputs: run dbfleet up")
    return ssl.create_default_context(cadata=ca_pem)


def with_client_certificate(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    """Loads a client certificate and key into `context`. `ssl` reads them only from a
    file: it lives in a private temporary directory (0700, the file 0600) for the
    moment of loading and is removed at once."""
    with tempfile.TemporaryDirectory(prefix="dbfleet-status-") as tmp:
        path = os.path.join(tmp, "client.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{cert_pem.strip()}\n{key_pem.strip()}\n")
        context.load_cert_chain(path)


def http_json(
    url: str, timeout_s: float = HTTP_TIMEOUT_S, context: ssl.SSLContext | None = None
) -> tuple[int, Any]:
    """GET `url`: (HTTP status, decoded JSON body). An error status with a JSON body
    is an answer (etcd says 503 {"health": "false"}), not an exception. `context`
    verifies an https server."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s, context=context) as resp:
            return resp.status, json.loads(resp.read().decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        body = exc.read().decode("utf-8", "replace")
        try:
            return exc.code, json.loads(body)
        except ValueError:
            raise OSError(f"HTTP {exc.code}: {body.strip()[:200]}") from None


def fetch_cluster(
    host: str, rest_port: int, context: ssl.SSLContext, timeout_s: float = HTTP_TIMEOUT_S
) -> dict:
    """Patroni's GET /cluster of one member (HTTPS, verified by `context`):
    {"members": [...], ...}."""
    code, doc = http_json(f"https://{host}:{rest_port}/cluster", timeout_s, context)
    if code != 200 or not isinstance(doc, dict) or "members" not in doc:
        raise OSError(f"GET /cluster answered HTTP {code}")
    return doc


def cluster_leader(doc: Mapping[str, Any]) -> dict | None:
    """The member of a /cluster document that holds the leader key, if any."""
    return next((m for m in doc.get("members", []) if m.get("role") in LEADER_ROLES), None)


def read_cluster(
    endpoints: list[tuple[str, str, int]], pool: ThreadPoolExecutor, context: ssl.SSLContext
) -> tuple[dict | None, str]:
    """Asks every (name, host, rest_port) for GET /cluster at once (HTTPS, verified by
    `context`): the first answer, in the given order, that names a leader, else the
    first answer at all; or (None, why none answered)."""
    jobs = [
        (name, pool.submit(fetch_cluster, host, port, context)) for name, host, port in endpoints
    ]
    answers, errors = [], []
    for name, job in jobs:
        try:
            answers.append(job.result())
        except Exception as exc:  # noqa: BLE001 — a silent member is a status
            errors.append(f"{name}: {_first_line(exc)}")
    for doc in answers:
        if cluster_leader(doc):
            return doc, ""
    if answers:
        return answers[0], ""
    return None, "no member's REST API answered GET /cluster (" + "; ".join(errors) + ")"


def apply_cluster(status: GroupStatus, doc: Mapping[str, Any]) -> None:
    """Patroni's view onto the group: leader, timeline, each node's role and state."""
    members = {m.get("name"): m for m in doc.get("members", [])}
    leader = cluster_leader(doc)
    status.leader = leader.get("name") if leader else None
    status.timeline = leader.get("timeline") if leader else None
    for n in status.nodes:
        m = members.get(n.name)
        if m is None:
            n.patroni_state = "absent"
            continue
        n.patroni_role = m.get("role")
        n.patroni_state = m.get("state") or "?"
        n.timeline = m.get("timeline")
        n.patroni_lag = m.get("lag")


def probe_etcd(
    member: EtcdStatus, context: ssl.SSLContext, timeout_s: float = HTTP_TIMEOUT_S
) -> EtcdStatus:
    """GET /health of one etcd member, over HTTPS with `context` (the group's CA and
    a client certificate from it)."""
    try:
        _, doc = http_json(f"https://{member.endpoint}/health", timeout_s, context)
    except Exception as exc:  # noqa: BLE001 — a dead member is a status
        member.error = _first_line(exc)
        return member
    member.up = True
    health = doc.get("health") if isinstance(doc, dict) else None
    member.healthy = health in ("true", True)
    if not member.healthy:
        member.error = str(doc.get("reason") or "unhealthy") if isinstance(doc, dict) else "?"
    return member


def expect_backends(status: GroupStatus) -> None:
    """Sets what each proxy backend's state should be, from Patroni's view and the
    nodes: the write listener holds every node and only the leader passes its
    /primary check; a read server passes /read-only?lag=<budget> unless its node
    is down or lagging — then DOWN is expected and the fault is the node's."""
    by_address = {n.address: n for n in status.nodes}
    for proxy in status.proxies:
        for b in proxy.backends:
            n = by_address.get(b.address)
            b.expected_up, b.note = True, ""
            if n is None:
                b.expected_up = None if b.listener == "write" else True
            elif b.listener == "write":
                if not status.patroni_asked:
                    b.expected_up = n.declared_role == "primary"
                elif status.patroni_error or not n.probed:
                    b.expected_up = None  # nothing known to judge it by
                elif n.name == status.leader:
                    b.expected_up = True if n.up else None
                    b.note = "" if b.up else "the leader: writes have nowhere to go"
                else:
                    b.expected_up = False
                    b.note = "" if not b.up else "UP but not the leader"
            elif not n.probed:
                b.expected_up = None
            elif not n.up or n.patroni_state not in (None, "running"):
                b.expected_up, b.note = None, "node down"
            elif n.lagging:
                b.expected_up, b.note = None, "lag"
            elif not n.healthy:
                b.expected_up, b.note = None, "node unhealthy"
            if b.expected_up is True and not b.up and not b.note:
                b.note = "should be up"


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
    """Server rows of the `read` and `write` listeners; `names` maps host:port → node name.

    A server is matched to its node by address: HAProxy's `addr` column when it has
    one, else the part of the server name after its first `_` (`node1_h:5432`,
    `local1_h:5432`, `backup2_h:5432`); a server named after the node itself
    (`fra-0`) is matched by that name, so a change of naming does not hide a node."""
    by_name = {name: address for address, name in names.items()}
    out = []
    for row in rows:
        listener, server = row.get("pxname", ""), row.get("svname", "")
        if listener not in ("read", "write") or server in ("FRONTEND", "BACKEND"):
            continue
        address = row.get("addr") or (server.split("_", 1)[1] if "_" in server else server)
        if address not in names and server in by_name:
            address = by_name[server]
        if listener == "write":
            kind = "write"
        else:
            kind = "backup" if row.get("bck") == "1" or server.startswith("backup") else "local"
        out.append(
            BackendStatus(
                listener, names.get(address, address), address, kind, row.get("status", "?")
            )
        )
    # Writes first, then local nodes, then backups in the proxy's failover order
    # (the sort is stable: within a kind, the configuration's order).
    rank = {"write": 0, "local": 1, "backup": 2}
    return sorted(out, key=lambda b: rank[b.kind])


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


def _default_client_cert(pki_mount: str) -> tuple[str, str]:
    got = vault.issue_certificate(
        vault.client_from_env(), pki_mount, "dbfleet-status", (), CLIENT_CERT_TTL_S
    )
    return str(got["certificate"]), str(got["private_key"])


def _contexts(
    group: str, reps: Mapping[str, Any], outputs: OutputsReader, client_cert: ClientCertIssuer
) -> tuple[ssl.SSLContext | str, ssl.SSLContext | str]:
    """The TLS contexts for Patroni's REST API (the group's CA) and for etcd (the CA
    and a client certificate): each a context, or why there is none."""
    try:
        rest = tls_context(reps.get("ca_certificate"))
    except (ValueError, ssl.SSLError) as exc:
        return _first_line(exc), _first_line(exc)
    if not reps.get("etcd"):
        return rest, "no etcd members"
    try:
        mount = (outputs(f"accounts-{group}") or {}).get("pki_mount")
        if not mount:
            raise ValueError(f"accounts-{group} has no pki_mount: run dbfleet up {group}")
        etcd = tls_context(reps.get("ca_certificate"))
        with_client_certificate(etcd, *client_cert(str(mount)))
    except Exception as exc:  # noqa: BLE001 — no certificate is a status, not a crash
        return rest, f"no client certificate for etcd: {_first_line(exc)}"
    return rest, etcd


def group_nodes(group: str, reps: Mapping[str, Any]) -> list[NodeStatus]:
    """The nodes a `replicas-<g>` stack declares: the primary's region first, then the
    others (outputs come sorted by name)."""
    primary = reps.get("primary_region", "")
    budget = reps.get("read_lag_budget")
    nodes = []
    for region in sorted(reps["nodes"], key=lambda r: (r != primary, r)):
        node = reps["nodes"][region]
        for k, m in enumerate(node.get("members") or [node]):
            rest = m.get("rest_port")
            nodes.append(
                NodeStatus(
                    group,
                    region,
                    k,
                    m["host"],
                    int(m["port"]),
                    m.get("role") or node.get("role", ""),
                    rest_port=int(rest) if rest else None,
                    lag_budget=int(budget) if budget is not None else None,
                )
            )
    return nodes


def certificate_days(expirations: Mapping[str, Any], now: float | None = None) -> dict[str, float]:
    """Days until each certificate expires (epoch seconds in the stacks' `certificates`)."""
    now = time.time() if now is None else now
    out = {}
    for name, expiration in expirations.items():
        try:
            out[str(name)] = (float(expiration) - now) / 86400
        except (TypeError, ValueError):
            continue
    return dict(sorted(out.items()))


def _ask_etcd(
    members: list[EtcdStatus], context: ssl.SSLContext | str, pool: ThreadPoolExecutor
) -> list[Future]:
    """Probes every etcd member with `context`; without one (`context` says why) none
    is asked and each says why."""
    if isinstance(context, ssl.SSLContext):
        return [pool.submit(probe_etcd, e, context) for e in members]
    for e in members:
        e.probed, e.error = False, f"not asked: {context}"
    return []


def _ask_patroni(
    rest: list[tuple[str, str, int]], context: ssl.SSLContext | str, pool: ThreadPoolExecutor
) -> tuple[dict | None, str]:
    """read_cluster with `context`; without one (`context` says why), that reason."""
    if not rest:
        return None, ""
    if isinstance(context, ssl.SSLContext):
        return read_cluster(rest, pool, context)
    return None, f"Patroni's REST API not asked: {context}"


def collect_group(
    group: str,
    *,
    outputs: OutputsReader = _default_outputs,
    secrets: SecretReader = _default_secrets,
    client_cert: ClientCertIssuer | None = None,
    pool: ThreadPoolExecutor | None = None,
    backup_info: Callable[[Mapping[str, Any]], dict] = _default_backup_info,
    archiver: Callable[[NodeStatus, str], dict] = probe_archiver,
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
    budget = reps.get("read_lag_budget")
    status.read_lag_budget = int(budget) if budget is not None else None
    status.nodes = group_nodes(group, reps)
    status.certificates = certificate_days(
        {
            **(reps.get("certificates") or {}),
            **((outputs(f"proxies-{group}") or {}).get("certificates") or {}),
        }
    )
    names = {n.address: n.name for n in status.nodes}
    rest = [(n.name, n.host, n.rest_port) for n in status.nodes if n.rest_port]
    status.patroni_asked = bool(rest)
    rest_tls, etcd_tls = _contexts(group, reps, outputs, client_cert or _default_client_cert)
    status.etcd = [
        EtcdStatus(region, endpoint)
        for region, endpoint in sorted(
            (reps.get("etcd") or {}).items(), key=lambda kv: (kv[0] != status.primary_region, kv[0])
        )
    ]

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
    # Every probe of the group at once: Patroni's /cluster on each member, each
    # etcd member, node, proxy and pooler.
    pool = pool or ThreadPoolExecutor(max_workers=16)
    try:
        node_jobs = (
            {n.name: pool.submit(probe_node, n, password) for n in status.nodes}
            if password is not None
            else {}
        )
        etcd_jobs = _ask_etcd(status.etcd, etcd_tls, pool)
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
        backup_job = _submit_backup(status, reps, pool, backup_info)
        cluster, status.patroni_error = _ask_patroni(rest, rest_tls, pool)
        facts = {name: job.result() for name, job in node_jobs.items()}
        if backup_job is not None and status.backup is not None:
            _backup_facts(status.backup, backup_job, status.nodes, password, archiver)
        for job in etcd_jobs + proxy_jobs + pooler_jobs:
            job.result()
    finally:
        if own_pool:
            pool.shutdown(wait=True)
    if cluster is not None:
        apply_cluster(status, cluster)
    if password is None:
        for n in status.nodes:
            n.probed = False
            n.error = "not probed: no password (Vault)"
    if app_password is None:
        for p in status.poolers:
            p.probed = False
            p.error = "not probed: no application password (Vault)"
    _lag(status.nodes, facts)
    expect_backends(status)
    return status


def _submit_backup(
    status: GroupStatus,
    reps: Mapping[str, Any],
    pool: ThreadPoolExecutor,
    backup_info: Callable[[Mapping[str, Any]], dict],
) -> Future | None:
    """Asks the group's repository (a replicas stack with backups exports `backup`)."""
    facts = reps.get("backup")
    if not facts:
        return None
    status.backup = BackupStatus(str(facts["stanza"]), int(facts["schedule_hours"]))
    return pool.submit(backup_info, facts)


def _backup_facts(
    b: BackupStatus,
    job: Future,
    nodes: list[NodeStatus],
    password: str | None,
    archiver: Callable[[NodeStatus, str], dict],
) -> None:
    import time

    try:
        apply_backup_info(b, job.result(), time.time())
    except Exception as exc:  # noqa: BLE001 — an unreadable repository is a status
        b.error = _first_line(exc)
    leaders = [n for n in nodes if n.up and n.role == "primary"]
    if leaders and password is not None:
        try:
            apply_archiver(b, archiver(leaders[0], password))
        except Exception as exc:  # noqa: BLE001
            b.error = b.error or f"pg_stat_archiver: {_first_line(exc)}"


def collect(
    groups: list[str], *, outputs: OutputsReader | None = None, **kwargs: Any
) -> list[GroupStatus]:
    """Every group's status; the stack outputs are read first, all in parallel."""
    if outputs is None:
        fetched = rollout.many_outputs(
            [f"{layer}-{g}" for g in groups for layer in ("networks", "replicas", "proxies")]
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


def _patroni_text(n: NodeStatus) -> str:
    if n.patroni_state is None:
        return "?"
    if n.patroni_state == "absent":
        return "ABSENT"
    state = n.patroni_state if n.patroni_state == "running" else n.patroni_state.upper()
    return f"{n.patroni_role or '?'}, {state}"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _header(g: GroupStatus) -> str:
    head = f"group {g.group}"
    if g.leader:
        head += f"  leader {g.leader}"
        if g.timeline is not None:
            head += f" (timeline {g.timeline})"
    elif g.patroni_asked and g.nodes:
        head += "  leader ?" if g.patroni_error else "  NO LEADER"
    elif g.primary_region:
        head += f"  primary {g.primary_region}"
    return head + ("  healthy" if g.healthy else ("  DEGRADED" if g.readable else "  UNKNOWN"))


def _group_notes(g: GroupStatus) -> list[str]:
    """The lines under a group's header that say what is wrong (or unusual) in it."""
    lines = []
    if g.error:
        lines.append(g.error)
    if g.patroni_asked and g.patroni_error:
        lines.append(f"Patroni: {g.patroni_error}")
    elif g.patroni_asked and g.nodes and not g.leader:
        lines.append(
            "Patroni has no leader: writes fail until one is elected; if none is (every "
            f"replica too far behind, say), `dbfleet failover {g.group}` makes one lead"
        )
    if g.failed_over:
        region = next((n.region for n in g.nodes if n.name == g.leader), "?")
        lines.append(
            f"leader {g.leader} — the fleet file prefers {g.preferred_leader} (a failover "
            f"happened: dbfleet up {g.group} switches back, or set primary: {region})"
        )
    if len(g.primaries) > 1:
        lines.append(
            "more than one node runs as a primary: " + ", ".join(n.name for n in g.primaries)
        )
    unasked = [e for e in g.etcd if not e.probed]
    if unasked:
        lines.append(f"etcd {unasked[0].error}")
    elif g.etcd and not g.etcd_quorum:
        lines.append(
            f"etcd has no quorum ({g.etcd_up} of {len(g.etcd)}): Patroni cannot fail over; "
            "the leader keeps writes only while it reaches every member (failsafe mode)"
        )
    if g.backup is not None:
        lines.extend(g.backup.problems)
    return [f"  ! {line}" for line in lines]


def _etcd_text(g: GroupStatus) -> str:
    parts = []
    for e in g.etcd:
        if not e.probed:
            parts.append(f"{e.region} ?")
        elif not e.up:
            parts.append(f"{e.region} DOWN")
        elif not e.healthy and g.etcd_quorum:
            parts.append(f"{e.region} up ({e.error})")
        else:
            parts.append(f"{e.region} up")
    text = ", ".join(parts)
    up, total = g.etcd_up, len(g.etcd)
    if g.etcd_quorum and up < total:
        text += f" ({up} of {total}"
        text += ": no failover possible if one more is lost)" if up == total // 2 + 1 else ")"
    return text


def _backend_text(b: BackendStatus) -> str:
    text = f"{b.server}{' (backup)' if b.kind == 'backup' else ''} {b.status}"
    if b.note:
        text += f" ({b.note})" if b.ok else f" (!{b.note})"
    return text


def _backends_text(p: ProxyStatus) -> str:
    parts = []
    for listener in ("write", "read"):
        bs = [b for b in p.backends if b.listener == listener]
        if listener == "write":
            # Every node is a write server and only the leader passes: the others
            # being DOWN is the normal case, so only what is UP or wrong is listed.
            shown = [b for b in bs if b.up or not b.ok]
            hidden = len(bs) - len(shown)
            text = ", ".join(_backend_text(b) for b in shown) or "none UP"
            if hidden:
                text += f" (+{hidden} others DOWN)"
        else:
            text = ", ".join(_backend_text(b) for b in bs) or "none"
        parts.append(f"{listener}: {text}")
    return "; ".join(parts)


def render(groups: list[GroupStatus]) -> str:
    lines: list[str] = []
    for g in groups:
        if lines:
            lines.append("")
        lines.append(_header(g))
        lines.extend(_group_notes(g))
        if g.nodes:
            lines.append(
                f"  {'node':<8} {'address':<22} {'role':<9} {'patroni':<21} {'state':<6} "
                f"{'lag (bytes, seconds)':<22} note"
            )
            for n in g.nodes:
                role = n.role or n.declared_role
                note = n.problem if n.probed else n.error
                row = (
                    f"  {n.name:<8} {n.address:<22} {role:<9} {_patroni_text(n):<21} "
                    f"{_state_text(n):<6} {_lag_text(n):<22} {note}"
                )
                lines.append(row.rstrip())
        if g.etcd:
            lines.append(f"  {'etcd':<8} {_etcd_text(g)}")
        if g.certificates:
            days = ", ".join(f"{n} {d:.1f} d" for n, d in g.certificates.items())
            lines.append(f"  {'tls':<8} certificates expire in: {days}")
        if g.backup is not None:
            lines.extend(_backup_lines(g.backup))
        if g.proxies:
            lines.append(f"  {'proxy':<8} {'stats':<22} {'state':<6} backends")
            for p in g.proxies:
                where = f"{p.host}:{p.stats_port}"
                if not p.up:
                    lines.append(f"  {p.region:<8} {where:<22} {'DOWN':<6} {p.error}")
                    continue
                lines.append(f"  {p.region:<8} {where:<22} {'up':<6} {_backends_text(p)}")
        if g.poolers:
            lines.append(f"  {'pooler':<8} {'address':<22} {'state':<6} pools")
            for pl in g.poolers:
                where = f"{pl.host}:{pl.port}"
                state = "up" if pl.up else ("?" if not pl.probed else "DOWN")
                lines.append(f"  {pl.region:<8} {where:<22} {state:<6} {_pools_text(pl)}".rstrip())
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _backup_lines(b: BackupStatus) -> list[str]:
    """`backups` and `archive` rows of a group."""
    if b.error and not b.asked:
        return [f"  {'backups':<8} {b.stanza}: ? ({b.error})"]
    full = f"{b.last_full} ({_age(b.last_full_age_s)} ago)" if b.last_full else "none"
    diff = f"{b.last_diff} ({_age(b.last_diff_age_s)} ago)" if b.last_diff else "none"
    size = "?" if b.repo_bytes is None else _bytes(b.repo_bytes)
    head = f"{b.stanza}: last full {full}, last diff {diff}; every {b.schedule_hours} h"
    lines = [f"  {'backups':<8} {head}; repository {size}"]
    if b.archived_wal or b.failed_count:
        lag = "?" if b.archive_lag_segments is None else str(b.archive_lag_segments)
        text = (
            f"last {b.archived_wal or 'none'} ({_age(b.archived_age_s)} ago), "
            f"{lag} segment(s) behind"
        )
        if b.failed_count:
            text += f"; {'FAILING' if b.failing else 'failed before'}: {b.failed_count} failure(s), last {b.failed_wal}"
        lines.append(f"  {'archive':<8} {text}")
    return lines


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
