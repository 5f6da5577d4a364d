"""Figure 11: backups and point-in-time recovery with pgBackRest (issue 15) — how long a
full backup of a known data set takes and how big it is, how far the WAL archive falls
behind under a steady write load, and how long a point-in-time restore takes until
writes work again, next to a plain `pg_basebackup` of the same data in the same run.

One fleet of one group (eu: fra, lhr, arn; fra preferred) with backups, brought up from
nothing. The scheduler's first backup is awaited (so it never races the measured ones),
then the group is loaded through its write endpoint with `pgbench -i -s SCALE`.

a. Full backup: `dbfleet backup eu --type full` (pgBackRest on the leader: compressed,
   encrypted, into the group's repository), its size from `pgbackrest info`; then, as
   the floor, `pg_basebackup` of the same leader (plain format, WAL streamed, fast
   checkpoint, as the group's OS user over TLS to the node itself, into a temp dir
   removed afterwards), its size on disk. `backup_runs` pairs, back to back.
b. WAL archive lag: `pgbench -R RATE` (a one-row UPDATE per transaction, so
   transactions/s = writes/s) for LOAD_S through the write endpoint, while a sampler
   reads the leader's `pg_stat_archiver` every SAMPLE_S: the segments finished but not
   yet archived, and the archive lag in seconds (how long the oldest of them has been
   finished; 0 when none waits), p50/p99 over the samples; and each segment's delay
   from finishing to archived.
c. Point-in-time restore: T is taken after the load; rows changed after T must go.
   `dbfleet restore eu --to T --yes`, timed, while a prober writes through the write
   endpoint every PROBE_S: when writes stop, and when they work again. The data at T is
   checked (row count and sum of balances).

Every wait is bounded by a deadline; the fleet is the benchmark's own and is destroyed
at the end, also on failure. Passwords stay in this process (environment, never argv).

Runs alone with `python -m bench.fig_backup` (see `main`) or `python -m bench --only
backup`: the result goes into bench/out/results.json under "backup".
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psycopg
import psycopg.conninfo
import yaml

from bench import alone, procs
from bench.context import PG_BIN, Ctx
from bench.fig_ha import TABLE, Group, Writer, stack_secrets, wait_until
from bench.fig_ha import fleet_text as ha_fleet_text
from bench.fig_lag import _connect, pgbench_numbers
from bench.fleetenv import FleetEnv
from bench.markdown import figure_meta, fmt, fmt_ratio, has_value, med, num, table, verdict
from bench.stats import Summary, paired_ratios, percentile
from dbfleet.ops.backup import backups_of, base_env, read_info

GROUP = "eu"
SCALE = 10  # pgbench scale: 1 000 000 accounts, about 160 MB
RATE = 200  # writes/s
LOAD_S = 60
SAMPLE_S = 0.5
PROBE_S = 0.2
CLIENTS = 4
FIRST_BACKUP_MAX_S = 300.0
WRITES_BACK_MAX_S = 120.0
# archive_timeout of the group (components/patroni.py): docs/backups.md promises that at
# most this much committed work exists only inside the group, so it is the lag's goal.
GOAL_ARCHIVE_P99_S = 60.0
# pgBackRest compresses and encrypts what pg_basebackup copies plainly.
GOAL_BACKUP_RATIO = 3.0
UPDATE_SQL = (
    f"\\set aid random(1, {100000 * SCALE})\n"
    "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;\n"
)
SEGMENT = 16 * 2**20  # bytes per WAL segment (the default)


def backup_runs(ctx: Ctx) -> int:
    return ctx.plan.runs


def fleet_text(name: str, octet: int) -> str:
    data = yaml.safe_load(ha_fleet_text("async")(name, octet))
    # A day between scheduled backups: after its first one the scheduler stays quiet.
    data["groups"][GROUP]["backup"] = {"schedule_hours": 24, "full_keep": 2}
    return yaml.safe_dump(data, sort_keys=False)


def without_password(uri: str) -> tuple[str, str]:
    """(the URI as a conninfo string without its password, the password): the password
    goes to a child through PGPASSWORD, never on its command line."""
    params = psycopg.conninfo.conninfo_to_dict(uri)
    password = str(params.pop("password", "") or "")
    return psycopg.conninfo.make_conninfo(**params), password


# --------------------------------------------------------------------------- WAL segments


def segno(walfile: str | None) -> int | None:
    """A WAL file name's segment number, timeline left out (16 MB segments: the last 16
    hex digits are the log and the segment within it)."""
    if not walfile or len(walfile) < 24:
        return None
    return int(walfile[8:16], 16) * 0x100 + int(walfile[16:24], 16)


def archive_lag(samples: Sequence[Mapping]) -> dict:
    """From samples {t, current, archived} (segment numbers, time ascending): per sample,
    the segments finished but not archived and the archive lag in seconds (how long the
    oldest of them has been finished, 0 when none waits); per segment finished in the
    window, its delay from finished to archived. Both are upper bounds at the sampling
    interval: a segment counts as finished from the last sample that did not yet see it
    finished, and as archived from the first sample that saw it archived. Segments
    already finished at the first sample count from it and have no delay."""
    finished: dict[int, float] = {}
    before_window: set[int] = set()
    archived_at: dict[int, float] = {}
    behind, lag = [], []
    last_cur, last_t = None, None
    for s in samples:
        cur, arch, t = s["current"], s["archived"], s["t"]
        if cur is None:
            continue
        if last_cur is None:
            news = range(arch + 1 if arch is not None else cur, cur)
            before_window.update(news)
        else:
            news = range(last_cur, cur)
        for seg in news:
            finished.setdefault(seg, t if last_t is None else last_t)
        last_cur, last_t = cur, t
        if arch is not None:
            for seg in [x for x in finished if x <= arch and x not in archived_at]:
                archived_at[seg] = t
        oldest = (arch + 1) if arch is not None else min(finished, default=cur)
        waiting = max(0, cur - oldest)
        behind.append(waiting)
        lag.append(t - finished.get(oldest, t) if waiting else 0.0)
    delays = [archived_at[x] - finished[x] for x in archived_at if x not in before_window]
    return {
        "samples": len(behind),
        "segments_behind_p50": percentile(behind, 50),
        "segments_behind_p99": percentile(behind, 99),
        "segments_behind_max": max(behind, default=None),
        "lag_s_p50": percentile(lag, 50),
        "lag_s_p99": percentile(lag, 99),
        "lag_s_max": max(lag, default=None),
        "segments_archived": len(delays),
        "segment_delay_s": Summary.of(delays).to_json(),
    }


class ArchiverSampler(threading.Thread):
    """The leader's current WAL file and pg_stat_archiver every SAMPLE_S."""

    def __init__(self, node: Mapping, password: str) -> None:
        super().__init__(daemon=True, name="archiver-sampler")
        self.node, self.password = node, password
        self.stop = threading.Event()
        self.rows: list[dict] = []
        self.error = ""

    def run(self) -> None:
        try:
            with _connect(
                self.node["host"], self.node["port"], "postgres", "postgres", self.password
            ) as c:
                while not self.stop.is_set():
                    t = time.monotonic()
                    cur, arch, failed = c.execute(
                        "SELECT pg_walfile_name(pg_current_wal_lsn()), last_archived_wal, "
                        "failed_count FROM pg_stat_archiver"
                    ).fetchone()
                    self.rows.append(
                        {"t": t, "current": segno(cur), "archived": segno(arch), "failed": failed}
                    )
                    self.stop.wait(max(0.0, SAMPLE_S - (time.monotonic() - t)))
        except Exception as exc:  # noqa: BLE001 — reported with the figure
            self.error = f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------- writes probe


