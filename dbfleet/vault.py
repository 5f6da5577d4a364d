"""dbfleet's only door to Vault (any server that speaks the Vault API, e.g. OpenBao).

Database passwords live in a KV v2 engine (mount ``secret`` by default) under one path per
region group, ``dbfleet/<fleet>/<group>/postgres``, with the keys in :data:`SECRET_KEYS`.

The address and token come from the usual ``VAULT_ADDR`` / ``VAULT_TOKEN`` (for the local
target: ``eval "$(scripts/vault.sh env)"``). Optional, as for the Vault CLI: ``VAULT_CACERT``,
``VAULT_SKIP_VERIFY``, ``VAULT_CLIENT_CERT`` / ``VAULT_CLIENT_KEY``, ``VAULT_NAMESPACE``,
``VAULT_CLIENT_TIMEOUT`` (seconds, default 5).

Access control (issue 14) goes through here too: a token's capabilities on paths
(``sys/capabilities-self``), ACL policies, the Transit key that encrypts a group's stacks (mount
``transit`` by default, one key per group), token roles and token creation. Which paths and
policies a group has is decided in ``dbfleet.ops.access``; this module only speaks the API.

Every failure is raised as :class:`VaultError`, whose message says what to do and names
``VAULT_ADDR`` (with its value) and, where one is involved, the secret path. Secret values
never reach a log line or an exception message, and no hvac/requests exception is chained
onto a :class:`VaultError` (``raise ... from None``), so tracebacks carry only our text.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import hvac

# hvac and requests are imported where they are used: a stack that never talks to
# Vault (networks) and the policy pack import this module for its names only, and
# hvac with requests costs ≈ 0.15 s of start-up in every such process.

__all__ = [
    "BACKUP_KEY",
    "DEFAULT_MOUNT",
    "GENERATED_KEYS",
    "SECRET_KEYS",
    "TRANSIT_MOUNT",
    "VaultError",
    "capabilities",
    "client_from_env",
    "create_token",
    "delete_group_secrets",
    "ensure_group_pki",
    "ensure_group_secrets",
    "ensure_policy",
    "ensure_token_role",
    "ensure_transit_key",
    "issue_certificate",
    "read_ca_pem",
    "read_group_secrets",
    "secret_path",
    "transit_key_exists",
]

log = logging.getLogger(__name__)

SECRET_KEYS = ("superuser_password", "replication_password", "app_password")
#: the passphrase of the group's backup repository (pgBackRest's repo1-cipher-pass); generated
#: like the passwords, but only the replicas layer requires it, so a group deployed before
#: backups keeps working (status, proxies) until its next `up` adds it
BACKUP_KEY = "backup_passphrase"
#: every key ensure_group_secrets creates when it is missing
GENERATED_KEYS = (*SECRET_KEYS, BACKUP_KEY)
DEFAULT_MOUNT = "secret"
#: where the Transit engine that encrypts the stacks' secrets is mounted (gocloud's default)
TRANSIT_MOUNT = "transit"

#: bytes of randomness per generated password; token_urlsafe(32) gives 43 characters, 256 bits
TOKEN_BYTES = 32
DEFAULT_TIMEOUT_S = 5.0
#: how often ensure_group_secrets re-reads after losing a check-and-set race
CAS_ATTEMPTS = 5

_LOCAL_HINT = 'for the local target run: eval "$(scripts/vault.sh env)"'


class VaultError(Exception):
    """A Vault problem described so that a user can act on it (never contains secret values)."""


# --------------------------------------------------------------------------------------------
# paths


def _check_segment(kind: str, value: str) -> str:
    if not isinstance(value, str) or not value or value.strip() != value:
        raise ValueError(f"{kind} {value!r} cannot be part of a Vault path")
    if "/" in value or value in (".", "..") or any(c.isspace() for c in value):
        raise ValueError(f"{kind} {value!r} cannot be part of a Vault path")
    return value


def secret_path(fleet_name: str, group: str) -> str:
    """The KV v2 path (relative to the mount) of a region group's database passwords."""
    fleet = _check_segment("fleet name", fleet_name)
    return f"dbfleet/{fleet}/{_check_segment('group', group)}/postgres"


def _norm_mount(mount: str) -> str:
    mount = (mount or "").strip("/")
    if not mount:
        raise ValueError("the KV mount must not be empty")
    return mount


