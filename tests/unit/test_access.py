"""dbfleet.ops.access (per-group Vault access) against a fake Vault: the policies'
paths, the capabilities each command needs, the one-line refusal before any stack is
touched, `dbfleet token`, and which secrets provider a stack uses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hvac.exceptions
import pytest

from dbfleet import vault
from dbfleet.model.spec import load_fleet
from dbfleet.ops import access, rollout, status, workspace
from dbfleet.ops import commands as ops
from dbfleet.ops.cli import main

ROOT = Path(__file__).resolve().parents[2]
ADDR = "http://127.0.0.1:8200"
EU = access.GroupAccess("demo", "eu")
US = access.GroupAccess("demo", "us")


class FakeVault:
    """The calls dbfleet.vault makes for access control, with Vault's answers. `caps` maps
    a path (exactly as asked) to the token's capabilities; anything else has none."""

    def __init__(self, caps: dict[str, list[str]] | None = None, root: bool = False) -> None:
        self.url = ADDR
        self.root = root
        self.caps = caps or {}
        self.store: dict[str, dict] = {}
        self.mounts: dict[str, dict] = {"secret/": {"type": "kv", "options": {"version": "2"}}}
        self.writes: list[tuple[str, dict]] = []
        self.asked: list[list[str]] = []
        self.sys = self
        self.auth = self
        self.token = self
        self.created: list[dict] = []

    # -- generic paths
    def write_data(self, path: str, *, data: dict | None = None) -> dict:
        if path == "sys/capabilities-self":
            self.asked.append(list(data["paths"]))
            answer = {
                p: (["root"] if self.root else self.caps.get(p, ["deny"])) for p in data["paths"]
            }
            return {**answer, "data": answer}
        self.writes.append((path, dict(data or {})))
        self.store[path] = dict(data or {})
        if path.endswith("/root/generate/internal"):  # a PKI engine's new CA
            mount = path.split("/", 1)[0]
            self.store[f"{mount}/cert/ca"] = {"certificate": f"-----BEGIN CERTIFICATE-----{mount}"}
        return {}

    def read(self, path: str) -> dict | None:
        if path not in self.store:
            return None
        return {"data": dict(self.store[path])}

    # -- sys
    def list_mounted_secrets_engines(self) -> dict:
        return {"data": dict(self.mounts)}

    def enable_secrets_engine(
        self, backend_type: str, path: str, description: str = "", config: dict | None = None
    ) -> None:
        self.writes.append((f"sys/mounts/{path}", {"type": backend_type}))
        self.mounts[f"{path}/"] = {"type": backend_type}

    # -- auth.token
    def create(self, **kwargs: Any) -> dict:
        self.created.append(kwargs)
        role = self.store.get(f"auth/token/roles/{kwargs['role_name']}")
        if role is None:
            raise hvac.exceptions.InvalidRequest(errors=["unknown role"], method="post", url=ADDR)
        allowed = set(role["allowed_policies"])
        return {
            "auth": {
                "client_token": "s.minted-token-value",
                "policies": ["default", *[p for p in kwargs["policies"] if p in allowed]],
            }
        }


def admin_caps(acc: access.GroupAccess) -> dict[str, list[str]]:
    return {p: ["create", "update", "read"] for p in access._admin_paths(acc, full=True)}


def operator_caps(acc: access.GroupAccess) -> dict[str, list[str]]:
    """What the operator policy gives, path by path (as Vault would answer for exact paths)."""
    return {
        acc.secret_data_path: ["create", "read", "update", "delete"],
        acc.encrypt_path: ["update"],
        acc.decrypt_path: ["update"],
        acc.key_path: ["read"],
    }


def read_only_caps(acc: access.GroupAccess) -> dict[str, list[str]]:
    return {acc.secret_data_path: ["read"], acc.decrypt_path: ["update"], acc.key_path: ["read"]}


# -- the policies ------------------------------------------------------------------------
def test_the_operator_policy_covers_the_groups_secrets_transit_key_and_certificates() -> None:
    rules = dict(EU.rules(access.OPERATOR))
    assert rules["secret/data/dbfleet/demo/eu/*"] == ("create", "read", "update", "delete")
    assert rules["transit/encrypt/dbfleet-demo-eu"] == ("update",)
    assert rules["transit/decrypt/dbfleet-demo-eu"] == ("update",)
    assert rules["pki-demo-eu/issue/*"] == ("create", "update")
    # the group's real secret path is matched by the glob of its prefix
    assert EU.secret_data_path == "secret/data/dbfleet/demo/eu/postgres"