def attempts(w: Writer) -> list[tuple[float, bool]]:
    """A writer's attempts in time order: (when, acknowledged)."""
    return sorted([(sent, True) for _, sent, _, _ in w.acked] + [(t, False) for t, _ in w.errors])


def outage(attempts: Sequence[tuple[float, bool]], start: float) -> dict:
    """Writes from `start` on: when the first failed, when one worked again after it
    (seconds from `start`; None when they never stopped or never came back)."""
    after = [(t, ok) for t, ok in attempts if t >= start]
    stop = next((t for t, ok in after if not ok), None)
    back = next((t for t, ok in after if ok and stop is not None and t > stop), None)
    return {
        "writes_stop_s": None if stop is None else stop - start,
        "writes_back_s": None if back is None else back - start,
        "outage_s": None if stop is None or back is None else back - stop,
        "failed_attempts": sum(1 for _, ok in after if not ok),
    }


# --------------------------------------------------------------------------- measuring


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def pgbench(
    ctx: Ctx, fe: FleetEnv, conninfo: str, password: str, args: Sequence[str], timeout: float
) -> procs.Timed:
    env = {**fe.env, "PGPASSWORD": password}
    return procs.run(
        [f"{PG_BIN}/pgbench", *args, conninfo],
        env=env,
        timeout=timeout,
        log=ctx.logs / "pgbench-backup.log",
    )


