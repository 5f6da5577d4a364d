"""HostScript over SSH, with the ssh client replaced (subprocess.run): the client's
options (strict pinned host keys, a private control directory, no key material on a
command line), the 0600 credential files and their removal, dial retries only for
connections that did not come up, the one-line errors, and what the host is sent."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from components import hostcmd
from components.hostcmd import Connection, HostScriptProvider, SshError

KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBzZWNyZXQtbG9naW4ta2V5LW1hdGVyaWFsLWZvci10ZXN0cwAAAJgAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)
KNOWN_HOSTS = "198.18.0.21 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPinnedHostKeyOfFra\n"
CREDS = {"private_key": KEY, "known_hosts": KNOWN_HOSTS, "vault_path": "secret/dbfleet/lab/ssh"}
HOST = "198.18.0.21"


def ssh_conn(**over: Any) -> dict[str, Any]:
    fields = {"kind": "ssh", "host": HOST, **over}
    return {**Connection(**fields).to_inputs(), "credentials": dict(CREDS)}


class FakeSsh:
    """Stands in for the ssh client: records each call with the files it was given,
    and answers `-O check` (master up?), the master's first session and the run."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.master_up = False
        # Answers for the dials (master start, then the script), in order; then 0.
        self.dials: list[tuple[int, str]] = []
        self.run_answer: tuple[int, str, str] = (0, "done\n", "")

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        config = Path(argv[argv.index("-F") + 1])
        files = {
            p.name: (p.read_text(), stat.S_IMODE(p.stat().st_mode)) for p in config.parent.iterdir()
        }
        self.calls.append(
            {
                "argv": list(argv),
                "input": kw.get("input"),
                "dir": config.parent,
                "dir_mode": stat.S_IMODE(config.parent.stat().st_mode),
                "files": files,
            }
        )
        if "-O" in argv:
            return subprocess.CompletedProcess(argv, 0 if self.master_up else 255, "", "")
        if self.dials:
            code, err = self.dials.pop(0)
            if code == 0 and argv[-1] == "true":
                self.master_up = True
            return subprocess.CompletedProcess(argv, code, "", err)
        if argv[-1] == "true":
            self.master_up = True
            return subprocess.CompletedProcess(argv, 0, "", "")
        code, out, err = self.run_answer
        return subprocess.CompletedProcess(argv, code, out, err)

    def runs(self) -> list[dict[str, Any]]:
        """The calls that dialled (not `-O check`)."""
        return [c for c in self.calls if "argv" in c and "-O" not in c["argv"]]


@pytest.fixture
def control_dir(monkeypatch) -> Iterator[Path]:
    # Not under tmp_path: a unix socket path must stay short.
    path = Path(tempfile.mkdtemp(prefix="dbf-"))
    monkeypatch.setenv("DBFLEET_SSH_CONTROL_DIR", str(path / "c"))
    yield path / "c"
    shutil.rmtree(path)


@pytest.fixture
def fake(monkeypatch, control_dir) -> FakeSsh:
    ssh = FakeSsh()
    monkeypatch.setattr(hostcmd.subprocess, "run", ssh)
    monkeypatch.setattr(hostcmd.time, "sleep", lambda s: ssh.calls.append({"slept": s}))
    return ssh


def run(conn: dict[str, Any] | None = None, **kw: Any) -> subprocess.CompletedProcess[str]:
    return hostcmd.run_script(
        conn or ssh_conn(),
        "account.sh",
        "create",
        kw.get("environment", {"RUN_AS": "dbfleet-eu"}),
        kw.get("secrets", {"PG_APP_PASSWORD": "app-Secret-1"}),
    )


def config_of(call: dict[str, Any]) -> dict[str, str]:
    text, _mode = call["files"]["config"]
    return dict(line.strip().split(" ", 1) for line in text.splitlines() if line.strip())


# --- the client's options -------------------------------------------------------