def _norm_path(path: str) -> str:
    path = (path or "").strip("/")
    if not path:
        raise ValueError("the secret path must not be empty")
    return path


# --------------------------------------------------------------------------------------------
# error translation


def _addr_of(client) -> str:
    return str(getattr(client, "url", None) or "<unknown>")


def _walk(exc: BaseException) -> Iterable[object]:
    """The exception, its args, reasons, causes and contexts (requests/urllib3 nest deeply)."""
    seen: set[int] = set()
    todo: list[object] = [exc]
    while todo:
        item = todo.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        if isinstance(item, BaseException):
            todo.extend(a for a in item.args if isinstance(a, BaseException))
            for attr in ("reason", "__cause__", "__context__"):
                nxt = getattr(item, attr, None)
                if isinstance(nxt, BaseException):
                    todo.append(nxt)


def _connection_reason(exc: BaseException) -> str:
    texts = []
    for item in _walk(exc):
        if isinstance(item, ConnectionRefusedError):
            return "connection refused"
        texts.append(str(item))
    text = " ".join(texts).lower()
    if "connection refused" in text or "errno 111" in text:
        return "connection refused"
    if (
        "name or service not known" in text
        or "nodename nor servname" in text
        or ("name resolution" in text)
    ):
        return "cannot resolve the host name"
    if "no route to host" in text:
        return "no route to host"
    if "network is unreachable" in text:
        return "network is unreachable"
    if "connection reset" in text or "remotedisconnected" in text or "aborted" in text:
        return "the connection was closed by the other side (is it a Vault server?)"
    return type(exc).__name__


def _clean(text: str) -> str:
    # Vault wraps lists of errors as "1 error occurred:\n\t* permission denied\n\n"
    lines = [ln.strip().lstrip("*").strip() for ln in str(text).splitlines()]
    lines = [ln for ln in lines if ln and not (ln.endswith("occurred:") and "error" in ln)]
    return "; ".join(lines)


def _vault_errors(exc: hvac.exceptions.VaultError) -> str:
    errors = getattr(exc, "errors", None)
    if errors:
        text = "; ".join(_clean(e) for e in errors)
    else:
        text = _clean(exc.args[0]) if exc.args and exc.args[0] else ""
    return text or "no detail given"


