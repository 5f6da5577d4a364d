"""Each layer's program under mocks: topology, names, wiring between layers, errors."""

from __future__ import annotations

import pulumi
import pytest

from dbfleet import vault
from dbfleet.program.layers.replicas import live_leader as _REAL_LIVE_LEADER
from tests.unit.conftest import RecordingMocks, run_program

DYN = "pulumi-python:dynamic:Resource"
SECRETS = {
    "superuser_password": "S" * 43,
    "replication_password": "R" * 43,
    "app_password": "A" * 43,
    "backup_passphrase": "B" * 43,
}

EU_NETWORKS = {
    "regions": {
        "fra": {
            "host": "127.77.12.1",
            "postgres_port": 5432,
            "node_ports": [5432, 5433],
            "read_port": 6432,
            "write_port": 6433,
            "stats_port": 6434,
            "pool_port": 6435,
            "patroni_ports": [8008, 8009],
            "etcd_port": 2379,
            "etcd_peer_port": 2380,
        },
        "lhr": {
            "host": "127.77.20.1",
            "postgres_port": 5432,
            "node_ports": [5432],
            "read_port": 6432,
            "write_port": 6433,
            "stats_port": 6434,
            "pool_port": 6435,
            "patroni_ports": [8008],
            "etcd_port": 2379,
            "etcd_peer_port": 2380,
        },
        "arn": {
            "host": "127.77.2.1",
            "postgres_port": 5432,
            "node_ports": [5432],
            "read_port": 6432,
            "write_port": 6433,
            "stats_port": 6434,
            "pool_port": 6435,
            "patroni_ports": [8008],
            "etcd_port": 2379,
            "etcd_peer_port": 2380,
        },
    },
    "nearest": {"fra": ["lhr", "arn"], "lhr": ["fra", "arn"], "arn": ["fra", "lhr"]},
}
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBunitCA\n-----END CERTIFICATE-----\n"


EU_ACCOUNTS = {
    "group": "eu",
    "user": "dbfleet-eu",
    "data_root": "/srv/dbfleet/data/dbfleet-eu",
    "secret_mount": "secret",
    "secret_path": "dbfleet/dbfleet/eu/postgres",
    "pki_mount": "pki-dbfleet-eu",
    "ca_certificate": CA_PEM,
}


def node(host, port, role):
    return {
        "host": host,
        "port": port,
        "role": role,
        # rest_port: the node's Patroni REST API, which the proxies check.
        "members": [{"host": host, "port": port, "role": role, "rest_port": 8008}],
    }


EU_REPLICAS = {
    "primary_region": "fra",
    "nodes": {
        "fra": node("127.77.12.1", 5432, "primary"),
        "lhr": node("127.77.20.1", 5432, "replica"),
        "arn": node("127.77.2.1", 5432, "replica"),
    },
    "secret_mount": "secret",
    "secret_path": "dbfleet/dbfleet/eu/postgres",
    "app_db": "app",
    "app_user": "app",
}
UPSTREAM = {"accounts-eu": EU_ACCOUNTS, "networks-eu": EU_NETWORKS, "replicas-eu": EU_REPLICAS}


@pytest.fixture
def env(monkeypatch, tmp_path):
    monkeypatch.setenv("DBFLEET_HOME", "/srv/dbfleet")
    monkeypatch.delenv("DBFLEET_SPEC", raising=False)
    calls = []
    monkeypatch.setattr(vault, "client_from_env", lambda: object())
    monkeypatch.setattr(vault, "read_ca_pem", lambda c, m: CA_PEM)
    monkeypatch.setattr(vault, "ensure_group_pki", lambda *a, **k: [])
    # The CA file for this machine's clients is not written from unit tests.
    monkeypatch.setattr("dbfleet.program.layers.proxies._write_public", lambda *a: None)
    monkeypatch.setattr(
        vault,
        "read_group_secrets",
        lambda c, m, p, also=(): calls.append(("read", m, p)) or dict(SECRETS),
    )
    monkeypatch.setattr(
        vault,
        "ensure_group_secrets",
        lambda c, m, p: calls.append(("ensure", m, p)) or dict(SECRETS),
    )
    return calls


@pytest.fixture(autouse=True)
def live(monkeypatch) -> dict:
    """Patroni's REST API is never asked: the replicas layer's live_leader answers
    `live["leader"]` (None: no member answered) and records whom it was asked."""
    state: dict = {"leader": None, "asked": []}

    def fake_live_leader(rest, ca, timeout_s=1.0):
        assert ca == CA_PEM, "the members are verified against the group's CA"
        state["asked"].append(list(rest))
        return state["leader"]

    monkeypatch.setattr("dbfleet.program.layers.replicas.live_leader", fake_live_leader)
    return state


