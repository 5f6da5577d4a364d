"""Figure 4: what the region proxies (HAProxy, TCP mode) cost per query.

For every region of one group: a point read (`SELECT v FROM bench_kv WHERE k = $1`)
through the region's read endpoint against the same query straight to that region's
node; a one-row INSERT through the region's write endpoint against straight to the
primary. psycopg 3, one persistent connection per path, autocommit, as the
application user. Each run is one block of N queries per path, the two paths back to
back in alternating order; p50/p99 per block, then median (min–max) over blocks.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import psycopg

from bench.context import Ctx
from bench.fleetenv import FleetEnv, free_ports
from bench.markdown import figure_meta, fmt, fmt_ratio, med, table, verdict
from bench.stats import Summary, percentile

GOAL_READ_P50_RATIO = 1.3
ROWS = 1000
WARMUP = 100


def _connect(hostport: str, db: str, user: str, password: str, **kw: str) -> psycopg.Connection:
    """One autocommit connection; `kw` adds libpq parameters (sslmode, sslrootcert)."""
    host, port = hostport.rsplit(":", 1)
    return psycopg.connect(
        host=host,
        port=int(port),
        dbname=db,
        user=user,
        password=password,
        autocommit=True,
        connect_timeout=10,
        **kw,
    )


def _block(conn: psycopg.Connection, sql: str, params, n: int) -> list[float]:
    """n executions of sql; each latency in milliseconds."""
    lat = []
    with conn.cursor() as cur:
        for _ in range(n):
            args = params()
            t0 = time.perf_counter_ns()
            cur.execute(sql, args)
            if cur.description is not None:
                cur.fetchall()
            lat.append((time.perf_counter_ns() - t0) / 1e6)
    return lat


def _compare(
    ctx: Ctx,
    a: psycopg.Connection,
    b: psycopg.Connection,
    sql: str,
    params,
    names: tuple[str, str] = ("proxy", "direct"),
) -> dict:
    """a = through the proxy, b = direct (or whichever two paths `names` calls them;
    ratios are a ÷ b). Blocks alternate which path goes first."""
    na, nb = names
    _block(a, sql, params, WARMUP)
    _block(b, sql, params, WARMUP)
    p50: dict[str, list[float]] = {na: [], nb: []}
    p99: dict[str, list[float]] = {na: [], nb: []}
    ratio50, ratio99 = [], []
    n = ctx.plan.proxy_queries
    for i in range(ctx.plan.runs):
        order = [(na, a), (nb, b)] if i % 2 == 0 else [(nb, b), (na, a)]
        got = {name: _block(conn, sql, params, n) for name, conn in order}
        for name, lat in got.items():
            p50[name].append(percentile(lat, 50))
            p99[name].append(percentile(lat, 99))
        ratio50.append(p50[na][-1] / p50[nb][-1])
        ratio99.append(p99[na][-1] / p99[nb][-1])
    return {
        f"{na}_p50_ms": Summary.of(p50[na]),
        f"{na}_p99_ms": Summary.of(p99[na]),
        f"{nb}_p50_ms": Summary.of(p50[nb]),
        f"{nb}_p99_ms": Summary.of(p99[nb]),
        "ratio_p50": Summary.of(ratio50),
        "ratio_p99": Summary.of(ratio99),
    }


def run(ctx: Ctx, fe: FleetEnv, group: str = "eu") -> dict:
    replicas = fe.outputs(f"replicas-{group}")
    proxies = fe.outputs(f"proxies-{group}")
    pw = fe.secrets(group)["app_password"]
    db, user = replicas.get("app_db", "app"), replicas.get("app_user", "app")
    nodes = replicas["nodes"]
    primary_region = replicas["primary_region"]
    primary = f"{nodes[primary_region]['host']}:{nodes[primary_region]['port']}"
    regions = sorted(nodes)
    with _connect(primary, db, user, pw) as c:
        c.execute("DROP TABLE IF EXISTS bench_kv")
        c.execute("CREATE TABLE bench_kv (k int PRIMARY KEY, v text NOT NULL)")
        c.execute(
            "INSERT INTO bench_kv SELECT g, md5(g::text) FROM generate_series(1, %s) g", (ROWS,)
        )
        c.execute("CREATE TABLE IF NOT EXISTS bench_w (id bigserial PRIMARY KEY, v text NOT NULL)")
    _wait_replicated(nodes, db, user, pw)
    rnd = random.Random(7)
    out: dict = {
        "group": group,
        "primary": primary_region,
        "queries_per_run": ctx.plan.proxy_queries,
        "runs": ctx.plan.runs,
        "goal_read_p50_ratio": GOAL_READ_P50_RATIO,
        "reads": {},
        "writes": {},
    }
    for region in regions:
        ctx.say(f"proxy cost: {group}/{region}")
        node = f"{nodes[region]['host']}:{nodes[region]['port']}"
        with (
            _connect(proxies["read_endpoints"][region], db, user, pw) as via,
            _connect(node, db, user, pw) as direct,
        ):
            out["reads"][region] = _compare(
                ctx,
                via,
                direct,
                "SELECT v FROM bench_kv WHERE k = %s",
                lambda: (rnd.randint(1, ROWS),),
            )
            out["reads"][region]["role"] = nodes[region]["role"]
        with (
            _connect(proxies["write_endpoints"][region], db, user, pw) as via,
            _connect(primary, db, user, pw) as direct,
        ):
            out["writes"][region] = _compare(
                ctx,
                via,
                direct,
                "INSERT INTO bench_w (v) VALUES (%s)",
                lambda: (f"{rnd.random():.12f}",),
            )
    # Is the proxy's cost a fixed hop per round trip? The same comparison with a heavier
    # read (100 rows) on one replica region: a fixed hop adds the same microseconds.
    region = next((r for r in regions if nodes[r]["role"] == "replica"), regions[0])
    node = f"{nodes[region]['host']}:{nodes[region]['port']}"
    ctx.say(f"proxy cost: {group}/{region}, 100-row reads")
    with (
        _connect(proxies["read_endpoints"][region], db, user, pw) as via,
        _connect(node, db, user, pw) as direct,
    ):
        heavy = _compare(
            ctx,
            via,
            direct,
            "SELECT k, v FROM bench_kv WHERE k BETWEEN %(k)s AND %(k)s + 99",
            lambda: {"k": rnd.randint(1, ROWS - 100)},
        )
    heavy["region"] = region
    out["range_read"] = heavy
    ctx.say(f"proxy cost: HAProxy settings against {group}/{region}")
    out["settings"] = hop_experiment(ctx, node, db, user, pw, rnd)
    out["settings"]["region"] = region
    with _connect(primary, db, user, pw) as c:
        c.execute("DROP TABLE IF EXISTS bench_kv")
        c.execute("DROP TABLE IF EXISTS bench_w")
    return out


# HAProxy settings that could shorten the hop, each in a standalone HAProxy with
# dbfleet's TCP defaults in front of the same node ("dbfleet": no extra setting).
# `busy-polling` never lets the poller sleep (one core spun per thread), so while any
# block is measured every HAProxy but the one measured is paused (SIGSTOP).
SETTINGS = {
    "dbfleet": "",
    "nbthread 1": "    nbthread 1\n",
    "tune.sched.low-latency on": "    tune.sched.low-latency on\n",
    "nbthread 1 + busy-polling": "    nbthread 1\n    busy-polling\n",
}


def _haproxy_cfg(extra: str, port: int, node: str) -> str:
    return (
        "global\n    maxconn 1024\n"
        + extra
        + "defaults\n    mode tcp\n    timeout connect 3s\n    timeout client 1h\n"
        "    timeout server 1h\n"
        f"listen read\n    bind 127.0.0.1:{port}\n    server n {node}\n"
    )


def hop_experiment(ctx: Ctx, node: str, db: str, user: str, pw: str, rnd) -> dict:
    """The point read straight to `node` and through one standalone HAProxy per entry
    of SETTINGS, blocks in a shuffled order per round: does any setting shorten the hop?
    The HAProxies are this function's own processes, stopped by pid."""
    tmp = Path(tempfile.mkdtemp(prefix="dbfleet-bench-haproxy-"))
    procs: dict[str, tuple[subprocess.Popen, int]] = {}
    conns: dict[str, psycopg.Connection] = {}
    sql = "SELECT v FROM bench_kv WHERE k = %s"
    try:
        for (name, extra), port in zip(SETTINGS.items(), free_ports(len(SETTINGS)), strict=True):
            cfg = tmp / f"{len(procs)}.cfg"
            procs[name] = (start_haproxy(cfg, _haproxy_cfg(extra, port, node)), port)
        conns["direct"] = _connect(node, db, user, pw)
        for name, (proc, port) in procs.items():
            conns[name] = _connect_when_up(f"127.0.0.1:{port}", db, user, pw, proc)
        for name, c in conns.items():
            _run_only(procs, {name})
            _block(c, sql, lambda: (rnd.randint(1, ROWS),), WARMUP)
        p50: dict[str, list[float]] = {name: [] for name in conns}
        for _ in range(2 * ctx.plan.runs):
            order = list(conns)
            rnd.shuffle(order)
            for name in order:
                _run_only(procs, {name})
                lat = _block(
                    conns[name], sql, lambda: (rnd.randint(1, ROWS),), ctx.plan.proxy_queries // 2
                )
                p50[name].append(percentile(lat, 50))
        direct = p50.pop("direct")
        return {
            "queries_per_block": ctx.plan.proxy_queries // 2,
            "blocks": 2 * ctx.plan.runs,
            "direct_p50_ms": Summary.of(direct),
            "variants": {
                name: {
                    "p50_ms": Summary.of(v),
                    "ratio_p50": Summary.of([a / b for a, b in zip(v, direct, strict=True)]),
                    "hop_us": Summary.of([(a - b) * 1000 for a, b in zip(v, direct, strict=True)]),
                }
                for name, v in p50.items()
            },
        }
    finally:
        for c in conns.values():
            c.close()
        _run_only(procs, set(procs))
        for proc, _port in procs.values():
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def start_haproxy(cfg: Path, text: str) -> subprocess.Popen:
    """A standalone HAProxy in the foreground from config `text` (written to `cfg`),
    logging next to it; the caller stops it with `stop`."""
    cfg.write_text(text)
    with cfg.with_suffix(".log").open("w") as log:
        return subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=log, stderr=log)