# One return per kind of Vault failure: a table of messages, read top to bottom.
def _translate(  # noqa: PLR0911
    exc: BaseException,
    addr: str,
    what: str,
    mount: str | None = None,
    path: str | None = None,
    capabilities: str = "read",
) -> VaultError:
    """Maps an hvac/requests exception to a VaultError. `what` says what we were doing."""
    import hvac.exceptions
    import requests.exceptions

    where = f"VAULT_ADDR={addr}"
    secret = f" for secret {mount}/{path}" if mount and path else ""
    api_path = f"{mount}/data/{path}" if mount and path else None

    if isinstance(exc, requests.exceptions.SSLError):
        return VaultError(
            f"cannot reach Vault at {where}: TLS error ({type(exc).__name__}); check the scheme "
            f"(http:// or https://) and VAULT_CACERT"
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return VaultError(f"cannot reach Vault at {where}: no answer in time while {what}{secret}")
    if isinstance(exc, requests.exceptions.ConnectionError):
        return VaultError(f"cannot reach Vault at {where}: {_connection_reason(exc)}")
    if isinstance(exc, requests.exceptions.RequestException):
        return VaultError(f"cannot talk to Vault at {where} while {what}: {type(exc).__name__}")

    if isinstance(exc, hvac.exceptions.VaultDown):
        detail = _vault_errors(exc)
        if "seal" in detail.lower():
            return VaultError(
                f"Vault at {where} is sealed; unseal it (scripts/vault.sh start unseals the "
                f"local server)"
            )
        return VaultError(f"Vault at {where} is unavailable while {what}{secret}: {detail}")
    if isinstance(exc, hvac.exceptions.VaultNotInitialized):
        return VaultError(
            f"Vault at {where} is not initialised (scripts/vault.sh start does it "
            f"for the local server)"
        )
    if isinstance(exc, hvac.exceptions.Forbidden):
        if api_path:
            return VaultError(
                f"permission denied{secret} at {where}: VAULT_TOKEN's policies must allow "
                f"{capabilities} on {api_path}"
            )
        return VaultError(f"permission denied at {where} while {what}: check VAULT_TOKEN")
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return VaultError(f"VAULT_TOKEN is not valid for {where} (HTTP 401 while {what}{secret})")
    if (
        mount
        and isinstance(exc, hvac.exceptions.InvalidPath)
        and "no handler for route" in _vault_errors(exc)
    ):
        return VaultError(
            f"KV mount '{mount}' is missing at {where}{secret}: enable a KV v2 engine there "
            f"(bao/vault secrets enable -path={mount} kv-v2; scripts/vault.sh start does it "
            f"for the local server)"
        )
    if isinstance(exc, hvac.exceptions.RateLimitExceeded):
        return VaultError(
            f"Vault at {where} is rate-limiting requests while {what}{secret}; retry later"
        )
    if isinstance(exc, hvac.exceptions.VaultError):
        return VaultError(f"Vault at {where} failed while {what}{secret}: {_vault_errors(exc)}")
    return VaultError(
        f"unexpected error from Vault at {where} while {what}{secret}: {type(exc).__name__}"
    )


def _translated() -> tuple[type[BaseException], ...]:
    """What `_translate` maps (evaluated by `except` only when something is raised)."""
    import hvac.exceptions
    import requests.exceptions

    return (hvac.exceptions.VaultError, requests.exceptions.RequestException)


# --------------------------------------------------------------------------------------------
# client


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on", "t", "y")


def _timeout(env: Mapping[str, str]) -> float:
    raw = (env.get("VAULT_CLIENT_TIMEOUT") or "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw.removesuffix("s"))
    except ValueError:
        raise VaultError(f"VAULT_CLIENT_TIMEOUT={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise VaultError(f"VAULT_CLIENT_TIMEOUT={raw!r} must be positive")
    return value


def client_from_env(env: Mapping[str, str] = os.environ) -> hvac.Client:
    """An authenticated hvac client for VAULT_ADDR/VAULT_TOKEN, after checking that the server
    answers, is initialised and unsealed, and accepts the token. Raises VaultError."""
    import hvac.exceptions

    addr = (env.get("VAULT_ADDR") or "").strip().rstrip("/")
    if not addr:
        raise VaultError(f"VAULT_ADDR is not set: point it at your Vault ({_LOCAL_HINT})")
    if not addr.startswith(("http://", "https://")):
        raise VaultError(f"VAULT_ADDR={addr} is not an http:// or https:// URL")
    token = (env.get("VAULT_TOKEN") or "").strip()
    if not token:
        raise VaultError(f"VAULT_TOKEN is not set (VAULT_ADDR={addr}); {_LOCAL_HINT}")

    verify: bool | str = True
    if env.get("VAULT_CACERT"):
        verify = env["VAULT_CACERT"]
    if _truthy(env.get("VAULT_SKIP_VERIFY")):
        verify = False
    cert = None
    if env.get("VAULT_CLIENT_CERT") and env.get("VAULT_CLIENT_KEY"):
        cert = (env["VAULT_CLIENT_CERT"], env["VAULT_CLIENT_KEY"])

    client = hvac.Client(
        url=addr,
        token=token,
        timeout=_timeout(env),
        verify=verify,
        cert=cert,
        namespace=env.get("VAULT_NAMESPACE") or None,
    )

    # 1. reachable, initialised, unsealed (GET /v1/sys/health needs no token)
    try:
        health = client.sys.read_health_status(method="GET", standby_ok=True)
    except _translated() as exc:
        raise _translate(exc, addr, "checking /v1/sys/health") from None
    if not isinstance(health, Mapping):
        status = getattr(health, "status_code", None)
        try:
            health = health.json()
        except (ValueError, AttributeError):  # not JSON: not a Vault server
            raise VaultError(
                f"VAULT_ADDR={addr} does not look like a Vault server "
                f"(GET /v1/sys/health answered HTTP {status})"
            ) from None
        if not isinstance(health, Mapping) or "sealed" not in health:
            raise VaultError(
                f"VAULT_ADDR={addr} does not look like a Vault server "
                f"(GET /v1/sys/health answered HTTP {status})"
            )
    if health.get("initialized") is False:
        raise VaultError(
            f"Vault at VAULT_ADDR={addr} is not initialised (scripts/vault.sh "
            f"start does it for the local server)"
        )
    if health.get("sealed"):
        raise VaultError(
            f"Vault at VAULT_ADDR={addr} is sealed; unseal it "
            f"(scripts/vault.sh start unseals the local server)"
        )

    # 2. the token is known to the server (lookup-self is in Vault's default policy)
    try:
        client.auth.token.lookup_self()
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
        raise VaultError(
            f"VAULT_TOKEN is not valid for VAULT_ADDR={addr}: the server refused it (unknown, "
            f"expired or revoked token, or one without the default policy); {_LOCAL_HINT}"
        ) from None
    except _translated() as exc:
        raise _translate(exc, addr, "checking VAULT_TOKEN") from None
    return client


# --------------------------------------------------------------------------------------------
# KV v2 secrets


def _read(client, mount: str, path: str, capabilities: str) -> tuple[dict | None, int]:
    """(data, version) of the latest version; (None, current version or 0) when it does not
    exist or its latest version is deleted/destroyed."""
    import hvac.exceptions

    addr = _addr_of(client)
    try:
        resp = client.secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
    except hvac.exceptions.InvalidPath as exc:
        if "no handler for route" in _vault_errors(exc):
            raise _translate(exc, addr, "reading", mount, path, capabilities) from None
        # absent (version 0) or latest version deleted/destroyed (metadata tells its number)
        doc = exc.json if isinstance(getattr(exc, "json", None), Mapping) else {}
        meta = (doc.get("data") or {}).get("metadata") or {}
        return None, int(meta.get("version") or 0)
    except _translated() as exc:
        raise _translate(exc, addr, "reading", mount, path, capabilities) from None
    try:
        body = resp["data"]
        data = body.get("data")
        version = int(body["metadata"]["version"])
    except (KeyError, TypeError, ValueError):
        raise VaultError(
            f"unexpected answer from Vault at VAULT_ADDR={addr} for secret {mount}/{path}: "
            f"is '{mount}' a KV version 2 mount?"
        ) from None
    if data is None:
        return None, version
    if not isinstance(data, Mapping):
        raise VaultError(f"secret {mount}/{path} at VAULT_ADDR={addr} is not a key/value map")
    return dict(data), version


def _check_values(data: Mapping, addr: str, mount: str, path: str) -> None:
    bad = sorted(
        k for k in GENERATED_KEYS if k in data and not isinstance(data[k], (str, type(None)))
    )
    if bad:
        raise VaultError(
            f"secret {mount}/{path} at VAULT_ADDR={addr}: {', '.join(bad)} must be strings"
        )


def _check_kv2(client, mount: str, path: str) -> None:
    """Refuses to write to a mount that is not KV v2 (a KV v1 mount would store our request
    body as a secret named data/<path>). Needs no more rights than the secret itself; when the
    server will not say (403/404), the write itself reports the problem."""
    import hvac.exceptions

    addr = _addr_of(client)
    try:
        resp = client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}")
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidPath):
        return
    except _translated() as exc:
        raise _translate(exc, addr, "checking the KV mount", mount, path) from None
    info = resp.get("data") if isinstance(resp, Mapping) else None
    if not isinstance(info, Mapping) or "type" not in info:
        return
    version = str((info.get("options") or {}).get("version") or "1")
    if info.get("type") != "kv" or version != "2":
        raise VaultError(
            f"mount '{mount}' at VAULT_ADDR={addr} is {info.get('type')} version {version}, not "
            f"KV v2; secret {mount}/{path} needs a KV v2 engine (bao/vault secrets enable "
            f"-path=<mount> kv-v2)"
        )


def _is_cas_conflict(exc: hvac.exceptions.VaultError) -> bool:
    return "check-and-set" in _vault_errors(exc).lower()


def ensure_group_secrets(client, mount: str, path: str) -> dict[str, str]:
    """Reads the group's secret and creates every missing (or empty) key of GENERATED_KEYS with a
    strong random value; existing values are kept. The write uses check-and-set on the version
    read, so concurrent runs cannot overwrite each other: the loser re-reads and adopts what the
    winner wrote. Returns every key of the secret."""
    import hvac.exceptions

    mount, path = _norm_mount(mount), _norm_path(path)
    addr = _addr_of(client)
    caps = "read, create and update"
    for _ in range(CAS_ATTEMPTS):
        data, version = _read(client, mount, path, caps)
        data = data or {}
        _check_values(data, addr, mount, path)
        missing = [k for k in GENERATED_KEYS if not data.get(k)]
        if not missing:
            return {str(k): v for k, v in data.items()}
        if version == 0:
            _check_kv2(client, mount, path)
        new = dict(data)
        for key in missing:
            new[key] = secrets.token_urlsafe(TOKEN_BYTES)
        try:
            client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=new, cas=version, mount_point=mount
            )
        except hvac.exceptions.InvalidRequest as exc:
            if _is_cas_conflict(exc):
                log.info("secret %s/%s changed under us (check-and-set); re-reading", mount, path)
                continue
            raise _translate(exc, addr, "writing", mount, path, caps) from None
        except _translated() as exc:
            raise _translate(exc, addr, "writing", mount, path, caps) from None
        log.info("created %s in Vault secret %s/%s", ", ".join(missing), mount, path)
        return {str(k): v for k, v in new.items()}
    raise VaultError(
        f"secret {mount}/{path} at VAULT_ADDR={addr} kept changing during {CAS_ATTEMPTS} "
        f"check-and-set attempts; another writer is busy on it, retry"
    )