@pytest.fixture
def warnings(monkeypatch) -> list[str]:
    """What the program says with pulumi.log.warn."""
    said: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda msg, *a, **k: said.append(msg))
    return said


def run_stack(
    stack: str, upstream: dict | None = None, mocks: RecordingMocks | None = None
) -> RecordingMocks:
    outputs = dict(UPSTREAM if upstream is None else upstream)
    outputs.setdefault(stack, {})  # the stack itself always exists while it runs
    mocks = mocks or RecordingMocks()
    mocks.stack_outputs = outputs
    return run_program(stack, mocks)


SECRET_NAMES = ("PG_SUPERUSER_PASSWORD", "PG_REPLICATION_PASSWORD", "PG_APP_PASSWORD")


def scripts(mocks: RecordingMocks) -> dict[str, dict]:
    """The host scripts a program declares (not its certificates, also dynamic)."""
    return {r.name: r.inputs for r in mocks.of_type(DYN) if "script" in r.inputs}


def certificates(mocks: RecordingMocks) -> dict[str, dict]:
    """The server certificates a program declares: name -> inputs."""
    return {r.name: r.inputs for r in mocks.of_type(DYN) if "common_name" in r.inputs}


def test_accounts_ensures_secrets_and_creates_user_and_root(env):
    mocks = run_stack("accounts-eu", {})
    s = scripts(mocks)
    assert s["account-account"]["script"] == "account.sh"
    env_vars = s["account-account"]["environment"]
    assert env_vars["DATA_ROOT"] == "/srv/dbfleet/data/dbfleet-eu"
    assert env[0] == ("ensure", "secret", "dbfleet/dbfleet/eu/postgres")


def test_replicas_run_every_node_under_patroni_with_the_preferred_leader_first(env, live):
    mocks = run_stack("replicas-eu")
    s = scripts(mocks)
    assert set(s) == {
        "etcd-fra-etcd",
        "etcd-lhr-etcd",
        "etcd-arn-etcd",
        "fra-0-server",
        "lhr-0-server",
        "arn-0-server",
        "leader-leader",
        "backups-stanza",
    }
    assert {r.name for r in mocks.of_type("dbfleet:patroni:PatroniNode")} == {
        "fra-0",
        "lhr-0",
        "arn-0",
    }
    for name, host in (("fra", "127.77.12.1"), ("lhr", "127.77.20.1"), ("arn", "127.77.2.1")):
        node = s[f"{name}-0-server"]
        e = node["environment"]
        assert node["script"] == "patroni.sh"
        assert (e["PG_HOST"], e["PG_PORT"], e["REST_PORT"]) == (host, "5432", "8008")
        assert (e["MEMBER_NAME"], e["SCOPE"]) == (f"{name}-0", "dbfleet-eu")
        assert e["NODE_DIR"] == f"/srv/dbfleet/data/dbfleet-eu/{name}-0"
        assert e["RUN_AS"] == "dbfleet-eu"
        hosts = e["ALLOWED_HOSTS"].split()
        assert {"127.77.12.1", "127.77.20.1", "127.77.2.1"} <= set(hosts)
        # Passwords travel only in the secret environment, all three of them, with
        # the node's certificate and key (TLS_CERT, TLS_KEY).
        secret = dict(node["secret_environment"]["value"])
        assert set(secret) == {
            "PG_SUPERUSER_PASSWORD",
            "PG_REPLICATION_PASSWORD",
            "PG_APP_PASSWORD",
            "TLS_CERT",
            "TLS_KEY",
        }
        assert {k: secret[k] for k in SECRET_NAMES} == {
            "PG_SUPERUSER_PASSWORD": SECRETS["superuser_password"],
            "PG_REPLICATION_PASSWORD": SECRETS["replication_password"],
            "PG_APP_PASSWORD": SECRETS["app_password"],
        }
        assert "TLS_CA" in e and "TLS_KEY" not in e
    # Passwords come from the accounts layer's Vault path, never recomputed.
    assert ("read", "secret", "dbfleet/dbfleet/eu/postgres") in env
    for inputs in s.values():
        for password in SECRETS.values():
            assert password not in str(inputs["environment"])
    # The layer asked Patroni's REST API (mocked here) who leads, preferred leader first.
    assert live["asked"][0][0] == ("127.77.12.1", 8008)


