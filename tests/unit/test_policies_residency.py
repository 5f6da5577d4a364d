"""Residency: resources and outputs of a group stay in its zone and its own regions."""

from __future__ import annotations

import copy

import pytest

from policies.rules.residency import residency, residency_outputs
from tests.unit.policy_support import (
    Resource,
    host_scripts,
    messages,
    run_resource_policy,
    run_stack_policy,
    secret,
    upstream_outputs,
    with_env,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")

IAD, CDG, FRA = "127.77.17.1", "127.77.7.1", "127.77.12.1"


def check(stack: str, resource: Resource) -> str:
    return messages(run_resource_policy(residency, stack, resource))


@pytest.mark.parametrize(
    "stack", ["accounts-eu", "replicas-eu", "proxies-eu", "replicas-us", "proxies-us"]
)
def test_the_groups_own_resources_pass(stack):
    for resource in host_scripts(stack).values():
        assert check(stack, resource) == "", resource.name


def test_a_read_backup_in_another_zone_is_refused():
    proxy = host_scripts("proxies-eu")["fra-haproxy"]
    bad = with_env(proxy, READ_BACKUPS=f"127.77.20.1:5432 {IAD}:5432")
    text = check("proxies-eu", bad)
    assert "the proxy's read backup 127.77.17.1 is region iad (zone US, group us)" in text
    assert "group eu may only use its own regions (fra, lhr, arn)" in text


def test_a_read_backup_in_another_group_of_the_same_zone_is_refused():
    proxy = host_scripts("proxies-eu")["lhr-haproxy"]
    text = check("proxies-eu", with_env(proxy, READ_BACKUPS=f"{CDG}:5432"))
    assert "read backup 127.77.7.1 is region cdg (zone EU, group eu2)" in text


def test_a_write_server_in_another_zone_is_refused():
    # host:pgport:restport (Patroni's REST port last): the host is still judged.
    proxy = host_scripts("proxies-eu")["lhr-haproxy"]
    servers = f"{FRA}:5432:8008 {IAD}:5432:8008"
    text = check("proxies-eu", with_env(proxy, WRITE_SERVERS=servers))
    assert "the proxy's write server 127.77.17.1 is region iad (zone US, group us)" in text
    assert FRA not in text


def test_a_write_backend_outside_the_fleet_cannot_be_shown_to_stay_in_the_zone():
    proxy = host_scripts("proxies-eu")["arn-haproxy"]
    text = check("proxies-eu", with_env(proxy, WRITE_BACKEND="10.0.0.1:5432"))
    assert (
        "write backend 10.0.0.1 is not the address of any region of the fleet (127.77.0.0/16)"
        in text
    )


def test_a_node_whose_etcd_is_another_groups_is_refused():
    # Patroni follows whoever holds the leader lock in the etcd it is given: an etcd
    # member of another group makes the node replicate from (or lead) that group.
    node = host_scripts("replicas-eu")["lhr-0-server"]
    hosts = node.props["environment"]["ETCD_HOSTS"]
    text = check("replicas-eu", with_env(node, ETCD_HOSTS=f"{hosts} {IAD}:2379"))
    assert "the node's etcd member 127.77.17.1 is region iad (zone US, group us)" in text
    text = check("replicas-eu", with_env(node, ETCD_HOSTS=f"{CDG}:2379"))
    assert "the node's etcd member 127.77.7.1 is region cdg (zone EU, group eu2)" in text


def test_a_leader_whose_members_name_another_groups_node_is_refused():
    leader = host_scripts("replicas-eu")["leader-leader"]
    members = leader.props["environment"]["MEMBERS"] + f" iad-0={IAD}:5432:8008"
    text = check("replicas-eu", with_env(leader, MEMBERS=members))
    assert "the group's Patroni member 127.77.17.1 is region iad (zone US, group us)" in text
    # The group's own members, in the same form, are not what is reported.
    assert FRA not in text


def test_an_etcd_member_whose_peers_are_another_groups_is_refused():
    member = host_scripts("replicas-eu")["etcd-fra-etcd"]
    cluster = member.props["environment"]["ETCD_CLUSTER"] + f",iad=http://{IAD}:2380"
    text = check("replicas-eu", with_env(member, ETCD_CLUSTER=cluster))
    assert "the etcd member's peer 127.77.17.1 is region iad (zone US, group us)" in text
    clients = member.props["environment"]["ETCD_CLIENTS"] + f" {CDG}:2379"
    text = check("replicas-eu", with_env(member, ETCD_CLIENTS=clients))
    assert "the etcd member's peer 127.77.7.1 is region cdg (zone EU, group eu2)" in text


def test_a_node_listening_in_another_zone_is_refused():
    node = host_scripts("replicas-eu")["arn-0-server"]
    text = check("replicas-eu", with_env(node, PG_HOST=IAD))
    assert (
        "PG_HOST 127.77.17.1 is the address of region iad (zone US, group us), outside zone EU of group eu"
        in text
    )


def test_a_resource_named_after_a_region_of_another_zone_is_refused():
    node = host_scripts("replicas-eu")["arn-0-server"]
    renamed = Resource(node.typ, "sjc-0-server", node.props, node.parents)
    assert "sjc-0-server is named after region sjc (zone US, group us), outside zone EU" in check(
        "replicas-eu", renamed
    )
    member = host_scripts("replicas-eu")["etcd-arn-etcd"]
    renamed = Resource(member.typ, "etcd-sjc-etcd", member.props, member.parents)
    assert "etcd-sjc-etcd is named after region sjc (zone US, group us), outside zone EU" in check(
        "replicas-eu", renamed
    )


def test_a_node_directory_under_another_groups_data_root_is_refused():
    node = host_scripts("replicas-eu")["fra-0-server"]
    text = check("replicas-eu", with_env(node, NODE_DIR="/srv/dbfleet/data/dbfleet-us/fra-0"))
    assert (
        "NODE_DIR /srv/dbfleet/data/dbfleet-us/fra-0 is not inside the data root of group eu"
        in text
    )
    assert "the data root of group us" in text


def test_an_etcd_member_of_another_zone_is_refused():
    member = host_scripts("replicas-eu")["etcd-arn-etcd"]
    text = check("replicas-eu", with_env(member, ETCD_DIR="/srv/dbfleet/data/dbfleet-us/etcd-arn"))
    assert (
        "ETCD_DIR /srv/dbfleet/data/dbfleet-us/etcd-arn is not inside the data root of group eu"
        in text
    )
    text = check("replicas-eu", with_env(member, ETCD_DIR="/srv/dbfleet/data/dbfleet-eu/etcd-iad"))
    assert (
        "etcd directory /srv/dbfleet/data/dbfleet-eu/etcd-iad is for region iad (zone US, group us)"
        in text
    )
    text = check("replicas-eu", with_env(member, ETCD_HOST=IAD))
    assert (
        "ETCD_HOST 127.77.17.1 is the address of region iad (zone US, group us), outside zone EU of group eu"
        in text
    )


def test_an_account_with_another_groups_data_root_is_refused():
    account = host_scripts("accounts-eu")["account-account"]
    text = check("accounts-eu", with_env(account, DATA_ROOT="/srv/dbfleet/data/dbfleet-us"))
    assert "DATA_ROOT /srv/dbfleet/data/dbfleet-us is not inside the data root of group eu" in text


# --------------------------------------------------------------------------- outputs


def proxies_outputs(group: str) -> dict:
    nets = upstream_outputs(group)[f"networks-{group}"]["regions"]
    uris = {
        r: {
            "read": f"postgresql://app:{'A' * 43}@{n['host']}:6432/app",
            "write": f"postgresql://app:x@{n['host']}:6433/app",
        }
        for r, n in nets.items()
    }
    return {
        "read_endpoints": {r: f"{n['host']}:6432" for r, n in nets.items()},
        "write_endpoints": {r: f"{n['host']}:6433" for r, n in nets.items()},
        "connection_uris": secret(uris),
    }


def outputs_of(stack: str) -> dict:
    layer, group = stack.split("-", 1)
    return (
        proxies_outputs(group)
        if layer == "proxies"
        else copy.deepcopy(upstream_outputs(group)[stack])
    )


def check_outputs(stack: str, outputs: dict) -> str:
    return messages(run_stack_policy(residency_outputs, stack, [], outputs))


@pytest.mark.parametrize(
    "stack",
    [
        f"{layer}-{g}"
        for g in ("us", "eu")
        for layer in ("accounts", "networks", "replicas", "proxies")
    ],
)
def test_the_groups_own_outputs_pass(stack):
    assert check_outputs(stack, outputs_of(stack)) == ""


def test_a_secret_path_of_another_group_is_refused():
    outputs = {**outputs_of("accounts-eu"), "secret_path": "dbfleet/dbfleet/us/postgres"}
    text = check_outputs("accounts-eu", outputs)
    assert "output secret_path is 'dbfleet/dbfleet/us/postgres'" in text
    assert "live at dbfleet/dbfleet/eu/postgres" in text


def test_a_zone_other_than_the_groups_is_refused():
    text = check_outputs("accounts-eu", {**outputs_of("accounts-eu"), "zone": "US"})
    assert "output zone is 'US', group eu is pinned to zone EU" in text


def test_networks_exporting_a_region_of_another_group_are_refused():
    outputs = outputs_of("networks-eu")
    outputs["regions"]["cdg"] = {**outputs["regions"]["fra"], "host": CDG}
    outputs["nearest"]["fra"] = ["cdg", *outputs["nearest"]["fra"]]
    text = check_outputs("networks-eu", outputs)
    assert "output regions names region cdg (zone EU, group eu2)" in text
    assert "output nearest names region cdg" in text
    assert "output regions holds the address 127.77.7.1 of region cdg" in text


def test_an_address_of_another_group_inside_a_secret_output_is_found_but_not_shown():
    outputs = outputs_of("proxies-eu")
    uris = outputs["connection_uris"]["value"]
    uris["fra"]["read"] = f"postgresql://app:{'A' * 43}@{IAD}:6432/app"
    text = check_outputs("proxies-eu", outputs)
    assert "output connection_uris holds the address 127.77.17.1 of region iad" in text
    assert "A" * 43 not in text


def test_a_primary_region_outside_the_group_is_refused():
    text = check_outputs("replicas-eu", {**outputs_of("replicas-eu"), "primary_region": "iad"})
    assert "output primary_region is iad, not a region of group eu" in text


def test_on_the_ssh_target_a_hosts_address_belongs_to_its_region() -> None:
    from dbfleet.model.spec import parse_fleet
    from policies.rules.common import StackContext

    fleet = parse_fleet(
        "target: ssh\nssh: {key: ssh/x}\ngroups:\n  eu:\n    zone: EU\n    primary: fra\n"
        "    regions:\n      fra: {hosts: [{address: 198.18.5.21}]}\n"
        "      lhr: {hosts: [{address: 198.18.5.22}]}\n"
    )
    ctx = StackContext("replicas-eu", "replicas", "eu", fleet)
    assert ctx.region_of_address("198.18.5.22") == "lhr"
    assert ctx.region_of_address("198.18.5.99") is None
    assert ctx.group_hosts == {"198.18.5.21": "fra", "198.18.5.22": "lhr"}


def test_a_pooler_sending_writes_to_another_zone_is_refused():
    pool = host_scripts("proxies-eu")["fra-pool-pgbouncer"]
    text = check("proxies-eu", with_env(pool, WRITE_TARGET=f"{IAD}:6433"))
    assert "the pooler's write target 127.77.17.1 is region iad (zone US, group us)" in text
    text = check("proxies-eu", with_env(pool, READ_TARGET=f"{CDG}:6432"))
    assert "the pooler's read target 127.77.7.1 is region cdg (zone EU, group eu2)" in text


def test_a_pooler_directory_for_a_region_of_another_zone_is_refused():
    pool = host_scripts("proxies-eu")["fra-pool-pgbouncer"]
    text = check("proxies-eu", with_env(pool, POOL_DIR="/srv/dbfleet/data/dbfleet-eu/pooler-iad"))
    assert "the pooler directory /srv/dbfleet/data/dbfleet-eu/pooler-iad is for region iad" in text
