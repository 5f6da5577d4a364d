"""Engine events → changes (dbfleet.ops.changes), and what the reports make of them (dbfleet.ops.report)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pulumi.automation import events

from dbfleet.ops import changes, report
from dbfleet.ops.changes import (
    SECRET,
    SECRET_SIG,
    SIG_KEY,
    UNKNOWN,
    UNKNOWN_SENTINEL,
    ChangeCollector,
)
from dbfleet.ops.results import StackResult
from tests.unit.engine_events import (
    PASSWORD,
    SECRET_VALUE,
    diag,
    env,
    policy,
    pre,
    stack_outputs,
    urn,
)


def feed(*evs: events.EngineEvent) -> ChangeCollector:
    c = ChangeCollector()
    for e in evs:
        c(e)
    return c


# -- masking and diffs ----------------------------------------------------------------------------
def test_mask_hides_secrets_and_names_unknowns() -> None:
    value = {"a": SECRET_VALUE, "b": [1.0, f"127.0.0.1:{UNKNOWN_SENTINEL}"], "c": {"d": "x"}}
    assert changes.mask(value) == {"a": SECRET, "b": [1, f"127.0.0.1:{UNKNOWN}"], "c": {"d": "x"}}


def test_diff_values_reports_leaf_paths() -> None:
    old = {"environment": {"A": "1", "B": "2", "GONE": "x"}, "list": [1, 2], "same": 3}
    new = {"environment": {"A": "1", "B": "3", "NEW": "y"}, "list": [1, 2, 3], "same": 3}
    got = {
        (c.path, c.kind, json.dumps(c.old), json.dumps(c.new))
        for c in changes.diff_values(old, new)
    }
    assert got == {
        ("environment.B", "update", '"2"', '"3"'),
        ("environment.GONE", "delete", '"x"', "null"),
        ("environment.NEW", "add", "null", '"y"'),
        ("list", "update", "[1, 2]", "[1, 2, 3]"),
    }


def test_collector_update_create_replace_delete_and_drift() -> None:
    s = "replicas-eu"
    fra, ams, lhr, old, arn = (
        urn(s, n)
        for n in ("fra-0-server", "ams-0-server", "lhr-0-server", "old-0-server", "arn-0-server")
    )
    c = feed(
        pre("same", urn(s, "dbfleet-replicas-eu", changes.STACK_TYPE), type_=changes.STACK_TYPE),
        pre(
            "read",
            urn(s, "networks-eu", "pulumi:pulumi:StackReference"),
            type_="pulumi:pulumi:StackReference",
        ),
        pre("update", fra, old=env(REPLICA_SLOTS="a"), new=env(REPLICA_SLOTS="a b")),
        pre("create", ams, new=env(PG_HOST="127.0.0.1")),
        pre(
            "create-replacement",
            lhr,
            old=env(NODE_DIR="/a"),
            new=env(NODE_DIR="/b"),
            keys=["environment"],
        ),
        pre("replace", lhr, old=env(NODE_DIR="/a"), new=env(NODE_DIR="/b"), keys=["environment"]),
        pre("delete-replaced", lhr, old=env(NODE_DIR="/a"), new=env(NODE_DIR="/b")),
        pre("delete", old, old=env(NODE_DIR="/o")),
        pre("update", arn, old=env(X="1"), new=env(X="1")),
    )
    by_name = {r.name: r for r in c.resources}
    assert set(by_name) == {
        "fra-0-server",
        "ams-0-server",
        "lhr-0-server",
        "old-0-server",
        "arn-0-server",
    }
    assert [r.op for r in c.resources][:2] == ["delete", "replace"]  # the dangerous ones first
    assert by_name["lhr-0-server"].op == "replace" and by_name["lhr-0-server"].replace_keys == [
        "environment"
    ]
    assert [(d.path, d.old, d.new) for d in by_name["fra-0-server"].diffs] == [
        ("environment.REPLICA_SLOTS", "a", "a b")
    ]
    assert by_name["arn-0-server"].drift and not by_name["fra-0-server"].drift
    assert ("environment.PG_HOST", "add") in {
        (d.path, d.kind) for d in by_name["ams-0-server"].diffs
    }
    assert by_name["ams-0-server"].detail == "HostScript pg_replica.sh"
    assert c.counts() == {"create": 1, "update": 2, "replace": 1, "delete": 1}
    # secrets show only as the marker, the provider blob not at all
    text = json.dumps([r.to_json() for r in c.resources])
    assert "ciphertext" not in text and "__provider" not in text
    assert SECRET in text


def test_a_created_component_has_no_empty_property_line() -> None:
    comp = "dbfleet:postgres:PostgresNode"
    c = feed(pre("create", urn("replicas-eu", "ams-0", comp), new={}, type_=comp))
    (r,) = c.resources
    assert (r.op, r.diffs) == ("create", [])
    assert changes.leaves({"a": {}, "b": {"c": 1}}) == [("a", {}), ("b.c", 1)]


def test_collector_output_changes_ignore_values_only_known_after_apply() -> None:
    old = {"nodes": {"fra": {"port": 5432}}, "primary_region": "fra", "uris": SECRET_VALUE}
    new = {
        "nodes": {"fra": {"port": UNKNOWN_SENTINEL}, "ams": {"port": UNKNOWN_SENTINEL}},
        "primary_region": "fra",
        "uris": SECRET_VALUE,
    }
    c = feed(stack_outputs("replicas-eu", old, new))
    got = [(x.path, x.kind) for x in c.output_changes()]
    assert got == [("nodes.ams", "add")]  # fra's port stays; a secret's marker never differs
    assert c.planned_outputs == new


def test_collector_keeps_errors_and_policy_violations() -> None:
    c = feed(
        diag("debug noise", severity="debug"),
        diag("port 5432 is in use", u=urn("replicas-us", "iad-0-server")),
        policy(
            "no-public-listeners", "mandatory", "binds 0.0.0.0", urn("proxies-us", "iad-haproxy")
        ),
    )
    assert c.errors == ["iad-0-server: port 5432 is in use"]
    assert [(p.policy, p.level, p.resource) for p in c.policy] == [
        ("no-public-listeners", "mandatory", "iad-haproxy")
    ]


def test_merge_planned_keeps_deployed_values_for_unknowns_and_secrets() -> None:
    deployed = {
        "nodes": {"fra": {"port": 5432, "role": "primary"}},
        "token": {SIG_KEY: SECRET_SIG, "ciphertext": "ENC"},
    }
    planned = {
        "nodes": {
            "fra": {"port": UNKNOWN_SENTINEL, "role": UNKNOWN_SENTINEL},
            "ams": {"port": UNKNOWN_SENTINEL},
        },
        "token": SECRET_VALUE,
        "new_secret": SECRET_VALUE,
    }
    merged = changes.merge_planned(deployed, planned)
    assert merged["nodes"]["fra"] == {"port": 5432, "role": "primary"}
    assert merged["nodes"]["ams"] == {
        "port": UNKNOWN
    }  # no sentinel: it would blank the whole reference
    assert merged["token"] == deployed["token"]  # still the encrypted value
    assert merged["new_secret"] == SECRET
    assert UNKNOWN_SENTINEL not in json.dumps(merged)


def test_outputs_differ() -> None:
    deployed = {"regions": {"fra": {"port": 5432}}}
    assert not changes.outputs_differ(deployed, {"regions": {"fra": {"port": UNKNOWN_SENTINEL}}})
    assert changes.outputs_differ(
        deployed, {"regions": {"fra": {"port": 5432}, "ams": {"port": 5432}}}
    )
    assert not changes.outputs_differ(deployed, None)


# -- reports ------------------------------------------------------------------------------------
def _result(
    stack: str, status: str, collector: ChangeCollector | None = None, **kw: Any
) -> StackResult:
    r = StackResult(stack, status, seconds=1.5, **kw)
    if collector is not None:
        r.resources = collector.resources
        r.changes = collector.counts()
        r.output_changes = collector.output_changes()
    return r


@pytest.fixture
def mixed() -> list[StackResult]:
    s = "replicas-eu"
    c = feed(
        pre(
            "update",
            urn(s, "fra-0-server"),
            old=env(REPLICA_SLOTS="a"),
            new=env(REPLICA_SLOTS="a b"),
        ),
        pre("create", urn(s, "ams-0-server"), new=env(PG_HOST="127.77.1.1")),
        pre(
            "replace",
            urn(s, "lhr-0-server"),
            old=env(NODE_DIR="/a"),
            new=env(NODE_DIR="/b"),
            keys=["environment"],
        ),
        pre("delete", urn(s, "old-0-server"), old=env(NODE_DIR="/o")),
        stack_outputs(s, {"nodes": {}}, {"nodes": {"ams": {"host": "127.77.1.1"}}}),
    )
    return [
        _result("accounts-eu", "no changes"),
        _result(
            "replicas-eu", "changes", c, note="previewed against the planned outputs of networks-eu"
        ),
        _result("proxies-eu", "failed", error=f"error: boom {PASSWORD}"),
    ]


def test_exit_code_errors_win_over_changes(mixed: list[StackResult]) -> None:
    assert report.exit_code(mixed, preview=True) == 1
    assert report.exit_code(mixed[:2], preview=True) == 2
    assert report.exit_code(mixed[:1], preview=True) == 0
    assert report.exit_code(mixed[:2], preview=False) == 0
    blocked = [_result("networks-eu", "blocked", error="accounts-eu is not deployed yet")]
    assert report.exit_code([*mixed[:2], *blocked], preview=True) == 1
    pending = [
        _result("replicas-ca", "pending", note="can be previewed once accounts-ca is applied")
    ]
    assert report.exit_code([mixed[0], *pending], preview=True) == 2


def test_table_lines_start_with_the_stack_name(mixed: list[StackResult]) -> None:
    lines = report.table(mixed).splitlines()
    assert lines[0].split() == ["stack", "status", "time", "changes"]
    row = next(ln for ln in lines if ln.startswith("replicas-eu"))
    assert (
        "changes" in row
        and "delete 1, replace 1, create 1, update 1" in row
        and "outputs nodes" in row
    )
    assert any(ln.strip() == "previewed against the planned outputs of networks-eu" for ln in lines)


def test_text_diff_shows_properties(mixed: list[StackResult]) -> None:
    text = report.text_diff(mixed)
    assert '~ environment.REPLICA_SLOTS: "a" => "a b"' in text
    assert (
        "+- lhr-0-server (HostScript pg_replica.sh) replace — replaced because environment changed"
        in text
    )
    assert "accounts-eu" not in text


def test_markdown_has_one_section_per_changing_stack_and_highlights_danger(
    mixed: list[StackResult],
) -> None:
    md = report.markdown(mixed)
    assert md.startswith(report.COMMENT_MARKER)
    sections = [ln for ln in md.splitlines() if ln.startswith("### ")]
    assert sections == ["### `replicas-eu` — changes", "### `proxies-eu` — failed"]
    caution = md[md.index("[!CAUTION]") : md.index("| stack |")]
    assert "**REPLACE** `lhr-0-server`" in caution and "**DELETE** `old-0-server`" in caution
    assert "`ams-0-server`" not in caution
    assert "| `replicas-eu` | changes | 1 | 1 | **1** | **1** | nodes |" in md
    assert "No changes: `accounts-eu`." in md
    assert SECRET in md and "ciphertext" not in md


def test_markdown_of_nothing_says_so() -> None:
    md = report.markdown([_result("accounts-eu", "no changes")])
    assert "**No changes.**" in md and "### " not in md


def test_scrub_removes_known_secret_values(mixed: list[StackResult]) -> None:
    md = report.scrub(report.markdown(mixed), [PASSWORD, "", "short"])
    assert PASSWORD not in md and "boom [secret]" in md
    doc = report.document(mixed, command="preview", code=1)
    text = report.scrub(report.dumps(doc), [PASSWORD])
    assert PASSWORD not in text


def test_json_document(mixed: list[StackResult]) -> None:
    doc = json.loads(report.dumps(report.document(mixed, command="preview", code=1)))
    assert doc["exit_code"] == 1
    assert doc["changed_stacks"] == ["replicas-eu"]
    assert doc["failed_stacks"] == ["proxies-eu"]
    assert doc["totals"] == {"create": 1, "update": 1, "replace": 1, "delete": 1}
    reps = next(s for s in doc["stacks"] if s["stack"] == "replicas-eu")
    assert (reps["group"], reps["layer"]) == ("eu", "replicas")
    assert {r["name"]: r["op"] for r in reps["resources"]}["lhr-0-server"] == "replace"
    assert reps["output_changes"][0]["path"] == "nodes.ams"


# -- switchovers and policy findings (what an operator must not miss) --------------------------
def _switching(stack: str = "replicas-eu", old: str = "fra", new: str = "lhr") -> StackResult:
    return StackResult(
        stack,
        "changes",
        changes={"update": 3},
        output_changes=[changes.PropertyChange("primary_region", "update", old, new)],
    )


def test_a_switchover_is_named_first_in_the_table_the_report_and_the_json() -> None:
    results = [StackResult("networks-eu", "no changes"), _switching()]
    table = report.table(results)
    assert table.splitlines()[0].startswith("SWITCHOVER eu: primary fra -> lhr")
    md = report.markdown(results)
    assert "**Switchover**" in md and "`fra` → `lhr`" in md
    assert md.index("Switchover") < md.index("| stack | result |")
    doc = report.document(results, command="preview", code=2)
    assert doc["switchovers"] == [{"group": "eu", "old": "fra", "new": "lhr"}]


def test_no_switchover_is_claimed_for_a_new_group_or_other_outputs() -> None:
    new_group = StackResult(
        "replicas-us",
        "changes",
        output_changes=[changes.PropertyChange("primary_region", "add", None, "iad")],
    )
    other = StackResult(
        "networks-eu",
        "changes",
        output_changes=[changes.PropertyChange("primary_region", "update", "a", "b")],
    )
    assert report.switchovers([new_group, other]) == []
    assert "SWITCHOVER" not in report.table([new_group, other])


def _violation(message: str, resource: str = "") -> changes.PolicyViolation:
    return changes.PolicyViolation("durability", "dbfleet", "advisory", message, resource)


def test_policy_findings_show_their_own_message_and_fix_once_per_stack() -> None:
    message = (
        "A group spans enough regions to survive the loss of one.\n"
        "group jp has 1 region(s) (nrt); at least 3 are required\n"
        "Remediation: add regions to groups.jp in the fleet file"
    )
    r = StackResult("replicas-jp", "no changes", policy=[_violation(message), _violation(message)])
    table = report.table([r])
    assert table.count("group jp has 1 region(s) (nrt); at least 3 are required") == 1
    assert "fix: add regions to groups.jp in the fleet file" in table
    assert "A group spans enough regions" not in table
    md = report.markdown([r])
    # a stack without changes still shows its findings
    assert "### `replicas-jp`" in md
    assert md.count("at least 3 are required") == 1 and "fix: add regions" in md


def test_a_finding_without_a_message_of_its_own_keeps_the_description() -> None:
    (f,) = report.findings(
        StackResult("accounts-eu", "no changes", policy=[_violation("Only this")])
    )
    assert f.what == "Only this" and f.fix == "" and f.resource == "accounts-eu"
