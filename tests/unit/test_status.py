"""dbfleet.ops.status without a fleet: HAProxy CSV, Patroni's and etcd's views, lag
arithmetic, health, rendering."""

from __future__ import annotations

import io
import json
import ssl
import urllib.error
from typing import Any

import pytest

from dbfleet.ops import status
from dbfleet.ops.cli import main
from dbfleet.ops.status import BackendStatus, EtcdStatus, GroupStatus, NodeStatus, ProxyStatus

# Real `/;csv` output of a region's HAProxy routing through Patroni (columns trimmed
# after `addr`, which is empty in this HAProxy version: the address comes from the
# server name). Writes: every node, only the leader passes /primary. Reads: the
# local node, then backups.
CSV = """# pxname,svname,qcur,status,act,bck,check_status,addr
write,FRONTEND,,OPEN,,,,
write,node1_127.77.12.1:5432,0,UP,1,0,L7OK,
write,node2_127.77.20.1:5432,0,DOWN,1,0,L7STS,
write,node3_127.77.2.1:5432,0,DOWN,1,0,L7STS,
write,BACKEND,0,UP,1,0,,
read,FRONTEND,,OPEN,,,,
read,local1_127.77.20.1:5432,0,DOWN,1,0,L4CON,
read,backup1_127.77.12.1:5432,0,UP,0,1,L7OK,
read,backup2_127.77.2.1:5432,0,UP 1/2,0,1,L7OK,
read,BACKEND,0,UP,1,2,,
stats,FRONTEND,,OPEN,,,,
"""
GROUP_CA = "-----BEGIN CERTIFICATE-----\nMIIBgroupCA\n-----END CERTIFICATE-----\n"


@pytest.fixture(autouse=True)
def tls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """No real CA here: `tls_context` gives an empty client context and records the CA
    it was given; the etcd client certificate is issued by a fake and recorded."""
    seen: dict[str, list] = {"cas": [], "issued": [], "loaded": []}

    def tls_context(ca: str | None) -> ssl.SSLContext:
        if not ca:
            raise ValueError("no CA certificate of the group in its stacks' outputs")
        seen["cas"].append(ca)
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def issue(mount: str) -> tuple[str, str]:
        seen["issued"].append(mount)
        return "CLIENT-CERT", "CLIENT-KEY"

    monkeypatch.setattr(status, "tls_context", tls_context)
    monkeypatch.setattr(status, "_default_client_cert", issue)
    monkeypatch.setattr(
        status, "with_client_certificate", lambda ctx, c, k: seen["loaded"].append((ctx, c, k))
    )
    return seen


NAMES = {"127.77.12.1:5432": "fra-0", "127.77.20.1:5432": "lhr-0", "127.77.2.1:5432": "arn-0"}


def test_backends_from_haproxy_csv() -> None:
    rows = status.parse_haproxy_csv(CSV)
    assert rows[0]["pxname"] == "write" and rows[0]["svname"] == "FRONTEND"
    backends = status.backends_from_rows(rows, NAMES)
    got = [(b.listener, b.server, b.kind, b.status, b.up) for b in backends]
    assert got == [
        ("write", "fra-0", "write", "UP", True),
        ("write", "lhr-0", "write", "DOWN", False),
        ("write", "arn-0", "write", "DOWN", False),
        ("read", "lhr-0", "local", "DOWN", False),
        ("read", "fra-0", "backup", "UP", True),
        ("read", "arn-0", "backup", "UP 1/2", True),
    ]


def test_an_unknown_address_is_shown_as_is() -> None:
    rows = status.parse_haproxy_csv("# pxname,svname,status,bck\nread,local1_10.0.0.9:5432,UP,0\n")
    (b,) = status.backends_from_rows(rows, NAMES)
    assert (b.server, b.address) == ("10.0.0.9:5432", "10.0.0.9:5432")


def test_a_server_named_after_its_node_is_matched_by_name() -> None:
    rows = status.parse_haproxy_csv("# pxname,svname,status,bck\nwrite,lhr-0,DOWN,0\n")
    (b,) = status.backends_from_rows(rows, NAMES)
    assert (b.server, b.address) == ("lhr-0", "127.77.20.1:5432")


# -- lag ---------------------------------------------------------------------------------
HOSTS = {"fra": "127.77.12.1", "lhr": "127.77.20.1", "arn": "127.77.2.1", "ams": "127.77.1.1"}


