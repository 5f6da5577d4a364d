"""Read-your-writes for applications on a dbfleet fleet (psycopg 3; no Pulumi).

A fleet reads nearest and writes to the primary: a region's read endpoint serves
its local replica, which replays the primary's WAL a little later. A row written
through the write endpoint and read back at once through the read endpoint is
often not there yet (issue 18 measured 17-26 % missing). This module hands out the
two connections and a *read-your-writes token*:

    fleet = Fleet.from_env()                 # dbfleet endpoints --env REGION
    with fleet.write() as w:                 # the primary, through the region's write endpoint
        w.conn.execute("INSERT ...")
    token = w.token                          # taken after COMMIT
    with fleet.read(after=token) as conn:    # the local replica once it has replayed the write
        conn.execute("SELECT ...")

The token is the primary's `pg_current_wal_lsn()` read *after* the commit (read
inside the transaction it lies before the commit record: 8 % stale reads). A read
with a token polls the read connection's server, with backoff, until
`pg_last_wal_replay_lsn()` reaches it (a primary, not in recovery, needs no wait);
past `max_wait` it gives up on the replica and returns a connection to the write
endpoint, so a read is never stale, only sometimes slower. PostgreSQL 15 has no
`pg_wal_replay_wait`, hence the polling.

Tokens are opaque strings (`dbf1:<fleet>/<group>:<LSN>`) that name the group they
belong to: a token of another group, or one that does not parse, is ignored with a
warning (its LSN says nothing about this group's replicas). A forged token can
only make its bearer's reads slower (max_wait, then the primary).

`Fleet` is thread-safe (its only mutable state, the counters, is behind a lock);
`AsyncFleet` is the asyncio flavour (psycopg's AsyncConnection, asyncio.sleep).
URIs never appear in a repr or a log line with their password (`redact`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

import psycopg
from psycopg import pq

__all__ = [
    "DEFAULT_MAX_WAIT",
    "AsyncFleet",
    "ClientConfigError",
    "Fleet",
    "FleetConfig",
    "FleetStats",
    "Token",
    "accept_token",
    "format_lsn",
    "parse_lsn",
    "parse_token",
    "redact",
]

log = logging.getLogger("dbfleet.client")

DEFAULT_MAX_WAIT = 0.5  # seconds a read waits for the local replica before using the primary
FIRST_DELAY = 0.001  # first pause between polls; doubles up to MAX_DELAY
MAX_DELAY = 0.05

TOKEN_VERSION = "dbf1"
_SCOPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?")
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_TOKEN_MAX = 200

# On a replica: how far it has replayed; on a primary (not in recovery) no wait is needed.
REPLAY_SQL = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
COMMIT_LSN_SQL = "SELECT pg_current_wal_lsn()::text"


class ClientConfigError(ValueError):
    """The application's configuration is missing or malformed (says what to set)."""


# -- secrets in text ---------------------------------------------------------------------
def redact(conninfo: str) -> str:
    """`conninfo` (a URI or key=value string) with any password replaced by ****."""
    if "://" in conninfo:
        text = re.sub(r"(://[^:/@?#]*:)[^@/?#]*@", r"\1****@", conninfo)
        return re.sub(r"([?&]password=)[^&#]*", r"\1****", text)
    return re.sub(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1****", conninfo)


# -- LSNs and tokens ---------------------------------------------------------------------
def parse_lsn(text: str) -> int:
    """PostgreSQL's `X/Y` LSN text as an integer; ValueError when it is not one."""
    m = _LSN.fullmatch(text.strip())
    if not m:
        raise ValueError("not an LSN (X/Y in hexadecimal)")
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True, order=True)
class Token:
    """Where the primary's WAL stood after a commit, in one group."""

    scope: str  # "<fleet>/<group>" (or what the app configured)
    lsn: int

    def __str__(self) -> str:
        return f"{TOKEN_VERSION}:{self.scope}:{format_lsn(self.lsn)}"


