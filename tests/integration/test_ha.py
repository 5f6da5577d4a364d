"""High availability on Patroni and etcd, on the real engine, OpenBao, PostgreSQL,
Patroni, etcd and HAProxy (issue 13).

One group (eu: fra, lhr, arn) is brought up for the module. Every test starts from
whatever the group runs and leaves it led by its preferred node again (most end
with `dbfleet up eu`, which switches back), so they run in any order and any one
runs alone with `pytest -k`. Each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import threading
import time
import urllib.request
from pathlib import Path

import hvac
import psycopg
import psycopg.conninfo
import pytest
import yaml

from dbfleet import vault
from tests.integration.conftest import command_lines, default_fleet_text, make_fleet_env

GROUP = "eu"
REGIONS = ("fra", "lhr", "arn")
# Small enough that a paused replica leaves the read pool after a few MB of writes.
LAG_BUDGET = "2MB"


def wait_until(condition, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)  # polling interval, not a synchronisation


def fleet_text(name: str, octet: int, **group: object) -> str:
    data = yaml.safe_load(default_fleet_text(name, octet, groups=(GROUP,)))
    data["groups"][GROUP].update({"read_lag_budget": LAG_BUDGET, **group})
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fleet(local_vault):
    fe = make_fleet_env(local_vault, "ha")
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet))
    fe.run("up")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def set_group(fe, **group: object) -> None:
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet, **group))


def uris(fe) -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]


def members(fe) -> dict[str, dict]:
    """member name -> {host, port, rest_port} from the replicas stack."""
    out = {}
    for region, node in fe.outputs(f"replicas-{GROUP}")["nodes"].items():
        for k, m in enumerate(node["members"]):
            out[f"{region}-{k}"] = m
    return out


_CONTEXTS: dict[str, ssl.SSLContext] = {}


def _rest_context(fe) -> ssl.SSLContext:
    """A client context trusting the group's CA (read once per fleet: it lives 10 years)."""
    if fe.name not in _CONTEXTS:
        ca = fe.outputs(f"replicas-{GROUP}")["ca_certificate"]
        _CONTEXTS[fe.name] = ssl.create_default_context(cadata=ca)
    return _CONTEXTS[fe.name]


def cluster(fe) -> dict:
    """Patroni's /cluster, from the first member that answers (HTTPS, verified against
    the group's CA as every client of the REST API does)."""
    ca = _rest_context(fe)
    for m in members(fe).values():
        try:
            with urllib.request.urlopen(
                f"https://{m['host']}:{m['rest_port']}/cluster", timeout=2, context=ca
            ) as r:
                return json.load(r)
        except OSError:
            continue
    return {}


def leader(fe) -> str | None:
    for m in cluster(fe).get("members", []):
        if m.get("role") == "leader" and m.get("state") == "running":
            return m["name"]
    return None


def node_dir(fe, member: str) -> Path:
    return fe.home / "data" / f"{fe.name}-{GROUP}" / member


def patroni_pid(fe, member: str) -> int:
    return int((node_dir(fe, member) / "run" / "patroni.pid").read_text().split()[0])


def postmaster_pid(fe, member: str) -> int:
    return int((node_dir(fe, member) / "pgdata" / "postmaster.pid").read_text().split()[0])


def direct_uri(fe, member: str, user_uri: str) -> str:
    m = members(fe)[member]
    return user_uri.rsplit("@", 1)[0] + f"@{m['host']}:{m['port']}/app?connect_timeout=3"


def walreceiver_pid(fe, member: str) -> int:
    """The WAL receiver of a replica: a child of its postmaster."""
    postmaster = postmaster_pid(fe, member)
    for pid, cmd in command_lines().items():
        if cmd.startswith("postgres: ") and "walreceiver" in cmd:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rsplit(") ", 1)[1].split()[1]) == postmaster:
                return pid
    raise AssertionError(f"{member} has no WAL receiver")


def superuser_uri(fe, member: str) -> str:
    client = hvac.Client(url=fe.env["VAULT_ADDR"], token=fe.env["VAULT_TOKEN"])
    secrets = vault.read_group_secrets(
        client, vault.DEFAULT_MOUNT, vault.secret_path(fe.name, GROUP)
    )
    m = members(fe)[member]
    return psycopg.conninfo.make_conninfo(
        host=m["host"], port=m["port"], user="postgres", dbname="postgres",
        password=secrets["superuser_password"], connect_timeout=3,
    )  # fmt: skip