def _node(
    region: str,
    role: str,
    up: bool = True,
    live_role: str | None = None,
    patroni: tuple[str, str] | None = None,
) -> NodeStatus:
    n = NodeStatus("eu", region, 0, HOSTS[region], 5432, role)
    n.up, n.role = up, (live_role or role) if up else None
    if patroni:
        n.patroni_role, n.patroni_state = patroni
    if n.role == "replica":
        n.streaming = True
    return n


def test_lag_from_the_leaders_walsenders_and_inactive_slots() -> None:
    fra, lhr, arn, ams = (
        _node("fra", "primary"),
        _node("lhr", "replica"),
        _node("arn", "replica"),
        _node("ams", "replica"),
    )
    facts = {
        "fra-0": {
            # walsenders by application_name (the member name), slots by slot name
            "lhr-0": {"bytes": 0, "seconds": None},
            "arn-0": {"bytes": 8192, "seconds": 0.4},
            "ams_0": {"bytes": 65536, "seconds": None, "detached": True},
        },
        "lhr-0": {"self": {"unreplayed": 0, "age": 3600.0}},  # idle for an hour, but caught up
        "arn-0": {"self": {"unreplayed": 120, "age": 1.25}},
        "ams-0": {"self": {"unreplayed": 0, "age": None}},
    }
    status._lag([fra, lhr, arn, ams], facts)
    assert (lhr.lag_bytes, lhr.lag_seconds) == (0, 0.0)
    assert (arn.lag_bytes, arn.lag_seconds) == (8192, 0.4)
    assert (ams.lag_bytes, ams.lag_seconds) == (65536, None)
    assert fra.lag_bytes is None


def test_a_freshly_demoted_node_with_nothing_outstanding_lags_0_seconds() -> None:
    # Seen live: `0 B, 39.9 s`. A node that replayed its own WAL before it streamed
    # has received less than it replayed (a negative difference) and its last
    # replayed commit is as old as the switchover.
    fra, lhr = _node("fra", "primary"), _node("lhr", "replica")
    facts = {
        "fra-0": {"lhr-0": {"bytes": 0, "seconds": None}},
        "lhr-0": {"self": {"unreplayed": -5_242_880, "age": 39.9}},
    }
    status._lag([fra, lhr], facts)
    assert (lhr.lag_bytes, lhr.lag_seconds) == (0, 0.0)


def test_lag_seconds_are_never_negative() -> None:
    # Seen live in `status --json`: -0.008 (the commit is stamped by the leader's
    # clock and aged by the replica's).
    fra, lhr = _node("fra", "primary"), _node("lhr", "replica")
    facts = {
        "fra-0": {"lhr_0": {"bytes": 120, "seconds": None, "detached": True}},
        "lhr-0": {"self": {"unreplayed": 120, "age": -0.008}},
    }
    status._lag([fra, lhr], facts)
    assert (lhr.lag_bytes, lhr.lag_seconds) == (120, 0.0)


def test_lag_is_unknown_without_the_leaders_view() -> None:
    lhr = _node("lhr", "replica")
    status._lag([_node("fra", "primary", up=False), lhr], {"lhr-0": {"self": {"age": 3600.0}}})
    assert (lhr.lag_bytes, lhr.lag_seconds) == (None, None)
    assert status.render([GroupStatus("eu", "fra", nodes=[lhr])]).count("?, ?") == 1


def test_with_two_primaries_lag_is_measured_from_patronis_leader() -> None:
    old = _node("fra", "primary", patroni=("replica", "running"))
    new = _node("lhr", "replica", live_role="primary", patroni=("leader", "running"))
    arn = _node("arn", "replica", patroni=("replica", "running"))
    facts = {"fra-0": {"arn-0": {"bytes": 999, "seconds": 9.0}}, "lhr-0": {"arn-0": {"bytes": 0}}}
    status._lag([old, new, arn], facts)
    assert arn.lag_bytes == 0


# -- health ------------------------------------------------------------------------------
def test_a_replica_behind_the_read_lag_budget_is_degraded() -> None:
    n = _node("lhr", "replica", patroni=("replica", "running"))
    n.lag_budget, n.lag_bytes, n.lag_seconds = 16 << 20, 10 << 20, 26.0
    assert n.healthy
    n.lag_bytes = (16 << 20) + 1
    assert n.lagging and not n.healthy
    assert n.problem.startswith("lag above the read_lag_budget (16.0 MiB)")


def test_a_replica_that_does_not_stream_is_degraded() -> None:
    n = _node("lhr", "replica", patroni=("replica", "running"))
    n.streaming = False
    assert n.problem == "not streaming from the leader"


