"""Figure 5: replication lag of each replica under a steady write load.

pgbench drives the group's primary at a fixed rate (`-R`, one single-row INSERT per
transaction, so transactions/s = writes/s) while a sampler reads, every 100 ms:

- on the primary, `pg_stat_replication`: `replay_lag` per replica (the time from
  the primary flushing WAL to the replica reporting it applied), and the LSN
  distance `pg_current_wal_lsn() - replay_lsn` in bytes;
- on each replica, `clock_timestamp() - pg_last_xact_replay_timestamp()`: the age of
  the newest transaction it has applied (what a reader there sees).

One run = one pgbench run; p50/p99 per replica per run, then median (min–max) over
runs. The baseline is the same measurement under a light load (default 10 writes/s).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping

import psycopg

from bench import procs
from bench.context import PG_BIN, Ctx
from bench.fleetenv import FleetEnv
from bench.markdown import figure_meta, fmt, fmt_ratio, med, scaled, table, verdict
from bench.stats import Summary, paired_ratios, percentile

GOAL_P99_S = 1.0
SAMPLE_S = 0.1
WARMUP_S = 1.0
CLIENTS = 4

_TPS = re.compile(r"tps = ([\d.]+)")
_LAT = re.compile(r"latency average = ([\d.]+) ms")
_SCHED = re.compile(r"rate limit schedule lag: avg ([\d.]+)")
_DONE = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")


def pgbench_numbers(text: str) -> dict[str, float | None]:
    """What pgbench's report says: tps, latency_ms, schedule_lag_ms, transactions, failed
    (None for what it does not say)."""
    return {
        k: (float(m.group(1)) if (m := rx.search(text)) else None)
        for k, rx in (
            ("tps", _TPS),
            ("latency_ms", _LAT),
            ("schedule_lag_ms", _SCHED),
            ("transactions", _DONE),
            ("failed", _FAILED),
        )
    }


def _connect(host: str, port: int, db: str, user: str, password: str) -> psycopg.Connection:
    return psycopg.connect(
        host=host,
        port=port,
        dbname=db,
        user=user,
        password=password,
        autocommit=True,
        connect_timeout=10,
    )


class Sampler(threading.Thread):
    def __init__(self, primary: dict, replicas: dict[str, dict], su_password: str) -> None:
        super().__init__(daemon=True)
        self.primary, self.replicas, self.pw = primary, replicas, su_password
        self.stop = threading.Event()
        self.rows: list[dict] = []  # {t, slot, replay_lag, lsn_bytes}
        self.ages: list[dict] = []  # {t, region, age}
        self.error: str = ""

    def run(self) -> None:
        try:
            p = _connect(
                self.primary["host"], self.primary["port"], "postgres", "postgres", self.pw
            )
            rs = {
                r: _connect(n["host"], n["port"], "postgres", "postgres", self.pw)
                for r, n in self.replicas.items()
            }
            try:
                while not self.stop.is_set():
                    t = time.monotonic()
                    for slot, lag, lsn in p.execute(
                        "SELECT application_name, extract(epoch FROM replay_lag)::float8, "
                        "pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::float8 FROM pg_stat_replication"
                    ).fetchall():
                        self.rows.append(
                            {"t": t, "slot": slot, "replay_lag": lag, "lsn_bytes": lsn}
                        )
                    for region, c in rs.items():
                        (age,) = c.execute(
                            "SELECT extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8"
                        ).fetchone()
                        self.ages.append({"t": t, "region": region, "age": age})
                    self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - t)))
            finally:
                p.close()
                for c in rs.values():
                    c.close()
        except Exception as exc:  # noqa: BLE001 — reported with the figure
            self.error = f"{type(exc).__name__}: {exc}"


def _wal_lsn(primary: dict, pw: str) -> float:
    with _connect(primary["host"], primary["port"], "postgres", "postgres", pw) as c:
        (lsn,) = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8").fetchone()
    return lsn


def one_run(
    ctx: Ctx,
    fe: FleetEnv,
    primary: dict,
    replicas: dict,
    secrets: dict,
    script: str,
    rate: int,
    seconds: int,
) -> dict:
    sampler = Sampler(primary, replicas, secrets["superuser_password"])
    lsn0 = _wal_lsn(primary, secrets["superuser_password"])
    sampler.start()
    env = fe.env
    env["PGPASSWORD"] = secrets["app_password"]
    t0 = time.monotonic()
    pg = procs.run(
        [
            f"{PG_BIN}/pgbench",
            "-n",
            "-f",
            script,
            "-R",
            str(rate),
            "-c",
            str(CLIENTS),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-h",
            primary["host"],
            "-p",
            str(primary["port"]),
            "-U",
            "app",
            "app",
        ],
        env=env,
        timeout=seconds + 120,
        log=ctx.logs / "pgbench.log",
    )
    wall = time.monotonic() - t0
    time.sleep(1.0)  # let the replicas report the last writes
    sampler.stop.set()
    sampler.join()
    lsn1 = _wal_lsn(primary, secrets["superuser_password"])
    found = pgbench_numbers(pg.stdout + pg.stderr)
    start = sampler.rows[0]["t"] if sampler.rows else t0
    t_from, t_to = t0 + WARMUP_S, t0 + seconds
    per_slot: dict[str, dict] = {}
    for slot in sorted({r["slot"] for r in sampler.rows}):
        rows = [r for r in sampler.rows if r["slot"] == slot and t_from <= r["t"] <= t_to]
        lags = [r["replay_lag"] for r in rows if r["replay_lag"] is not None]
        lsn = [r["lsn_bytes"] for r in rows if r["lsn_bytes"] is not None]
        per_slot[slot] = {
            "replay_lag_p50": percentile(lags, 50),
            "replay_lag_p99": percentile(lags, 99),
            "replay_lag_max": max(lags) if lags else None,
            "lsn_p50": percentile(lsn, 50),
            "lsn_p99": percentile(lsn, 99),
            "samples": len(rows),
            "null_samples": len(rows) - len(lags),
        }
    per_region: dict[str, dict] = {}
    for region in replicas:
        ages = [
            a["age"]
            for a in sampler.ages
            if a["region"] == region and t_from <= a["t"] <= t_to and a["age"] is not None
        ]
        per_region[region] = {
            "age_p50": percentile(ages, 50),
            "age_p99": percentile(ages, 99),
            "age_max": max(ages) if ages else None,
            "samples": len(ages),
        }
    return {
        "rate": rate,
        "seconds": seconds,
        "wall": wall,
        "pgbench": found,
        "writes_per_s": (found["transactions"] or 0) / seconds,
        "wal_bytes_per_s": (lsn1 - lsn0) / wall,
        "slots": per_slot,
        "replicas": per_region,
        "sampler_error": sampler.error,
        "sampler_started": start,
    }


def run(ctx: Ctx, fe: FleetEnv, group: str = "eu") -> dict:
    out_nodes = fe.outputs(f"replicas-{group}")
    nodes = out_nodes["nodes"]
    pr = out_nodes["primary_region"]
    primary = {"host": nodes[pr]["host"], "port": int(nodes[pr]["port"])}
    replicas = {r: {"host": n["host"], "port": int(n["port"])} for r, n in nodes.items() if r != pr}
    secrets = fe.secrets(group)
    with _connect(primary["host"], primary["port"], "app", "app", secrets["app_password"]) as c:
        c.execute("DROP TABLE IF EXISTS bench_lag")
        c.execute(
            "CREATE TABLE bench_lag (id bigserial PRIMARY KEY, payload text NOT NULL, "
            "at timestamptz NOT NULL DEFAULT clock_timestamp())"
        )
    script = fe.root / "lag.sql"
    script.write_text("INSERT INTO bench_lag (payload) VALUES (repeat('x', 100));\n")
    loaded, light = [], []
    for i in range(ctx.plan.runs):
        ctx.say(
            f"replication lag run {i + 1}/{ctx.plan.runs}: {ctx.plan.lag_rate} writes/s "
            f"for {ctx.plan.lag_seconds} s, then {ctx.plan.lag_baseline_rate} writes/s"
        )
        loaded.append(
            one_run(
                ctx,
                fe,
                primary,
                replicas,
                secrets,
                str(script),
                ctx.plan.lag_rate,
                ctx.plan.lag_seconds,
            )
        )
        light.append(
            one_run(
                ctx,
                fe,
                primary,
                replicas,
                secrets,
                str(script),
                ctx.plan.lag_baseline_rate,
                ctx.plan.lag_baseline_seconds,
            )
        )
    with _connect(primary["host"], primary["port"], "app", "app", secrets["app_password"]) as c:
        c.execute("DROP TABLE IF EXISTS bench_lag")
    return summarize(group, pr, replicas, loaded, light)


def summarize(
    group: str, primary: str, replicas: dict, loaded: list[dict], light: list[dict]
) -> dict:
    slots = sorted({s for r in loaded for s in r["slots"]})

    def per(runs: list[dict], slot: str, key: str) -> list[float]:
        return [r["slots"][slot][key] for r in runs if slot in r["slots"]]

    def per_region(runs: list[dict], region: str, key: str) -> list[float]:
        return [r["replicas"][region][key] for r in runs if region in r["replicas"]]

    out = {
        "group": group,
        "primary": primary,
        "goal_p99_s": GOAL_P99_S,
        "clients": CLIENTS,
        "load": {
            "rate": loaded[0]["rate"] if loaded else None,
            "seconds": loaded[0]["seconds"] if loaded else None,
            "writes_per_s": Summary.of(r["writes_per_s"] for r in loaded),
            "tps": Summary.of(r["pgbench"]["tps"] for r in loaded if r["pgbench"]["tps"]),
            "latency_ms": Summary.of(
                r["pgbench"]["latency_ms"] for r in loaded if r["pgbench"]["latency_ms"]
            ),
            "wal_kib_per_s": Summary.of(r["wal_bytes_per_s"] / 1024 for r in loaded),
            "failed": sum(int(r["pgbench"]["failed"] or 0) for r in loaded),
        },
        "baseline_load": {
            "rate": light[0]["rate"] if light else None,
            "seconds": light[0]["seconds"] if light else None,
            "writes_per_s": Summary.of(r["writes_per_s"] for r in light),
        },
        "slots": {},
        "replicas": {},
        "sampler_errors": sorted(
            {r["sampler_error"] for r in loaded + light if r["sampler_error"]}
        ),
        "runs": loaded,
        "baseline_runs": light,
    }
    for slot in slots:
        p99, base99 = per(loaded, slot, "replay_lag_p99"), per(light, slot, "replay_lag_p99")
        out["slots"][slot] = {
            "replay_lag_p50": Summary.of(per(loaded, slot, "replay_lag_p50")),
            "replay_lag_p99": Summary.of(p99),
            "replay_lag_max": Summary.of(per(loaded, slot, "replay_lag_max")),
            "lsn_p50": Summary.of(per(loaded, slot, "lsn_p50")),
            "lsn_p99": Summary.of(per(loaded, slot, "lsn_p99")),
            "baseline_replay_lag_p50": Summary.of(per(light, slot, "replay_lag_p50")),
            "baseline_replay_lag_p99": Summary.of(base99),
            "ratio_p99": paired_ratios(p99, base99) if len(p99) == len(base99) else None,
            "null_samples": sum(per(loaded, slot, "null_samples")),
            "samples": sum(per(loaded, slot, "samples")),
        }
    for region in sorted(replicas):
        out["replicas"][region] = {
            "age_p50": Summary.of(per_region(loaded, region, "age_p50")),
            "age_p99": Summary.of(per_region(loaded, region, "age_p99")),
            "baseline_age_p99": Summary.of(per_region(light, region, "age_p99")),
        }
    return out


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 5 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(lag: Mapping) -> bool | None:
    slots = lag.get("slots") or {}
    if not slots:
        return None
    goal = lag.get("goal_p99_s", GOAL_P99_S)
    return all(med(s["replay_lag_p99"]) < goal for s in slots.values())


def summary_rows(lag: Mapping) -> list[list[str]]:
    if not lag.get("slots"):
        return []
    worst = max(lag["slots"].items(), key=lambda kv: med(kv[1]["replay_lag_p99"]))
    load = lag.get("load") or {}
    return [
        [
            f"5. Replication lag p99 at {load.get('rate', '?')} writes/s",
            f"< {lag.get('goal_p99_s', GOAL_P99_S):g} s",
            f"worst replica {worst[0]}: {fmt(scaled(worst[1]['replay_lag_p99'], 1000), 'ms', 1)}",
            (
                f"at {(lag.get('baseline_load') or {}).get('rate', '?')} writes/s: "
                f"{fmt(scaled(worst[1]['baseline_replay_lag_p99'], 1000), 'ms', 1)}"
            ),
            verdict(ok(lag)),
        ]
    ]


def section(lag: Mapping) -> str:
    if not lag:
        return ""
    if lag.get("error"):
        return f"## 5. Replication lag\n\nFailed: {lag['error']}"
    load = lag.get("load") or {}
    base = lag.get("baseline_load") or {}
    goal = lag.get("goal_p99_s", GOAL_P99_S)
    rows = []
    for slot, s in (lag.get("slots") or {}).items():
        region = slot.split("_")[1] if slot.count("_") >= 2 else slot
        age = (lag.get("replicas") or {}).get(region) or {}
        rows.append(
            [
                f"`{slot}`",
                fmt(scaled(s["replay_lag_p50"], 1000), "ms", 1),
                fmt(scaled(s["replay_lag_p99"], 1000), "ms", 1),
                fmt(scaled(s["replay_lag_max"], 1000), "ms", 1),
                fmt(scaled(s["lsn_p99"], 1 / 1024), "KiB", 1),
                fmt(scaled(age.get("age_p99"), 1000), "ms", 1),
                fmt(scaled(s["baseline_replay_lag_p99"], 1000), "ms", 1),
                fmt_ratio(s.get("ratio_p99")),
                verdict(med(s["replay_lag_p99"]) < goal),
            ]
        )
    n = len(lag.get("runs") or [])
    parts = [
        "## 5. Replication lag",
        "",
        figure_meta(lag),
        "",
        (
            f"Group `{lag.get('group')}` (primary {lag.get('primary')}), {n} runs. **Load:** pgbench "
            f"`-R {load.get('rate')}` with {lag.get('clients')} clients for {load.get('seconds')} s per run, "
            "one single-row INSERT (≈ 100-byte payload) per transaction on the primary: achieved "
            f"{fmt(load.get('writes_per_s'), 'writes/s', 1)}, pgbench latency {fmt(load.get('latency_ms'), 'ms', 2)}, "
            f"WAL {fmt(load.get('wal_kib_per_s'), 'KiB/s', 0)}, {load.get('failed', 0)} failed transactions. "
            "Sampled every 100 ms (the first second of each run is dropped): `replay_lag` and the LSN "
            "distance in `pg_stat_replication` on the primary, and on each replica the age of the newest "
            "applied transaction (`clock_timestamp() - pg_last_xact_replay_timestamp()`; it includes the "
            "time since the last commit, up to one gap between commits — 5 ms on average at 200 writes/s — so "
            "it is an upper bound). `replay_lag` is NULL when a replica has nothing left to apply; those "
            "samples are left out. Baseline: the "
            f"same at {base.get('rate')} writes/s for {base.get('seconds')} s per run, right after each loaded run. "
            f"Goal: p99 < {goal:g} s."
        ),
        "",
        table(
            [
                "replica (slot)",
                "replay_lag p50",
                "replay_lag p99",
                "replay_lag max",
                "LSN distance p99",
                "applied-txn age p99 (replica)",
                f"p99 at {base.get('rate')} writes/s",
                "p99 ratio",
                f"p99 < {goal:g} s",
            ],
            rows,
        ),
    ]
    if lag.get("sampler_errors"):
        parts += ["", "Sampler errors: " + "; ".join(lag["sampler_errors"])]
    return "\n".join(parts)
