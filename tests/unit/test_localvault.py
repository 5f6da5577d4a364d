"""dbfleet.ops.localvault with hvac replaced by an in-memory fake server (no process, no socket)."""

from __future__ import annotations

import json
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import hvac.exceptions
import pytest
import requests.exceptions

from dbfleet import PROJECT_ROOT
from dbfleet.ops import localvault as lv

ADDR = "http://127.0.0.1:18200"
KEY = "unseal-key-b64"
ROOT_TOKEN = "s.root-token-of-this-clone"


# --------------------------------------------------------------------------------------------
# a fake OpenBao behind the hvac calls the module makes


class FakeResponse:
    def __init__(self, status: int, doc: dict | None) -> None:
        self.status_code = status
        self._doc = doc

    def json(self) -> dict:
        if self._doc is None:
            raise ValueError("no JSON")
        return self._doc


class FakeBao:
    """What a server answers: down, uninitialised, sealed, unsealed; its mounts and tokens."""

    def __init__(self, *, up: bool = True, initialized: bool = False, sealed: bool = True):
        self.up = up
        self.initialized = initialized
        self.sealed = sealed
        self.key = KEY
        self.tokens = {ROOT_TOKEN} if initialized else set()
        self.mounts: dict[str, dict] = {}
        self.calls: list[tuple] = []
        self.health_override: tuple[int, dict | None] | None = None

    def _check_up(self) -> None:
        if not self.up:
            raise requests.exceptions.ConnectionError("connection refused")

    def client(self, addr: str, token: str | None = None, timeout: float = 5.0):
        assert addr == ADDR
        bao = self

        class Sys:
            def read_health_status(self, method: str, standby_ok: bool):
                bao._check_up()
                if bao.health_override:
                    status, doc = bao.health_override
                    return doc if status == 200 and doc is not None else FakeResponse(status, doc)
                doc = {"initialized": bao.initialized, "sealed": bao.sealed}
                if not bao.initialized:
                    return FakeResponse(501, doc)
                if bao.sealed:
                    return FakeResponse(503, doc)
                return doc  # hvac hands back the JSON of a 200

            def initialize(self, secret_shares: int, secret_threshold: int):
                bao._check_up()
                bao.calls.append(("init", secret_shares, secret_threshold, timeout))
                bao.initialized = True
                bao.tokens.add(ROOT_TOKEN)
                return {"keys": ["hex"], "keys_base64": [KEY], "root_token": ROOT_TOKEN}

            def submit_unseal_key(self, key: str):
                bao._check_up()
                bao.calls.append(("unseal",))
                if key != bao.key:
                    raise hvac.exceptions.InvalidRequest(errors=["invalid key"])
                bao.sealed = False
                return {"sealed": False}

            def list_mounted_secrets_engines(self):
                bao._authorised(token)
                return {"data": dict(bao.mounts)}

            def enable_secrets_engine(self, backend_type, path, options, description):
                bao._authorised(token)
                bao.calls.append(("enable", backend_type, path, options))
                bao.mounts[f"{path}/"] = {"type": backend_type, "options": options}

        class Token:
            def lookup_self(self):
                bao._authorised(token)
                return {"data": {"id": "hidden"}}

        return SimpleNamespace(sys=Sys(), auth=SimpleNamespace(token=Token()))

    def _authorised(self, token: str | None) -> None:
        self._check_up()
        if token not in self.tokens:
            raise hvac.exceptions.Forbidden(errors=["permission denied"])


@pytest.fixture
def bao(monkeypatch) -> FakeBao:
    fake = FakeBao()
    monkeypatch.setattr(lv, "client", fake.client)
    monkeypatch.setattr(lv, "POLL_S", 0.0)
    return fake


def server(home: Path, addr: str = ADDR, cluster: str | None = None) -> lv.Server:
    return lv.parse_addresses(addr, cluster, home, "bao")


def write_init(home: Path, token: str = ROOT_TOKEN, key: str = KEY) -> Path:
    path = home / "vault" / "init.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"unseal_keys_b64": [key], "root_token": token}))
    return path