def test_the_ssh_client_checks_pinned_host_keys_strictly_and_reads_no_user_config(fake):
    proc = run()
    assert proc.returncode == 0
    final = fake.runs()[-1]
    argv = final["argv"]
    assert argv[:2] == ["ssh", "-F"], "a config file of ours: nothing from ~/.ssh or /etc/ssh"
    assert argv[argv.index("-l") + 1] == "root" and argv[argv.index("-p") + 1] == "22"
    assert argv[-3:] == ["--", HOST, "bash -s -- create"]
    opts = config_of(final)
    assert opts["StrictHostKeyChecking"] == "yes"
    assert opts["BatchMode"] == "yes"
    assert opts["GlobalKnownHostsFile"] == "/dev/null"
    assert opts["UserKnownHostsFile"] == f'"{final["dir"] / "known_hosts"}"'
    assert opts["IdentitiesOnly"] == "yes" and opts["IdentityAgent"] == "none"
    assert opts["ConnectTimeout"] == "15"
    assert opts["ControlMaster"] == "auto" and opts["ControlPersist"] == "60"


def test_a_login_other_than_root_runs_the_script_through_sudo(fake):
    run(ssh_conn(user="ops"))
    argv = fake.runs()[-1]["argv"]
    assert argv[argv.index("-l") + 1] == "ops"
    assert argv[-1] == "sudo -n -- bash -s -- create"


def test_no_key_material_on_any_command_line(fake):
    run()
    for call in fake.runs():
        line = " ".join(call["argv"])
        assert "PRIVATE KEY" not in line and "b3BlbnNzaC1rZXkt" not in line
        assert "AAAAC3NzaC1lZDI1NTE5" not in line


def test_the_control_path_lies_in_a_private_directory_of_this_user(fake, control_dir):
    run()
    control_path = config_of(fake.runs()[-1])["ControlPath"].strip('"')
    assert control_path.startswith(f"{control_dir}/") and control_path.endswith("-%C")
    info = control_dir.lstat()
    assert stat.S_IMODE(info.st_mode) == 0o700 and info.st_uid == os.getuid()
    assert len(control_path.replace("%C", "x" * 40)) + 17 <= 107, "fits a unix socket"


def test_a_control_directory_open_to_others_or_a_symlink_is_refused(fake, control_dir):
    control_dir.mkdir(mode=0o755)
    control_dir.chmod(0o755)
    with pytest.raises(SshError, match="open to other users"):
        run()
    control_dir.rmdir()
    elsewhere = Path(tempfile.mkdtemp(prefix="dbf-x-"))
    try:
        control_dir.symlink_to(elsewhere)
        with pytest.raises(SshError, match="not a directory of user"):
            run()
    finally:
        control_dir.unlink()
        shutil.rmtree(elsewhere)
    assert not fake.runs(), "nothing was dialled"


def test_key_and_known_hosts_are_0600_files_in_a_0700_dir_removed_afterwards(fake):
    run()
    final = fake.runs()[-1]
    assert final["dir_mode"] == 0o700
    assert final["files"]["id"] == (KEY, 0o600)
    assert final["files"]["known_hosts"] == (KNOWN_HOSTS, 0o600)
    assert final["files"]["config"][1] == 0o600
    assert not any(c["dir"].exists() for c in fake.runs()), "the run's files are gone"


def test_the_files_are_removed_when_the_connection_fails_too(fake):
    fake.dials = [(255, "Host key verification failed.\n" + _changed(HOST))]
    with pytest.raises(SshError):
        run()
    assert not any(c["dir"].exists() for c in fake.runs())


def test_one_master_connection_serves_every_run_on_the_host(fake):
    for _ in range(3):
        run()
    masters = [c for c in fake.runs() if c["argv"][-1] == "true"]
    assert len(masters) == 1, "one handshake for three runs"
    assert len(fake.runs()) == 4


def test_a_proxy_is_jumped_through_with_the_same_pins_for_the_target_only(fake):
    run(ssh_conn(proxy="ops@198.18.0.2:2222"))
    text = fake.runs()[-1]["files"]["config"][0]
    assert f"Host {HOST}\n  ProxyJump ops@198.18.0.2:2222\n" in text
    assert text.index("StrictHostKeyChecking yes") < text.index("Host "), "options for every hop"


# --- what the host is sent ----------------------------------------------------------


def test_credentials_are_never_sent_to_the_host(fake):
    run()
    sent = fake.runs()[-1]["input"]
    assert "export PG_APP_PASSWORD=app-Secret-1\n" in sent and "export RUN_AS=dbfleet-eu\n" in sent
    preamble = sent.split("\n#!", 1)[0]
    assert "PRIVATE KEY" not in sent and "b3BlbnNzaC1rZXkt" not in sent
    assert KNOWN_HOSTS.strip() not in sent and "credentials" not in preamble


