"""Figure 10: what TLS costs through a region proxy — connection setup and a point read
with `sslmode=verify-full` against `sslmode=disable`, in the same run.

The fleet refuses plain TCP (pg_hba has `hostssl` lines only), so the comparison runs on
a throw-away server of its own, in a temp dir under /tmp, destroyed at the end (also on
failure): one PostgreSQL 15 set up as a fleet node is (`ssl = on` with an EC P-256
certificate, TLS 1.2 at least, scram-sha-256) but whose pg_hba accepts the benchmark
user both as `hostssl` and `hostnossl`, and one HAProxy in front of it in TCP mode with
dbfleet's defaults (bench/fig_proxy.py's standalone HAProxy). The CA is made here with
the openssl CLI for this run only; its key is deleted once the server's certificate is
signed, the server's key is 0600. Both paths dial the same HAProxy port; the client
verifies the server's certificate against the address it dialled, as the fleet's
connection URIs do. Each path is checked first to be what it claims (`pg_stat_ssl`).

a. Connection setup: connections one after another, alternating the paths, each timed
   to `connect()` returning (TLS handshake and SCRAM) and to the answer of a first
   `SELECT 1` (bench/fig_apps.py `setup_times`).
b. Point read: `SELECT v FROM bench_kv WHERE k = $1` on one persistent connection per
   path, blocks back to back in alternating order (bench/fig_proxy.py `_compare`).

As root, PostgreSQL runs as the `postgres` OS user (it refuses to run as root).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from bench import fig_apps, fig_proxy, procs
from bench.context import PG_BIN, Ctx
from bench.fleetenv import free_ports
from bench.markdown import figure_meta, fmt, fmt_ratio, has_value, med, num, table, verdict
from components.scram import verifier

# A point read on an open connection pays only TLS record encryption: held to the same
# bound as the proxy's own hop (figure 4), which the fleet already accepts.
GOAL_READ_P50_RATIO = 1.3
PATHS = ("plain", "tls")
SSLMODE = {"plain": "disable", "tls": "verify-full"}
DB, USER = "bench", "bench"
ROWS = 1000
SETUP_MAX_S = 300.0
DB_OS_USER = "postgres"  # as root: the OS user PostgreSQL runs as


# --------------------------------------------------------------------------- the server


def pg_hba(user: str = USER) -> str:
    """Both kinds of TCP line for the benchmark user (the fleet has `hostssl` only),
    SCRAM on both; the superuser only over the private socket, for setting up."""
    return (
        "local all postgres trust\n"
        f"hostssl all {user} 127.0.0.1/32 scram-sha-256\n"
        f"hostnossl all {user} 127.0.0.1/32 scram-sha-256\n"
    )


def server_conf(port: int, socket_dir: Path) -> str:
    """The TLS settings of a fleet node (components/scripts/patroni.sh), on loopback."""
    return (
        "\n# dbfleet bench (fig_tls)\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "unix_socket_permissions = 0700\n"
        "password_encryption = scram-sha-256\n"
        "ssl = on\n"
        "ssl_cert_file = 'server.crt'\n"
        "ssl_key_file = 'server.key'\n"
        "ssl_min_protocol_version = 'TLSv1.2'\n"
        "fsync = off\n"  # a throw-away server: only reads are measured
    )


SERVER_EXT = (
    "basicConstraints = critical, CA:FALSE\n"
    "keyUsage = critical, digitalSignature\n"
    "extendedKeyUsage = serverAuth\n"
    "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
)


@dataclass
class TlsServer:
    """The throw-away PostgreSQL + HAProxy pair; `start` brings it up, `close` ends
    what it started (by pid and data directory) and removes its directory."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="dbfleet-bench-tls-")))
    password: str = field(default_factory=lambda: os.urandom(18).hex(), repr=False)
    pg_port: int = 0
    proxy_port: int = 0
    haproxy: subprocess.Popen | None = None
    started_pg: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def ca(self) -> Path:
        return self.root / "ca.crt"

    def conninfo(self, path: str) -> str:
        """libpq parameters of `path` ("plain" or "tls") through the HAProxy."""
        params = {
            "host": "127.0.0.1",
            "port": str(self.proxy_port),
            "dbname": DB,
            "user": USER,
            "password": self.password,
            "sslmode": SSLMODE[path],
        }
        if path == "tls":
            params["sslrootcert"] = str(self.ca)
        return psycopg.conninfo.make_conninfo(**params)

    def _db(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", DB_OS_USER, "--", *argv] if os.geteuid() == 0 else argv

    def _run(self, argv: list[str], log: Path) -> None:
        procs.run(argv, cwd=self.root, timeout=120, log=log)

    def start(self, log: Path) -> None:
        self.pg_port, self.proxy_port = free_ports(2)
        old = os.umask(0o077)  # every key is 0600 from the moment it is written
        try:
            self._certificates(log)
        finally:
            os.umask(old)
        sock = self.root / "run"
        sock.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.root, DB_OS_USER)
            for p in (sock, self.root / "server.crt", self.root / "server.key"):
                shutil.chown(p, DB_OS_USER)
        self._run(
            self._db(
                [f"{PG_BIN}/initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust"]
                + ["-E", "UTF8", "--locale=C", "--no-sync"]
            ),
            log,
        )
        for name in ("server.crt", "server.key"):
            (self.root / name).rename(self.data / name)
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(server_conf(self.pg_port, sock))
        (self.data / "pg_hba.conf").write_text(pg_hba())
        self._run(
            self._db(
                [f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-l", str(self.root / "pg.log")]
                + ["-w", "-t", "60", "start"]
            ),
            log,
        )
        self.started_pg = True
        with psycopg.connect(
            host=str(sock), port=self.pg_port, user="postgres", dbname="postgres", autocommit=True
        ) as c:
            # The verifier, not the password, reaches the server (and any log of it).
            c.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(USER), sql.Literal(verifier(self.password, os.urandom(16)))
                )
            )
            c.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (DB, USER)))
            )
        self.haproxy = fig_proxy.start_haproxy(
            self.root / "haproxy.cfg",
            fig_proxy._haproxy_cfg("", self.proxy_port, f"127.0.0.1:{self.pg_port}"),
        )

    def _certificates(self, log: Path) -> None:
        """A CA for this run and a server certificate for 127.0.0.1 signed by it, both EC
        P-256 as the fleet's Vault PKI issues them; the CA key is gone afterwards."""
        ec = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]
        (self.root / "server.ext").write_text(SERVER_EXT)
        for argv in (
            ["openssl", "genpkey", *ec, "-out", "ca.key"],
            ["openssl", "req", "-x509", "-new", "-key", "ca.key", "-days", "1"]
            + ["-subj", "/CN=dbfleet bench TLS CA", "-out", "ca.crt"],
            ["openssl", "genpkey", *ec, "-out", "server.key"],
            ["openssl", "req", "-new", "-key", "server.key", "-subj", "/CN=127.0.0.1"]
            + ["-out", "server.csr"],
            ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key"]
            + ["-CAcreateserial", "-days", "1", "-extfile", "server.ext", "-out", "server.crt"],
        ):
            self._run(argv, log)
        (self.root / "ca.key").unlink()
        self.ca.chmod(0o644)  # public: the client reads it

    def connect(self, path: str) -> psycopg.Connection:
        """A connection of `path` through the HAProxy, once it accepts connections."""
        deadline = time.monotonic() + 10
        while True:
            if self.haproxy is not None and self.haproxy.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.haproxy.returncode}")
            try:
                return psycopg.connect(self.conninfo(path), autocommit=True, **fig_apps.CONNECT)
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def close(self, keep: bool = False) -> None:
        if self.haproxy is not None:
            fig_proxy.stop(self.haproxy)
            self.haproxy = None
        if self.started_pg:
            procs.run(
                self._db([f"{PG_BIN}/pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"]),
                cwd=self.root,
                timeout=120,
                ok_codes=None,
            )
            self.started_pg = False
        if not keep:
            shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- measuring


