"""Figure 9: high availability on Patroni and etcd (issue 13) — how long writes stop
when the leader dies, what they lose, what `durability: sync` costs, and what the new
components cost `dbfleet up` and `dbfleet preview`.

a. Converge: the default fleet (us + eu) in fresh bench.fleetenv environments, `dbfleet
   up` from nothing and a no-change `dbfleet preview`, each followed by the empty
   program in dbfleet's shape (bench.floor.EmptyFleet) as the same-run baseline, then
   destroyed. Compared with the numbers BENCHMARKS.md recorded before Patroni (BEFORE).
b. Failover: one fleet of one group (eu: fra, lhr, arn; fra preferred), brought up from
   nothing. For each durability (async, then sync: the fleet file's `durability` and
   `dbfleet up eu`), `kills` times: one writer per region's write endpoint, paced to
   RATE writes/s in total, each write `INSERT ... RETURNING host(inet_server_addr())`
   timed from sending to acknowledgement; after WARM_S of steady load the leader's
   Patroni and postmaster are killed (SIGKILL, by the pids in its node directory);
   then, per endpoint, the time from the kill to the first write acknowledged by the
   new leader; the writers stop SETTLE_S later, and every acknowledged key missing on
   the new leader is a lost write. `dbfleet up eu` restores the group (it rejoins the
   old leader and switches back to the preferred node) before the next kill.
   The write latency of the steady load before each kill is the cost of sync.

Every wait is bounded by a deadline; the fleets are the benchmark's own and are
destroyed at the end, also on failure. The connection URIs come from the proxies
stack's secret outputs, read without the command log, and stay in this process.

Runs alone with `python -m bench.fig_ha` (see `main`): the result goes into
bench/out/results.json under "ha" and the section is printed.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping

import psycopg
import yaml

from bench import alone
from bench.context import Ctx
from bench.fleetenv import FleetEnv
from bench.floor import EmptyFleet
from bench.markdown import figure_meta, fmt, fmt_ratio, has_value, med, num, table, verdict
from bench.stats import Summary, percentile
from tests.fleets import default_fleet_text

GROUP = "eu"
PREFERRED = "fra-0"
MODES = ("async", "sync")
RATE = 200  # writes/s in total, over all write endpoints
WARM_S = 8.0  # steady load before a kill (its latencies are the latency figure)
SETTLE_S = 2.0  # writes after the last endpoint recovered, before counting losses
RECOVERY_MAX_S = 60.0
LEADER_MAX_S = 60.0
SYNC_STANDBY_MAX_S = 60.0
TABLE = "bench_ha"
# A workaround measured in the first run of this figure (see `restore`): true while
# `dbfleet up` cannot switch a sync group back to a node that is not its sync standby.
SYNC_RESTORE_VIA_ASYNC = True
GOAL_RECOVERY_S = 15.0
GOAL_LOST_SYNC = 0
GOAL_UP_RATIO = 1.25
# Patroni's timings (components/patroni.py), stated next to the figure they set.
TIMINGS = {"ttl": 10, "loop_wait": 2, "retry_timeout": 4}
# BENCHMARKS.md before Patroni: figure 2 of the full run at commit cb84ddf142cf
# (2026-12-01), the default fleet's 8 stacks, median (min–max) of 5 runs, with the
# empty-program baseline of the same run.
BEFORE = {
    "commit": "cb84ddf142cf",
    "date": "2026-12-01",
    "runs": 5,
    "up_s": {"median": 14.1, "min": 13.4, "max": 18.3, "n": 5},
    "preview_s": {"median": 11.0, "min": 8.6, "max": 12.2, "n": 5},
    "floor_up_s": {"median": 7.5, "min": 6.9, "max": 7.7, "n": 5},
    "floor_preview_s": {"median": 4.9, "min": 4.5, "max": 5.3, "n": 5},
    # each run ÷ its own empty-program baseline (paired), as figure 2 recorded them
    "up_floor_ratio": {"median": 1.88, "min": 1.77, "max": 2.53, "n": 5},
    "preview_floor_ratio": {"median": 2.26, "min": 1.91, "max": 2.40, "n": 5},
}


def kills_per_mode(ctx: Ctx) -> int:
    return min(ctx.plan.runs, 3)


def up_runs(ctx: Ctx) -> int:
    return min(ctx.plan.converge_runs, 2)


# --------------------------------------------------------------------------- the group


def fleet_text(durability: str = "async") -> Callable[[str, int], str]:
    def text(name: str, octet: int) -> str:
        data = yaml.safe_load(default_fleet_text(name, octet, groups=(GROUP,)))
        data["groups"][GROUP]["durability"] = durability
        return yaml.safe_dump(data, sort_keys=False)

    return text


class Group:
    """The group's members, Patroni's view of them and their processes."""

    def __init__(self, fe: FleetEnv) -> None:
        self.fe = fe
        self.members: dict[str, dict] = {}
        reps = fe.outputs(f"replicas-{GROUP}")
        for region, node in reps["nodes"].items():
            for k, m in enumerate(node["members"]):
                self.members[f"{region}-{k}"] = m
        # Patroni's REST API speaks HTTPS with a certificate from the group's CA.
        self.tls = ssl.create_default_context(cadata=reps["ca_certificate"])

    def cluster(self) -> dict:
        """Patroni's /cluster from the first member that answers."""
        for m in self.members.values():
            try:
                with urllib.request.urlopen(
                    f"https://{m['host']}:{m['rest_port']}/cluster", timeout=2, context=self.tls
                ) as r:
                    return json.load(r)
            except OSError:
                continue
        return {}

    def leader(self) -> str | None:
        for m in self.cluster().get("members", []):
            if m.get("role") == "leader" and m.get("state") == "running":
                return m["name"]
        return None

    def has_sync_standby(self) -> bool:
        return any(m.get("role") == "sync_standby" for m in self.cluster().get("members", []))

    def pids(self, member: str) -> tuple[int, int]:
        """(Patroni, postmaster) of a member, from its node directory."""
        d = self.fe.home / "data" / f"{self.fe.name}-{GROUP}" / member
        patroni = int((d / "run" / "patroni.pid").read_text().split()[0])
        postmaster = int((d / "pgdata" / "postmaster.pid").read_text().split()[0])
        return patroni, postmaster