def test_the_read_only_policy_reads_and_decrypts_but_writes_nothing() -> None:
    rules = dict(EU.rules(access.READ_ONLY))
    assert rules["secret/data/dbfleet/demo/eu/*"] == ("read",)
    assert rules["transit/decrypt/dbfleet-demo-eu"] == ("update",)  # a preview decrypts state
    assert "transit/encrypt/dbfleet-demo-eu" not in rules
    assert not any("issue" in p for p in rules)
    writes = {"create", "delete"}
    assert all(not writes & set(caps) for caps in rules.values())


@pytest.mark.parametrize("mode", access.MODES)
def test_no_policy_names_a_path_of_another_group(mode: str) -> None:
    eu_paths = {p for p, _ in EU.rules(mode)}
    us_paths = {p for p, _ in US.rules(mode)}
    assert not eu_paths & us_paths
    assert all("/us" not in p and "-us" not in p for p in eu_paths)
    # "eu-west" is another group: the glob of eu must not reach it
    assert all(
        not re.fullmatch(p.replace("*", ".*"), "secret/data/dbfleet/demo/eu-west/x")
        for p in eu_paths
    )


def test_policy_text_is_hcl_with_every_rule() -> None:
    text = EU.policy(access.OPERATOR)
    for path, caps in EU.rules(access.OPERATOR):
        assert (
            f'path "{path}" {{\n  capabilities = [{", ".join(json.dumps(c) for c in caps)}]\n}}'
            in text
        )
    assert text.startswith("# dbfleet operator policy of group eu, fleet demo")


def test_an_ssh_group_may_also_read_the_fleets_login() -> None:
    acc = access.GroupAccess("demo", "eu", extra_read=("ssh/demo",))
    for mode in access.MODES:
        assert ("secret/data/ssh/demo", ("read",)) in acc.rules(mode)
    assert ("secret/data/ssh/demo", frozenset({"read"})) in acc.required("preview", transit=True)


def test_the_token_role_gives_out_only_the_groups_two_policies() -> None:
    settings = EU.role_settings()
    assert settings["allowed_policies"] == ["dbfleet-demo-eu-operator", "dbfleet-demo-eu-read-only"]
    assert settings["orphan"] is True


def test_the_secrets_provider_url_names_the_groups_transit_key() -> None:
    assert EU.secrets_provider == "hashivault://dbfleet-demo-eu"
    other = access.GroupAccess("demo", "eu", transit_mount="kms")
    assert other.secrets_provider == "hashivault://dbfleet-demo-eu?engine=kms"


# -- what a command needs, and the refusal -------------------------------------------------
def test_writing_commands_need_to_write_the_secret_and_encrypt() -> None:
    need = dict(EU.required("up", transit=True))
    assert need[EU.secret_data_path] == {"read", "create", "update"}
    assert need[EU.encrypt_path] == {"update"} and need[EU.decrypt_path] == {"update"}
    read = dict(EU.required("preview", transit=True))
    assert read == {EU.secret_data_path: {"read"}, EU.decrypt_path: {"update"}}
    assert dict(EU.required("status", transit=False)) == {EU.secret_data_path: {"read"}}
    with pytest.raises(ValueError, match="unknown action"):
        EU.required("launch", transit=True)


@pytest.mark.parametrize(
    ("have", "need", "missing"),
    [
        ({"root"}, {"read", "update"}, []),
        ({"deny"}, {"read"}, ["read"]),
        ({"read", "list"}, {"read", "update"}, ["update"]),
        (set(), {"update"}, ["update"]),
    ],
)
def test_lacking(have: set[str], need: set[str], missing: list[str]) -> None:
    assert access.lacking(frozenset(have), frozenset(need)) == missing


def test_one_line_per_refused_group_naming_the_missing_capability_and_path() -> None:
    fake = FakeVault(caps=operator_caps(EU))
    lines = access.refusals(fake, [EU, US], "up", transit=True)
    expected = (
        "dbfleet: VAULT_TOKEN may not up group us: it lacks create, read, update on "
        "secret/data/dbfleet/demo/us/postgres; update on transit/encrypt/dbfleet-demo-us; "
        "update on transit/decrypt/dbfleet-demo-us"
    )
    assert lines == [expected]
    assert len(fake.asked) == 1  # one request for every group


