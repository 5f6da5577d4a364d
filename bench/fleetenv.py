"""A throw-away dbfleet environment for the benchmarks.

Like the integration tests' `make_fleet_env`, every environment is a bench.sandbox
(its own temp directory under /tmp, a copy of the Pulumi project, its own file
backend, passphrase and PULUMI_HOME), with its own fleet name, loopback range
127.<octet>.0.0/16 and its own local Vault (scripts/vault.sh on free ports). It never
touches the user's fleet in .dbfleet/.

`close()` destroys every stack, purges the Vault and removes the directory; it is
also registered with atexit so an interrupted run cleans up after itself.
"""

from __future__ import annotations

import atexit
import json
import random
import shlex
import shutil
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from bench import procs
from bench.sandbox import make_sandbox
from tests.fleets import default_fleet_text

REPO = Path(__file__).resolve().parent.parent
HOOK_DIR = Path(__file__).resolve().parent / "hook"

# The scale figure needs up to 12 regions of one residency zone. The EU zone has only
# 8 regions in the catalogue, the US zone has 12, so the scale group is a US group.
# Ordered so that each step adds regions spread over the map (not only neighbours).
SCALE_REGIONS = ("iad", "ord", "sjc", "dfw", "sea", "atl", "den", "lax", "bos", "mia", "phx", "ewr")
SCALE_PRIMARY = "iad"

EMPTY_PROGRAM = "import pulumi\n"


def scale_fleet_text(name: str, octet: int, regions: int, group: str = "scale") -> str:
    """One group of `regions` US regions, one node each, primary iad."""
    if not 1 <= regions <= len(SCALE_REGIONS):
        raise ValueError(f"the scale group has 1..{len(SCALE_REGIONS)} regions, not {regions}")
    lines = [
        f"name: {name}",
        "target: local",
        "network:",
        f"  cidr: 127.{octet}.0.0/16",
        "groups:",
        f"  {group}:",
        "    zone: US",
        f"    primary: {SCALE_PRIMARY}",
        "    regions:",
    ]
    lines += [f"      {code}: {{nodes: 1}}" for code in SCALE_REGIONS[:regions]]
    return "\n".join(lines) + "\n"


def script_stats(rows: list[dict]) -> dict:
    """Summary of host-script runs ({action, target, start, seconds} each)."""
    actions: dict[str, int] = {}
    slowest: dict[str, float] = {}
    for r in rows:
        actions[r["action"]] = actions.get(r["action"], 0) + 1
        key = f"{r['action']} {r.get('target', '')}".strip()
        slowest[key] = max(slowest.get(key, 0.0), r["seconds"])
    top = sorted(slowest.items(), key=lambda kv: -kv[1])[:5]
    return {
        "count": len(rows),
        "actions": actions,
        "sum_s": sum(r["seconds"] for r in rows),
        "busy_s": procs.union_seconds([(r["start"], r["start"] + r["seconds"]) for r in rows]),
        "slowest": [{"script": k, "seconds": v} for k, v in top],
    }


def free_ports(count: int) -> list[int]:
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def octets_in_use() -> set[int]:
    """Second octets of loopback addresses something listens on (IPv4 TCP)."""
    used: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return used
    for line in lines:
        parts = line.split()
        if len(parts) > 3 and parts[3] == "0A":  # LISTEN
            addr = parts[1].split(":")[0]
            # little-endian hex: the first octet is the last byte
            b = bytes.fromhex(addr)[::-1]
            if b[0] == 127:
                used.add(b[1])
    return used


def pick_octet() -> int:
    """A loopback /16 nobody listens in: not 77 (make up's default), and the
    integration tests pick from 100..249, so the benchmarks pick from 20..99."""
    busy = octets_in_use() | {77}
    choices = [o for o in range(20, 100) if o not in busy]
    if not choices:
        raise RuntimeError("no free 127.x.0.0/16 range in 127.20..127.99")
    return random.choice(choices)


