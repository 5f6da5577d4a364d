"""Unit tests of dbfleet.vault against a fake hvac-like client (no server, no network)."""

from __future__ import annotations

import base64
import logging
import math
import string
import traceback
from collections import Counter

import hvac.exceptions
import pytest
import requests.exceptions
from urllib3.exceptions import MaxRetryError, NewConnectionError

from dbfleet import vault as v

ADDR = "http://127.0.0.1:8200"
MOUNT = "secret"
PATH = "dbfleet/demo/us/postgres"
URLSAFE = set(string.ascii_letters + string.digits + "-_")


# --------------------------------------------------------------------------------------------
# a fake hvac.Client: just the calls dbfleet.vault makes, with Vault's semantics for KV v2


def _hvac_error(cls, *errors, url=f"{ADDR}/v1/x", json=None):
    return cls(errors=list(errors), method="get", url=url, json=json)


class FakeKV2:
    def __init__(self, client):
        self.client = client
        self.store: dict[tuple[str, str], list] = {}  # versions: dict | "deleted" | "destroyed"
        self.writes: list[dict] = []  # what each successful write sent (cas, data)
        self.before_write = None  # hook(kv, mount, path) run before each write: a rival writer

    def _maybe_raise(self, op):
        exc = self.client.errors.get(op)
        if exc is not None:
            raise exc

    def _route(self, mount):
        if mount not in self.client.mounts:
            raise _hvac_error(
                hvac.exceptions.InvalidPath,
                f'no handler for route "{mount}/data/x". route entry not found.',
            )

    def read_secret_version(
        self, path, version=None, mount_point="secret", raise_on_deleted_version=None
    ):
        self._maybe_raise("read")
        self._route(mount_point)
        versions = self.store.get((mount_point, path))
        if not versions:
            raise _hvac_error(hvac.exceptions.InvalidPath, json={"errors": []})
        latest = versions[-1]
        meta = {"version": len(versions), "deletion_time": "", "destroyed": False}
        if latest == "deleted":
            meta["deletion_time"] = "2026-01-01T00:00:00Z"
        if latest == "destroyed":
            meta["destroyed"] = True
        if isinstance(latest, str):
            doc = {"data": {"data": None, "metadata": meta}}
            if raise_on_deleted_version is False and latest == "deleted":
                return doc
            raise _hvac_error(hvac.exceptions.InvalidPath, json=doc)
        return {"data": {"data": dict(latest), "metadata": meta}}

    def create_or_update_secret(self, path, secret, cas=None, mount_point="secret"):
        if self.before_write is not None:
            self.before_write(self, mount_point, path)
        self._maybe_raise("write")
        self._route(mount_point)
        versions = self.store.setdefault((mount_point, path), [])
        if cas is not None and cas != len(versions):
            raise _hvac_error(
                hvac.exceptions.InvalidRequest,
                "check-and-set parameter did not match the current version",
            )
        versions.append(dict(secret))
        self.writes.append({"cas": cas, "data": dict(secret)})
        return {"data": {"version": len(versions)}}

    def delete_metadata_and_all_versions(self, path, mount_point="secret"):
        self._maybe_raise("delete")
        self._route(mount_point)
        self.store.pop((mount_point, path), None)

    # helper for tests: a direct write, as another program would do it
    def put(self, data, mount=MOUNT, path=PATH):
        self.store.setdefault((mount, path), []).append(dict(data))


class _NS:
    pass


class FakeAdapter:
    def __init__(self, client):
        self.client = client

    def get(self, url):
        self.client._maybe_raise("adapter")
        mount = url.rsplit("/", 1)[-1]
        if mount not in self.client.mounts:
            raise _hvac_error(hvac.exceptions.Forbidden, "preflight capability check returned 403")
        kind, version = self.client.mounts[mount]
        return {"data": {"type": kind, "options": {"version": version} if version else None}}