def parse_token(text: str) -> Token:
    """A token from its text; ValueError (without echoing the text) when malformed."""
    if not isinstance(text, str) or len(text) > _TOKEN_MAX:
        raise ValueError("not a dbfleet token")
    parts = text.strip().split(":")
    if len(parts) != 3 or parts[0] != TOKEN_VERSION:
        raise ValueError("not a dbfleet token (expected dbf1:<group>:<LSN>)")
    if not _SCOPE.fullmatch(parts[1]):
        raise ValueError("a dbfleet token with a malformed group")
    return Token(parts[1], parse_lsn(parts[2]))


def accept_token(given: Token | str | None, scope: str) -> Token | None:
    """The token to wait for: `given` when it parses and belongs to `scope`; None (with a
    warning) when it does not — a token from elsewhere is never trusted."""
    if given is None or given == "":
        return None
    if isinstance(given, Token):
        token = given
    else:
        try:
            token = parse_token(given)
        except ValueError as exc:
            log.warning("dbfleet.client: ignoring a read-your-writes token: %s", exc)
            return None
    if token.scope != scope:
        log.warning(
            "dbfleet.client: ignoring a read-your-writes token of group %s (this app reads group %s)",
            token.scope,
            scope,
        )
        return None
    return token


# -- configuration -----------------------------------------------------------------------
@dataclass(frozen=True)
class FleetConfig:
    """What an application in one region needs; `dbfleet endpoints --env REGION` prints it."""

    region: str
    primary_region: str
    read_url: str = field(repr=False)
    write_url: str = field(repr=False)
    scope: str = ""  # the token scope: DBFLEET_GROUP (<fleet>/<group>), else the primary region

    def __post_init__(self) -> None:
        for name in ("region", "primary_region", "read_url", "write_url"):
            if not getattr(self, name):
                raise ClientConfigError(f"dbfleet.client: {name} is empty")
        if not self.scope:
            object.__setattr__(self, "scope", self.primary_region)
        if not _SCOPE.fullmatch(self.scope):
            raise ClientConfigError(
                f"dbfleet.client: group {self.scope!r} is not <fleet>/<group> (letters, digits, ._-)"
            )

    def __repr__(self) -> str:
        return (
            f"FleetConfig(region={self.region!r}, primary_region={self.primary_region!r}, "
            f"scope={self.scope!r}, read_url={redact(self.read_url)!r}, "
            f"write_url={redact(self.write_url)!r})"
        )

    @property
    def in_primary_region(self) -> bool:
        return self.region == self.primary_region

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FleetConfig:
        """From DATABASE_URL (the region's read URI), DATABASE_WRITE_URL, PRIMARY_REGION,
        DBFLEET_GROUP, and the region: DBFLEET_REGION, else FLY_REGION."""
        env = os.environ if env is None else env
        region = env.get("DBFLEET_REGION") or env.get("FLY_REGION") or ""
        missing = [
            name
            for name, value in (
                ("DBFLEET_REGION (or FLY_REGION)", region),
                ("DATABASE_URL", env.get("DATABASE_URL")),
                ("DATABASE_WRITE_URL", env.get("DATABASE_WRITE_URL")),
                ("PRIMARY_REGION", env.get("PRIMARY_REGION")),
            )
            if not value
        ]
        if missing:
            raise ClientConfigError(
                f"dbfleet.client: {', '.join(missing)} not set "
                "(print them with: dbfleet endpoints --env REGION --show-secrets > .env)"
            )
        return cls(
            region=region,
            primary_region=env["PRIMARY_REGION"],
            read_url=env["DATABASE_URL"],
            write_url=env["DATABASE_WRITE_URL"],
            scope=env.get("DBFLEET_GROUP", ""),
        )


@dataclass(frozen=True)
class FleetStats:
    """Counters since the Fleet was made (a snapshot)."""

    writes: int = 0
    reads: int = 0
    waited: int = 0  # reads that had a token to wait for
    fallbacks: int = 0  # reads served by the write endpoint after max_wait
    ignored_tokens: int = 0


@dataclass
class Write:
    """The open write connection; `token` is set once the block has committed."""

    conn: Any
    token: Token | None = None


