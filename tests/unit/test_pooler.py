"""RegionPooler under mocks: its arguments check themselves, its environment is what
pgbouncer.sh reads, and the password travels only in the secret environment."""

from __future__ import annotations

import base64

import pulumi
import pytest

from components.hostcmd import LOCAL, Connection
from components.pooler import TYPE, RegionPooler, RegionPoolerArgs
from components.tls import TlsFiles
from tests.unit.conftest import resolve

PASSWORD = "P" * 43


def pooler_args(**over) -> RegionPoolerArgs:
    base = {
        "connection": LOCAL,
        "run_as": "dbfleet-eu",
        "pool_dir": "/srv/d/eu/pooler-lhr",
        "host": "127.77.20.1",
        "port": 6435,
        "write_target": "127.77.20.1:6433",
        "read_target": "127.77.20.1:6432",
        "primary": "127.77.12.1:5432",
        "app_password": pulumi.Output.secret(PASSWORD),
        "tls": TlsFiles("CERT-PEM", pulumi.Output.secret("KEY-PEM"), "CA-PEM"),
    }
    base.update(over)
    return RegionPoolerArgs(**base)


def test_the_type_token_names_module_and_class():
    assert TYPE == "dbfleet:pooler:RegionPooler"


def test_environment_is_what_pgbouncer_sh_reads():
    env = pooler_args(fleet="ncfleet", default_pool_size=7, max_client_conn=70).environment()
    assert env == {
        "RUN_AS": "dbfleet-eu",
        "POOL_DIR": "/srv/d/eu/pooler-lhr",
        "POOL_HOST": "127.77.20.1",
        "POOL_PORT": "6435",
        "APP_DB": "app",
        "APP_USER": "app",
        "WRITE_TARGET": "127.77.20.1:6433",
        "READ_TARGET": "127.77.20.1:6432",
        "PRIMARY": "127.77.12.1:5432",
        "DEFAULT_POOL_SIZE": "7",
        "MAX_CLIENT_CONN": "70",
        "FLEET_NAME": "ncfleet",
        # the group's CA (public); the pooler's certificate and key are secret
        "TLS_CA": base64.b64encode(b"CA-PEM\n").decode(),
    }
    assert pooler_args().read_db == "app_read"


def test_on_the_ssh_target_the_pooler_may_bind_the_hosts_own_address():
    ssh = Connection(kind="ssh", host="198.18.3.11", credentials={"private_key": "k"})
    assert pooler_args(connection=ssh).environment()["TARGET"] == "ssh"
    assert "TARGET" not in pooler_args().environment()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"pool_dir": "srv/pooler-lhr"}, "absolute"),
        ({"port": 80}, "outside 1024..65535"),
        ({"write_target": "127.77.20.1"}, "write_target .* is not host:port"),
        ({"read_target": "127.77.20.1:0"}, "read_target .* is not host:port"),
        ({"primary": ":5432"}, "primary .* is not host:port"),
        ({"read_target": "127.77.20.1:6433"}, "must differ"),
        ({"port": 6433}, "one of its own targets"),
        ({"default_pool_size": 0}, "between 1 and max_client_conn"),
        ({"default_pool_size": 50, "max_client_conn": 10}, "between 1 and max_client_conn"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_declared(over, message):
    with pytest.raises(ValueError, match=message):
        pooler_args(**over)


@pulumi.runtime.test
def test_the_pooler_runs_pgbouncer_sh_with_the_password_as_a_secret(mocks):
    pooler = RegionPooler("lhr-pool", pooler_args())
    assert resolve(pooler.endpoint) == "127.77.20.1:6435"
    inputs = mocks.named("lhr-pool-pgbouncer").inputs
    assert inputs["script"] == "pgbouncer.sh"
    assert PASSWORD not in str(inputs["environment"])
    assert inputs["secret_environment"]["value"] == {
        "PG_APP_PASSWORD": PASSWORD,
        "TLS_CERT": base64.b64encode(b"CERT-PEM\n").decode(),
        "TLS_KEY": base64.b64encode(b"KEY-PEM\n").decode(),
    }
    assert "KEY-PEM" not in str(inputs["environment"])
    # Moving the directory or its owner is a replacement; everything else an update.
    assert inputs["replace_on_env"] == ["POOL_DIR", "RUN_AS"]
    assert inputs["check_drift"] is True
    assert [r.typ for r in mocks.resources if r.name == "lhr-pool"] == [TYPE]