class FakeClient:
    def __init__(self, url=ADDR, token="root", health=None, **kwargs):
        self.url = url
        self.token = token
        self.kwargs = kwargs
        self.errors: dict[str, BaseException] = {}
        self.mounts = {"secret": ("kv", "2")}
        self.health = health if health is not None else {"initialized": True, "sealed": False}
        self.valid_tokens = {"root"}
        self.kv = FakeKV2(self)
        self.secrets = _NS()
        self.secrets.kv = _NS()
        self.secrets.kv.v2 = self.kv
        self.sys = _NS()
        self.sys.read_health_status = self._read_health_status
        self.auth = _NS()
        self.auth.token = _NS()
        self.auth.token.lookup_self = self._lookup_self
        self.adapter = FakeAdapter(self)

    def _maybe_raise(self, op):
        exc = self.errors.get(op)
        if exc is not None:
            raise exc

    def _read_health_status(self, method="HEAD", standby_ok=None, **_):
        assert method == "GET"
        self._maybe_raise("health")
        return self.health

    def _lookup_self(self):
        self._maybe_raise("lookup")
        if self.token not in self.valid_tokens:
            raise _hvac_error(hvac.exceptions.Forbidden, "permission denied")
        return {"data": {"policies": ["root"]}}


@pytest.fixture
def client():
    return FakeClient()


@pytest.fixture
def fake_hvac(monkeypatch):
    """Makes hvac.Client (as seen by dbfleet.vault) build FakeClients; returns the list of them."""

    class Made(list):
        setup: dict

    made = Made()
    made.setup = {}
    setup = made.setup

    def factory(url=None, token=None, **kwargs):
        c = FakeClient(url=url, token=token, **kwargs)
        for key, value in setup.items():
            setattr(c, key, value)
        made.append(c)
        return c

    monkeypatch.setattr(hvac, "Client", factory)
    return made


def refused() -> requests.exceptions.ConnectionError:
    """A connection-refused error built the way requests/urllib3 build it."""
    inner = NewConnectionError(
        None, "Failed to establish a new connection: [Errno 111] Connection refused"
    )
    inner.__cause__ = ConnectionRefusedError(111, "Connection refused")
    return requests.exceptions.ConnectionError(MaxRetryError(None, "/v1/sys/health", inner))


def env(**extra):
    base = {"VAULT_ADDR": ADDR, "VAULT_TOKEN": "root"}
    base.update(extra)
    return {k: val for k, val in base.items() if val is not None}


# --------------------------------------------------------------------------------------------
# paths


def test_secret_path_layout():
    assert v.secret_path("demo", "us") == "dbfleet/demo/us/postgres"
    assert v.SECRET_KEYS == ("superuser_password", "replication_password", "app_password")


@pytest.mark.parametrize(
    "fleet,group",
    [("", "us"), ("demo", ""), ("a/b", "us"), ("demo", ".."), ("de mo", "us"), ("demo", " us")],
)
def test_secret_path_rejects_unsafe_segments(fleet, group):
    with pytest.raises(ValueError):
        v.secret_path(fleet, group)


# --------------------------------------------------------------------------------------------
# ensure_group_secrets


def test_ensure_creates_all_keys_on_empty_path(client):
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert set(got) == set(v.GENERATED_KEYS)
    assert len(set(got.values())) == len(v.GENERATED_KEYS)
    assert client.kv.writes == [{"cas": 0, "data": got}]  # created with check-and-set 0
    assert client.kv.store[(MOUNT, PATH)][-1] == got


def test_ensure_creates_only_missing_keys_and_keeps_the_others(client):
    client.kv.put({"superuser_password": "keep-me-1", "other": "x"})
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert got["superuser_password"] == "keep-me-1"
    assert got["other"] == "x"  # keys that are not ours survive the write
    assert set(got) == set(v.GENERATED_KEYS) | {"other"}
    assert len(client.kv.writes) == 1
    assert client.kv.writes[0]["cas"] == 1  # the version that was read
    assert client.kv.store[(MOUNT, PATH)][-1] == got


def test_ensure_writes_nothing_when_complete(client):
    present = {k: f"value-{k}" for k in v.GENERATED_KEYS}
    client.kv.put(present)
    assert v.ensure_group_secrets(client, MOUNT, PATH) == present
    assert v.ensure_group_secrets(client, MOUNT, PATH) == present
    assert client.kv.writes == []
    assert len(client.kv.store[(MOUNT, PATH)]) == 1