# --------------------------------------------------------------------------------------------
# addresses


def test_addresses_default_cluster_is_the_next_port(tmp_path):
    s = server(tmp_path, "http://localhost:8200/")
    assert s.addr == "http://localhost:8200"  # what VAULT_ADDR becomes: as given, no slash
    assert (s.host, s.port) == ("127.0.0.1", 8200)
    assert s.cluster_addr == "https://127.0.0.1:8201"
    assert (s.cluster_host, s.cluster_port) == ("127.0.0.1", 8201)


@pytest.mark.parametrize(
    ("addr", "cluster", "message"),
    [
        ("https://127.0.0.1:8200", None, "expected http://127.x.y.z:PORT (the local server has no"),
        ("http://10.0.0.1:8200", None, "binds loopback (127.0.0.0/8) only"),
        ("http://127.1:8200", None, "bad loopback address 127.1"),
        ("http://127.0.0.1:0", None, "bad port 0"),
        ("http://127.0.0.1:70000", None, "bad port 70000"),
        ("http://127.0.0.1:8200", "http://127.0.0.1:8201", "expected https://127.x.y.z:PORT"),
        ("http://127.0.0.1:8200", "https://127.0.0.1:8200", "must differ from DBFLEET_VAULT_ADDR"),
    ],
)
def test_bad_addresses_are_refused_with_the_variable(tmp_path, addr, cluster, message):
    with pytest.raises(lv.LocalVaultError, match="DBFLEET_VAULT_") as err:
        server(tmp_path, addr, cluster)
    assert message in str(err.value)


def test_server_from_env_prefers_explicit_then_remembered_then_default(tmp_path):
    base = {"DBFLEET_HOME": str(tmp_path)}
    assert lv.server_from_env(base).addr == lv.DEFAULT_ADDR
    (tmp_path / "vault-addr").write_text("http://127.0.0.1:18300\nhttps://127.0.0.1:18999\n")
    remembered = lv.server_from_env(base)
    assert (remembered.addr, remembered.cluster_addr) == (
        "http://127.0.0.1:18300",
        "https://127.0.0.1:18999",
    )
    again = lv.server_from_env({**base, "DBFLEET_VAULT_ADDR": "http://127.0.0.1:18300"})
    assert again.cluster_addr == "https://127.0.0.1:18999"  # goes with the same API address
    moved = lv.server_from_env({**base, "DBFLEET_VAULT_ADDR": "http://127.0.0.1:18400"})
    assert (moved.addr, moved.cluster_addr) == ("http://127.0.0.1:18400", "https://127.0.0.1:18401")


def test_server_from_env_home_defaults_to_the_clone(monkeypatch):
    s = lv.server_from_env({"DBFLEET_VAULT_ADDR": ADDR})
    assert s.home == PROJECT_ROOT / ".dbfleet" and s.bao_bin == "bao"


def test_remember_records_address_and_absolute_fleet_file(tmp_path):
    s = server(tmp_path)
    lv.remember(s, {"DBFLEET_SPEC": "mine/fleet.yaml"}, cwd=tmp_path / "clone")
    assert (tmp_path / "vault-addr").read_text() == f"{ADDR}\nhttps://127.0.0.1:18201\n"
    assert (tmp_path / "fleet-file").read_text() == f"{tmp_path / 'clone/mine/fleet.yaml'}\n"
    lv.remember(s, {}, cwd=tmp_path)  # no DBFLEET_SPEC: the clone keeps its fleet file
    assert (tmp_path / "fleet-file").read_text() == f"{tmp_path / 'clone/mine/fleet.yaml'}\n"
    assert lv.read_remembered_addr(tmp_path) == (ADDR, "https://127.0.0.1:18201")


# --------------------------------------------------------------------------------------------
# health


@pytest.mark.parametrize(
    ("status", "doc", "state"),
    [
        (200, {"initialized": True, "sealed": False}, "unsealed"),
        (501, {"initialized": False, "sealed": True}, "uninitialized"),
        (503, {"initialized": True, "sealed": True}, "sealed"),
        (429, {"initialized": True, "sealed": False}, "standby"),
        (473, {"initialized": True, "sealed": False}, "standby"),
        (500, None, "http-500"),
        (404, {"unexpected": "shape"}, "http-404"),
    ],
)
def test_health_states(bao, status, doc, state):
    bao.health_override = (status, doc)
    assert lv.health(ADDR) == state