def read_group_secrets(client, mount: str, path: str, also: Iterable[str] = ()) -> dict[str, str]:
    """The group's secret; VaultError when it or one of SECRET_KEYS (and of `also`) is
    missing."""
    mount, path = _norm_mount(mount), _norm_path(path)
    addr = _addr_of(client)
    data, _ = _read(client, mount, path, "read")
    if data is None:
        raise VaultError(
            f"secret {mount}/{path} does not exist at VAULT_ADDR={addr} (the accounts layer "
            f"creates it: pulumi up the group's accounts stack first)"
        )
    _check_values(data, addr, mount, path)
    missing = [k for k in (*SECRET_KEYS, *also) if not data.get(k)]
    if missing:
        raise VaultError(
            f"secret {mount}/{path} at VAULT_ADDR={addr} lacks {', '.join(missing)} (the accounts "
            f"layer creates missing keys: pulumi up the group's accounts stack)"
        )
    return {str(k): v for k, v in data.items()}


def delete_group_secrets(client, mount: str, path: str) -> None:
    """Deletes the secret's metadata and every version (no error if it does not exist)."""
    import hvac.exceptions

    mount, path = _norm_mount(mount), _norm_path(path)
    addr = _addr_of(client)
    try:
        client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=mount)
    except _translated() as exc:
        # the policy path for this call is <mount>/metadata/<path>
        err = _translate(exc, addr, "deleting", mount, path, "delete")
        if isinstance(exc, hvac.exceptions.Forbidden):
            err = VaultError(
                f"permission denied for secret {mount}/{path} at VAULT_ADDR={addr}: VAULT_TOKEN's "
                f"policies must allow delete on {mount}/metadata/{path}"
            )
        raise err from None


