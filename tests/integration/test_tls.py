"""TLS from the group's CA in Vault, on the real fleet (one group, eu; real OpenBao PKI,
PostgreSQL, HAProxy, PgBouncer, Patroni, etcd): every endpoint verifies (verify-full)
under the address a client dials, plain TCP is refused, another group's CA does not
verify, replication runs over TLS, Patroni's REST API answers HTTPS only and HAProxy
still routes on it, etcd admits only clients with a certificate from the group's CA,
and certificates inside their renewal window (a node's, used by PostgreSQL, Patroni's
REST API and etcd, and a PgBouncer pooler's) are renewed by `up` and reloaded without a
restart.

Tests run in file order against one fleet of their own; each can also run alone.
"""

from __future__ import annotations

import http.client
import json
import shutil
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from dbfleet import vault
from tests.fleets import default_fleet_text
from tests.integration.conftest import FleetEnv, command_lines, make_fleet_env, wait_for

GROUP = "eu"
# Short-lived certificates whose renewal window opens 40 s after they are issued.
TTL_S, RENEW_FRACTION = 900, 0.95


@pytest.fixture(scope="module")
def fe(local_vault):
    fe = make_fleet_env(local_vault, "tls")
    fe.write_fleet(
        default_fleet_text(fe.name, fe.cidr_octet, groups=(GROUP,))
        + f"tls: {{cert_ttl_s: {TTL_S}, renew_fraction: {RENEW_FRACTION}}}\n"
    )
    fe.run("up", "-q")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def uris(fe: FleetEnv, key: str = "connection_uris") -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)[key]


