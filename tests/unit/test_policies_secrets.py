"""No plaintext secrets: in resource inputs, in stack outputs, nowhere in the stack."""

from __future__ import annotations

import pytest

from policies.rules.secrets import no_plaintext_secret_outputs, no_plaintext_secrets
from tests.unit.policy_support import (
    Resource,
    host_script,
    host_scripts,
    messages,
    program_resources,
    replace_props,
    run_resource_policy,
    run_stack_policy,
    secret,
    with_env,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")

PASSWORD = "correct-horse-battery-staple"


def check(resource: Resource, stack: str = "replicas-eu") -> str:
    return messages(run_resource_policy(no_plaintext_secrets, stack, resource))


def check_stack(
    stack: str, resources: list[Resource], outputs: dict, config: dict | None = None
) -> str:
    return messages(
        run_stack_policy(no_plaintext_secret_outputs, stack, resources, outputs, config)
    )


@pytest.mark.parametrize("stack", ["accounts-eu", "replicas-eu", "proxies-eu"])
def test_the_programs_resources_pass(stack):
    for resource in program_resources(stack):
        assert check(resource, stack) == "", resource.name


def test_the_etcd_cluster_token_is_public_but_other_tokens_are_not():
    """etcd's initial cluster token is the group's `<fleet>-<group>`, named like a secret
    but public by design; the exemption is for that one name only."""
    member = host_scripts("replicas-eu")["etcd-fra-etcd"]
    assert member.props["environment"]["ETCD_TOKEN"]
    assert check(member) == ""
    text = check(with_env(member, ETCD_TOKEN=None, ETCD_AUTH_TOKEN=PASSWORD))
    assert "etcd-fra-etcd: environment.ETCD_AUTH_TOKEN carries a secret in plaintext" in text
    assert PASSWORD not in text


def test_a_password_in_the_plain_environment_is_refused_by_name_without_showing_it():
    node = host_scripts("replicas-eu")["fra-0-server"]
    text = check(with_env(node, PG_SUPERUSER_PASSWORD=PASSWORD))
    assert "fra-0-server: environment.PG_SUPERUSER_PASSWORD carries a secret in plaintext" in text
    assert PASSWORD not in text


def test_a_secret_environment_that_is_not_a_pulumi_secret_is_refused():
    node = host_scripts("replicas-eu")["fra-0-server"]
    plain = replace_props(
        node, secret_environment={"PG_SUPERUSER_PASSWORD": PASSWORD, "PG_APP_PASSWORD": "x" * 12}
    )
    text = check(plain)
    assert "secret_environment.PG_SUPERUSER_PASSWORD carries a secret in plaintext" in text
    assert "secret_environment.PG_APP_PASSWORD carries a secret in plaintext" in text


def test_a_secret_in_the_environment_belongs_in_secret_environment_even_when_marked_secret():
    node = host_scripts("replicas-eu")["fra-0-server"]
    env = {**node.props["environment"], "PG_APP_PASSWORD": secret(PASSWORD)}
    text = check(replace_props(node, environment=env))
    assert "environment.PG_APP_PASSWORD is a secret passed through the plain environment" in text
    whole = replace_props(
        node, environment=secret({**node.props["environment"], "API_TOKEN": "t" * 20})
    )
    assert "environment.API_TOKEN is a secret passed through the plain environment" in check(whole)


@pytest.mark.parametrize(
    "value",
    [
        f"PGPASSWORD={PASSWORD} psql -h 127.77.12.1",
        f"host=127.77.12.1 user=replicator password={PASSWORD}",
        f"postgresql://app:{PASSWORD}@127.77.12.1:6433/app",
    ],
    ids=["command line", "conninfo", "uri"],
)
def test_a_credential_inside_a_plain_value_is_refused(value):
    node = host_scripts("replicas-eu")["lhr-0-server"]
    text = check(with_env(node, EXTRA=value))
    assert "lhr-0-server: environment.EXTRA carries a credential in plaintext" in text
    assert PASSWORD not in text


def test_names_that_only_say_where_a_secret_lives_are_not_secrets():
    resource = Resource(
        "custom:index:Thing",
        "thing",
        {
            "secret_path": "dbfleet/x/eu/postgres",
            "secret_mount": "secret",
            "passfile_name": "replication.pgpass",
        },
    )
    assert check(resource) == ""


def test_any_resource_type_is_judged():
    resource = Resource(
        "custom:index:Thing", "thing", {"adminPassword": PASSWORD, "apiToken": secret("t" * 20)}
    )
    text = check(resource)
    assert "thing: adminPassword carries a secret in plaintext" in text
    assert "apiToken" not in text


# --------------------------------------------------------------------------- stack


def proxies_outputs(uris_secret: bool = True) -> dict:
    uris = {"fra": {"read": f"postgresql://app:{PASSWORD}@127.77.12.1:6432/app"}}
    return {
        "read_endpoints": {"fra": "127.77.12.1:6432"},
        "connection_uris": secret(uris) if uris_secret else uris,
    }


def test_secret_connection_uris_pass():
    assert check_stack("proxies-eu", program_resources("proxies-eu"), proxies_outputs()) == ""


def test_plain_connection_uris_are_refused():
    text = check_stack(
        "proxies-eu", program_resources("proxies-eu"), proxies_outputs(uris_secret=False)
    )
    assert "stack outputs: connection_uris.fra.read carries a credential in plaintext" in text
    assert PASSWORD not in text


def test_a_secret_value_repeated_in_plaintext_anywhere_in_the_stack_is_refused():
    node = host_script(
        "fra-0-server",
        "pg_primary.sh",
        {"PG_HOST": "127.77.12.1"},
        {"PG_SUPERUSER_PASSWORD": PASSWORD},
    )
    leaky = replace_props(node, summary=f"started with {PASSWORD}")
    text = check_stack("replicas-eu", [leaky], {"debug": f"pw is {PASSWORD}"})
    assert "fra-0-server: summary repeats the value of a secret in plaintext" in text
    assert "stack outputs: debug repeats the value of a secret in plaintext" in text
    assert PASSWORD not in text


def test_short_secrets_are_not_searched_for_below_min_secret_length():
    node = host_script("fra-0-server", "pg_primary.sh", {"PG_PORT": "5432"}, {"SLOT_KEY": "5432"})
    assert check_stack("replicas-eu", [node], {}) == ""
    assert "PG_PORT repeats the value of a secret" in check_stack(
        "replicas-eu", [node], {}, {"minSecretLength": 4.0}
    )
