"""dbfleet.ops.status without a fleet: HAProxy CSV, lag arithmetic, health, rendering."""

from __future__ import annotations

import json

import pytest

from dbfleet.ops import status
from dbfleet.ops.status import NodeStatus

# Real `/;csv` output of a region's HAProxy (columns trimmed after `addr`, which is empty
# in this HAProxy version: the address comes from the server name).
CSV = """# pxname,svname,qcur,status,act,bck,check_status,addr
write,FRONTEND,,OPEN,,,,
write,primary_127.77.12.1:5432,0,UP,1,0,L7OK,
write,BACKEND,0,UP,1,0,,
read,FRONTEND,,OPEN,,,,
read,local1_127.77.20.1:5432,0,DOWN,1,0,L4CON,
read,backup1_127.77.12.1:5432,0,UP,0,1,L7OK,
read,backup2_127.77.2.1:5432,0,UP 1/2,0,1,L7OK,
read,BACKEND,0,UP,1,2,,
stats,FRONTEND,,OPEN,,,,
"""
NAMES = {"127.77.12.1:5432": "fra-0", "127.77.20.1:5432": "lhr-0", "127.77.2.1:5432": "arn-0"}


def test_backends_from_haproxy_csv() -> None:
    rows = status.parse_haproxy_csv(CSV)
    assert rows[0]["pxname"] == "write" and rows[0]["svname"] == "FRONTEND"
    backends = status.backends_from_rows(rows, NAMES)
    got = [(b.listener, b.server, b.kind, b.status, b.up) for b in backends]
    assert got == [
        ("write", "fra-0", "primary", "UP", True),
        ("read", "lhr-0", "local", "DOWN", False),
        ("read", "fra-0", "backup", "UP", True),
        ("read", "arn-0", "backup", "UP 1/2", True),
    ]


def test_an_unknown_address_is_shown_as_is() -> None:
    rows = status.parse_haproxy_csv("# pxname,svname,status,bck\nread,local1_10.0.0.9:5432,UP,0\n")
    (b,) = status.backends_from_rows(rows, NAMES)
    assert (b.server, b.address) == ("10.0.0.9:5432", "10.0.0.9:5432")


def _node(region: str, role: str, up: bool = True, live_role: str | None = None) -> NodeStatus:
    n = NodeStatus("eu", region, 0, f"127.77.{len(region)}.1", 5432, role)
    n.up, n.role = up, (live_role or role) if up else None
    return n


def test_lag_from_the_primary_and_the_replica() -> None:
    fra, lhr, arn, ams = (
        _node("fra", "primary"),
        _node("lhr", "replica"),
        _node("arn", "replica"),
        _node("ams", "replica"),
    )
    facts = {
        "fra-0": {
            "dbfleet_lhr_0": {"bytes": 0, "seconds": None},
            "dbfleet_arn_0": {"bytes": 8192, "seconds": 0.4},
            "dbfleet_ams_0": {"bytes": 65536, "seconds": None, "detached": True},
        },
        "lhr-0": {"self": {"unreplayed": 0, "age": 3600.0}},  # idle for an hour, but caught up
        "arn-0": {"self": {"unreplayed": 120, "age": 1.25}},
        "ams-0": {"self": {"unreplayed": 0, "age": None}},
    }
    status._lag([fra, lhr, arn, ams], facts)
    assert (lhr.lag_bytes, lhr.lag_seconds) == (0, 0.0)
    assert (arn.lag_bytes, arn.lag_seconds) == (8192, 1.25)
    assert (ams.lag_bytes, ams.lag_seconds) == (65536, None)
    assert fra.lag_bytes is None