def test_each_region_has_one_etcd_member_of_the_groups_cluster(env):
    s = scripts(run_stack("replicas-eu"))
    members = {n: i for n, i in s.items() if i["script"] == "etcd.sh"}
    assert set(members) == {"etcd-fra-etcd", "etcd-lhr-etcd", "etcd-arn-etcd"}
    cluster = (
        "fra=https://127.77.12.1:2380,lhr=https://127.77.20.1:2380,arn=https://127.77.2.1:2380"
    )
    for region, host in (("fra", "127.77.12.1"), ("lhr", "127.77.20.1"), ("arn", "127.77.2.1")):
        e = members[f"etcd-{region}-etcd"]["environment"]
        assert (e["MEMBER_NAME"], e["ETCD_HOST"]) == (region, host)
        assert (e["ETCD_CLIENT_PORT"], e["ETCD_PEER_PORT"]) == ("2379", "2380")
        assert e["ETCD_DIR"] == f"/srv/dbfleet/data/dbfleet-eu/etcd-{region}"
        # The group's members only, the same list for every member; the token keeps
        # two groups' clusters from ever merging.
        assert e["ETCD_CLUSTER"] == cluster
        assert sorted(e["ETCD_CLIENTS"].split()) == [
            "127.77.12.1:2379",
            "127.77.2.1:2379",
            "127.77.20.1:2379",
        ]
        assert e["ETCD_TOKEN"] == "dbfleet-eu"
        # etcd holds no password: none of the group's secrets reaches it.
        assert not any(p in str(members[f"etcd-{region}-etcd"]) for p in SECRETS.values())


def test_a_node_asks_its_own_regions_etcd_member_first(env):
    s = scripts(run_stack("replicas-eu"))
    assert s["fra-0-server"]["environment"]["ETCD_HOSTS"].split() == [
        "127.77.12.1:2379",
        "127.77.20.1:2379",
        "127.77.2.1:2379",
    ]
    assert s["lhr-0-server"]["environment"]["ETCD_HOSTS"].split() == [
        "127.77.20.1:2379",
        "127.77.12.1:2379",
        "127.77.2.1:2379",
    ]
    assert s["arn-0-server"]["environment"]["ETCD_HOSTS"].split()[0] == "127.77.2.1:2379"


def test_the_leadership_prefers_the_fleet_files_primary(env):
    s = scripts(run_stack("replicas-eu"))
    leader = s["leader-leader"]
    assert leader["script"] == "patroni_leader.sh"
    e = leader["environment"]
    assert e["PREFERRED"] == "fra-0"
    assert e["SCOPE"] == "dbfleet-eu"
    assert e["MEMBERS"].split() == [
        "fra-0=127.77.12.1:5432:8008",
        "lhr-0=127.77.20.1:5432:8008",
        "arn-0=127.77.2.1:5432:8008",
    ]
    assert (e["APP_DB"], e["APP_USER"]) == ("app", "app")
    # The dynamic configuration is the one every node bootstraps with.
    assert e["DCS_CONFIG"] == s["lhr-0-server"]["environment"]["DCS_CONFIG"]
    assert SECRETS["app_password"] not in str(e)
    assert leader["secret_environment"]["value"]["PG_APP_PASSWORD"] == SECRETS["app_password"]


@pytest.mark.parametrize(
    ("durability", "synchronous"), [(None, False), ("async", False), ("sync", True)]
)
def test_the_groups_durability_decides_synchronous_mode(
    env, monkeypatch, tmp_path, durability, synchronous
):
    import json

    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n"
        + (f"    durability: {durability}\n" if durability else "")
        + "    max_lag_on_failover: 4MB\n"
        "    regions:\n      fra: {nodes: 1}\n      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    s = scripts(run_stack("replicas-eu"))
    for name in ("leader-leader", "fra-0-server", "lhr-0-server", "arn-0-server"):
        dcs = json.loads(s[name]["environment"]["DCS_CONFIG"])
        assert dcs["synchronous_mode"] is synchronous, name
        assert dcs["maximum_lag_on_failover"] == 4 * 1024 * 1024


