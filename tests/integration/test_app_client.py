"""Applications on a real fleet: dbfleet.client, dbfleet.web and `endpoints --env`.

The session's default fleet, two groups (eu: fra primary; us: iad primary), shared with
test_fleet.py, which runs after this module and ends with its `down`
(tests/conftest.py SHARED); nothing here changes its shape. Each region's app environment comes
from `dbfleet endpoints --env REGION --json --show-secrets` (a pipe, not a terminal):

1. the environment: passwords masked by default, real with --show-secrets;
2. read-your-writes: 2000 write-then-read iterations in lhr and 300 in every other
   region of both groups (plus 50 through fleet.read() in each), 0 stale reads, the added latency
   printed (p50/p95);
3. with lhr's replica held back (its WAL receiver frozen), reads fall back to the primary
   within max_wait and are never stale, while a plain read is;
4. the example app (examples/rywapp) served by wsgiref: a note written in lhr is read
   in arn with the cookie; fly-replay outside the primary region, handled inside.
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import psycopg
import pytest

from dbfleet.client import Fleet, FleetConfig
from examples.rywapp.app import create_schema, make_app
from tests.integration.conftest import FleetEnv, command_lines

REGIONS = ("fra", "lhr", "arn", "iad", "ord", "sjc")  # fra and iad are the primaries
CONNECT = {"connect_timeout": 5}


@pytest.fixture(scope="module")
def fleet(default_fleet) -> FleetEnv:
    """The session's default fleet (both groups), shared with test_fleet.py, which runs
    after this module (tests/conftest.py SHARED)."""
    return default_fleet[0]


@pytest.fixture(scope="module")
def app_env(fleet: FleetEnv) -> dict[str, dict[str, str]]:
    """region -> the variables `dbfleet endpoints --env REGION` prints, secrets included."""
    return {
        r: json.loads(fleet.run("endpoints", "--env", r, "--json", "--show-secrets").stdout)
        for r in REGIONS
    }


def client(app_env: dict[str, dict[str, str]], region: str, **options) -> Fleet:
    return Fleet(FleetConfig.from_env(app_env[region]), connect_kwargs=CONNECT, **options)


@pytest.fixture(scope="module")
def table(app_env: dict[str, dict[str, str]]) -> str:
    for primary in ("fra", "iad"):  # one table per group (each its own database)
        with client(app_env, primary).write() as w:
            w.conn.execute("CREATE TABLE IF NOT EXISTS ryw (id bigserial PRIMARY KEY, region text)")
    return "ryw"


def test_endpoints_env_prints_the_apps_environment_with_passwords_only_when_asked(
    fleet: FleetEnv, app_env: dict[str, dict[str, str]]
) -> None:
    env = app_env["lhr"]
    assert env["DBFLEET_REGION"] == "lhr" and env["PRIMARY_REGION"] == "fra"
    assert env["DBFLEET_GROUP"] == f"{fleet.name}/eu"
    password = psycopg.conninfo.conninfo_to_dict(env["DATABASE_URL"])["password"]
    masked = fleet.run("endpoints", "--env", "lhr")
    assert password not in masked.stdout + masked.stderr
    # shell-quoted (the URI's query has `&`), as `eval "$(dbfleet endpoints --env lhr)"` needs
    masked_url = shlex.quote(env["DATABASE_URL"].replace(password, "****"))
    assert f"DATABASE_URL={masked_url}" in masked.stdout
    with psycopg.connect(env["DATABASE_URL"], **CONNECT) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
    with psycopg.connect(env["DATABASE_WRITE_URL"], **CONNECT) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)


def _percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def ryw_loop(fleet: Fleet, region: str, n: int, *, pooled: bool) -> tuple[int, list[float]]:
    """Writes a row through the write endpoint, then reads it back through the client.
    `pooled`: on one long-lived read connection (wait_for, as with a pool), timing the
    wait, which is all the token adds; else a new `fleet.read(after=token)` connection
    per read, timing the whole call (connection set-up included). Returns the stale
    reads and the times (ms)."""
    stale, times = 0, []
    with fleet.connect_write() as w, fleet.connect_read(autocommit=True) as pooled_conn:
        for _ in range(n):
            (row_id,) = w.execute(
                "INSERT INTO ryw (region) VALUES (%s) RETURNING id", (region,)
            ).fetchone()
            token = fleet.commit_token(w)
            t0 = time.perf_counter()
            if pooled:
                assert fleet.wait_for(pooled_conn, token)
                times.append((time.perf_counter() - t0) * 1000)
                seen = pooled_conn.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone()
            else:
                with fleet.read(after=token) as conn:
                    times.append((time.perf_counter() - t0) * 1000)
                    seen = conn.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone()
            stale += seen is None
    return stale, times


def plain_read_ms(fleet: Fleet, n: int) -> list[float]:
    """The time of `fleet.read()` without a token: what a new read connection costs."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        with fleet.read():
            times.append((time.perf_counter() - t0) * 1000)
    return times


def _p(values: list[float]) -> str:
    return f"p50 {_percentile(values, 50):.2f} ms, p95 {_percentile(values, 95):.2f} ms"