def basebackup(fe: FleetEnv, facts: Mapping, node: Mapping, secrets: Mapping, ca: str) -> dict:
    """`pg_basebackup` of the node as the group's OS user into a temp dir (removed
    afterwards): seconds and bytes. Over TLS to the node: its pg_hba admits replication
    only there (the local socket admits the superuser, not replication)."""
    user = str(facts["user"])
    tmp = Path(tempfile.mkdtemp(prefix="dbfleet-bench-basebackup-", dir=fe.root))
    try:
        shutil.chown(tmp, user=user)
        conninfo = psycopg.conninfo.make_conninfo(
            host=node["host"],
            port=node["port"],
            user="replicator",
            sslmode="verify-full",
            sslrootcert=ca,
        )
        # runuser keeps the environment: the password reaches pg_basebackup through it.
        env = {**fe.env, "PGPASSWORD": str(secrets["replication_password"])}
        t = procs.run(
            ["runuser", "-u", user, "--", f"{PG_BIN}/pg_basebackup", "-D", str(tmp / "base"),
             "-X", "stream", "-c", "fast", "-d", conninfo],
            env=env,
            cwd="/",
            timeout=1800,
            log=fe.log,
        )  # fmt: skip
        return {"seconds": t.seconds, "bytes": dir_bytes(tmp / "base")}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def full_backup(fe: FleetEnv, env: Mapping[str, str]) -> dict:
    t = fe.dbfleet("backup", GROUP, "--type", "full", timeout=3600)
    info = read_info(dict(env))
    newest = backups_of(info)[-1]
    return {
        "seconds": t.seconds,
        "label": newest["label"],
        "type": newest["type"],
        "db_bytes": newest["info"]["size"],
        "repo_bytes": newest["info"]["repository"].get("delta")
        or newest["info"]["repository"].get("size"),
        "pgbackrest_s": newest["timestamp"]["stop"] - newest["timestamp"]["start"],
        "repository_total_bytes": info.get("repo_bytes"),
    }


def one_sql(uri: str, sql: str):
    with psycopg.connect(uri, autocommit=True, connect_timeout=10) as c:
        return c.execute(sql).fetchone()


def balances(uri: str) -> tuple[int, int]:
    return one_sql(uri, "SELECT count(*), coalesce(sum(abalance), 0) FROM pgbench_accounts")


