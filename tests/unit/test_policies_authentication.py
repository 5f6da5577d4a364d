"""Authentication: scram-sha-256, pg_hba admits only the group, replication has its own role."""

from __future__ import annotations

import pytest

from policies.rules.authentication import authentication
from tests.unit.policy_support import (
    Resource,
    host_scripts,
    messages,
    replace_props,
    run_resource_policy,
    secret,
    with_env,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")

EU_ALLOWED = "127.77.12.1 127.77.2.1 127.77.20.1 127.0.0.1"


def check(resource: Resource, config: dict | None = None) -> str:
    return messages(run_resource_policy(authentication, "replicas-eu", resource, config))


def node(name: str = "fra-0-server") -> Resource:
    return host_scripts("replicas-eu")[name]


@pytest.mark.parametrize("name", ["fra-0-server", "fra-1-server", "lhr-0-server", "arn-0-server"])
def test_the_group_addresses_plus_the_local_source_pass(name):
    assert node(name).props["environment"]["ALLOWED_HOSTS"] == EU_ALLOWED
    assert check(node(name)) == ""


def test_fewer_addresses_than_the_group_are_still_only_the_groups():
    assert check(with_env(node(), ALLOWED_HOSTS="127.77.12.1")) == ""


@pytest.mark.parametrize(
    ("entry", "said"),
    [
        ("203.0.113.7", "ALLOWED_HOSTS admits 203.0.113.7, which is not an address of group eu"),
        ("127.77.17.1", "ALLOWED_HOSTS admits 127.77.17.1 (region iad (zone US, group us))"),
        ("127.77.7.1", "ALLOWED_HOSTS admits 127.77.7.1 (region cdg (zone EU, group eu2))"),
        ("127.0.0.0/8", "ALLOWED_HOSTS entry 127.0.0.0/8 is a network of 16777216 addresses"),
        ("0.0.0.0/0", "ALLOWED_HOSTS entry 0.0.0.0/0 is a network"),
        ("all", "ALLOWED_HOSTS entry 'all' is not an address"),
    ],
)
def test_any_other_address_in_pg_hba_is_refused(entry, said):
    text = check(with_env(node(), ALLOWED_HOSTS=f"{EU_ALLOWED} {entry}"))
    assert said in text
    assert text.count("fra-0-server: ALLOWED_HOSTS") == 1


def test_the_local_source_is_admitted_only_on_the_local_target_and_when_allowed():
    assert "admits 127.0.0.1" in check(node(), {"allowLocalSource": False})
    ssh = replace_props(
        node(), connection={"kind": "ssh", "host": "db1.example", "user": "ops", "port": 22}
    )
    assert "admits 127.0.0.1" in check(ssh)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PG_AUTH_METHOD", "md5"),
        ("HBA_METHOD", "trust"),
        ("PASSWORD_ENCRYPTION", "md5"),
        ("AUTH_METHOD", "password"),
    ],
)
def test_any_method_but_scram_is_refused(variable, value):
    text = check(with_env(node(), **{variable: value}))
    assert f"{variable} asks for '{value}'; PostgreSQL must use scram-sha-256 only" in text
    assert check(with_env(node(), **{variable: "scram-sha-256"})) == ""


def test_extra_pg_hba_lines_are_refused():
    text = check(with_env(node(), PG_HBA_EXTRA="host all all 0.0.0.0/0 trust"))
    assert "PG_HBA_EXTRA adds to pg_hba.conf beside ALLOWED_HOSTS" in text


def test_replication_runs_as_its_own_role():
    assert "REPLICATION_USER is 'postgres'; replication must use its own role replicator" in check(
        with_env(node("lhr-0-server"), REPLICATION_USER="postgres")
    )
    assert check(with_env(node("lhr-0-server"), REPLICATION_USER="replicator")) == ""


def test_the_application_has_a_role_of_its_own():
    # The group's leadership creates the application's role (patroni_leader.sh): with
    # APP_USER=replicator it would give the replication role the application's password.
    leader = node("leader-leader")
    assert leader.props["environment"]["APP_USER"] == "app"
    assert check(leader) == ""
    assert (
        "leader-leader: APP_USER is 'replicator'; the application must not share the "
        "replication role" in check(with_env(leader, APP_USER="replicator"))
    )
    assert "must not share the superuser role" in check(with_env(leader, APP_USER="postgres"))
    assert "must not share the superuser role" in check(with_env(node(), APP_USER="postgres"))


def test_the_replication_role_needs_a_password_of_its_own():
    same = {
        "PG_SUPERUSER_PASSWORD": "p" * 32,
        "PG_REPLICATION_PASSWORD": "p" * 32,
        "PG_APP_PASSWORD": "a" * 32,
    }
    for name in ("fra-0-server", "leader-leader"):  # both hold the group's passwords
        text = check(replace_props(node(name), secret_environment=secret(same)))
        assert f"{name}: PG_REPLICATION_PASSWORD is the same as PG_SUPERUSER_PASSWORD" in text
        assert "p" * 32 not in text


def test_only_database_nodes_and_the_leadership_are_judged():
    member = node("etcd-fra-etcd")
    assert check(with_env(member, ALLOWED_HOSTS="0.0.0.0/0", APP_USER="replicator")) == ""
    proxy = host_scripts("proxies-eu")["fra-haproxy"]
    assert (
        messages(
            run_resource_policy(
                authentication, "proxies-eu", with_env(proxy, ALLOWED_HOSTS="0.0.0.0/0")
            )
        )
        == ""
    )