def test_the_provider_gives_the_credentials_to_the_client_only(fake):
    props = {
        "name": "fra-0-server",
        "connection": Connection(kind="ssh", host=HOST).to_inputs(),
        "credentials": dict(CREDS),
        "script": "account.sh",
        "environment": {"RUN_AS": "dbfleet-eu"},
        "secret_environment": {"PG_APP_PASSWORD": "app-Secret-1"},
        "timeout_s": 60,
    }
    HostScriptProvider().create(props)
    final = fake.runs()[-1]
    assert final["files"]["id"][0] == KEY
    assert "PRIVATE KEY" not in final["input"]


# --- retries ------------------------------------------------------------------------


def test_a_failed_dial_is_tried_again_with_backoff(fake):
    refused = f"ssh: connect to host {HOST} port 22: Connection refused\n"
    fake.dials = [(255, refused), (255, refused)]
    assert run().returncode == 0
    assert [c["slept"] for c in fake.calls if "slept" in c] == [0.5, 1.0]
    assert len([c for c in fake.runs() if c["argv"][-1] == "true"]) == 3


def test_an_unreachable_host_fails_after_the_dial_error_limit(fake):
    fake.dials = [(255, f"ssh: connect to host {HOST} port 22: No route to host\n")] * 5
    with pytest.raises(SshError) as err:
        run(ssh_conn(dial_error_limit=3, per_dial_timeout_s=2))
    assert str(err.value) == (
        f"host {HOST}:22: unreachable after 3 dials of up to 2 s (No route to host)"
    )
    assert len(fake.runs()) == 3
    assert config_of(fake.runs()[0])["ConnectTimeout"] == "2"


@pytest.mark.parametrize(
    "answer",
    [
        (1, "", "account.sh: cannot create user\n"),
        # A script's own exit 255 (with its own "Connection refused") is not a dial.
        (255, "", "psql: error: connection to server failed: Connection refused\n"),
    ],
)
def test_a_failing_script_is_not_run_again(fake, answer):
    fake.run_answer = answer
    proc = run()
    assert proc.returncode == answer[0]
    assert len([c for c in fake.runs() if c["argv"][-1] != "true"]) == 1
    assert not [c for c in fake.calls if "slept" in c]


# --- errors ----------------------------------------------------------------------------


def _changed(host: str) -> str:
    return (
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        f"Host key for {host} has changed and you have requested strict checking.\n"
        "Host key verification failed.\n"
    )


ERRORS: dict[str, tuple[str, str]] = {
    "changed host key": (
        _changed(HOST),
        (
            f"host {HOST}:22: its host key does not match the one pinned in Vault (known_hosts); "
            "if the host was rebuilt, update known_hosts at secret/dbfleet/lab/ssh, "
            "else do not connect"
        ),
    ),
    "unknown host key": (
        (
            f"No ED25519 host key is known for {HOST} and you have requested strict checking.\n"
            "Host key verification failed.\n"
        ),
        (
            f"host {HOST}:22: no host key is pinned for it in Vault (known_hosts at "
            "secret/dbfleet/lab/ssh); add its public host key there, checked out of band "
            "(dbfleet never trusts a host key on first use)"
        ),
    ),
    "login refused": (
        f"root@{HOST}: Permission denied (publickey).\n",
        f"host {HOST}:22: refused the login key for user root: check authorized_keys",
    ),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_a_refused_connection_stops_at_once_with_one_line_naming_the_host(fake, case):
    stderr, message = ERRORS[case]
    fake.dials = [(255, stderr)]
    with pytest.raises(SshError) as err:
        run()
    assert str(err.value) == message
    assert len(fake.runs()) == 1, "not retried"


def test_the_proxys_changed_host_key_names_the_proxy(fake):
    fake.dials = [(255, _changed("198.18.0.2"))]
    with pytest.raises(SshError, match=rf"^proxy root@198.18.0.2 of host {HOST}:22: its host key"):
        run(ssh_conn(proxy="root@198.18.0.2"))


def test_error_text_never_carries_key_material(fake):
    line = KEY.splitlines()[1]
    fake.dials = [(255, f"ssh: connect to host {HOST} port 22: odd {line}\n")]
    with pytest.raises(SshError) as err:
        run(ssh_conn(dial_error_limit=1))
    assert line not in str(err.value) and "[secret]" in str(err.value)


def test_no_credentials_is_an_error_before_any_dial(fake):
    conn = {**ssh_conn(), "credentials": {"private_key": KEY}}
    with pytest.raises(SshError, match=rf"^host {HOST}:22: no ssh credentials"):
        run(conn)
    assert not fake.calls


# --- the connection and the provider's diff ---------------------------------------------


def test_a_local_connections_inputs_are_what_deployed_stacks_hold():
    assert hostcmd.LOCAL.to_inputs() == {
        "kind": "local",
        "host": "localhost",
        "user": "",
        "port": 22,
    }


def test_an_ssh_connections_inputs():
    conn = Connection(kind="ssh", host=HOST, port=2222, user="ops", proxy="198.18.0.2")
    assert conn.to_inputs() == {
        "kind": "ssh",
        "host": HOST,
        "user": "ops",
        "port": 2222,
        "proxy": "198.18.0.2",
        "dial_error_limit": 10,
        "per_dial_timeout_s": 15,
    }
    assert "credentials" not in Connection(kind="ssh", host=HOST, credentials=CREDS).to_inputs()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"host": "bad host"}, "not an IP address or DNS name"),
        ({"port": 0}, "not in 1..65535"),
        ({"user": "-oProxyCommand=x"}, "not a user name"),
        ({"proxy": "a@b@c"}, "is not user@host:port"),
        ({"proxy": "-oProxyCommand=x"}, "is not user@host:port"),
        ({"dial_error_limit": 0}, "dial_error_limit"),
        ({"per_dial_timeout_s": 0}, "per_dial_timeout_s"),
    ],
)
def test_an_ssh_connection_is_checked(fields, message):
    with pytest.raises(ValueError, match=message):
        Connection(kind="ssh", **{"host": HOST, **fields})