def test_ensure_replaces_empty_values(client):
    client.kv.put({"superuser_password": "", "replication_password": "r", "app_password": "a"})
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert got["superuser_password"]
    assert got["replication_password"] == "r" and got["app_password"] == "a"


def test_ensure_is_stable_across_calls(client):
    first = v.ensure_group_secrets(client, MOUNT, PATH)
    assert v.ensure_group_secrets(client, MOUNT, PATH) == first
    assert v.read_group_secrets(client, MOUNT, PATH) == first


@pytest.mark.parametrize("latest", ["deleted", "destroyed"])
def test_ensure_recreates_after_delete_using_the_current_version_for_cas(client, latest):
    client.kv.put({k: "old" for k in v.GENERATED_KEYS})
    client.kv.store[(MOUNT, PATH)].append(latest)
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert "old" not in got.values()
    assert client.kv.writes[-1]["cas"] == 2


def test_generated_values_are_strong(client):
    values = []
    for i in range(40):
        values += v.ensure_group_secrets(client, MOUNT, f"dbfleet/demo/g{i}/postgres").values()
    assert len(set(values)) == len(values)  # no repeats in 120 values
    for value in values:
        assert len(value) >= 43
        assert set(value) <= URLSAFE  # safe in URIs, .pgpass, shell-free config files
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        assert len(raw) == 32  # 256 bits from the OS CSPRNG
    # empirical character entropy over everything generated, close to log2(64) = 6 bits/char
    counts = Counter("".join(values))
    total = sum(counts.values())
    entropy = -sum(c / total * math.log2(c / total) for c in counts.values())
    assert entropy > 5.8


def test_cas_conflict_rereads_and_adopts_the_winners_values(client):
    rival = {k: f"rival-{k}" for k in v.GENERATED_KEYS}
    calls = []

    def rival_writes_first(kv, mount, path):
        calls.append(1)
        if len(calls) == 1:  # between our read and our write, someone else creates the secret
            kv.put(rival, mount, path)

    client.kv.before_write = rival_writes_first
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert got == rival
    assert client.kv.store[(MOUNT, PATH)] == [rival]  # nothing clobbered, nothing rewritten
    assert len(calls) == 1  # after the conflict the re-read found it complete: no second write


def test_cas_conflict_merges_with_a_partial_rival(client):
    def rival_writes_one_key(kv, mount, path):
        kv.before_write = None
        kv.put({"app_password": "rival-app"}, mount, path)

    client.kv.before_write = rival_writes_one_key
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert got["app_password"] == "rival-app"
    assert set(got) == set(v.GENERATED_KEYS)
    assert client.kv.writes[-1]["cas"] == 1


def test_cas_gives_up_after_bounded_attempts_without_leaking(client, monkeypatch):
    generated = _spy_generated(monkeypatch)

    def always_rival(kv, mount, path):
        kv.put({"unrelated": "x"}, mount, path)

    client.kv.before_write = always_rival
    with pytest.raises(v.VaultError) as err:
        v.ensure_group_secrets(client, MOUNT, PATH)
    text = str(err.value)
    assert f"VAULT_ADDR={ADDR}" in text and f"{MOUNT}/{PATH}" in text and "retry" in text
    assert generated and _no_secret_in(err.value, generated)


# --------------------------------------------------------------------------------------------
# read / delete


def test_read_returns_values(client):
    present = {k: f"v-{k}" for k in v.GENERATED_KEYS}
    client.kv.put(present)
    assert v.read_group_secrets(client, MOUNT, PATH) == present
    assert client.kv.writes == []


def test_read_missing_secret_names_path_and_addr(client):
    with pytest.raises(v.VaultError, match=rf"secret {MOUNT}/{PATH} does not exist") as err:
        v.read_group_secrets(client, MOUNT, PATH)
    assert f"VAULT_ADDR={ADDR}" in str(err.value)
    assert client.kv.writes == []  # read never creates


def test_read_missing_key_names_the_key_not_the_values(client):
    client.kv.put({"superuser_password": "s3cr3t-super", "app_password": "s3cr3t-app"})
    with pytest.raises(v.VaultError) as err:
        v.read_group_secrets(client, MOUNT, PATH)
    text = str(err.value)
    assert "replication_password" in text and PATH in text and f"VAULT_ADDR={ADDR}" in text
    assert "s3cr3t" not in text