SSH_LOGIN_KEYS = ("private_key", "known_hosts")


def read_ssh_login(client, mount: str, path: str) -> dict[str, str]:
    """The ssh target's login: `private_key` (OpenSSH format) and `known_hosts` (the
    hosts' pinned public host keys). VaultError naming the path when either is
    missing: there is no trust-on-first-use."""
    mount, path = _norm_mount(mount), _norm_path(path)
    addr = _addr_of(client)
    data, _ = _read(client, mount, path, "read")
    if data is None:
        raise VaultError(
            f"secret {mount}/{path} does not exist at VAULT_ADDR={addr}: store the ssh login "
            f"there (private_key, known_hosts), e.g. bao kv put -mount={mount} {path} "
            "private_key=@id_ed25519 known_hosts=@known_hosts"
        )
    _check_values(data, addr, mount, path)
    missing = [k for k in SSH_LOGIN_KEYS if not data.get(k)]
    if missing:
        raise VaultError(
            f"secret {mount}/{path} at VAULT_ADDR={addr} lacks {', '.join(missing)}: the ssh "
            "target needs the login's private key and every host's pinned host key"
        )
    return {k: str(data[k]) for k in SSH_LOGIN_KEYS}


# --------------------------------------------------------------------------------------------
# access control: capabilities, policies, Transit keys, token roles, tokens


