"""scripts/vault.sh (dbfleet.ops.localvault), scripts/env.sh and dbfleet.vault against real
OpenBao servers on loopback."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import hvac
import pytest

from dbfleet import vault as v
from tests.integration import vault_fixture
from tests.integration.conftest import command_lines
from tests.integration.vault_fixture import REPO, LocalVault, new_local_vault, require_bao

pytestmark = pytest.mark.integration

MOUNT = "secret"

# the shared session fixture, so that this module also proves it works
local_vault = vault_fixture.local_vault


def _alive(pid: int) -> bool:
    """True while /proc/<pid> exists and is not a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] != "Z"


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _client(lv: LocalVault, token: str | None = None) -> hvac.Client:
    return v.client_from_env({"VAULT_ADDR": lv.addr, "VAULT_TOKEN": token or lv.token})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """This module's own server: tests here stop, seal and restart it. Every test leaves it
    running and unsealed; the finalizer stops it."""
    lv = new_local_vault(tmp_path_factory.mktemp("vault-home"), require_bao())
    try:
        t0 = time.monotonic()
        proc = lv.start()
        lv.cold_start_s = time.monotonic() - t0
        lv.cold_start_out = proc.stdout
        yield lv
    finally:
        lv.run("stop", check=False)
        pid = lv.pid()
        assert pid is None or not _alive(pid)


@pytest.fixture
def running(server):
    """The module server, restarted (warm `start`) after the test whatever the test did."""
    yield server
    server.start()


# --------------------------------------------------------------------------------------------
# vault.sh start / status / env, layout


def test_start_prints_one_line_and_lays_out_state(server):
    assert server.cold_start_out == f"vault: {server.addr} (unsealed)\n"
    vdir = server.vault_dir
    assert stat.S_IMODE(vdir.stat().st_mode) == 0o700
    init = vdir / "init.json"
    assert stat.S_IMODE(init.stat().st_mode) == 0o600
    doc = json.loads(init.read_text())
    assert doc["root_token"] == server.token and len(doc["unseal_keys_b64"]) == 1
    config = (vdir / "config.hcl").read_text()
    host_port = server.addr.removeprefix("http://")
    assert f'address         = "{host_port}"' in config
    assert "tls_disable     = true" in config and "ui           = false" in config
    assert 'storage "raft"' in config and f'path                   = "{vdir / "data"}"' in config
    assert (vdir / "data").is_dir() and (vdir / "bao.log").is_file()
    pid = server.pid()
    assert pid and _alive(pid)
    argv = _cmdline(pid)
    assert Path(argv[0]).name == "bao" and "server" in argv
    assert f"-config={vdir / 'config.hcl'}" in argv


def test_status_and_env(server):
    proc = server.run("status")
    assert proc.stdout.startswith(f"vault: {server.addr} (unsealed")
    assert proc.stdout.count("\n") == 1
    out = server.run("env").stdout
    assert f"export VAULT_ADDR={server.addr}\n" in out
    assert f"export VAULT_TOKEN={server.token}\n" in out


def test_warm_start_keeps_the_process(server):
    pid = server.pid()
    t0 = time.monotonic()
    proc = server.start()
    warm = time.monotonic() - t0
    assert proc.stdout == f"vault: {server.addr} (unsealed)\n"
    assert server.pid() == pid and _alive(pid)
    print(f"\ncold start {server.cold_start_s:.2f}s, warm start {warm:.2f}s")


# --------------------------------------------------------------------------------------------
# dbfleet.vault against the server


def test_ensure_creates_every_generated_value_then_returns_the_same(server):
    client = _client(server)
    path = v.secret_path("it", "us")
    first = v.ensure_group_secrets(client, MOUNT, path)
    # the three passwords and the backup passphrase
    assert set(first) == set(v.GENERATED_KEYS)
    assert len(set(first.values())) == len(v.GENERATED_KEYS)
    assert all(len(x) >= 43 for x in first.values())
    assert v.ensure_group_secrets(client, MOUNT, path) == first
    assert v.read_group_secrets(client, MOUNT, path) == first
    meta = client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)
    assert meta["data"]["current_version"] == 1  # the second call wrote nothing


def test_missing_key_is_added_and_others_kept(server):
    client = _client(server)
    path = v.secret_path("it", "partial")
    client.secrets.kv.v2.create_or_update_secret(
        path=path, secret={"app_password": "chosen-by-operator"}, mount_point=MOUNT
    )
    got = v.ensure_group_secrets(client, MOUNT, path)
    assert got["app_password"] == "chosen-by-operator"
    assert set(got) == set(v.GENERATED_KEYS)


