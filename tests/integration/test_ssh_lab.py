"""The ssh lab and HostScript's ssh connection, for real: network namespaces, a bridge,
an sshd per host, the login key and pinned host keys in a local Vault, and OpenSSH's
client with one master connection per host.

The lab gets its own /24 in 198.18.0.0/15, its own DBFLEET_HOME and control directory;
nothing is sent anywhere but to the lab's addresses and the Vault on loopback. Needs
root (namespaces); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from components import hostcmd
from components.hostcmd import Connection, SshError
from dbfleet import vault
from dbfleet.ops.lab import Lab, LabError, free_lab_network, read_spec
from tests.integration.conftest import command_lines

REPO = Path(__file__).resolve().parents[2]
LAB_SH = REPO / "scripts" / "lab.sh"
DEADLINE_S = 20.0
FLEET = """
name: {name}
target: ssh
ssh: {{user: root, key: dbfleet/{name}/ssh}}
groups:
  us:
    zone: US
    primary: iad
    regions:
      iad: {{nodes: 1, hosts: [{{address: {net}.11}}]}}
      ord: {{nodes: 1, hosts: [{{address: {net}.12, port: 2222}}]}}
  eu:
    zone: EU
    primary: fra
    regions:
      fra: {{nodes: 1, hosts: [{{address: {net}.21}}]}}