def _api_error(exc: BaseException, addr: str, what: str, api_path: str, caps: str) -> VaultError:
    """`_translate` for a non-KV path: a 403 names the capability and the path."""
    import hvac.exceptions

    if isinstance(exc, hvac.exceptions.Forbidden):
        return VaultError(
            f"permission denied at VAULT_ADDR={addr} while {what}: VAULT_TOKEN's policies must "
            f"allow {caps} on {api_path}"
        )
    return _translate(exc, addr, what)


def capabilities(client, paths: Iterable[str]) -> dict[str, frozenset[str]]:
    """VAULT_TOKEN's capabilities on each path (``sys/capabilities-self``, allowed by Vault's
    default policy). Asking reads nothing at those paths: the audit log shows one request to
    sys/capabilities-self. `root` in a set means everything."""
    wanted = list(dict.fromkeys(paths))
    addr = _addr_of(client)
    try:
        resp = client.write_data("sys/capabilities-self", data={"paths": wanted})
    except _translated() as exc:
        raise _api_error(
            exc, addr, "asking VAULT_TOKEN's capabilities", "sys/capabilities-self", "update"
        ) from None
    body = resp.get("data") if isinstance(resp, Mapping) and resp.get("data") else resp
    if not isinstance(body, Mapping):
        raise VaultError(f"unexpected answer from sys/capabilities-self at VAULT_ADDR={addr}")
    out: dict[str, frozenset[str]] = {}
    for path in wanted:
        got = body.get(path)
        if got is None and len(wanted) == 1:  # old servers answer {"capabilities": [...]}
            got = body.get("capabilities")
        out[path] = frozenset(str(c) for c in (got or ()))
    return out


def ensure_policy(client, name: str, text: str) -> bool:
    """Writes the ACL policy `name` when it is missing or differs; True when it wrote."""
    api_path = f"sys/policies/acl/{_check_segment('policy name', name)}"
    current = _read_or_none(client, api_path, f"policy {name}")
    if isinstance(current, Mapping) and (current.get("data") or {}).get("policy") == text:
        return False
    _write(client, api_path, {"policy": text}, f"writing policy {name}")
    log.info("wrote Vault policy %s", name)
    return True


def _read_or_none(client, api_path: str, what: str) -> object:
    """`client.read(api_path)`, None when nothing is there (404); any other failure
    as one VaultError naming `what` ("reading <what>") and the path."""
    import hvac.exceptions

    try:
        return client.read(api_path)
    except hvac.exceptions.InvalidPath:
        return None
    except _translated() as exc:
        raise _api_error(exc, _addr_of(client), f"reading {what}", api_path, "read") from None


def _write(client, api_path: str, data: Mapping, what: str, caps: str = "create, update"):
    """`client.write_data(api_path, data)`; a failure as one VaultError naming `what`
    ("while <what>"), the path and the capabilities it needs."""
    try:
        return client.write_data(api_path, data=dict(data))
    except _translated() as exc:
        raise _api_error(exc, _addr_of(client), what, api_path, caps) from None


def _ensure_mount(client, mount: str, kind: str, why: str, **options: object) -> bool:
    """A secrets engine of type `kind` at `mount` (`why`: what dbfleet keeps there, for
    the description and the error when another engine sits there). True when it enabled it."""
    addr = _addr_of(client)
    try:
        mounts = client.sys.list_mounted_secrets_engines()
    except _translated() as exc:
        raise _api_error(exc, addr, "listing secrets engines", "sys/mounts", "read") from None
    table = mounts.get("data", mounts) if isinstance(mounts, Mapping) else {}
    found = table.get(f"{mount}/")
    if found is not None:
        if found.get("type") != kind:
            raise VaultError(
                f"mount '{mount}' at VAULT_ADDR={addr} is {found.get('type')}, not {kind}; "
                f"dbfleet keeps {why} there"
            )
        return False
    try:
        client.sys.enable_secrets_engine(
            backend_type=kind, path=mount, description=f"dbfleet {why}", **options
        )
    except _translated() as exc:
        raise _api_error(
            exc, addr, f"enabling {kind} at {mount}/", f"sys/mounts/{mount}", "create, update"
        ) from None
    return True


