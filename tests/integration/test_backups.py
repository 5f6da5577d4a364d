"""Backups and point-in-time recovery with pgBackRest on the real engine, OpenBao,
PostgreSQL, Patroni, etcd and HAProxy (issue 15).

One group (eu: fra, lhr, arn) is brought up for the module. Every test leaves the group
led by its preferred node, archiving, and writable, so they run in any order and any
one runs alone with `pytest -k`. Each test prints what it measured (`pytest -s`).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import hvac
import psycopg
import psycopg.conninfo
import pytest
import yaml

from dbfleet import vault
from tests.integration.conftest import (
    command_lines,
    default_fleet_text,
    drill_ids,
    make_fleet_env,
    wait_for,
)

GROUP = "eu"


def fleet_text(name: str, octet: int) -> str:
    data = yaml.safe_load(default_fleet_text(name, octet, groups=(GROUP,)))
    data["groups"][GROUP]["backup"] = {"schedule_hours": 24, "full_keep": 2}
    return yaml.safe_dump(data, sort_keys=False)


@pytest.fixture(scope="module")
def fleet(local_vault):
    fe = make_fleet_env(local_vault, "backups")
    fe.write_fleet(fleet_text(fe.name, fe.cidr_octet))
    t0 = time.monotonic()
    fe.run("up")
    print(f"\nup of a 3-region group with backups: {time.monotonic() - t0:.1f} s")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def facts(fe) -> dict:
    return fe.outputs(f"replicas-{GROUP}")["backup"]


def secrets(fe) -> dict:
    client = hvac.Client(url=fe.env["VAULT_ADDR"], token=fe.env["VAULT_TOKEN"])
    return vault.read_group_secrets(client, vault.DEFAULT_MOUNT, vault.secret_path(fe.name, GROUP))


def pgbackrest(fe, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """pgBackRest as the group's user with the group's configuration."""
    f = facts(fe)
    proc = subprocess.run(
        ["runuser", "-u", f["user"], "--", "env", f"PGPASSFILE={f['dir']}/pgpass",
         "pgbackrest", f"--config={f['dir']}/pgbackrest.conf", f"--stanza={f['stanza']}", *args],
        capture_output=True, text=True, timeout=300, check=False, cwd="/",
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"pgbackrest {' '.join(args)}: {proc.stdout}{proc.stderr}")
    return proc


def info(fe) -> dict:
    return json.loads(pgbackrest(fe, "--output=json", "info").stdout)[0]


def uris(fe) -> dict:
    return fe.outputs(f"proxies-{GROUP}", show_secrets=True)["connection_uris"]


def write_uri(fe, region: str = "fra") -> str:
    return uris(fe)[region]["write"]


def leader(fe) -> str | None:
    import ssl
    import urllib.request

    reps = fe.outputs(f"replicas-{GROUP}")
    context = ssl.create_default_context(cadata=reps["ca_certificate"])
    for node in reps["nodes"].values():
        for m in node["members"]:
            try:
                url = f"https://{m['host']}:{m['rest_port']}/cluster"
                with urllib.request.urlopen(url, timeout=2, context=context) as r:
                    doc = json.load(r)
            except OSError:
                continue
            for member in doc.get("members", []):
                if member.get("role") == "leader" and member.get("state") == "running":
                    return member["name"]
            return None
    return None


def superuser_uri(fe, member: str) -> str:
    region, k = member.rsplit("-", 1)
    m = fe.outputs(f"replicas-{GROUP}")["nodes"][region]["members"][int(k)]
    return psycopg.conninfo.make_conninfo(
        host=m["host"], port=m["port"], user="postgres", dbname="app",
        password=secrets(fe)["superuser_password"], connect_timeout=3,
    )  # fmt: skip


def status(fe) -> tuple[int, dict]:
    proc = fe.run("status", GROUP, "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)["groups"][0]


def status_when(fe, condition) -> tuple[int, dict] | None:
    code, doc = status(fe)
    return (code, doc) if condition(code, doc) else None


def test_archiving_works_from_the_first_up_and_the_repository_is_private(fleet):
    f = facts(fleet)
    assert f["stanza"] == f"{fleet.name}-{GROUP}"
    check = pgbackrest(fleet, "check")
    assert check.returncode == 0
    repo = Path(f["dir"])
    assert stat.S_IMODE(repo.stat().st_mode) == 0o700
    assert repo.owner() == f["user"]
    conf = repo / "pgbackrest.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert "repo1-cipher-type=aes-256-cbc" in conf.read_text()
    # The scheduler takes the first backup by itself, without anyone asking.
    t0 = time.monotonic()
    wait_for(lambda: info(fleet).get("backup"), 180, "the scheduler's first backup")
    print(f"first scheduled backup visible {time.monotonic() - t0:.1f} s after the check")
    code, doc = status(fleet)
    assert code == 0, doc
    assert doc["backup"]["last_full"], doc["backup"]


def row_count(uri: str, table: str) -> int:
    with psycopg.connect(uri, autocommit=True, connect_timeout=3) as c:
        return c.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def read_uris_of_every_node(fe) -> list[str]:
    """A superuser connection to every node of the group (the rows must be on each)."""
    names = [
        f"{region}-{k}"
        for region, node in fe.outputs(f"replicas-{GROUP}")["nodes"].items()
        for k in range(len(node["members"]))
    ]
    return [superuser_uri(fe, n) for n in names]


def test_restore_drill_brings_back_exactly_the_rows_before_t_in_every_region(fleet):
    w = write_uri(fleet)
    with psycopg.connect(w, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS drill")
        c.execute(
            "CREATE TABLE drill (id int PRIMARY KEY, at timestamptz DEFAULT clock_timestamp())"
        )
        c.execute("INSERT INTO drill (id) SELECT generate_series(1, 100)")
    t0 = time.monotonic()
    fleet.run("backup", GROUP, "--type", "full")
    print(f"full backup on demand: {time.monotonic() - t0:.1f} s")
    with psycopg.connect(w, autocommit=True) as c:
        c.execute("INSERT INTO drill (id) SELECT generate_series(101, 150)")
        (t,) = c.execute("SELECT clock_timestamp()").fetchone()
        c.execute("INSERT INTO drill (id) SELECT generate_series(151, 160)")
        c.execute("DELETE FROM drill")  # the mistake
    assert row_count(w, "drill") == 0
    # Without a terminal and without --yes: refused, nothing changed.
    refused = fleet.run("restore", GROUP, "--to", t.isoformat(), check=False, input="")
    assert refused.returncode == 1 and "--yes" in refused.stderr
    assert leader(fleet) == "fra-0"
    t0 = time.monotonic()
    out = fleet.run("restore", GROUP, "--to", t.isoformat(), "--yes", timeout=1800)
    took = time.monotonic() - t0
    print(f"point-in-time restore of the group (3 regions): {took:.1f} s")
    assert "thrown away" in out.stdout
    assert leader(fleet) == "fra-0"
    for uri in read_uris_of_every_node(fleet):
        ids = wait_for(
            lambda u=uri: drill_ids(u), 120, "the restored rows on every node", interval=0.5
        )
        assert ids == list(range(1, 151)), uri.split("host=")[-1]
    # Writes work through every region's write endpoint, and archiving goes on.
    for i, pair in enumerate(uris(fleet).values()):
        with psycopg.connect(pair["write"], autocommit=True, connect_timeout=5) as c:
            c.execute("INSERT INTO drill (id) VALUES (%s)", (1000 + i,))
    pgbackrest(fleet, "check")


def test_a_time_before_the_oldest_backup_is_refused_naming_the_earliest(fleet):
    wait_for(lambda: info(fleet).get("backup"), 180, "a backup")
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3650)).isoformat()
    proc = fleet.run("restore", GROUP, "--to", long_ago, "--yes", check=False)
    assert proc.returncode == 1
    assert "earliest possible time is" in proc.stderr, proc.stderr
    assert leader(fleet) == "fra-0"


def test_archiving_continues_across_a_switchover(fleet):
    before = info(fleet)["archive"][0]["max"]
    data = yaml.safe_load(fleet.spec.read_text())
    data["groups"][GROUP]["primary"] = "lhr"
    fleet.write_fleet(yaml.safe_dump(data, sort_keys=False))
    try:
        fleet.run("up", GROUP)
        assert leader(fleet) == "lhr-0"
        with psycopg.connect(write_uri(fleet), autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS after_switch (i int)")
            c.execute("INSERT INTO after_switch VALUES (1)")
        # check switches the WAL on the new leader and waits for it in the repository.
        pgbackrest(fleet, "check")
        after = info(fleet)["archive"][0]
        assert after["max"] > before, (before, after)
        # No gap: every segment from min to max is in the repository (pgBackRest's own
        # view of continuity is what a restore needs; verify reads every WAL file).
        pgbackrest(fleet, "verify")
    finally:
        fleet.write_fleet(fleet_text(fleet.name, fleet.cidr_octet))
        fleet.run("up", GROUP)
    assert leader(fleet) == "fra-0"


def _pid(fe, member: str, relative: str) -> int:
    path = fe.home / "data" / f"{fe.name}-{GROUP}" / member / relative
    return int(path.read_text().split()[0])


def test_archiving_continues_across_a_failover(fleet):
    """The leader's Patroni and PostgreSQL die at once: the new leader archives
    (the archive command is in the dynamic configuration) with no gap."""
    assert leader(fleet) == "fra-0"
    before = info(fleet)["archive"][0]["max"]
    os.kill(_pid(fleet, "fra-0", "run/patroni.pid"), signal.SIGKILL)
    os.kill(_pid(fleet, "fra-0", "pgdata/postmaster.pid"), signal.SIGKILL)
    try:

        def new_leader() -> str | None:
            m = leader(fleet)
            return m if m and m != "fra-0" else None

        new = wait_for(new_leader, 120, "a new leader")
        region = new.rsplit("-", 1)[0]

        def written() -> bool:
            # The proxies route writes to the new leader once their checks see it.
            try:
                with psycopg.connect(
                    write_uri(fleet, region), autocommit=True, connect_timeout=3
                ) as c:
                    c.execute("CREATE TABLE IF NOT EXISTS after_failover (i int)")
                    c.execute("INSERT INTO after_failover VALUES (1)")
                return True
            except psycopg.Error:
                return False

        wait_for(written, 60, "a write through the new leader's region", interval=0.5)
        pgbackrest(fleet, "check")
        after = info(fleet)["archive"][0]
        assert after["max"] > before, (before, after)
        pgbackrest(fleet, "verify")
    finally:
        fleet.run("up", GROUP)  # fra-0 rejoins and leads again
    assert leader(fleet) == "fra-0"


def test_an_unwritable_repository_shows_in_status_and_writes_keep_working(fleet):
    repo = Path(facts(fleet)["dir"]) / "repo"
    # The group's user may no longer write any directory of the WAL archive (root
    # still may): archive-push fails where it would store the next segment.
    dirs = [repo / "archive", *(p for p in (repo / "archive").rglob("*") if p.is_dir())]
    modes = {d: stat.S_IMODE(d.stat().st_mode) for d in dirs}
    try:
        for d in dirs:
            d.chmod(0o500)
        with psycopg.connect(write_uri(fleet), autocommit=True) as c:
            c.execute("CREATE TABLE IF NOT EXISTS during_fault (i int)")
            for i in range(20):
                c.execute("INSERT INTO during_fault VALUES (%s)", (i,))
        with psycopg.connect(superuser_uri(fleet, "fra-0"), autocommit=True) as c:
            c.execute("SELECT pg_switch_wal()")  # a full segment for the archiver to push
        code, doc = wait_for(
            lambda: status_when(fleet, lambda c, d: d["backup"]["failing"]),
            120,
            "status to show the archiving failure",
            interval=1.0,
        )
        assert code == 3, doc["backup"]
        assert row_count(write_uri(fleet), "during_fault") >= 20
        print(f"archiving failure seen in status: {doc['backup']['failed_count']} failures")
    finally:
        for d, mode in modes.items():
            d.chmod(mode)
    pgbackrest(fleet, "check")
    code, doc = wait_for(
        lambda: status_when(fleet, lambda c, d: c == 0), 120, "status healthy again", 1.0
    )
    assert not doc["backup"]["failing"]


def test_a_missing_vault_passphrase_is_a_clear_error_and_changes_nothing(fleet):
    client = hvac.Client(url=fleet.env["VAULT_ADDR"], token=fleet.env["VAULT_TOKEN"])
    path = vault.secret_path(fleet.name, GROUP)
    full = secrets(fleet)
    conf = Path(facts(fleet)["dir"]) / "pgbackrest.conf"
    before = conf.read_bytes()
    without = {k: v for k, v in full.items() if k != vault.BACKUP_KEY}
    client.secrets.kv.v2.create_or_update_secret(path=path, secret=without, mount_point="secret")
    try:
        proc = fleet.run("up", GROUP, "--layer", "replicas", check=False)
        assert proc.returncode == 1
        assert "backup_passphrase" in proc.stdout + proc.stderr
        assert conf.read_bytes() == before
        assert leader(fleet) == "fra-0"
    finally:
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=full, mount_point="secret")
    pgbackrest(fleet, "check")


def test_the_passphrase_is_in_no_state_log_argv_or_world_readable_file(fleet):
    passphrase = secrets(fleet)[vault.BACKUP_KEY]
    for layer in ("accounts", "networks", "replicas", "proxies"):
        assert passphrase not in fleet.export(f"{layer}-{GROUP}")
    assert not [cmd for cmd in command_lines().values() if passphrase in cmd]
    data_root = Path(facts(fleet)["data_root"])
    conf = Path(facts(fleet)["dir"]) / "pgbackrest.conf"
    for path in [*data_root.rglob("*"), *fleet.home.rglob("*")]:
        try:
            if not path.is_file() or path.is_symlink() or path.stat().st_size > 50_000_000:
                continue
            text = path.read_bytes()
        except OSError:
            continue
        if passphrase.encode() in text:
            # Only the configuration holds it, and only its owner may read it.
            assert path == conf, path
            assert stat.S_IMODE(path.stat().st_mode) == 0o600


INTO = "eu2"


def test_restore_into_a_new_group_leaves_the_live_group_untouched(fleet):
    """`restore eu --into eu2`: eu2 (same zone, never deployed) starts from eu's
    backups at T; eu's rows, Pulumi state, leader, timeline and backups are as before."""
    w = write_uri(fleet)
    with psycopg.connect(w, autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS inspect")
        c.execute("CREATE TABLE inspect (id int PRIMARY KEY)")
        c.execute("INSERT INTO inspect SELECT generate_series(1, 50)")
    fleet.run("backup", GROUP, "--type", "full")
    with psycopg.connect(w, autocommit=True) as c:
        c.execute("INSERT INTO inspect SELECT generate_series(51, 60)")
        (t,) = c.execute("SELECT clock_timestamp()").fetchone()
        c.execute("INSERT INTO inspect SELECT generate_series(61, 70)")
        c.execute("DELETE FROM inspect WHERE id <= 30")  # the mistake to look into

    def live() -> dict:
        with psycopg.connect(superuser_uri(fleet, "fra-0"), autocommit=True) as c:
            rows = [r[0] for r in c.execute("SELECT id FROM inspect ORDER BY id")]
            (tli,) = c.execute("SELECT timeline_id FROM pg_control_checkpoint()").fetchone()
            (sysid,) = c.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
        stacks = {
            s: fleet.export(f"{s}-{GROUP}") for s in ("accounts", "networks", "replicas", "proxies")
        }
        labels = [b["label"] for b in info(fleet)["backup"]]
        return {"rows": rows, "timeline": tli, "sysid": sysid, "stacks": stacks, "backups": labels}

    before = live()
    data = yaml.safe_load(fleet.spec.read_text())
    data["groups"][INTO] = {"zone": "EU", "primary": "cdg", "regions": {"cdg": {"nodes": 1}}}
    fleet.write_fleet(yaml.safe_dump(data, sort_keys=False))
    try:
        t0 = time.monotonic()
        out = fleet.run("restore", GROUP, "--to", t.isoformat(), "--into", INTO, timeout=1800)
        print(f"restore --into a new 1-region group: {time.monotonic() - t0:.1f} s")
        assert f"group {GROUP} stays as it is" in out.stdout
        into_uri = fleet.outputs(f"proxies-{INTO}", show_secrets=True)["connection_uris"]["cdg"]
        with psycopg.connect(into_uri["write"], autocommit=True, connect_timeout=5) as c:
            assert [r[0] for r in c.execute("SELECT id FROM inspect ORDER BY id")] == list(
                range(1, 61)
            )
            c.execute("INSERT INTO inspect VALUES (1000)")  # writable, and not in eu
        assert leader(fleet) == "fra-0"
        assert live() == before
        # A group that runs already is never overwritten.
        again = fleet.run("restore", GROUP, "--latest", "--into", INTO, check=False)
        assert again.returncode == 1 and "deployed already" in again.stderr, again.stderr
    finally:
        fleet.run("destroy", INTO, "--yes", check=False, timeout=900)
        fleet.write_fleet(fleet_text(fleet.name, fleet.cidr_octet))
    with psycopg.connect(w, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM inspect WHERE id = 1000").fetchone()[0] == 0
