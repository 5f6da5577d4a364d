"""Certificate renewal of a PgBouncer pooler on the real fleet (one group, eu; real
OpenBao PKI, PostgreSQL, HAProxy, PgBouncer): a pooler certificate inside its renewal
window is renewed by `up` and reloaded without a restart — the pooler presents the new
certificate, its pid is unchanged and a pooled session opened before survives.

The same for a node is in tests/integration/test_tls.py. One fleet of its own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest

from tests.fleets import default_fleet_text
from tests.integration.conftest import FleetEnv, make_fleet_env, wait_for
from tests.integration.test_tls import served_certificate

pytestmark = pytest.mark.integration

GROUP, REGION = "eu", "lhr"
# Short-lived certificates whose renewal window opens 45 s after they are issued.
TTL_S, RENEW_FRACTION = 900, 0.95
CERT = f"{REGION}-pool-tls"  # the pooler's certificate resource in proxies-<group>


@pytest.fixture(scope="module")
def fe(local_vault):
    fe = make_fleet_env(local_vault, "tlspool")
    fe.write_fleet(
        default_fleet_text(fe.name, fe.cidr_octet, groups=(GROUP,))
        + f"tls: {{cert_ttl_s: {TTL_S}, renew_fraction: {RENEW_FRACTION}}}\n"
    )
    fe.run("up", "-q")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def planned_pooler_renewals(fe: FleetEnv) -> list[str]:
    """The pooler certificates a preview of the proxies layer would renew."""
    proc = fe.run("preview", GROUP, "--layer", "proxies", "--json", "-", check=False)
    doc = json.loads(proc.stdout)
    return [
        r["name"]
        for st in doc["stacks"]
        for r in st.get("resources", [])
        if r["op"] == "update" and r["name"].endswith("-pool-tls")
    ]


def pooler_pid(pool_dir: Path) -> int:
    return int((pool_dir / "pgbouncer.pid").read_text().split()[0])


def test_a_poolers_certificate_in_its_renewal_window_is_renewed_and_reloaded_without_a_restart(
    fe,
):
    pool_dir = Path(fe.outputs(f"accounts-{GROUP}")["data_root"]) / f"pooler-{REGION}"
    cert_file = pool_dir / "tls" / "server.crt"
    host, port = fe.outputs(f"proxies-{GROUP}")["pooled_endpoints"][REGION].rsplit(":", 1)
    uri = fe.outputs(f"proxies-{GROUP}", show_secrets=True)["pooled_connection_uris"][REGION][
        "write"
    ]
    pid = pooler_pid(pool_dir)
    before = served_certificate(host, int(port))
    assert before == cert_file.read_text().strip()
    # PgBouncer in transaction mode: no server-side prepared statements.
    session = psycopg.connect(uri, autocommit=True, connect_timeout=10, prepare_threshold=None)
    try:
        assert session.info.pgconn.ssl_in_use
        assert session.execute("SELECT 1").fetchone() == (1,)
        # Nothing is due right after `up`; once the window opens a preview plans it.
        assert CERT not in planned_pooler_renewals(fe)
        wait_for(
            lambda: CERT in planned_pooler_renewals(fe),
            TTL_S * (1 - RENEW_FRACTION) + 120,
            "a preview to plan the pooler's renewal",
            interval=5,
        )
        fe.run("up", GROUP, "-q")
        # The session opened before the renewal is still served, over its TLS session.
        assert session.execute("SELECT 1").fetchone() == (1,)
        assert session.info.pgconn.ssl_in_use
        # The pooler presents the new certificate, the one now on disk.
        after = served_certificate(host, int(port))
        assert after != before
        assert after == cert_file.read_text().strip()
        with psycopg.connect(uri, connect_timeout=10, prepare_threshold=None) as c:
            assert c.info.pgconn.ssl_in_use
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        session.close()
    # Reloaded (SIGHUP), not restarted: the same process is still the pooler.
    assert pooler_pid(pool_dir) == pid
    assert Path(f"/proc/{pid}").is_dir()
    assert CERT not in planned_pooler_renewals(fe)