def wait_until(condition: Callable, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)  # polling interval, not a synchronisation


def stack_secrets(fe: FleetEnv, stack: str) -> dict:
    from bench.fig_apps import stack_secrets as read

    return read(fe, stack)


# --------------------------------------------------------------------------- the load


class Writer:
    """Paced writes through one endpoint, one connection at a time (reconnecting after
    an error): each acknowledged key with when it was sent, when it was acknowledged
    (monotonic) and which server acknowledged it; each error's SQLSTATE."""

    def __init__(self, uri: str, tag: str, period_s: float) -> None:
        self.uri, self.tag, self.period_s = uri, tag, period_s
        self.acked: list[tuple[str, float, float, str]] = []  # key, sent, acked, server
        self.errors: list[tuple[float, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"writer-{tag}", daemon=True)

    def start(self) -> Writer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        i, conn = 0, None
        due = time.monotonic()
        while not self._stop.is_set():
            i += 1
            key = f"{self.tag}-{i}"
            try:
                if conn is None:
                    conn = psycopg.connect(self.uri, autocommit=True, connect_timeout=2)
                sent = time.monotonic()
                row = conn.execute(
                    f"INSERT INTO {TABLE} (k) VALUES (%s) RETURNING host(inet_server_addr())",
                    (key,),
                ).fetchone()
                self.acked.append((key, sent, time.monotonic(), row[0] if row else ""))
            except psycopg.Error as exc:
                self.errors.append((time.monotonic(), exc.sqlstate))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
            # Paced, never bursting to catch up after a stall: a bounded load.
            due = max(due + self.period_s, time.monotonic())
            self._stop.wait(due - time.monotonic())
        if conn is not None:
            conn.close()

    def first_ack_by(self, server: str, after: float) -> float | None:
        return next((at for _, _, at, by in self.acked if by == server and at > after), None)

    def latencies_ms(self, start: float, end: float) -> list[float]:
        return [(at - sent) * 1000 for _, sent, at, _ in self.acked if start <= sent and at < end]

    def read_only_errors(self) -> int:
        return sum(1 for _, state in self.errors if state == "25006")


def present(uri: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True, connect_timeout=5) as c:
        return {r[0] for r in c.execute(f"SELECT k FROM {TABLE}")}


# --------------------------------------------------------------------------- measuring


def restore(ctx: Ctx, fe: FleetEnv, g: Group, durability: str) -> float:
    """`dbfleet up eu` with the fleet file at `durability`: every member running, led by
    the preferred node (and, in sync, a synchronous standby). Seconds of the up(s).

    In sync the switch back to the preferred node goes through async (SYNC_RESTORE_VIA_ASYNC):
    the rejoined old leader is not the synchronous standby, and Patroni refuses a
    switchover to a candidate that is not ("candidate name does not match with
    sync_standby"), so `dbfleet up eu` alone fails after its 120 s wait."""
    seconds = 0.0
    steps = ("async", "sync") if durability == "sync" and SYNC_RESTORE_VIA_ASYNC else (durability,)
    for step in steps:
        fe.write_fleet(fleet_text(step)(fe.name, fe.octet))
        seconds += fe.dbfleet("up", GROUP, "-q", timeout=900).seconds
    wait_until(lambda: g.leader() == PREFERRED, LEADER_MAX_S, f"{PREFERRED} to lead")
    if durability == "sync":
        wait_until(g.has_sync_standby, SYNC_STANDBY_MAX_S, "a synchronous standby")
    return seconds


def one_kill(ctx: Ctx, fe: FleetEnv, g: Group, uris: Mapping, tag: str) -> dict:
    old = g.leader()
    if old is None:
        raise RuntimeError("the group has no running leader before the kill")
    period = len(uris) / RATE
    writers = [Writer(pair["write"], f"{tag}-{region}", period) for region, pair in uris.items()]
    try:
        for w in writers:
            w.start()
        t_load = time.monotonic()
        wait_until(lambda: all(w.acked for w in writers), 20, "the load to start on every endpoint")
        time.sleep(max(0.0, t_load + WARM_S - time.monotonic()))  # the steady window
        patroni, postmaster = g.pids(old)
        os.kill(patroni, signal.SIGKILL)
        os.kill(postmaster, signal.SIGKILL)
        t_kill = time.monotonic()
        new = wait_until(
            lambda: (lead := g.leader()) and lead != old and lead, LEADER_MAX_S, "a new leader"
        )
        leader_s = time.monotonic() - t_kill
        host = g.members[new]["host"]
        firsts = {
            w.tag: wait_until(
                lambda w=w: w.first_ack_by(host, t_kill),
                RECOVERY_MAX_S,
                f"a write through {w.tag} acknowledged by {new}",
                interval=0.02,
            )
            for w in writers
        }
        time.sleep(SETTLE_S)  # a little load on the new leader before counting
    finally:
        for w in writers:
            w.stop()
    acked = {k for w in writers for k, *_ in w.acked}
    lost = acked - present(next(iter(uris.values()))["write"])
    lat = [x for w in writers for x in w.latencies_ms(t_load + 1.0, t_kill)]
    return {
        "old": old,
        "new": new,
        "leader_s": leader_s,
        "recovery_s": {t.removeprefix(f"{tag}-"): at - t_kill for t, at in firsts.items()},
        "acked": len(acked),
        "lost": len(lost),
        "read_only_errors": sum(w.read_only_errors() for w in writers),
        "errors": sum(len(w.errors) for w in writers),
        "latency_p50_ms": percentile(lat, 50),
        "latency_p99_ms": percentile(lat, 99),
        "latency_n": len(lat),
    }


def summarize_mode(kills: list[dict]) -> dict:
    regions = sorted({r for k in kills for r in k["recovery_s"]})
    every = [s for k in kills for s in k["recovery_s"].values()]
    return {
        "kills": kills,
        "recovery_s": Summary.of(every).to_json(),
        # the slowest endpoint of each kill: when every region writes again
        "all_endpoints_s": Summary.of(max(k["recovery_s"].values()) for k in kills).to_json(),
        "per_region_s": {
            r: Summary.of(k["recovery_s"][r] for k in kills if r in k["recovery_s"]).to_json()
            for r in regions
        },
        "leader_s": Summary.of(k["leader_s"] for k in kills).to_json(),
        "lost": Summary.of(k["lost"] for k in kills).to_json(),
        "lost_total": sum(k["lost"] for k in kills),
        "acked_total": sum(k["acked"] for k in kills),
        "read_only_errors": sum(k["read_only_errors"] for k in kills),
        "latency_p50_ms": Summary.of(k["latency_p50_ms"] for k in kills).to_json(),
        "latency_p99_ms": Summary.of(k["latency_p99_ms"] for k in kills).to_json(),
        "latency_n": sum(k["latency_n"] for k in kills),
        "restore_s": Summary.of(k["restore_s"] for k in kills if "restore_s" in k).to_json(),
    }


def failover(ctx: Ctx) -> dict:
    fe = FleetEnv("ha", fleet_text("async"), code=ctx.code, log_dir=ctx.logs)
    try:
        ctx.say(f"ha: one-group fleet in {fe.root} (127.{fe.octet}.0.0/16)")
        fe.start_vault()
        fe.dbfleet("up", "-q", timeout=1800)
        g = Group(fe)
        uris = stack_secrets(fe, f"proxies-{GROUP}")["connection_uris"]
        with psycopg.connect(next(iter(uris.values()))["write"], autocommit=True) as c:
            c.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (k text PRIMARY KEY)")
        wait_until(lambda: g.leader() == PREFERRED, LEADER_MAX_S, f"{PREFERRED} to lead")
        modes: dict = {}
        for durability in MODES:
            if durability != "async":
                ctx.say(f"ha: durability {durability}")
                restore(ctx, fe, g, durability)
            kills = []
            for i in range(kills_per_mode(ctx)):
                k = one_kill(ctx, fe, g, uris, f"{durability}{i}")
                ctx.say(
                    f"ha {durability} kill {i + 1}: {k['old']} -> {k['new']} in "
                    f"{k['leader_s']:.1f} s; writes back after "
                    + ", ".join(f"{r} {s:.1f} s" for r, s in k["recovery_s"].items())
                    + f"; {k['lost']} of {k['acked']} acknowledged writes lost"
                )
                k["restore_s"] = restore(ctx, fe, g, durability)
                kills.append(k)
            modes[durability] = summarize_mode(kills)
        return {"members": sorted(g.members), "modes": modes}
    finally:
        problems = fe.close(keep=ctx.keep)
        if problems:
            ctx.say(f"ha: cleanup problems: {problems}")


def converge(ctx: Ctx) -> dict:
    rows = []
    for i in range(up_runs(ctx)):
        fe = FleetEnv("haup", code=ctx.code, log_dir=ctx.logs)
        try:
            ctx.say(f"ha: default fleet up from nothing {i + 1}/{up_runs(ctx)} in {fe.root}")
            fe.start_vault()
            up = fe.dbfleet("up", "--json", timeout=1800)
            # Exit codes kept, not raised on: a preview the policy pack fails is a result.
            pv = fe.dbfleet("preview", "--json", "-", timeout=900, ok_codes=None)
            pn = fe.dbfleet("preview", "--no-policies", "--json", "-", timeout=900, ok_codes=None)
            floor = EmptyFleet(fe)
            try:
                floor_up, floor_preview = floor.up(), floor.preview()
            finally:
                floor.remove()
            rows.append(
                {
                    "up_s": up.seconds,
                    "preview_s": pv.seconds,
                    "preview_exit": pv.returncode,
                    "preview_no_policies_s": pn.seconds,
                    "preview_no_policies_exit": pn.returncode,
                    "floor_up_s": floor_up,
                    "floor_preview_s": floor_preview,
                }
            )
            ctx.say(
                f"ha: up {up.seconds:.1f} s, no-change preview {pv.seconds:.1f} s (exit "
                f"{pv.returncode}), without the policy pack {pn.seconds:.1f} s (exit {pn.returncode})"
            )
        finally:
            problems = fe.close(keep=ctx.keep)
            if problems:
                raise RuntimeError(f"could not clean up {fe.root}: {problems}")
    return summarize_converge(rows)


def summarize_converge(rows: list[dict]) -> dict:
    out: dict = {"runs": rows}
    for key in ("up_s", "preview_s", "floor_up_s", "floor_preview_s", "preview_no_policies_s"):
        out[key] = Summary.of(r.get(key) for r in rows).to_json()
    for what in ("up", "preview"):
        now = med(out[f"{what}_s"])
        before = BEFORE[f"{what}_s"]["median"]
        out[f"{what}_ratio_before"] = now / before
        # The same comparison with each run divided by its own empty-program baseline,
        # against the before run's ratio: what is left when the load differs.
        floor_ratio = Summary.of(r[f"{what}_s"] / r[f"floor_{what}_s"] for r in rows)
        out[f"{what}_floor_ratio"] = floor_ratio.to_json()
        # The goal's comparison: that ratio against the before run's. The raw ratio to
        # before moves with the machine's load on the day; this one much less.
        out[f"{what}_normalised_before"] = (
            floor_ratio.median / BEFORE[f"{what}_floor_ratio"]["median"]
        )
    out["preview_exits"] = sorted({r["preview_exit"] for r in rows})
    out["preview_no_policies_exits"] = sorted(
        {r["preview_no_policies_exit"] for r in rows if "preview_no_policies_exit" in r}
    )
    return out


def run(ctx: Ctx) -> dict:
    out: dict = {
        "group": GROUP,
        "rate": RATE,
        "warm_s": WARM_S,
        "kills_per_mode": kills_per_mode(ctx),
        "timings": TIMINGS,
        "goal_recovery_s": GOAL_RECOVERY_S,
        "goal_up_ratio": GOAL_UP_RATIO,
        "before": BEFORE,
        "sync_restore_via_async": SYNC_RESTORE_VIA_ASYNC,
    }
    out.update(failover(ctx))
    ctx.results["ha"] = out  # kept if what follows fails
    ctx.save()
    try:
        out["converge"] = converge(ctx)
    except Exception as exc:  # noqa: BLE001 — the failover figures stand without it
        out["converge"] = {"error": f"{type(exc).__name__}: {exc}"}
    modes = out["modes"]
    out["latency_ratio"] = {
        p: med(modes["sync"][f"latency_{p}_ms"]) / med(modes["async"][f"latency_{p}_ms"])
        for p in ("p50", "p99")
    }
    return out


# --------------------------------------------------------------------------- rendering
# BENCHMARKS.md's figure 9 from the results above (no I/O). What the numbers mean is
# written by hand in BENCHMARKS.md, in the analysis block after this section.


def ok(ha: Mapping) -> tuple[bool | None, bool | None, bool | None]:
    """(recovery < goal on every endpoint of every kill, nothing lost in sync,
    up and preview ≤ goal × before)."""
    modes = ha.get("modes") or {}
    if not modes:
        return None, None, None
    goal = ha.get("goal_recovery_s", GOAL_RECOVERY_S)
    worst = max(num((m.get("recovery_s") or {}).get("max")) for m in modes.values())
    recovery = worst < goal if has_value(worst) else False
    sync = modes.get("sync")
    lost = None if sync is None else sync.get("lost_total") == GOAL_LOST_SYNC
    conv = ha.get("converge") or {}
    cost = None
    if conv.get("up_s"):
        g = ha.get("goal_up_ratio", GOAL_UP_RATIO)
        cost = (
            conv["up_normalised_before"] <= g
            and conv["preview_normalised_before"] <= g
            # a preview that failed (exit 1) is no measure of a no-change preview
            and set(conv.get("preview_exits") or [0]) <= {0, 2}
        )
    return recovery, lost, cost


def _ms(summary: Mapping | None) -> str:
    return fmt(summary, "ms", 2)


def summary_rows(ha: Mapping) -> list[list[str]]:
    modes = ha.get("modes") or {}
    if not modes:
        return []
    rec, lost, cost = ok(ha)
    goal = ha.get("goal_recovery_s", GOAL_RECOVERY_S)
    a, s = modes.get("async") or {}, modes.get("sync") or {}
    conv = ha.get("converge") or {}
    rows = [
        [
            "9a. leader killed → first write acknowledged by the new leader, per write endpoint",
            f"< {goal:.0f} s",
            "async "
            + fmt(a.get("recovery_s"))
            + "; sync "
            + fmt(s.get("recovery_s"))
            + f" (ttl {ha['timings']['ttl']} s, loop_wait {ha['timings']['loop_wait']} s)",
            f"new leader in Patroni: async {fmt(a.get('leader_s'))}, sync {fmt(s.get('leader_s'))}",
            verdict(rec),
        ],
        [
            f"9b. acknowledged writes lost per leader kill at {ha.get('rate')} writes/s",
            "0 in sync",
            f"sync {s.get('lost_total', '?')} of {s.get('acked_total', '?')}",
            f"async: {a.get('lost_total', '?')} of {a.get('acked_total', '?')}",
            verdict(lost),
        ],
        [
            "9c. one-row INSERT through the write endpoint, sync",
            "–",
            f"p50 {_ms(s.get('latency_p50_ms'))}, p99 {_ms(s.get('latency_p99_ms'))}",
            (
                f"async: p50 {_ms(a.get('latency_p50_ms'))}, p99 {_ms(a.get('latency_p99_ms'))}; "
                f"ratio p50 {num((ha.get('latency_ratio') or {}).get('p50')):.2f}×"
            ),
            "–",
        ],
    ]
    if conv.get("up_s"):
        g = ha.get("goal_up_ratio", GOAL_UP_RATIO)
        rows.append(
            [
                "9d. `dbfleet up` from nothing / no-change `dbfleet preview`, on Patroni ÷ before",
                f"≤ {g}×",
                (
                    f"up {fmt(conv['up_s'])}: {conv['up_ratio_before']:.2f}× raw, "
                    f"{conv['up_normalised_before']:.2f}× by the empty program; preview "
                    f"{fmt(conv['preview_s'])}: {conv['preview_ratio_before']:.2f}× raw, "
                    f"{conv['preview_normalised_before']:.2f}× by the empty program"
                    + (
                        f" (exited {conv['preview_exits']})"
                        if set(conv.get("preview_exits") or [0]) - {0, 2}
                        else ""
                    )
                ),
                (
                    f"before ({ha['before']['commit']}): up {fmt(ha['before']['up_s'])}, preview "
                    f"{fmt(ha['before']['preview_s'])}"
                ),
                verdict(cost),
            ]
        )
    return rows


def _mode_rows(ha: Mapping) -> list[list[str]]:
    rows = []
    for name, m in (ha.get("modes") or {}).items():
        per = m.get("per_region_s") or {}
        rows.append(
            [
                f"`{name}`",
                fmt(m.get("leader_s")),
                *(fmt(per.get(r)) for r in sorted(per)),
                fmt(m.get("all_endpoints_s")),
                f"{m.get('lost_total')} of {m.get('acked_total')} ({fmt(m.get('lost'), '', 0)} per kill)",
                str(m.get("read_only_errors")),
                fmt(m.get("restore_s")),
            ]
        )
    return rows


def _kill_rows(ha: Mapping) -> list[list[str]]:
    rows = []
    for name, m in (ha.get("modes") or {}).items():
        for i, k in enumerate(m.get("kills") or []):
            rows.append(
                [
                    f"`{name}` {i + 1}",
                    f"{k['old']} → {k['new']}",
                    f"{k['leader_s']:.1f} s",
                    ", ".join(f"{r} {s:.1f} s" for r, s in sorted(k["recovery_s"].items())),
                    f"{k['lost']} of {k['acked']}",
                    f"{k['latency_p50_ms']:.2f} / {k['latency_p99_ms']:.2f} ms",
                    f"{k.get('restore_s', float('nan')):.1f} s",
                ]
            )
    return rows


def section(ha: Mapping) -> str:
    if not ha:
        return ""
    if ha.get("error"):
        return f"## 9. High availability (Patroni + etcd)\n\nFailed: {ha['error']}"
    modes = ha.get("modes") or {}
    goal = ha.get("goal_recovery_s", GOAL_RECOVERY_S)
    t = ha.get("timings") or TIMINGS
    regions = sorted({r for m in modes.values() for r in (m.get("per_region_s") or {})})
    parts = [
        "## 9. High availability (Patroni + etcd)",
        "",
        figure_meta(ha),
        "",
        (
            f"One group (`{ha.get('group')}`: {', '.join(regions)}; `{PREFERRED}` preferred) brought up from "
            f"nothing, Patroni at ttl {t['ttl']} s, loop_wait {t['loop_wait']} s, retry_timeout "
            f"{t['retry_timeout']} s. For each durability (`async`, then `sync` by the fleet file and "
            f"`dbfleet up {ha.get('group')}`), {ha.get('kills_per_mode')} kills: one writer per region's write "
            f"endpoint, {ha.get('rate')} one-row `INSERT`s/s in total (paced, never bursting), "
            f"{ha.get('warm_s', WARM_S):.0f} s of steady load, then SIGKILL of the leader's Patroni and "
            "postmaster. Recovery: from the kill to the first write acknowledged by the new leader "
            "(`RETURNING host(inet_server_addr())`), per endpoint. Lost: acknowledged keys missing on the "
            f"new leader. Latency: the steady load before each kill. `dbfleet up {ha.get('group')}` restores "
            f"the group (rejoin, switch back to `{PREFERRED}`) between kills"
            + (
                " — in `sync` through `async` and back (two ups: the rejoined node is not the "
                "synchronous standby, and Patroni refuses a switchover to it)"
                if ha.get("sync_restore_via_async")
                else ""
            )
            + f". Goals: recovery < {goal:.0f} s, 0 writes lost in sync. On a shared 2-core "
            "machine: indicative numbers."
        ),
        "",
        table(
            [
                "durability",
                "new leader in Patroni",
                *(f"writes back via {r}" for r in regions),
                "every endpoint back",
                "acknowledged writes lost",
                "writes that reached a read-only node",
                f"`dbfleet up {ha.get('group')}` to restore",
            ],
            _mode_rows(ha),
        ),
        "",
        "Each kill (recovery per endpoint; INSERT latency p50 / p99 of the steady load before it):",
        "",
        table(
            ["kill", "leader", "new leader after", "writes back", "lost", "latency", "restore"],
            _kill_rows(ha),
        ),
    ]
    a, s = modes.get("async") or {}, modes.get("sync") or {}
    lr = ha.get("latency_ratio") or {}
    if a and s:
        parts += [
            "",
            (
                "Write latency, one-row `INSERT` through the write endpoint under the load above "
                "(median over kills of each window's percentile):"
            ),
            "",
            table(
                ["durability", "p50", "p99", "writes timed"],
                [
                    [
                        "`async`",
                        _ms(a["latency_p50_ms"]),
                        _ms(a["latency_p99_ms"]),
                        str(a.get("latency_n")),
                    ],
                    [
                        "`sync`",
                        _ms(s["latency_p50_ms"]),
                        _ms(s["latency_p99_ms"]),
                        str(s.get("latency_n")),
                    ],
                    [
                        "sync ÷ async",
                        f"{num(lr.get('p50')):.2f}×",
                        f"{num(lr.get('p99')):.2f}×",
                        "",
                    ],
                ],
            ),
        ]
    conv = ha.get("converge") or {}
    b = ha.get("before") or BEFORE
    if conv.get("error"):
        parts += [
            "",
            f"`dbfleet up` / `dbfleet preview` of the default fleet failed: {conv['error']}",
        ]
    if conv.get("up_s"):
        g = ha.get("goal_up_ratio", GOAL_UP_RATIO)
        parts += [
            "",
            (
                f"The default fleet (us + eu, 8 stacks), {conv['up_s']['n']} fresh environment(s): `dbfleet up` "
                "from nothing and a no-change `dbfleet preview`, next to the empty program in dbfleet's shape "
                f"(same run), against figure 2 **before** Patroni (commit `{b['commit']}`, {b['date']}, "
                f"{b['runs']} runs). Goal: ≤ {g}× before, compared as each run's ratio to its own "
                "empty-program baseline against the before run's (raw times move with the load)."
            ),
            "",
            table(
                [
                    "command",
                    "before",
                    "on Patroni",
                    "÷ before",
                    "÷ empty program, before",
                    "÷ empty program, now",
                    "now ÷ before, by the empty program",
                    f"≤ {g}×",
                ],
                [
                    [
                        "`dbfleet up` from nothing" if w == "up" else "no-change `dbfleet preview`",
                        fmt(b[f"{w}_s"]),
                        fmt(conv[f"{w}_s"]),
                        f"{conv[f'{w}_ratio_before']:.2f}×",
                        fmt_ratio(b[f"{w}_floor_ratio"]),
                        fmt_ratio(conv[f"{w}_floor_ratio"]),
                        f"{conv[f'{w}_normalised_before']:.2f}×",
                        verdict(
                            conv[f"{w}_normalised_before"] <= g
                            and (w == "up" or set(conv.get("preview_exits") or [0]) <= {0, 2})
                        ),
                    ]
                    for w in ("up", "preview")
                ],
            ),
        ]
        np = conv.get("preview_no_policies_s")
        if np and np.get("n"):
            parts += [
                "",
                (
                    f"No-change `dbfleet preview --no-policies` (the same stacks, no policy pack): "
                    f"{fmt(np)}, exit codes {conv.get('preview_no_policies_exits')}."
                ),
            ]
        if conv.get("preview_exits") not in ([0], None):
            parts += [
                "",
                (
                    f"**The no-change `dbfleet preview` exited {conv['preview_exits']}** (0: no change, "
                    "2: changes, 1: failed — a stack failed, the stacks after it in its group were not "
                    "previewed, so its time is not the whole command's)."
                ),
            ]
    return "\n".join(parts)


# --------------------------------------------------------------------------- alone


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.fig_ha [--quick] [--worktree] [--keep]`: this figure alone; its
    result replaces "ha" in results.json (bench/out/, or bench/out/quick/)."""
    return alone.main("ha", run, section, argv, doc=main.__doc__)


if __name__ == "__main__":
    sys.exit(main())
