"""The policy pack as a whole, its shared helpers, and the program's own output.

What dbfleet's real layers register (tests/unit/policy_support.py) is the baseline:
every policy must pass it, and the per-policy tests (test_policies_<topic>.py) break one
input of it at a time.
"""

from __future__ import annotations

import importlib
import pkgutil
import runpy
from pathlib import Path

import pulumi_policy
import pytest

from policies import rules
from policies.rules import common, exposure, residency
from tests.unit.policy_support import (
    UNKNOWN_STRING,
    host_scripts,
    messages,
    program_resources,
    run_policy,
    run_resource_policy,
    secret,
    urn,
    with_env,
)

REPO = Path(__file__).resolve().parents[2]
# Every rule module of the package, found on disk (not from the pack's own list).
MODULES = tuple(
    importlib.import_module(f"{rules.__name__}.{info.name}")
    for info in pkgutil.iter_modules(rules.__path__)
    if info.name != "common"
)
ALL_POLICIES = [p for m in MODULES for p in m.POLICIES]
# The order the pack runs its policies in, and pulumi reports them in.
PACK_ORDER = [
    "residency",
    "residency-outputs",
    "no-plaintext-secrets",
    "no-plaintext-secret-outputs",
    "exposure",
    "durability",
    "authentication",
    "stack-shape",
    "tls",
    "tls-outputs",
    "backup-residency",
    "backups-configured",
]
LAYERS = ("accounts", "networks", "replicas", "proxies")


pytestmark = pytest.mark.usefixtures("unit_fleet")


# --------------------------------------------------------------------------- the pack


def test_main_lists_every_policy_of_every_rule_module_once(monkeypatch):
    import sys

    import pulumi_policy.policy as pp

    packs = []
    monkeypatch.setattr(pulumi_policy, "PolicyPack", lambda **kwargs: packs.append(kwargs))
    # The pack replaces this; monkeypatch puts the original back afterwards.
    monkeypatch.setattr(pp, "deserialize_properties", pp.deserialize_properties)
    before = set(sys.modules)
    try:
        # As pulumi.policy runs a pack: the directory, whose __main__.py sees it on sys.path.
        runpy.run_path(str(REPO / "policies"), run_name="__main__")
    finally:
        # The pack imports its rules as the top-level package `rules` (as the analyzer does).
        for name in set(sys.modules) - before:
            if name == "rules" or name.startswith("rules."):
                del sys.modules[name]
    assert pp.deserialize_properties.__name__ == "deserialize_keeping_secrets"
    assert len(packs) == 1 and packs[0]["name"] == "dbfleet"
    names = [p.name for p in packs[0]["policies"]]
    assert sorted(names) == sorted(p.name for p in ALL_POLICIES)
    assert names == PACK_ORDER
    assert packs[0]["enforcement_level"] == pulumi_policy.EnforcementLevel.MANDATORY


def test_levels_mandatory_except_durability():
    levels = {p.name: p.enforcement_level for p in ALL_POLICIES}
    assert levels.pop("durability") == pulumi_policy.EnforcementLevel.ADVISORY
    assert levels.pop("backups-configured") == pulumi_policy.EnforcementLevel.ADVISORY
    assert set(levels.values()) == {pulumi_policy.EnforcementLevel.MANDATORY}


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[1])
def test_every_rule_has_a_description_and_a_remediation(module):
    assert len(module.REMEDIATION) > 40 and len(module.DESCRIPTION) > 40
    for policy in module.POLICIES:
        assert policy.description in (
            module.DESCRIPTION,
            getattr(module, "OUTPUTS_DESCRIPTION", None),
        )


def test_pack_manifest_runs_python_in_the_project_venv():
    import yaml

    manifest = yaml.safe_load((REPO / "policies" / "PulumiPolicy.yaml").read_text())
    assert manifest["runtime"]["name"] == "python"
    venv = (REPO / "policies" / manifest["runtime"]["options"]["virtualenv"]).resolve()
    assert venv == REPO / ".venv"


@pytest.mark.parametrize("stack", [f"{layer}-{g}" for g in ("us", "eu") for layer in LAYERS])
def test_what_the_layers_register_passes_every_policy(stack):
    resources = program_resources(stack)
    if stack.startswith(("accounts", "replicas", "proxies")):
        assert any(r.typ == common.HOST_SCRIPT for r in resources), "the layer registered nothing"
    found = [v for p in ALL_POLICIES for v in run_policy(p, stack, resources)]
    assert found == []


def test_a_violation_names_its_remediation():
    scripts = host_scripts("replicas-eu")
    bad = scripts["fra-0-server"]
    bad.props["environment"] = {**bad.props["environment"], "PG_HOST": "0.0.0.0"}
    (violation,) = run_resource_policy(exposure.exposure, "replicas-eu", bad)
    assert "public bind" in violation.message
    assert violation.message.endswith("Remediation: " + exposure.REMEDIATION)
    assert violation.urn == bad.urn("replicas-eu")


# --------------------------------------------------------------------------- common