def stop(proc: subprocess.Popen) -> None:
    """Ends a process this module started, by its pid: TERM, then KILL after 10 s."""
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _run_only(procs: dict, names: set[str]) -> None:
    """Lets only the HAProxies in `names` run; the others are paused (SIGSTOP)."""
    for name, (proc, _port) in procs.items():
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT if name in names else signal.SIGSTOP)


def _connect_when_up(
    hostport: str,
    db: str,
    user: str,
    pw: str,
    proc: subprocess.Popen,
    timeout: float = 10,
    **kw: str,
) -> psycopg.Connection:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy for {hostport} exited with {proc.returncode}")
        try:
            return _connect(hostport, db, user, pw, **kw)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _wait_replicated(nodes: dict, db: str, user: str, pw: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for n in nodes.values():
        hostport = f"{n['host']}:{n['port']}"
        while True:
            try:
                with _connect(hostport, db, user, pw) as c:
                    row = c.execute("SELECT count(*) FROM bench_kv").fetchone()
                    if row and row[0] == ROWS:
                        break
            except psycopg.errors.UndefinedTable:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"bench_kv did not reach {hostport} within {timeout} s")
            time.sleep(0.2)


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 4 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(px: Mapping) -> bool | None:
    reads = px.get("reads") or {}
    if not reads:
        return None
    goal = px.get("goal_read_p50_ratio", GOAL_READ_P50_RATIO)
    return all(med(r["ratio_p50"]) < goal for r in reads.values())


