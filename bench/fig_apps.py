"""Figure 8: applications on the fleet — read-your-writes through dbfleet.client, and
the pooler (PgBouncer) next to the direct endpoint.

One fleet of one group (eu: fra primary, lhr and arn replicas) in its own
bench.fleetenv environment, brought up from nothing and destroyed at the end, also on
failure. Everything is measured from lhr, a replica region, with psycopg 3 in this
process:

a. Read-your-writes: `ryw_iterations` write-then-read iterations of each of two kinds,
   alternating so that drifting load hits both alike. Each writes a row through lhr's
   write endpoint (the primary) and reads it back on one long-lived connection to
   lhr's read endpoint (its replica), as an app with a pool does:
   - plain: commit, then read at once; a read that misses the row is stale;
   - token: `Fleet.commit_token` (commit, then the primary's WAL position), then
     `Fleet.wait_for` on the read connection, then the read; past max_wait the read
     goes to the write endpoint, as `Fleet.read` does.
b. Connection setup: connections one after another, alternating direct (lhr's read
   endpoint: HAProxy, then the replica, which forks a backend per connection) and
   pooled (lhr's PgBouncer, database `app_read`), each timed to `connect()` returning
   and to the answer of a first `SELECT 1`.
c. Throughput at 200 clients: 200 threads each connect once, wait until all have
   tried, then run `SELECT 1` in a loop for a few seconds; direct and pooled in ABBA
   order. The replica accepts `max_connections = 100` (3 reserved for the superuser):
   on the direct path the clients past that are refused, and counted.

Every loop is bounded in count and in time. Both paths connect with
`prepare_threshold=None` (PgBouncer 1.18 in transaction mode needs it; the direct path
too, so that the comparison is of the path alone). The URIs come from the proxies
stack's secret outputs, read without the benchmark's command log (it keeps stdout),
and stay in this process.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import psycopg

from bench import procs
from bench.context import Ctx
from bench.fleetenv import FleetEnv
from bench.markdown import figure_meta, fmt, fmt_ratio, has_value, num, table, verdict
from bench.stats import Summary, paired_ratios, percentile
from dbfleet.client import Fleet, FleetConfig, redact
from tests.fleets import default_fleet_text

GROUP = "eu"
REGION = "lhr"  # a replica region of GROUP
GOAL_STALE = 0
RYW_ITERATIONS = 1000  # of each kind
RYW_MAX_S = 300.0
SETUP_CONNECTIONS = 200  # of each path
SETUP_MAX_S = 180.0
CLIENTS = 200
THROUGHPUT_S = 4.0  # each client's query loop
THROUGHPUT_ORDER = ("direct", "pooled", "pooled", "direct")  # ABBA: drift hits both alike
MAX_QUERIES_PER_CLIENT = 100_000
START_TIMEOUT_S = 90.0  # for all clients to have tried to connect
CONNECT = {"connect_timeout": 10, "prepare_threshold": None}
PATHS = ("direct", "pooled")

TABLE = "bench_ryw"


# --------------------------------------------------------------------------- measuring


def dist(values: Iterable[float]) -> dict:
    """p50, p95, p99, max and count of a list of samples (NaN when empty)."""
    xs = [float(v) for v in values]
    return {
        "p50": percentile(xs, 50),
        "p95": percentile(xs, 95),
        "p99": percentile(xs, 99),
        "max": max(xs) if xs else math.nan,
        "n": len(xs),
    }


_SERVER_AT = re.compile(r'connection to server at "[^"]*", port \d+ failed: ')


def _error(exc: BaseException) -> str:
    """An error as one short line, without the address (it differs run to run) and with
    any password masked (psycopg's messages carry none, but a conninfo could)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(_SERVER_AT.sub("", text))[:200]


@dataclass(frozen=True)
class AppEndpoints:
    """What the figure connects to: lhr's client configuration (direct read and write
    URIs) and lhr's pooled read URI."""

    config: FleetConfig
    pooled_read: str

    def __repr__(self) -> str:
        return f"AppEndpoints({self.config!r}, pooled_read={redact(self.pooled_read)!r})"

    @property
    def setup_uris(self) -> dict[str, str]:
        return {"direct": self.config.read_url, "pooled": self.pooled_read}


def stack_secrets(fe: FleetEnv, stack: str) -> dict:
    """A stack's outputs, secrets included, read without a log (procs logs stdout)."""
    t = procs.run(
        ["pulumi", "stack", "output", "--json", "--show-secrets", "-s", stack, "--non-interactive"],
        env=fe.env,
        cwd=fe.project,
        ok_codes=None,
        timeout=300,
    )
    if t.returncode != 0:
        # Its output is not shown: it may hold the secrets it was asked for.
        raise RuntimeError(f"pulumi stack output -s {stack} exited {t.returncode}")
    return json.loads(t.stdout or "{}")


def endpoints(fe: FleetEnv) -> AppEndpoints:
    primary = fe.outputs(f"replicas-{GROUP}")["primary_region"]
    if primary == REGION:
        raise RuntimeError(f"{REGION} is the primary region: the figure needs a replica region")
    proxies = stack_secrets(fe, f"proxies-{GROUP}")
    direct = proxies["connection_uris"][REGION]
    config = FleetConfig(
        region=REGION,
        primary_region=primary,
        read_url=direct["read"],
        write_url=direct["write"],
        scope=f"{fe.name}/{GROUP}",
    )
    return AppEndpoints(config, proxies["pooled_connection_uris"][REGION]["read"])


def _iteration(fleet: Fleet, w: psycopg.Connection, r: psycopg.Connection, kind: str) -> dict:
    """One write-then-read; times in ms. `w` is in a transaction after the INSERT;
    `r` is in autocommit (wait_for runs outside a transaction)."""
    (row_id,) = w.execute(f"INSERT INTO {TABLE} DEFAULT VALUES RETURNING id").fetchone()
    token = None
    t0 = time.perf_counter()
    if kind == "token":
        token = fleet.commit_token(w)
    else:
        w.commit()
    t1 = time.perf_counter()
    caught_up = token is None or fleet.wait_for(r, token)
    t2 = time.perf_counter()
    query = f"SELECT 1 FROM {TABLE} WHERE id = %s"
    if caught_up:
        seen = r.execute(query, (row_id,)).fetchone()
    else:  # past max_wait: the write endpoint, as Fleet.read does
        with fleet.connect_write(autocommit=True) as p:
            seen = p.execute(query, (row_id,)).fetchone()
    t3 = time.perf_counter()
    return {
        "write_ms": (t1 - t0) * 1000,
        "wait_ms": (t2 - t1) * 1000,
        "read_ms": (t3 - t2) * 1000,
        "stale": seen is None,
        "fallback": not caught_up,
    }


def read_your_writes(fleet: Fleet, n: int, max_s: float) -> dict[str, list[dict]]:
    """`n` iterations of each kind (fewer when `max_s` runs out), alternating."""
    rows: dict[str, list[dict]] = {"plain": [], "token": []}
    with fleet.connect_write() as w, fleet.connect_read(autocommit=True) as r:
        w.execute(
            f"CREATE TABLE IF NOT EXISTS {TABLE} "
            "(id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
        # The replica must have the table before the first plain read of it.
        if not fleet.wait_for(r, fleet.commit_token(w), max_wait=30):
            raise RuntimeError(f"{REGION}'s replica did not replay CREATE TABLE within 30 s")
        deadline = time.monotonic() + max_s
        for i in range(n):
            if time.monotonic() > deadline:
                break
            for kind in ("plain", "token") if i % 2 == 0 else ("token", "plain"):
                rows[kind].append(_iteration(fleet, w, r, kind))
        w.execute(f"DROP TABLE {TABLE}")
        w.commit()
    return rows


def summarize_ryw(rows: Mapping[str, list[dict]]) -> dict:
    plain, token = rows.get("plain") or [], rows.get("token") or []
    return {
        "plain": {
            "n": len(plain),
            "stale": sum(r["stale"] for r in plain),
            "read_ms": dist(r["read_ms"] for r in plain),
            "write_ms": dist(r["write_ms"] for r in plain),
        },
        "token": {
            "n": len(token),
            "stale": sum(r["stale"] for r in token),
            "fallbacks": sum(r["fallback"] for r in token),
            "wait_ms": dist(r["wait_ms"] for r in token),
            "read_ms": dist(r["wait_ms"] + r["read_ms"] for r in token),
            "write_ms": dist(r["write_ms"] for r in token),
        },
    }


def setup_times(uris: Mapping[str, str], n: int, max_s: float) -> dict:
    """`n` connections of each path, one after another, alternating which goes first."""
    samples = {p: {"connect_ms": [], "first_ms": []} for p in uris}
    errors: dict[str, Counter] = {p: Counter() for p in uris}
    deadline = time.monotonic() + max_s
    for i in range(n):
        if time.monotonic() > deadline:
            break
        for path in list(uris) if i % 2 == 0 else list(reversed(list(uris))):
            t0 = time.perf_counter()
            try:
                conn = psycopg.connect(uris[path], autocommit=True, **CONNECT)
            except psycopg.Error as exc:
                errors[path][_error(exc)] += 1
                continue
            try:
                t1 = time.perf_counter()
                conn.execute("SELECT 1").fetchone()
                t2 = time.perf_counter()
            finally:
                conn.close()
            samples[path]["connect_ms"].append((t1 - t0) * 1000)
            samples[path]["first_ms"].append((t2 - t0) * 1000)
    return {
        p: {
            "connect_ms": dist(s["connect_ms"]),
            "first_ms": dist(s["first_ms"]),
            "failed": sum(errors[p].values()),
            "errors": dict(errors[p]),
        }
        for p, s in samples.items()
    }


def throughput(
    uri: str,
    clients: int,
    seconds: float,
    *,
    connect: Callable[..., psycopg.Connection] = psycopg.connect,
) -> dict:
    """`clients` threads: each connects once; when all have tried, each runs `SELECT 1`
    for `seconds` (at most MAX_QUERIES_PER_CLIENT). Queries per second over the window
    from the start signal to the last client's last answer."""
    lock = threading.Lock()
    all_tried = threading.Event()
    go = threading.Event()
    tried = 0
    start: list[float] = []
    done: list[dict] = []

    def client() -> None:
        nonlocal tried
        res: dict = {"connect_ms": None, "queries": 0, "lat": [], "error": "", "ended": None}
        conn = None
        t0 = time.perf_counter()
        try:
            conn = connect(uri, autocommit=True, **CONNECT)
            res["connect_ms"] = (time.perf_counter() - t0) * 1000
        except psycopg.Error as exc:
            res["refused"] = _error(exc)
        finally:
            with lock:
                tried += 1
                if tried == clients:
                    all_tried.set()
        try:
            if conn is not None and go.wait(timeout=START_TIMEOUT_S + 30):
                end = start[0] + seconds
                while res["queries"] < MAX_QUERIES_PER_CLIENT and time.perf_counter() < end:
                    q0 = time.perf_counter()
                    conn.execute("SELECT 1").fetchone()
                    res["lat"].append((time.perf_counter() - q0) * 1000)
                    res["queries"] += 1
                res["ended"] = time.perf_counter()
        except psycopg.Error as exc:
            res["error"] = _error(exc)
        finally:
            if conn is not None:
                conn.close()
            with lock:
                done.append(res)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t_spawn = time.perf_counter()
    for t in threads:
        t.start()
    everyone = all_tried.wait(timeout=START_TIMEOUT_S)
    connected_s = time.perf_counter() - t_spawn
    start.append(time.perf_counter())
    go.set()
    join_by = time.monotonic() + seconds + 150
    for t in threads:
        t.join(timeout=max(0.0, join_by - time.monotonic()))
    with lock:
        rows = list(done)
    ended = [r["ended"] for r in rows if r["ended"] is not None]
    window = (max(ended) - start[0]) if ended else math.nan
    queries = sum(r["queries"] for r in rows)
    return {
        "clients": clients,
        "seconds": seconds,
        "connected": sum(r["connect_ms"] is not None for r in rows),
        "refused": sum("refused" in r for r in rows),
        "refusals": dict(Counter(r["refused"] for r in rows if "refused" in r)),
        "errors": dict(Counter(r["error"] for r in rows if r["error"])),
        "unfinished": clients - len(rows),
        "all_tried": everyone,
        "connect_all_s": connected_s,
        "connect_ms": dist(r["connect_ms"] for r in rows if r["connect_ms"] is not None),
        "queries": queries,
        "window_s": window,
        "qps": queries / window if window and not math.isnan(window) else math.nan,
        "query_ms": dist(x for r in rows for x in r["lat"]),
    }


def summarize_throughput(rounds: list[dict]) -> dict:
    """Per path: queries/s (median, min–max over its rounds), the most refused and
    errors in any round; pooled ÷ direct paired round by round in the ABBA order."""
    out: dict = {}
    for path in PATHS:
        mine = [r for r in rounds if r["path"] == path]
        out[path] = {
            "qps": Summary.of(r["qps"] for r in mine),
            "connected": min((r["connected"] for r in mine), default=0),
            "refused": max((r["refused"] for r in mine), default=0),
            "errors": sum(sum(r["errors"].values()) + r["unfinished"] for r in mine),
            "query_ms_p50": Summary.of(r["query_ms"]["p50"] for r in mine),
            "query_ms_p95": Summary.of(r["query_ms"]["p95"] for r in mine),
            "connect_ms_p50": Summary.of(r["connect_ms"]["p50"] for r in mine),
            "connect_ms_p95": Summary.of(r["connect_ms"]["p95"] for r in mine),
            "connect_all_s": Summary.of(r["connect_all_s"] for r in mine),
            "rounds": len(mine),
        }
    direct = [r["qps"] for r in rounds if r["path"] == "direct"]
    pooled = [r["qps"] for r in rounds if r["path"] == "pooled"]
    if direct and len(direct) == len(pooled):
        out["ratio_qps"] = paired_ratios(pooled, direct)
    return out


def run(ctx: Ctx) -> dict:
    fe = FleetEnv(
        "apps",
        fleet_text=lambda name, octet: default_fleet_text(name, octet, groups=(GROUP,)),
        code=ctx.code,
        log_dir=ctx.logs,
    )
    out: dict = {
        "group": GROUP,
        "region": REGION,
        "goal_stale": GOAL_STALE,
        "clients": CLIENTS,
        "throughput_s": THROUGHPUT_S,
    }
    try:
        ctx.say(f"apps: fleet of group {GROUP} up from nothing (127.{fe.octet}.0.0/16)")
        fe.start_vault()
        out["up_s"] = fe.dbfleet("up", "-q", timeout=1800).seconds
        eps = endpoints(fe)
        out["primary"] = eps.config.primary_region
        fleet = Fleet(eps.config, connect_kwargs=CONNECT)
        out["max_wait_s"] = fleet.max_wait
        ctx.say(f"apps: read-your-writes, {RYW_ITERATIONS} iterations of each kind in {REGION}")
        out["ryw"] = summarize_ryw(read_your_writes(fleet, RYW_ITERATIONS, RYW_MAX_S))
        ctx.say(f"apps: connection setup, {SETUP_CONNECTIONS} of each path")
        out["setup"] = setup_times(eps.setup_uris, SETUP_CONNECTIONS, SETUP_MAX_S)
        rounds = []
        for path in THROUGHPUT_ORDER:
            ctx.say(f"apps: {CLIENTS} clients, {path}, SELECT 1 for {THROUGHPUT_S:g} s")
            res = throughput(eps.setup_uris[path], CLIENTS, THROUGHPUT_S)
            rounds.append({"path": path, **res})
            ctx.say(
                f"apps: {path}: {res['connected']} connected, {res['refused']} refused, "
                f"{res['qps']:.0f} queries/s"
            )
        out["rounds"] = rounds
        out["throughput"] = summarize_throughput(rounds)
        return out
    finally:
        problems = fe.close(keep=ctx.keep)
        if problems:
            ctx.say(f"apps: cleanup problems: {problems}")
            out["cleanup_problems"] = problems


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 8 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(res: Mapping) -> tuple[bool | None, bool | None]:
    """(no read with a token was stale, every pooled client was served); None when
    not measured."""
    token = (res.get("ryw") or {}).get("token") or {}
    pooled = (res.get("throughput") or {}).get("pooled") or {}
    return (
        token.get("stale", 0) <= res.get("goal_stale", GOAL_STALE) if token.get("n") else None,
        (pooled.get("refused", 0) == 0 and pooled.get("errors", 0) == 0)
        if pooled.get("rounds")
        else None,
    )


def _ms(v, digits: int = 2) -> str:
    return f"{num(v):.{digits}f} ms" if has_value(v) else "–"


def _p50_p95(d: Mapping | None, digits: int = 2) -> str:
    d = d or {}
    if not d.get("n"):
        return "–"
    return f"p50 {_ms(d.get('p50'), digits)}, p95 {_ms(d.get('p95'), digits)}"


def _stale(kind: Mapping) -> str:
    n = kind.get("n") or 0
    if not n:
        return "–"
    return f"{kind.get('stale', 0)} of {n} ({100 * kind.get('stale', 0) / n:.1f} %)"


def _qps(summary: Mapping | None) -> str:
    return fmt(summary, "queries/s", 0)


def _p50_ratio(a: Mapping | None, b: Mapping | None) -> str:
    x, y = num((a or {}).get("p50")), num((b or {}).get("p50"))
    return f"{x / y:.2f}×" if has_value(x) and has_value(y) and y else "–"


def summary_rows(res: Mapping) -> list[list[str]]:
    if not res.get("ryw") and not res.get("setup") and not res.get("throughput"):
        return []
    ryw_ok, pool_ok = ok(res)
    ryw = res.get("ryw") or {}
    plain, token = ryw.get("plain") or {}, ryw.get("token") or {}
    setup = res.get("setup") or {}
    direct_setup = (setup.get("direct") or {}).get("connect_ms")
    pooled_setup = (setup.get("pooled") or {}).get("connect_ms")
    tp = res.get("throughput") or {}
    direct_tp, pooled_tp = tp.get("direct") or {}, tp.get("pooled") or {}
    region = res.get("region", REGION)
    clients = res.get("clients", CLIENTS)
    ryw_result = (
        f"{_stale(token)} stale; read {_p50_p95(token.get('read_ms'))} "
        f"(the wait: {_p50_p95(token.get('wait_ms'))})"
    )
    setup_baseline = (
        f"direct (HAProxy): {_p50_p95(direct_setup)}; "
        f"p50 ratio {_p50_ratio(pooled_setup, direct_setup)}"
    )
    tp_baseline = (
        f"direct: {_qps(direct_tp.get('qps'))}, {direct_tp.get('refused', '–')} of {clients} "
        "refused (max_connections 100)"
    )
    return [
        [
            f"8a. read-your-writes in {region} (a replica region) with `dbfleet.client`'s token",
            f"{res.get('goal_stale', GOAL_STALE)} stale reads",
            ryw_result,
            f"plain read: {_stale(plain)} stale; {_p50_p95(plain.get('read_ms'))}",
            verdict(ryw_ok),
        ],
        [
            f"8b. connection setup to {region}'s read endpoint, pooled (PgBouncer)",
            "–",
            _p50_p95(pooled_setup),
            setup_baseline,
            "–",
        ],
        [
            f"8c. `SELECT 1` throughput at {clients} clients, pooled",
            f"all {clients} clients served",
            f"{_qps(pooled_tp.get('qps'))}; {pooled_tp.get('connected', '–')} of {clients} connected",
            tp_baseline,
            verdict(pool_ok),
        ],
    ]


def section(res: Mapping) -> str:
    if not res:
        return ""
    title = "## 8. Applications: read-your-writes and the pooler"
    if res.get("error"):
        return f"{title}\n\nFailed: {res['error']}"
    ryw_ok, pool_ok = ok(res)
    region = res.get("region", REGION)
    clients = res.get("clients", CLIENTS)
    ryw = res.get("ryw") or {}
    plain, token = ryw.get("plain") or {}, ryw.get("token") or {}
    up = res.get("up_s")
    parts = [
        title,
        "",
        figure_meta(res),
        "",
        (
            f"One fleet of group `{res.get('group', GROUP)}` (primary {res.get('primary', '?')}), "
            f"brought up from nothing"
            + (f" in {up:.1f} s" if isinstance(up, int | float) else "")
            + f" and destroyed at the end; everything measured from {region}, a replica region, with "
            "psycopg 3 in the benchmark's process (`python -m bench --only apps`; `bench/fig_apps.py`). "
            "Both paths connect with `prepare_threshold=None` (the pooler needs it; the direct path too, "
            "so that the comparison is of the path alone)."
        ),
        "",
        (
            f"**Read-your-writes.** {plain.get('n', 0)} write-then-read iterations of each kind, "
            "alternating: a row inserted through the region's write endpoint (the primary), then read "
            "back on one long-lived connection to the region's read endpoint (its replica). *Plain*: "
            "commit, read at once. *Token*: `fleet.commit_token` (commit, then the primary's WAL "
            f"position), `fleet.wait_for` on the read connection (max_wait {res.get('max_wait_s', 0.5):g} s, "
            "then the write endpoint, as `fleet.read` does), then the read. Times per iteration; the "
            f"read with a token includes its wait. Goal: {res.get('goal_stale', GOAL_STALE)} stale reads "
            "with a token."
        ),
        "",
        table(
            [
                "read",
                "stale",
                "the wait",
                "read (p50, p95)",
                "write side: commit (+ token)",
                "verdict",
            ],
            [
                [
                    "plain (no token)",
                    _stale(plain),
                    "",
                    _p50_p95(plain.get("read_ms")),
                    _p50_p95(plain.get("write_ms")),
                    "",
                ],
                [
                    "**with a token**",
                    _stale(token)
                    + (f"; {token['fallbacks']} fell back" if token.get("fallbacks") else ""),
                    _p50_p95(token.get("wait_ms")),
                    _p50_p95(token.get("read_ms")),
                    _p50_p95(token.get("write_ms")),
                    verdict(ryw_ok),
                ],
            ],
        ),
        "",
        _setup(res),
        "",
        _throughput(res, clients, pool_ok),
    ]
    if res.get("cleanup_problems"):
        parts += [
            "",
            "**Left behind** (cleanup failed): "
            + "; ".join(" ".join(str(p).split()) for p in res["cleanup_problems"]),
        ]
    return "\n".join(parts)


def _setup(res: Mapping) -> str:
    setup = res.get("setup") or {}
    rows = []
    for path, label in (
        ("direct", "direct: HAProxy's read listener, then the replica"),
        ("pooled", "pooled: PgBouncer (`app_read`), then HAProxy"),
    ):
        s = setup.get(path) or {}
        rows.append(
            [
                label,
                _p50_p95(s.get("connect_ms")),
                _p50_p95(s.get("first_ms")),
                str(s.get("failed", "–")),
            ]
        )
    rows.append(
        [
            "pooled ÷ direct (p50)",
            _p50_ratio(
                (setup.get("pooled") or {}).get("connect_ms"),
                (setup.get("direct") or {}).get("connect_ms"),
            ),
            _p50_ratio(
                (setup.get("pooled") or {}).get("first_ms"),
                (setup.get("direct") or {}).get("first_ms"),
            ),
            "",
        ]
    )
    n = ((setup.get("direct") or {}).get("connect_ms") or {}).get("n", 0)
    return "\n".join(
        [
            (
                f"**Connection setup.** {n} connections of each path to {res.get('region', REGION)}'s read "
                "endpoint, one after another, alternating; each timed to `connect()` returning (SCRAM "
                "included) and to the answer of a first `SELECT 1`, then closed."
            ),
            "",
            table(["path", "connect", "to the first answer", "failed"], rows),
        ]
    )


def _throughput(res: Mapping, clients: int, pool_ok: bool | None) -> str:
    tp = res.get("throughput") or {}
    rows = []
    for path in PATHS:
        t = tp.get(path) or {}
        rows.append(
            [
                path,
                f"{t.get('connected', '–')} / {t.get('refused', '–')}",
                f"{fmt(t.get('connect_ms_p50'), 'ms', 1)} / {fmt(t.get('connect_ms_p95'), 'ms', 1)}",
                _qps(t.get("qps")),
                f"{fmt(t.get('query_ms_p50'), 'ms', 2)} / {fmt(t.get('query_ms_p95'), 'ms', 2)}",
                str(t.get("errors", "–")),
                verdict(pool_ok) if path == "pooled" else "",
            ]
        )
    rows.append(["pooled ÷ direct", "", "", fmt_ratio(tp.get("ratio_qps")), "", "", ""])
    refusals = Counter()
    for r in res.get("rounds") or []:
        if r.get("path") == "direct":
            refusals.update(r.get("refusals") or {})
    text = [
        (
            f"**{clients} clients at once.** {clients} threads each connect once; when all have tried, "
            f"each runs `SELECT 1` in a loop for {res.get('throughput_s', THROUGHPUT_S):g} s. Rounds in "
            f"the order {', '.join(r.get('path', '?') for r in res.get('rounds') or []) or '–'}; "
            "queries/s over the window from the start signal to the last answer, median (min–max) of "
            "the rounds. The replica accepts `max_connections = 100`, 3 of them reserved for the "
            f"superuser. Goal: every one of the {clients} pooled clients served."
        ),
        "",
        table(
            [
                "path",
                "connected / refused (worst round)",
                "connect p50 / p95, all at once",
                "queries/s",
                "query p50 / p95",
                "errors",
                "verdict",
            ],
            rows,
        ),
    ]
    if refusals:
        text += [
            "",
            "Direct refusals, over its rounds: "
            + "; ".join(f"{count} × `{msg}`" for msg, count in refusals.most_common(3))
            + ".",
        ]
    return "\n".join(text)
