"""TLS from the group's CA in Vault, on the real fleet (one group, eu; real OpenBao PKI,
PostgreSQL, HAProxy, PgBouncer): every endpoint verifies (verify-full) under the
address a client dials, plain TCP is refused, another group's CA does not verify,
replication runs over TLS, and a certificate inside its renewal window is renewed by
`up` and reloaded without a restart.

Tests run in file order against one fleet of their own; each can also run alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
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


def served_certificate(host: str, port: int) -> str:
    """The certificate a PostgreSQL server presents (openssl's STARTTLS for postgres)."""
    proc = subprocess.run(
        ["openssl", "s_client", "-starttls", "postgres", "-connect", f"{host}:{port}"],
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


def planned_updates(fe: FleetEnv) -> list[str]:
    proc = fe.run("preview", GROUP, "--layer", "replicas", "--json", "-", check=False)
    doc = json.loads(proc.stdout)
    return [
        r["name"] for st in doc["stacks"] for r in st.get("resources", []) if r["op"] == "update"
    ]


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
    assert sorted(certs) == ["arn-0", "arn-pooler", "fra-0", "fra-pooler", "lhr-0", "lhr-pooler"]
    assert all(0 < days <= TTL_S / 86400 for days in certs.values()), certs
    assert "certificates expire in:" in fe.run("status", GROUP, check=False).stdout


def test_plain_tcp_is_refused_everywhere(fe):
    direct, pooled = uris(fe), uris(fe, "pooled_connection_uris")
    for uri in (direct["fra"]["write"], direct["arn"]["read"], pooled["lhr"]["write"]):
        with pytest.raises(psycopg.OperationalError) as err:
            psycopg.connect(uri, sslmode="disable", connect_timeout=10).close()
        text = str(err.value)
        assert "no encryption" in text or "SSL" in text or "TLS" in text, text


def test_another_groups_ca_does_not_verify_the_servers(fe, tmp_path):
    """A CA of another group (made here in the same Vault) cannot vouch for eu's servers."""
    client = vault.client_from_env(fe.env)
    other = vault.pki_mount(fe.name, "zz")
    vault.ensure_group_pki(client, other, vault.ca_name(fe.name, "zz"), max_ttl="3600s")
    try:
        wrong = tmp_path / "zz-ca.pem"
        wrong.write_text(vault.read_ca_pem(client, other) + "\n")
        for uri in (uris(fe)["fra"]["write"], uris(fe, "pooled_connection_uris")["fra"]["read"]):
            with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
                psycopg.connect(uri, sslrootcert=str(wrong), connect_timeout=10).close()
    finally:
        client.sys.disable_secrets_engine(other)


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
    assert len(keys) == 6  # three nodes, three poolers
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
    session = psycopg.connect(uri, autocommit=True, connect_timeout=10)
    try:
        # Nothing is due right after `up`; once the window opens a preview plans it.
        assert not [n for n in planned_updates(fe) if n.endswith("-tls")]
        wait_for(
            lambda: "lhr-0-tls" in planned_updates(fe),
            TTL_S * (1 - RENEW_FRACTION) + 120,
            "a preview to plan the renewal",
            interval=5,
        )
        fe.run("up", GROUP, "-q")
        # The open session survived; the server presents the new certificate.
        assert session.execute("SELECT 1").fetchone() == (1,)
        after = served_certificate(*lhr)
        assert after != before
        assert after == (data_root / "lhr-0" / "tls" / "server.crt").read_text().strip()
        with psycopg.connect(uri, connect_timeout=10) as c:
            assert c.info.pgconn.ssl_in_use
    finally:
        session.close()
    for n, pid in postmasters.items():
        assert (data_root / n / "pgdata" / "postmaster.pid").read_text().split()[0] == pid, n
    assert not [n for n in planned_updates(fe) if n.endswith("-tls")]
