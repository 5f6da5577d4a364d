"""The layers on the ssh target, under mocks: one connection per host, the login from
Vault as a secret, a firewall per host, nodes and proxies on their hosts' addresses."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbfleet import vault
from tests.unit.conftest import RecordingMocks, run_program

DYN = "pulumi-python:dynamic:Resource"
SECRETS = {
    "superuser_password": "S" * 43,
    "replication_password": "R" * 43,
    "app_password": "A" * 43,
    "backup_passphrase": "B" * 43,
}
LOGIN = {
    "private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nk\n",
    "known_hosts": "198.18.3.11 ssh-ed25519 AAAA\n",
}
FLEET = """\
name: lab
target: ssh
ssh: {user: root, key: dbfleet/lab/ssh}
firewall: {clients: [198.18.3.1/32], operators: [198.18.3.1/32]}
groups:
  eu:
    zone: EU
    primary: fra
    regions:
      fra: {nodes: 1, hosts: [{address: 198.18.3.11}]}
      lhr: {nodes: 2, hosts: [{address: 198.18.3.12}, {address: 198.18.3.14, port: 2222}]}
      arn: {nodes: 1, hosts: [{address: 198.18.3.13}]}
"""
NETWORKS = {
    "regions": {
        r: {
            "host": hosts[0],
            "node_hosts": hosts,
            "postgres_port": 5432,
            "node_ports": [5432 + k for k in range(len(hosts))],
            "read_port": 6432,
            "write_port": 6433,
            "stats_port": 6434,
            "pool_port": 6435,
            "patroni_ports": [8008 + k for k in range(len(hosts))],
            "etcd_port": 2379,
            "etcd_peer_port": 2380,
        }
        for r, hosts in {
            "fra": ["198.18.3.11"],
            "lhr": ["198.18.3.12", "198.18.3.14"],
            "arn": ["198.18.3.13"],
        }.items()
    },
    "nearest": {"fra": ["lhr", "arn"], "lhr": ["fra", "arn"], "arn": ["fra", "lhr"]},
}
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBunitCA\n-----END CERTIFICATE-----\n"


ACCOUNTS = {
    "group": "eu",
    "user": "lab-eu",
    "data_root": "/var/lib/dbfleet/lab-eu",
    "secret_mount": "secret",
    "secret_path": "dbfleet/lab/eu/postgres",
    "pki_mount": "pki-lab-eu",
    "ca_certificate": CA_PEM,
}


def _member(host: str, port: int, role: str, rest_port: int = 8008) -> dict:
    return {"host": host, "port": port, "role": role, "rest_port": rest_port}


REPLICAS = {
    "primary_region": "fra",
    "nodes": {
        "fra": {
            **_member("198.18.3.11", 5432, "primary"),
            "members": [_member("198.18.3.11", 5432, "primary")],
        },
        "lhr": {
            **_member("198.18.3.12", 5432, "replica"),
            "members": [
                _member("198.18.3.12", 5432, "replica"),
                _member("198.18.3.14", 5433, "replica", 8009),
            ],
        },
        "arn": {
            **_member("198.18.3.13", 5432, "replica"),
            "members": [_member("198.18.3.13", 5432, "replica")],
        },
    },
    "secret_mount": "secret",
    "secret_path": "dbfleet/lab/eu/postgres",
    "app_db": "app",
    "app_user": "app",
}
UPSTREAM = {"accounts-eu": ACCOUNTS, "networks-eu": NETWORKS, "replicas-eu": REPLICAS}


@pytest.fixture(autouse=True)
def ssh_fleet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    spec = tmp_path / "lab.yaml"
    spec.write_text(FLEET)
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    monkeypatch.setenv("DBFLEET_HOME", "/srv/dbfleet")
    reads: list = []
    monkeypatch.setattr(vault, "client_from_env", lambda: object())
    monkeypatch.setattr(vault, "read_ca_pem", lambda c, m: CA_PEM)
    monkeypatch.setattr(vault, "ensure_group_pki", lambda *a, **k: [])
    # The CA file for this machine's clients is not written from unit tests.
    monkeypatch.setattr("dbfleet.program.layers.proxies._write_public", lambda *a: None)
    monkeypatch.setattr(vault, "read_group_secrets", lambda c, m, p, also=(): dict(SECRETS))
    monkeypatch.setattr(vault, "ensure_group_secrets", lambda c, m, p, also=(): dict(SECRETS))
    monkeypatch.setattr(
        vault, "read_ssh_login", lambda c, m, p: reads.append((m, p)) or dict(LOGIN)
    )
    # The replicas layer asks Patroni's REST API for the live leader: these hosts are
    # not loopback, so it is never asked here.
    monkeypatch.setattr("dbfleet.program.layers.replicas.live_leader", lambda *a, **k: None)
    return reads


def run_stack(stack: str) -> RecordingMocks:
    outputs = {k: v for k, v in UPSTREAM.items()}
    outputs.setdefault(stack, {})
    return run_program(stack, RecordingMocks(stack_outputs=outputs))


def scripts(mocks: RecordingMocks) -> dict[str, dict]:
    """The host scripts a program declares (not its certificates, also dynamic)."""
    return {r.name: r.inputs for r in mocks.of_type(DYN) if "script" in r.inputs}


def certificates(mocks: RecordingMocks) -> dict[str, dict]:
    """The server certificates a program declares: name -> inputs."""
    return {r.name: r.inputs for r in mocks.of_type(DYN) if "common_name" in r.inputs}


def test_every_host_gets_an_account_that_installs_the_packages(ssh_fleet: list) -> None:
    s = scripts(run_stack("accounts-eu"))
    assert sorted(s) == [
        "account-arn-0-account",
        "account-fra-0-account",
        "account-lhr-0-account",
        "account-lhr-1-account",
    ]
    lhr1 = s["account-lhr-1-account"]
    assert lhr1["connection"]["kind"] == "ssh"
    assert (lhr1["connection"]["host"], lhr1["connection"]["port"]) == ("198.18.3.14", 2222)
    assert lhr1["connection"]["user"] == "root"
    assert lhr1["environment"]["DATA_ROOT"] == "/var/lib/dbfleet/lab-eu"
    assert lhr1["environment"]["ACCOUNT_USER"] == "lab-eu"
    assert "postgresql-15" in lhr1["environment"]["INSTALL_PACKAGES"].split()
    assert ssh_fleet == [
        ("secret", "dbfleet/lab/ssh")
    ]  # the login is read once, from the file's path
    # the login travels as a secret to the provider, never into the host's environment
    assert (
        "private_key" not in str(lhr1["environment"])
        and "secret_environment" not in lhr1
        or ("private_key" not in str(lhr1.get("secret_environment")))
    )


def test_the_networks_layer_puts_a_firewall_on_every_host() -> None:
    s = scripts(run_stack("networks-eu"))
    fw = {
        name: inputs["environment"]
        for name, inputs in s.items()
        if inputs["script"] == "firewall.sh"
    }
    assert sorted(fw) == ["arn-0-firewall", "fra-0-firewall", "lhr-0-firewall", "lhr-1-firewall"]
    fra = fw["fra-0-firewall"]
    assert fra["FW_TABLE"] == "dbfleet_lab_eu"
    assert fra["HOST_ADDRESS"] == "198.18.3.11"
    assert fra["NODE_PORTS"] == "5432 8008 2379 2380" and fra["CLIENT_PORTS"] == "6432 6433 6435"
    assert fra["STATS_PORT"] == "6434"
    assert set(fra["GROUP_SOURCES"].split()) == {
        "198.18.3.11",
        "198.18.3.12",
        "198.18.3.13",
        "198.18.3.14",
    }
    assert fra["CLIENT_SOURCES"] == "198.18.3.1/32" and fra["OPERATOR_SOURCES"] == "198.18.3.1/32"
    assert "198.18.3.14:2222" in fra["PEERS"].split() and "198.18.3.11:22" not in fra["PEERS"]
    # the second host of lhr runs no proxy: only its own node port is guarded there
    lhr1 = fw["lhr-1-firewall"]
    assert (lhr1["NODE_PORTS"], lhr1["CLIENT_PORTS"], lhr1["STATS_PORT"]) == ("5433 8009", "", "")


def test_nodes_listen_on_their_hosts_and_admit_only_the_group_and_operators() -> None:
    s = scripts(run_stack("replicas-eu"))
    fra, lhr1 = s["fra-0-server"], s["lhr-1-server"]
    assert (
        fra["connection"]["host"] == "198.18.3.11" and lhr1["connection"]["host"] == "198.18.3.14"
    )
    assert (
        lhr1["environment"]["PG_HOST"] == "198.18.3.14" and lhr1["environment"]["PG_PORT"] == "5433"
    )
    assert lhr1["environment"]["REST_PORT"] == "8009"
    # Its region's etcd member (on the region's first host) first, then the others'.
    assert lhr1["environment"]["ETCD_HOSTS"].split() == [
        "198.18.3.12:2379",
        "198.18.3.11:2379",
        "198.18.3.13:2379",
    ]
    assert fra["environment"]["TARGET"] == "ssh"
    allowed = fra["environment"]["ALLOWED_HOSTS"].split()
    assert "127.0.0.1" not in allowed
    assert set(allowed) == {
        "198.18.3.11",
        "198.18.3.12",
        "198.18.3.13",
        "198.18.3.14",
        "198.18.3.1/32",
    }
    # The leadership reaches every member at its own host and ports, from the
    # preferred leader's host.
    leader = s["leader-leader"]
    assert leader["connection"]["host"] == "198.18.3.11"
    assert leader["environment"]["MEMBERS"].split() == [
        "fra-0=198.18.3.11:5432:8008",
        "lhr-0=198.18.3.12:5432:8008",
        "lhr-1=198.18.3.14:5433:8009",
        "arn-0=198.18.3.13:5432:8008",
    ]


def test_each_region_has_one_etcd_member_on_its_first_host() -> None:
    s = scripts(run_stack("replicas-eu"))
    members = {n: i for n, i in s.items() if i["script"] == "etcd.sh"}
    assert sorted(members) == ["etcd-arn-etcd", "etcd-fra-etcd", "etcd-lhr-etcd"]
    lhr = members["etcd-lhr-etcd"]
    # lhr's second host (198.18.3.14) runs no etcd member.
    assert lhr["connection"]["host"] == "198.18.3.12"
    assert lhr["connection"]["kind"] == "ssh"
    env = lhr["environment"]
    assert (env["ETCD_HOST"], env["TARGET"]) == ("198.18.3.12", "ssh")
    assert env["ETCD_DIR"] == "/var/lib/dbfleet/lab-eu/etcd-lhr"
    assert env["ETCD_CLUSTER"] == (
        "fra=https://198.18.3.11:2380,lhr=https://198.18.3.12:2380,arn=https://198.18.3.13:2380"
    )
    assert "198.18.3.14" not in env["ETCD_CLUSTER"] + env["ETCD_CLIENTS"]


def test_each_region_proxy_runs_on_the_regions_first_host() -> None:
    s = scripts(run_stack("proxies-eu"))
    lhr = s["lhr-haproxy"]
    assert lhr["connection"]["host"] == "198.18.3.12"
    assert (
        lhr["environment"]["PROXY_HOST"] == "198.18.3.12" and lhr["environment"]["TARGET"] == "ssh"
    )
    assert lhr["environment"]["READ_LOCAL"].split() == [
        "198.18.3.12:5432:8008",
        "198.18.3.14:5433:8009",
    ]


def test_each_region_pooler_runs_beside_its_proxy_on_the_first_host() -> None:
    s = scripts(run_stack("proxies-eu"))
    pool = s["lhr-pool-pgbouncer"]
    assert pool["connection"]["host"] == "198.18.3.12"
    env = pool["environment"]
    assert (env["POOL_HOST"], env["POOL_PORT"], env["TARGET"]) == ("198.18.3.12", "6435", "ssh")
    assert (env["WRITE_TARGET"], env["READ_TARGET"]) == ("198.18.3.12:6433", "198.18.3.12:6432")


# -- backups (docs/backups.md): `backup:` in the group ---------------------------------------
def _with_backup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keys: str) -> None:
    spec = tmp_path / "backup.yaml"
    spec.write_text(FLEET + f"    backup: {keys}\n")
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))


def test_a_group_without_backup_has_no_backup_port_nor_pgbackrest() -> None:
    fw = scripts(run_stack("networks-eu"))["fra-0-firewall"]["environment"]
    assert "BACKUP_PORT" not in fw
    assert not [n for n, i in scripts(run_stack("replicas-eu")).items() if "pgbackrest" in n]


def test_the_firewall_opens_the_backup_port_to_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_backup(tmp_path, monkeypatch, "{}")
    s = scripts(run_stack("networks-eu"))
    assert {i["environment"]["BACKUP_PORT"] for i in s.values()} == {"8432"}


def test_the_repository_is_on_the_first_host_of_a_non_primary_region_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_backup(tmp_path, monkeypatch, "{full_keep: 3}")
    net = {r: {**v, "backup_port": 8432} for r, v in NETWORKS["regions"].items()}
    UPSTREAM["networks-eu"] = {**NETWORKS, "regions": net}
    try:
        mocks = run_stack("replicas-eu")
    finally:
        UPSTREAM["networks-eu"] = NETWORKS
    s = scripts(mocks)
    hosts = {n: i for n, i in s.items() if i["script"] == "pgbackrest.sh"}
    assert sorted(hosts) == [
        "backups-arn-0-pgbackrest",
        "backups-fra-0-pgbackrest",
        "backups-lhr-0-pgbackrest",
        "backups-lhr-1-pgbackrest",
    ]
    repo = hosts["backups-lhr-0-pgbackrest"]
    env = repo["environment"]
    assert repo["connection"]["host"] == "198.18.3.12"
    assert (env["BACKUP_MODE"], env["REPO_HOST"], env["TLS_ADDRESS"]) == (
        "repo",
        "198.18.3.12",
        "198.18.3.12",
    )
    assert env["BACKUP_DIR"] == "/var/lib/dbfleet/lab-eu/pgbackrest/lhr-0"
    assert env["NODES"] == (
        "/var/lib/dbfleet/lab-eu/lhr-0/pgdata:5432:/var/lib/dbfleet/lab-eu/lhr-0/run"
    )
    # every other node, by its host, through its TLS server
    assert env["REMOTE_NODES"].split() == [
        "198.18.3.11:/var/lib/dbfleet/lab-eu/fra-0/pgdata:5432:/var/lib/dbfleet/lab-eu/fra-0/run",
        "198.18.3.14:/var/lib/dbfleet/lab-eu/lhr-1/pgdata:5433:/var/lib/dbfleet/lab-eu/lhr-1/run",
        "198.18.3.13:/var/lib/dbfleet/lab-eu/arn-0/pgdata:5432:/var/lib/dbfleet/lab-eu/arn-0/run",
    ]
    assert set(env["TLS_CLIENTS"].split()) == {"198.18.3.11", "198.18.3.13", "198.18.3.14"}
    assert env["FULL_KEEP"] == "3" and env["TLS_PORT"] == "8432"
    node = hosts["backups-arn-0-pgbackrest"]["environment"]
    assert (node["BACKUP_MODE"], node["REPO_HOST"], node["REPO_NODE"]) == (
        "node",
        "198.18.3.12",
        "lhr-0",
    )
    # a node host's server admits the repository host only, and backs up nothing itself
    assert node["TLS_CLIENTS"] == "198.18.3.12" and node["REMOTE_NODES"] == ""
    # no secret in any environment: they travel in the secret one
    for inputs in hosts.values():
        assert not [k for k in inputs["environment"] if "PASS" in k or k == "TLS_KEY"]
    # a certificate per host, named by its address, from the group's CA
    certs = {n: i for n, i in certificates(mocks).items() if "pgbackrest" in n}
    assert certs["lhr-1-pgbackrest-tls"]["common_name"] == "198.18.3.14"
    assert certs["lhr-1-pgbackrest-tls"]["mount"] == "pki-lab-eu"
    assert len(certs) == 4
    # every node archives through its own host's configuration
    dcs = s["fra-0-server"]["environment"]["DCS_CONFIG"]
    assert "/var/lib/dbfleet/lab-eu/pgbackrest/${d##*/}/pgbackrest.conf" in dcs
    assert "--stanza=lab-eu" in dcs


def test_the_fleet_file_names_the_repository_region(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_backup(tmp_path, monkeypatch, "{repo_region: arn}")
    s = scripts(run_stack("replicas-eu"))
    repo = [i for i in s.values() if i["environment"].get("BACKUP_MODE") == "repo"]
    assert len(repo) == 1 and repo[0]["connection"]["host"] == "198.18.3.13"


def _policy_resources(mocks: RecordingMocks) -> list:
    from tests.unit.policy_support import HOST_SCRIPT, Resource, secret

    out = []
    for reg in mocks.resources:
        props = {k: v for k, v in reg.inputs.items() if not k.startswith("__")}
        if reg.typ == HOST_SCRIPT:
            props["secret_environment"] = secret(props.get("secret_environment") or {})
        out.append(Resource(reg.typ, reg.name, props))
    return out


def test_backup_residency_passes_the_ssh_group_and_refuses_a_foreign_repository_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policies.rules.backup import backup_residency, backups_configured
    from tests.unit.policy_support import messages, run_stack_policy, with_env

    _with_backup(tmp_path, monkeypatch, "{}")
    resources = _policy_resources(run_stack("replicas-eu"))
    assert messages(run_stack_policy(backup_residency, "replicas-eu", resources, {})) == ""
    assert run_stack_policy(backups_configured, "replicas-eu", resources, {}) == []
    # a node host whose archive pushes to a host outside the group
    bad = [
        with_env(r, REPO_HOST="198.18.9.9") if r.name == "backups-arn-0-pgbackrest" else r
        for r in resources
    ]
    assert "names 198.18.9.9, which is not a pgBackRest host of the group" in messages(
        run_stack_policy(backup_residency, "replicas-eu", bad, {})
    )


def test_a_switchover_does_not_move_the_repository(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deployed in lhr (the default while fra was primary); the file now prefers lhr as
    primary, whose default would be fra: the repository stays where its backups are."""
    spec = tmp_path / "switched.yaml"
    spec.write_text(FLEET.replace("primary: fra", "primary: lhr") + "    backup: {}\n")
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    monkeypatch.setitem(UPSTREAM, "replicas-eu", {**REPLICAS, "backup": {"repo_region": "lhr"}})
    s = scripts(run_stack("replicas-eu"))
    repo = [i for i in s.values() if i["environment"].get("BACKUP_MODE") == "repo"]
    assert [r["connection"]["host"] for r in repo] == ["198.18.3.12"]
    # a new group in that file would get the default: the first non-primary region (fra)
    monkeypatch.setitem(UPSTREAM, "replicas-eu", {})
    s = scripts(run_stack("replicas-eu"))
    repo = [i for i in s.values() if i["environment"].get("BACKUP_MODE") == "repo"]
    assert [r["connection"]["host"] for r in repo] == ["198.18.3.11"]