def session_tls(conn: psycopg.Connection) -> dict:
    """What the server says of this session's encryption (`pg_stat_ssl`)."""
    row = conn.execute(
        "SELECT ssl, version, cipher FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
    ).fetchone()
    ssl, version, cipher = row if row else (False, None, None)
    return {"ssl": bool(ssl), "version": version, "cipher": cipher}


def check_paths(seen: Mapping[str, Mapping]) -> None:
    """The plain path must be plain and the TLS path encrypted, or the figure would
    compare the wrong things."""
    if seen["plain"]["ssl"] or not seen["tls"]["ssl"]:
        raise RuntimeError(f"the paths are not what they claim: {dict(seen)}")


def run(ctx: Ctx) -> dict:
    server = TlsServer()
    log = ctx.logs / "tls.log"
    rnd = random.Random(10)
    try:
        ctx.say(f"tls cost: PostgreSQL + HAProxy in {server.root}")
        server.start(log)
        conns = {p: server.connect(p) for p in PATHS}
        try:
            seen = {p: session_tls(c) for p, c in conns.items()}
            check_paths(seen)
            conns["tls"].execute("CREATE TABLE bench_kv (k int PRIMARY KEY, v text NOT NULL)")
            conns["tls"].execute(
                "INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, %s) g",
                (ROWS,),
            )
            conns["tls"].execute("ANALYZE bench_kv")
            ctx.say("tls cost: point reads")
            read = fig_proxy._compare(
                ctx,
                conns["tls"],
                conns["plain"],
                "SELECT v FROM bench_kv WHERE k = %s",
                lambda: (rnd.randint(1, ROWS),),
                names=("tls", "plain"),
            )
        finally:
            for c in conns.values():
                c.close()
        n = setup_connections(ctx)
        ctx.say(f"tls cost: connection setup, {n} of each path")
        setup = fig_apps.setup_times({p: server.conninfo(p) for p in PATHS}, n, SETUP_MAX_S)
    finally:
        server.close(keep=ctx.keep)
    return {
        "goal_read_p50_ratio": GOAL_READ_P50_RATIO,
        "runs": ctx.plan.runs,
        "queries_per_run": ctx.plan.proxy_queries,
        "setup_connections": n,
        "session": seen["tls"],
        "setup": setup,
        "read": read,
    }