def test_live_leader_reads_patronis_cluster_view(monkeypatch):
    """The real live_leader (the layer tests replace it), against a mocked urlopen."""
    import io
    import json
    import urllib.request

    real = _REAL_LIVE_LEADER
    views = {
        "127.77.12.1:8008": OSError("connection refused"),  # the preferred leader is down
        "127.77.20.1:8008": {
            "members": [
                {"name": "fra-0", "role": "replica"},
                {"name": "lhr-0", "role": "leader"},
            ]
        },
    }
    asked: list[tuple[str, float]] = []
    context = object()
    cas: list[str] = []

    def fake_context(cadata):
        cas.append(cadata)
        return context

    def fake_urlopen(url, timeout, context):
        assert context is verified, "every call verifies the member against the group's CA"
        asked.append((url, timeout))
        view = views[url.split("//", 1)[1].split("/", 1)[0]]
        if isinstance(view, Exception):
            raise view
        return io.BytesIO(json.dumps(view).encode())

    verified = context
    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    monkeypatch.setattr("ssl.create_default_context", fake_context)
    rest = [("127.77.12.1", 8008), ("127.77.20.1", 8008), ("127.77.2.1", 8008)]
    assert real(rest, CA_PEM) == "lhr-0"
    assert cas == [CA_PEM]
    # HTTPS; the first member that answers is believed; nobody else is asked.
    assert [u for u, _ in asked] == [
        "https://127.77.12.1:8008/cluster",
        "https://127.77.20.1:8008/cluster",
    ]
    assert {t for _, t in asked} == {1.0}
    # An answer without a leader (mid-failover) is no leader, not the next member's word.
    views["127.77.20.1:8008"] = {"members": [{"name": "fra-0", "role": "replica"}]}
    assert real(rest[:2], CA_PEM) is None
    # Nobody answers (a new group): None.
    views["127.77.20.1:8008"] = ValueError("not JSON")
    assert real(rest[:2], CA_PEM) is None


def test_extra_nodes_in_a_region_are_members_of_their_own(env, monkeypatch, tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 2}\n"
        "      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    s = scripts(run_stack("replicas-eu"))
    e = s["fra-1-server"]["environment"]
    assert s["fra-1-server"]["script"] == "patroni.sh"
    assert (e["PG_PORT"], e["REST_PORT"], e["MEMBER_NAME"]) == ("5433", "8009", "fra-1")
    assert e["NODE_DIR"] == "/srv/dbfleet/data/dbfleet-eu/fra-1"
    assert e["ETCD_HOSTS"].split()[0] == "127.77.12.1:2379"
    # One etcd member per region, not per node.
    assert sorted(n for n, i in s.items() if i["script"] == "etcd.sh") == [
        "etcd-arn-etcd",
        "etcd-fra-etcd",
        "etcd-lhr-etcd",
    ]
    assert s["leader-leader"]["environment"]["MEMBERS"].split() == [
        "fra-0=127.77.12.1:5432:8008",
        "fra-1=127.77.12.1:5433:8009",
        "lhr-0=127.77.20.1:5432:8008",
        "arn-0=127.77.2.1:5432:8008",
    ]
    assert s["leader-leader"]["environment"]["PREFERRED"] == "fra-0"


def test_replicas_export_the_nodes_with_their_rest_ports_the_lag_budget_and_etcd(
    env, monkeypatch, tmp_path, exports
):
    from tests.unit.conftest import resolve

    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    read_lag_budget: 2MB\n"
        "    regions:\n      fra: {nodes: 2}\n      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    run_stack("replicas-eu")
    assert exports["primary_region"] == "fra"
    nodes = resolve(pulumi.Output.from_input(exports["nodes"]))
    assert nodes["fra"] == {
        "host": "127.77.12.1",
        "port": 5432,
        "role": "primary",
        "members": [
            {"host": "127.77.12.1", "port": 5432, "role": "primary", "rest_port": 8008},
            {"host": "127.77.12.1", "port": 5433, "role": "replica", "rest_port": 8009},
        ],
    }
    assert nodes["lhr"]["role"] == "replica"
    assert nodes["lhr"]["members"] == [
        {"host": "127.77.20.1", "port": 5432, "role": "replica", "rest_port": 8008}
    ]
    assert exports["read_lag_budget"] == 2 * 1024 * 1024
    assert exports["etcd"] == {
        "fra": "127.77.12.1:2379",
        "lhr": "127.77.20.1:2379",
        "arn": "127.77.2.1:2379",
    }


def test_the_default_read_lag_budget_is_exported(env, exports):
    run_stack("replicas-eu")
    assert exports["read_lag_budget"] == 16 * 1024 * 1024


def haproxies(upstream: dict | None = None) -> dict[str, dict]:
    s = scripts(run_stack("proxies-eu", upstream))
    return {n: i["environment"] for n, i in s.items() if i["script"] == "haproxy.sh"}


def test_proxies_read_local_first_then_nearest_and_write_to_every_node(env):
    s = haproxies()
    assert set(s) == {"fra-haproxy", "lhr-haproxy", "arn-haproxy"}
    lhr = s["lhr-haproxy"]
    assert lhr["READ_LOCAL"] == "127.77.20.1:5432:8008"
    assert lhr["READ_BACKUPS"] == "127.77.12.1:5432:8008 127.77.2.1:5432:8008"
    # Every node, the declared primary first: Patroni's /primary picks the live one.
    for inputs in s.values():
        assert inputs["WRITE_SERVERS"] == (
            "127.77.12.1:5432:8008 127.77.20.1:5432:8008 127.77.2.1:5432:8008"
        )
        assert "WRITE_BACKEND" not in inputs
    assert lhr["PROXY_HOST"] == "127.77.20.1"
    # Backups never leave the group: every backup is one of the group's nodes.
    group_nodes = {f"{n['host']}:{n['port']}:8008" for n in EU_REPLICAS["nodes"].values()}
    for inputs in s.values():
        assert set(inputs["READ_BACKUPS"].split()) <= group_nodes