def test_the_declared_role_no_longer_decides_health() -> None:
    # After a failover lhr-0 leads although the fleet file prefers fra-0: it serves.
    n = _node("lhr", "replica", live_role="primary", patroni=("leader", "running"))
    assert n.healthy


@pytest.mark.parametrize(
    ("live_role", "patroni", "problem"),
    [
        ("primary", ("replica", "running"), "runs as a primary but is not Patroni's leader"),
        ("replica", ("leader", "running"), "Patroni's leader, but PostgreSQL is still in recovery"),
        ("replica", ("replica", "stopped"), "Patroni: stopped"),
        ("replica", ("replica", "absent"), "Patroni does not run it (not a member of the cluster)"),
    ],
)
def test_a_node_at_odds_with_patroni_is_degraded(
    live_role: str, patroni: tuple[str, str], problem: str
) -> None:
    n = _node("lhr", "replica", live_role=live_role, patroni=patroni)
    assert n.problem == problem and not n.healthy


def _write(node: NodeStatus, up: bool) -> BackendStatus:
    return BackendStatus("write", node.name, node.address, "write", "UP" if up else "DOWN")


def _read(node: NodeStatus, up: bool, kind: str = "local") -> BackendStatus:
    return BackendStatus("read", node.name, node.address, kind, "UP" if up else "DOWN")


def _group(nodes: list[NodeStatus], backends: list[BackendStatus], leader: str) -> GroupStatus:
    proxy = ProxyStatus("eu", "lhr", "127.77.20.1", 6434, up=True, backends=backends)
    g = GroupStatus("eu", "fra", nodes=nodes, proxies=[proxy], patroni_asked=True)
    g.leader, g.timeline = leader, 3
    g.etcd = [EtcdStatus(r, f"127.77.{i}.1:2379", up=True, healthy=True) for i, r in
              enumerate(("fra", "lhr", "arn"))]  # fmt: skip
    status.expect_backends(g)
    return g


def _three(lag_lhr: int = 0) -> tuple[NodeStatus, NodeStatus, NodeStatus]:
    fra = _node("fra", "primary", patroni=("leader", "running"))
    lhr = _node("lhr", "replica", patroni=("replica", "running"))
    arn = _node("arn", "replica", patroni=("replica", "running"))
    for n in (lhr, arn):
        n.lag_budget, n.lag_bytes, n.lag_seconds = 1 << 20, 0, 0.0
    lhr.lag_bytes = lag_lhr
    return fra, lhr, arn


def test_one_write_server_up_the_leader_is_healthy() -> None:
    fra, lhr, arn = _three()
    g = _group(
        [fra, lhr, arn],
        [
            _write(fra, True),
            _write(lhr, False),
            _write(arn, False),
            _read(lhr, True),
            _read(fra, True, "backup"),
        ],
        "fra-0",
    )
    assert g.healthy
    text = status.render([g])
    assert text.splitlines()[0] == "group eu  leader fra-0 (timeline 3)  healthy"
    assert "write: fra-0 UP (+2 others DOWN); read: lhr-0 UP, fra-0 (backup) UP" in text
    assert "etcd     fra up, lhr up, arn up" in text


def test_a_write_server_up_that_is_not_the_leader_is_degraded() -> None:
    fra, lhr, arn = _three()
    g = _group([fra, lhr, arn], [_write(fra, True), _write(lhr, True), _read(lhr, True)], "fra-0")
    assert not g.healthy
    doc = g.to_json()
    assert [(b["server"], b["ok"]) for b in doc["proxies"][0]["backends"]][:2] == [
        ("fra-0", True),
        ("lhr-0", False),
    ]
    assert "write: fra-0 UP, lhr-0 UP (!UP but not the leader)" in status.render([g])


def test_a_read_server_down_for_a_healthy_node_is_degraded() -> None:
    fra, lhr, arn = _three()
    g = _group([fra, lhr, arn], [_write(fra, True), _read(lhr, False)], "fra-0")
    assert not g.healthy
    assert "read: lhr-0 DOWN (!should be up)" in status.render([g])