def restore(fe) -> None:
    """The group as declared: every process running, led by the preferred node."""
    set_group(fe)
    fe.run("up", GROUP)
    assert leader(fe) == "fra-0"


class Writer:
    """A steady write load through one endpoint: unique keys, acknowledged ids with
    the monotonic time of their acknowledgement, and every error's SQLSTATE."""

    def __init__(self, uri: str, table: str, tag: str, period_s: float = 0.02):
        self.uri, self.table, self.tag, self.period_s = uri, table, tag, period_s
        # (key, acknowledged at, the server that acknowledged it)
        self.acked: list[tuple[str, float, str]] = []
        self.errors: list[tuple[float, str | None, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self):
        i, conn = 0, None
        while not self._stop.is_set():
            i += 1
            key = f"{self.tag}-{i}"
            try:
                if conn is None:
                    conn = psycopg.connect(self.uri, autocommit=True, connect_timeout=2)
                server = conn.execute(
                    f"INSERT INTO {self.table} (k) VALUES (%s) RETURNING host(inet_server_addr())",
                    (key,),
                ).fetchone()[0]
                self.acked.append((key, time.monotonic(), server))
            except psycopg.Error as exc:
                self.errors.append((time.monotonic(), exc.sqlstate, str(exc).strip()[:200]))
                if conn is not None:
                    try:
                        conn.close()
                    except psycopg.Error:
                        pass
                conn = None
            self._stop.wait(self.period_s)

    def read_only_errors(self) -> list[str]:
        """Writes that reached a read-only node (SQLSTATE 25006)."""
        return [e[2] for e in self.errors if e[1] == "25006"]

    def first_ack_by(self, server: str) -> float | None:
        """When `server` first acknowledged a write of this load."""
        return next((at for _, at, by in self.acked if by == server), None)


def make_table(uri: str, table: str) -> None:
    with psycopg.connect(uri, autocommit=True) as c:
        c.execute(f"CREATE TABLE IF NOT EXISTS {table} (k text PRIMARY KEY)")


def present(uri: str, table: str) -> set[str]:
    with psycopg.connect(uri, autocommit=True) as c:
        return {r[0] for r in c.execute(f"SELECT k FROM {table}")}


# ---------------------------------------------------------------------------------------
def test_the_group_runs_on_patroni_and_etcd_and_status_shows_them(fleet):
    view = cluster(fleet)
    states = {m["name"]: (m["role"], m["state"]) for m in view["members"]}
    assert states == {
        "fra-0": ("leader", "running"),
        "lhr-0": ("replica", "running"),
        "arn-0": ("replica", "running"),
    }, states
    fleet.run("prove")
    proc = fleet.run("status", "--json")
    doc = json.loads(proc.stdout)
    text = json.dumps(doc)
    assert "fra-0" in text and "etcd" in text, text[:500]
    # Patroni's configuration holds the group's passwords: private to the group's user.
    conf = node_dir(fleet, "fra-0") / "patroni.yml"
    assert conf.stat().st_mode & 0o077 == 0
    # No password on any process's command line (Patroni, etcd, postgres).
    secrets = fleet.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]
    password = secrets["fra"]["write"].split(":")[2].split("@")[0]
    assert not [c for c in command_lines().values() if password in c]