def summary_rows(px: Mapping) -> list[list[str]]:
    if not px.get("reads"):
        return []
    worst = max(px["reads"].items(), key=lambda kv: med(kv[1]["ratio_p50"]))
    return [
        [
            "4. Proxy cost: read p50 via read endpoint ÷ direct to the node",
            f"< {px.get('goal_read_p50_ratio', GOAL_READ_P50_RATIO)}× at p50",
            f"worst region {worst[0]}: {fmt_ratio(worst[1]['ratio_p50'])}",
            f"direct p50 {fmt(worst[1]['direct_p50_ms'], 'ms', 3)}",
            verdict(ok(px)),
        ]
    ]


def section(px: Mapping) -> str:
    if not px:
        return ""
    if px.get("error"):
        return f"## 4. Proxy cost\n\nFailed: {px['error']}"
    goal = px.get("goal_read_p50_ratio", GOAL_READ_P50_RATIO)
    reads = []
    for region, r in (px.get("reads") or {}).items():
        reads.append(
            [
                f"{px.get('group')}/{region} ({r.get('role', '?')})",
                fmt(r["proxy_p50_ms"], "ms", 3),
                fmt(r["direct_p50_ms"], "ms", 3),
                fmt_ratio(r["ratio_p50"]),
                fmt(r["proxy_p99_ms"], "ms", 3),
                fmt(r["direct_p99_ms"], "ms", 3),
                fmt_ratio(r["ratio_p99"]),
                verdict(med(r["ratio_p50"]) < goal),
            ]
        )
    writes = []
    for region, r in (px.get("writes") or {}).items():
        writes.append(
            [
                f"{px.get('group')}/{region} → {px.get('primary')}",
                fmt(r["proxy_p50_ms"], "ms", 3),
                fmt(r["direct_p50_ms"], "ms", 3),
                fmt_ratio(r["ratio_p50"]),
                fmt(r["proxy_p99_ms"], "ms", 3),
                fmt(r["direct_p99_ms"], "ms", 3),
                fmt_ratio(r["ratio_p99"]),
            ]
        )
    parts = [
        "## 4. Proxy cost",
        "",
        figure_meta(px),
        "",
        (
            f"psycopg 3, one persistent connection per path, autocommit, as the application user, on the "
            f"converged default fleet (group `{px.get('group')}`). Reads: `SELECT v FROM bench_kv WHERE k = $1` "
            f"(1,000-row table, random key) through the region's read endpoint vs straight to the region's "
            f"node. Writes: a one-row `INSERT` through the region's write endpoint vs straight to the "
            f"primary. {px.get('runs')} runs of {px.get('queries_per_run')} queries per path, the two paths back "
            f"to back in alternating order (after 100 warm-up queries each); p50/p99 per run, median (min–max) over runs. "
            f"Goal: read p50 through the proxy < {goal}× direct."
        ),
        "",
        "Reads:",
        "",
        table(
            [
                "region (role)",
                "p50 via proxy",
                "p50 direct",
                "p50 ratio",
                "p99 via proxy",
                "p99 direct",
                "p99 ratio",
                f"p50 < {goal}×",
            ],
            reads,
        ),
        "",
        "Writes:",
        "",
        table(
            [
                "write endpoint → primary",
                "p50 via proxy",
                "p50 direct",
                "p50 ratio",
                "p99 via proxy",
                "p99 direct",
                "p99 ratio",
            ],
            writes,
        ),
    ]
    rr = px.get("range_read") or {}
    if rr:
        parts += [
            "",
            (
                f"Same comparison with a heavier read on {px.get('group')}/{rr.get('region')} "
                "(`SELECT k, v FROM bench_kv WHERE k BETWEEN $1 AND $1 + 99`, 100 rows): p50 via proxy "
                f"{fmt(rr['proxy_p50_ms'], 'ms', 3)}, direct {fmt(rr['direct_p50_ms'], 'ms', 3)}, ratio "
                f"{fmt_ratio(rr['ratio_p50'])}."
            ),
        ]
    st = px.get("settings") or {}
    if ok(px) is not None and st.get("variants"):
        rows = [["straight to the node", fmt(st.get("direct_p50_ms"), "ms", 3), "1×", "–"]]
        for n, v in st["variants"].items():
            rows.append(
                [
                    f"HAProxy, dbfleet's defaults + `{n}`"
                    if n != "dbfleet"
                    else "HAProxy as dbfleet runs it",
                    fmt(v["p50_ms"], "ms", 3),
                    fmt_ratio(v["ratio_p50"]),
                    fmt(v["hop_us"], "µs", 0),
                ]
            )
        parts += [
            "",
            (
                f"HAProxy settings that could shorten the hop, each in a standalone HAProxy in front of "
                f"{st.get('region')}'s node, the same point read, {st.get('blocks')} blocks of "
                f"{st.get('queries_per_block')} queries per path in a shuffled order (bench/fig_proxy.py "
                "`hop_experiment`):"
            ),
            "",
            table(["path", "p50", "÷ direct", "hop (p50 difference)"], rows),
        ]
    return "\n".join(parts)