def test_concurrent_ensure_agrees(server):
    """Two runs at once on fresh paths: check-and-set makes them return the same values."""
    for round_ in range(5):
        path = v.secret_path("race", f"g{round_}")
        clients = [_client(server), _client(server)]
        barrier = threading.Barrier(2)
        results: list = [None, None]

        def run(i, barrier, client, path, results):
            barrier.wait()
            results[i] = v.ensure_group_secrets(client, MOUNT, path)

        threads = [
            threading.Thread(target=run, args=(i, barrier, clients[i], path, results))
            for i in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert results[0] is not None and results[0] == results[1]
        meta = clients[0].secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)
        assert meta["data"]["current_version"] == 1  # exactly one write won


def test_delete_group_secrets(server):
    client = _client(server)
    path = v.secret_path("it", "gone")
    v.ensure_group_secrets(client, MOUNT, path)
    v.delete_group_secrets(client, MOUNT, path)
    with pytest.raises(v.VaultError, match=f"secret {MOUNT}/{path} does not exist"):
        v.read_group_secrets(client, MOUNT, path)
    v.delete_group_secrets(client, MOUNT, path)  # idempotent


def test_missing_mount(server):
    client = _client(server)
    with pytest.raises(v.VaultError) as err:
        v.ensure_group_secrets(client, "nosuch", v.secret_path("it", "us"))
    assert "KV mount 'nosuch' is missing" in str(err.value)
    assert f"VAULT_ADDR={server.addr}" in str(err.value)


def test_token_without_policy_for_the_path(server):
    root = _client(server)
    root.sys.create_or_update_policy(
        name="dbfleet-other-only",
        policy='path "secret/data/dbfleet/other/*" { capabilities = ["read"] }',
    )
    created = root.auth.token.create(policies=["dbfleet-other-only"], ttl="10m")
    token = created["auth"]["client_token"]
    client = _client(server, token)  # the token is valid: client_from_env accepts it
    path = v.secret_path("it", "us")
    for func in (v.ensure_group_secrets, v.read_group_secrets):
        with pytest.raises(v.VaultError) as err:
            func(client, MOUNT, path)
        text = str(err.value)
        assert "permission denied" in text and f"{MOUNT}/data/{path}" in text
        assert f"VAULT_ADDR={server.addr}" in text and token not in text


def test_wrong_token(server):
    with pytest.raises(v.VaultError) as err:
        _client(server, "s.this-is-not-a-token")
    assert "VAULT_TOKEN is not valid" in str(err.value)
    assert f"VAULT_ADDR={server.addr}" in str(err.value)
    revoked = _client(server).auth.token.create(ttl="10m")["auth"]["client_token"]
    _client(server).auth.token.revoke(revoked)
    with pytest.raises(v.VaultError, match="VAULT_TOKEN is not valid"):
        _client(server, revoked)


def test_sealed_server(running):
    server = running
    client = _client(server)
    path = v.secret_path("it", "us")
    values = v.ensure_group_secrets(client, MOUNT, path)
    client.sys.seal()
    assert server.run("status", check=False).returncode == 2
    with pytest.raises(v.VaultError, match=f"Vault at VAULT_ADDR={server.addr} is sealed"):
        _client(server)
    with pytest.raises(v.VaultError, match="is sealed"):
        v.read_group_secrets(client, MOUNT, path)
    server.start()  # the warm path unseals from init.json
    assert server.run("status").returncode == 0
    assert v.read_group_secrets(_client(server), MOUNT, path) == values


# --------------------------------------------------------------------------------------------
# stop / restart