def test_a_lagging_replica_is_counted_once_and_its_read_server_stays_visible() -> None:
    fra, lhr, arn = _three(lag_lhr=10 << 20)
    g = _group(
        [fra, lhr, arn],
        [_write(fra, True), _read(lhr, False), _read(fra, True, "backup")],
        "fra-0",
    )
    assert not g.healthy and lhr.lagging
    # the proxy did what it should: the fault is the node's alone
    assert all(b.ok for b in g.proxies[0].backends) and g.problems == []
    assert [n.name for n in g.nodes if not n.healthy] == ["lhr-0"]
    text = status.render([g])
    assert "DEGRADED" in text.splitlines()[0]
    assert "read: lhr-0 DOWN (lag), fra-0 (backup) UP" in text
    assert "10.0 MiB, 0.0 s" in text and "lag above the read_lag_budget (1.0 MiB)" in text
    assert g.to_json()["nodes"][1]["lagging"] is True


def test_a_leader_other_than_the_declared_primary_is_said_but_not_degraded() -> None:
    fra = _node("fra", "primary", live_role="replica", patroni=("replica", "running"))
    lhr = _node("lhr", "replica", live_role="primary", patroni=("leader", "running"))
    arn = _node("arn", "replica", patroni=("replica", "running"))
    g = _group([fra, lhr, arn], [_write(lhr, True), _write(fra, False), _read(lhr, True)], "lhr-0")
    g.timeline = 4
    assert g.healthy and g.failed_over
    lines = status.render([g]).splitlines()
    assert lines[0] == "group eu  leader lhr-0 (timeline 4)  healthy"
    assert lines[1] == (
        "  ! leader lhr-0 — the fleet file prefers fra-0 (a failover happened: "
        "dbfleet up eu switches back, or set primary: lhr)"
    )
    doc = g.to_json()
    assert (doc["leader"], doc["preferred_leader"], doc["failed_over"]) == ("lhr-0", "fra-0", True)


def test_no_leader_is_degraded_and_points_to_dbfleet_failover() -> None:
    fra, lhr, arn = _three()
    fra.up, fra.role, fra.error = False, None, "connection refused"
    fra.patroni_role, fra.patroni_state = None, "absent"
    g = _group([fra, lhr, arn], [_write(fra, False), _write(lhr, False)], None)
    assert not g.healthy and g.problems == ["Patroni has no leader"]
    text = status.render([g])
    assert text.splitlines()[0] == "group eu  NO LEADER  DEGRADED"
    assert "`dbfleet failover eu` makes one lead" in text
    # nobody passes /primary: every write server DOWN is as it should be
    assert all(b.ok for b in g.proxies[0].backends)


def test_two_primaries_are_degraded() -> None:
    fra, lhr, arn = _three()
    lhr.role = "primary"
    g = _group([fra, lhr, arn], [_write(fra, True)], "fra-0")
    assert "more than one node runs as a primary" in g.problems
    assert "! more than one node runs as a primary: fra-0, lhr-0" in status.render([g])


# -- etcd --------------------------------------------------------------------------------
def test_an_etcd_member_down_is_degraded_and_says_what_is_left() -> None:
    fra, lhr, arn = _three()
    g = _group([fra, lhr, arn], [_write(fra, True), _read(lhr, True)], "fra-0")
    g.etcd[2].up = g.etcd[2].healthy = False
    assert not g.healthy and g.etcd_quorum
    assert (
        "  etcd     fra up, lhr up, arn DOWN (2 of 3: no failover possible if one more is lost)"
        in status.render([g]).splitlines()
    )


def test_etcd_without_quorum_says_patroni_cannot_fail_over() -> None:
    fra, lhr, arn = _three()
    g = _group([fra, lhr, arn], [_write(fra, True), _read(lhr, True)], "fra-0")
    for e in g.etcd[1:]:
        e.up = e.healthy = False
    g.etcd[0].healthy, g.etcd[0].error = False, "RAFT NO LEADER"
    assert g.etcd_quorum is False and not g.healthy
    text = status.render([g])
    assert (
        "  ! etcd has no quorum (1 of 3): Patroni cannot fail over; the leader keeps writes "
        "only while it reaches every member (failsafe mode)"
    ) in text.splitlines()
    assert "  etcd     fra up, lhr DOWN, arn DOWN" in text.splitlines()
    assert g.to_json()["etcd_quorum"] is False


