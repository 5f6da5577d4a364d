"""Per-group access (issue 14) on a real OpenBao, the real engine, PostgreSQL and HAProxy.

One fleet with two groups of one region each (`eu`, `us`), brought up with the admin
(root) token, which also makes each group's policies, token role and Transit key. Then:
an `eu` operator token previews, applies and reads the status of `eu`; every command on
`us` fails in one line naming the missing permission, and the audit log (a file audit
device of this test's own server) shows no request of that token to a path of `us`; a
`us` stack's state does not decrypt with it. A read-only token previews but cannot apply.
A stack moved back to the passphrase is shown as such and moved to Vault Transit again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hvac
import pytest

from tests.integration.conftest import FleetEnv, make_fleet_env
from tests.integration.vault_fixture import LocalVault, new_local_vault

LAYERS = ("accounts", "networks", "replicas", "proxies")


def two_groups(name: str, octet: int) -> str:
    return (
        f"name: {name}\nnetwork:\n  cidr: 127.{octet}.0.0/16\ngroups:\n"
        "  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 1}\n"
        "  us:\n    zone: US\n    primary: iad\n    regions:\n      iad: {nodes: 1}\n"
    )


@pytest.fixture(scope="module")
def audited_vault(tmp_path_factory) -> Iterator[tuple[LocalVault, Path]]:
    """A server of this module's own, with a file audit device (declared in its config)."""
    home = tmp_path_factory.mktemp("access-vault")
    audit = home / "audit.log"
    lv = new_local_vault(home)
    lv.run("start", extra_env={"DBFLEET_VAULT_AUDIT_LOG": str(audit)})
    lv.token = lv.read_token()
    try:
        yield lv, audit
    finally:
        lv.run("stop", check=False)


@pytest.fixture(scope="module")
def fleet(audited_vault) -> Iterator[FleetEnv]:
    vault, _ = audited_vault
    fe = make_fleet_env(vault, "access")  # with a loopback range of its own
    fe.write_fleet(two_groups(fe.name, fe.cidr_octet))
    try:
        fe.run("up", "-q")
        yield fe
    finally:
        fe.run("destroy", "--yes", "-q", check=False)
        shutil.rmtree(fe.root, ignore_errors=True)


def mint(fe: FleetEnv, group: str, *extra: str) -> str:
    proc = fe.run("token", group, *extra)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].strip(), proc.stdout
    assert lines[0] not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def eu_token(fleet: FleetEnv) -> str:
    return mint(fleet, "eu")


@pytest.fixture(scope="module")
def eu_read_only(fleet: FleetEnv) -> str:
    return mint(fleet, "eu", "--read-only", "--ttl", "20m")