def test_proxies_take_the_lag_budget_and_connection_limits_from_the_fleet_file(
    env, monkeypatch, tmp_path
):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "limits: {max_connections: 200, queue_timeout_s: 30}\n"
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    read_lag_budget: 1MB\n"
        "    regions:\n      fra: {nodes: 2}\n      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    for inputs in haproxies().values():
        # (200 - 10 reserved) // (2 listeners x 3 regions) = 31
        assert inputs["SERVER_MAXCONN"] == "31"
        assert inputs["QUEUE_TIMEOUT_S"] == "30"
        assert inputs["READ_LAG_BYTES"] == str(1024 * 1024)


def test_the_defaults_share_a_hundred_connections_between_six_listeners(env):
    lhr = haproxies()["lhr-haproxy"]
    assert (lhr["SERVER_MAXCONN"], lhr["QUEUE_TIMEOUT_S"]) == ("15", "10")
    assert lhr["READ_LAG_BYTES"] == str(16 * 1024 * 1024)


@pytest.mark.parametrize(
    ("max_connections", "regions", "share"),
    [(100, 3, 15), (100, 1, 45), (200, 3, 31), (20, 3, 1), (20, 10, 1), (10000, 2, 2497)],
)
def test_server_maxconn_shares_a_nodes_slots_between_every_listener(
    max_connections, regions, share
):
    from dbfleet.program.layers.proxies import server_maxconn

    assert server_maxconn(max_connections, regions) == share
    # The group's proxies together never exceed the node's unreserved slots (unless
    # that would mean admitting no one).
    assert share * 2 * regions <= max(max_connections - 10, 2 * regions)


def test_without_rest_port_the_networks_stacks_patroni_ports_are_used(env):
    nodes = {
        r: {
            **n,
            "members": [{k: v for k, v in m.items() if k != "rest_port"} for m in n["members"]],
        }
        for r, n in EU_REPLICAS["nodes"].items()
    }
    nets = {
        r: dict(n, patroni_ports=[9100 + i for i, _ in enumerate(n["patroni_ports"])])
        for r, n in EU_NETWORKS["regions"].items()
    }
    upstream = dict(
        UPSTREAM,
        **{
            "replicas-eu": dict(EU_REPLICAS, nodes=nodes),
            "networks-eu": dict(EU_NETWORKS, regions=nets),
        },
    )
    lhr = haproxies(upstream)["lhr-haproxy"]
    assert lhr["READ_LOCAL"] == "127.77.20.1:5432:9100"
    assert lhr["WRITE_SERVERS"].split()[0] == "127.77.12.1:5432:9100"


def test_a_node_without_any_rest_port_says_to_update_the_networks_stack(env):
    nodes = {
        r: {
            **n,
            "members": [{k: v for k, v in m.items() if k != "rest_port"} for m in n["members"]],
        }
        for r, n in EU_REPLICAS["nodes"].items()
    }
    nets = {
        r: {k: v for k, v in n.items() if k != "patroni_ports"}
        for r, n in EU_NETWORKS["regions"].items()
    }
    upstream = dict(
        UPSTREAM,
        **{
            "replicas-eu": dict(EU_REPLICAS, nodes=nodes),
            "networks-eu": dict(EU_NETWORKS, regions=nets),
        },
    )
    with pytest.raises(Exception, match="networks-eu has no Patroni REST port for node"):
        run_stack("proxies-eu", upstream)