def endpoints_writers(fe, table: str, tag: str) -> list[Writer]:
    return [Writer(pair["write"], table, f"{tag}-{region}") for region, pair in uris(fe).items()]


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_a_killed_leader_is_replaced_by_itself_and_rejoins_on_the_next_up(fleet, durability):
    if durability == "sync":
        set_group(fleet, durability="sync")
        fleet.run("up", GROUP)
        wait_until(
            lambda: any(m["role"] == "sync_standby" for m in cluster(fleet)["members"]),
            30,
            what="a synchronous standby",
        )
    try:
        old = leader(fleet)
        table = f"kill_{durability}"
        make_table(uris(fleet)["fra"]["write"], table)
        writers = endpoints_writers(fleet, table, durability)
        for w in writers:
            w.__enter__()
        wait_until(lambda: all(len(w.acked) > 20 for w in writers), 20, what="the load to start")
        # The leader's Patroni and PostgreSQL die at once (SIGKILL), nothing is run.
        os.kill(patroni_pid(fleet, old), signal.SIGKILL)
        os.kill(postmaster_pid(fleet, old), signal.SIGKILL)
        t_kill = time.monotonic()
        new = wait_until(
            lambda: (lead := leader(fleet)) and lead != old and lead, 60, what="a new leader"
        )
        # Writes resume through every region's write endpoint, by themselves, on the
        # new leader (a write acknowledged by the old one after the kill cannot count).
        new_host = members(fleet)[new]["host"]
        firsts = {
            w.tag: wait_until(lambda w=w: w.first_ack_by(new_host), 30, what=f"writes via {w.tag}")
            for w in writers
        }
        for w in writers:
            w.__exit__(None, None, None)
        recovery = {tag: round(at - t_kill, 1) for tag, at in firsts.items()}
        acked = {k for w in writers for k, *_ in w.acked}
        lost = acked - present(uris(fleet)[new.split("-")[0]]["write"], table)
        read_only = [e for w in writers for e in w.read_only_errors()]
        assert read_only == [], read_only[:3]
        if durability == "sync":
            assert lost == set(), f"{len(lost)} acknowledged writes lost in sync mode"
        # The preview says the leader moved, with both ways out, and plans the switch back.
        pv = fleet.pulumi("preview", "-s", f"replicas-{GROUP}", check=False)
        said = pv.stdout + pv.stderr
        assert f"led by {new}" in said and "primary: " in said and f"dbfleet up {GROUP}" in said, (
            said
        )
        # The next up restarts the old leader's Patroni: it rejoins (rewound if needed)
        # and the group switches back to the preferred node.
        restore(fleet)
        states = {m["name"]: m["state"] for m in cluster(fleet)["members"]}
        assert set(states.values()) == {"running"}, states
        print(
            f"measured ({durability}): leader {old} killed; new leader {new}; first acknowledged "
            f"write through each region {recovery} s after the kill; {len(lost)} of {len(acked)} "
            "acknowledged writes lost; 0 writes reached a read-only node"
        )
    finally:
        if durability == "sync":
            restore(fleet)


def test_a_switchover_by_the_fleet_file_loses_nothing_and_never_writes_to_a_replica(fleet):
    table = "switchover"
    make_table(uris(fleet)["fra"]["write"], table)
    set_group(fleet, primary="lhr")
    pv = fleet.pulumi("preview", "-s", f"replicas-{GROUP}", "--diff")
    assert "switchover in group eu: fra -> lhr" in pv.stdout + pv.stderr
    writers = endpoints_writers(fleet, table, "sw")
    try:
        for w in writers:
            w.__enter__()
        wait_until(lambda: all(len(w.acked) > 20 for w in writers), 20, what="the load to start")
        t0 = time.monotonic()
        fleet.run("up", GROUP)
        up_s = time.monotonic() - t0
        assert leader(fleet) == "lhr-0"
        n = sum(len(w.acked) for w in writers)
        wait_until(lambda: sum(len(w.acked) for w in writers) > n + 30, 20, what="writes to go on")
    finally:
        for w in writers:
            w.__exit__(None, None, None)
    acked = {k for w in writers for k, *_ in w.acked}
    lost = acked - present(uris(fleet)["lhr"]["write"], table)
    read_only = [e for w in writers for e in w.read_only_errors()]
    outage = max(
        (max((t for t, *_ in w.errors), default=0) - min((t for t, *_ in w.errors), default=0))
        for w in writers
    )
    assert lost == set(), f"{len(lost)} committed writes lost"
    assert read_only == [], read_only[:3]
    restore(fleet)
    print(
        f"measured: switchover fra->lhr by `up` in {up_s:.1f} s; {len(acked)} writes acknowledged, "
        f"0 lost, 0 reached a read-only node; longest write outage {outage:.1f} s"
    )