def test_a_read_only_token_may_preview_but_not_up() -> None:
    fake = FakeVault(caps=read_only_caps(EU))
    assert access.refusals(fake, [EU], "preview", transit=True) == []
    (line,) = access.refusals(fake, [EU], "up", transit=True)
    assert (
        "may not up group eu: it lacks create, update on secret/data/dbfleet/demo/eu/postgres"
        in line
    )
    assert "update on transit/encrypt/dbfleet-demo-eu" in line


@pytest.fixture
def fleet(tmp_path: Path):
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        "name: demo\ngroups:\n"
        "  eu:\n    zone: EU\n    primary: fra\n    regions:\n      fra: {nodes: 1}\n"
        "  us:\n    zone: US\n    primary: iad\n    regions:\n      iad: {nodes: 1}\n"
    )
    return load_fleet(spec)


def test_prepare_refuses_before_writing_anything(monkeypatch, fleet) -> None:
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    fake = FakeVault(caps={**operator_caps(EU), **admin_caps(US)})
    with pytest.raises(access.AccessError, match="may not up group us"):
        access.prepare(fake, fleet, ["eu", "us"], "up")
    assert fake.writes == []


def test_prepare_with_an_admin_token_creates_policies_role_ca_and_key_once(
    monkeypatch, fleet
) -> None:
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    fake = FakeVault(root=True)
    providers = access.prepare(fake, fleet, ["eu"], "up")
    assert providers == {"eu": "hashivault://dbfleet-demo-eu"}
    written = [p for p, _ in fake.writes]
    assert written == [
        "sys/policies/acl/dbfleet-demo-eu-operator",
        "sys/policies/acl/dbfleet-demo-eu-read-only",
        "auth/token/roles/dbfleet-demo-eu",
        "sys/mounts/pki-demo-eu",
        "pki-demo-eu/root/generate/internal",
        "pki-demo-eu/roles/server",
        "pki-demo-eu/roles/pgbackrest",
        "sys/mounts/transit",
        "transit/keys/dbfleet-demo-eu",
    ]
    # The group's own CA, and a role that issues for addresses, stores nothing.
    assert fake.store["pki-demo-eu/root/generate/internal"]["common_name"] == "dbfleet demo eu CA"
    role = fake.store["pki-demo-eu/roles/server"]
    assert role["allow_ip_sans"] and role["no_store"] and role["max_ttl"] == f"{90 * 86400}s"
    # pgBackRest's TLS servers and clients (ssh target): their own role, both uses.
    backup_role = fake.store["pki-demo-eu/roles/pgbackrest"]
    assert backup_role["client_flag"] and backup_role["server_flag"] and backup_role["no_store"]
    fake.writes.clear()
    access.prepare(fake, fleet, ["eu"], "up")
    assert fake.writes == []  # idempotent: nothing differs, nothing written


def test_preview_creates_only_a_missing_transit_key(monkeypatch, fleet) -> None:
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    fake = FakeVault(root=True)
    access.prepare(fake, fleet, ["eu"], "preview")
    assert [p for p, _ in fake.writes] == ["sys/mounts/transit", "transit/keys/dbfleet-demo-eu"]


def test_a_group_token_without_the_transit_key_is_told_who_creates_it(monkeypatch, fleet) -> None:
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    fake = FakeVault(caps=operator_caps(EU))
    with pytest.raises(access.AccessError, match="Transit key transit/keys/dbfleet-demo-eu"):
        access.prepare(fake, fleet, ["eu"], "up")
    fake.store["transit/keys/dbfleet-demo-eu"] = {"type": "aes256-gcm96"}
    assert access.prepare(fake, fleet, ["eu"], "up") == {"eu": "hashivault://dbfleet-demo-eu"}
    assert fake.writes == []


def test_without_vault_or_when_asked_new_stacks_use_the_passphrase(monkeypatch, fleet) -> None:
    monkeypatch.setenv(access.PROVIDER_ENV, "passphrase")
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    assert access.prepare(FakeVault(root=True), fleet, ["eu"], "up") == {}
    assert not access.vault_provider_wanted({"VAULT_TOKEN": "x"})
    with pytest.raises(access.AccessError, match="use vault or passphrase"):
        access.vault_provider_wanted({access.PROVIDER_ENV: "kms"})