def test_health_is_down_when_nothing_answers(bao):
    bao.up = False
    assert lv.health(ADDR) == "down"


# --------------------------------------------------------------------------------------------
# bootstrap: init, unseal, KV v2


def test_bootstrap_of_a_new_server(bao, tmp_path):
    s = server(tmp_path)
    s.vault_dir.mkdir()
    assert lv.bootstrap(s) is True
    assert ("init", 1, 1, lv.INIT_TIMEOUT_S) in bao.calls
    doc = json.loads(s.init_file.read_text())
    assert doc == {
        "unseal_keys_b64": [KEY],
        "unseal_shares": 1,
        "unseal_threshold": 1,
        "root_token": ROOT_TOKEN,
    }
    assert stat.S_IMODE(s.init_file.stat().st_mode) == 0o600
    assert not bao.sealed
    assert bao.mounts["secret/"] == {"type": "kv", "options": {"version": "2"}}


def test_bootstrap_again_changes_nothing(bao, tmp_path):
    s = server(tmp_path)
    s.vault_dir.mkdir()
    lv.bootstrap(s)
    bao.calls.clear()
    assert lv.bootstrap(s) is True
    assert bao.calls == []


def test_bootstrap_unseals_with_the_key_from_init_json(bao, tmp_path):
    bao.initialized = True
    bao.tokens.add(ROOT_TOKEN)
    bao.mounts["secret/"] = {"type": "kv", "options": {"version": "2"}}
    s = server(tmp_path)
    write_init(tmp_path)
    assert lv.bootstrap(s) is True
    assert bao.calls == [("unseal",)] and not bao.sealed


def test_bootstrap_of_a_server_that_is_down(bao, tmp_path):
    bao.up = False
    assert lv.bootstrap(server(tmp_path)) is False


def test_bootstrap_keeps_a_stale_init_file(bao, tmp_path, capsys):
    s = server(tmp_path)
    old = write_init(tmp_path, token="s.old")
    lv.bootstrap(s)
    stale = list(s.vault_dir.glob("init.json.stale-*"))
    assert len(stale) == 1 and json.loads(stale[0].read_text())["root_token"] == "s.old"
    assert json.loads(old.read_text())["root_token"] == ROOT_TOKEN
    err = capsys.readouterr().err
    assert "storage is empty but" in err and "s.old" not in err


def test_bootstrap_with_a_wrong_key(bao, tmp_path):
    bao.initialized = True
    write_init(tmp_path, key="not-the-key")
    with pytest.raises(lv.LocalVaultError, match=f"unseal at {ADDR} failed: invalid key"):
        lv.bootstrap(server(tmp_path))


def test_bootstrap_without_init_json_of_an_initialised_server(bao, tmp_path):
    bao.initialized = True
    with pytest.raises(
        lv.LocalVaultError, match="is missing but the server is already initialised"
    ):
        lv.bootstrap(server(tmp_path))


def test_bootstrap_refuses_a_secret_mount_that_is_not_kv2(bao, tmp_path):
    bao.initialized, bao.sealed = True, False
    bao.tokens.add(ROOT_TOKEN)
    bao.mounts["secret/"] = {"type": "kv", "options": {"version": "1"}}
    write_init(tmp_path)
    with pytest.raises(lv.LocalVaultError, match="exists but is not KV v2"):
        lv.bootstrap(server(tmp_path))


def test_bootstrap_times_out_when_the_server_stays_standby(bao, tmp_path, monkeypatch):
    bao.initialized = True
    write_init(tmp_path)
    monkeypatch.setattr(lv, "ACTIVE_DEADLINE_S", 0.0)
    real_unseal = lv.unseal

    def unseal_into_standby(s):
        real_unseal(s)
        bao.health_override = (429, {"initialized": True, "sealed": False})

    monkeypatch.setattr(lv, "unseal", unseal_into_standby)
    with pytest.raises(lv.LocalVaultError, match=f"waiting for {ADDR} to become active"):
        lv.bootstrap(server(tmp_path))