def archive_figure(ctx: Ctx, fe: FleetEnv, leader: Mapping, su: str, write: str) -> dict:
    conninfo, password = without_password(write)
    script = fe.root / "update.sql"
    script.write_text(UPDATE_SQL)
    sampler = ArchiverSampler(leader, su)
    with _connect(leader["host"], leader["port"], "postgres", "postgres", su) as c:
        (lsn0,) = c.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    sampler.start()
    wait_until(lambda: sampler.rows or sampler.error, 30, "the archiver sampler")
    try:
        t0 = time.monotonic()
        pg = pgbench(
            ctx, fe, conninfo, password,
            ["-n", "-f", str(script), "-R", str(RATE), "-c", str(CLIENTS), "-j", "2",
             "-T", str(LOAD_S)],
            timeout=LOAD_S + 300,
        )  # fmt: skip
        wall = time.monotonic() - t0
    finally:
        sampler.stop.set()
        sampler.join(timeout=30)
    with _connect(leader["host"], leader["port"], "postgres", "postgres", su) as c:
        (wal_bytes,) = c.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::float8", (lsn0,)
        ).fetchone()
    found = pgbench_numbers(pg.stdout + pg.stderr)
    window = [r for r in sampler.rows if t0 <= r["t"] <= t0 + wall]
    return {
        "rate": RATE,
        "seconds": LOAD_S,
        "wall_s": wall,
        "pgbench": found,
        "writes_per_s": (found["transactions"] or 0) / LOAD_S,
        "wal_mib_per_s": wal_bytes / wall / 2**20,
        "archiver_failures": (window[-1]["failed"] - window[0]["failed"]) if window else None,
        "sampler_error": sampler.error,
        # the raw samples, seconds from the load's start: the lag can be recomputed
        "archiver_samples": [{**r, "t": round(r["t"] - t0, 3)} for r in window],
        **archive_lag(window),
    }


def restore_figure(fe: FleetEnv, write: str) -> dict:
    """T after the load; a change after it; the restore to T, timed, with the prober."""
    with psycopg.connect(write, autocommit=True) as c:
        count, total = c.execute(
            "SELECT count(*), coalesce(sum(abalance), 0) FROM pgbench_accounts"
        ).fetchone()
        (t,) = c.execute("SELECT clock_timestamp()").fetchone()
        # The mistake after T: the restore must take it back.
        c.execute("UPDATE pgbench_accounts SET abalance = abalance + 1000 WHERE aid <= 1000")
    target: dt.datetime = t
    # fig_ha's paced writer as the probe: one INSERT every PROBE_S, reconnecting.
    prober = Writer(write, "probe", PROBE_S).start()
    wait_until(lambda: prober.acked, 30, "the write prober")
    t0 = time.monotonic()
    try:
        r = fe.dbfleet("restore", GROUP, "--to", target.isoformat(), "--yes", timeout=3600)
        restore_s = time.monotonic() - t0
        wait_until(
            lambda: prober.acked[-1][1] > t0 + restore_s,
            WRITES_BACK_MAX_S,
            "a write through the write endpoint after the restore",
            interval=0.2,
        )
    finally:
        prober.stop()
    after = balances(write)
    return {
        "target": target.isoformat(),
        "seconds": restore_s,
        "reported": next(
            (line for line in r.stdout.splitlines() if "restored and writable" in line), ""
        ),
        **outage(attempts(prober), t0),
        "rows_at_t": count,
        "sum_at_t": total,
        "rows_after": after[0],
        "sum_after": after[1],
        "exact": (after[0], after[1]) == (count, total),
    }