def test_the_engine_uses_vault_token_even_over_a_stale_server_token() -> None:
    env = {"VAULT_ADDR": ADDR, "VAULT_TOKEN": "group", "VAULT_SERVER_TOKEN": "root"}
    access.point_engine_at_vault(env)
    assert env["VAULT_SERVER_TOKEN"] == "group" and env["VAULT_SERVER_URL"] == ADDR
    env = {"VAULT_SERVER_TOKEN": "root", "VAULT_SERVER_URL": ADDR}
    access.point_engine_at_vault(env)
    assert env == {}


# -- the CLI -------------------------------------------------------------------------------
@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, fleet, tmp_path: Path):
    spec = tmp_path / "fleet.yaml"
    monkeypatch.setenv("DBFLEET_SPEC", str(spec))
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    monkeypatch.setattr(ops, "engine_ready", lambda: None)
    monkeypatch.setattr(ops, "load_fleet_file", lambda deployed=True: fleet)
    fake = FakeVault(caps=operator_caps(EU))
    fake.store["transit/keys/dbfleet-demo-eu"] = {}
    monkeypatch.setattr(ops, "vault_ready", lambda: fake)

    def untouched(*args: Any, **kwargs: Any):
        raise AssertionError("a stack was touched")

    monkeypatch.setattr(rollout, "run", untouched)
    monkeypatch.setattr(rollout, "many_outputs", untouched)
    monkeypatch.setattr(status, "collect", untouched)
    return fake