def test_non_string_value_is_reported_without_its_value(client):
    client.kv.put(
        {"superuser_password": 123456789, "replication_password": "r", "app_password": "a"}
    )
    with pytest.raises(v.VaultError, match="superuser_password must be strings") as err:
        v.ensure_group_secrets(client, MOUNT, PATH)
    assert "123456789" not in str(err.value)


def test_delete_removes_all_versions_and_is_idempotent(client):
    v.ensure_group_secrets(client, MOUNT, PATH)
    v.ensure_group_secrets(client, MOUNT, "dbfleet/demo/eu/postgres")
    v.delete_group_secrets(client, MOUNT, PATH)
    assert (MOUNT, PATH) not in client.kv.store
    assert (MOUNT, "dbfleet/demo/eu/postgres") in client.kv.store
    v.delete_group_secrets(client, MOUNT, PATH)  # already gone: fine
    with pytest.raises(v.VaultError, match="does not exist"):
        v.read_group_secrets(client, MOUNT, PATH)


# --------------------------------------------------------------------------------------------
# errors during KV operations: clear, naming VAULT_ADDR and the path


@pytest.mark.parametrize(
    "op,func",
    [
        ("read", v.ensure_group_secrets),
        ("read", v.read_group_secrets),
        ("write", v.ensure_group_secrets),
        ("delete", v.delete_group_secrets),
    ],
)
@pytest.mark.parametrize(
    "exc,expected",
    [
        (
            _hvac_error(hvac.exceptions.Forbidden, "1 error occurred:\n\t* permission denied\n\n"),
            "permission denied for secret secret/dbfleet/demo/us/postgres",
        ),
        (_hvac_error(hvac.exceptions.VaultDown, "Vault is sealed"), "is sealed"),
        (
            _hvac_error(hvac.exceptions.InternalServerError, "storage is on fire"),
            "failed while .* for secret secret/dbfleet/demo/us/postgres: storage is on fire",
        ),
        (refused(), f"cannot reach Vault at VAULT_ADDR={ADDR}: connection refused"),
        (
            requests.exceptions.ReadTimeout("read timed out"),
            f"cannot reach Vault at VAULT_ADDR={ADDR}: no answer in time",
        ),
    ],
)
def test_kv_errors_are_mapped(client, op, func, exc, expected):
    client.errors[op] = exc
    with pytest.raises(v.VaultError, match=expected) as err:
        func(client, MOUNT, PATH)
    assert f"VAULT_ADDR={ADDR}" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_permission_denied_names_the_policy_path_and_capabilities(client):
    client.errors["read"] = _hvac_error(hvac.exceptions.Forbidden, "permission denied")
    with pytest.raises(v.VaultError) as err:
        v.ensure_group_secrets(client, MOUNT, PATH)
    assert "read, create and update on secret/data/dbfleet/demo/us/postgres" in str(err.value)
    client.errors = {"delete": _hvac_error(hvac.exceptions.Forbidden, "permission denied")}
    with pytest.raises(v.VaultError) as err:
        v.delete_group_secrets(client, MOUNT, PATH)
    assert "delete on secret/metadata/dbfleet/demo/us/postgres" in str(err.value)


@pytest.mark.parametrize(
    "func", [v.ensure_group_secrets, v.read_group_secrets, v.delete_group_secrets]
)
def test_missing_kv_mount_is_named(client, func):
    with pytest.raises(v.VaultError) as err:
        func(client, "nosuch", PATH)
    text = str(err.value)
    assert "KV mount 'nosuch' is missing" in text
    assert f"VAULT_ADDR={ADDR}" in text and f"nosuch/{PATH}" in text and "kv-v2" in text


def test_kv_version_1_mount_is_refused_before_writing(client):
    client.mounts["kv1"] = ("kv", None)
    client.kv._route = lambda mount: None  # v1 answers 404 "absent" for <mount>/data/<path>
    with pytest.raises(v.VaultError, match="kv version 1, not KV v2") as err:
        v.ensure_group_secrets(client, "kv1", PATH)
    assert f"VAULT_ADDR={ADDR}" in str(err.value) and f"kv1/{PATH}" in str(err.value)
    assert client.kv.writes == []


