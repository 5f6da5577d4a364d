"""Stack shape: a stack declares only its own layer's resources, for its own group's regions."""

from __future__ import annotations

import pytest

from policies.rules.common import HOST_SCRIPT, STACK
from policies.rules.stack_shape import stack_shape
from tests.unit.policy_support import (
    Resource,
    host_script,
    host_scripts,
    messages,
    program_resources,
    run_policy,
    run_resource_policy,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")

NODE = "dbfleet:patroni:PatroniNode"
LEADER = "dbfleet:patroni:GroupLeader"
ETCD = "dbfleet:etcd:EtcdMember"
PROXY = "dbfleet:proxy:RegionProxy"


def check(stack: str, resource: Resource) -> str:
    return messages(run_resource_policy(stack_shape, stack, resource))


@pytest.mark.parametrize(
    "stack",
    [
        f"{layer}-{g}"
        for g in ("us", "eu", "eu2", "br")
        for layer in ("accounts", "networks", "replicas", "proxies")
    ],
)
def test_every_layer_of_every_group_passes(stack):
    assert run_policy(stack_shape, stack, program_resources(stack)) == []


def test_a_proxies_stack_never_declares_a_database():
    database = host_scripts("replicas-eu")["fra-0-server"]
    text = check("proxies-eu", database)
    assert (
        "proxies-eu is a proxies stack and declares a database (patroni.sh); that belongs in replicas-eu"
        in text
    )
    assert "fra-0: proxies-eu is a proxies stack and declares a database" in check(
        "proxies-eu", Resource(NODE, "fra-0")
    )


@pytest.mark.parametrize(
    ("stack", "source", "name", "said"),
    [
        (
            "replicas-eu",
            "proxies-eu",
            "fra-haproxy",
            "declares a proxy (haproxy.sh); that belongs in proxies-eu",
        ),
        (
            "proxies-eu",
            "accounts-eu",
            "account-account",
            "declares a group account (account.sh); that belongs in accounts-eu",
        ),
        (
            "networks-eu",
            "replicas-eu",
            "etcd-fra-etcd",
            "declares an etcd member (etcd.sh); that belongs in replicas-eu",
        ),
        (
            "proxies-eu",
            "replicas-eu",
            "leader-leader",
            "declares a group's leadership (patroni_leader.sh); that belongs in replicas-eu",
        ),
    ],
)
def test_a_resource_of_another_layer_is_refused(stack, source, name, said):
    assert said in check(stack, host_scripts(source)[name])


@pytest.mark.parametrize(
    ("component", "name", "said"),
    [
        (ETCD, "etcd-fra", "accounts-eu is a accounts stack and declares an etcd member"),
        (LEADER, "leader", "accounts-eu is a accounts stack and declares a group's leadership"),
    ],
)
def test_the_group_components_belong_in_replicas_only(component, name, said):
    text = check("accounts-eu", Resource(component, name))
    assert f"{name}: {said}; that belongs in replicas-eu" in text
    assert check("replicas-eu", Resource(component, name)) == ""


def test_an_eu_stack_never_declares_a_us_region():
    us_node = host_scripts("replicas-us")["iad-0-server"]
    text = check("replicas-eu", us_node)
    assert (
        "replicas-eu declares region iad (zone US, group us); group eu has only fra, lhr, arn"
        in text
    )
    assert "declares region iad" in check("replicas-eu", Resource(NODE, "iad-0"))
    # The etcd members are named etcd-<region>, and listen on their region's address.
    us_etcd = host_scripts("replicas-us")["etcd-iad-etcd"]
    assert "replicas-eu declares region iad (zone US, group us)" in check("replicas-eu", us_etcd)
    assert "replicas-eu declares region iad (zone US, group us)" in check(
        "replicas-eu", Resource(ETCD, "etcd-iad")
    )


def test_a_region_of_another_group_in_the_same_zone_is_refused_too():
    cdg_proxy = host_scripts("proxies-eu2")["cdg-haproxy"]
    assert "proxies-eu declares region cdg (zone EU, group eu2)" in check("proxies-eu", cdg_proxy)


def test_a_listen_address_of_another_group_counts_as_declaring_its_region():
    node = host_scripts("replicas-eu")["lhr-0-server"]
    moved = Resource(
        node.typ,
        node.name,
        {**node.props, "environment": {**node.props["environment"], "PG_HOST": "127.77.24.1"}},
        node.parents,
    )
    assert "declares region ord (zone US, group us)" in check("replicas-eu", moved)


def test_a_script_under_the_wrong_component_is_refused():
    proxy = host_script("fra-0-server", "haproxy.sh", {}, parent=NODE)
    text = check("proxies-eu", proxy)
    assert (
        "fra-0-server: runs haproxy.sh under dbfleet:patroni:PatroniNode, which runs only patroni.sh"
        in text
    )
    # Within the replicas layer too: each of its components runs only its own script.
    leader = host_script("fra-0-server", "patroni_leader.sh", {}, parent=NODE)
    assert "runs patroni_leader.sh under dbfleet:patroni:PatroniNode" in check(
        "replicas-eu", leader
    )
    etcd = host_script("leader-leader", "etcd.sh", {}, parent=LEADER)
    assert (
        "leader-leader: runs etcd.sh under dbfleet:patroni:GroupLeader, which runs only "
        "patroni_leader.sh" in check("replicas-eu", etcd)
    )


@pytest.mark.parametrize(
    ("resource", "said"),
    [
        (
            Resource("random:index:RandomPassword", "pw"),
            "pw: random:index:RandomPassword is not a dbfleet resource",
        ),
        (
            Resource(HOST_SCRIPT, "probe", {"command": "rm -rf /"}),
            "probe: a dynamic resource that is not a dbfleet HostScript",
        ),
        (
            host_script("fra-0-extra", "pg_dump.sh", {}, parent=NODE),
            "host script pg_dump.sh is not one of dbfleet's scripts",
        ),
        (
            host_script("primary-fence", "pg_fence.sh", {}),
            "host script pg_fence.sh is not one of dbfleet's scripts",
        ),
    ],
    ids=["other provider", "other dynamic resource", "unknown script", "retired script"],
)
def test_anything_that_is_not_a_dbfleet_resource_is_refused(resource, said):
    assert said in check("replicas-eu", resource)


def test_the_networks_layer_declares_nothing_but_references():
    assert (
        run_policy(
            stack_shape, "networks-eu", [Resource("pulumi:pulumi:StackReference", "accounts-eu")]
        )
        == []
    )
    assert "networks-eu is a networks stack and declares a proxy" in check(
        "networks-eu", Resource(PROXY, "fra")
    )


@pytest.mark.parametrize(
    ("stack", "said"),
    [
        ("replicas", "stack 'replicas' is not named <layer>-<group>"),
        ("replicas-ap", "group 'ap' is not in"),
    ],
)
def test_a_stack_that_cannot_be_placed_is_reported_once_on_the_stack(stack, said):
    violations = run_policy(
        stack_shape,
        stack,
        [Resource(NODE, "fra-0"), host_script("fra-0-server", "patroni.sh", {})],
    )
    assert len(violations) == 1
    assert said in violations[0].message
    assert f"::{STACK}::" in violations[0].urn


def test_a_proxies_stack_may_declare_region_poolers_and_nothing_else_may():
    pool = host_scripts("proxies-eu")["fra-pool-pgbouncer"]
    assert pool.props["script"] == "pgbouncer.sh"
    assert check("proxies-eu", pool) == ""
    assert check("proxies-eu", Resource("dbfleet:pooler:RegionPooler", "fra-pool")) == ""
    assert "declares a connection pooler (pgbouncer.sh); that belongs in proxies-eu" in check(
        "replicas-eu", pool
    )


def test_a_pooler_of_another_groups_region_is_refused():
    cdg = host_scripts("proxies-eu2")["cdg-pool-pgbouncer"]
    assert "proxies-eu declares region cdg (zone EU, group eu2)" in check("proxies-eu", cdg)
