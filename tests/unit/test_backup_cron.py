"""The ssh target's backups under cron (docs/backups.md, "Processes and the scheduler"):
the cron file pgbackrest.sh renders per host, the scheduler's `once` check and the TLS
server's starter, run against a fake pgBackRest (no host, no cron daemon)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import backup
from components.hostcmd import SCRIPTS_DIR, Connection
from dbfleet.program.layers.accounts import HOST_PACKAGES
from tests.unit import test_backups

SSH = Connection(kind="ssh", host="10.1.0.2", user="dbfleet")
FRA = backup.Node("/d/demo-eu/fra-0/pgdata", 5432, "/d/demo-eu/fra-0/run")
LHR = backup.Node("/d/demo-eu/lhr-0/pgdata", 5432, "/d/demo-eu/lhr-0/run")
SECRETS = {
    "PG_BACKUP_PASSPHRASE": "passphrase-never-in-cron",
    "PG_SUPERUSER_PASSWORD": "superuser-never-in-cron",
    "TLS_KEY": "a2V5LW5ldmVyLWluLWNyb24=",
}


def host_args(**changes) -> backup.HostBackupsArgs:
    """test_backups' repository host (lhr-0, fra-0 its peer), as this file's login and fleet."""
    return test_backups.host_args(**{"connection": SSH, "fleet": "demo", **changes})


NODE_HOST = {"name": "fra-0", "address": "10.1.0.1", "repo": False, "peers": (), "node": FRA}


def render(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`pgbackrest.sh render-cron`: the host's cron file, nothing changed."""
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / "pgbackrest.sh"), "render-cron"],
        env={"PATH": "/usr/bin:/bin", **env, **SECRETS},
        capture_output=True,
        text=True,
        check=False,
    )