def served_certificate(host: str, port: int, starttls: bool = True) -> str:
    """The certificate a server presents: PostgreSQL's (openssl's STARTTLS for postgres),
    or with `starttls=False` a TLS-only server's (Patroni's REST API, etcd)."""
    proc = subprocess.run(
        [
            "openssl",
            "s_client",
            *(["-starttls", "postgres"] if starttls else []),
            "-connect",
            f"{host}:{port}",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    out = proc.stdout
    start, end = out.find("-----BEGIN CERTIFICATE-----"), out.find("-----END CERTIFICATE-----")
    assert start >= 0, proc.stderr
    return out[start : end + len("-----END CERTIFICATE-----")]


def planned_updates(fe: FleetEnv, layer: str = "replicas") -> list[str]:
    proc = fe.run("preview", GROUP, "--layer", layer, "--json", "-", check=False)
    doc = json.loads(proc.stdout)
    return [
        r["name"] for st in doc["stacks"] for r in st.get("resources", []) if r["op"] == "update"
    ]


def pooler_pid(pool_dir: Path) -> int:
    return int((pool_dir / "pgbouncer.pid").read_text().split()[0])


def test_every_endpoint_verifies_under_the_address_the_client_dialled(fe):
    direct, pooled = uris(fe), uris(fe, "pooled_connection_uris")
    ca_file = Path(fe.outputs(f"proxies-{GROUP}")["ca_file"])
    assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
    for region in ("fra", "lhr", "arn"):
        for kind in ("read", "write"):
            for uri in (direct[region][kind], pooled[region][kind]):
                params = psycopg.conninfo.conninfo_to_dict(uri)
                assert params["sslmode"] == "verify-full" and params["sslrootcert"] == str(ca_file)
                with psycopg.connect(uri, connect_timeout=10) as c:
                    assert c.info.pgconn.ssl_in_use, (region, kind)
                    assert c.execute("SELECT 1").fetchone() == (1,)
    # The write endpoints reach the leader, whose pg_stat_ssl shows the session encrypted.
    with psycopg.connect(direct["lhr"]["write"], connect_timeout=10) as c:
        row = c.execute(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row[0] is True and row[1] in ("TLSv1.2", "TLSv1.3")


def test_status_shows_every_servers_days_to_expiry(fe):
    proc = fe.run("status", GROUP, "--json", check=False)
    certs = json.loads(proc.stdout)["groups"][0]["certificates"]
    assert sorted(certs) == [
        "arn-0",
        "arn-pooler",
        "etcd-arn",
        "etcd-fra",
        "etcd-lhr",
        "fra-0",
        "fra-pooler",
        "lhr-0",
        "lhr-pooler",
    ]
    assert all(0 < days <= TTL_S / 86400 for days in certs.values()), certs
    assert "certificates expire in:" in fe.run("status", GROUP, check=False).stdout


def test_plain_tcp_is_refused_everywhere(fe):
    direct, pooled = uris(fe), uris(fe, "pooled_connection_uris")
    for uri in (direct["fra"]["write"], direct["arn"]["read"], pooled["lhr"]["write"]):
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(uri, sslmode="disable", connect_timeout=10).close()
        text = str(err.value)
        assert "no encryption" in text or "SSL" in text or "TLS" in text, text


@pytest.fixture(scope="module")
def other_group(fe, tmp_path_factory) -> Iterator[tuple[Path, Path, Path]]:
    """Another group's CA (made here in the same Vault) and a certificate from it for
    127.0.0.1: (CA file, certificate file, key file, the key 0600)."""
    client = vault.client_from_env(fe.env)
    other = vault.pki_mount(fe.name, "zz")
    vault.ensure_group_pki(client, other, vault.ca_name(fe.name, "zz"), max_ttl="3600s")
    root = tmp_path_factory.mktemp("zz")
    try:
        issued = vault.issue_certificate(client, other, "zz-intruder", ("127.0.0.1",), 900)
        ca, cert, key = root / "zz-ca.pem", root / "zz.crt", root / "zz.key"
        ca.write_text(vault.read_ca_pem(client, other) + "\n")
        cert.write_text(f"{issued['certificate']}\n")
        key.touch(mode=0o600)
        key.write_text(f"{issued['private_key']}\n")
        yield ca, cert, key
    finally:
        client.sys.disable_secrets_engine(other)
        shutil.rmtree(root, ignore_errors=True)


def test_another_groups_ca_does_not_verify_the_servers(fe, other_group):
    """A CA of another group cannot vouch for eu's servers."""
    wrong, _, _ = other_group
    for uri in (uris(fe)["fra"]["write"], uris(fe, "pooled_connection_uris")["fra"]["read"]):
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            psycopg.connect(uri, sslrootcert=str(wrong), connect_timeout=10).close()


def rest_members(fe: FleetEnv) -> list[dict]:
    reps = fe.outputs(f"replicas-{GROUP}")
    return [m for node in reps["nodes"].values() for m in node["members"]]


def test_patronis_rest_api_answers_https_only_and_verifies_against_the_groups_ca(fe, other_group):
    group_ca = ssl.create_default_context(cadata=fe.outputs(f"replicas-{GROUP}")["ca_certificate"])
    wrong_ca = ssl.create_default_context(cafile=str(other_group[0]))
    members = rest_members(fe)
    assert len(members) == 3
    roles = []
    for m in members:
        base = f"{m['host']}:{m['rest_port']}"
        # Verified against the group's CA under the address dialled (the node's own).
        with urllib.request.urlopen(f"https://{base}/patroni", timeout=10, context=group_ca) as r:
            roles.append(json.load(r)["role"])
        # Plain HTTP gets no answer: Patroni's socket speaks TLS only.
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://{base}/patroni", timeout=10).close()
        # Another group's CA does not vouch for the node.
        with pytest.raises(OSError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(f"https://{base}/patroni", timeout=10, context=wrong_ca)
    assert sorted(roles) == ["master", "replica", "replica"] or sorted(roles) == [
        "primary",
        "replica",
        "replica",
    ], roles
    # Patroni's members know each other by their HTTPS address (what failsafe mode and
    # a switchover call).
    with urllib.request.urlopen(
        f"https://{members[0]['host']}:{members[0]['rest_port']}/cluster",
        timeout=10,
        context=group_ca,
    ) as r:
        urls = [m["api_url"] for m in json.load(r)["members"]]
    assert len(urls) == 3 and all(u.startswith("https://") for u in urls), urls


def test_haproxy_checks_patroni_over_https_and_still_routes(fe):
    """Writes and reads through every region's proxy reach the right nodes: the
    checks pass over HTTPS, verified against the group's CA."""
    direct = uris(fe)
    with psycopg.connect(direct["lhr"]["write"], autocommit=True, connect_timeout=10) as c:
        c.execute("CREATE TABLE IF NOT EXISTS tls_probe (v int)")
        c.execute("INSERT INTO tls_probe VALUES (42)")
        assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    for region in ("fra", "lhr", "arn"):
        with psycopg.connect(direct[region]["read"], connect_timeout=10) as c:
            wait_for(
                lambda c=c: c.execute("SELECT count(*) FROM tls_probe WHERE v = 42").fetchone()[0],
                30,
                f"the row to reach {region}'s read endpoint",
            )
    data_root = Path(fe.outputs(f"accounts-{GROUP}")["data_root"])
    cfg = (data_root / "proxy-fra" / "haproxy.cfg").read_text()
    assert f"check-ssl verify required ca-file {data_root}/proxy-fra/tls/ca.crt" in cfg


def etcdctl(endpoint: str, *tls: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["etcdctl", f"--endpoints={endpoint}", "--dial-timeout=2s", "--command-timeout=3s",
         *tls, "endpoint", "health"],
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def test_etcd_admits_only_clients_with_a_certificate_from_the_groups_ca(fe, other_group):
    data_root = Path(fe.outputs(f"accounts-{GROUP}")["data_root"])
    etcd = fe.outputs(f"replicas-{GROUP}")["etcd"]
    assert set(etcd) == {"fra", "lhr", "arn"}
    own = data_root / "fra-0" / "tls"  # a node's certificate: what its Patroni presents
    ca = f"--cacert={own / 'ca.crt'}"
    wrong_ca, wrong_cert, wrong_key = other_group
    for region, hostport in etcd.items():
        url = f"https://{hostport}"
        ok = etcdctl(url, ca, f"--cert={own / 'server.crt'}", f"--key={own / 'server.key'}")
        assert ok.returncode == 0, (region, ok.stderr)
        # No client certificate; another group's certificate; plain http: refused.
        assert etcdctl(url, ca).returncode != 0, region
        intruder = etcdctl(url, ca, f"--cert={wrong_cert}", f"--key={wrong_key}")
        assert intruder.returncode != 0, region
        assert etcdctl(f"http://{hostport}").returncode != 0, region
        # The member presents its own certificate: another group's CA does not verify it.
        assert etcdctl(url, f"--cacert={wrong_ca}").returncode != 0, region
    # Patroni reaches etcd over TLS: the group has a leader whose key it keeps there.
    proc = fe.run("status", GROUP, "--json", check=False)
    doc = json.loads(proc.stdout)["groups"][0]
    assert doc["leader"] == "fra-0"
    assert [(e["region"], e["up"], e["healthy"]) for e in doc["etcd"]] == [
        ("fra", True, True),
        ("arn", True, True),
        ("lhr", True, True),
    ], doc["etcd"]


def superuser(fe: FleetEnv, node: str) -> psycopg.Connection:
    """The superuser on a node's private socket (password from the group's Vault path)."""
    accounts = fe.outputs(f"accounts-{GROUP}")
    secrets = vault.read_group_secrets(
        vault.client_from_env(fe.env), accounts["secret_mount"], accounts["secret_path"]
    )
    return psycopg.connect(
        host=str(Path(accounts["data_root"]) / node / "run"),
        port=fe.outputs(f"replicas-{GROUP}")["nodes"][node.split("-")[0]]["port"],
        user="postgres",
        password=secrets["superuser_password"],
        dbname="postgres",
        connect_timeout=10,
    )


def test_replication_runs_over_tls_and_verifies_the_leader(fe):
    def walsenders() -> list:
        with superuser(fe, "fra-0") as c:
            return c.execute(
                "SELECT a.application_name, s.ssl FROM pg_stat_replication a "
                "JOIN pg_stat_ssl s ON s.pid = a.pid WHERE a.state = 'streaming'"
            ).fetchall()

    rows = wait_for(lambda: len(walsenders()) == 2 and walsenders(), 60, "two replicas streaming")
    assert sorted(name for name, _ in rows) == ["arn-0", "lhr-0"]
    assert all(ssl for _, ssl in rows), rows
    data_root = Path(fe.outputs(f"accounts-{GROUP}")["data_root"])
    conf = (data_root / "lhr-0" / "pgdata" / "postgresql.conf").read_text()
    auto = (data_root / "lhr-0" / "pgdata" / "postgresql.auto.conf").read_text()
    assert "sslmode=verify-full" in conf + auto or "sslmode='verify-full'" in conf + auto
    hba = (data_root / "lhr-0" / "pgdata" / "pg_hba.conf").read_text()
    lines = [ln.split()[0] for ln in hba.splitlines() if ln.strip() and not ln.startswith("#")]
    assert "host" not in lines and "hostssl" in lines


def test_keys_are_private_and_never_on_a_command_line_or_in_state(fe):
    data_root = Path(fe.outputs(f"accounts-{GROUP}")["data_root"])
    keys = sorted(data_root.glob("*/tls/server.key"))
    assert len(keys) == 9  # three nodes, three poolers, three etcd members
    for key in keys:
        assert key.stat().st_mode & 0o777 == 0o600 and key.parent.stat().st_mode & 0o777 == 0o700
    secret = keys[0].read_text().strip().splitlines()[1]  # a line of the key's base64
    for pid, cmd in command_lines().items():
        assert secret not in cmd, pid
    # Nowhere under the fleet's home (state, logs, configs) but the key files themselves.
    state = subprocess.run(
        ["grep", "-rl", "--exclude=server.key", "--", secret, str(fe.home)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert state.stdout == "", state.stdout
    exported = fe.pulumi("stack", "export", "-s", f"replicas-{GROUP}").stdout
    assert "PRIVATE KEY" not in exported and secret not in exported


def test_a_certificate_in_its_renewal_window_is_renewed_and_reloaded_without_a_restart(fe):
    # The windows open 45 s after issue; the tests before may have taken longer: an
    # `up` first renews whatever is due, so that the window is closed at the start.
    started = time.monotonic()
    fe.run("up", GROUP, "-q")
    uri = uris(fe)["lhr"]["write"]
    data_root = Path(fe.outputs(f"accounts-{GROUP}")["data_root"])
    members = fe.outputs(f"replicas-{GROUP}")["nodes"]["lhr"]["members"][0]
    lhr = (members["host"], members["port"])
    postmasters = {
        n: (data_root / n / "pgdata" / "postmaster.pid").read_text().split()[0]
        for n in ("fra-0", "lhr-0", "arn-0")
    }
    before = served_certificate(*lhr)
    assert before == (data_root / "lhr-0" / "tls" / "server.crt").read_text().strip()
    rest = (members["host"], members["rest_port"])
    assert served_certificate(*rest, starttls=False) == before  # the node's, on its REST API
    etcd_pid = (data_root / "etcd-lhr" / "etcd.pid").read_text().strip()
    # lhr's pooler (PgBouncer) too: its certificate is the proxies layer's.
    pool_dir = data_root / "pooler-lhr"
    pool_host, pool_port = fe.outputs(f"proxies-{GROUP}")["pooled_endpoints"]["lhr"].rsplit(":", 1)
    pool_uri = uris(fe, "pooled_connection_uris")["lhr"]["write"]
    pool_pid = pooler_pid(pool_dir)
    pool_before = served_certificate(pool_host, int(pool_port))
    assert pool_before == (pool_dir / "tls" / "server.crt").read_text().strip()
    session = psycopg.connect(uri, autocommit=True, connect_timeout=10)
    # PgBouncer in transaction mode: no server-side prepared statements.
    pooled = psycopg.connect(pool_uri, autocommit=True, connect_timeout=10, prepare_threshold=None)
    try:
        assert pooled.info.pgconn.ssl_in_use
        assert pooled.execute("SELECT 1").fetchone() == (1,)
        # Nothing is due right after `up`; once the windows open a preview plans them.
        # (Only while the window cannot have opened yet: on a machine so loaded that
        # `up` and a preview take 45 s, every certificate is rightly due again.)
        due = [n for n in planned_updates(fe) if n.endswith("-tls")]
        if time.monotonic() - started < TTL_S * (1 - RENEW_FRACTION):
            assert not due
        wait_for(
            lambda: (
                "lhr-0-tls" in planned_updates(fe)
                and "lhr-pool-tls" in planned_updates(fe, "proxies")
            ),
            TTL_S * (1 - RENEW_FRACTION) + 120,
            "a preview to plan the renewals",
            interval=5,
        )
        renewing = time.monotonic()
        fe.run("up", GROUP, "-q")
        # The open sessions survived; the servers present the new certificates.
        assert session.execute("SELECT 1").fetchone() == (1,)
        assert pooled.execute("SELECT 1").fetchone() == (1,)
        assert pooled.info.pgconn.ssl_in_use
        pool_after = served_certificate(pool_host, int(pool_port))
        assert pool_after != pool_before
        assert pool_after == (pool_dir / "tls" / "server.crt").read_text().strip()
        with psycopg.connect(pool_uri, connect_timeout=10, prepare_threshold=None) as c:
            assert c.info.pgconn.ssl_in_use
        after = served_certificate(*lhr)
        assert after != before
        assert after == (data_root / "lhr-0" / "tls" / "server.crt").read_text().strip()
        # Patroni's REST API took it too (a reload), and etcd its own (read at the next
        # handshake) without a restart.
        assert served_certificate(*rest, starttls=False) == after
        etcd_host, etcd_port = fe.outputs(f"replicas-{GROUP}")["etcd"]["lhr"].split(":")
        etcd_cert = (data_root / "etcd-lhr" / "tls" / "server.crt").read_text().strip()
        assert served_certificate(etcd_host, int(etcd_port), starttls=False) == etcd_cert
        assert (data_root / "etcd-lhr" / "etcd.pid").read_text().strip() == etcd_pid
        with psycopg.connect(uri, connect_timeout=10) as c:
            assert c.info.pgconn.ssl_in_use
    finally:
        session.close()
        pooled.close()
    for n, pid in postmasters.items():
        assert (data_root / n / "pgdata" / "postmaster.pid").read_text().split()[0] == pid, n
    # The pooler was reloaded (SIGHUP), not restarted: the same process still serves.
    assert pooler_pid(pool_dir) == pool_pid and Path(f"/proc/{pool_pid}").is_dir()
    due = [n for n in planned_updates(fe) if n.endswith("-tls")]
    due += [n for n in planned_updates(fe, "proxies") if n.endswith("-tls")]
    if time.monotonic() - renewing < TTL_S * (1 - RENEW_FRACTION):
        assert not due


# The last commit whose Patroni REST API and etcd spoke plain HTTP: a group it
# deployed must move to TLS by `up` alone.
BEFORE_REST_TLS = "6af09a0"


@pytest.fixture
def old_code(tmp_path) -> Path:
    """dbfleet as of BEFORE_REST_TLS, exported from this checkout's history."""
    repo = Path(__file__).resolve().parents[2]
    known = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "-e", f"{BEFORE_REST_TLS}^{{commit}}"],
        capture_output=True,
        check=False,
    )
    if known.returncode != 0:
        pytest.skip(f"commit {BEFORE_REST_TLS} is not in this checkout's history")
    tree = tmp_path / "old"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", BEFORE_REST_TLS], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def test_a_group_deployed_with_plain_http_rest_and_etcd_moves_to_tls_by_up(local_vault, old_code):
    """Deployed by the older dbfleet, then `up` with this one: the same data directories
    (no re-initialisation), every committed row kept, Patroni and etcd on TLS after."""
    fe = make_fleet_env(local_vault, "tlsup")
    fe.write_fleet(default_fleet_text(fe.name, fe.cidr_octet, groups=(GROUP,)))
    new_path = fe.env["PYTHONPATH"]
    fe.env["PYTHONPATH"] = str(old_code)
    try:
        fe.run("up", "-q")
        with psycopg.connect(uris(fe)["fra"]["write"], autocommit=True) as c:
            c.execute("CREATE TABLE kept (v int)")
            c.execute("INSERT INTO kept SELECT generate_series(1, 1000)")
            (sysid,) = c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        members = rest_members(fe)
        plain = [f"http://{m['host']}:{m['rest_port']}/health" for m in members]
        with urllib.request.urlopen(plain[0], timeout=10) as r:  # before: plain HTTP
            assert r.status == 200

        fe.env["PYTHONPATH"] = new_path
        fe.run("up", "-q")
        group_ca = ssl.create_default_context(
            cadata=fe.outputs(f"replicas-{GROUP}")["ca_certificate"]
        )
        for m in members:
            url = f"https://{m['host']}:{m['rest_port']}/health"
            wait_for(
                lambda url=url: (
                    urllib.request.urlopen(url, timeout=5, context=group_ca).status == 200
                ),
                60,
                f"{url} to answer over HTTPS",
            )
            with pytest.raises((OSError, http.client.HTTPException)):
                urllib.request.urlopen(f"http://{m['host']}:{m['rest_port']}/health", timeout=10)
        for region in ("fra", "lhr", "arn"):
            with psycopg.connect(uris(fe)[region]["read"], connect_timeout=10) as c:
                got = wait_for(
                    lambda c=c: c.execute("SELECT count(*) FROM kept").fetchone()[0] == 1000,
                    60,
                    f"{region}'s replica to hold every row",
                )
                assert got
                (same,) = c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
                assert same == sysid, region
        with psycopg.connect(uris(fe)["fra"]["write"], autocommit=True) as c:
            c.execute("INSERT INTO kept VALUES (1001)")  # writable again, on the same data
        doc = json.loads(fe.run("status", GROUP, "--json", check=False).stdout)["groups"][0]
        assert doc["leader"] == "fra-0" and all(e["healthy"] for e in doc["etcd"]), doc
        # A second `up` finds nothing to change: the move happens once.
        again = fe.run("preview", GROUP, "--json", "-", check=False)
        ops = [
            (r["name"], r["op"])
            for st in json.loads(again.stdout)["stacks"]
            for r in st.get("resources", [])
            if r["op"] not in ("same", "read")
        ]
        assert ops == [], ops
    finally:
        fe.env["PYTHONPATH"] = new_path
        fe.run("destroy", "--yes", check=False)
        shutil.rmtree(fe.root, ignore_errors=True)
