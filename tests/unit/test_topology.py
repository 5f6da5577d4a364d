"""Nearest-first order and the local network plan."""

from __future__ import annotations

import copy
import dataclasses
import socket
from typing import Any

import pytest

from dbfleet.model import topology
from dbfleet.model.spec import FleetSpec
from dbfleet.model.topology import (
    RegionNet,
    find_port_clashes,
    group_addresses,
    nearest_first,
    plan_network,
    port_is_free,
)

BASE: dict[str, Any] = {
    "groups": {
        "us": {"zone": "US", "primary": "iad", "regions": {"iad": {}, "ord": {}, "sjc": {}}},
        "eu": {"zone": "EU", "primary": "fra", "regions": {"fra": {}, "lhr": {}, "arn": {}}},
    }
}


def make_fleet(**top: Any) -> FleetSpec:
    data = copy.deepcopy(BASE)
    data.update(top)
    return FleetSpec.model_validate(data)


# --------------------------------------------------------------------------- nearest first


def test_nearest_first_for_the_us_group() -> None:
    # Chicago is ~910 km from Ashburn and ~2960 km from San Jose; San Jose is ~3850 km
    # from Ashburn.
    assert nearest_first(["iad", "ord", "sjc"]) == {
        "iad": ["ord", "sjc"],
        "ord": ["iad", "sjc"],
        "sjc": ["ord", "iad"],
    }


def test_nearest_first_for_the_eu_group() -> None:
    # fra-lhr ~640 km, fra-arn ~1190 km, lhr-arn ~1430 km.
    assert nearest_first(["fra", "lhr", "arn"]) == {
        "fra": ["lhr", "arn"],
        "lhr": ["fra", "arn"],
        "arn": ["fra", "lhr"],
    }


def test_nearest_first_does_not_depend_on_input_order() -> None:
    assert nearest_first(["arn", "fra", "lhr"])["fra"] == ["lhr", "arn"]


def test_nearest_first_breaks_ties_by_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(topology, "distance_km", lambda a, b: 100.0)
    assert nearest_first(["sjc", "iad", "ord"])["sjc"] == ["iad", "ord"]


def test_nearest_first_single_region_and_duplicates() -> None:
    assert nearest_first(["fra"]) == {"fra": []}
    assert nearest_first(["fra", "lhr", "fra"]) == {"fra": ["lhr"], "lhr": ["fra"]}


def test_nearest_first_rejects_unknown_codes() -> None:
    with pytest.raises(KeyError, match="xyz"):
        nearest_first(["fra", "xyz"])


# --------------------------------------------------------------------------- network plan


def test_plan_network_for_eu() -> None:
    nets = plan_network(make_fleet(), "eu")
    assert list(nets) == ["fra", "lhr", "arn"]
    assert {code: net.host for code, net in nets.items()} == {
        "fra": "127.77.12.1",
        "lhr": "127.77.20.1",
        "arn": "127.77.2.1",
    }
    assert nets["lhr"] == RegionNet(
        region="lhr",
        host="127.77.20.1",
        postgres_port=5432,
        read_port=6432,
        write_port=6433,
        stats_port=6434,
        node_ports=(5432,),
        node_hosts=("127.77.20.1",),
        pool_port=6435,
        patroni_ports=(8008,),
        etcd_port=2379,
        etcd_peer_port=2380,
    )


def test_on_the_ssh_target_each_node_listens_on_its_own_host() -> None:
    data = copy.deepcopy(BASE)
    data["target"] = "ssh"
    data["ssh"] = {"key": "ssh/fleet"}
    for group, base in (("eu", "198.18.1"), ("us", "198.18.2")):
        for k, region in enumerate(data["groups"][group]["regions"].values()):
            n = region.get("nodes", 1)
            region["hosts"] = [{"address": f"{base}.{10 * k + j}"} for j in range(n)]
    data["groups"]["eu"]["regions"]["lhr"] = {
        "nodes": 2,
        "hosts": [{"address": "198.18.1.30"}, {"address": "lhr-2.example.com", "port": 2222}],
    }
    fleet = FleetSpec.model_validate(data)
    nets = plan_network(fleet, "eu")
    assert nets["lhr"].node_hosts == ("198.18.1.30", "lhr-2.example.com")
    assert nets["lhr"].host == "198.18.1.30" and nets["lhr"].node_ports == (5432, 5433)
    assert group_addresses(fleet, "eu") == [
        "198.18.1.0",
        "198.18.1.30",
        "lhr-2.example.com",
        "198.18.1.20",
    ]