def entries(text: str) -> list[tuple[str, str, str]]:
    """(schedule, user, command) of every entry of a cron.d file."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#") or "=" in line.split()[0]:
            continue
        fields = line.split()
        n = 1 if fields[0].startswith("@") else 5
        out.append((" ".join(fields[:n]), fields[n], " ".join(fields[n + 1 :])))
    return out


def test_the_repository_hosts_cron_file_starts_its_server_and_runs_the_schedulers_check():
    proc = render(host_args().environment())
    assert proc.returncode == 0, proc.stderr
    first, text = proc.stdout.split("\n", 1)
    assert first == f"# {backup.cron_file('demo-eu', 'lhr-0')}"
    assert first == "# /etc/cron.d/dbfleet-demo-eu-lhr-0"
    d = "/d/demo-eu/pgbackrest/lhr-0"
    server = f"/bin/bash {d}/server.sh {d} /usr/bin/pgbackrest"
    assert entries(text) == [
        ("@reboot", "demo-eu", server),
        ("* * * * *", "demo-eu", server),
        ("*/5 * * * *", "demo-eu", f"/bin/bash {d}/scheduler.sh {d} once"),
    ]
    assert text.startswith("# Managed by dbfleet (pgbackrest.sh)") and "fleet=demo" in text
    # cron's job: a plain shell, no home to change into, no mail without an MTA
    for setting in ("SHELL=/bin/sh", "PATH=/usr/bin:/bin", "HOME=/", 'MAILTO=""'):
        assert setting in text.splitlines()
    # a percent sign would be a newline to cron; no secret, no secret's name
    assert "%" not in text
    assert not [v for v in (*SECRETS, *SECRETS.values()) if v in text]


def test_a_node_hosts_cron_file_only_keeps_its_server_running():
    proc = render(host_args(**NODE_HOST).environment())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# /etc/cron.d/dbfleet-demo-eu-fra-0\n")
    assert [(s, u) for s, u, _ in entries(proc.stdout)] == [
        ("@reboot", "demo-eu"),
        ("* * * * *", "demo-eu"),
    ]
    assert "scheduler.sh" not in proc.stdout


def test_a_group_of_one_host_has_no_server_but_the_schedulers_check():
    proc = render(host_args(peers=()).environment())
    assert proc.returncode == 0, proc.stderr
    assert [s for s, _, _ in entries(proc.stdout)] == ["*/5 * * * *"]


@pytest.mark.parametrize(
    ("over", "says"),
    [
        ({"BACKUP_MODE": "local"}, "no cron file"),
        ({"RUN_AS": "demo-eu * * * * * root"}, "is not a user name"),
        ({"RUN_AS": "root"}, "must not be root"),
        ({"STANZA": "demo_eu"}, "is not a stanza name"),
        ({"BACKUP_DIR": "/d/demo-eu/pgbackrest/lhr.0"}, "characters cron ignores"),
        ({"PGBACKREST_BIN": "/usr/bin/pg backrest"}, "PGBACKREST_BIN may only contain"),
    ],
)
def test_what_cron_would_misread_is_refused(over, says):
    proc = render({**host_args().environment(), **over})
    assert proc.returncode == 1 and says in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_the_ssh_hosts_get_cron_from_their_package_manager():
    assert "cron" in HOST_PACKAGES


# --- the programs cron runs, against a fake pgBackRest --------------------------------
FAKE_PGBACKREST = """#!/bin/bash
# A stand-in for pgBackRest: `info` prints $FAKE_INFO, `backup` records its
# arguments and exits with $FAKE_BACKUP_EXIT, `server` sleeps until killed
# (one process, its arguments kept, as the real server's).
printf '%s\\n' "$*" >>"$FAKE_CALLS"
case " $* " in
*" info "*) cat "$FAKE_INFO" ;;
*" backup "*) exit "$(cat "$FAKE_BACKUP_EXIT")" ;;
*" server "*) exec python3 -c 'import time; time.sleep(300)' "$@" ;;
esac
"""


@pytest.fixture
def host_dir(tmp_path: Path) -> Iterator[Path]:
    """A host's backup directory with the two programs as pgbackrest.sh installs them,
    a fake `pgbackrest` first on PATH; the processes started in it are killed after."""
    d = tmp_path / "lhr-0"
    for sub in ("log", "run", "bin"):
        (d / sub).mkdir(parents=True)
    (d / "pgbackrest.conf").write_text("[global]\n")
    (d / "scheduler.settings").write_text("demo-eu 24 7\n")
    (d / "scheduler.sh").write_text((SCRIPTS_DIR / "pgbackrest_scheduler").read_text())
    (d / "server.sh").write_text((SCRIPTS_DIR / "pgbackrest_server").read_text())
    fake = d / "bin" / "pgbackrest"
    fake.write_text(FAKE_PGBACKREST)
    fake.chmod(0o755)
    (d / "info.json").write_text('[{"backup": []}]')
    (d / "backup_exit").write_text("0")
    yield d
    pid_file = d / "run" / "server.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            # only while it is still the fake server of this directory
            if f"--config={d}/".encode() in b"\0".join(server_cmdline(pid)):
                os.kill(pid, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            pass


def run_line(d: Path, *argv: str) -> subprocess.CompletedProcess:
    """A program of the cron file run as cron runs it: an environment of its own."""
    env = {
        "PATH": f"{d / 'bin'}:/usr/bin:/bin",
        "HOME": "/",
        "FAKE_CALLS": str(d / "calls"),
        "FAKE_INFO": str(d / "info.json"),
        "FAKE_BACKUP_EXIT": str(d / "backup_exit"),
    }
    return subprocess.run(
        ["/bin/bash", *argv], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def calls(d: Path) -> list[str]:
    path = d / "calls"
    return path.read_text().splitlines() if path.exists() else []


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def server_cmdline(pid: int) -> list[bytes]:
    """The started server's command line, once setsid and env have exec'd into it
    (the pid file is written as soon as the job is forked; setsid's own command line
    names the server too, before it has made the session)."""
    deadline = time.monotonic() + 10
    while True:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        started = b"server" in cmdline and Path(cmdline[0].decode()).name not in ("setsid", "env")
        if started or time.monotonic() > deadline:
            return cmdline
        time.sleep(0.05)  # poll interval


def backups_in(d: Path) -> list[str]:
    return [c for c in calls(d) if " backup" in c]


def test_the_schedulers_check_takes_the_first_full_backup_and_then_nothing(host_dir: Path):
    d = host_dir
    proc = run_line(d, str(d / "scheduler.sh"), str(d), "once")
    assert proc.returncode == 0, proc.stderr
    assert backups_in(d) == [f"--config={d}/pgbackrest.conf --stanza=demo-eu --type=full backup"]
    assert "backup --type=full of demo-eu done" in (d / "log" / "scheduler.log").read_text()
    # a backup taken a minute ago: nothing is due for 24 h
    stop = time.time() - 60
    (d / "info.json").write_text(
        f'[{{"backup": [{{"type": "full", "timestamp": {{"stop": {stop}}}}}]}}]'
    )
    assert run_line(d, str(d / "scheduler.sh"), str(d), "once").returncode == 0
    assert len(backups_in(d)) == 1
    # the schedule shortened below the newest backup's age: a differential is due
    (d / "scheduler.settings").write_text("demo-eu 0 7\n")
    assert run_line(d, str(d / "scheduler.sh"), str(d), "once").returncode == 0
    assert backups_in(d)[1].endswith("--type=diff backup")


def test_a_failed_backup_holds_the_next_checks_back(host_dir: Path):
    d = host_dir
    (d / "backup_exit").write_text("1")
    run_line(d, str(d / "scheduler.sh"), str(d), "once")
    assert len(backups_in(d)) == 1
    assert int((d / "run" / "scheduler.backoff").read_text()) > time.time() + 500
    run_line(d, str(d / "scheduler.sh"), str(d), "once")
    assert len(backups_in(d)) == 1, "a second attempt within the back-off"
    (d / "run" / "scheduler.backoff").write_text(f"{int(time.time()) - 1}\n")
    (d / "backup_exit").write_text("0")
    run_line(d, str(d / "scheduler.sh"), str(d), "once")
    assert len(backups_in(d)) == 2 and not (d / "run" / "scheduler.backoff").exists()


def test_a_check_leaves_while_another_holds_the_lock(host_dir: Path):
    d = host_dir
    with open(d / "run" / "scheduler.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert run_line(d, str(d / "scheduler.sh"), str(d), "once").returncode == 0
        assert calls(d) == []
    assert run_line(d, str(d / "scheduler.sh"), str(d), "once").returncode == 0
    assert len(backups_in(d)) == 1


def test_the_servers_starter_starts_one_server_and_again_after_it_stopped(host_dir: Path):
    d = host_dir
    fake = str(d / "bin" / "pgbackrest")
    line = (str(d / "server.sh"), str(d), fake)
    assert run_line(d, *line).returncode == 0
    first = int((d / "run" / "server.pid").read_text())
    cmdline = server_cmdline(first)
    assert cmdline[-3:-1] == [f"--config={d}/pgbackrest.conf".encode(), b"server"]
    # its own session (cron's job or dbfleet's ssh session may end)
    assert os.getsid(first) == first
    # the periodic start while it runs: nothing new
    assert run_line(d, *line).returncode == 0
    assert int((d / "run" / "server.pid").read_text()) == first
    # it inherits no environment (no secret) but the pgpass file's name
    environ = Path(f"/proc/{first}/environ").read_bytes().split(b"\0")
    names = {e.split(b"=")[0] for e in environ if e} - {b"PWD", b"SHLVL", b"_"}  # the fake's bash
    assert names == {b"PATH", b"PGPASSFILE"}
    os.kill(first, signal.SIGTERM)
    wait_gone(first)
    assert run_line(d, *line).returncode == 0
    second = int((d / "run" / "server.pid").read_text())
    assert second != first and Path(f"/proc/{second}").exists()


def test_the_servers_starter_does_nothing_once_the_configuration_is_gone(host_dir: Path):
    d = host_dir
    (d / "pgbackrest.conf").unlink()
    assert run_line(d, str(d / "server.sh"), str(d), str(d / "bin" / "pgbackrest")).returncode == 0
    assert calls(d) == [] and not (d / "run" / "server.pid").exists()