def measure(ctx: Ctx, fe: FleetEnv) -> dict:
    facts = fe.outputs(f"replicas-{GROUP}")["backup"]
    env = base_env(facts, fe.name)
    ctx.say("backup: waiting for the scheduler's first backup")
    t0 = time.monotonic()
    wait_until(
        lambda: backups_of(read_info(dict(env))), FIRST_BACKUP_MAX_S, "the first backup", 2.0
    )
    first_s = time.monotonic() - t0
    g = Group(fe)
    uris = stack_secrets(fe, f"proxies-{GROUP}")["connection_uris"]
    primary = fe.outputs(f"replicas-{GROUP}")["primary_region"]
    write = uris[primary]["write"]
    conninfo, password = without_password(write)
    ca = str(psycopg.conninfo.conninfo_to_dict(write).get("sslrootcert") or "")
    ctx.say(f"backup: pgbench -i -s {SCALE} through the write endpoint")
    init = pgbench(ctx, fe, conninfo, password, ["-i", "-s", str(SCALE), "-q"], timeout=1800)
    secrets = fe.secrets(GROUP)
    su = str(secrets["superuser_password"])
    leader_name = wait_until(g.leader, 60, "a leader")
    leader = {"host": g.members[leader_name]["host"], "port": int(g.members[leader_name]["port"])}
    with _connect(leader["host"], leader["port"], "postgres", "postgres", su) as c:
        (db_bytes,) = c.execute(
            "SELECT sum(pg_database_size(datname))::bigint FROM pg_database"
        ).fetchone()
        c.execute("CHECKPOINT")
    with psycopg.connect(write, autocommit=True) as c:
        # the probe's table, there at T (fig_ha's writer writes to it)
        c.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k text PRIMARY KEY)")
    pairs = []
    for i in range(backup_runs(ctx)):
        ctx.say(f"backup: full backup and pg_basebackup {i + 1}/{backup_runs(ctx)}")
        b = full_backup(fe, env)
        f = basebackup(fe, facts, leader, secrets, ca)
        ctx.say(
            f"backup: pgBackRest {b['seconds']:.1f} s, {b['repo_bytes'] / 2**20:.1f} MiB; "
            f"pg_basebackup {f['seconds']:.1f} s, {f['bytes'] / 2**20:.1f} MiB"
        )
        pairs.append({"backup": b, "basebackup": f})
    ctx.say(f"backup: {RATE} writes/s for {LOAD_S} s, sampling the archiver")
    arch = archive_figure(ctx, fe, leader, su, write)
    ctx.say(
        f"backup: archive lag p50 {arch['lag_s_p50']:.1f} s, p99 {arch['lag_s_p99']:.1f} s; "
        "restoring to a point after the load"
    )
    rest = restore_figure(fe, write)
    ctx.say(f"backup: restore {rest['seconds']:.1f} s, exact {rest['exact']}")
    return {
        "leader": leader_name,
        "first_backup_s": first_s,
        "init_s": init.seconds,
        "db_bytes": db_bytes,
        "pairs": pairs,
        "archive": arch,
        "restore": rest,
    }


def user_processes(user: str) -> list[str]:
    """The live processes of an OS user, as `seconds-running args` (none for no user)."""
    t = procs.run(["ps", "-o", "stat=,etimes=,args=", "-u", user], ok_codes=None, timeout=30)
    return [
        " ".join(line.split()[1:]) for line in t.stdout.splitlines() if line.split()[:1] != ["Z"]
    ]


def destroy(ctx: Ctx, fe: FleetEnv, user: str) -> dict:
    """`dbfleet destroy` while the group's user's processes are watched every second.
    In the first run of this figure it failed once after the restore: the accounts
    layer refused to remove the user, who still ran processes 30 s after the replicas
    were gone. Then they are waited for (bounded) so that FleetEnv.close's destroy
    removes everything, and what lingered is kept in the results."""
    last: list[str] = []  # the user's processes at the last look that found any
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            now = user_processes(user)
            if now:
                last[:] = now
            stop.wait(1.0)

    watcher = threading.Thread(target=watch, daemon=True, name="user-processes")
    watcher.start()
    try:
        d = fe.dbfleet("destroy", "--yes", "-q", ok_codes=None, timeout=900)
    finally:
        stop.set()
        watcher.join(timeout=30)
    out = {"seconds": d.seconds, "exit": d.returncode, "last_processes": last[:20]}
    if d.returncode != 0:
        ctx.say(f"backup: destroy exited {d.returncode}; waiting for {user}'s processes to end")
        t0 = time.monotonic()
        out["lingering"] = user_processes(user)
        try:
            wait_until(lambda: not user_processes(user), 300, f"{user}'s processes to end", 1.0)
            out["lingered_s"] = time.monotonic() - t0
        except RuntimeError as exc:  # FleetEnv.close still runs, and says what is left
            out["lingered_error"] = str(exc)
    return out