def test_probe_etcd_reads_health_answers_and_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: dict[str, Any] = {
        "127.0.0.1:2379": (200, {"health": "true", "reason": ""}),
        "127.0.0.2:2379": (503, {"health": "false", "reason": "RAFT NO LEADER"}),
    }

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def http_json(url: str, timeout_s: float = 2.0, ctx: Any = None) -> tuple[int, Any]:
        endpoint = url.split("/")[2]
        assert ctx is context, "etcd is asked over TLS with the group's client context"
        if endpoint not in answers:
            raise ConnectionRefusedError(111, "Connection refused")
        assert url == f"https://{endpoint}/health"
        return answers[endpoint]

    monkeypatch.setattr(status, "http_json", http_json)
    ok, split, dead = (
        status.probe_etcd(EtcdStatus(r, f"127.0.0.{i}:2379"), context)
        for i, r in enumerate("abc", 1)
    )
    assert (ok.up, ok.healthy, ok.error) == (True, True, "")
    assert (split.up, split.healthy, split.error) == (True, False, "RAFT NO LEADER")
    assert (dead.up, dead.healthy) == (False, False) and "refused" in dead.error


def test_http_json_reads_the_json_body_of_an_error_status(monkeypatch: pytest.MonkeyPatch) -> None:
    def urlopen(url: str, timeout: float, context: Any = None) -> None:
        raise urllib.error.HTTPError(
            url, 503, "Service Unavailable", {}, io.BytesIO(b'{"health":"false"}')
        )

    monkeypatch.setattr(status.urllib.request, "urlopen", urlopen)
    assert status.http_json("http://127.0.0.1:2379/health") == (503, {"health": "false"})


# -- Patroni -----------------------------------------------------------------------------
# GET /cluster of Patroni 3.0.2 (patroni.utils.cluster_as_json) after a failover to
# lhr-0; arn-0's Patroni is not running (its member key expired).
CLUSTER = {
    "members": [
        {"name": "fra-0", "role": "replica", "state": "running", "api_url":
         "http://127.77.0.1:8008/patroni", "host": "127.77.0.1", "port": 5432,
         "timeline": 4, "lag": 0},
        {"name": "lhr-0", "role": "leader", "state": "running", "api_url":
         "http://127.77.1.1:8008/patroni", "host": "127.77.1.1", "port": 5432,
         "timeline": 4},
    ]
}  # fmt: skip


def test_read_cluster_prefers_an_answer_that_names_a_leader(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    leaderless = {"members": [dict(m, role="replica") for m in CLUSTER["members"]]}
    answers = {8008: OSError("timed out"), 8009: leaderless, 8010: CLUSTER}

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)

    def fetch(host: str, port: int, ctx: ssl.SSLContext, timeout_s: float = 2.0) -> dict:
        assert ctx is context
        got = answers[port]
        if isinstance(got, Exception):
            raise got
        return got

    monkeypatch.setattr(status, "fetch_cluster", fetch)
    with status.ThreadPoolExecutor(4) as pool:
        members = [("fra-0", "h", 8008), ("lhr-0", "h", 8009), ("arn-0", "h", 8010)]
        assert status.read_cluster(members, pool, context) == (CLUSTER, "")
        answers[8010] = OSError("connection refused")
        assert status.read_cluster(members, pool, context) == (leaderless, "")
        answers[8009] = OSError("connection refused")
        doc, error = status.read_cluster(members, pool, context)
    assert doc is None
    assert error == (
        "no member's REST API answered GET /cluster (fra-0: timed out; "
        "lhr-0: connection refused; arn-0: connection refused)"
    )


def _outputs(stack: str) -> dict | None:
    if stack == "networks-eu":
        return {
            "regions": {
                r: {"host": f"127.77.{i}.1", "stats_port": 6434}
                for i, r in enumerate(("fra", "lhr"))
            }
        }
    if stack == "accounts-eu":
        return {"pki_mount": "pki-dbfleet-eu"}
    if stack == "replicas-eu":
        return {
            "ca_certificate": GROUP_CA,
            "primary_region": "fra",
            "secret_mount": "secret",
            "secret_path": "dbfleet/t/eu/postgres",
            "read_lag_budget": 16 << 20,
            "etcd": {"fra": "127.77.0.1:2379", "lhr": "127.77.1.1:2379"},
            "nodes": {
                region: {
                    "host": f"127.77.{i}.1",
                    "port": 5432,
                    "role": role,
                    "members": [
                        {"host": f"127.77.{i}.1", "port": 5432, "role": role, "rest_port": 8008}
                    ],
                }
                for i, (region, role) in enumerate((("fra", "primary"), ("lhr", "replica")))
            },
        }
    return None