# --------------------------------------------------------------------------------------------
# the token check and `env`


def test_token_problem_none_for_our_server(bao, tmp_path):
    bao.initialized, bao.sealed = True, False
    bao.tokens.add(ROOT_TOKEN)
    assert lv.token_problem(server(tmp_path), ROOT_TOKEN) is None


def test_token_problem_names_the_address_not_the_token(bao, tmp_path):
    bao.initialized, bao.sealed = True, False
    bao.tokens = {"s.another-clones-token"}
    text = lv.token_problem(server(tmp_path), ROOT_TOKEN)
    assert text is not None and "\n" not in text
    assert f"the Vault server at {ADDR} does not accept this clone's token" in text
    assert str(tmp_path / "vault" / "init.json") in text and ROOT_TOKEN not in text
    assert "DBFLEET_VAULT_ADDR=http://127.0.0.1:<free port> bash scripts/vault.sh start" in text


@pytest.mark.parametrize(
    ("initialized", "sealed", "expected"),
    [(True, True, "is sealed; run: bash scripts/vault.sh start"), (False, True, "not initialised")],
)
def test_token_problem_when_the_server_is_not_ready(bao, tmp_path, initialized, sealed, expected):
    bao.initialized, bao.sealed = initialized, sealed
    assert expected in lv.token_problem(server(tmp_path), ROOT_TOKEN)


def test_token_problem_silent_when_nothing_answers(bao, tmp_path):
    bao.up = False
    assert lv.token_problem(server(tmp_path), ROOT_TOKEN) is None


def test_env_before_start_says_what_to_run(bao, tmp_path, capsys):
    rc = lv.main(["env"], {"DBFLEET_HOME": str(tmp_path), "DBFLEET_VAULT_ADDR": ADDR})
    out, err = capsys.readouterr()
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("vault.sh: ")
    assert "run: bash scripts/vault.sh start" in err


def test_env_prints_exports_and_warns_about_a_foreign_server(bao, tmp_path, capsys):
    write_init(tmp_path)
    bao.initialized, bao.sealed = True, False
    env = {"DBFLEET_HOME": str(tmp_path), "DBFLEET_VAULT_ADDR": ADDR}
    bao.tokens = {ROOT_TOKEN}
    assert lv.main(["env"], env) == 0
    out, err = capsys.readouterr()
    assert out == f"export VAULT_ADDR={ADDR}\nexport VAULT_TOKEN={ROOT_TOKEN}\n" and err == ""
    bao.tokens = {"s.another-clones-token"}
    assert lv.main(["env"], env) == 0  # the exports stay usable: they are this clone's
    out, err = capsys.readouterr()
    assert out.startswith(f"export VAULT_ADDR={ADDR}\n")
    assert err.count("\n") == 1 and "does not accept this clone's token" in err
    assert ROOT_TOKEN not in err


def test_env_quotes_for_the_shell(bao, tmp_path, capsys):
    write_init(tmp_path, token="s.it's")
    bao.up = False
    lv.main(["env"], {"DBFLEET_HOME": str(tmp_path), "DBFLEET_VAULT_ADDR": ADDR})
    assert "export VAULT_TOKEN='s.it'\"'\"'s'\n" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [[], ["nope"], ["start", "extra"], ["--help"]])
def test_usage(argv, capsys):
    assert lv.main(argv, {}) == lv.EXIT_USAGE
    err = capsys.readouterr().err
    assert "scripts/vault.sh start" in err and "scripts/vault.sh purge" in err


# --------------------------------------------------------------------------------------------
# status


def test_status_without_our_process_is_down(bao, tmp_path, capsys):
    assert lv.cmd_status(server(tmp_path)) == lv.STATUS_DOWN
    assert capsys.readouterr().out == f"vault: {ADDR} (down)\n"