"""


@dataclass
class LabEnv:
    root: Path
    spec: Path
    env: dict[str, str] = field(repr=False)
    lab: Lab
    opened: list[dict[str, Any]] = field(default_factory=list)

    def sh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(LAB_SH), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"lab.sh {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
        return proc

    def address(self, octet: int) -> str:
        return f"{self.lab.spec.network.network_address + octet}"

    def credentials(self) -> dict[str, str]:
        client = vault.client_from_env(self.env)
        path = self.lab.spec.key_path
        data = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        return {**data, "vault_path": f"secret/{path}"}

    def conn(self, octet: int, credentials: dict[str, str] | None = None, **kw: Any) -> dict:
        host = self.lab.spec.host(self.address(octet))
        conn = {
            **Connection(kind="ssh", host=host.address, port=host.port, **kw).to_inputs(),
            "credentials": credentials or self.credentials(),
        }
        self.opened.append(conn)
        return conn


def _our_ssh_clients(control_dir: Path) -> list[int]:
    """ssh clients (masters) that use our control directory."""
    return [
        pid
        for pid, cmd in command_lines().items()
        if cmd.startswith("ssh ") and str(control_dir) in cmd
    ]


def _poll(what: str, done: Any, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def lab_env(local_vault) -> Iterator[LabEnv]:
    if os.geteuid() != 0 or not Path("/usr/sbin/sshd").is_file() or not shutil.which("ip"):
        pytest.skip("the ssh lab needs root, /usr/sbin/sshd and ip (bash scripts/setup.sh)")
    root = Path(tempfile.mkdtemp(prefix="dbf-lab-"))
    control = root / "c"  # short: unix socket paths are limited
    spec = root / "fleet.yaml"
    name = f"t{random.randrange(16**6):06x}"
    spec.write_text(FLEET.format(name=name, net=free_lab_network()))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "DBFLEET_"))},
        **local_vault.env,
        "DBFLEET_HOME": str(root / "home"),
        "DBFLEET_SPEC": str(spec),
        "DBFLEET_SSH_CONTROL_DIR": str(control),
    }
    the_lab = Lab(read_spec(spec), root / "home")
    le = LabEnv(root, spec, env, the_lab)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DBFLEET_SSH_CONTROL_DIR", str(control))
        try:
            le.sh("up")
            yield le
        finally:
            for conn in le.opened:
                hostcmd.close_master(conn)
            with pytest.MonkeyPatch.context() as vault_env:
                for k, v in local_vault.env.items():
                    vault_env.setenv(k, v)
                the_lab.down()
            # The proxy hop's master leaves with its sshd; anything else of ours is stopped.
            for pid in _our_ssh_clients(control):
                os.kill(pid, signal.SIGTERM)
            shutil.rmtree(root)


def test_lab_up_is_idempotent_and_status_and_exec_see_each_host(lab_env):
    again = lab_env.sh("up")
    assert again.stdout.rstrip().endswith("nothing to do"), again.stdout
    status = lab_env.sh("status")
    lines = status.stdout.splitlines()
    assert len(lines) == 3 and all("sshd up (pid " in ln for ln in lines), status.stdout
    addr = lab_env.address(12)
    shown = lab_env.sh("exec", addr, "--", "ip", "-4", "-o", "addr", "show").stdout
    assert f"inet {addr}/24" in shown and lab_env.address(11) not in shown
    assert lab_env.sh("exec", addr, "--", "sh", "-c", "exit 7", check=False).returncode == 7
    routes = lab_env.sh("exec", addr, "--", "ip", "route", "show", "default").stdout
    assert routes.strip() == "", "no route off the machine"


def test_a_script_over_ssh_runs_inside_the_hosts_namespace(lab_env):
    conn = lab_env.conn(12)
    program = "export GREETING='hello lab'\nip -4 -o addr show eth0\necho \"$GREETING $1\"\n"
    proc = hostcmd.run_ssh(conn, ["bash", "-s", "--", "check"], program, 30)
    assert proc.returncode == 0, proc.stderr
    assert f"inet {lab_env.address(12)}/24" in proc.stdout
    assert proc.stdout.rstrip().endswith("hello lab check")


def test_runs_on_a_host_share_one_master_connection(lab_env):
    conn = lab_env.conn(11)
    for i in range(5):
        proc = hostcmd.run_ssh(conn, ["echo", str(i)], "", 30)
        assert proc.stdout == f"{i}\n"
    assert hostcmd.master_running(conn)
    ns = lab_env.lab.namespace(lab_env.lab.spec.host(lab_env.address(11)))
    established = subprocess.run(
        ["ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", "( sport = :22 )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert len(established) == 1, f"one TCP connection for five runs: {established}"


def test_a_proxy_host_is_jumped_through(lab_env):
    conn = lab_env.conn(21, proxy=f"root@{lab_env.address(11)}:22")
    proc = hostcmd.run_ssh(conn, ["sh", "-c", 'echo "$SSH_CLIENT"'], "", 30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split()[0] == lab_env.address(11), "the hop's address reached the target"


def test_a_changed_host_key_stops_with_one_line(lab_env):
    creds = lab_env.credentials()
    target = lab_env.address(21)
    other_key = [
        ln for ln in creds["known_hosts"].splitlines() if ln.startswith(f"{lab_env.address(11)} ")
    ]
    pins = [ln for ln in creds["known_hosts"].splitlines() if not ln.startswith(f"{target} ")]
    forged = {
        **creds,
        "known_hosts": "\n".join([*pins, f"{target} {other_key[0].split(' ', 1)[1]}"]),
    }
    with pytest.raises(SshError) as err:
        hostcmd.run_ssh(lab_env.conn(21, forged), ["true"], "", 30)
    assert str(err.value) == (
        f"host {target}:22: its host key does not match the one pinned in Vault (known_hosts); "
        f"if the host was rebuilt, update known_hosts at {creds['vault_path']}, else do not connect"
    )


def test_a_removed_login_key_is_named_then_lab_up_restores_it(lab_env):
    host = lab_env.lab.spec.host(lab_env.address(21))
    conn = lab_env.conn(21)
    hostcmd.close_master(conn)
    lab_env.lab.authorized_keys(host).write_text("")
    with pytest.raises(SshError) as err:
        hostcmd.run_ssh(conn, ["true"], "", 30)
    assert str(err.value) == (
        f"host {host.address}:22: refused the login key for user root: check authorized_keys"
    )
    assert f"wrote authorized_keys of {host.address}" in lab_env.sh("up").stdout
    assert hostcmd.run_ssh(conn, ["true"], "", 30).returncode == 0


def test_a_stopped_sshd_is_unreachable_after_the_retries_then_up_restarts_it(lab_env):
    host = lab_env.lab.spec.host(lab_env.address(12))
    conn = lab_env.conn(12, dial_error_limit=2, per_dial_timeout_s=3)
    hostcmd.close_master(conn)
    pid = lab_env.lab.sshd_pid(host)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    _poll("sshd stopped", lambda: lab_env.lab.sshd_pid(host) is None)
    t0 = time.monotonic()
    with pytest.raises(SshError) as err:
        hostcmd.run_ssh(conn, ["true"], "", 30)
    assert str(err.value) == (
        f"host {host.address}:2222: unreachable after 2 dials of up to 3 s (Connection refused)"
    )
    assert time.monotonic() - t0 < 10
    assert f"started sshd of {host.address}:2222" in lab_env.sh("up").stdout
    assert hostcmd.run_ssh(conn, ["true"], "", 30).returncode == 0


def test_lab_down_leaves_nothing_behind(lab_env):
    state = lab_env.lab.state()
    assert state is not None
    pids = [lab_env.lab.sshd_pid(h) for h in lab_env.lab.spec.hosts]
    down = lab_env.sh("down")
    assert "removed bridge" in down.stdout
    namespaces = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=False
    ).stdout
    links = {
        link["ifname"]
        for link in json.loads(
            subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=False).stdout
        )
    }
    for host in state["hosts"]:
        assert host["namespace"] not in namespaces
        assert host["veth"] not in links
    assert state["bridge"] not in links
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids if pid)
    assert not lab_env.lab.dir.exists()
    with pytest.raises(vault.VaultError, match="does not exist"):
        vault.read_group_secrets(
            vault.client_from_env(lab_env.env), "secret", lab_env.lab.spec.key_path
        )
    # The masters' connections ended with their sshd.
    _poll(
        "ssh masters gone",
        lambda: not _our_ssh_clients(Path(lab_env.env["DBFLEET_SSH_CONTROL_DIR"])),
    )
    assert lab_env.sh("down").stdout.rstrip().endswith("nothing to do")
    with pytest.raises(LabError, match="is not up"):
        lab_env.lab.exec_argv(lab_env.address(11), ["true"])