class _Poll:
    """Backoff between polls, bounded by a deadline (clock injected for tests)."""

    def __init__(self, max_wait: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.deadline = clock() + max_wait
        self.delay = FIRST_DELAY

    def next_delay(self) -> float | None:
        """How long to sleep before the next poll; None once the deadline has passed."""
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            return None
        delay = min(self.delay, remaining)
        self.delay = min(self.delay * 2, MAX_DELAY)
        return delay


def _caught_up(row: tuple[Any, Any] | None, token: Token) -> bool:
    in_recovery, replayed = row if row else (True, None)
    return not in_recovery or (replayed is not None and parse_lsn(str(replayed)) >= token.lsn)


def _check_idle(conn: Any) -> None:
    # The wait's query runs on the caller's connection: inside their transaction it
    # would keep an old snapshot (REPEATABLE READ) or be rolled back with their work.
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise ValueError("dbfleet.client: wait on a connection outside a transaction")


class _Base:
    def __init__(
        self,
        config: FleetConfig,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        clock: Callable[[], float] = time.monotonic,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if max_wait < 0:
            raise ClientConfigError("dbfleet.client: max_wait must be >= 0")
        self.config = config
        self.max_wait = max_wait
        self._clock = clock
        self._kwargs = dict(connect_kwargs or {})
        self._lock = threading.Lock()
        self._stats = FleetStats()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r}, max_wait={self.max_wait})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **options: Any) -> Self:
        return cls(FleetConfig.from_env(env), **options)

    @property
    def stats(self) -> FleetStats:
        with self._lock:
            return self._stats

    def _count(self, **increments: int) -> None:
        with self._lock:
            now = self._stats
            self._stats = FleetStats(
                **{
                    k: getattr(now, k) + increments.get(k, 0)
                    for k in FleetStats.__dataclass_fields__
                }
            )

    def accept(self, given: Token | str | None) -> Token | None:
        """`given` when it is a token of this fleet's group, else None (see accept_token)."""
        token = accept_token(given, self.config.scope)
        if given and token is None:
            self._count(ignored_tokens=1)
        return token

    def _token(self, lsn_text: str) -> Token:
        self._count(writes=1)
        return Token(self.config.scope, parse_lsn(lsn_text))

    def _fell_back(self, token: Token, max_wait: float) -> None:
        self._count(fallbacks=1)
        log.info(
            "dbfleet.client: %s replica not at %s after %.3f s: reading from the primary",
            self.config.region,
            format_lsn(token.lsn),
            max_wait,
        )


class Fleet(_Base):
    """Connections for one region of a fleet, and read-your-writes tokens (blocking)."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        connect: Callable[..., Any] = psycopg.connect,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(config, max_wait=max_wait, clock=clock, connect_kwargs=connect_kwargs)
        self._connect = connect
        self._sleep = sleep

    def connect_write(self, **kwargs: Any) -> psycopg.Connection:
        """A new connection to the primary, through this region's write endpoint."""
        return self._connect(self.config.write_url, **{**self._kwargs, **kwargs})

    def connect_read(self, **kwargs: Any) -> psycopg.Connection:
        """A new connection to this region's read endpoint (the nearest healthy copy)."""
        return self._connect(self.config.read_url, **{**self._kwargs, **kwargs})

    def commit_token(self, conn: psycopg.Connection) -> Token:
        """Commits `conn`'s transaction and returns the token of what it wrote: the
        primary's WAL position read after the commit."""
        conn.commit()
        (lsn,) = conn.execute(COMMIT_LSN_SQL).fetchone()
        conn.commit()  # ends the transaction the query opened (no-op in autocommit)
        return self._token(lsn)

    @contextlib.contextmanager
    def write(self, **kwargs: Any) -> Iterator[Write]:
        """A write connection for a `with` block; commits at its end and sets `.token`
        (rolls back, no token, when the block raises). Closes the connection."""
        with self.connect_write(**kwargs) as conn:
            w = Write(conn)
            yield w
            w.token = self.commit_token(conn)

    def wait_for(
        self, conn: psycopg.Connection, after: Token | str | None, max_wait: float | None = None
    ) -> bool:
        """Waits until `conn`'s server has replayed `after` (outside a transaction).
        True when it has (or there is nothing to wait for); False after `max_wait`."""
        token = self.accept(after)
        if token is None:
            return True
        _check_idle(conn)
        poll = _Poll(self.max_wait if max_wait is None else max_wait, self._clock)
        try:
            while not _caught_up(conn.execute(REPLAY_SQL).fetchone(), token):
                delay = poll.next_delay()
                if delay is None:
                    return False
                self._sleep(delay)
            return True
        finally:
            if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
                conn.rollback()  # the reader's own first query gets a fresh snapshot

    def read(
        self, after: Token | str | None = None, max_wait: float | None = None, **kwargs: Any
    ) -> psycopg.Connection:
        """A read connection that sees everything `after` covers: the local read
        endpoint once it has replayed the token, else (after `max_wait`) the write
        endpoint. The caller closes it (`with fleet.read(...) as conn:`)."""
        token = self.accept(after)
        self._count(reads=1, waited=int(token is not None))
        conn = self.connect_read(**kwargs)
        if token is None:
            return conn
        wait = self.max_wait if max_wait is None else max_wait
        try:
            caught_up = self.wait_for(conn, token, wait)
        except BaseException:
            conn.close()
            raise
        if caught_up:
            return conn
        conn.close()
        self._fell_back(token, wait)
        return self.connect_write(**kwargs)