def setup_connections(ctx: Ctx) -> int:
    """Connections of each path: a quarter of a read block (500 in the full plan)."""
    return max(20, ctx.plan.proxy_queries // 4)


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 10 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(res: Mapping) -> bool | None:
    read = res.get("read") or {}
    if not read:
        return None
    return med(read.get("ratio_p50")) < res.get("goal_read_p50_ratio", GOAL_READ_P50_RATIO)


def setup_cost(res: Mapping, what: str = "first_ms") -> dict:
    """The TLS path's setup against the plain one's: p50 and p99 of each, the p50
    ratio and the milliseconds TLS adds at p50 (NaN where a path has no samples)."""
    setup = res.get("setup") or {}
    tls = (setup.get("tls") or {}).get(what) or {}
    plain = (setup.get("plain") or {}).get(what) or {}
    t50, p50 = num(tls.get("p50")), num(plain.get("p50"))
    return {
        "tls_p50": t50,
        "tls_p99": num(tls.get("p99")),
        "plain_p50": p50,
        "plain_p99": num(plain.get("p99")),
        "ratio_p50": t50 / p50 if has_value(t50) and has_value(p50) and p50 else float("nan"),
        "extra_p50": t50 - p50,
    }


def _ms(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f} ms" if has_value(v) else "–"


def _x(v: float) -> str:
    return f"{v:.2f}×" if has_value(v) else "–"


def summary_rows(res: Mapping) -> list[list[str]]:
    if not res.get("read") and not res.get("setup"):
        return []
    goal = res.get("goal_read_p50_ratio", GOAL_READ_P50_RATIO)
    read = res.get("read") or {}
    s = setup_cost(res)
    return [
        [
            "10a. connection setup through HAProxy (connect + first query), `verify-full` TLS",
            "–",
            f"p50 {_ms(s['tls_p50'])}, p99 {_ms(s['tls_p99'])}",
            (
                f"`sslmode=disable`: p50 {_ms(s['plain_p50'])}, p99 {_ms(s['plain_p99'])}; "
                f"p50 ratio {_x(s['ratio_p50'])} (+{_ms(s['extra_p50'])})"
            ),
            "–",
        ],
        [
            "10b. point read p50 through HAProxy, `verify-full` TLS ÷ `sslmode=disable`",
            f"< {goal}× at p50",
            fmt_ratio(read.get("ratio_p50")),
            f"plain p50 {fmt(read.get('plain_p50_ms'), 'ms', 3)}",
            verdict(ok(res)),
        ],
    ]


def section(res: Mapping) -> str:
    if not res:
        return ""
    if res.get("error"):
        return f"## 10. TLS cost\n\nFailed: {res['error']}"
    goal = res.get("goal_read_p50_ratio", GOAL_READ_P50_RATIO)
    read = res.get("read") or {}
    session = res.get("session") or {}
    setup_rows = []
    for what, label in (("connect_ms", "connect"), ("first_ms", "connect + first `SELECT 1`")):
        s = setup_cost(res, what)
        setup_rows.append(
            [
                label,
                _ms(s["plain_p50"]),
                _ms(s["tls_p50"]),
                _x(s["ratio_p50"]),
                _ms(s["extra_p50"]),
                _ms(s["plain_p99"]),
                _ms(s["tls_p99"]),
            ]
        )
    failed = {p: (res.get("setup") or {}).get(p, {}).get("failed", 0) for p in PATHS}
    read_rows = [
        [
            "`SELECT v FROM bench_kv WHERE k = $1`",
            fmt(read.get("plain_p50_ms"), "ms", 3),
            fmt(read.get("tls_p50_ms"), "ms", 3),
            fmt_ratio(read.get("ratio_p50")),
            fmt(read.get("plain_p99_ms"), "ms", 3),
            fmt(read.get("tls_p99_ms"), "ms", 3),
            fmt_ratio(read.get("ratio_p99")),
            verdict(ok(res)),
        ]
    ]
    return "\n".join(
        [
            "## 10. TLS cost",
            "",
            figure_meta(res),
            "",
            (
                "The fleet refuses plain TCP, so this runs on a throw-away PostgreSQL of its own with the "
                "fleet's TLS settings (EC P-256 certificate from a CA made for the run, TLS ≥ 1.2, "
                "scram-sha-256) whose pg_hba has both `hostssl` and `hostnossl`, behind one HAProxy in TCP "
                "mode with dbfleet's defaults (bench/fig_tls.py). Both paths dial the same HAProxy port as "
                f"the same user: `sslmode=disable` against `sslmode=verify-full` with the CA "
                f"(the session: {session.get('version') or '?'}, {session.get('cipher') or '?'}). psycopg 3."
            ),
            "",
            (
                f"**Connection setup.** {res.get('setup_connections')} connections of each path, one after "
                "another, alternating; each timed to `connect()` returning (TLS handshake and SCRAM) and "
                "to the answer of a first `SELECT 1`, then closed. Failed: "
                + ", ".join(f"{p} {failed[p]}" for p in PATHS)
                + "."
            ),
            "",
            table(
                [
                    "time to",
                    "p50 plain",
                    "p50 TLS",
                    "p50 ratio",
                    "TLS adds (p50)",
                    "p99 plain",
                    "p99 TLS",
                ],
                setup_rows,
            ),
            "",
            (
                f"**Point read** on one persistent connection per path (1,000-row table, random key): "
                f"{res.get('runs')} runs of {res.get('queries_per_run')} queries per path, back to back in "
                "alternating order after 100 warm-up queries each; p50/p99 per run, median (min–max) over "
                f"runs. Goal: p50 with TLS < {goal}× without."
            ),
            "",
            table(
                [
                    "query",
                    "p50 plain",
                    "p50 TLS",
                    "p50 ratio",
                    "p99 plain",
                    "p99 TLS",
                    "p99 ratio",
                    f"p50 < {goal}×",
                ],
                read_rows,
            ),
        ]
    )