def summarize(pairs: Sequence[Mapping]) -> dict:
    b = [p["backup"] for p in pairs]
    f = [p["basebackup"] for p in pairs]
    return {
        "backup_s": Summary.of(x["seconds"] for x in b).to_json(),
        "backup_mib": Summary.of(x["repo_bytes"] / 2**20 for x in b).to_json(),
        "backup_db_mib": Summary.of(x["db_bytes"] / 2**20 for x in b).to_json(),
        "basebackup_s": Summary.of(x["seconds"] for x in f).to_json(),
        "basebackup_mib": Summary.of(x["bytes"] / 2**20 for x in f).to_json(),
        "time_ratio": paired_ratios([x["seconds"] for x in b], [x["seconds"] for x in f]).to_json(),
        "size_ratio": paired_ratios(
            [x["repo_bytes"] for x in b], [x["bytes"] for x in f]
        ).to_json(),
    }


def run(ctx: Ctx) -> dict:
    out: dict = {
        "group": GROUP,
        "scale": SCALE,
        "rate": RATE,
        "load_s": LOAD_S,
        "sample_s": SAMPLE_S,
        "goal_archive_p99_s": GOAL_ARCHIVE_P99_S,
        "goal_backup_ratio": GOAL_BACKUP_RATIO,
    }
    fe = FleetEnv("backup", fleet_text, code=ctx.code, log_dir=ctx.logs)
    user = ""
    try:
        ctx.say(f"backup: one-group fleet with backups in {fe.root} (127.{fe.octet}.0.0/16)")
        fe.start_vault()
        out["up_s"] = fe.dbfleet("up", "-q", timeout=1800).seconds
        user = str(fe.outputs(f"replicas-{GROUP}")["backup"]["user"])
        out.update(measure(ctx, fe))
    finally:
        if user:
            out["destroy"] = destroy(ctx, fe, user)
        problems = fe.close(keep=ctx.keep)
        if problems:
            ctx.say(f"backup: cleanup problems: {problems}")
    out.update(summarize(out["pairs"]))
    return out


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 11 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(res: Mapping) -> tuple[bool | None, bool | None, bool | None]:
    """(full backup ≤ goal × pg_basebackup, archive lag p99 < goal, the restore brought
    back exactly the data at T and writes work again)."""
    if not res.get("pairs"):
        return None, None, None
    ratio = med(res.get("time_ratio"))
    backup = ratio <= res.get("goal_backup_ratio", GOAL_BACKUP_RATIO) if has_value(ratio) else False
    arch = res.get("archive") or {}
    p99 = num(arch.get("lag_s_p99"))
    lag = (
        p99 < res.get("goal_archive_p99_s", GOAL_ARCHIVE_P99_S)
        if has_value(p99) and not arch.get("sampler_error")
        else False
    )
    rest = res.get("restore")
    restored = (
        None if rest is None else bool(rest.get("exact") and rest.get("writes_back_s") is not None)
    )
    return backup, lag, restored


def _mib(summary: Mapping | None) -> str:
    return fmt(summary, "MiB", 0)


def _s(v) -> str:
    return f"{num(v):.1f} s" if has_value(v) else "–"