def test_a_local_connection_takes_no_credentials():
    with pytest.raises(ValueError, match="no ssh credentials"):
        Connection(credentials=CREDS)


def _props(**over: Any) -> dict[str, Any]:
    props = {
        "name": "fra-0-server",
        "connection": Connection(kind="ssh", host=HOST).to_inputs(),
        "credentials": dict(CREDS),
        "script": "patroni.sh",
        "script_sha": "a" * 64,
        "environment": {"NODE_DIR": "/srv/d/fra-0"},
        "secret_environment": {"PG_APP_PASSWORD": "x-Secret"},
        "replace_on_env": ["NODE_DIR"],
        "check_drift": False,
    }
    props.update(over)
    return props


CHANGES: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], bool, list[str]]] = {
    "a rotated login key": (
        lambda p: {**p, "credentials": {**CREDS, "private_key": "new"}},
        False,
        [],
    ),
    "new pins": (lambda p: {**p, "credentials": {**CREDS, "known_hosts": "x y z\n"}}, False, []),
    "a proxy": (
        lambda p: {**p, "connection": {**p["connection"], "proxy": "198.18.0.2"}},
        False,
        [],
    ),
    "dial settings": (
        lambda p: {**p, "connection": {**p["connection"], "dial_error_limit": 3}},
        False,
        [],
    ),
    "another host": (
        lambda p: {**p, "connection": {**p["connection"], "host": "198.18.0.22"}},
        True,
        ["connection"],
    ),
}


@pytest.mark.parametrize("case", sorted(CHANGES))
def test_only_the_hosts_identity_is_a_change(case):
    change, changes, replaces = CHANGES[case]
    diff = HostScriptProvider().diff("id", _props(), change(_props()))
    assert (diff.changes, diff.replaces) == (changes, replaces)


def test_an_ssh_resource_without_credentials_fails_its_check():
    props = _props()
    del props["credentials"]
    result = HostScriptProvider().check({}, props)
    assert [f.property for f in result.failures] == ["credentials"]
    assert HostScriptProvider().check({}, _props()).failures == []


def test_drift_is_asked_with_todays_credentials(monkeypatch):
    seen: list[Any] = []

    def fake_run_script(connection, *_args, **_kw):
        seen.append(connection.get("credentials"))
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(hostcmd, "run_script", fake_run_script)
    rotated = {**CREDS, "private_key": "rotated"}
    HostScriptProvider().diff(
        "id", _props(check_drift=True), _props(check_drift=True, credentials=rotated)
    )
    assert seen == [rotated]