def test_unknown_mount_type_check_is_skipped_when_the_server_will_not_say(client):
    client.errors["adapter"] = _hvac_error(hvac.exceptions.Forbidden, "preflight 403")
    assert set(v.ensure_group_secrets(client, MOUNT, PATH)) == set(v.GENERATED_KEYS)


def test_non_kv2_answer_is_explained(client):
    client.kv.read_secret_version = lambda **kw: {"data": {"foo": "bar"}}
    with pytest.raises(v.VaultError, match="KV version 2"):
        v.read_group_secrets(client, MOUNT, PATH)


# --------------------------------------------------------------------------------------------
# no secret value anywhere in an error (message, repr, traceback) or in the logs


def _spy_generated(monkeypatch) -> list[str]:
    generated: list[str] = []
    real = v.secrets.token_urlsafe

    def spy(n):
        value = real(n)
        generated.append(value)
        return value

    monkeypatch.setattr(v.secrets, "token_urlsafe", spy)
    return generated


def _no_secret_in(exc: BaseException, values) -> bool:
    blob = "".join(traceback.format_exception(exc)) + repr(exc) + str(exc.args)
    return not any(val in blob for val in values)


@pytest.mark.parametrize(
    "exc",
    [
        _hvac_error(hvac.exceptions.Forbidden, "permission denied"),
        _hvac_error(hvac.exceptions.InvalidRequest, "some validation failure"),
        _hvac_error(hvac.exceptions.InternalServerError, "boom"),
        _hvac_error(hvac.exceptions.VaultDown, "Vault is sealed"),
        refused(),
        requests.exceptions.ConnectTimeout("timed out"),
    ],
)
def test_no_secret_value_in_write_errors_or_logs(client, monkeypatch, caplog, exc):
    caplog.set_level(logging.DEBUG)
    generated = _spy_generated(monkeypatch)
    client.kv.put({"superuser_password": "existing-super-value"})
    client.errors["write"] = exc
    with pytest.raises(v.VaultError) as err:
        v.ensure_group_secrets(client, MOUNT, PATH)
    assert len(generated) == len(v.GENERATED_KEYS) - 1
    assert _no_secret_in(err.value, generated + ["existing-super-value"])
    assert not any(val in caplog.text for val in generated + ["existing-super-value"])