def test_secret_marks_survive_deserialization():
    props = common.deserialize_keeping_secrets(
        {"a": secret({"PW": "x"}), "b": {"c": secret("y"), "d": "plain"}, "e": [secret(1)]}
    )
    assert isinstance(props["a"], common.Secret) and props["a"].value == {"PW": "x"}
    assert isinstance(props["b"]["c"], common.Secret) and props["b"]["d"] == "plain"
    assert isinstance(props["e"][0], common.Secret)
    assert "x" not in repr(props["a"])


def test_keep_secret_marks_replaces_pulumi_policys_deserializer(monkeypatch):
    import pulumi_policy.policy as pp

    monkeypatch.setattr(pp, "deserialize_properties", pp.deserialize_properties)
    common.keep_secret_marks()
    assert pp.deserialize_properties is common.deserialize_keeping_secrets
    monkeypatch.delattr(pp, "deserialize_properties")
    with pytest.raises(RuntimeError, match="not the pinned 1.7.0"):
        common.keep_secret_marks()


def test_leaves_know_which_values_are_secret():
    props = common.plain(
        common.deserialize_keeping_secrets(
            {"env": {"A": "1"}, "sec": secret({"B": "2"}), "u": UNKNOWN_STRING}
        )
    )
    found = {leaf.dotted: (leaf.value, leaf.secret) for leaf in common.leaves(props)}
    assert found == {"env.A": ("1", False), "sec.B": ("2", True), "u": (common.UNKNOWN, False)}


def test_plain_turns_unknowns_into_a_marker_instead_of_raising():
    from pulumi_policy.proxy import unknown_checking_proxy

    proxied = unknown_checking_proxy({"a": UNKNOWN_STRING, "b": ["x", UNKNOWN_STRING]})
    assert common.plain(proxied) == {"a": common.UNKNOWN, "b": ["x", common.UNKNOWN]}


@pytest.mark.parametrize(
    ("endpoint", "host", "port"),
    [
        ("127.77.12.1:5432", "127.77.12.1", 5432),
        ("[::]:5432", "::", 5432),
        ("::", "::", None),
        ("10.0.0.1", "10.0.0.1", None),
    ],
)
def test_host_and_port_of_an_endpoint(endpoint, host, port):
    assert common.host_of(endpoint) == host
    assert common.port_of(endpoint) == port


def test_context_places_a_stack_in_the_fleet():
    ctx = common.context_for(urn("replicas-eu", common.HOST_SCRIPT, "fra-0-server"))
    assert (ctx.layer, ctx.group_name, ctx.zone) == ("replicas", "eu", "EU")
    assert ctx.group_hosts == {"127.77.12.1": "fra", "127.77.20.1": "lhr", "127.77.2.1": "arn"}
    assert ctx.region_of_address("127.77.17.1") == "iad"
    assert ctx.region_of_address("127.78.17.1") is None  # outside the fleet's range
    assert ctx.describe_region("cdg") == "cdg (zone EU, group eu2)"


@pytest.mark.parametrize(
    ("stack", "reason"),
    [
        ("replicas", "not named <layer>-<group>"),
        ("caches-eu", "not named <layer>-<group>"),
        ("replicas-ap", "group 'ap' is not in"),
    ],
)
def test_context_refuses_a_stack_it_cannot_place(stack, reason):
    with pytest.raises(common.ContextError, match=reason):
        common.context_for(urn(stack, common.STACK, f"dbfleet-{stack}"))


def test_context_reports_an_invalid_fleet_file(tmp_path, monkeypatch):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("groups: {eu: {zone: EU, primary: iad, regions: {fra: {}}}}\n")
    monkeypatch.setenv("DBFLEET_SPEC", str(bad))
    with pytest.raises(common.ContextError, match="is invalid: groups.eu.primary"):
        common.context_for(urn("replicas-eu", common.STACK, "dbfleet-replicas-eu"))


def test_values_known_only_after_apply_are_not_judged():
    """`dbfleet preview` previews a stack against planned upstream outputs, where what is
    not known yet reads `(known after apply)` (e.g. the port of a node not created yet)."""
    from dbfleet.ops.changes import UNKNOWN as PLANNED

    assert common.PLANNED_UNKNOWN == PLANNED
    proxy = host_scripts("proxies-eu")["fra-haproxy"]
    planned = with_env(
        proxy,
        READ_BACKUPS=f"127.77.20.1:{PLANNED} 127.77.2.1:5432",
        READ_LOCAL=f"127.77.12.1:{PLANNED}",
        WRITE_BACKEND=PLANNED,
        READ_PORT=UNKNOWN_STRING,
    )
    node = with_env(
        host_scripts("replicas-eu")["lhr-0-server"], PG_HOST=UNKNOWN_STRING, PG_PORT=PLANNED
    )
    for stack, changed in (("proxies-eu", planned), ("replicas-eu", node)):
        resources = [changed if r.name == changed.name else r for r in program_resources(stack)]
        found = [v for p in ALL_POLICIES for v in run_policy(p, stack, resources)]
        assert found == [], messages(found)
    # ...while a known part next to an unknown one is still judged.
    abroad = with_env(proxy, READ_BACKUPS=f"127.77.17.1:{PLANNED}")
    assert "read backup 127.77.17.1 is region iad" in messages(
        run_resource_policy(residency.residency, "proxies-eu", abroad)
    )