def test_each_region_pools_in_front_of_its_own_proxy(env):
    mocks = run_stack("proxies-eu")
    s = scripts(mocks)
    poolers = {n: i for n, i in s.items() if i["script"] == "pgbouncer.sh"}
    assert set(poolers) == {"fra-pool-pgbouncer", "lhr-pool-pgbouncer", "arn-pool-pgbouncer"}
    lhr = poolers["lhr-pool-pgbouncer"]["environment"]
    assert (lhr["POOL_HOST"], lhr["POOL_PORT"]) == ("127.77.20.1", "6435")
    # Through the region's HAProxy, never straight to a node: routing stays HAProxy's.
    assert lhr["WRITE_TARGET"] == "127.77.20.1:6433"
    assert lhr["READ_TARGET"] == "127.77.20.1:6432"
    assert lhr["PRIMARY"] == "127.77.12.1:5432"
    assert (lhr["APP_DB"], lhr["APP_USER"], lhr["RUN_AS"]) == ("app", "app", "dbfleet-eu")
    assert lhr["POOL_DIR"] == "/srv/dbfleet/data/dbfleet-eu/pooler-lhr"
    assert (lhr["DEFAULT_POOL_SIZE"], lhr["MAX_CLIENT_CONN"]) == ("20", "1000")
    # The password only in the secret environment.
    for inputs in poolers.values():
        assert SECRETS["app_password"] not in str(inputs["environment"])
        # a secret value (the engine's marker): the password, the certificate and key
        secret = inputs["secret_environment"]["value"]
        assert secret["PG_APP_PASSWORD"] == SECRETS["app_password"]
        assert set(secret) == {"PG_APP_PASSWORD", "TLS_CERT", "TLS_KEY"}
    assert {r.name for r in mocks.of_type("dbfleet:pooler:RegionPooler")} == {
        "fra-pool",
        "lhr-pool",
        "arn-pool",
    }


def test_pool_sizes_come_from_the_fleet_file(env, monkeypatch, tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "pooling: {default_pool_size: 7, max_client_conn: 50}\n"
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 2}\n"
        "      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    env_ = scripts(run_stack("proxies-eu"))["fra-pool-pgbouncer"]["environment"]
    assert (env_["DEFAULT_POOL_SIZE"], env_["MAX_CLIENT_CONN"]) == ("7", "50")


def test_proxies_export_pooled_endpoints_and_secret_pooled_uris(env, exports):
    from tests.unit.conftest import is_secret, resolve

    run_stack("proxies-eu")
    assert resolve(pulumi.Output.from_input(exports["pooled_endpoints"])) == {
        "fra": "127.77.12.1:6435",
        "lhr": "127.77.20.1:6435",
        "arn": "127.77.2.1:6435",
    }
    uris = exports["pooled_connection_uris"]
    assert is_secret(uris)
    password = SECRETS["app_password"]
    tls = "?sslmode=verify-full&sslrootcert=/srv/dbfleet/tls/dbfleet-eu-ca.pem"
    assert resolve(uris)["lhr"] == {
        "read": f"postgresql://app:{password}@127.77.20.1:6435/app_read{tls}",
        "write": f"postgresql://app:{password}@127.77.20.1:6435/app{tls}",
    }
    assert exports["ca_certificate"] == CA_PEM
    # The direct endpoints stay as they were.
    assert {"read_endpoints", "write_endpoints", "connection_uris"} <= set(exports)


def test_a_networks_stack_without_a_pool_port_says_to_update_it_first(env):
    old = {
        r: {k: v for k, v in n.items() if k != "pool_port"}
        for r, n in EU_NETWORKS["regions"].items()
    }
    upstream = dict(UPSTREAM, **{"networks-eu": dict(EU_NETWORKS, regions=old)})
    with pytest.raises(Exception, match="networks-eu has no pool_port"):
        run_stack("proxies-eu", upstream)


def test_networks_stops_on_a_port_in_use(env, monkeypatch):
    from dbfleet.program.layers import networks

    monkeypatch.setattr(networks, "port_is_free", lambda host, port: port != 6433)
    with pytest.raises(Exception, match=r"6433.*already in use"):
        run_stack(
            "networks-eu", {"accounts-eu": EU_ACCOUNTS, "networks-eu": {}}
        )  # first deploy: no outputs yet


def test_ports_the_stack_already_handed_out_are_not_clashes_but_new_ones_are(
    env, monkeypatch, tmp_path
):
    from dbfleet.program.layers import networks

    # Every port is busy (the group's own processes hold them)...
    monkeypatch.setattr(networks, "port_is_free", lambda host, port: False)
    run_stack("networks-eu")  # ...and were handed out by the last deploy: fine.
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 2}\n"
        "      lhr: {nodes: 2}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    with pytest.raises(Exception, match=r"127\.77\.20\.1:5433"):  # lhr's new second node port
        run_stack("networks-eu")


def test_a_layer_whose_upstream_is_missing_says_which_stack(env):
    with pytest.raises(Exception, match="networks-eu"):
        run_stack("replicas-eu", {"accounts-eu": EU_ACCOUNTS})


@pytest.mark.parametrize(
    ("stack", "message"),
    [("database-eu", "not named <layer>-<group>"), ("replicas-apac", "group 'apac' is not in")],
)
def test_bad_stack_names_are_refused(env, stack, message):
    with pytest.raises(pulumi.RunError, match=message):
        run_stack(stack)