class AsyncFleet(_Base):
    """Fleet for asyncio: psycopg AsyncConnections, asyncio.sleep between polls."""

    def __init__(
        self,
        config: FleetConfig,
        *,
        max_wait: float = DEFAULT_MAX_WAIT,
        connect: Callable[..., Any] = psycopg.AsyncConnection.connect,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        connect_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(config, max_wait=max_wait, clock=clock, connect_kwargs=connect_kwargs)
        self._connect = connect
        self._sleep = sleep

    async def connect_write(self, **kwargs: Any) -> psycopg.AsyncConnection:
        return await self._connect(self.config.write_url, **{**self._kwargs, **kwargs})

    async def connect_read(self, **kwargs: Any) -> psycopg.AsyncConnection:
        return await self._connect(self.config.read_url, **{**self._kwargs, **kwargs})

    async def commit_token(self, conn: psycopg.AsyncConnection) -> Token:
        await conn.commit()
        cur = await conn.execute(COMMIT_LSN_SQL)
        (lsn,) = await cur.fetchone()
        await conn.commit()
        return self._token(lsn)

    @contextlib.asynccontextmanager
    async def write(self, **kwargs: Any) -> AsyncIterator[Write]:
        async with await self.connect_write(**kwargs) as conn:
            w = Write(conn)
            yield w
            w.token = await self.commit_token(conn)

    async def wait_for(
        self,
        conn: psycopg.AsyncConnection,
        after: Token | str | None,
        max_wait: float | None = None,
    ) -> bool:
        token = self.accept(after)
        if token is None:
            return True
        _check_idle(conn)
        poll = _Poll(self.max_wait if max_wait is None else max_wait, self._clock)
        try:
            while True:
                cur = await conn.execute(REPLAY_SQL)
                if _caught_up(await cur.fetchone(), token):
                    return True
                delay = poll.next_delay()
                if delay is None:
                    return False
                await self._sleep(delay)
        finally:
            if conn.info.transaction_status == pq.TransactionStatus.INTRANS:
                await conn.rollback()

    async def read(
        self, after: Token | str | None = None, max_wait: float | None = None, **kwargs: Any
    ) -> psycopg.AsyncConnection:
        token = self.accept(after)
        self._count(reads=1, waited=int(token is not None))
        conn = await self.connect_read(**kwargs)
        if token is None:
            return conn
        wait = self.max_wait if max_wait is None else max_wait
        try:
            caught_up = await self.wait_for(conn, token, wait)
        except BaseException:
            await conn.close()
            raise
        if caught_up:
            return conn
        await conn.close()
        self._fell_back(token, wait)
        return await self.connect_write(**kwargs)