@pytest.mark.parametrize(
    ("setup", "rc", "line"),
    [
        ({"initialized": True, "sealed": False}, 0, "(unsealed, pid 4242)"),
        ({"initialized": True, "sealed": True}, 2, "(sealed, pid 4242)"),
        ({"up": False}, 3, "(down: pid 4242 does not answer)"),
    ],
)
def test_status_with_our_process(bao, tmp_path, monkeypatch, capsys, setup, rc, line):
    for name, value in setup.items():
        setattr(bao, name, value)
    monkeypatch.setattr(lv, "our_pid", lambda s: 4242)
    assert lv.cmd_status(server(tmp_path)) == rc
    assert capsys.readouterr().out == f"vault: {ADDR} {line}\n"


# --------------------------------------------------------------------------------------------
# processes


def test_is_bao_server(tmp_path):
    config = tmp_path / "vault" / "config.hcl"
    assert lv.is_bao_server(["/x/bin/bao", "server", f"-config={config}"], config)
    assert lv.is_bao_server(["python3", "/venv/bin/bao", "server", f"--config={config}"], config)
    assert not lv.is_bao_server(["/x/bin/bao", "server", "-config=/other/config.hcl"], config)
    assert not lv.is_bao_server(["/x/bin/bao", "status", f"-config={config}"], config)
    assert not lv.is_bao_server(["sleep", "server", f"-config={config}"], config)


def test_stop_pid_leaves_a_foreign_process(monkeypatch, tmp_path):
    kills = []
    monkeypatch.setattr(lv, "is_our_bao", lambda pid, config: False)
    monkeypatch.setattr(lv.os, "kill", lambda pid, sig: kills.append((pid, sig)))
    lv.stop_pid(77, tmp_path / "config.hcl")
    assert kills == []


@pytest.mark.parametrize(
    ("gone", "signals"),
    [([True], [signal.SIGTERM]), ([False, True], [signal.SIGTERM, signal.SIGKILL])],
)
def test_stop_pid_terminates_then_kills(monkeypatch, tmp_path, capsys, gone, signals):
    kills: list = []
    answers = iter(gone)
    monkeypatch.setattr(lv, "is_our_bao", lambda pid, config: True)
    monkeypatch.setattr(lv.os, "kill", lambda pid, sig: kills.append(sig))
    monkeypatch.setattr(lv, "wait_gone", lambda pid, deadline: next(answers))
    lv.stop_pid(77, tmp_path / "config.hcl")
    assert kills == signals
    assert ("SIGKILL" in capsys.readouterr().err) == (signal.SIGKILL in signals)


def test_stop_pid_reports_a_survivor(monkeypatch, tmp_path):
    monkeypatch.setattr(lv, "is_our_bao", lambda pid, config: True)
    monkeypatch.setattr(lv.os, "kill", lambda pid, sig: None)
    monkeypatch.setattr(lv, "wait_gone", lambda pid, deadline: False)
    with pytest.raises(lv.LocalVaultError, match="pid 77 survived SIGKILL"):
        lv.stop_pid(77, tmp_path / "config.hcl")


def test_stop_with_a_foreign_pid_file(tmp_path, monkeypatch, capsys):
    s = server(tmp_path)
    s.vault_dir.mkdir()
    s.pidfile.write_text("1\n")  # init: alive, and not our server
    assert lv.cmd_stop(s) == 0
    out, err = capsys.readouterr()
    assert out == f"vault: {ADDR} (stopped)\n" and "not our bao server" in err
    assert not s.pidfile.exists()


# --------------------------------------------------------------------------------------------
# start


class FakeProc:
    def __init__(self, exited: bool) -> None:
        self.pid = 4343
        self._exited = exited

    def poll(self) -> int | None:
        return 3 if self._exited else None