def _fake_http(monkeypatch: pytest.MonkeyPatch, cluster: dict | None = CLUSTER) -> list[str]:
    asked: list[str] = []

    def http_json(url: str, timeout_s: float = 2.0, context: Any = None) -> tuple[int, Any]:
        assert isinstance(context, ssl.SSLContext), f"{url} is asked without TLS"
        asked.append(url)
        if url.endswith("/health"):
            return 200, {"health": "true"}
        if cluster is None:
            raise ConnectionRefusedError(111, "Connection refused")
        return 200, cluster

    monkeypatch.setattr(status, "http_json", http_json)
    return asked


def _proxy_from(csv: str):
    def probe_proxy(proxy, names, socket_path=None):
        proxy.up = True
        proxy.backends = status.backends_from_rows(status.parse_haproxy_csv(csv), names)
        return proxy

    return probe_proxy


AFTER_FAILOVER_CSV = """# pxname,svname,status,bck
write,node1_127.77.0.1:5432,DOWN,0
write,node2_127.77.1.1:5432,UP,0
read,local1_127.77.0.1:5432,UP,0
read,backup1_127.77.1.1:5432,UP,1
"""


def test_collect_group_asks_patroni_etcd_nodes_and_proxies(
    monkeypatch: pytest.MonkeyPatch, tls: dict[str, list]
) -> None:
    seen: dict[str, str] = {}

    def probe_node(node: NodeStatus, password: str) -> dict:
        seen[node.name] = password
        node.up = True
        if node.region == "lhr":
            node.role = "primary"
            return {"fra-0": {"bytes": 0, "seconds": None}}
        node.role, node.streaming = "replica", True
        return {"self": {"unreplayed": 0, "age": 39.9}}

    asked = _fake_http(monkeypatch)
    monkeypatch.setattr(status, "probe_node", probe_node)
    monkeypatch.setattr(status, "probe_proxy", _proxy_from(AFTER_FAILOVER_CSV))
    (g,) = status.collect(
        ["eu"],
        outputs=_outputs,
        secrets=lambda mount, path: {"superuser_password": f"pw:{mount}/{path}"},
    )
    assert seen == {
        "fra-0": "pw:secret/dbfleet/t/eu/postgres",
        "lhr-0": "pw:secret/dbfleet/t/eu/postgres",
    }
    # HTTPS everywhere, verified against the group's CA; etcd with a client certificate
    # issued from the group's PKI, loaded into etcd's context only.
    assert sorted(asked) == [
        "https://127.77.0.1:2379/health",
        "https://127.77.0.1:8008/cluster",
        "https://127.77.1.1:2379/health",
        "https://127.77.1.1:8008/cluster",
    ]
    assert tls["cas"] == [GROUP_CA, GROUP_CA] and tls["issued"] == ["pki-dbfleet-eu"]
    assert [(c, k) for _, c, k in tls["loaded"]] == [("CLIENT-CERT", "CLIENT-KEY")]
    assert (g.leader, g.timeline, g.read_lag_budget) == ("lhr-0", 4, 16 << 20)
    assert [(n.name, n.role, n.patroni_role, n.patroni_state, n.lag_bytes, n.lag_seconds)
            for n in g.nodes] == [("fra-0", "replica", "replica", "running", 0, 0.0),
                                  ("lhr-0", "primary", "leader", "running", None, None)]  # fmt: skip
    assert g.healthy, status.render([g])
    doc = g.to_json()
    json.dumps(doc)  # serialisable
    assert (doc["leader"], doc["timeline"], doc["failed_over"]) == ("lhr-0", 4, True)
    assert [(e["region"], e["endpoint"], e["up"]) for e in doc["etcd"]] == [
        ("fra", "127.77.0.1:2379", True),
        ("lhr", "127.77.1.1:2379", True),
    ]
    assert [(n["name"], n["patroni_state"], n["timeline"]) for n in doc["nodes"]] == [
        ("fra-0", "running", 4),
        ("lhr-0", "running", 4),
    ]
    assert all(b["ok"] for p in doc["proxies"] for b in p["backends"])


