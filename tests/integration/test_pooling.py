"""Connection pooling on the real fleet: one group (eu) with a PgBouncer per region in
front of its HAProxy. Many clients on a node that accepts few, the `_read` alias, a
switchover, idempotence, secrecy and a clean destroy.

Tests run in file order against one fleet of their own.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from tests.fleets import default_fleet_text
from tests.integration.conftest import FleetEnv, command_lines, make_fleet_env

GROUP = "eu"
STACKS = [f"{layer}-{GROUP}" for layer in ("accounts", "networks", "replicas", "proxies")]
CLIENTS = 500


@pytest.fixture(scope="module")
def fe(local_vault):
    fe = make_fleet_env(local_vault, "pool")
    fe.write_fleet(default_fleet_text(fe.name, fe.cidr_octet, groups=(GROUP,)))
    fe.run("up")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def uris(fe: FleetEnv) -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)["pooled_connection_uris"]


def pgbouncer_pids(under: Path) -> list[int]:
    return [pid for pid, cmd in command_lines().items() if "pgbouncer" in cmd and str(under) in cmd]


def pool_dir(fe: FleetEnv, region: str) -> Path:
    return Path(fe.outputs(f"accounts-{GROUP}")["data_root"]) / f"pooler-{region}"


def test_every_region_has_a_pooled_endpoint_on_the_pool_port(fe):
    nets = fe.outputs(f"networks-{GROUP}")["regions"]
    pooled = fe.outputs(f"proxies-{GROUP}")["pooled_endpoints"]
    assert pooled == {r: f"{n['host']}:{n['pool_port']}" for r, n in nets.items()}
    assert {n["pool_port"] for n in nets.values()} == {6435}


def test_the_userlist_is_private_and_no_password_is_on_a_command_line(fe):
    password = psycopg.conninfo.conninfo_to_dict(uris(fe)["fra"]["write"])["password"]
    for region in ("fra", "lhr", "arn"):
        d = pool_dir(fe, region)
        assert (d / "userlist.txt").stat().st_mode & 0o777 == 0o600
        assert d.stat().st_mode & 0o777 == 0o700
        pids = pgbouncer_pids(d)
        assert len(pids) == 1, pids
        cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
        assert password.encode() not in cmdline
        environ = Path(f"/proc/{pids[0]}/environ").read_bytes()
        assert password.encode() not in environ
        assert password not in (d / "pgbouncer.log").read_text(errors="replace")


def test_500_concurrent_clients_share_a_node_that_accepts_100(fe):
    write = uris(fe)["lhr"]["write"]
    with psycopg.connect(write, autocommit=True, prepare_threshold=None) as conn:
        assert conn.execute("SHOW max_connections").fetchone() == ("100",)
    # Every client connects and queries, then waits until all 500 are connected at
    # once, then queries again: 500 open client connections on a node with 100.
    all_in = threading.Barrier(CLIENTS)

    def client(_: int) -> tuple[bool, bool]:
        with psycopg.connect(
            write, autocommit=True, prepare_threshold=None, connect_timeout=30
        ) as conn:
            (first,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            all_in.wait(timeout=60)
            (second,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            return first, second

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        results = list(pool.map(client, range(CLIENTS)))
    assert len(results) == CLIENTS
    assert set(results) == {(False, False)}  # every write connection reached the primary
    assert time.monotonic() - started < 90


def test_reads_through_the_read_alias_are_served_by_the_regions_replica(fe):
    u = uris(fe)["arn"]
    assert urlsplit(u["read"]).path == "/app_read"
    with psycopg.connect(u["write"], autocommit=True, prepare_threshold=None) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS pooled (id int PRIMARY KEY, at text)")
        conn.execute("INSERT INTO pooled VALUES (1, 'before') ON CONFLICT DO NOTHING")
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    with psycopg.connect(u["read"], autocommit=True, prepare_threshold=None) as conn:
        (in_recovery,) = conn.execute("SELECT pg_is_in_recovery()").fetchone()
        assert in_recovery is True
        deadline = time.monotonic() + 10
        while True:  # wait for the replica to replay the insert (bounded)
            (caught_up,) = conn.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,)
            ).fetchone()
            if caught_up or time.monotonic() > deadline:
                break
        assert conn.execute("SELECT at FROM pooled WHERE id = 1").fetchone() == ("before",)


def test_status_shows_every_pooler_up_with_its_pools(fe):
    proc = fe.run("status", GROUP, "--json")
    (group,) = json.loads(proc.stdout)["groups"]
    assert group["healthy"], group
    poolers = {p["region"]: p for p in group["poolers"]}
    assert set(poolers) == {"fra", "lhr", "arn"}
    assert all(p["up"] and p["healthy"] for p in poolers.values())
    # lhr served the 500 clients (app) and arn a read (app_read): their pools exist.
    assert "app" in {pool["database"] for pool in poolers["lhr"]["pools"]}
    assert "app_read" in {pool["database"] for pool in poolers["arn"]["pools"]}
    text = fe.run("status", GROUP).stdout
    assert any(ln.split()[:1] == ["lhr"] and "app:" in ln for ln in text.splitlines()), text


def test_a_second_up_changes_nothing(fe):
    proc = fe.run("up")
    for stack in STACKS:
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(stack))
        assert "unchanged" in line, proc.stdout


def test_the_pooled_write_endpoint_follows_a_switchover(fe):
    write = uris(fe)["fra"]["write"]
    held = psycopg.connect(write, autocommit=True, prepare_threshold=None)
    try:
        assert held.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
        fe.write_fleet(
            default_fleet_text(fe.name, fe.cidr_octet, groups=(GROUP,)).replace(
                "primary: fra", "primary: lhr"
            )
        )
        fe.run("up")
        lhr_host = fe.outputs(f"networks-{GROUP}")["regions"]["lhr"]["host"]
        # A client that stayed connected: its next transaction runs on the new
        # primary (the pooler renewed its server connections), or fails once and
        # the client reconnects; never on a read-only node.
        try:
            row = held.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())").fetchone()
            assert row == (False, lhr_host)
        except psycopg.OperationalError:
            pass
    finally:
        held.close()
    for _ in range(20):  # new clients, each a new connection: all on the new primary
        with psycopg.connect(write, autocommit=True, prepare_threshold=None) as conn:
            conn.execute("INSERT INTO pooled VALUES (2 + %s, 'after')", (_,))
            row = conn.execute("SELECT pg_is_in_recovery(), host(inet_server_addr())").fetchone()
            assert row == (False, lhr_host)


def test_destroy_leaves_no_pgbouncer_process_or_directory(fe):
    dirs = [pool_dir(fe, r) for r in ("fra", "lhr", "arn")]
    assert all(d.is_dir() for d in dirs)
    fe.run("destroy", "--yes")
    assert [d for d in dirs if d.exists()] == []
    assert [p for d in dirs for p in pgbouncer_pids(d)] == []