class FleetEnv:
    """One isolated dbfleet environment (project copy, backend, Vault, fleet)."""

    _live: ClassVar[list[FleetEnv]] = []

    def __init__(
        self,
        tag: str,
        fleet_text=default_fleet_text,
        *,
        code: Path = REPO,
        log_dir: Path | None = None,
    ) -> None:
        # `code` is the tree whose dbfleet is measured (a snapshot of a commit, see
        # bench.snapshot); the Python environment is always the repo's .venv.
        self.code = Path(code)
        sandbox = make_sandbox(f"dbfleet-bench-{tag}-", self.code)
        self.root, self.project, self.home = sandbox.root, sandbox.project, sandbox.home
        self.name = f"b{random.randrange(10**6):06d}"
        self.octet = pick_octet()
        self.spec = sandbox.spec
        self.spec.write_text(fleet_text(self.name, self.octet))
        api, cluster = free_ports(2)
        self.vault_addr = f"http://127.0.0.1:{api}"
        self.vault_cluster = f"https://127.0.0.1:{cluster}"
        self.vault_token = ""
        self.log = (log_dir or self.root) / f"{self.root.name}.log"
        # Every host script the dynamic provider runs is timed into this file by
        # bench/hook/sitecustomize.py (one JSON line each; negligible overhead).
        self.script_log = (log_dir or self.root) / f"{self.root.name}.scripts.jsonl"
        base = sandbox.env(
            DBFLEET_VAULT_ADDR=self.vault_addr,
            DBFLEET_VAULT_CLUSTER_ADDR=self.vault_cluster,
            PYTHONPATH=f"{HOOK_DIR}:{self.code}",
            DBFLEET_BENCH_SCRIPT_LOG=str(self.script_log),
            PYTHON=sys.executable,
        )
        venv_bin = str(REPO / ".venv" / "bin")
        if venv_bin not in base.get("PATH", "").split(":"):
            base["PATH"] = venv_bin + ":" + base.get("PATH", "")
        base.setdefault("BAO_BIN", str(REPO / ".venv" / "bin" / "bao"))
        self.base_env = base  # without VAULT_ADDR/VAULT_TOKEN: what `make up` starts from
        self.vault_started = False
        self.closed = False
        FleetEnv._live.append(self)

    # -- environment -------------------------------------------------------------------
    @property
    def env(self) -> dict[str, str]:
        env = dict(self.base_env)
        if self.vault_token:
            env.update(VAULT_ADDR=self.vault_addr, VAULT_TOKEN=self.vault_token)
        return env

    def write_fleet(self, text: str) -> None:
        self.spec.write_text(text)

    # -- Vault -------------------------------------------------------------------------
    def vault(self, command: str, **kw) -> procs.Timed:
        env = dict(self.base_env)
        return procs.run(
            ["bash", str(self.code / "scripts" / "vault.sh"), command], env=env, timeout=180, **kw
        )

    def start_vault(self) -> procs.Timed:
        timed = self.vault("start", log=self.log)
        self.vault_started = True
        self.vault_token = self._read_token()
        return timed

    def _read_token(self) -> str:
        out = self.vault("env").stdout  # never logged: it holds the token
        for line in out.splitlines():
            words = shlex.split(line, comments=True)
            if len(words) == 2 and words[0] == "export" and words[1].startswith("VAULT_TOKEN="):
                return words[1].split("=", 1)[1]
        raise RuntimeError("scripts/vault.sh env printed no VAULT_TOKEN")

    # -- commands ----------------------------------------------------------------------
    def dbfleet(self, *args: str, ok_codes: Sequence[int] | None = (0,), **kw) -> procs.Timed:
        return procs.run(
            [sys.executable, "-m", "dbfleet", *args],
            env=self.env,
            cwd=self.project,
            ok_codes=ok_codes,
            log=self.log,
            **kw,
        )

    def pulumi(
        self,
        *args: str,
        ok_codes: Sequence[int] | None = (0,),
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        **kw,
    ) -> procs.Timed:
        return procs.run(
            ["pulumi", *args, "--non-interactive"],
            env=env or self.env,
            cwd=cwd or self.project,
            ok_codes=ok_codes,
            log=self.log,
            **kw,
        )

    def script(self, path: str, ok_codes: Sequence[int] | None = (0,), **kw) -> procs.Timed:
        """A repo script (e.g. scripts/up.sh) run as `make` would, in this environment."""
        return procs.run(
            ["bash", str(self.code / path)],
            env=self.base_env,
            cwd=self.code,
            ok_codes=ok_codes,
            log=self.log,
            **kw,
        )

    def outputs(self, stack: str, show_secrets: bool = False) -> dict:
        args = ["stack", "output", "--json", "-s", stack]
        if show_secrets:
            args.append("--show-secrets")
        return json.loads(self.pulumi(*args).stdout or "{}")

    def secrets(self, group: str) -> dict[str, str]:
        """The group's database passwords, read from this environment's Vault."""
        import hvac

        client = hvac.Client(url=self.vault_addr, token=self.vault_token)
        doc = client.secrets.kv.v2.read_secret_version(
            path=f"dbfleet/{self.name}/{group}/postgres",
            mount_point="secret",
            raise_on_deleted_version=True,
        )
        return dict(doc["data"]["data"])

    def scripts_during(self, timed: procs.Timed) -> dict:
        """Host scripts that ran while `timed` ran: count, serial sum, and the wall time
        during which at least one ran (the rest of the command is engine + program)."""
        rows = []
        if self.script_log.exists():
            for line in self.script_log.read_text().splitlines():
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if timed.started <= r["start"] <= timed.ended:
                    rows.append(r)
        return script_stats(rows)

    # -- the empty program, on the same backend and toolchain ---------------------------
    def empty_project(self) -> Path:
        """A project whose program is only `import pulumi` (created once)."""
        path = self.root / "empty"
        if not path.exists():
            path.mkdir()
            (path / "Pulumi.yaml").write_text("name: benchempty\nruntime:\n  name: python\n")
            (path / "__main__.py").write_text(EMPTY_PROGRAM)
        return path

    # -- teardown ----------------------------------------------------------------------
    def close(self, keep: bool = False) -> list[str]:
        """Destroys every stack, stops and purges the Vault, removes the directory.
        Returns problems (empty when everything went)."""
        if self.closed:
            return []
        self.closed = True
        problems: list[str] = []
        if self.vault_started:
            try:
                if (self.home / "state").exists():
                    d = self.dbfleet("destroy", "--yes", "-q", ok_codes=None, timeout=900)
                    if d.returncode != 0:
                        problems.append(f"destroy exited {d.returncode}: {d.tail(5)}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"destroy: {exc}")
            try:
                self.vault("purge", ok_codes=None, log=self.log)
            except Exception as exc:  # noqa: BLE001
                problems.append(f"vault purge: {exc}")
        if not keep and not problems:
            shutil.rmtree(self.root, ignore_errors=True)
        if self in FleetEnv._live:
            FleetEnv._live.remove(self)
        return problems


@atexit.register
def _close_all() -> None:
    for fe in list(FleetEnv._live):
        try:
            fe.close()
        except Exception:  # noqa: BLE001, S110
            pass