def test_a_replica_beyond_the_lag_budget_leaves_the_read_pool_until_it_catches_up(fleet):
    pair = uris(fleet)["lhr"]
    lhr = members(fleet)["lhr-0"]
    make_table(pair["write"], "lag")

    def served_by() -> str:
        with psycopg.connect(pair["read"], autocommit=True, connect_timeout=3) as c:
            return c.execute("SELECT host(inet_server_addr())").fetchone()[0]

    assert served_by() == lhr["host"]
    # lhr stops receiving WAL (its WAL receiver frozen: a slow or congested link).
    # Patroni resumes a replay paused with pg_wal_replay_pause() by itself, so that
    # is no way to hold a replica back under Patroni.
    receiver = walreceiver_pid(fleet, "lhr-0")
    os.kill(receiver, signal.SIGSTOP)
    try:
        # More WAL than the budget (2MB), then lhr's reads go to the nearest region.
        with psycopg.connect(pair["write"], autocommit=True) as c:
            c.execute("INSERT INTO lag SELECT md5(i::text) FROM generate_series(1, 60000) i")
        t0 = time.monotonic()
        wait_until(lambda: served_by() != lhr["host"], 15, what="reads to leave lhr")
        moved_s = time.monotonic() - t0
        st = fleet.run("status", check=False)
        assert st.returncode == 3, st.stdout
    finally:
        os.kill(receiver, signal.SIGCONT)
    wait_until(lambda: served_by() == lhr["host"], 20, what="reads to come back to lhr")
    wait_until(lambda: fleet.run("status", check=False).returncode == 0, 20, what="status healthy")
    print(
        f"measured: a replica that stopped receiving WAL left the read pool {moved_s:.1f} s after passing the budget"
    )


def test_connections_beyond_a_nodes_share_queue_instead_of_failing(fleet):
    # 3 regions: each proxy gives a node (100 - 10) // 6 = 15 connections per listener;
    # 40 clients at once through one write endpoint queue for those 15 slots.
    uri = uris(fleet)["arn"]["write"]
    errors: list[str] = []
    done: list[int] = []

    def client(i: int) -> None:
        try:
            with psycopg.connect(uri, autocommit=True, connect_timeout=15) as c:
                c.execute("SELECT pg_sleep(0.5)")
                done.append(i)
        except psycopg.Error as exc:
            errors.append(str(exc).strip()[:200])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [], errors[:3]
    assert len(done) == 40


def test_etcd_members_lost_the_group_serves_and_never_splits(fleet):
    etcd_pids = {
        r: int(
            (fleet.home / "data" / f"{fleet.name}-{GROUP}" / f"etcd-{r}" / "etcd.pid").read_text()
        )
        for r in REGIONS
    }
    uri = uris(fleet)["fra"]["write"]
    make_table(uri, "etcd_loss")
    try:
        # One member lost (not the leader's region): writes go on, status says DEGRADED,
        # and a preview shows the stopped member as drift.
        os.kill(etcd_pids["arn"], signal.SIGKILL)
        with Writer(uri, "etcd_loss", "one") as w:
            wait_until(lambda: len(w.acked) > 50, 20, what="writes with 2 of 3 etcd members")
        st = fleet.run("status", check=False)
        assert st.returncode == 3 and "etcd" in st.stdout, st.stdout
        pv = fleet.pulumi("preview", "-s", f"replicas-{GROUP}", "--expect-no-changes", check=False)
        assert pv.returncode != 0 and "etcd-arn" in pv.stdout, pv.stdout
        # With 2 of 3 members the group still fails over: the leader dies, another leads.
        old = leader(fleet)
        os.kill(patroni_pid(fleet, old), signal.SIGKILL)
        os.kill(postmaster_pid(fleet, old), signal.SIGKILL)
        new = wait_until(
            lambda: (lead := leader(fleet)) and lead != old and lead, 60, what="a failover"
        )
        # A second one lost: no quorum, so no node can be promoted — one leader at most.
        os.kill(etcd_pids["lhr" if new != "lhr-0" else "fra"], signal.SIGKILL)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 15:
            leaders = [
                m["name"] for m in cluster(fleet).get("members", []) if m.get("role") == "leader"
            ]
            assert len(leaders) <= 1, leaders
            time.sleep(0.5)  # sampling interval while nothing is expected to change
        st = fleet.run("status", check=False)
        assert "quorum" in st.stdout, st.stdout
    finally:
        restore(fleet)