def test_plan_network_for_us() -> None:
    hosts = {code: net.host for code, net in plan_network(make_fleet(), "us").items()}
    assert hosts == {"iad": "127.77.17.1", "ord": "127.77.24.1", "sjc": "127.77.31.1"}


def test_node_k_listens_on_postgres_port_plus_k() -> None:
    data = copy.deepcopy(BASE)
    data["groups"]["eu"]["regions"]["lhr"] = {"nodes": 3}
    nets = plan_network(FleetSpec.model_validate(data), "eu")
    assert nets["lhr"].node_ports == (5432, 5433, 5434)
    assert nets["fra"].node_ports == (5432,)


def test_plan_network_follows_cidr_and_ports() -> None:
    fleet = make_fleet(network={"cidr": "127.5.0.0/16", "postgres_port": 15432, "read_port": 16432})
    fra = plan_network(fleet, "eu")["fra"]
    assert (fra.host, fra.postgres_port, fra.read_port, fra.node_ports) == (
        "127.5.12.1",
        15432,
        16432,
        (15432,),
    )
    wide = make_fleet(network={"cidr": "127.0.0.0/8"})
    assert plan_network(wide, "eu")["fra"].host == "127.0.12.1"


def test_plan_is_independent_of_other_groups_and_of_order() -> None:
    before = plan_network(make_fleet(), "eu")
    data = copy.deepcopy(BASE)
    del data["groups"]["us"]
    data["groups"]["ca"] = {"zone": "CA", "primary": "yyz", "regions": {"yyz": {}}}
    data["groups"]["eu"]["regions"] = {"arn": {}, "lhr": {}, "fra": {}}  # reordered
    after = plan_network(FleetSpec.model_validate(data), "eu")
    assert {c: n.host for c, n in after.items()} == {c: n.host for c, n in before.items()}
    assert after == {code: before[code] for code in after}


def test_every_region_of_the_fleet_gets_its_own_host() -> None:
    fleet = make_fleet()
    hosts = [net.host for group in fleet.groups for net in plan_network(fleet, group).values()]
    assert len(hosts) == len(set(hosts)) == 6


def test_plan_network_unknown_group() -> None:
    with pytest.raises(KeyError):
        plan_network(make_fleet(), "asia")


def test_region_net_is_frozen() -> None:
    net = plan_network(make_fleet(), "eu")["fra"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        net.host = "127.0.0.1"  # type: ignore[misc]


# --------------------------------------------------------------------------- port clashes


def test_no_clashes_when_everything_is_free() -> None:
    nets = plan_network(make_fleet(), "eu")
    asked: list[tuple[str, int]] = []

    def is_free(host: str, port: int) -> bool:
        asked.append((host, port))
        return True

    assert find_port_clashes(nets, is_free, group="eu") == []
    # 3 regions x (1 node + its Patroni + etcd client and peer + read + write + stats + pooler)
    assert len(asked) == 24
    assert ("127.77.20.1", 6432) in asked and ("127.77.2.1", 5432) in asked


def test_clash_messages_name_the_address_and_its_purpose() -> None:
    nets = plan_network(make_fleet(), "eu")
    busy = {("127.77.20.1", 6432), ("127.77.12.1", 5432)}
    clashes = find_port_clashes(nets, lambda h, p: (h, p) not in busy, group="eu")
    assert clashes == [
        "127.77.12.1:5432 (PostgreSQL node 0 of eu/fra) is already in use",
        "127.77.20.1:6432 (read listener of eu/lhr) is already in use",
    ]


def test_clash_messages_without_group_name() -> None:
    nets = plan_network(make_fleet(), "us")
    clashes = find_port_clashes(nets, lambda h, p: p != 6434)
    assert clashes == [
        "127.77.17.1:6434 (stats listener of iad) is already in use",
        "127.77.24.1:6434 (stats listener of ord) is already in use",
        "127.77.31.1:6434 (stats listener of sjc) is already in use",
    ]


def test_port_is_free_sees_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_is_free("127.0.0.1", port) is False


def test_port_is_free_on_a_free_port_and_releases_it() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Bound but never listened or connected: no TIME_WAIT, so the port is free again.
    assert port_is_free("127.0.0.1", port) is True
    assert port_is_free("127.0.0.1", port) is True  # the check itself let go of it


def _nonlocal_bind_allowed() -> bool:
    try:
        with open("/proc/sys/net/ipv4/ip_nonlocal_bind") as f:
            return f.read().strip() != "0"
    except OSError:
        return False


@pytest.mark.skipif(_nonlocal_bind_allowed(), reason="kernel allows binding foreign addresses")
def test_port_is_free_on_an_address_this_machine_does_not_have() -> None:
    assert port_is_free("192.0.2.1", 6432) is False  # TEST-NET-1: never local