def test_success_logs_key_names_only(client, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    got = v.ensure_group_secrets(client, MOUNT, PATH)
    assert "superuser_password" in caplog.text
    assert not any(val in caplog.text for val in got.values())


def test_read_errors_carry_no_values(client, caplog):
    caplog.set_level(logging.DEBUG)
    client.kv.put(
        {"superuser_password": "hush-1", "app_password": "hush-2", "replication_password": 7}
    )
    with pytest.raises(v.VaultError) as err:
        v.read_group_secrets(client, MOUNT, PATH)
    assert _no_secret_in(err.value, ["hush-1", "hush-2"])
    assert "hush" not in caplog.text


# --------------------------------------------------------------------------------------------
# client_from_env


def test_client_from_env_builds_an_authenticated_client(fake_hvac):
    c = v.client_from_env(env(VAULT_ADDR=ADDR + "/"))
    assert c.url == ADDR and c.token == "root"
    assert c.kwargs["timeout"] == v.DEFAULT_TIMEOUT_S
    assert c.kwargs["verify"] is True and c.kwargs["namespace"] is None


def test_client_from_env_passes_tls_namespace_and_timeout(fake_hvac):
    c = v.client_from_env(
        env(
            VAULT_CACERT="/etc/ca.pem",
            VAULT_NAMESPACE="team",
            VAULT_CLIENT_TIMEOUT="7s",
            VAULT_CLIENT_CERT="/c.pem",
            VAULT_CLIENT_KEY="/k.pem",
        )
    )
    assert c.kwargs["verify"] == "/etc/ca.pem"
    assert c.kwargs["namespace"] == "team"
    assert c.kwargs["timeout"] == 7.0
    assert c.kwargs["cert"] == ("/c.pem", "/k.pem")
    assert v.client_from_env(env(VAULT_SKIP_VERIFY="true")).kwargs["verify"] is False


def test_client_from_env_uses_os_environ_by_default(fake_hvac, monkeypatch):
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.9:8299")
    monkeypatch.setenv("VAULT_TOKEN", "root")
    assert v.client_from_env().url == "http://127.0.0.9:8299"


def test_vault_addr_not_set(fake_hvac):
    with pytest.raises(v.VaultError, match="VAULT_ADDR is not set"):
        v.client_from_env(env(VAULT_ADDR=None))
    assert fake_hvac == []


def test_vault_addr_not_a_url(fake_hvac):
    with pytest.raises(v.VaultError, match="VAULT_ADDR=127.0.0.1:8200 is not an http"):
        v.client_from_env(env(VAULT_ADDR="127.0.0.1:8200"))


@pytest.mark.parametrize("token", [None, "", "   "])
def test_vault_token_not_set(fake_hvac, token):
    with pytest.raises(v.VaultError) as err:
        v.client_from_env(env(VAULT_TOKEN=token))
    assert "VAULT_TOKEN is not set" in str(err.value) and f"VAULT_ADDR={ADDR}" in str(err.value)


def test_invalid_token(fake_hvac):
    with pytest.raises(v.VaultError) as err:
        v.client_from_env(env(VAULT_TOKEN="s.not-a-real-token"))
    text = str(err.value)
    assert "VAULT_TOKEN is not valid" in text and f"VAULT_ADDR={ADDR}" in text
    assert "s.not-a-real-token" not in text  # the token is a secret too


def test_unreachable(fake_hvac):
    fake_hvac.setup["errors"] = {"health": refused()}
    with pytest.raises(v.VaultError) as err:
        v.client_from_env(env())
    assert str(err.value) == f"cannot reach Vault at VAULT_ADDR={ADDR}: connection refused"
    assert err.value.__cause__ is None


@pytest.mark.parametrize(
    "exc,expected",
    [
        (requests.exceptions.ConnectTimeout("x"), "no answer in time"),
        (requests.exceptions.SSLError("bad handshake"), "TLS error"),
        (
            requests.exceptions.ConnectionError("Name or service not known"),
            "cannot resolve the host name",
        ),
    ],
)
def test_other_transport_errors(fake_hvac, exc, expected):
    fake_hvac.setup["errors"] = {"health": exc}
    with pytest.raises(v.VaultError, match=expected) as err:
        v.client_from_env(env())
    assert f"cannot reach Vault at VAULT_ADDR={ADDR}" in str(err.value)


def test_sealed(fake_hvac):
    fake_hvac.setup["health"] = {"initialized": True, "sealed": True}
    with pytest.raises(v.VaultError) as err:
        v.client_from_env(env())
    assert f"Vault at VAULT_ADDR={ADDR} is sealed" in str(err.value)
    assert "scripts/vault.sh start" in str(err.value)


def test_not_initialised(fake_hvac):
    fake_hvac.setup["health"] = {"initialized": False, "sealed": True}
    with pytest.raises(v.VaultError, match=f"VAULT_ADDR={ADDR} is not initialised"):
        v.client_from_env(env())


def test_sealed_health_as_a_raw_response(fake_hvac):
    class Resp:  # hvac returns the Response object (not a dict) for a 503
        status_code = 503

        @staticmethod
        def json():
            return {"initialized": True, "sealed": True}

    fake_hvac.setup["health"] = Resp()
    with pytest.raises(v.VaultError, match="is sealed"):
        v.client_from_env(env())


def test_not_a_vault_server(fake_hvac):
    class Resp:
        status_code = 404

        @staticmethod
        def json():
            raise ValueError("not json")

    fake_hvac.setup["health"] = Resp()
    with pytest.raises(v.VaultError, match=f"VAULT_ADDR={ADDR} does not look like a Vault server"):
        v.client_from_env(env())


def test_bad_timeout(fake_hvac):
    with pytest.raises(v.VaultError, match="VAULT_CLIENT_TIMEOUT"):
        v.client_from_env(env(VAULT_CLIENT_TIMEOUT="soon"))


def test_every_error_is_a_vault_error_subclass_of_exception():
    assert issubclass(v.VaultError, Exception)