def test_a_down_node_is_degraded_once_and_down_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    cluster = {"members": [dict(CLUSTER["members"][0], role="leader")]}  # lhr-0 absent

    def probe_node(node: NodeStatus, password: str) -> dict:
        if node.region == "lhr":
            node.up, node.error = False, "connection refused"
            return {}
        node.up, node.role = True, "primary"
        return {"lhr_0": {"bytes": 4096, "seconds": None, "detached": True}}

    _fake_http(monkeypatch, cluster)
    monkeypatch.setattr(status, "probe_node", probe_node)
    monkeypatch.setattr(
        status,
        "probe_proxy",
        _proxy_from(
            "# pxname,svname,status,bck\nwrite,node1_127.77.0.1:5432,UP,0\n"
            "write,node2_127.77.1.1:5432,DOWN,0\nread,local1_127.77.1.1:5432,DOWN,0\n"
            "read,backup1_127.77.0.1:5432,UP,1\n"
        ),
    )
    (g,) = status.collect(
        ["eu"], outputs=_outputs, secrets=lambda m, p: {"superuser_password": "x"}
    )
    assert not g.healthy and [n.name for n in g.nodes if not n.healthy] == ["lhr-0"]
    assert all(b.ok for p in g.proxies for b in p.backends)
    doc = g.to_json()
    assert doc["nodes"][1]["up"] is False and doc["nodes"][1]["patroni_state"] == "absent"
    assert not any(b["up"] for p in doc["proxies"] for b in p["backends"] if b["server"] == "lhr-0")
    text = status.render([g])
    assert "DEGRADED" in text.splitlines()[0]
    assert any(
        ln.split()[:1] == ["lhr-0"] and "DOWN" in ln and "connection refused" in ln
        for ln in text.splitlines()
    )
    assert "read: lhr-0 DOWN (node down), fra-0 (backup) UP" in text