def summary_rows(res: Mapping) -> list[list[str]]:
    if not res.get("pairs"):
        return []
    backup, lag, restored = ok(res)
    arch = res.get("archive") or {}
    rest = res.get("restore") or {}
    return [
        [
            f"11a. full backup (pgBackRest) of a group loaded with pgbench -s {res.get('scale')}, ÷ `pg_basebackup`",
            f"≤ {res.get('goal_backup_ratio', GOAL_BACKUP_RATIO):g}×",
            (
                f"{fmt(res.get('backup_s'))}, {_mib(res.get('backup_mib'))} in the repository; "
                f"{fmt_ratio(res.get('time_ratio'))}"
            ),
            f"`pg_basebackup`: {fmt(res.get('basebackup_s'))}, {_mib(res.get('basebackup_mib'))}",
            verdict(backup),
        ],
        [
            f"11b. WAL archive lag at {res.get('rate')} writes/s (finished segment → archived)",
            f"p99 < {res.get('goal_archive_p99_s', GOAL_ARCHIVE_P99_S):.0f} s",
            (
                f"p50 {_s(arch.get('lag_s_p50'))}, p99 {_s(arch.get('lag_s_p99'))}; "
                f"≤ {arch.get('segments_behind_max')} segment(s) behind"
            ),
            (
                f"{arch.get('segments_archived')} segment(s) in {res.get('load_s')} s, each "
                f"archived at most {fmt(arch.get('segment_delay_s'))} after it finished"
            ),
            verdict(lag),
        ],
        [
            "11c. point-in-time restore of the group (3 regions) → writes work again",
            "the data at T",
            (
                f"restore {_s(rest.get('seconds'))}; writes back {_s(rest.get('writes_back_s'))} "
                f"after it started (stopped for {_s(rest.get('outage_s'))})"
            ),
            f"`pg_basebackup` of the same data: {fmt(res.get('basebackup_s'))}",
            verdict(restored),
        ],
    ]


def _pair_rows(res: Mapping) -> list[list[str]]:
    rows = []
    for i, p in enumerate(res.get("pairs") or []):
        b, f = p["backup"], p["basebackup"]
        rows.append(
            [
                str(i + 1),
                f"{b['seconds']:.1f} s",
                f"{b['pgbackrest_s']:.0f} s",
                f"{b['repo_bytes'] / 2**20:.1f} MiB of {b['db_bytes'] / 2**20:.1f} MiB",
                f"{f['seconds']:.1f} s",
                f"{f['bytes'] / 2**20:.1f} MiB",
                f"{b['seconds'] / f['seconds']:.2f}×" if f["seconds"] else "–",
            ]
        )
    return rows


