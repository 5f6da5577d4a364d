"""dbfleet.client with fake connections and a fake clock: tokens, the replica wait,
its backoff, the fallback to the primary, and no password in a repr or a log line."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import pytest
from psycopg import pq

from dbfleet import client
from dbfleet.client import (
    AsyncFleet,
    ClientConfigError,
    Fleet,
    FleetConfig,
    Token,
    accept_token,
    format_lsn,
    parse_lsn,
    parse_token,
    redact,
)

READ = "postgresql://app:s3cr%2Ft@127.0.0.1:6432/app"
WRITE = "postgresql://app:s3cr%2Ft@127.0.0.1:6433/app"
PASSWORD = "s3cr%2Ft"
ENV = {
    "DATABASE_URL": READ,
    "DATABASE_WRITE_URL": WRITE,
    "PRIMARY_REGION": "fra",
    "DBFLEET_REGION": "lhr",
    "DBFLEET_GROUP": "prod/eu",
}


def config(**overrides: str) -> FleetConfig:
    return FleetConfig.from_env({**ENV, **overrides})


def run_async(coro: Any) -> Any:
    """Runs `coro` on a loop of its own: asyncio.run would leave the thread without
    a current event loop, which the Pulumi mocks of later tests need."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


# -- fakes -----------------------------------------------------------------------------
class Clock:
    """time.monotonic and time.sleep without sleeping: sleep advances the time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)


@dataclass
class Server:
    """A node: a primary (replayed is None) or a replica whose replay position is a
    function of the fake clock."""

    in_recovery: bool
    replayed: Callable[[], int] = lambda: 0
    current: int = 0x3_0000_0100  # pg_current_wal_lsn on a primary


@dataclass
class Info:
    transaction_status: pq.TransactionStatus = pq.TransactionStatus.IDLE


@dataclass
class FakeConn:
    server: Server
    url: str
    autocommit: bool = False
    info: Info = field(default_factory=Info)
    queries: list[str] = field(default_factory=list)
    closed: bool = False
    commits: int = 0
    rollbacks: int = 0

    def execute(self, sql: str, params: Any = None) -> FakeConn:
        self.queries.append(sql)
        if not self.autocommit:
            self.info.transaction_status = pq.TransactionStatus.INTRANS
        if sql == client.REPLAY_SQL:
            lsn = None if not self.server.in_recovery else format_lsn(self.server.replayed())
            self._row = (self.server.in_recovery, lsn)
        elif sql == client.COMMIT_LSN_SQL:
            self._row = (format_lsn(self.server.current),)
        else:
            self._row = (1,)
        return self

    def fetchone(self) -> tuple:
        return self._row

    def commit(self) -> None:
        self.commits += 1
        self.queries.append("COMMIT")
        self.info.transaction_status = pq.TransactionStatus.IDLE

    def rollback(self) -> None:
        self.rollbacks += 1
        self.queries.append("ROLLBACK")
        self.info.transaction_status = pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        (self.rollback if exc[0] else self.commit)()
        self.close()


class Connector:
    """psycopg.connect for the fakes: the read URL reaches `reader`, the write URL the primary."""

    def __init__(self, reader: Server, primary: Server | None = None) -> None:
        self.reader, self.primary = reader, primary or Server(in_recovery=False)
        self.made: list[FakeConn] = []

    def __call__(self, url: str, **kwargs: Any) -> FakeConn:
        server = self.reader if url == READ else self.primary
        conn = FakeConn(server, url, autocommit=kwargs.get("autocommit", False))
        self.made.append(conn)
        return conn


class AsyncConn:
    """FakeConn behind the AsyncConnection interface."""

    def __init__(self, conn: FakeConn) -> None:
        self.sync = conn
        self.info = conn.info

    async def execute(self, sql: str, params: Any = None) -> AsyncConn:
        self.sync.execute(sql, params)
        return self

    async def fetchone(self) -> tuple:
        return self.sync.fetchone()

    async def commit(self) -> None:
        self.sync.commit()

    async def rollback(self) -> None:
        self.sync.rollback()

    async def close(self) -> None:
        self.sync.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.sync.__exit__(*exc)


def replica_caught_up_at(clock: Clock, at: float, lsn: int) -> Server:
    """A replica that replays `lsn` once the clock reaches `at` seconds from now."""
    start = clock.now
    return Server(in_recovery=True, replayed=lambda: lsn if clock.now - start >= at else lsn - 1)


def make_fleet(reader: Server, clock: Clock, **kwargs: Any) -> tuple[Fleet, Connector]:
    connect = Connector(reader)
    return Fleet(config(), connect=connect, sleep=clock.sleep, clock=clock, **kwargs), connect


# -- importing -------------------------------------------------------------------------
def test_the_client_imports_without_pulumi() -> None:
    code = "import sys, dbfleet.client, dbfleet.web; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "psycopg" in loaded
    assert not {m for m in loaded if m == "pulumi" or m.startswith(("pulumi.", "dbfleet.ops"))}


# -- tokens ----------------------------------------------------------------------------
def test_a_token_round_trips_through_its_text() -> None:
    token = Token("prod/eu", parse_lsn("16/B374D848"))
    assert str(token) == "dbf1:prod/eu:16/B374D848"
    assert parse_token(str(token)) == token
    assert format_lsn(parse_lsn("0/0")) == "0/0" and parse_lsn("1/0") == 1 << 32


@pytest.mark.parametrize(
    "text",
    [
        "",
        "dbf1:prod/eu",
        "dbf2:prod/eu:0/1",
        "dbf1:prod/eu:0/1:extra",
        "dbf1:pr od/eu:0/1",
        "dbf1:prod/eu:XYZ",
        "dbf1:prod/eu:123456789/0",
        "dbf1:" + "a" * 300 + ":0/1",
    ],
)
def test_a_malformed_token_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_token(text)
    assert text == "" or text not in str(exc.value)


def test_a_token_of_another_group_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, "dbfleet.client"):
        assert accept_token("dbf1:prod/us:0/10", "prod/eu") is None
        assert accept_token("garbage<script>", "prod/eu") is None
    assert "group prod/us" in caplog.text and "<script>" not in caplog.text
    assert accept_token("dbf1:prod/eu:0/10", "prod/eu") == Token("prod/eu", 16)
    assert accept_token(None, "prod/eu") is None


def test_tokens_order_by_position() -> None:
    assert max(Token("a", 5), Token("a", 9), Token("a", 7)).lsn == 9


# -- configuration ---------------------------------------------------------------------
def test_the_configuration_comes_from_the_environment_and_fly_region() -> None:
    cfg = config()
    assert (cfg.region, cfg.primary_region, cfg.scope) == ("lhr", "fra", "prod/eu")
    env = {k: v for k, v in ENV.items() if k not in ("DBFLEET_REGION", "DBFLEET_GROUP")}
    fly = FleetConfig.from_env({**env, "FLY_REGION": "arn"})
    assert fly.region == "arn" and fly.scope == "fra"  # no group given: the primary region
    assert FleetConfig.from_env({**ENV, "FLY_REGION": "arn"}).region == "lhr"


def test_missing_configuration_names_what_to_set() -> None:
    with pytest.raises(ClientConfigError, match=r"DBFLEET_REGION \(or FLY_REGION\), DATABASE_URL"):
        FleetConfig.from_env({"DATABASE_WRITE_URL": WRITE, "PRIMARY_REGION": "fra"})
    with pytest.raises(ClientConfigError, match="dbfleet endpoints --env REGION"):
        FleetConfig.from_env({})
    with pytest.raises(ClientConfigError, match="not <fleet>/<group>"):
        config(DBFLEET_GROUP="no spaces/allowed here")


def test_no_password_in_a_repr() -> None:
    cfg = config()
    fleet = Fleet(cfg)
    for text in (repr(cfg), repr(fleet), str(cfg)):
        assert PASSWORD not in text and "app:****@127.0.0.1:6432" in text


@pytest.mark.parametrize(
    ("conninfo", "shown"),
    [
        (READ, "postgresql://app:****@127.0.0.1:6432/app"),
        ("postgresql://app@h/db?password=x&sslmode=require", "postgresql://app@h/db?password=****&sslmode=require"),
        ("host=h password='a b' user=app", "host=h password=**** user=app"),
        ("postgres://u:p@h1:1,h2:2/db", "postgres://u:****@h1:1,h2:2/db"),
        ("postgresql://h/db", "postgresql://h/db"),
    ],
)  # fmt: skip
def test_redact_hides_every_form_of_password(conninfo: str, shown: str) -> None:
    assert redact(conninfo) == shown


# -- writes ----------------------------------------------------------------------------
def test_the_token_is_read_after_the_commit() -> None:
    clock = Clock()
    fleet, connect = make_fleet(Server(in_recovery=True), clock)
    with fleet.write() as w:
        w.conn.execute("INSERT INTO t VALUES (1)")
        assert w.token is None
    conn = connect.made[0]
    assert conn.url == WRITE and conn.closed
    # INSERT, COMMIT, then the LSN (in a transaction of its own, also ended)
    assert conn.queries[:4] == [
        "INSERT INTO t VALUES (1)",
        "COMMIT",
        client.COMMIT_LSN_SQL,
        "COMMIT",
    ]
    assert w.token == Token("prod/eu", 0x3_0000_0100) and fleet.stats.writes == 1


def test_a_failed_write_rolls_back_and_gives_no_token() -> None:
    fleet, connect = make_fleet(Server(in_recovery=True), Clock())
    with pytest.raises(RuntimeError), fleet.write() as w:
        raise RuntimeError("constraint")
    assert w.token is None and connect.made[0].rollbacks == 1
    assert client.COMMIT_LSN_SQL not in connect.made[0].queries


# -- reads -----------------------------------------------------------------------------
def test_a_read_without_a_token_does_not_wait() -> None:
    clock = Clock()
    fleet, _ = make_fleet(replica_caught_up_at(clock, 10, 5), clock)
    conn = fleet.read()
    assert conn.url == READ and conn.queries == [] and clock.sleeps == []


def test_a_read_waits_for_the_replica_with_backoff_then_uses_it() -> None:
    clock = Clock()
    fleet, connect = make_fleet(replica_caught_up_at(clock, 0.02, 500), clock)
    conn = fleet.read(after=Token("prod/eu", 500))
    assert conn.url == READ and not conn.closed and len(connect.made) == 1
    # 1, 2, 4, 8, 16 ms: doubling, never a busy loop
    assert clock.sleeps[:5] == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    assert 0.02 <= sum(clock.sleeps) < 0.05
    # the wait's transaction is over: the app's first query takes a fresh snapshot
    assert conn.info.transaction_status == pq.TransactionStatus.IDLE and conn.rollbacks == 1
    assert fleet.stats.fallbacks == 0 and fleet.stats.waited == 1


def test_backoff_is_capped() -> None:
    clock = Clock()
    fleet, _ = make_fleet(replica_caught_up_at(clock, 10, 500), clock, max_wait=1.0)
    fleet.read(after=Token("prod/eu", 500))
    assert max(clock.sleeps) == client.MAX_DELAY
    assert sum(clock.sleeps) == pytest.approx(1.0)  # the last pause ends at the deadline


def test_a_read_falls_back_to_the_write_endpoint_after_max_wait(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    fleet, connect = make_fleet(replica_caught_up_at(clock, 10, 500), clock, max_wait=0.3)
    with caplog.at_level(logging.INFO, "dbfleet.client"):
        conn = fleet.read(after=str(Token("prod/eu", 500)))
    first, second = connect.made
    assert first.url == READ and first.closed
    assert conn is second and second.url == WRITE and not second.closed
    assert sum(clock.sleeps) == pytest.approx(0.3) and fleet.stats.fallbacks == 1
    assert "reading from the primary" in caplog.text and PASSWORD not in caplog.text


def test_max_wait_per_read_overrides_the_fleets() -> None:
    clock = Clock()
    fleet, _ = make_fleet(replica_caught_up_at(clock, 10, 500), clock, max_wait=5)
    assert fleet.read(after=Token("prod/eu", 500), max_wait=0).url == WRITE
    assert clock.sleeps == []


def test_on_a_primary_a_read_never_waits() -> None:
    clock = Clock()
    fleet, _ = make_fleet(Server(in_recovery=False), clock)
    conn = fleet.read(after=Token("prod/eu", 1 << 40))
    assert (
        conn.url == READ and clock.sleeps == [] and conn.queries == [client.REPLAY_SQL, "ROLLBACK"]
    )


def test_a_token_of_another_group_means_no_wait() -> None:
    clock = Clock()
    fleet, _ = make_fleet(replica_caught_up_at(clock, 10, 500), clock)
    conn = fleet.read(after="dbf1:prod/us:FF/0")
    assert conn.url == READ and conn.queries == [] and fleet.stats.ignored_tokens == 1


def test_waiting_inside_a_transaction_is_refused() -> None:
    clock = Clock()
    fleet, connect = make_fleet(Server(in_recovery=True), clock)
    conn = connect(READ)
    conn.execute("SELECT 1")
    with pytest.raises(ValueError, match="outside a transaction"):
        fleet.wait_for(conn, Token("prod/eu", 1))


def test_a_failing_wait_closes_the_read_connection() -> None:
    clock = Clock()

    def broken() -> int:
        raise OSError("server closed the connection")

    fleet, connect = make_fleet(Server(in_recovery=True, replayed=broken), clock)
    with pytest.raises(OSError):
        fleet.read(after=Token("prod/eu", 1))
    assert connect.made[0].closed


def test_counters_are_exact_under_threads() -> None:
    clock = Clock()
    fleet, _ = make_fleet(Server(in_recovery=False), clock)

    def work() -> None:
        for _ in range(200):
            fleet.read(after=Token("prod/eu", 1))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fleet.stats.reads == 1600 and fleet.stats.waited == 1600


# -- asyncio ---------------------------------------------------------------------------
def test_the_async_fleet_waits_with_asyncio_sleep_and_falls_back() -> None:
    clock = Clock()
    sync = Connector(replica_caught_up_at(clock, 0.01, 500))

    async def connect(url: str, **kwargs: Any) -> AsyncConn:
        return AsyncConn(sync(url, **kwargs))

    fleet = AsyncFleet(config(), connect=connect, sleep=clock.asleep, clock=clock, max_wait=0.1)

    async def scenario() -> tuple[str, str, Token | None]:
        async with fleet.write() as w:
            await w.conn.execute("INSERT INTO t VALUES (1)")
        caught_up = await fleet.read(after=Token("prod/eu", 500))
        behind = await fleet.read(after=Token("prod/eu", 501))
        return caught_up.sync.url, behind.sync.url, w.token

    caught_up, behind, token = run_async(scenario())
    assert token is not None and token.scope == "prod/eu"
    assert caught_up == READ and behind == WRITE
    assert fleet.stats.fallbacks == 1 and clock.sleeps[0] == 0.001
