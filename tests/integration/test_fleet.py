"""The whole default fleet on the real engine, real OpenBao, PostgreSQL and HAProxy.

Tests run in file order against one fleet: up, prove, idempotence, secrecy, down. The
fleet is the session's `default_fleet`, which test_app_client.py uses before this module
(tests/conftest.py SHARED); its first `up` is the one proven here.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import hvac
import pytest

from dbfleet import vault
from dbfleet.model.stackname import LAYERS
from tests.integration.conftest import command_lines

GROUPS = ("us", "eu")
STACKS = [f"{layer}-{g}" for g in GROUPS for layer in LAYERS]


def _pids_under(root: Path) -> list[int]:
    """Processes whose command line points into `root` (postgres, haproxy)."""
    return [pid for pid, cmd in command_lines().items() if str(root) in cmd]


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@pytest.fixture(scope="module")
def fleet_env(default_fleet):
    """The shared default fleet (not the session's `fleet_env`, which other modules on
    the same worker may have deployed with other settings, e.g. the passphrase
    provider)."""
    return default_fleet[0]


@pytest.fixture(scope="module")
def deployed(default_fleet):
    """The result of the fleet's first `up` (from nothing; it succeeded)."""
    return default_fleet[1]


def test_up_applies_every_stack_in_order(deployed):
    table = deployed.stdout
    for stack in STACKS:
        line = next(ln for ln in table.splitlines() if ln.startswith(stack))
        assert "applied" in line, table
    # accounts before networks before replicas before proxies, within each group
    for g in GROUPS:
        positions = [table.index(f"{layer}-{g} ") for layer in LAYERS]
        assert positions == sorted(positions)


def test_every_stack_is_encrypted_by_its_groups_transit_key(fleet_env, deployed):
    # With Vault configured, a stack's secrets are encrypted by its group's Transit
    # key (docs/security.md), never by the clone's passphrase.
    for g in GROUPS:
        for layer in LAYERS:
            text = (fleet_env.project / "stacks" / f"Pulumi.{layer}-{g}.yaml").read_text()
            assert f"secretsprovider: hashivault://dbfleet-{fleet_env.name}-{g}" in text, text
            assert "encryptionsalt:" not in text


def test_outputs_follow_the_contract(fleet_env, deployed):
    nets = fleet_env.outputs("networks-eu")
    assert set(nets["regions"]) == {"fra", "lhr", "arn"}
    assert nets["nearest"]["fra"] == ["lhr", "arn"]
    assert all(
        r["host"].startswith(f"127.{fleet_env.cidr_octet}.") for r in nets["regions"].values()
    )
    reps = fleet_env.outputs("replicas-eu")
    assert reps["primary_region"] == "fra"
    assert reps["nodes"]["fra"]["role"] == "primary"
    assert reps["nodes"]["lhr"]["role"] == reps["nodes"]["arn"]["role"] == "replica"
    prox = fleet_env.outputs("proxies-us")
    assert set(prox["read_endpoints"]) == {"iad", "ord", "sjc"}
    assert prox["connection_uris"] == "[secret]"
    for ep in [*prox["read_endpoints"].values(), *prox["write_endpoints"].values()]:
        host, port = ep.rsplit(":", 1)
        assert _listening(host, int(port)), ep


def test_writes_are_read_in_every_region_of_their_group_only(fleet_env, deployed):
    proc = fleet_env.run("prove")
    assert "every write was read back" in proc.stdout
    # 3 regions x 3 readers per group
    assert proc.stdout.count("prove: us/") == 9
    assert proc.stdout.count("prove: eu/") == 9


def test_second_up_changes_nothing(fleet_env, deployed):
    proc = fleet_env.run("up")
    for stack in STACKS:
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith(stack))
        assert "unchanged" in line, proc.stdout
    for stack in ("replicas-eu", "proxies-us"):
        fleet_env.pulumi("preview", "--stack", stack, "--expect-no-changes")


def test_no_vault_password_in_any_stack_export(fleet_env, deployed):
    client = hvac.Client(url=fleet_env.env["VAULT_ADDR"], token=fleet_env.env["VAULT_TOKEN"])
    values = []
    for g in GROUPS:
        values += vault.read_group_secrets(
            client, vault.DEFAULT_MOUNT, vault.secret_path(fleet_env.name, g)
        ).values()
    # the passwords and the backup passphrase of each group
    assert len(values) == len(GROUPS) * len(vault.GENERATED_KEYS)
    assert all(len(v) >= 32 for v in values)
    for stack in STACKS:
        text = fleet_env.export(stack)
        leaked = [stack for v in values if v in text]
        assert not leaked, f"a Vault password is in plaintext in {stack}'s state"
    # ...nor in any file of the state directory, nor in config files others can read.
    for path in (fleet_env.home / "state").rglob("*"):
        if path.is_file():
            data = path.read_text(errors="replace")
            assert not any(v in data for v in values), path
    for path in (fleet_env.home / "data").rglob("*"):
        if path.is_file() and path.stat().st_mode & 0o004:
            data = path.read_text(errors="replace")
            assert not any(v in data for v in values), f"world-readable {path} holds a password"


def test_down_leaves_no_process_port_or_directory(fleet_env, deployed):
    ports = []
    for g in GROUPS:
        for r in fleet_env.outputs(f"networks-{g}")["regions"].values():
            ports += [
                (r["host"], r["read_port"]),
                (r["host"], r["write_port"]),
                (r["host"], r["postgres_port"]),
            ]
    data_root = fleet_env.home / "data"
    assert _pids_under(data_root), "the fleet should be running before down"
    fleet_env.run("destroy", "--yes")
    assert _pids_under(data_root) == []
    assert [p for p in ports if _listening(*p)] == []
    leftovers = [p for p in data_root.rglob("*")] if data_root.exists() else []
    assert leftovers == [], leftovers
    if os.geteuid() == 0:
        import pwd

        users = [u.pw_name for u in pwd.getpwall() if u.pw_name.startswith(fleet_env.name)]
        assert users == []