def test_read_your_writes_is_never_stale_in_any_region(
    app_env: dict[str, dict[str, str]], table: str
) -> None:
    # The control: the same loop with a plain read, no token (issue 18: 17-26 % missing).
    plain = client(app_env, "lhr")
    missed = 0
    with plain.connect_write(autocommit=True) as w, plain.connect_read(autocommit=True) as r:
        for _ in range(200):
            (row_id,) = w.execute("INSERT INTO ryw (region) VALUES ('x') RETURNING id").fetchone()
            missed += r.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone() is None
    print(f"\nlhr, plain read right after the write (no token): {missed}/200 stale")
    for region in ("lhr", "fra", "arn", "iad", "ord", "sjc"):  # every region of both groups
        n = 2000 if region == "lhr" else 300
        # A wait long enough for any load on the test machine: the assertion is about
        # staleness, not about how fast this machine's replicas apply (bench/ measures that).
        fleet = client(app_env, region, max_wait=30)
        stale, waits = ryw_loop(fleet, region, n, pooled=True)
        print(f"{region}: {n} iterations, {stale} stale; added latency (the wait) {_p(waits)}")
        assert stale == 0, f"{region}: {stale} of {n} reads missed the write just made"
        stale, reads = ryw_loop(fleet, region, 50, pooled=False)
        print(
            f"{region}: 50 x fleet.read(after=token) {_p(reads)}; "
            f"fleet.read() without a token {_p(plain_read_ms(fleet, 50))}"
        )
        assert stale == 0, f"{region}: {stale} of 50 fleet.read() calls missed the write"
        assert fleet.stats.writes == n + 50 and fleet.stats.waited == 50


@contextmanager
def replay_paused(fleet_env: FleetEnv, region: str) -> Iterator[None]:
    """Holds `region`'s replica back: its WAL receiver frozen (SIGSTOP), as a stalled
    link would. (Patroni resumes a replay paused with pg_wal_replay_pause() by itself.)"""
    data_root = Path(fleet_env.outputs("accounts-eu")["data_root"])
    postmaster = int(
        (data_root / f"{region}-0" / "pgdata" / "postmaster.pid").read_text().split()[0]
    )
    receiver = next(
        pid
        for pid, cmd in command_lines().items()
        if cmd.startswith("postgres: ")
        and "walreceiver" in cmd
        and int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1]) == postmaster
    )
    os.kill(receiver, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(receiver, signal.SIGCONT)


def test_with_the_local_replica_paused_reads_fall_back_to_the_primary_within_max_wait(
    fleet: FleetEnv, app_env: dict[str, dict[str, str]], table: str
) -> None:
    max_wait = 0.2
    lhr = client(app_env, "lhr", max_wait=max_wait)
    with replay_paused(fleet, "lhr"):
        for _ in range(20):
            with lhr.write() as w:
                (row_id,) = w.conn.execute(
                    "INSERT INTO ryw (region) VALUES ('paused') RETURNING id"
                ).fetchone()
            # the replica is really behind: a read without the token misses the row
            with lhr.connect_read(autocommit=True) as plain:
                assert (
                    plain.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone() is None
                )
            t0 = time.monotonic()
            with lhr.read(after=w.token) as conn:
                took = time.monotonic() - t0
                assert conn.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone()
                assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            # max_wait, plus two connection set-ups (read, then write endpoint); the upper
            # bound only says it gave up instead of waiting for the paused replica
            assert max_wait <= took < max_wait + 15, took
    assert lhr.stats.fallbacks == 20
    # resumed: the replica catches up and serves the token's reads again
    with lhr.read(after=w.token, max_wait=30) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone() == (True,)
        assert conn.execute("SELECT 1 FROM ryw WHERE id = %s", (row_id,)).fetchone()


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass


@contextmanager
def serving(app) -> Iterator[int]:
    """Serves `app` with wsgiref on 127.0.0.1, a free port; yields the port."""
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def call(port: int, method: str, path: str, body: str = "", cookie: str = ""):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if cookie:
        headers["Cookie"] = cookie
    conn.request(method, path, body=body.encode(), headers=headers)
    resp = conn.getresponse()
    result = resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    conn.close()
    return result


def test_the_example_app_reads_its_writes_across_regions_and_replays_writes_to_the_primary(
    app_env: dict[str, dict[str, str]],
) -> None:
    fleets = {r: client(app_env, r) for r in REGIONS}
    create_schema(fleets["fra"])
    with (
        serving(make_app(fleets["lhr"], secure_cookie=False)) as lhr,
        serving(make_app(fleets["arn"], secure_cookie=False)) as arn,
    ):
        for i in range(30):
            status, headers, note_id = call(lhr, "POST", "/notes", f"body=note-{i}")
            assert status == 201, note_id
            cookie = headers["set-cookie"].split(";")[0]
            assert cookie.startswith("dbfleet_rw=dbf1:")
            status, _, body = call(arn, "GET", f"/notes/{note_id.strip()}", cookie=cookie)
            assert (status, body) == (200, f"note-{i}")
    assert fleets["arn"].stats.waited == 30

    with (
        serving(make_app(fleets["lhr"], replay=True, secure_cookie=False)) as lhr,
        serving(make_app(fleets["fra"], replay=True, secure_cookie=False)) as fra,
    ):
        status, headers, _ = call(lhr, "POST", "/notes", "body=replayed")
        assert status == 409 and headers["fly-replay"] == "region=fra"
        status, headers, note_id = call(fra, "POST", "/notes", "body=replayed")
        assert status == 201 and "fly-replay" not in headers
        cookie = headers["set-cookie"].split(";")[0]
        status, _, body = call(lhr, "GET", f"/notes/{note_id.strip()}", cookie=cookie)
        assert (status, body) == (200, "replayed")
        # a write through the local connection: lhr's replica refuses it (25006)
        status, headers, _ = call(lhr, "GET", "/visits")
        assert status == 409 and headers["fly-replay"] == "region=fra"
        status, headers, count = call(fra, "GET", "/visits")
        assert status == 200 and int(count) >= 1 and "fly-replay" not in headers