def as_token(fe: FleetEnv, token: str, *args: str, timeout: float = 900):
    env = {**fe.env, "VAULT_TOKEN": token}
    return subprocess.run(
        [sys.executable, "-m", "dbfleet", *args],
        env=env,
        cwd=fe.project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def export(fe: FleetEnv, token: str, stack: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["pulumi", "stack", "export", "--show-secrets", "--stack", stack, "--non-interactive"],
        env={**fe.env, "VAULT_TOKEN": token},
        cwd=fe.project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def audit_entries(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def by_policy(entries: list[dict], policy: str) -> list[str]:
    """The request paths of every audited request made by a token holding `policy`."""
    return [
        (e.get("request") or {}).get("path", "")
        for e in entries
        if e.get("type") == "request" and policy in ((e.get("auth") or {}).get("policies") or [])
    ]


def root_client(audited_vault) -> hvac.Client:
    vault, _ = audited_vault
    return hvac.Client(url=vault.addr, token=vault.token)


def test_token_prints_only_a_token_of_the_groups_operator_policy(
    fleet: FleetEnv, audited_vault, eu_token: str
) -> None:
    looked = root_client(audited_vault).auth.token.lookup(eu_token)["data"]
    assert sorted(looked["policies"]) == ["dbfleet-" + fleet.name + "-eu-operator", "default"]
    assert looked["orphan"] is True
    policy = root_client(audited_vault).read(f"sys/policies/acl/dbfleet-{fleet.name}-eu-operator")
    text = policy["data"]["policy"]
    assert f"dbfleet/{fleet.name}/eu/*" in text and f"pki-{fleet.name}-eu/issue/*" in text
    assert "/us" not in text and f"{fleet.name}-us" not in text


def test_new_stacks_are_encrypted_by_their_groups_transit_key(fleet: FleetEnv) -> None:
    for g in ("eu", "us"):
        for layer in LAYERS:
            text = (fleet.project / "stacks" / f"Pulumi.{layer}-{g}.yaml").read_text()
            assert f"secretsprovider: hashivault://dbfleet-{fleet.name}-{g}" in text, text
            assert "encryptionsalt" not in text
    shown = fleet.run("secrets-provider").stdout
    assert shown.count("Vault Transit key") == 8, shown


def test_an_eu_token_previews_applies_and_reads_eu(fleet: FleetEnv, eu_token: str) -> None:
    preview = as_token(fleet, eu_token, "preview", "eu", "-q")
    assert preview.returncode in (0, 2), preview.stdout + preview.stderr
    up = as_token(fleet, eu_token, "up", "eu", "-q")
    assert up.returncode == 0, up.stdout + up.stderr
    status = as_token(fleet, eu_token, "status", "eu")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "fra" in status.stdout


def test_every_command_on_us_fails_in_one_line_and_reads_nothing_of_us(
    fleet: FleetEnv, audited_vault, eu_token: str
) -> None:
    _, audit = audited_vault
    before = len(audit_entries(audit))
    for args in (
        ("preview", "us", "-q"),
        ("up", "us", "-q"),
        ("status", "us"),
        ("endpoints", "us"),
        ("destroy", "us", "--yes", "-q"),
        ("preview", "-q"),  # the whole fleet includes us
    ):
        proc = as_token(fleet, eu_token, *args)
        assert proc.returncode == 1, (args, proc.stdout, proc.stderr)
        line = one_line(proc)
        assert line.startswith("dbfleet: VAULT_TOKEN may not") and "group us" in line, line
        assert f"secret/data/dbfleet/{fleet.name}/us/postgres" in line, line
        assert proc.stdout == "", proc.stdout
    # the same token still works on eu (and so writes to the audit log)
    assert export(fleet, eu_token, "proxies-eu").returncode == 0
    entries = audit_entries(audit)[before:]
    paths = by_policy(entries, f"dbfleet-{fleet.name}-eu-operator")
    assert any(f"dbfleet-{fleet.name}-eu" in p for p in paths), paths  # Transit decrypt of eu
    touched_us = [p for p in paths if f"/{fleet.name}/us/" in p or f"{fleet.name}-us" in p]
    assert touched_us == [], touched_us


def test_a_us_stack_does_not_decrypt_with_an_eu_token(
    fleet: FleetEnv, audited_vault, eu_token: str
) -> None:
    us_password = root_client(audited_vault).secrets.kv.v2.read_secret_version(
        path=f"dbfleet/{fleet.name}/us/postgres",
        mount_point="secret",
        raise_on_deleted_version=True,
    )["data"]["data"]["app_password"]
    proc = export(fleet, eu_token, "proxies-us")
    assert proc.returncode != 0
    assert "permission denied" in proc.stderr, proc.stderr
    assert us_password not in proc.stdout + proc.stderr
    # with the admin token it does decrypt (the refusal above is the key's, not a broken stack)
    vault, _ = audited_vault
    assert us_password in export(fleet, vault.token, "proxies-us").stdout


def test_a_read_only_token_previews_but_cannot_apply(
    fleet: FleetEnv, audited_vault, eu_read_only: str
) -> None:
    looked = root_client(audited_vault).auth.token.lookup(eu_read_only)["data"]
    assert f"dbfleet-{fleet.name}-eu-read-only" in looked["policies"]
    assert looked["ttl"] <= 20 * 60
    preview = as_token(fleet, eu_read_only, "preview", "eu", "-q")
    assert preview.returncode in (0, 2), preview.stdout + preview.stderr
    up = as_token(fleet, eu_read_only, "up", "eu", "-q")
    assert up.returncode == 1
    line = one_line(up)
    assert "may not up group eu" in line and "create, update on secret/data/" in line, line
    minted = as_token(fleet, eu_read_only, "token", "eu")
    assert minted.returncode == 1 and minted.stdout == ""
    assert "may not create tokens" in one_line(minted)


def test_a_passphrase_stack_is_shown_and_moved_to_vault(fleet: FleetEnv) -> None:
    # networks-eu back to the passphrase, as a stack made before issue 14 would be
    fleet.pulumi("stack", "change-secrets-provider", "--stack", "networks-eu", "passphrase")
    shown = fleet.run("secrets-provider", "eu").stdout
    assert any(ln.startswith("networks-eu") and "passphrase" in ln for ln in shown.splitlines()), (
        shown
    )
    preview = fleet.run("preview", "eu", "-q", "--no-policies", check=False)
    assert "dbfleet secrets-provider eu --to-vault" in preview.stderr, preview.stderr
    moved = fleet.run("secrets-provider", "eu", "--to-vault").stdout
    assert "networks-eu" in moved and "passphrase -> Vault Transit key" in moved, moved
    text = (fleet.project / "stacks" / "Pulumi.networks-eu.yaml").read_text()
    assert f"hashivault://dbfleet-{fleet.name}-eu" in text and "encryptionsalt" not in text
    again = fleet.run("preview", "eu", "-q", "--no-policies", check=False)
    assert again.returncode in (0, 2) and "--to-vault" not in again.stderr, again.stderr