def test_restart_keeps_values_and_stop_leaves_no_process(running):
    server = running
    client = _client(server)
    path = v.secret_path("it", "persist")
    before = v.ensure_group_secrets(client, MOUNT, path)
    pid = server.pid()
    token = server.token

    proc = server.stop()
    assert proc.stdout == f"vault: {server.addr} (stopped)\n"
    assert not _alive(pid) and not Path(f"/proc/{pid}").exists()
    assert server.pid() is None and not (server.vault_dir / "bao.pid").exists()
    assert (server.vault_dir / "init.json").exists() and (server.vault_dir / "data").is_dir()
    proc = server.run("status", check=False)
    assert proc.returncode == 3 and proc.stdout == f"vault: {server.addr} (down)\n"
    host, port = server.addr.removeprefix("http://").split(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as any server binds
        s.bind((host, int(port)))  # the port is free again (nothing listens on it)
    assert server.stop().returncode == 0  # stopping twice is fine

    t0 = time.monotonic()
    server.start()
    restart = time.monotonic() - t0
    assert server.token == token  # same init.json, same root token
    assert server.pid() != pid
    after = v.ensure_group_secrets(_client(server), MOUNT, path)
    assert after == before
    print(f"\nrestart (start with existing data) {restart:.2f}s")


def test_stopped_server_is_reported_with_vault_addr(running):
    server = running
    client = _client(server)
    server.stop()
    with pytest.raises(v.VaultError) as err:
        _client(server)
    assert str(err.value) == f"cannot reach Vault at VAULT_ADDR={server.addr}: connection refused"
    with pytest.raises(v.VaultError) as err:
        v.ensure_group_secrets(client, MOUNT, v.secret_path("it", "us"))
    assert f"cannot reach Vault at VAULT_ADDR={server.addr}" in str(err.value)


def test_stop_leaves_a_foreign_pid_alone(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    lv.vault_dir.mkdir(mode=0o700)
    # a process of ours that is not bao: stop must not kill it
    victim = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        (lv.vault_dir / "bao.pid").write_text(f"{victim.pid}\n")
        proc = lv.run("stop")
        assert "not our bao server" in proc.stderr
        assert victim.poll() is None
        assert lv.run("status", check=False).returncode == 3
    finally:
        victim.kill()
        victim.wait(timeout=10)


# --------------------------------------------------------------------------------------------
# secrets never on a command line


def _sample_cmdlines(stop: threading.Event, seen: set[str]) -> None:
    me = os.getpid()
    while not stop.is_set():
        seen.update(cmd for pid, cmd in command_lines().items() if pid != me and cmd)


def test_no_secret_on_any_command_line_during_start(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    seen: set[str] = set()
    try:
        for step in ("cold", "restart"):
            done = threading.Event()
            sampler = threading.Thread(target=_sample_cmdlines, args=(done, seen), daemon=True)
            sampler.start()
            try:
                if step == "restart":
                    lv.stop()
                lv.start()  # first: init + unseal + mount; then: unseal from init.json
            finally:
                done.set()
                sampler.join(timeout=10)
        doc = json.loads((lv.vault_dir / "init.json").read_text())
        secrets_ = [doc["root_token"], *doc["unseal_keys_b64"]]
        # the sampler did see the work happen (the helper and the server)
        assert any("dbfleet.ops.localvault" in c for c in seen), sorted(seen)[:20]
        assert any(" server -config=" in c for c in seen)
        leaks = [c for c in seen if any(s in c for s in secrets_)]
        assert leaks == []
        log = (lv.vault_dir / "bao.log").read_text()
        assert not any(s in log for s in secrets_)
    finally:
        lv.run("purge", check=False)


# --------------------------------------------------------------------------------------------
# failures of start, and purge


def test_start_fails_clearly_when_the_port_is_taken(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    host, port = lv.addr.removeprefix("http://").split(":")
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        proc = lv.run("start", check=False)
    assert proc.returncode != 0
    assert lv.addr in proc.stderr or f"{host}:{port}" in proc.stderr
    assert lv.pid() is None


def test_start_fails_with_the_log_tail_when_bao_dies(tmp_path):
    fake = tmp_path / "bin" / "bao"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake bao: cannot start: broken on purpose' >&2\nexit 3\n")
    fake.chmod(0o755)
    lv = new_local_vault(tmp_path / "home", str(fake))
    proc = lv.run("start", check=False)
    assert proc.returncode == 1
    assert "exited during startup" in proc.stderr
    assert "broken on purpose" in proc.stderr  # the tail of bao.log
    assert lv.pid() is None


def test_purge_stops_and_deletes(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    lv.start()
    pid = lv.pid()
    proc = lv.run("purge")
    assert "purged" in proc.stdout
    assert not lv.vault_dir.exists()
    assert not _alive(pid)


# --------------------------------------------------------------------------------------------
# the shared fixture other integration tests use


def test_local_vault_fixture(local_vault):
    assert local_vault.addr.startswith("http://127.0.0.1:")
    assert local_vault.home.is_dir() and (local_vault.home / "vault" / "init.json").exists()
    client = v.client_from_env(local_vault.env)
    got = v.ensure_group_secrets(client, MOUNT, v.secret_path("fixture", "us"))
    assert set(got) == set(v.GENERATED_KEYS)


# --------------------------------------------------------------------------------------------
# the module itself, and what a clone remembers for a new shell


def _module(lv: LocalVault, command: str) -> subprocess.CompletedProcess:
    """`python -m dbfleet.ops.localvault COMMAND`, as the operator could run it."""
    return subprocess.run(
        [sys.executable, "-m", "dbfleet.ops.localvault", command],
        env={**lv.script_env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=vault_fixture.SCRIPT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def test_module_life_cycle_keeps_secrets_across_a_restart(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    try:
        proc = _module(lv, "start")
        assert (proc.returncode, proc.stdout) == (0, f"vault: {lv.addr} (unsealed)\n"), proc.stderr
        lv.token = json.loads((lv.vault_dir / "init.json").read_text())["root_token"]
        before = v.ensure_group_secrets(_client(lv), MOUNT, v.secret_path("mod", "us"))
        pid = lv.pid()
        assert _module(lv, "stop").stdout == f"vault: {lv.addr} (stopped)\n"
        assert not _alive(pid)
        assert _module(lv, "start").returncode == 0
        assert lv.pid() != pid
        assert v.read_group_secrets(_client(lv), MOUNT, v.secret_path("mod", "us")) == before
        env = _module(lv, "env")
        assert env.stdout == f"export VAULT_ADDR={lv.addr}\nexport VAULT_TOKEN={lv.token}\n"
        assert env.stderr == ""
        assert _module(lv, "status").returncode == 0
    finally:
        lv.run("stop", check=False)


def _fresh_shell(lv: LocalVault, script: str, **extra: str) -> subprocess.CompletedProcess:
    """A new `bash` of the clone whose DBFLEET_HOME is lv.home: sources env.sh, runs script."""
    return subprocess.run(
        ["bash", "-c", f'source "{REPO}/scripts/env.sh"; {script}'],
        env={**lv.shell_env(), **extra},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=vault_fixture.SCRIPT_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


_SHOW = 'echo "$VAULT_ADDR"; printf %s "$VAULT_TOKEN" | sha256sum | cut -c1-64; echo "${DBFLEET_SPEC:-}"'


def _shown(lv: LocalVault, **extra: str) -> tuple[list[str], str]:
    proc = _fresh_shell(lv, _SHOW, **extra)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines(), proc.stderr


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def two_clones(tmp_path):
    """Two homes side by side, each with its own server on its own ports; the first was
    started with a fleet file of its own (DBFLEET_SPEC), the second with the default."""
    bao = require_bao()
    a = new_local_vault(tmp_path / "a", bao)
    b = new_local_vault(tmp_path / "b", bao)
    spec = tmp_path / "a-fleet.yaml"
    try:
        a.run("start", extra_env={"DBFLEET_SPEC": str(spec)})
        a.token = a.read_token()
        b.start()
        yield a, b, spec
    finally:
        a.run("stop", check=False)
        b.run("stop", check=False)


def test_a_new_shell_finds_its_own_clones_vault_and_fleet_file(two_clones):
    a, b, spec = two_clones
    assert a.addr != b.addr
    assert _shown(a) == ([a.addr, _sha(a.token), str(spec)], "")
    assert _shown(b) == ([b.addr, _sha(b.token), ""], "")
    # after a stop the address is still this clone's, not the default
    a.stop()
    assert _shown(a)[0][0] == a.addr
    assert (a.home / "vault-addr").read_text().splitlines()[0] == a.addr


def test_a_users_own_vault_and_fleet_file_are_kept(two_clones):
    a, _, _ = two_clones
    lines, err = _shown(
        a,
        VAULT_ADDR="https://vault.example:8200",
        VAULT_TOKEN="mine",
        DBFLEET_SPEC="/my/fleet.yaml",
    )
    assert lines == ["https://vault.example:8200", _sha("mine"), "/my/fleet.yaml"] and err == ""


def test_a_token_of_another_server_is_named_in_one_line(two_clones, tmp_path):
    """Clone a stopped its server; another server (clone c's) now answers at a's address."""
    a, _, _ = two_clones
    a.stop()
    c = LocalVault(home=tmp_path / "c", addr=a.addr, bao_bin=a.bao_bin, cluster_addr=a.cluster_addr)
    try:
        c.start()
        lines, err = _shown(a)
        assert lines[:2] == [a.addr, _sha(a.token)]  # still a's: it says so rather than switch
        assert err.count("\n") == 1
        assert f"the Vault server at {a.addr} does not accept this clone's token" in err
        assert a.token not in err and c.token not in err
        env = a.run("env")
        assert env.stderr == err
        # what every dbfleet command that reads a secret goes through
        with pytest.raises(v.VaultError) as exc:
            v.client_from_env({"VAULT_ADDR": a.addr, "VAULT_TOKEN": a.token})
        assert str(exc.value).startswith(f"VAULT_TOKEN is not valid for VAULT_ADDR={a.addr}")
        assert "\n" not in str(exc.value)
        # and a's own start refuses to take the address over
        proc = a.run("start", check=False)
        assert proc.returncode == 1 and f"something else already answers at {a.addr}" in proc.stderr
    finally:
        c.run("stop", check=False)


def test_env_before_the_first_start_says_what_to_run(tmp_path):
    lv = new_local_vault(tmp_path, require_bao())
    proc = lv.run("env", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1
    assert "run: bash scripts/vault.sh start" in proc.stderr
    # as the README suggests it, in a shell: the eval does nothing, the message is the line
    shell = _fresh_shell(lv, 'eval "$(bash scripts/vault.sh env)"')
    assert "run: bash scripts/vault.sh start" in shell.stderr