def section(res: Mapping) -> str:
    if not res:
        return ""
    if res.get("error"):
        return f"## 11. Backups and point-in-time recovery (pgBackRest)\n\nFailed: {res['error']}"
    arch = res.get("archive") or {}
    rest = res.get("restore") or {}
    pg = arch.get("pgbench") or {}
    parts = [
        "## 11. Backups and point-in-time recovery (pgBackRest)",
        "",
        figure_meta(res),
        "",
        (
            f"One group (`{res.get('group')}`: fra, lhr, arn; fra preferred) with backups, brought up from "
            f"nothing (`dbfleet up` {_s(res.get('up_s'))}; the scheduler's first backup "
            f"{_s(res.get('first_backup_s'))} later), loaded through its write endpoint with "
            f"`pgbench -i -s {res.get('scale')}` ({_s(res.get('init_s'))}; "
            f"{num(res.get('db_bytes')) / 2**20:.0f} MiB in all databases). Full backup: `dbfleet backup "
            f"{res.get('group')} --type full` (pgBackRest on the leader `{res.get('leader')}`: gzip, "
            "AES-256, into the group's repository; size from `pgbackrest info`), then as the floor "
            "`pg_basebackup` of the same leader (plain format, WAL streamed, fast checkpoint, as the "
            "group's OS user over TLS to the node — its pg_hba admits replication only there — into "
            "a temp dir removed afterwards; size on disk), back to back. "
            "On a shared 2-core machine: indicative numbers."
        ),
        "",
        table(
            [
                "pair",
                "`dbfleet backup --type full`",
                "of which pgBackRest",
                "in the repository",
                "`pg_basebackup`",
                "its size",
                "time ÷ floor",
            ],
            _pair_rows(res),
        ),
        "",
        (
            f"Median: backup {fmt(res.get('backup_s'))} ÷ `pg_basebackup` {fmt(res.get('basebackup_s'))} = "
            f"{fmt_ratio(res.get('time_ratio'))}; repository {_mib(res.get('backup_mib'))} ÷ "
            f"`pg_basebackup` {_mib(res.get('basebackup_mib'))} = {fmt_ratio(res.get('size_ratio'))}."
        ),
        "",
        (
            f"WAL archive lag: `pgbench -R {res.get('rate')}` (one-row `UPDATE` per transaction) for "
            f"{res.get('load_s')} s through the write endpoint (TLS, verify-full), {CLIENTS} clients: "
            f"{num(arch.get('writes_per_s')):.0f} writes/s done, latency {num(pg.get('latency_ms')):.2f} ms, "
            f"{num(pg.get('failed') or 0):.0f} failed, {num(arch.get('wal_mib_per_s')):.2f} MiB/s of WAL. "
            f"The leader's `pg_stat_archiver` and current WAL file every {res.get('sample_s')} s "
            f"({arch.get('samples')} samples): lag = how long the oldest finished, not yet archived segment "
            "has waited (0 when none waits). Both lag and delay are upper bounds in steps of the "
            "sampling interval: a segment counts as finished from the last sample that saw it "
            "current, as archived from the first sample that saw it archived."
        ),
        "",
        table(
            ["", "p50", "p99", "max"],
            [
                [
                    "archive lag",
                    _s(arch.get("lag_s_p50")),
                    _s(arch.get("lag_s_p99")),
                    _s(arch.get("lag_s_max")),
                ],
                [
                    "segments finished, not archived",
                    f"{num(arch.get('segments_behind_p50')):.0f}",
                    f"{num(arch.get('segments_behind_p99')):.0f}",
                    str(arch.get("segments_behind_max")),
                ],
            ],
        ),
        "",
        (
            f"{arch.get('segments_archived')} segment(s) finished and archived in the window, each "
            f"at most {fmt(arch.get('segment_delay_s'))} after it finished; "
            f"archiver failures: {arch.get('archiver_failures')}."
            + (f" Sampler error: {arch['sampler_error']}." if arch.get("sampler_error") else "")
        ),
        "",
        (
            f"Point-in-time restore: T taken after the load, then 1000 balances changed; `dbfleet restore "
            f"{res.get('group')} --to T --yes` took {_s(rest.get('seconds'))} (stop writes, restore the "
            "preferred leader with `--delta`, replay the archived WAL to T, rebuild both replicas, prove "
            f"writes in every region). A write every {PROBE_S} s through the write endpoint: writes stopped "
            f"{_s(rest.get('writes_stop_s'))} after the command started and worked again after "
            f"{_s(rest.get('writes_back_s'))} ({_s(rest.get('outage_s'))} without writes). After it: "
            f"{rest.get('rows_after')} accounts, balances summing to {rest.get('sum_after')} "
            f"(at T: {rest.get('rows_at_t')}, {rest.get('sum_at_t')}) — "
            + ("exactly the data at T." if rest.get("exact") else "**not the data at T**.")
        ),
    ]
    d = res.get("destroy") or {}
    if d.get("exit") not in (0, None):
        parts += [
            "",
            (
                f"**`dbfleet destroy` of the fleet afterwards exited {d['exit']}**: the accounts layer "
                f"refused to remove the group's user, who still ran processes ({'; '.join(d.get('last_processes') or []) or '?'}); "
                f"they ended {_s(d.get('lingered_s'))} later and a second destroy removed everything."
            ),
        ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- alone


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.fig_backup [--quick] [--worktree] [--keep]`: this figure alone;
    its result replaces "backup" in results.json (bench/out/, or bench/out/quick/)."""
    return alone.main("backup", run, section, argv, doc=main.__doc__)


if __name__ == "__main__":
    sys.exit(main())