def _outputs(stack: str) -> dict | None:
    if stack == "networks-eu":
        return {
            "regions": {
                r: {"host": f"127.77.{i}.1", "stats_port": 6434}
                for i, r in enumerate(("fra", "lhr"))
            }
        }
    if stack == "replicas-eu":
        return {
            "primary_region": "fra",
            "secret_mount": "secret",
            "secret_path": "dbfleet/t/eu/postgres",
            "nodes": {
                "fra": {"members": [{"host": "127.77.0.1", "port": 5432, "role": "primary"}]},
                "lhr": {"members": [{"host": "127.77.1.1", "port": 5432, "role": "replica"}]},
            },
        }
    return None


def test_collect_group_probes_every_node_and_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, str] = {}

    def probe_node(node: NodeStatus, password: str) -> dict:
        seen[node.name] = password
        if node.region == "lhr":
            node.up, node.error = False, "connection refused"
            return {}
        node.up, node.role = True, "primary"
        return {"dbfleet_lhr_0": {"bytes": 4096, "seconds": None, "detached": True}}

    def probe_proxy(proxy, names, socket_path=None):
        proxy.up = True
        proxy.backends = status.backends_from_rows(
            status.parse_haproxy_csv(
                CSV.replace("127.77.12.1", "127.77.0.1").replace("127.77.20.1", "127.77.1.1")
            ),
            names,
        )
        return proxy

    monkeypatch.setattr(status, "probe_node", probe_node)
    monkeypatch.setattr(status, "probe_proxy", probe_proxy)
    (g,) = status.collect(
        ["eu"],
        outputs=_outputs,
        secrets=lambda mount, path: {"superuser_password": f"pw:{mount}/{path}"},
    )
    assert seen == {
        "fra-0": "pw:secret/dbfleet/t/eu/postgres",
        "lhr-0": "pw:secret/dbfleet/t/eu/postgres",
    }
    assert [(n.name, n.up, n.role) for n in g.nodes] == [
        ("fra-0", True, "primary"),
        ("lhr-0", False, None),
    ]
    assert not g.healthy
    doc = g.to_json()
    assert doc["healthy"] is False
    assert doc["nodes"][1]["name"] == "lhr-0"
    assert doc["nodes"][1]["up"] is False and doc["nodes"][1]["healthy"] is False
    assert {b["server"]: b["up"] for b in doc["proxies"][0]["backends"] if b["listener"] == "read"}[
        "lhr-0"
    ] is False
    text = status.render([g])
    assert "DEGRADED" in text
    assert any(
        ln.split()[:1] == ["lhr-0"] and "DOWN" in ln and "connection refused" in ln
        for ln in text.splitlines()
    )
    json.dumps(doc)  # serialisable


def test_without_a_password_nodes_are_unknown_not_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_vault(mount: str, path: str) -> dict:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(status, "probe_proxy", lambda proxy, names, socket_path=None: proxy)
    (g,) = status.collect(["eu"], outputs=_outputs, secrets=no_vault)
    assert g.error.startswith("cannot read the group's superuser password from Vault")
    assert not g.readable and not g.healthy
    assert all(not n.probed for n in g.nodes)
    text = status.render([g])
    assert "UNKNOWN" in text and "DEGRADED" not in text
    rows = [ln.split() for ln in text.splitlines() if ln.split()[:1] in (["fra-0"], ["lhr-0"])]
    assert len(rows) == 2 and all(r[3] == "?" and "DOWN" not in r for r in rows)
    assert g.to_json()["readable"] is False


def test_a_group_that_is_not_deployed_is_an_error_not_a_crash() -> None:
    (g,) = status.collect(["eu"], outputs=lambda stack: None, secrets=lambda m, p: {})
    assert g.error == "networks-eu, replicas-eu not deployed: run dbfleet up eu"
    assert not g.healthy and g.nodes == []


def test_a_node_in_the_wrong_role_is_unhealthy() -> None:
    n = _node("lhr", "replica", live_role="primary")
    assert not n.healthy
    g = status.GroupStatus("eu", "fra", nodes=[n])
    assert "declared replica, runs as primary" in status.render([g])


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
