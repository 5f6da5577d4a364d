"""Backups on the ssh target (docs/backups.md), on a lab of three hosts: group eu with
`backup:`, real pgBackRest (its TLS server on every host, certificates from the group's
CA in OpenBao), PostgreSQL under Patroni, nftables.

One lab and one fleet for the module (each test leaves it serving, so any one runs alone
with `pytest -k`). Needs root; skipped otherwise.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import backup
from dbfleet import vault
from dbfleet.ops.lab import Lab, free_lab_network, read_spec
from tests.fleets import lab_fleet_text
from tests.integration.conftest import command_lines, drill_ids, make_fleet_env, wait_for
from tests.integration.test_ssh_fleet import SshFleet, _close_masters

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (network namespaces)"),
]

PGBACKREST = "/usr/bin/pgbackrest"


@pytest.fixture(scope="module")
def fleet(local_vault) -> Iterator[SshFleet]:
    """Group eu (fra primary, lhr, arn) with backups; the repository defaults to lhr."""
    fe = make_fleet_env(local_vault, "sshbk")
    net = free_lab_network()
    fe.write_fleet(lab_fleet_text(fe.name, net, groups=("eu",)) + "    backup: {full_keep: 2}\n")
    control = Path(tempfile.mkdtemp(prefix="dbfleet-ctl-"))
    fe.env["DBFLEET_SSH_CONTROL_DIR"] = str(control)
    lab = Lab(read_spec(fe.spec), fe.home)
    try:
        lab.up(fe.env)
        fe.run("up", "-q", timeout=900)
        yield SshFleet(fe, lab, net)
    finally:
        fe.run("destroy", "--yes", "-q", check=False, timeout=900)
        _close_masters(control)
        lab.down(fe.env)
        shutil.rmtree(control, ignore_errors=True)
        shutil.rmtree(fe.root, ignore_errors=True)


def _root(fleet: SshFleet) -> Path:
    return Path(f"/var/lib/dbfleet/{fleet.fe.name}-eu")


def _pgbackrest(fleet: SshFleet, address: str, node: str, *args: str):
    """pgBackRest as the group's user on a host, with that host's configuration."""
    user, root = f"{fleet.fe.name}-eu", _root(fleet)
    conf = root / "pgbackrest" / node / "pgbackrest.conf"
    return fleet.on_host(
        address, "runuser", "-u", user, "--", "env", f"PGPASSFILE={conf.parent / 'pgpass'}",
        PGBACKREST, f"--config={conf}", f"--stanza={fleet.fe.name}-eu", *args, timeout=300,
    )  # fmt: skip


def _info(fleet: SshFleet) -> dict:
    proc = _pgbackrest(fleet, f"{fleet.net}.22", "lhr-0", "--output=json", "info")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)[0]


def test_archiving_reaches_the_repository_host_and_the_scheduler_takes_the_first_backup(
    fleet: SshFleet,
) -> None:
    net = fleet.net
    facts = fleet.fe.outputs("replicas-eu")["backup"]
    assert (facts["repo_region"], facts["repo_address"]) == ("lhr", f"{net}.22")
    # a WAL switch on the leader (fra, another host) that must arrive in lhr's repository
    check = _pgbackrest(fleet, f"{net}.22", "lhr-0", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    # every host's TLS server listens on its own address only
    for address in (f"{net}.21", f"{net}.22", f"{net}.23"):
        assert f"{address}:8432" in fleet.on_host(address, "ss", "-Hltn").stdout
    # the policies pass (backup-residency: the repository is a host of the group) and a
    # second up finds every TLS server, the stanza and the scheduler as they should be
    again = fleet.fe.run("up", "-q")
    stacks = ("accounts-eu", "networks-eu", "replicas-eu", "proxies-eu")
    rows = [
        ln.split() for ln in again.stdout.splitlines() if ln.split()[:1] in ([s] for s in stacks)
    ]
    assert len(rows) == 4 and all(r[1] == "unchanged" for r in rows), again.stdout
    # the scheduler on the repository host takes a new group's first full backup by itself
    wait_for(lambda: _info(fleet).get("backup"), 180, "the scheduler's first backup")
    assert _info(fleet)["backup"][0]["type"] == "full"


def test_a_backup_on_demand_and_status_show_it(fleet: SshFleet) -> None:
    before = len(_info(fleet).get("backup") or [])
    out = fleet.fe.run("backup", "eu", "--type", "incr", timeout=600).stdout
    assert "backup:" in out and "of group eu" in out, out
    assert len(_info(fleet)["backup"]) == before + 1
    proc = fleet.fe.run("status", "eu", "--json", check=False)
    doc = json.loads(proc.stdout)["groups"][0]["backup"]
    assert doc["last_full"] and not doc["failing"], doc
    assert proc.returncode == 0, proc.stdout
    assert "backups" in fleet.fe.run("status", "eu", check=False).stdout


def test_the_repository_is_on_its_host_only_and_the_port_is_the_groups(fleet: SshFleet) -> None:
    net, base = fleet.net, _root(fleet) / "pgbackrest"
    repo = base / "lhr-0" / "repo"
    assert (repo / "archive").is_dir() and (repo / "backup").is_dir()
    assert sorted(p.name for p in base.iterdir()) == ["arn-0", "fra-0", "lhr-0"]
    for node in ("fra-0", "arn-0"):
        assert not (base / node / "repo").exists()
    # the group's hosts reach the TLS server; this machine (an operator) does not
    assert fleet.reaches(f"{net}.21", f"{net}.22", 8432)
    with pytest.raises(OSError):
        socket.create_connection((f"{net}.22", 8432), timeout=3).close()


def test_the_passphrase_is_only_in_the_repository_hosts_0600_configuration(
    fleet: SshFleet,
) -> None:
    fe = fleet.fe
    secrets = vault.read_group_secrets(
        vault.client_from_env(fe.env),
        vault.DEFAULT_MOUNT,
        vault.secret_path(fe.name, "eu"),
        also=(vault.BACKUP_KEY,),
    )
    phrase = secrets[vault.BACKUP_KEY]
    assert not [c for c in command_lines().values() if phrase in c]
    for stack in ("accounts-eu", "networks-eu", "replicas-eu", "proxies-eu"):
        assert phrase not in fe.export(stack)
    holders = []
    for path in [*_root(fleet).rglob("*"), *fe.home.rglob("*")]:
        try:
            if path.is_file() and not path.is_symlink() and phrase.encode() in path.read_bytes():
                holders.append(path)
        except OSError:
            continue
    conf = _root(fleet) / "pgbackrest" / "lhr-0" / "pgbackrest.conf"
    assert holders == [conf]
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600


def test_archiving_follows_a_switchover_to_the_repository_hosts_own_node(
    fleet: SshFleet,
) -> None:
    """lhr-0 runs on the repository host: leading, it archives into the local repository
    (pg1 of that host's configuration); the other nodes then become the remote ones."""
    fe = fleet.fe
    before = _info(fleet)["archive"][0]["max"]
    text = fe.spec.read_text()
    fe.write_fleet(text.replace("primary: fra", "primary: lhr"))
    try:
        fe.run("up", "eu", "-q", timeout=900)
        check = _pgbackrest(fleet, f"{fleet.net}.22", "lhr-0", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert _info(fleet)["archive"][0]["max"] > before
        out = fe.run("backup", "eu", "--type", "incr", timeout=600).stdout
        assert "backup:" in out, out
        # no gap in the archive across the switchover
        verify = _pgbackrest(fleet, f"{fleet.net}.22", "lhr-0", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
    finally:
        fe.write_fleet(text)
        fe.run("up", "eu", "-q", timeout=900)


def _status(fleet: SshFleet) -> tuple[int, dict]:
    # a new ssh control directory: a master to a host whose link is down would hang
    proc = fleet.fresh_run("status", "eu", "--json", check=False)
    return proc.returncode, json.loads(proc.stdout)["groups"][0]


def _status_when(fleet: SshFleet, failing: bool) -> tuple[int, dict] | None:
    code, doc = _status(fleet)
    return (code, doc) if bool((doc.get("backup") or {}).get("failing")) == failing else None


def test_an_unreachable_repository_host_shows_in_status_and_writes_keep_working(
    fleet: SshFleet,
) -> None:
    """The repository host's link goes down: archive-push (async) fails on the leader's
    host, writes are not blocked, status turns DEGRADED naming the archiving failure;
    with the link back the archive catches up (`pgbackrest check`)."""
    import psycopg

    fe, net = fleet.fe, fleet.net
    uris = fe.outputs("proxies-eu", show_secrets=True)["connection_uris"]
    password = vault.read_group_secrets(
        vault.client_from_env(fe.env), vault.DEFAULT_MOUNT, vault.secret_path(fe.name, "eu")
    )["superuser_password"]
    leader = psycopg.conninfo.make_conninfo(
        host=f"{net}.21", port=5432, user="postgres", dbname="app", password=password,
        connect_timeout=3,
    )  # fmt: skip
    host = fleet.host(f"{net}.22")
    subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "down"], check=True)
    try:
        with psycopg.connect(uris["fra"]["write"], autocommit=True, connect_timeout=5) as c:
            c.execute("CREATE TABLE IF NOT EXISTS during_cut (i int)")
            for i in range(20):
                c.execute("INSERT INTO during_cut VALUES (%s)", (i,))
        with psycopg.connect(leader, autocommit=True) as c:
            c.execute("SELECT pg_switch_wal()")  # a full segment for the archiver to push
        code, doc = wait_for(
            lambda: _status_when(fleet, failing=True),
            180,
            "status to show the archiving failure",
            interval=2.0,
        )
        assert code == 3, doc["backup"]
        with psycopg.connect(uris["fra"]["write"], autocommit=True, connect_timeout=5) as c:
            assert c.execute("SELECT count(*) FROM during_cut").fetchone()[0] >= 20
    finally:
        subprocess.run(["ip", "link", "set", fleet.lab.veth(host), "up"], check=True)
    check = wait_for(
        lambda: (r := _pgbackrest(fleet, f"{net}.22", "lhr-0", "check")).returncode == 0 and r,
        120,
        "the archive to catch up",
        interval=2.0,
    )
    assert check.returncode == 0
    code, doc = wait_for(
        lambda: _status_when(fleet, failing=False),
        120,
        "status to stop reporting the archiving failure",
        interval=2.0,
    )
    assert not doc["backup"]["failing"]


def test_a_point_in_time_restore_brings_back_exactly_the_rows_before_t_on_every_host(
    fleet: SshFleet,
) -> None:
    """The restore drill across hosts: fra-0's host restores from lhr's repository (TLS),
    Patroni stops and the replicas are emptied on their own hosts; afterwards every node
    holds exactly the rows committed before T and every region takes writes."""
    import psycopg

    fe, net = fleet.fe, fleet.net
    uris = fe.outputs("proxies-eu", show_secrets=True)["connection_uris"]
    password = vault.read_group_secrets(
        vault.client_from_env(fe.env), vault.DEFAULT_MOUNT, vault.secret_path(fe.name, "eu")
    )["superuser_password"]
    w = uris["fra"]["write"]
    with psycopg.connect(w, autocommit=True, connect_timeout=5) as c:
        c.execute("DROP TABLE IF EXISTS drill")
        c.execute("CREATE TABLE drill (id int PRIMARY KEY)")
        c.execute("INSERT INTO drill SELECT generate_series(1, 100)")
    fe.run("backup", "eu", "--type", "incr", timeout=600)
    with psycopg.connect(w, autocommit=True, connect_timeout=5) as c:
        c.execute("INSERT INTO drill SELECT generate_series(101, 150)")
        (t,) = c.execute("SELECT clock_timestamp()").fetchone()
        c.execute("INSERT INTO drill SELECT generate_series(151, 160)")
        c.execute("DELETE FROM drill")  # the mistake
    # a time before the oldest backup: refused, naming the earliest, nothing changed
    long_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=3650)).isoformat()
    refused = fe.run("restore", "eu", "--to", long_ago, "--yes", check=False)
    assert refused.returncode == 1 and "earliest possible time is" in refused.stderr, refused.stderr
    t0 = time.monotonic()
    out = fe.run("restore", "eu", "--to", t.isoformat(), "--yes", timeout=900).stdout
    print(f"\npoint-in-time restore across 3 hosts: {time.monotonic() - t0:.1f} s")
    # each step's own time, on its host
    print("\n".join(ln for ln in out.splitlines() if ln.startswith("pgbackrest_ops.sh:")))
    assert "thrown away" in out and "restore-node on fra-0" in out, out
    for address in (f"{net}.21", f"{net}.22", f"{net}.23"):
        node = psycopg.conninfo.make_conninfo(
            host=address, port=5432, user="postgres", dbname="app", password=password,
            connect_timeout=3,
        )  # fmt: skip
        ids = wait_for(lambda u=node: drill_ids(u), 120, f"the restored rows on {address}", 0.5)
        assert ids == list(range(1, 151)), address
    for i, pair in enumerate(uris.values()):
        with psycopg.connect(pair["write"], autocommit=True, connect_timeout=5) as c:
            c.execute("INSERT INTO drill VALUES (%s)", (1000 + i,))
    check = _pgbackrest(fleet, f"{net}.22", "lhr-0", "check")  # archiving goes on
    assert check.returncode == 0, check.stdout + check.stderr