@pytest.fixture
def cold(bao, monkeypatch, tmp_path):
    """cmd_start's process steps replaced: no bao binary, no bind, a fake child."""
    spawned: list[FakeProc] = []

    def spawn(s, binary):
        s.log.write_text("fake bao: broken on purpose\n")
        s.pidfile.write_text("4343\n")
        proc = FakeProc(exited=not bao.up)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(lv, "resolve_bao", lambda name: "/fake/bao")
    monkeypatch.setattr(lv, "precheck", lambda s: None)
    monkeypatch.setattr(lv, "spawn", spawn)
    monkeypatch.setattr(lv, "is_our_bao", lambda pid, config: pid == 4343 and bao.up)
    monkeypatch.setattr(lv, "_reap", lambda pid: None)
    monkeypatch.setattr(lv, "stop_pid", lambda pid, config: None)
    return spawned


def test_cold_start_initialises_and_remembers(bao, cold, tmp_path, capsys):
    s = server(tmp_path)
    env = {"DBFLEET_SPEC": str(tmp_path / "fleet.yaml")}
    assert lv.cmd_start(s, env) == 0
    assert capsys.readouterr().out == f"vault: {ADDR} (unsealed)\n"
    assert stat.S_IMODE(s.vault_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(s.data.stat().st_mode) == 0o700
    config = s.config.read_text()
    assert 'address         = "127.0.0.1:18200"' in config
    assert (
        'cluster_address = "127.0.0.1:18201"' in config
        and f'path                   = "{s.data}"' in config
    )
    assert json.loads(s.init_file.read_text())["root_token"] == ROOT_TOKEN
    assert lv.read_remembered_addr(tmp_path) == (ADDR, "https://127.0.0.1:18201")
    assert (tmp_path / "fleet-file").read_text() == f"{tmp_path / 'fleet.yaml'}\n"


def test_cold_start_when_the_server_dies(bao, cold, tmp_path, capsys):
    bao.up = False
    s = server(tmp_path)
    assert lv.cmd_start(s, {}) == 1
    err = capsys.readouterr().err
    assert "the server (pid 4343) exited during startup" in err
    assert "broken on purpose" in err  # the tail of bao.log
    assert not s.pidfile.exists() and not (tmp_path / "vault-addr").exists()


def test_warm_start_re_uses_the_process(bao, cold, tmp_path, monkeypatch, capsys):
    s = server(tmp_path)
    lv.cmd_start(s, {})
    capsys.readouterr()
    monkeypatch.setattr(lv, "our_pid", lambda s: 4343)
    bao.sealed = True  # as after a seal: the warm path unseals
    assert lv.cmd_start(s, {}) == 0
    assert capsys.readouterr().out == f"vault: {ADDR} (unsealed)\n"
    assert len(cold) == 1 and not bao.sealed


def test_warm_start_replaces_a_process_that_does_not_answer(
    bao, cold, tmp_path, monkeypatch, capsys
):
    s = server(tmp_path)
    s.vault_dir.mkdir()
    stopped = []
    monkeypatch.setattr(lv, "our_pid", lambda s: 999)
    monkeypatch.setattr(lv, "stop_pid", lambda pid, config: stopped.append(pid))
    answers = iter([False, True])
    real_bootstrap = lv.bootstrap
    monkeypatch.setattr(lv, "bootstrap", lambda s: next(answers) and real_bootstrap(s))
    assert lv.cmd_start(s, {}) == 0
    assert stopped == [999] and len(cold) == 1
    assert "server pid 999 does not answer" in capsys.readouterr().err


def test_lock_is_exclusive(tmp_path, monkeypatch):
    monkeypatch.setattr(lv, "LOCK_WAIT_S", 0.0)
    with (
        lv.locked(tmp_path),
        pytest.raises(lv.LocalVaultError, match="another vault.sh is still working"),
        lv.locked(tmp_path),
    ):
        pass
    with lv.locked(tmp_path):  # released
        pass


def test_purge_deletes_the_vault_directory_only(tmp_path, capsys):
    s = server(tmp_path)
    write_init(tmp_path)
    (tmp_path / "vault-addr").write_text(f"{ADDR}\nhttps://127.0.0.1:18201\n")
    assert lv.main(["purge"], {"DBFLEET_HOME": str(tmp_path)}) == 0
    assert capsys.readouterr().out == f"vault: {ADDR} (purged {s.vault_dir})\n"
    assert not s.vault_dir.exists() and (tmp_path / "vault-addr").exists()