def test_patroni_answering_nowhere_is_degraded(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_http(monkeypatch, cluster=None)
    monkeypatch.setattr(status, "probe_node", lambda node, password: {})
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(
        ["eu"], outputs=_outputs, secrets=lambda m, p: {"superuser_password": "x"}
    )
    assert g.patroni_error.startswith("no member's REST API answered GET /cluster")
    assert all(n.patroni_state is None for n in g.nodes)
    text = status.render([g])
    assert text.splitlines()[0] == "group eu  leader ?  DEGRADED"
    assert "  ! Patroni: no member's REST API answered GET /cluster" in text


def test_without_a_password_nodes_are_unknown_not_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_vault(mount: str, path: str) -> dict:
        raise ConnectionError("connection refused")

    _fake_http(monkeypatch)
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(["eu"], outputs=_outputs, secrets=no_vault)
    assert g.error.startswith("cannot read the group's superuser password from Vault")
    assert not g.readable and not g.healthy
    assert all(not n.probed for n in g.nodes)
    # Patroni's view needs no password: it is still shown
    assert g.leader == "lhr-0"
    text = status.render([g])
    assert "UNKNOWN" in text and "DEGRADED" not in text
    rows = [ln.split() for ln in text.splitlines() if ln.split()[:1] in (["fra-0"], ["lhr-0"])]
    assert len(rows) == 2 and all(r[5] == "?" and "DOWN" not in r for r in rows)
    assert g.to_json()["readable"] is False


def test_etcd_is_not_asked_without_a_client_certificate_and_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refused(mount: str) -> tuple[str, str]:
        raise PermissionError(f"permission denied: {mount}/issue/server")

    asked = _fake_http(monkeypatch)
    monkeypatch.setattr(status, "probe_node", lambda node, password: {})
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(
        ["eu"], outputs=_outputs, secrets=lambda m, p: {"superuser_password": "x"},
        client_cert=refused,
    )  # fmt: skip
    assert not any(u.endswith("/health") for u in asked)
    assert all(not e.probed and not e.up for e in g.etcd)
    assert g.etcd_quorum is None and not g.healthy
    assert g.leader == "lhr-0"  # Patroni's REST API needs no client certificate
    text = status.render([g])
    assert "  etcd     fra ?, lhr ?" in text.splitlines()
    assert "no client certificate for etcd: permission denied: pki-dbfleet-eu/issue/server" in text


def test_without_the_groups_ca_neither_patroni_nor_etcd_is_asked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_ca(stack: str) -> dict | None:
        out = _outputs(stack)
        if out and stack == "replicas-eu":
            del out["ca_certificate"]
        return out

    asked = _fake_http(monkeypatch)
    monkeypatch.setattr(status, "probe_node", lambda node, password: {})
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(["eu"], outputs=no_ca, secrets=lambda m, p: {"superuser_password": "x"})
    assert asked == []
    assert g.patroni_error.startswith("Patroni's REST API not asked: no CA certificate")
    assert not g.healthy


def test_a_group_that_is_not_deployed_is_an_error_not_a_crash() -> None:
    (g,) = status.collect(["eu"], outputs=lambda stack: None, secrets=lambda m, p: {})
    assert g.error == "networks-eu, replicas-eu not deployed: run dbfleet up eu"
    assert not g.healthy and g.nodes == []


def test_status_exits_3_for_a_lagging_replica_and_0_after_a_failover(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("dbfleet.ops.commands.engine_ready", lambda: None)
    fra, lhr, arn = _three(lag_lhr=10 << 20)
    lagging = _group([fra, lhr, arn], [_write(fra, True), _read(lhr, False)], "fra-0")
    fra, lhr, arn = _three()
    fra.role, lhr.role = "replica", "primary"
    fra.patroni_role, lhr.patroni_role = "replica", "leader"
    moved = _group([fra, lhr, arn], [_write(lhr, True), _read(lhr, True)], "lhr-0")
    for groups, code in (([lagging], 3), ([moved], 0)):
        monkeypatch.setattr(status, "collect", lambda names, g=groups: g)
        assert main(["status", "eu", "--json"]) == code
        assert json.loads(capsys.readouterr().out)["groups"][0]["healthy"] is (code == 0)


def test_probe_node_reports_an_unreachable_node() -> None:
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    n = NodeStatus("eu", "fra", 0, "127.0.0.1", 1, "primary")
    assert status.probe_node(n, "x", timeout_s=1) == {}
    assert not n.up and n.error


def test_probe_proxy_reports_an_unreachable_proxy() -> None:
    p = status.ProxyStatus("eu", "fra", "127.0.0.1", 1)
    status.probe_proxy(p, {}, socket_path=lambda: None)
    assert not p.up and p.error and not p.healthy


# `SHOW POOLS` of PgBouncer 1.18 as psycopg returns it (column name -> value): the admin
# console's own pool, the write pool busy, the read pool idle.
SHOW_POOLS = [
    {"database": "pgbouncer", "user": "pgbouncer", "cl_active": 1, "cl_waiting": 0,
     "sv_active": 0, "sv_idle": 0, "sv_used": 0, "pool_mode": "statement"},
    {"database": "app_read", "user": "app", "cl_active": 3, "cl_waiting": 0,
     "sv_active": 0, "sv_idle": 2, "sv_used": 0, "pool_mode": "transaction"},
    {"database": "app", "user": "app", "cl_active": 480, "cl_waiting": 20,
     "sv_active": 20, "sv_idle": 0, "sv_used": 0, "pool_mode": "transaction"},
]  # fmt: skip


def test_show_pools_rows_become_the_write_then_the_read_pool() -> None:
    pools = status.pools_from_rows(SHOW_POOLS, ("app", "app_read"))
    assert [(p.database, p.clients_active, p.clients_waiting, p.servers_active, p.servers_idle)
            for p in pools] == [("app", 480, 20, 20, 0), ("app_read", 3, 0, 0, 2)]  # fmt: skip


def _pooled_outputs(stack: str) -> dict | None:
    out = _outputs(stack)
    if stack == "networks-eu" and out:
        for region in out["regions"].values():
            region["pool_port"] = 6435
    return out


def test_collect_group_asks_every_pooler_as_the_app_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "probe_node", lambda node, password: {})
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    asked = []

    def show_pools(host, port, user, password):
        asked.append((host, port, user, password))
        if host == "127.77.1.1":
            raise OSError("connection refused")
        return SHOW_POOLS

    monkeypatch.setattr(status, "show_pools", show_pools)
    (g,) = status.collect(
        ["eu"],
        outputs=_pooled_outputs,
        secrets=lambda mount, path: {"superuser_password": "su", "app_password": "ap"},
    )
    assert sorted(asked) == [("127.77.0.1", 6435, "app", "ap"), ("127.77.1.1", 6435, "app", "ap")]
    fra, lhr = g.poolers
    assert fra.up and [p.database for p in fra.pools] == ["app", "app_read"]
    assert not lhr.up and lhr.error == "connection refused"
    assert not g.healthy
    doc = g.to_json()
    assert [p["healthy"] for p in doc["poolers"]] == [True, False]
    text = status.render([g])
    assert "app: 480 clients (20 waiting), 20 active + 0 idle servers" in text
    assert "lhr      127.77.1.1:6435        DOWN   connection refused" in text
    assert "ap" not in text.split()


def test_a_fleet_deployed_before_pooling_shows_no_pooler(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(
        ["eu"],
        outputs=_outputs,  # networks without pool_port
        secrets=lambda mount, path: {},
    )
    assert g.poolers == []
    assert "pooler" not in status.render([g])
