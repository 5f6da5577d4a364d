"""The fleet file models and loader: every rule passes when kept and fails when broken."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from dbfleet.model.spec import (
    FleetError,
    FleetSpec,
    GroupSpec,
    NetworkSpec,
    Problem,
    RegionSpec,
    default_spec_path,
    load_fleet,
    parse_fleet,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLEET = ROOT / "stacks" / "fleet.yaml"

BASE: dict[str, Any] = {
    "groups": {
        "us": {
            "zone": "US",
            "primary": "iad",
            "regions": {"iad": {"nodes": 1}, "ord": {"nodes": 1}, "sjc": {"nodes": 1}},
        },
        "eu": {
            "zone": "EU",
            "primary": "fra",
            "regions": {"fra": {"nodes": 1}, "lhr": {"nodes": 1}, "arn": {"nodes": 1}},
        },
    }
}


def fleet(**changes: Any) -> dict[str, Any]:
    """BASE with dotted-path changes: fleet(**{"groups.eu.zone": "US"}); None deletes."""
    data = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return data


def problems(data: dict[str, Any] | str) -> list[str]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(FleetError) as info:
        parse_fleet(text)
    assert info.value.problems, "a FleetError must carry at least one problem"
    return [str(p) for p in info.value.problems]


def accepts(data: dict[str, Any] | str) -> FleetSpec:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    return parse_fleet(text)


# --------------------------------------------------------------------------- default fleet


def test_default_fleet_has_the_designed_shape() -> None:
    spec = load_fleet(DEFAULT_FLEET)
    assert spec.target == "local"
    assert spec.name == "dbfleet"
    assert list(spec.groups) == ["us", "eu"]
    us, eu = spec.groups["us"], spec.groups["eu"]
    assert (us.zone, us.primary, list(us.regions)) == ("US", "iad", ["iad", "ord", "sjc"])
    assert (eu.zone, eu.primary, list(eu.regions)) == ("EU", "fra", ["fra", "lhr", "arn"])
    assert all(r.nodes == 1 for g in spec.groups.values() for r in g.regions.values())
    assert spec.network == NetworkSpec()


def test_base_dict_is_valid() -> None:
    assert accepts(BASE).groups["eu"].primary == "fra"


def test_network_defaults() -> None:
    net = NetworkSpec()
    assert (net.cidr, net.postgres_port, net.read_port, net.write_port, net.stats_port) == (
        "127.77.0.0/16",
        5432,
        6432,
        6433,
        6434,
    )
    assert list(net.node_port_range) == list(range(5432, 5441))


# --------------------------------------------------------------------------- default path


def test_default_spec_path_is_the_project_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DBFLEET_SPEC", raising=False)
    assert default_spec_path() == DEFAULT_FLEET


def test_default_spec_path_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DBFLEET_SPEC", str(tmp_path / "other.yaml"))
    assert default_spec_path() == tmp_path / "other.yaml"


# --------------------------------------------------------------------------- group names


@pytest.mark.parametrize("name", ["a", "eu", "eu-west-2", "x" * 20, "a1"])
def test_group_name_dns_label_accepted(name: str) -> None:
    data = fleet()
    data["groups"][name] = data["groups"].pop("eu")
    assert name in accepts(data).groups


@pytest.mark.parametrize("name", ["Eu", "-eu", "eu-", "1eu", "eu_west", "x" * 21, "é", "eu.w", ""])
def test_group_name_not_a_dns_label(name: str) -> None:
    data = fleet()
    data["groups"][name] = data["groups"].pop("eu")
    found = problems(data)
    assert len(found) == 1
    assert "is not a DNS label" in found[0] and found[0].startswith("groups.")


def test_unquoted_yaml_keys_stay_text() -> None:
    # YAML 1.1 would read `no:` as false; a fleet file's keys are names.
    text = "groups:\n  no:\n    zone: EU\n    primary: arn\n    regions: {arn: {}}\n"
    assert list(accepts(text).groups) == ["no"]


# --------------------------------------------------------------------------- zones and regions


def test_known_zone_accepted_and_unknown_rejected() -> None:
    data = fleet(**{"groups.eu.zone": "EU"})
    assert accepts(data).groups["eu"].zone == "EU"
    found = problems(fleet(**{"groups.eu.zone": "EEA"}))
    assert found == [found[0]] and found[0].startswith("groups.eu.zone: unknown zone EEA")


def test_unknown_region_code() -> None:
    data = fleet()
    data["groups"]["eu"]["regions"]["xyz"] = {}
    assert problems(data) == [
        "groups.eu.regions.xyz: unknown region xyz: not a Fly.io region code; did you mean yyz?"
    ]


def test_region_outside_group_zone_has_the_documented_message() -> None:
    data = fleet(**{"groups.us.regions.sjc": None, "groups.eu.regions.sjc": {"nodes": 1}})
    assert problems(data) == [
        "groups.eu.regions.sjc: region sjc is in zone US, group eu is pinned to zone EU"
    ]


def test_region_inside_other_country_zone_is_accepted() -> None:
    data = fleet(
        **{"groups.ca": {"zone": "CA", "primary": "yyz", "regions": {"yyz": {}, "yul": {}}}}
    )
    assert accepts(data).groups["ca"].regions["yul"].nodes == 1


def test_primary_must_be_one_of_the_group_regions() -> None:
    assert accepts(fleet(**{"groups.eu.primary": "lhr"})).groups["eu"].primary == "lhr"
    assert problems(fleet(**{"groups.eu.primary": "iad"})) == [
        "groups.eu.primary: primary iad is not one of the group's regions (fra, lhr, arn)"
    ]


def test_region_in_two_groups_names_the_second() -> None:
    data = fleet(
        **{"groups.us2": {"zone": "US", "primary": "sea", "regions": {"sea": {}, "ord": {}}}}
    )
    assert problems(data) == [
        (
            "groups.us2.regions.ord: region ord already belongs to group us; "
            "a region may belong to only one group"
        )
    ]


def test_distinct_regions_in_two_groups_of_one_zone_are_fine() -> None:
    data = fleet(**{"groups.us2": {"zone": "US", "primary": "sea", "regions": {"sea": {}}}})
    assert set(accepts(data).groups) == {"us", "eu", "us2"}


def test_duplicate_region_key_is_reported_at_its_path() -> None:
    text = (
        "groups:\n"
        "  eu:\n"
        "    zone: EU\n"
        "    primary: fra\n"
        "    regions:\n"
        "      fra: {nodes: 1}\n"
        "      fra: {nodes: 2}\n"
    )
    assert problems(text) == [
        "groups.eu.regions.fra: duplicate key fra at line 7, column 7 (first defined at line 6)"
    ]


def test_duplicate_keys_through_anchors_do_not_loop() -> None:
    text = "groups:\n  eu: &g\n    zone: EU\n    primary: fra\n    regions: {fra: {}}\n  de: *g\n"
    found = problems(text)
    # Same region in two groups, reported once; the alias does not make the walk loop.
    assert found == [
        (
            "groups.de.regions.fra: region fra already belongs to group eu; "
            "a region may belong to only one group"
        )
    ]


# --------------------------------------------------------------------------- node counts


@pytest.mark.parametrize("nodes", [1, 5, 9])
def test_node_count_in_range(nodes: int) -> None:
    spec = accepts(fleet(**{"groups.eu.regions.lhr.nodes": nodes}))
    assert spec.groups["eu"].regions["lhr"].nodes == nodes


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        (0, "must be at least 1, got 0"),
        (10, "must be at most 9, got 10"),
        (10**30, "must be at most 9, got 1000000000000000000000000000000"),
        ("2", 'expected an integer, got string "2"'),
        (2.0, "expected an integer, got number 2.0"),
        (True, "expected an integer, got boolean true"),
        (None, "expected an integer, got null"),
    ],
)
def test_node_count_out_of_range_or_wrong_type(nodes: object, message: str) -> None:
    assert problems(fleet(**{"groups.eu.regions.lhr": {"nodes": nodes}})) == [
        f"groups.eu.regions.lhr.nodes: {message}"
    ]


def test_nodes_default_to_one() -> None:
    assert accepts(fleet(**{"groups.eu.regions.lhr": {}})).groups["eu"].regions["lhr"].nodes == 1
    assert RegionSpec().nodes == 1


# --------------------------------------------------------------------------- unknown keys and types


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (
            "colour",
            "colour: unknown key (allowed: name, target, network, ssh, firewall, pooling, limits, tls, groups)",
        ),
        (
            "groups.eu.colour",
            "groups.eu.colour: unknown key (allowed: zone, primary, regions, target, durability, read_lag_budget, max_lag_on_failover, backup)",
        ),
        (
            "groups.eu.regions.fra.colour",
            "groups.eu.regions.fra.colour: unknown key (allowed: nodes, hosts)",
        ),
        (
            "network.colour",
            (
                "network.colour: unknown key "
                "(allowed: cidr, postgres_port, read_port, write_port, stats_port, pool_port, patroni_port, etcd_port, etcd_peer_port, backup_port)"
            ),
        ),
    ],
)
def test_unknown_keys_at_every_level(path: str, expected: str) -> None:
    assert problems(fleet(**{path: "blue"})) == [expected]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("groups", ["us"], "groups: expected a mapping, got a list"),
        ("groups.eu", "EU", 'groups.eu: expected a mapping, got string "EU"'),
        ("groups.eu.zone", 3, "groups.eu.zone: expected a string, got integer 3"),
        ("groups.eu.primary", ["fra"], "groups.eu.primary: expected a string, got a list"),
        ("groups.eu.regions", ["fra"], "groups.eu.regions: expected a mapping, got a list"),
        ("groups.eu.regions.fra", 1, "groups.eu.regions.fra: expected a mapping, got integer 1"),
        ("target", "cloud", "target: must be 'local' or 'ssh', got string \"cloud\""),
        ("groups.eu.target", 7, "groups.eu.target: must be 'local' or 'ssh', got integer 7"),
        ("name", 5, "name: expected a string, got integer 5"),
        ("network", "127.77.0.0/16", 'network: expected a mapping, got string "127.77.0.0/16"'),
    ],
)
def test_wrong_types(path: str, value: object, expected: str) -> None:
    assert problems(fleet(**{path: value})) == [expected]


@pytest.mark.parametrize(
    "path", ["groups", "groups.eu.zone", "groups.eu.primary", "groups.eu.regions"]
)
def test_required_keys(path: str) -> None:
    assert problems(fleet(**{path: None})) == [f"{path}: missing required key"]


@pytest.mark.parametrize("path", ["groups", "groups.eu.regions"])
def test_empty_mappings_rejected(path: str) -> None:
    assert problems(fleet(**{path: {}})) == [f"{path}: must not be empty"]


def test_messages_are_human() -> None:
    data = fleet(**{"groups.eu.zone": "XX", "groups.us.regions.iad.nodes": 0, "colour": 1})
    for line in problems(data):
        assert "pydantic" not in line and "https://" not in line
        assert "Value error" not in line and "\n" not in line


def test_weird_keys_are_quoted_and_stay_on_one_line() -> None:
    data = fleet()
    data["groups"]["eu\nwest"] = data["groups"].pop("eu")
    (line,) = problems(data)
    assert line.startswith('groups."eu\\nwest": group name "eu\\nwest" is not a DNS label')


# --------------------------------------------------------------------------- targets


SSH_HOSTS = {
    "groups.eu.regions.fra.hosts": [{"address": "198.18.1.10"}],
    "groups.eu.regions.lhr.hosts": [{"address": "198.18.1.20", "port": 2222}],
    "groups.eu.regions.arn.hosts": [{"address": "198.18.1.30"}],
    "groups.us.regions.iad.hosts": [{"address": "db-iad.example.com"}],
    "groups.us.regions.ord.hosts": [{"address": "2001:db8::10"}],
    "groups.us.regions.sjc.hosts": [{"address": "198.18.2.30"}],
}


def ssh_fleet(**changes: Any) -> dict[str, Any]:
    return fleet(**{"target": "ssh", "ssh": {"key": "ssh/fleet"}, **SSH_HOSTS, **changes})


def test_an_ssh_fleet_with_hosts_and_a_login_is_accepted() -> None:
    spec = accepts(ssh_fleet())
    assert spec.ssh is not None and spec.ssh.user == "root" and spec.ssh.key == "ssh/fleet"
    assert spec.groups["eu"].regions["lhr"].hosts[0].port == 2222


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"ssh": None},
            "ssh: missing: group(s) us, eu run on target ssh, which needs an ssh section (user, key)",
        ),
        (
            {"groups.eu.regions.lhr.hosts": [{"address": "198.18.1.10"}]},
            "groups.eu.regions.lhr.hosts.0.address: 198.18.1.10:22 is listed twice (also groups.eu.regions.fra.hosts.0)",
        ),
        (
            {"groups.eu.regions.lhr.nodes": 2},
            "groups.eu.regions.lhr.hosts: 1 host(s) for 2 node(s): list one host per node",
        ),
        (
            {"groups.eu.regions.fra.hosts": [{"address": "not an address"}]},
            'groups.eu.regions.fra.hosts.0.address: "not an address" is not an IP address or a DNS name',
        ),
        (
            {"groups.us.regions.iad.hosts": None},
            "groups.us.regions.iad.hosts: missing: the ssh target needs one host per node (1)",
        ),
        ({"ssh": {"key": "../x"}}, "ssh.key: ../x is not a Vault KV path (like ssh/fleet)"),
    ],
)
def test_ssh_fleet_rules(changes: dict, expected: str) -> None:
    assert expected in problems(ssh_fleet(**changes))


def test_hosts_under_a_local_group_are_refused() -> None:
    assert problems(fleet(**{"groups.eu.regions.fra.hosts": [{"address": "198.18.1.10"}]})) == [
        "groups.eu.regions.fra.hosts: hosts belong to the ssh target; group eu runs on target local"
    ]


def test_group_target_overrides_fleet_target() -> None:
    spec = accepts(
        fleet(target="ssh", **{"groups.eu.target": "local", "groups.us.target": "local"})
    )
    assert spec.target == "ssh"
    assert spec.group_target("eu") == "local"


def test_group_target_of_unknown_group() -> None:
    with pytest.raises(KeyError, match="no group 'asia'"):
        accepts(BASE).group_target("asia")


# --------------------------------------------------------------------------- fleet name


@pytest.mark.parametrize("name", ["dbfleet", "prod-1", "x" * 20])
def test_fleet_name_accepted(name: str) -> None:
    assert accepts(fleet(name=name)).name == name


@pytest.mark.parametrize("name", ["DB", "db_fleet", "x" * 21, "9lives", "db-"])
def test_fleet_name_rejected(name: str) -> None:
    (line,) = problems(fleet(name=name))
    assert line.startswith("name: fleet name ") and "is not a DNS label" in line


# --------------------------------------------------------------------------- network


@pytest.mark.parametrize("cidr", ["127.77.0.0/16", "127.0.0.0/8", "127.5.0.0/16", "127.128.0.0/9"])
def test_cidr_accepted(cidr: str) -> None:
    assert accepts(fleet(**{"network.cidr": cidr})).network.cidr == cidr


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.0/16", "10.0.0.0/16 is outside 127.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0 is outside 127.0.0.0/8"),
        ("::1/128", "::1/128 is outside 127.0.0.0/8"),
        ("127.77.0.0/17", "prefix /17 is too long"),
        ("127.77.0.0", "prefix /32 is too long"),
        ("127.77.3.0/16", "127.77.3.0/16 has host bits set; did you mean 127.77.0.0/16?"),
        ("loopback", "loopback is not a network in CIDR notation"),
    ],
)
def test_cidr_rejected(cidr: str, message: str) -> None:
    (line,) = problems(fleet(**{"network.cidr": cidr}))
    assert line.startswith(f"network.cidr: {message}")


def test_ports_accepted_when_apart() -> None:
    spec = accepts(
        fleet(
            **{
                "network.postgres_port": 15432,
                "network.read_port": 15441,
                "network.write_port": 1024,
                "network.stats_port": 65535,
            }
        )
    )
    assert spec.network.read_port == 15441


def test_postgres_port_leaves_room_for_nine_nodes() -> None:
    assert accepts(fleet(**{"network.postgres_port": 65527})).network.postgres_port == 65527
    (line,) = problems(fleet(**{"network.postgres_port": 65528}))
    assert line.startswith("network.postgres_port: must be at most 65527")


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"network.read_port": 5440},
            "network.read_port: port 5440 overlaps the PostgreSQL node ports 5432-5440",
        ),
        (
            {"network.stats_port": 5432},
            "network.stats_port: port 5432 overlaps the PostgreSQL node ports 5432-5440",
        ),
        ({"network.write_port": 6432}, "network.write_port: port 6432 is already the read_port"),
        ({"network.stats_port": 6433}, "network.stats_port: port 6433 is already the write_port"),
        ({"network.pool_port": 6434}, "network.pool_port: port 6434 is already the stats_port"),
        (
            {"network.pool_port": 5433},
            "network.pool_port: port 5433 overlaps the PostgreSQL node ports 5432-5440",
        ),
        ({"network.pool_port": 80}, "network.pool_port: must be at least 1024, got 80"),
        ({"network.read_port": 1023}, "network.read_port: must be at least 1024, got 1023"),
        ({"network.read_port": 65536}, "network.read_port: must be at most 65535, got 65536"),
        (
            {"network.read_port": "6432"},
            'network.read_port: expected an integer, got string "6432"',
        ),
    ],
)
def test_bad_ports(changes: dict[str, Any], expected: str) -> None:
    (line,) = problems(fleet(**changes))
    assert line.startswith(expected)


def test_pool_port_and_pool_sizes_have_defaults() -> None:
    spec = accepts(fleet())
    assert spec.network.pool_port == 6435
    assert (spec.pooling.default_pool_size, spec.pooling.max_client_conn) == (20, 1000)
    spec = accepts(
        fleet(
            **{"network.pool_port": 7000, "pooling": {"default_pool_size": 5, "max_client_conn": 5}}
        )
    )
    assert (spec.network.pool_port, spec.pooling.default_pool_size) == (7000, 5)


@pytest.mark.parametrize(
    ("pooling", "expected"),
    [
        ({"default_pool_size": 0}, "pooling.default_pool_size: must be at least 1, got 0"),
        ({"default_pool_size": 1001}, "pooling.default_pool_size: must be at most 1000, got 1001"),
        ({"max_client_conn": 100001}, "pooling.max_client_conn: must be at most 100000"),
        (
            {"max_client_conn": "many"},
            'pooling.max_client_conn: expected an integer, got string "many"',
        ),
        (
            {"default_pool_size": 50, "max_client_conn": 10},
            "pooling.default_pool_size: 50 server connections per pool is more than max_client_conn",
        ),
        (
            {"pool_mode": "session"},
            "pooling.pool_mode: unknown key (allowed: default_pool_size, max_client_conn)",
        ),
        ("yes", "pooling: expected a mapping, got string"),
    ],
)
def test_bad_pooling(pooling: Any, expected: str) -> None:
    (line,) = problems(fleet(pooling=pooling))
    assert line.startswith(expected), line


# --------------------------------------------------------------------------- all problems at once


def test_all_problems_are_collected() -> None:
    data = fleet(
        **{
            "groups.us.regions.iad.nodes": 0,
            "groups.eu.zone": "XX",
            "network.write_port": 6432,
            "colour": "blue",
        }
    )
    paths = [line.split(": ", 1)[0] for line in problems(data)]
    assert sorted(paths) == sorted(
        ["groups.us.regions.iad.nodes", "groups.eu.zone", "network.write_port", "colour"]
    )


def test_cross_field_rules_run_on_sound_groups_when_another_group_is_broken() -> None:
    data = fleet(**{"groups.us.regions.iad.nodes": 0, "groups.eu.primary": "lhrr"})
    assert problems(data) == [
        "groups.us.regions.iad.nodes: must be at least 1, got 0",
        "groups.eu.primary: primary lhrr is not one of the group's regions (fra, lhr, arn)",
    ]


def test_cross_field_rules_skip_a_group_whose_shape_failed() -> None:
    # eu has both a shape problem and a zone problem: only the shape problem is reported.
    data = fleet(**{"groups.eu.colour": "blue", "groups.eu.regions.sjc": {}})
    assert problems(data) == [
        "groups.eu.colour: unknown key (allowed: zone, primary, regions, target, durability, read_lag_budget, max_lag_on_failover, backup)"
    ]


def test_several_rule_problems_in_one_group_are_all_reported_in_file_order() -> None:
    data = fleet(
        **{"groups.eu.regions.sjc": {}, "groups.eu.regions.iad": {}, "groups.eu.primary": "x"}
    )
    assert problems(data) == [
        "groups.eu.primary: primary x is not one of the group's regions (fra, lhr, arn, sjc, iad)",
        "groups.eu.regions.sjc: region sjc is in zone US, group eu is pinned to zone EU",
        (
            "groups.eu.regions.sjc: region sjc already belongs to group us; "
            "a region may belong to only one group"
        ),
        "groups.eu.regions.iad: region iad is in zone US, group eu is pinned to zone EU",
        (
            "groups.eu.regions.iad: region iad already belongs to group us; "
            "a region may belong to only one group"
        ),
    ]


def test_problems_follow_the_file_not_the_schema() -> None:
    text = "colour: blue\ngroups:\n  eu: {zone: EU, primary: fra, regions: {fra: {nodes: 0}}}\n"
    assert problems(text) == [
        "colour: unknown key (allowed: name, target, network, ssh, firewall, pooling, limits, tls, groups)",
        "groups.eu.regions.fra.nodes: must be at least 1, got 0",
    ]


# --------------------------------------------------------------------------- models used directly


def test_models_are_frozen() -> None:
    spec = accepts(BASE)
    with pytest.raises(ValidationError):
        spec.target = "ssh"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        spec.groups["eu"].zone = "US"  # type: ignore[misc]


def test_models_enforce_cross_field_rules_without_the_loader() -> None:
    with pytest.raises(ValidationError, match="region sjc is in zone US"):
        FleetSpec.model_validate(fleet(**{"groups.eu.regions.sjc": {}}))


def test_models_can_be_built_in_code() -> None:
    spec = FleetSpec(
        groups={"eu": GroupSpec(zone="EU", primary="fra", regions={"fra": RegionSpec()})}
    )
    assert spec.group_target("eu") == "local"


# --------------------------------------------------------------------------- file-level problems


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError) as info:
        load_fleet(tmp_path / "nope.yaml")
    assert [str(p) for p in info.value.problems] == [f"{tmp_path / 'nope.yaml'}: file not found"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(FleetError) as info:
        load_fleet(tmp_path)
    assert info.value.problems == [Problem(str(tmp_path), "is a directory, not a fleet file")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("groups: {}\n")
    path.chmod(0)
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    assert str(info.value.problems[0]).startswith(f"{path}: cannot read")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == ["<file>: file is empty: expected a mapping with a groups key"]


def test_malformed_yaml_names_line_and_column() -> None:
    (line,) = problems("groups:\n  eu: {zone: EU\n  us: [\n")
    assert line.startswith("<file>: malformed YAML at line ")
    assert ", column " in line


@pytest.mark.parametrize(("text", "kind"), [("- a\n", "a list"), ("42\n", "integer 42")])
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert problems(text) == [f"<file>: top level must be a mapping with a groups key, got {kind}"]


def test_problems_of_the_whole_file_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text("- a\n")
    with pytest.raises(FleetError) as info:
        load_fleet(path)
    assert [str(p) for p in info.value.problems] == [
        f"{path}: top level must be a mapping with a groups key, got a list"
    ]


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + DEFAULT_FLEET.read_bytes())
    assert load_fleet(path) == load_fleet(DEFAULT_FLEET)


def test_problem_str_and_error_message() -> None:
    problem = Problem("groups.eu.zone", "unknown zone XX")
    assert str(problem) == "groups.eu.zone: unknown zone XX"
    error = FleetError([problem, Problem("<file>", "x")])
    assert str(error) == "groups.eu.zone: unknown zone XX\n<file>: x"


@pytest.mark.parametrize(
    ("typed", "meant"),
    [("cgd", "cdg"), ("far", "fra"), ("lrh", "lhr"), ("xyz", "yyz"), ("IAD", "iad")],
)
def test_a_region_typo_suggests_the_code_meant_swapped_letters_first(
    typed: str, meant: str
) -> None:
    text = DEFAULT_FLEET.read_text().replace(
        "      arn: {nodes: 1}", f"      {typed}: {{nodes: 1}}"
    )
    found = [p for p in problems(text) if p.startswith(f"groups.eu.regions.{typed}:")]
    assert found and found[0].endswith(f"did you mean {meant}?"), found