def transit_key_exists(client, mount: str, key: str) -> bool:
    """Whether Transit key `key` exists at `mount` (VaultError when the token may not say)."""
    api_path = f"{_norm_mount(mount)}/keys/{_check_segment('transit key', key)}"
    # None on 404: no such key (or no such mount)
    return _read_or_none(client, api_path, f"Transit key {key}") is not None


def ensure_transit_key(client, mount: str, key: str) -> list[str]:
    """A Transit engine at `mount` and an aes256-gcm96 key `key` in it; returns what it
    created (empty when both existed). Needs an admin token (sys/mounts, keys)."""
    mount = _norm_mount(mount)
    made: list[str] = []
    if _ensure_mount(client, mount, "transit", "stack secrets"):
        made.append(f"Transit engine {mount}/")
    if not transit_key_exists(client, mount, key):
        api_path = f"{mount}/keys/{key}"
        _write(client, api_path, {"type": "aes256-gcm96"}, f"creating Transit key {key}")
        made.append(f"Transit key {mount}/keys/{key}")
    for what in made:
        log.info("created %s", what)
    return made


def ensure_token_role(client, role: str, settings: Mapping[str, object]) -> bool:
    """Writes token role `role` (auth/token/roles/<role>) when missing or when one of
    `settings` differs; True when it wrote."""
    api_path = f"auth/token/roles/{_check_segment('token role', role)}"
    current = _read_or_none(client, api_path, f"token role {role}")
    data = (current or {}).get("data") or {} if isinstance(current, Mapping) else {}

    def same(key: str, want: object) -> bool:
        have = data.get(key)
        if isinstance(want, (list, tuple)):
            return sorted(have or []) == sorted(want)
        return have == want

    if data and all(same(k, v) for k, v in settings.items()):
        return False
    _write(client, api_path, settings, f"writing token role {role}")
    log.info("wrote token role %s", role)
    return True


def create_token(
    client,
    role: str,
    policies: list[str],
    ttl: str,
    display_name: str,
    meta: Mapping[str, str] | None = None,
) -> str:
    """A new token from role `role` with `policies`; returns the token (a secret: the caller
    prints it once and never logs it)."""
    addr = _addr_of(client)
    api_path = f"auth/token/create/{_check_segment('token role', role)}"
    try:
        resp = client.auth.token.create(
            role_name=role,
            policies=list(policies),
            ttl=ttl,
            display_name=display_name,
            meta=dict(meta or {}),
        )
    except _translated() as exc:
        raise _api_error(
            exc, addr, f"creating a token from role {role}", api_path, "update"
        ) from None
    try:
        token = str(resp["auth"]["client_token"])
    except (KeyError, TypeError):
        raise VaultError(f"Vault at VAULT_ADDR={addr} created no token from role {role}") from None
    granted = set((resp.get("auth") or {}).get("policies") or [])
    if not set(policies) <= granted:
        # the role does not allow them (an old role): refuse rather than hand out a weaker token
        raise VaultError(
            f"token role {role} at VAULT_ADDR={addr} did not grant {', '.join(sorted(set(policies) - granted))}"
        )
    return token


#: the role every server certificate of a group is issued from
PKI_ROLE = "server"
#: pgBackRest's TLS servers and clients on the ssh target (components/backup.py)
BACKUP_PKI_ROLE = "pgbackrest"
#: a group CA's lifetime (and the PKI engine's maximum lease): ten years
CA_TTL = "87600h"


def pki_mount(fleet_name: str, group: str) -> str:
    """Where group `group`'s PKI engine (its CA) is mounted."""
    return f"pki-{_check_segment('fleet name', fleet_name)}-{_check_segment('group', group)}"


def ca_name(fleet_name: str, group: str) -> str:
    """The common name of group `group`'s CA."""
    return f"dbfleet {fleet_name} {group} CA"