def test_an_invalid_fleet_file_stops_every_stack_with_its_problems(env, monkeypatch, tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    regions:\n      sjc: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    with pytest.raises(pulumi.RunError, match="groups.eu.regions.sjc: region sjc is in zone US"):
        run_stack("accounts-eu", {})


def test_a_moved_primary_is_a_switchover_to_the_new_preferred_leader(
    env, monkeypatch, tmp_path, warnings, exports
):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: lhr\n    regions:\n      fra: {nodes: 1}\n"
        "      lhr: {nodes: 1}\n      arn: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    upstream = dict(UPSTREAM, **{"replicas-eu": EU_REPLICAS})  # last deployed with fra as primary
    s = scripts(run_stack("replicas-eu", upstream))
    leader = s["leader-leader"]["environment"]
    assert leader["PREFERRED"] == "lhr-0"
    assert leader["MEMBERS"].split()[0] == "lhr-0=127.77.20.1:5432:8008"
    # The leadership runs from the new preferred leader's node.
    assert s["leader-leader"]["connection"] == s["lhr-0-server"]["connection"]
    # Every node stays a Patroni node: nothing is re-created, Patroni moves the lock.
    assert {s[f"{r}-0-server"]["script"] for r in ("fra", "lhr", "arn")} == {"patroni.sh"}
    (said,) = [w for w in warnings if "switchover" in w]
    assert "switchover in group eu: fra -> lhr" in said
    assert "promotes lhr-0" in said
    assert exports["primary_region"] == "lhr"


def test_an_unmoved_primary_warns_of_nothing(env, warnings):
    run_stack("replicas-eu")
    assert warnings == []


def test_a_live_leader_other_than_the_preferred_one_is_named_with_both_ways_out(
    env, live, warnings
):
    live["leader"] = "lhr-0"  # Patroni failed over by itself
    s = scripts(run_stack("replicas-eu"))
    (said,) = warnings
    assert "group eu is led by lhr-0, not by fra-0 as the fleet file prefers" in said
    # Accept it: edit the file (and commit it)...
    assert "set groups.eu.primary: lhr in the fleet file and commit it" in said
    # ...or switch back with `up`.
    assert "`dbfleet up eu` (a switchover to fra-0" in said
    # Nothing flaps by itself: the file's preference is still what is declared.
    assert s["leader-leader"]["environment"]["PREFERRED"] == "fra-0"


@pytest.mark.parametrize("answer", [None, "fra-0"])
def test_no_failover_warning_when_the_preferred_leader_leads_or_none_answers(
    env, live, warnings, answer
):
    live["leader"] = answer
    run_stack("replicas-eu")
    assert warnings == []


def test_a_region_not_yet_in_the_networks_stack_is_named(env, monkeypatch, tmp_path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "groups:\n  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 1}\n"
        "      lhr: {nodes: 1}\n      arn: {nodes: 1}\n      ams: {nodes: 1}\n"
    )
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    for stack in ("replicas-eu", "proxies-eu"):
        with pytest.raises(pulumi.RunError, match=r"region\(s\) ams .* not in networks-eu"):
            run_stack(stack)


@pytest.mark.parametrize(
    ("stack", "waves"),
    [
        ("networks-eu", [{"networks-eu"}, {"networks-eu", "accounts-eu"}]),
        ("replicas-eu", [{"replicas-eu"}, {"replicas-eu", "accounts-eu", "networks-eu"}]),
        ("proxies-eu", [{"networks-eu", "replicas-eu", "accounts-eu"}]),
    ],
)
def test_a_layer_reads_its_own_stack_alone_then_every_upstream_stack_at_once(
    env, monkeypatch, stack, waves
):
    # The engine serves reads in parallel only if they are all asked for before the
    # first wait; the stack's own state file is rewritten while the run reads, so that
    # read goes first, on its own.
    from dbfleet.program import upstream

    started_at_each_wait = []
    real_sync_await = upstream._sync_await

    def recording_sync_await(awaitable):
        started = {name for _, name in upstream._REFS}
        if not started_at_each_wait or started_at_each_wait[-1] != started:
            started_at_each_wait.append(started)
        return real_sync_await(awaitable)

    monkeypatch.setattr(upstream, "_sync_await", recording_sync_await)
    monkeypatch.setattr("dbfleet.program.layers.networks.port_is_free", lambda host, port: True)
    run_stack(stack)
    assert started_at_each_wait == waves


def test_the_program_keeps_what_it_built_out_of_the_cyclic_gc(env):
    # Scanning the SDK's and the fleet's objects again (during the run and at exit)
    # cost ~0.1 s of every preview.
    import gc

    before = gc.get_freeze_count()
    run_stack("accounts-eu", {})
    assert gc.get_freeze_count() > before


# -- which fleet a stack belongs to ------------------------------------------------------------
@pytest.fixture
def exports(monkeypatch) -> dict:
    got: dict = {}
    monkeypatch.setattr(pulumi, "export", lambda name, value: got.__setitem__(name, value))
    return got


@pytest.mark.parametrize("stack", ["accounts-eu", "networks-eu", "replicas-eu", "proxies-eu"])
def test_every_stack_records_the_fleet_it_belongs_to_and_its_file(env, exports, stack, monkeypatch):
    monkeypatch.setattr("dbfleet.program.layers.networks.port_is_free", lambda host, port: True)
    run_stack(stack)
    # The default fleet file lies in the checkout: recorded relative to it, so a moved
    # checkout or a CI clone records the same value.
    assert exports["fleet"] == {"name": "dbfleet", "file": "stacks/fleet.yaml"}


def other_fleets(outputs: dict) -> dict:
    return dict(outputs, fleet={"name": "ncfleet", "file": "/home/nc/fleet.yaml"})


@pytest.mark.parametrize(
    ("stack", "upstream"),
    [
        # its own record
        ("accounts-eu", {"accounts-eu": other_fleets(EU_ACCOUNTS)}),
        ("replicas-eu", dict(UPSTREAM, **{"replicas-eu": other_fleets(EU_REPLICAS)})),
        # a new stack of a group whose accounts stack is another fleet's
        ("networks-eu", dict(UPSTREAM, **{"accounts-eu": other_fleets(EU_ACCOUNTS)})),
        ("proxies-eu", dict(UPSTREAM, **{"accounts-eu": other_fleets(EU_ACCOUNTS)})),
        # a group the file does not have: its own record is enough
        ("replicas-ap", {"replicas-ap": other_fleets(EU_REPLICAS)}),
        # deployed by an older dbfleet: no record, but its Vault path names the fleet
        (
            "accounts-eu",
            {"accounts-eu": dict(EU_ACCOUNTS, secret_path="dbfleet/ncfleet/eu/postgres")},
        ),
    ],
)
def test_a_stack_of_another_fleet_is_refused_before_anything_is_declared(
    env, exports, stack, upstream
):
    mocks = RecordingMocks()
    with pytest.raises(pulumi.RunError) as refused:
        run_stack(stack, upstream, mocks)
    message = str(refused.value)
    assert "\n" not in message
    assert "fleet 'dbfleet'" in message and "fleet 'ncfleet'" in message
    assert "fleet.yaml" in message and "renamed only by destroying" in message
    assert env == []  # Vault untouched
    assert not mocks.of_type(DYN)  # no host script declared
    # The outputs it had are kept (a failed run re-exports them), never rewritten.
    assert exports.get("fleet", {"name": "ncfleet"})["name"] == "ncfleet"


def test_a_stack_deployed_by_an_older_dbfleet_of_this_fleet_is_adopted(env, exports):
    legacy = {"accounts-eu": dict(EU_ACCOUNTS)}  # no `fleet` output yet
    mocks = run_stack("accounts-eu", legacy)
    assert "account-account" in scripts(mocks)
    assert exports["fleet"]["name"] == "dbfleet"


def test_every_node_and_pooler_gets_a_certificate_from_its_groups_ca(env):
    """A client verifies a node under the address it dialled: the node's own or any
    region's proxy (TLS passes through HAProxy). The pooler's names its own address."""
    nodes = certificates(run_stack("replicas-eu"))
    proxies = {"127.77.12.1", "127.77.20.1", "127.77.2.1"}
    assert sorted(nodes) == [
        "arn-0-tls",
        "etcd-arn-tls",
        "etcd-fra-tls",
        "etcd-lhr-tls",
        "fra-0-tls",
        "lhr-0-tls",
    ]
    for name, host in (("fra", "127.77.12.1"), ("lhr", "127.77.20.1"), ("arn", "127.77.2.1")):
        cert = nodes[f"{name}-0-tls"]
        assert cert["mount"] == "pki-dbfleet-eu"
        assert cert["common_name"] == f"{name}-0"
        assert set(cert["ip_sans"]) == {host} | proxies
        assert cert["ttl_s"] == 90 * 86400
        # Each etcd member's names its own address only: clients dial it there.
        etcd = nodes[f"etcd-{name}-tls"]
        assert (etcd["mount"], etcd["common_name"]) == ("pki-dbfleet-eu", f"etcd-{name}")
        assert etcd["ip_sans"] == [host]
    poolers = certificates(run_stack("proxies-eu"))
    assert poolers["lhr-pool-tls"]["ip_sans"] == ["127.77.20.1"]
    assert {c["mount"] for c in poolers.values()} == {"pki-dbfleet-eu"}
