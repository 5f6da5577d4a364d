"""Exposure: listen only where the networks layer put you; public binds need a named exception."""

from __future__ import annotations

import pytest

from policies.rules.exposure import exposure
from tests.unit.policy_support import (
    Resource,
    host_scripts,
    messages,
    run_resource_policy,
    with_env,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")


def check(resource: Resource, config: dict | None = None, stack: str = "replicas-eu") -> str:
    return messages(run_resource_policy(exposure, stack, resource, config))


def node() -> Resource:
    return host_scripts("replicas-eu")["fra-0-server"]


def proxy() -> Resource:
    return host_scripts("proxies-eu")["lhr-haproxy"]


def exception(**entry) -> dict:
    return {"publicBindExceptions": [entry]}


@pytest.mark.parametrize(
    "stack", ["replicas-eu", "proxies-eu", "replicas-us", "proxies-us", "accounts-eu"]
)
def test_the_assigned_addresses_and_ports_pass(stack):
    for resource in host_scripts(stack).values():
        assert check(resource, stack=stack) == "", resource.name


def test_the_second_node_of_a_region_uses_the_next_port():
    assert host_scripts("replicas-eu")["fra-1-server"].props["environment"]["PG_PORT"] == "5433"
    assert check(host_scripts("replicas-eu")["fra-1-server"]) == ""


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("0.0.0.0", "every interface"),
        ("::", "every interface"),
        ("*", "every interface"),
        ("192.0.2.10", "an address outside loopback"),
    ],
)
def test_a_public_bind_of_a_database_is_refused(address, kind):
    text = check(with_env(node(), PG_HOST=address))
    assert f"fra-0-server: PG_HOST {address} is a public bind ({kind})" in text
    assert "no publicBindExceptions entry names resource fra-0-server" in text


def test_a_public_bind_of_a_proxy_is_reported_once_for_its_three_listeners():
    violations = run_resource_policy(
        exposure, "proxies-eu", with_env(proxy(), PROXY_HOST="0.0.0.0")
    )
    assert len(violations) == 1
    assert "lhr-haproxy: PROXY_HOST 0.0.0.0 is a public bind" in violations[0].message


def test_a_named_exception_lets_exactly_that_resource_and_address_bind_publicly():
    public = with_env(node(), PG_HOST="0.0.0.0")
    allowed = exception(
        resource="fra-0-server", address="0.0.0.0", reason="reached through the host firewall"
    )
    assert check(public, allowed) == ""
    assert (
        check(
            public,
            {
                **allowed,
                "publicBindExceptions": [
                    {**allowed["publicBindExceptions"][0], "stack": "replicas-eu"}
                ],
            },
        )
        == ""
    )
    # Another resource, another address, another stack, or no reason: still refused.
    for entry in (
        {"resource": "lhr-0-server", "address": "0.0.0.0", "reason": "r"},
        {"resource": "fra-0-server", "address": "::", "reason": "r"},
        {"resource": "fra-0-server", "address": "0.0.0.0", "reason": "r", "stack": "replicas-us"},
        {"resource": "fra-0-server", "address": "0.0.0.0", "reason": "  "},
    ):
        assert "is a public bind" in check(public, exception(**entry)), entry


def test_another_regions_address_is_not_the_assigned_one():
    text = check(with_env(node(), PG_HOST="127.77.20.1"))
    assert (
        "PG_HOST 127.77.20.1 is not the address the networks layer assigned to region fra (127.77.12.1)"
        in text
    )
    # PostgreSQL and Patroni's REST API share the address: it is reported once.
    assert text.count("PG_HOST 127.77.20.1") == 1


def etcd_member() -> Resource:
    return host_scripts("replicas-eu")["etcd-lhr-etcd"]


def test_an_etcd_member_on_its_regions_ports_passes():
    env = etcd_member().props["environment"]
    assert (env["ETCD_HOST"], env["ETCD_CLIENT_PORT"], env["ETCD_PEER_PORT"]) == (
        "127.77.20.1",
        "2379",
        "2380",
    )
    assert check(etcd_member()) == ""


@pytest.mark.parametrize(
    ("address", "kind"), [("0.0.0.0", "every interface"), ("192.0.2.10", "outside loopback")]
)
def test_an_etcd_member_listening_publicly_is_refused_once(address, kind):
    # etcd has no authentication here: whoever reaches it can take the leader lock.
    violations = run_resource_policy(
        exposure, "replicas-eu", with_env(etcd_member(), ETCD_HOST=address)
    )
    assert len(violations) == 1
    assert f"etcd-lhr-etcd: ETCD_HOST {address} is a public bind" in violations[0].message
    assert kind in violations[0].message


def test_an_etcd_member_on_another_regions_address_is_refused():
    text = check(with_env(etcd_member(), ETCD_HOST="127.77.12.1"))
    assert (
        "ETCD_HOST 127.77.12.1 is not the address the networks layer assigned to region lhr "
        "(127.77.20.1)" in text
    )


def test_an_unassigned_loopback_address_is_refused():
    text = check(with_env(proxy(), PROXY_HOST="127.0.0.5"), stack="proxies-eu")
    assert (
        "PROXY_HOST 127.0.0.5 is not the address the networks layer assigned to region lhr (127.77.20.1)"
        in text
    )


@pytest.mark.parametrize(
    ("resource", "variable", "port", "allowed"),
    [
        ("node", "PG_PORT", "5499", "5432, 5433"),
        ("node", "REST_PORT", "5432", "8008, 8009"),
        ("etcd", "ETCD_CLIENT_PORT", "2381", "2379"),
        ("etcd", "ETCD_PEER_PORT", "2379", "2380"),
        ("proxy", "READ_PORT", "7000", "6432"),
        ("proxy", "STATS_PORT", "", "6434"),
    ],
)
def test_a_port_the_networks_layer_did_not_assign_is_refused(resource, variable, port, allowed):
    target = {"node": node, "etcd": etcd_member, "proxy": proxy}[resource]()
    text = check(
        with_env(target, **{variable: port}),
        stack="proxies-eu" if resource == "proxy" else "replicas-eu",
    )
    assert f"{variable} {port or '(empty)'} is not a port the networks layer assigned" in text
    assert f"({allowed})" in text


def test_host_scripts_that_listen_nowhere_are_not_judged():
    account = host_scripts("accounts-eu")["account-account"]
    assert check(with_env(account, PG_HOST="0.0.0.0"), stack="accounts-eu") == ""


def pooler() -> Resource:
    return host_scripts("proxies-eu")["lhr-pool-pgbouncer"]


def test_a_pooler_on_the_pool_port_of_its_region_passes():
    env = pooler().props["environment"]
    assert (env["POOL_HOST"], env["POOL_PORT"]) == ("127.77.20.1", "6435")
    assert check(pooler(), stack="proxies-eu") == ""


def test_a_pooler_on_another_port_is_refused():
    text = check(with_env(pooler(), POOL_PORT="6436"), stack="proxies-eu")
    assert "POOL_PORT 6436 is not a port the networks layer assigned on 127.77.20.1 (6435)" in text


def test_a_pooler_listening_on_every_interface_is_a_public_bind():
    text = check(with_env(pooler(), POOL_HOST="0.0.0.0"), stack="proxies-eu")
    assert "lhr-pool-pgbouncer: POOL_HOST 0.0.0.0 is a public bind (every interface)" in text