NODES = {"fra-0": 21, "lhr-0": 22, "arn-0": 23}


def _cron_file(fleet: SshFleet, node: str) -> Path:
    return Path(backup.cron_file(f"{fleet.fe.name}-eu", node))


def _cron(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """A cron.d file's environment settings and its entries (schedule, user, command)."""
    env, entries = {}, []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if "=" in fields[0]:
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip().strip('"')
            continue
        n = 1 if fields[0].startswith("@") else 5
        entries.append((" ".join(fields[:n]), fields[n], line.split(None, n + 1)[n + 1]))
    return env, entries


def _as_cron(fleet: SshFleet, address: str, env: dict[str, str], user: str, command: str):
    """An entry's command as cron runs it: the command field through `sh -c`, as the
    entry's user, in the file's environment (cron adds LOGNAME), from HOME, inside the
    host's network namespace."""
    settings = [f"{k}={v}" for k, v in env.items()]
    return fleet.on_host(
        address, "runuser", "-u", user, "--", "env", "-i", f"--chdir={env['HOME']}",
        *settings, f"LOGNAME={user}", env["SHELL"], "-c", command, timeout=600,
    )  # fmt: skip


def _server_pids(fleet: SshFleet, node: str) -> list[int]:
    conf = _root(fleet) / "pgbackrest" / node / "pgbackrest.conf"
    return [
        pid
        for pid, line in command_lines().items()
        if line.startswith(PGBACKREST) and f"--config={conf} server" in line
    ]


def _main_servers(fleet: SshFleet, node: str) -> list[int]:
    """The servers among them that no other one forked (one per connection)."""
    pids = _server_pids(fleet, node)
    mains = []
    for pid in pids:
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid not in pids:
            mains.append(pid)
    return mains


def _listens(fleet: SshFleet, address: str) -> bool:
    return f"{address}:8432" in fleet.on_host(address, "ss", "-Hltn").stdout


def _lock_free(path: Path) -> bool:
    with open(path, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def _cron_files(fleet: SshFleet) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
    """Every host's cron file, checked: root's, 0644, no secret of the group, every entry
    as the group's user; per node its environment and its commands by schedule."""
    fe, user = fleet.fe, f"{fleet.fe.name}-eu"
    secrets = vault.read_group_secrets(
        vault.client_from_env(fe.env),
        vault.DEFAULT_MOUNT,
        vault.secret_path(fe.name, "eu"),
        also=(vault.BACKUP_KEY,),
    )
    files = {}
    for node in NODES:
        path = _cron_file(fleet, node)
        info = path.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o644), path
        text = path.read_text()
        assert not [k for k, v in secrets.items() if v in text], path
        env, entries = _cron(text)
        assert {u for _, u, _ in entries} == {user}
        files[node] = (env, {s: c for s, _, c in entries})
    return files


def test_cron_entries_bring_the_tls_server_back_and_take_a_due_backup(fleet: SshFleet) -> None:
    """Each host's cron file, each entry run exactly as cron would run it. Never a real
    cron daemon: it would run every file of this machine's /etc/cron.d (which the lab's
    hosts share) as root in this machine's namespace, not the hosts'."""
    fe, net, user = fleet.fe, fleet.net, f"{fleet.fe.name}-eu"
    base = _root(fleet) / "pgbackrest"
    files = _cron_files(fleet)
    # the server on every host; the scheduler's check on the repository host (lhr) only
    assert set(files["lhr-0"][1]) == {"@reboot", "* * * * *", "*/5 * * * *"}
    for node in ("fra-0", "arn-0"):
        assert set(files[node][1]) == {"@reboot", "* * * * *"}

    # fra's server stopped (as by a reboot): its @reboot entry brings it back
    fra = f"{net}.21"
    env, entries = files["fra-0"]
    old = _server_pids(fleet, "fra-0")
    assert old
    for pid in old:
        os.kill(pid, signal.SIGTERM)
    wait_for(
        lambda: not _server_pids(fleet, "fra-0") and not _listens(fleet, fra),
        30,
        "fra's server to stop",
    )
    proc = _as_cron(fleet, fra, env, user, entries["@reboot"])
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: _listens(fleet, fra), 30, "fra's server to listen again")
    (new,) = _main_servers(fleet, "fra-0")
    assert new not in old
    assert int((base / "fra-0" / "run" / "server.pid").read_text()) == new
    # every minute's entry, with every server running: still the one server per host
    for node, octet in NODES.items():
        (before,) = _main_servers(fleet, node)
        env, entries = files[node]
        proc = _as_cron(fleet, f"{net}.{octet}", env, user, entries["* * * * *"])
        assert proc.returncode == 0, proc.stderr
        assert _main_servers(fleet, node) == [before]
    # the repository host backs up fra's node through the restarted server
    check = _pgbackrest(fleet, f"{net}.22", "lhr-0", "check")
    assert check.returncode == 0, check.stdout + check.stderr

    # the scheduler's check: nothing while the newest backup is recent...
    lhr = base / "lhr-0"
    env, entries = files["lhr-0"]
    wait_for(lambda: _info(fleet).get("backup"), 300, "the group's first backup")
    wait_for(lambda: _lock_free(lhr / "run" / "scheduler.lock"), 300, "no scheduler check running")
    count = len(_info(fleet)["backup"])
    proc = _as_cron(fleet, f"{net}.22", env, user, entries["*/5 * * * *"])
    assert proc.returncode == 0, proc.stderr
    assert len(_info(fleet)["backup"]) == count
    # ... and a backup once one is due (a schedule of 0 hours in its settings file)
    settings = lhr / "scheduler.settings"
    text = settings.read_text()
    (lhr / "run" / "scheduler.backoff").unlink(missing_ok=True)  # an earlier failure's
    stanza, _, days = text.split()
    try:
        settings.write_text(f"{stanza} 0 {days}\n")
        proc = _as_cron(fleet, f"{net}.22", env, user, entries["*/5 * * * *"])
        assert proc.returncode == 0, proc.stderr
    finally:
        settings.write_text(text)
    backups = _info(fleet)["backup"]
    assert len(backups) == count + 1 and backups[-1]["type"] == "diff", backups[-1]
    assert f"backup --type=diff of {stanza} done" in (lhr / "log" / "scheduler.log").read_text()

    # a missing cron file is drift: `up` writes it again; then a second `up` is unchanged
    arn = _cron_file(fleet, "arn-0")
    arn_text = arn.read_text()
    arn.unlink()
    fe.run("up", "eu", "-q", timeout=900)
    assert arn.read_text() == arn_text
    again = fe.run("up", "eu", "-q", timeout=900)
    stacks = ("accounts-eu", "networks-eu", "replicas-eu", "proxies-eu")
    rows = [
        ln.split() for ln in again.stdout.splitlines() if ln.split()[:1] in ([s] for s in stacks)
    ]
    assert len(rows) == 4 and all(r[1] == "unchanged" for r in rows), again.stdout


def test_destroy_stops_every_pgbackrest_process_and_removes_the_repository(
    fleet: SshFleet,
) -> None:
    """Last in the module: it takes the fleet down (the fixture's destroy then has
    nothing left to do)."""
    root = _root(fleet)
    assert [c for c in command_lines().values() if f"{root}/pgbackrest/" in c]
    assert all(_cron_file(fleet, node).exists() for node in NODES)
    fleet.fe.run("destroy", "--yes", "-q", timeout=900)
    assert not [c for c in command_lines().values() if f"{root}/pgbackrest/" in c]
    assert not root.exists()
    # no cron file is left to start anything of the group again
    assert not list(Path(backup.CRON_DIR).glob(f"dbfleet-{fleet.fe.name}-eu-*"))