def ensure_group_pki(client, mount: str, common_name: str, max_ttl: str) -> list[str]:
    """A PKI engine at `mount` with its own root CA (`common_name`, 10 years) and a role
    `server` that issues server certificates for IP addresses and names (and the same
    role `pgbackrest` for pgBackRest's TLS servers on the ssh target), at most
    `max_ttl` long, not stored in Vault (they are renewed, never looked up). One engine
    per group: a group's certificates chain to its CA only. Returns what it created or
    changed. Needs an admin token (sys/mounts, root generation, roles)."""
    mount = _norm_mount(mount)
    made: list[str] = []
    if _ensure_mount(
        client, mount, "pki", f"certificates: {common_name}", config={"max_lease_ttl": CA_TTL}
    ):
        made.append(f"PKI engine {mount}/")
    if not read_ca_pem(client, mount):
        _write(
            client,
            f"{mount}/root/generate/internal",
            {"common_name": common_name, "ttl": CA_TTL, "key_type": "ec", "key_bits": 256},
            f"generating the CA of {mount}",
            "update",
        )
        made.append(f"CA {common_name}")
    role = {
        "allow_any_name": True,
        "enforce_hostnames": False,
        "allow_ip_sans": True,
        "server_flag": True,
        "client_flag": True,
        "key_type": "ec",
        "key_bits": 256,
        "max_ttl": max_ttl,
        "no_store": True,
    }
    for name in (PKI_ROLE, BACKUP_PKI_ROLE):
        api_path = f"{mount}/roles/{name}"
        current = _read_or_none(client, api_path, f"PKI role {name}")
        have = (current or {}).get("data") if isinstance(current, Mapping) else None
        if (
            not isinstance(have, Mapping)
            or any(str(have.get(k)) != str(v) for k, v in role.items() if k != "max_ttl")
            or _seconds(have.get("max_ttl")) != _seconds(max_ttl)
        ):
            _write(client, api_path, role, f"writing PKI role {name}", "update")
            made.append(f"PKI role {mount}/roles/{name}")
    for what in made:
        log.info("created %s", what)
    return made


def _seconds(value: object) -> int | None:
    """A Vault duration ("72h", "60s", 3600) in seconds; None when unreadable."""
    if isinstance(value, int):
        return value
    text = str(value or "").strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if text and text[-1] in units:
            return int(float(text[:-1]) * units[text[-1]])
        return int(text)
    except ValueError:
        return None


def read_ca_pem(client, mount: str) -> str:
    """The PEM certificate of the group's CA at `mount` ("" when there is none yet)."""
    import hvac.exceptions

    mount = _norm_mount(mount)
    api_path = f"{mount}/cert/ca"
    try:
        got = client.read(api_path)
    except hvac.exceptions.InvalidPath:
        return ""
    except _translated() as exc:
        # A PKI engine without a CA yet answers 500 "no default issuer".
        if "no default issuer" in str(exc):
            return ""
        raise _api_error(
            exc, _addr_of(client), f"reading the CA of {mount}", api_path, "read"
        ) from None
    data = (got or {}).get("data") if isinstance(got, Mapping) else None
    return str((data or {}).get("certificate") or "").strip()


def issue_certificate(
    client, mount: str, common_name: str, ip_sans: Iterable[str], ttl_s: int
) -> dict[str, object]:
    """A new certificate from the group's role `server`: its key is made by Vault, returned
    here in memory only (the caller keeps it as a secret). Returns certificate, private_key,
    ca (PEM), serial and expiration (epoch seconds)."""
    mount = _norm_mount(mount)
    api_path = f"{mount}/issue/{PKI_ROLE}"
    try:
        resp = client.write_data(
            api_path,
            data={
                "common_name": common_name,
                "ip_sans": ",".join(ip_sans),
                "ttl": f"{int(ttl_s)}s",
                "private_key_format": "pkcs8",
            },
        )
    except _translated() as exc:
        raise _api_error(
            exc, _addr_of(client), f"issuing a certificate for {common_name}", api_path, "update"
        ) from None
    data = resp.get("data") if isinstance(resp, Mapping) else None
    if not isinstance(data, Mapping) or not data.get("certificate") or not data.get("private_key"):
        raise VaultError(
            f"no certificate in the answer of {api_path} at VAULT_ADDR={_addr_of(client)}"
        )
    return {
        "certificate": str(data["certificate"]).strip(),
        "private_key": str(data["private_key"]).strip(),
        "ca": str(data.get("issuing_ca") or "").strip(),
        "serial": str(data.get("serial_number") or ""),
        "expiration": int(data.get("expiration") or 0),
    }
