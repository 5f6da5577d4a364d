"""Per-group access (issue 14): Vault policies per region group, tokens minted from them,
the early refusal of a command on a group the token cannot touch, and the Vault Transit
key that encrypts each group's stack secrets.

What a group `g` of fleet `f` owns in Vault (names are made here, once):

- KV v2 ``secret/data/dbfleet/f/g/*`` (its passwords, ``dbfleet.vault.secret_path``);
- Transit key ``transit/keys/dbfleet-f-g``: new stacks of the group are created with Pulumi's
  ``hashivault://dbfleet-f-g`` secrets provider (gocloud's hashivault driver), so that only a
  token allowed to decrypt with that key can open the group's state;
- PKI mount ``pki-f-g`` (its certificates, issue 14's TLS half): ``pki-f-g/issue/*``.

Two ACL policies per group: ``dbfleet-f-g-operator`` (read/write the group's secrets, encrypt
and decrypt with its key, issue its certificates) and ``dbfleet-f-g-read-only`` for CI review
(read the secrets, decrypt with the key, nothing else: a preview must decrypt the state, and
can change nothing). Neither names a path of another group. A token role ``dbfleet-f-g`` may
give out only those two policies, as orphan tokens: `dbfleet token g` mints them, and an admin
can let a team lead mint its own group's tokens by granting update on
``auth/token/create/dbfleet-f-g`` alone.

Where they are created: by the operator tool, not by the accounts layer. Writing a policy
needs ``sys/policies/acl`` (an admin's right); if the accounts layer wrote them, every `up`
of a group would need a token able to rewrite its own policy — a group token that can widen
itself. So `dbfleet token` and `dbfleet up`, when VAULT_TOKEN may write policies (an admin
token), create or update them idempotently (read, compare, write only what differs) before any
stack of the group is used; with a group token they are used as they are. `preview` only
creates a missing Transit key (a new stack cannot be encrypted without it) and changes no
policy.

The early refusal: before any stack of a group is read or decrypted, `prepare`/`require`
ask Vault for VAULT_TOKEN's capabilities on the group's paths (``sys/capabilities-self``,
which reads nothing there) and refuse with one line per group naming what is missing.

The pulumi processes dbfleet starts get VAULT_SERVER_URL/VAULT_SERVER_TOKEN set from
VAULT_ADDR/VAULT_TOKEN (`point_engine_at_vault`): the hashivault driver prefers those, so a
stale VAULT_SERVER_TOKEN (say the root token) could otherwise open every group's state behind a
group token's back.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from dbfleet import vault
from dbfleet.model.spec import FleetSpec
from dbfleet.model.stackname import LAYERS, parse_stack_name
from dbfleet.ops.backend import stack_config_file
from dbfleet.ops.commands import Abort
from dbfleet.ops.results import ExitCode

OPERATOR = "operator"
READ_ONLY = "read-only"
MODES = (OPERATOR, READ_ONLY)

#: a work day for an operator; one CI job for a reviewer
DEFAULT_TTL = {OPERATOR: "8h", READ_ONLY: "1h"}

#: what the token must be able to do on a group, per command
READ_ACTIONS = ("preview", "status", "endpoints", "prove")
WRITE_ACTIONS = ("up", "destroy", "secrets-provider")

#: `vault` (default when VAULT_ADDR is set) or `passphrase`: how new stacks encrypt secrets
PROVIDER_ENV = "DBFLEET_SECRETS_PROVIDER"
PASSPHRASE = "passphrase"
HASHIVAULT = "hashivault://"

#: a group's PKI engine (vault.pki_mount): its CA, and the role its certificates come from
PKI_ISSUE_PATHS = ("{mount}/issue/*",)
PKI_READ_PATHS = ("{mount}/ca", "{mount}/ca/pem", "{mount}/ca_chain", "{mount}/cert/*")

# capabilities that make a token able to write a path
_WRITE = frozenset({"create", "update"})


class AccessError(Abort):
    """A refusal or an access problem, said in one line per group (exit 1)."""


# -- names and policies ----------------------------------------------------------------
@dataclass(frozen=True)
class GroupAccess:
    """Everything of group `group` of fleet `fleet` in Vault, and its policies."""

    fleet: str
    group: str
    kv_mount: str = vault.DEFAULT_MOUNT
    transit_mount: str = vault.TRANSIT_MOUNT
    #: other KV paths (under kv_mount) the group reads: the ssh target's login
    extra_read: tuple[str, ...] = ()
    #: the longest certificate the group's PKI role issues (the fleet file's tls.cert_ttl_s)
    cert_max_ttl_s: int = 90 * 86400

    @property
    def secret(self) -> str:
        return vault.secret_path(self.fleet, self.group)

    @property
    def kv_prefix(self) -> str:
        return self.secret.rsplit("/", 1)[0]

    @property
    def secret_data_path(self) -> str:
        return f"{self.kv_mount}/data/{self.secret}"

    @property
    def transit_key(self) -> str:
        return f"dbfleet-{self.fleet}-{self.group}"

    @property
    def encrypt_path(self) -> str:
        return f"{self.transit_mount}/encrypt/{self.transit_key}"

    @property
    def decrypt_path(self) -> str:
        return f"{self.transit_mount}/decrypt/{self.transit_key}"

    @property
    def key_path(self) -> str:
        return f"{self.transit_mount}/keys/{self.transit_key}"

    @property
    def pki_mount(self) -> str:
        return vault.pki_mount(self.fleet, self.group)

    @property
    def ca_name(self) -> str:
        """The common name of the group's CA."""
        return vault.ca_name(self.fleet, self.group)

    @property
    def token_role(self) -> str:
        return f"dbfleet-{self.fleet}-{self.group}"

    def policy_name(self, mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"unknown access mode {mode!r}")
        return f"dbfleet-{self.fleet}-{self.group}-{mode}"

    @property
    def secrets_provider(self) -> str:
        """The Pulumi secrets provider URL of the group's stacks (gocloud's hashivault)."""
        query = "" if self.transit_mount == "transit" else f"?engine={self.transit_mount}"
        return f"{HASHIVAULT}{self.transit_key}{query}"

    def rules(self, mode: str) -> list[tuple[str, tuple[str, ...]]]:
        """(path, capabilities) of the group's policy `mode`; nothing of another group."""
        self.policy_name(mode)  # checks the mode
        data = f"{self.kv_mount}/data/{self.kv_prefix}/*"
        metadata = f"{self.kv_mount}/metadata/{self.kv_prefix}/*"
        pki_read = [p.format(mount=self.pki_mount) for p in PKI_READ_PATHS]
        extra = [(f"{self.kv_mount}/data/{p}", ("read",)) for p in self.extra_read]
        if mode == OPERATOR:
            return [
                (data, ("create", "read", "update", "delete")),
                (metadata, ("read", "list", "delete")),
                (self.encrypt_path, ("update",)),
                (self.decrypt_path, ("update",)),
                (self.key_path, ("read",)),
                *((p.format(mount=self.pki_mount), ("create", "update")) for p in PKI_ISSUE_PATHS),
                *((p, ("read",)) for p in pki_read),
                *extra,
            ]
        return [
            (data, ("read",)),
            (metadata, ("read", "list")),
            (self.decrypt_path, ("update",)),
            (self.key_path, ("read",)),
            *((p, ("read",)) for p in pki_read),
            *extra,
        ]

    def policy(self, mode: str) -> str:
        """The HCL text of policy `mode` (what Vault stores; compared before writing)."""
        what = (
            "read/write its secrets, use its Transit key, issue its certificates"
            if mode == OPERATOR
            else "read its secrets and decrypt its stacks (CI review), no writes"
        )
        lines = [
            f"# dbfleet {mode} policy of group {self.group}, fleet {self.fleet}: {what}.",
            "# Written by dbfleet (dbfleet/ops/access.py); edits here are overwritten.",
        ]
        for path, caps in self.rules(mode):
            lines += [
                f'path "{path}" {{',
                f"  capabilities = [{', '.join(json.dumps(c) for c in caps)}]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def role_settings(self) -> dict[str, object]:
        """The token role: only this group's two policies, orphan tokens (they outlive the
        admin token that made them), renewable."""
        return {
            "allowed_policies": [self.policy_name(m) for m in MODES],
            "orphan": True,
            "renewable": True,
        }

    def required(self, action: str, transit: bool) -> list[tuple[str, frozenset[str]]]:
        """What VAULT_TOKEN needs on this group for `action` (a dbfleet command)."""
        if action in WRITE_ACTIONS:
            need = [(self.secret_data_path, frozenset({"read", "create", "update"}))]
            if transit:
                need += [
                    (self.encrypt_path, frozenset({"update"})),
                    (self.decrypt_path, frozenset({"update"})),
                ]
        elif action in READ_ACTIONS:
            need = [(self.secret_data_path, frozenset({"read"}))]
            if transit:
                need.append((self.decrypt_path, frozenset({"update"})))
        else:
            raise ValueError(f"unknown action {action!r}")
        need += [(f"{self.kv_mount}/data/{p}", frozenset({"read"})) for p in self.extra_read]
        return need


def for_group(fleet: FleetSpec, group: str) -> GroupAccess:
    extra: tuple[str, ...] = ()
    # A group no longer in the fleet file (orphaned stacks that destroy may remove)
    # is reached like any other; its target is unknown, so no ssh key is asked for.
    if group in fleet.groups and fleet.group_target(group) == "ssh" and fleet.ssh is not None:
        extra = (fleet.ssh.key.strip("/"),)
    return GroupAccess(fleet.name, group, extra_read=extra, cert_max_ttl_s=fleet.tls.cert_ttl_s)


def lacking(have: frozenset[str], need: frozenset[str]) -> list[str]:
    """The capabilities of `need` that `have` does not give (`root` gives all, `deny` none)."""
    if "deny" in have:
        return sorted(need)
    if "root" in have:
        return []
    return sorted(need - have)


# -- the refusal -----------------------------------------------------------------------
def refusals(client, accesses: Iterable[GroupAccess], action: str, *, transit: bool) -> list[str]:
    """One line per group whose paths VAULT_TOKEN lacks a capability on (empty: allowed).
    One request to sys/capabilities-self for every group at once."""
    accesses = list(accesses)
    need = {acc.group: acc.required(action, transit) for acc in accesses}
    have = vault.capabilities(client, [p for n in need.values() for p, _ in n])
    lines = []
    for acc in accesses:
        missing = [
            f"{', '.join(caps)} on {path}"
            for path, wanted in need[acc.group]
            if (caps := lacking(have.get(path, frozenset()), wanted))
        ]
        if missing:
            lines.append(
                f"dbfleet: VAULT_TOKEN may not {action} group {acc.group}: it lacks "
                + "; ".join(missing)
            )
    return lines


def vault_provider_wanted(env: Mapping[str, str] = os.environ) -> bool:
    """New stacks use Vault Transit unless no Vault is configured or the operator asked for
    the passphrase (DBFLEET_SECRETS_PROVIDER=passphrase)."""
    choice = (env.get(PROVIDER_ENV) or "vault").strip().lower()
    if choice not in ("vault", PASSPHRASE):
        raise AccessError(f"dbfleet: {PROVIDER_ENV}={choice!r}: use vault or {PASSPHRASE}")
    return choice == "vault" and bool((env.get("VAULT_ADDR") or "").strip())


def _admin_paths(acc: GroupAccess, full: bool) -> list[str]:
    paths = [f"sys/mounts/{acc.transit_mount}", acc.key_path]
    if full:
        paths += [f"sys/policies/acl/{acc.policy_name(m)}" for m in MODES]
        paths += [f"sys/mounts/{acc.pki_mount}", f"{acc.pki_mount}/root/generate/internal"]
        paths.append(f"auth/token/roles/{acc.token_role}")
    return paths


def bootstrap(client, acc: GroupAccess, *, full: bool, transit: bool) -> list[str]:
    """Creates what the group needs in Vault when VAULT_TOKEN may (an admin token): with
    `full` its policies and token role, and (with `full` or `transit`) its Transit key. With
    any other token nothing is written; a missing Transit key is then an error, since no new
    stack of the group could be encrypted. Returns what it created or changed."""
    paths = _admin_paths(acc, full)
    have = vault.capabilities(client, paths)
    if all(not lacking(have.get(p, frozenset()), _WRITE) for p in paths):
        done: list[str] = []
        if full:
            for mode in MODES:
                if vault.ensure_policy(client, acc.policy_name(mode), acc.policy(mode)):
                    done.append(f"policy {acc.policy_name(mode)}")
            if vault.ensure_token_role(client, acc.token_role, acc.role_settings()):
                done.append(f"token role {acc.token_role}")
            done += vault.ensure_group_pki(
                client, acc.pki_mount, acc.ca_name, max_ttl=f"{acc.cert_max_ttl_s}s"
            )
        if full or transit:
            done += vault.ensure_transit_key(client, acc.transit_mount, acc.transit_key)
        return done
    if transit:
        try:
            exists = vault.transit_key_exists(client, acc.transit_mount, acc.transit_key)
        except vault.VaultError:
            return []  # the token may not look: the engine says what is wrong, if anything
        if not exists:
            raise AccessError(
                f"dbfleet: Transit key {acc.key_path} of group {acc.group} does not exist and "
                "VAULT_TOKEN may not create it: run `dbfleet up` or `dbfleet token "
                f"{acc.group}` once with an admin token"
            )
    return []


def prepare(client, fleet: FleetSpec, groups: list[str], action: str) -> dict[str, str]:
    """Before any stack of `groups` is read: refuses (AccessError, one line per group) when
    VAULT_TOKEN lacks what `action` needs; then lets an admin token create what the groups
    need. Returns group → secrets provider URL for the groups' new stacks (empty: the
    passphrase)."""
    transit = vault_provider_wanted()
    accesses = [for_group(fleet, g) for g in groups]
    try:
        refused = refusals(client, accesses, action, transit=transit)
        if refused:
            raise AccessError("\n".join(refused))
        made: list[str] = []
        for acc in accesses:
            made += bootstrap(client, acc, full=action == "up", transit=transit)
    except vault.VaultError as exc:
        raise AccessError(f"dbfleet: {exc}") from None
    if made:
        print(f"vault: created or updated {', '.join(made)}", file=sys.stderr, flush=True)
    return {acc.group: acc.secrets_provider for acc in accesses} if transit else {}


def require(client, fleet: FleetSpec, groups: list[str], action: str) -> None:
    """The refusal of `prepare` alone, for commands that create nothing (status, endpoints,
    prove, destroy)."""
    try:
        refused = refusals(
            client,
            [for_group(fleet, g) for g in groups],
            action,
            transit=vault_provider_wanted(),
        )
    except vault.VaultError as exc:
        raise AccessError(f"dbfleet: {exc}") from None
    if refused:
        raise AccessError("\n".join(refused))


def project_dir() -> Path:
    from dbfleet.ops import rollout

    return rollout.project_dir()


def point_engine_at_vault(env: MutableMapping[str, str] = os.environ) -> None:
    """VAULT_SERVER_URL/VAULT_SERVER_TOKEN, which gocloud's hashivault driver reads before
    VAULT_ADDR/VAULT_TOKEN, are made the same as those for every pulumi process dbfleet
    starts (they inherit this process's environment)."""
    for server, plain in (
        ("VAULT_SERVER_URL", "VAULT_ADDR"),
        ("VAULT_SERVER_TOKEN", "VAULT_TOKEN"),
    ):
        value = (env.get(plain) or "").strip()
        if value:
            env[server] = value
        else:
            env.pop(server, None)


# -- which provider a stack uses ---------------------------------------------------------
def stack_provider(project: Path, stack: str) -> str | None:
    """`passphrase`, a secrets provider URL (hashivault://…), or None when neither the
    stack's config file nor its state says (not created yet)."""
    try:
        config = yaml.safe_load(stack_config_file(project, stack).read_text()) or {}
    except (OSError, yaml.YAMLError):
        config = {}
    if isinstance(config, dict):
        named = str(config.get("secretsprovider") or "")
        if named and named not in (PASSPHRASE, "default"):
            return named
        if named == PASSPHRASE or config.get("encryptionsalt"):
            return PASSPHRASE
    from dbfleet.ops.identity import stack_checkpoint

    try:
        data = stack_checkpoint(stack, project) or {}
    except (OSError, ValueError):
        return None
    providers = ((data.get("checkpoint") or {}).get("latest") or {}).get("secrets_providers")
    if not isinstance(providers, dict):
        return None
    if providers.get("type") == PASSPHRASE:
        return PASSPHRASE
    url = (providers.get("state") or {}).get("url")
    return str(url) if url else None


def describe_provider(provider: str | None) -> str:
    if provider is None:
        return "none yet (not created)"
    if provider == PASSPHRASE:
        return "passphrase (this clone's PULUMI_CONFIG_PASSPHRASE_FILE)"
    if provider.startswith(HASHIVAULT):
        key = provider[len(HASHIVAULT) :].split("?", 1)[0]
        return f"Vault Transit key {key} ({provider})"
    return provider


def passphrase_note(project: Path, groups: Iterable[str]) -> str | None:
    """One line when stacks of `groups` still use the passphrase while Vault is configured
    (read from their config files: no engine call)."""
    if not vault_provider_wanted():
        return None
    groups = list(groups)
    old = [
        f"{layer}-{g}"
        for g in groups
        for layer in LAYERS
        if stack_config_file(project, f"{layer}-{g}").exists()
        and stack_provider(project, f"{layer}-{g}") == PASSPHRASE
    ]
    if not old:
        return None
    return (
        f"note: {', '.join(old)} keep their secrets under the passphrase; move them to Vault "
        f"Transit: dbfleet secrets-provider {' '.join(groups)} --to-vault"
    )


# -- commands --------------------------------------------------------------------------
_TTL = re.compile(r"^[1-9][0-9]*[smhd]?$")


def check_ttl(text: str) -> str:
    """A Vault duration: a positive whole number of seconds, or with s, m, h or d."""
    value = (text or "").strip()
    if not _TTL.match(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 30m, 8h or 2d (a positive whole number, then s, m, h or d)"
        )
    return value


def cmd_token(args: argparse.Namespace, out=None) -> int:
    """Mints a token of the group's operator (or read-only) policy; prints only the token."""
    from dbfleet.ops.commands import load_fleet_file

    out = out or sys.stdout
    fleet = load_fleet_file(deployed=False)
    if args.group not in fleet.groups:
        raise Abort(
            f"dbfleet token: unknown group {args.group}; the fleet file has: {', '.join(fleet.groups)}"
        )
    mode = READ_ONLY if args.read_only else OPERATOR
    ttl = args.ttl or DEFAULT_TTL[mode]
    acc = for_group(fleet, args.group)
    create = f"auth/token/create/{acc.token_role}"
    try:
        client = vault.client_from_env()
        made = bootstrap(client, acc, full=True, transit=False)
        have = vault.capabilities(client, [create])[create]
        if lacking(have, frozenset({"update"})):
            raise AccessError(
                f"dbfleet token: VAULT_TOKEN may not create tokens for group {args.group}: it "
                f"lacks update on {create} (use an admin token, e.g. the local server's root "
                "token from scripts/vault.sh env)"
            )
        token = vault.create_token(
            client,
            acc.token_role,
            [acc.policy_name(mode)],
            ttl,
            display_name=f"dbfleet-{acc.fleet}-{acc.group}-{mode}",
            meta={"fleet": acc.fleet, "group": acc.group, "mode": mode},
        )
    except vault.VaultError as exc:
        raise AccessError(f"dbfleet token: {exc}") from None
    if made:
        print(f"vault: created or updated {', '.join(made)}", file=sys.stderr, flush=True)
    # stdout carries the token alone: `export VAULT_TOKEN=$(dbfleet token eu)`
    print(token, file=out, flush=True)
    print(
        f"dbfleet token: {mode} token for group {args.group} of fleet {acc.fleet}, ttl {ttl}",
        file=sys.stderr,
        flush=True,
    )
    return ExitCode.OK


def _group_stacks(groups: list[str]) -> list[str]:
    from dbfleet.ops import rollout

    existing = rollout.deployed_stacks()
    return [f"{layer}-{g}" for g in groups for layer in LAYERS if f"{layer}-{g}" in existing]


def change_to_vault(project: Path, stack: str, url: str) -> None:
    """`pulumi stack change-secrets-provider`: the passphrase (PULUMI_CONFIG_PASSPHRASE_FILE)
    opens the stack, the Transit key re-encrypts its config and state."""
    proc = subprocess.run(
        ["pulumi", "stack", "change-secrets-provider", "--stack", stack, "--non-interactive", url],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())
        raise AccessError(f"dbfleet secrets-provider: {stack}: {detail}")


def cmd_secrets_provider(args: argparse.Namespace) -> int:
    """Says which secrets provider each stack of the groups uses; with --to-vault, moves the
    passphrase ones to the group's Transit key."""
    from dbfleet.ops.commands import fleet_groups, group_vault, load_fleet_file

    fleet = load_fleet_file()
    groups = fleet_groups(args.groups, fleet=fleet)
    project = project_dir()
    providers: dict[str, str] = {}
    if args.to_vault:
        if not vault_provider_wanted():
            raise AccessError(
                "dbfleet secrets-provider: --to-vault needs a Vault (VAULT_ADDR) and "
                f"{PROVIDER_ENV} unset or vault"
            )
        providers = group_vault(fleet, groups, "secrets-provider")
    stacks = _group_stacks(groups)
    if not stacks:
        print("no stacks of these groups exist yet", file=sys.stderr)
        return ExitCode.OK
    width = max(len(s) for s in stacks)
    for stack in stacks:
        provider = stack_provider(project, stack)
        if args.to_vault and provider == PASSPHRASE:
            url = providers[parse_stack_name(stack).group]
            change_to_vault(project, stack, url)
            print(f"{stack:<{width}}  passphrase -> {describe_provider(url)}")
        else:
            print(f"{stack:<{width}}  {describe_provider(provider)}")
    return ExitCode.OK


def register(commands) -> None:
    from dbfleet.ops.commands import guard

    p = commands.add_parser(
        "token",
        help="mint a Vault token for one group (operator, or --read-only for CI review)",
        description="Mint a Vault token limited to GROUP: its secrets, its Transit key and its "
        "certificates (operator), or read and decrypt only (--read-only, for a CI preview). "
        "VAULT_TOKEN must be allowed to create it (an admin token creates the group's policies "
        "first). Prints only the token: export VAULT_TOKEN=$(dbfleet token GROUP).",
    )
    p.add_argument("group", metavar="GROUP")
    p.add_argument(
        "--ttl",
        type=check_ttl,
        metavar="DURATION",
        help=f"lifetime, e.g. 30m, 8h, 2d (default {DEFAULT_TTL[OPERATOR]}, "
        f"{DEFAULT_TTL[READ_ONLY]} with --read-only)",
    )
    p.add_argument(
        "--read-only", action="store_true", help="read secrets and decrypt state only (CI review)"
    )
    p.set_defaults(handler=guard(cmd_token))

    p = commands.add_parser(
        "secrets-provider",
        help="which secrets provider each stack uses; --to-vault moves passphrase stacks",
        description="Print the secrets provider of each stack of the groups (Vault Transit or "
        "the passphrase). With --to-vault, move the passphrase stacks to their group's "
        "Transit key (pulumi stack change-secrets-provider).",
    )
    p.add_argument("groups", nargs="*", metavar="GROUP")
    p.add_argument(
        "--to-vault", action="store_true", help="move passphrase stacks to Vault Transit"
    )
    p.set_defaults(handler=guard(cmd_secrets_provider, engine=True))
