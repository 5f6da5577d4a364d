"""Durability: at least minRegions regions per group; a protected primary off the local demo."""

from __future__ import annotations

import pytest

from policies.rules.durability import durability
from tests.unit.policy_support import (
    Resource,
    messages,
    program_resources,
    replace_props,
    run_stack_policy,
)

pytestmark = pytest.mark.usefixtures("unit_fleet")

SSH = {"kind": "ssh", "host": "db1.example", "user": "ops", "port": 22}


def check(stack: str, resources: list[Resource] | None = None, config: dict | None = None):
    return run_stack_policy(
        durability, stack, program_resources(stack) if resources is None else resources, {}, config
    )


@pytest.mark.parametrize(
    "stack",
    [
        f"{layer}-{g}"
        for g in ("us", "eu")
        for layer in ("accounts", "networks", "replicas", "proxies")
    ],
)
def test_three_region_groups_on_the_local_target_pass(stack):
    assert check(stack) == []


@pytest.mark.parametrize("stack", ["accounts-br", "networks-br", "proxies-br"])
def test_a_two_region_group_is_reported_from_the_fleet_file(stack):
    (violation,) = check(stack)
    assert "group br has 2 region(s) (gru, gig); at least 3 are required" in violation.message
    assert violation.urn is None  # the stack as a whole


def test_the_replicas_stack_counts_the_regions_it_really_deploys():
    (violation,) = check("replicas-br")
    assert "group br keeps copies of its data in 2 region(s) (gig, gru)" in violation.message
    # Dropping the replicas of lhr and arn leaves eu with copies in one region.
    eu = [r for r in program_resources("replicas-eu") if not r.name.startswith(("lhr", "arn"))]
    (violation,) = check("replicas-eu", eu)
    assert "keeps copies of its data in 1 region(s) (fra)" in violation.message


def test_min_regions_comes_from_the_pack_config():
    assert "at least 4 are required" in messages(check("replicas-eu", config={"minRegions": 4.0}))
    assert check("replicas-br", config={"minRegions": 2.0}) == []


def test_an_unprotected_primary_off_the_local_target_is_reported():
    resources = program_resources("replicas-eu")
    primary = next(r for r in resources if r.name == "fra-0-server")
    on_ssh = replace_props(primary, connection=SSH)
    others = [r for r in resources if r is not primary]
    (violation,) = check("replicas-eu", [*others, on_ssh])
    assert (
        "fra-0-server: the primary of group eu on target local over a ssh connection is not protected"
        in violation.message
    )
    assert violation.urn == on_ssh.urn("replicas-eu")
    protected = Resource(on_ssh.typ, on_ssh.name, on_ssh.props, on_ssh.parents, protect=True)
    assert check("replicas-eu", [*others, protected]) == []


def test_replicas_need_no_protection_and_the_local_primary_only_when_configured():
    resources = program_resources("replicas-eu")
    replicas_on_ssh = [
        replace_props(r, connection=SSH) if r.name == "lhr-0-server" else r for r in resources
    ]
    assert check("replicas-eu", replicas_on_ssh) == []
    (violation,) = check("replicas-eu", config={"protectPrimaryOnLocal": True})
    assert (
        "fra-0-server: the primary of group eu on the local target is not protected"
        in violation.message
    )