@pytest.mark.parametrize(
    "argv",
    [
        ["up", "us", "-q"],
        ["preview", "us", "-q"],
        ["preview", "-q"],
        ["status", "us"],
        ["endpoints", "us"],
        ["prove", "us"],
    ],
)
def test_a_command_on_a_group_the_token_cannot_touch_fails_in_one_line_before_any_stack(
    cli: FakeVault, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith(f"dbfleet: VAULT_TOKEN may not {argv[0]} group us: it lacks ")
    assert "secret/data/dbfleet/demo/us/postgres" in line


def test_up_on_the_tokens_own_group_runs_with_its_transit_key(
    cli: FakeVault, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: dict[str, Any] = {}

    def fake_run(groups, action, *, layers=None, progress=None, options=None, printer=None):
        seen.update(groups=groups, providers=options.secrets_providers)
        return {}

    monkeypatch.setattr(rollout, "run", fake_run)
    monkeypatch.setattr(access, "project_dir", lambda: Path("/nonexistent"))
    assert main(["up", "eu", "-q"]) == 0
    assert seen == {"groups": ["eu"], "providers": {"eu": "hashivault://dbfleet-demo-eu"}}


@pytest.mark.parametrize(
    ("argv", "ttl", "read_only"),
    [
        (["token", "eu"], None, False),
        (["token", "eu", "--ttl", "30m"], "30m", False),
        (["token", "eu", "--read-only", "--ttl", "3600"], "3600", True),
    ],
)
def test_token_arguments(argv: list[str], ttl: str | None, read_only: bool) -> None:
    from dbfleet.ops.cli import build_parser

    args = build_parser().parse_args(argv)
    assert (args.group, args.ttl, args.read_only) == ("eu", ttl, read_only)


@pytest.mark.parametrize(
    "argv", [["token"], ["token", "eu", "--ttl", "soon"], ["token", "eu", "--ttl", "0h"]]
)
def test_token_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "usage: dbfleet token" in capsys.readouterr().err


def test_token_prints_the_token_alone_on_stdout(
    monkeypatch: pytest.MonkeyPatch, fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeVault(root=True)
    monkeypatch.setattr(ops, "load_fleet_file", lambda deployed=True: fleet)
    monkeypatch.setattr(vault, "client_from_env", lambda: fake)
    assert main(["token", "eu", "--read-only"]) == 0
    out, err = capsys.readouterr()
    assert out == "s.minted-token-value\n"
    assert "s.minted-token-value" not in err
    assert "read-only token for group eu of fleet demo, ttl 1h" in err
    (call,) = fake.created
    assert call["role_name"] == "dbfleet-demo-eu"
    assert call["policies"] == ["dbfleet-demo-eu-read-only"] and call["ttl"] == "1h"


def test_token_without_the_right_to_create_it_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeVault(caps=operator_caps(EU))
    monkeypatch.setattr(ops, "load_fleet_file", lambda deployed=True: fleet)
    monkeypatch.setattr(vault, "client_from_env", lambda: fake)
    assert main(["token", "eu"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and fake.created == [] and fake.writes == []
    (line,) = err.splitlines()
    assert line.startswith("dbfleet token: VAULT_TOKEN may not create tokens for group eu")
    assert "update on auth/token/create/dbfleet-demo-eu" in line


def test_a_role_that_does_not_grant_the_policy_gives_no_token() -> None:
    fake = FakeVault(root=True)
    fake.store["auth/token/roles/r"] = {"allowed_policies": ["other"]}
    with pytest.raises(vault.VaultError, match="did not grant dbfleet-demo-eu-operator"):
        vault.create_token(fake, "r", ["dbfleet-demo-eu-operator"], "1h", "x")


# -- which secrets provider a stack uses ---------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(
        "name: dbfleet\nruntime: python\nstackConfigDir: stacks\n"
    )
    (tmp_path / "stacks").mkdir()
    return tmp_path


def test_a_stacks_provider_is_read_from_its_config_file(project: Path) -> None:
    (project / "stacks" / "Pulumi.accounts-eu.yaml").write_text("encryptionsalt: v1:abc\n")
    (project / "stacks" / "Pulumi.networks-eu.yaml").write_text(
        "secretsprovider: hashivault://dbfleet-demo-eu\nencryptedkey: dmF1bHQ=\n"
    )
    assert access.stack_provider(project, "accounts-eu") == "passphrase"
    assert access.stack_provider(project, "networks-eu") == "hashivault://dbfleet-demo-eu"
    assert access.stack_provider(project, "replicas-eu") is None
    assert access.describe_provider("hashivault://dbfleet-demo-eu").startswith(
        "Vault Transit key dbfleet-demo-eu"
    )


def test_passphrase_stacks_get_one_note_with_the_command_that_moves_them(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", ADDR)
    monkeypatch.delenv(access.PROVIDER_ENV, raising=False)
    (project / "stacks" / "Pulumi.accounts-eu.yaml").write_text("encryptionsalt: v1:abc\n")
    note = access.passphrase_note(project, ["eu"])
    assert note == (
        "note: accounts-eu keep their secrets under the passphrase; move them to Vault "
        "Transit: dbfleet secrets-provider eu --to-vault"
    )
    monkeypatch.delenv("VAULT_ADDR")
    assert access.passphrase_note(project, ["eu"]) is None


def test_a_new_stack_is_created_with_the_given_secrets_provider(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[tuple[str, str]] = []

    class ProviderWorkspace:
        def __init__(self, url: str) -> None:
            self.url = url

        def create_stack(self, stack: str) -> None:
            made.append((stack, self.url))

    monkeypatch.setattr(workspace, "workspace", lambda p: object())
    monkeypatch.setattr(workspace, "provider_workspace", lambda p, url: ProviderWorkspace(url))
    st = workspace.create(
        project, "accounts-eu", ["accounts-us"], secrets_provider="hashivault://k"
    )
    assert made == [("accounts-eu", "hashivault://k")]
    assert st.name == "accounts-eu"
    # no passphrase salt was borrowed for it
    assert not (project / "stacks" / "Pulumi.accounts-eu.yaml").exists()


def test_a_transit_stack_that_lost_its_config_file_gets_its_provider_back(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = {
        "checkpoint": {
            "latest": {
                "secrets_providers": {
                    "type": "cloud",
                    "state": {
                        "url": "hashivault://dbfleet-demo-eu",
                        "encryptedkey": "dmF1bHQ6djE6eA==",
                    },
                }
            }
        }
    }
    monkeypatch.setattr("dbfleet.ops.identity.stack_checkpoint", lambda stack, project: state)
    assert workspace.restore_provider(project, "replicas-eu") == "hashivault://dbfleet-demo-eu"
    text = (project / "stacks" / "Pulumi.replicas-eu.yaml").read_text()
    assert text == "secretsprovider: hashivault://dbfleet-demo-eu\nencryptedkey: dmF1bHQ6djE6eA==\n"
    assert workspace.restore_provider(project, "replicas-eu") is None  # once
    assert access.stack_provider(project, "replicas-eu") == "hashivault://dbfleet-demo-eu"
