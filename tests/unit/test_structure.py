"""The package's shape: which side imports what, the layer graph, and the result
types every display and report shares."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from dbfleet.model.stackname import LAYERS, UPSTREAM, StackNameError, downstream, parse_stack_name
from dbfleet.ops.results import ERROR_STATUSES, ExitCode, StackResult, Status


def loaded_after(module: str) -> set[str]:
    """The modules a fresh interpreter has loaded after importing `module`."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_operator_cli_starts_without_pulumi() -> None:
    # `dbfleet validate` and `--help` must stay fast: the Automation API is imported
    # only by the commands that drive the engine.
    loaded = loaded_after("dbfleet.ops.cli")
    assert not {m for m in loaded if m == "pulumi" or m.startswith("pulumi.")}


def test_the_pulumi_program_never_loads_the_operator_tool() -> None:
    loaded = loaded_after("dbfleet.program.main")
    assert "dbfleet.program.layers.replicas" in loaded
    assert not {m for m in loaded if m.startswith("dbfleet.ops")}


def test_the_model_needs_neither_pulumi_nor_either_side() -> None:
    loaded = loaded_after("dbfleet.model.topology")
    assert not {m for m in loaded if m.startswith(("pulumi", "dbfleet.ops", "dbfleet.program"))}


def test_progress_and_rollout_do_not_import_each_other() -> None:
    loaded = loaded_after("dbfleet.ops.progress")
    assert "dbfleet.ops.rollout" not in loaded


def test_every_layer_reads_only_earlier_layers() -> None:
    assert list(UPSTREAM) == list(LAYERS)
    for layer, ups in UPSTREAM.items():
        assert all(LAYERS.index(up) < LAYERS.index(layer) for up in ups)
    assert downstream("replicas") == ("proxies",)
    assert downstream("proxies") == ()


def test_a_stack_names_only_the_stacks_its_layer_reads() -> None:
    stack = parse_stack_name("replicas-eu")
    assert stack.upstream_stacks() == ("accounts-eu", "networks-eu")
    with pytest.raises(StackNameError, match="the replicas layer does not read the proxies layer"):
        stack.upstream("proxies")


def test_statuses_and_exit_codes_keep_their_documented_values() -> None:
    # Scripts and CI read these: the JSON documents and the README's exit codes.
    assert {s.value for s in Status} == {
        "applied", "unchanged", "destroyed", "absent", "changes", "no changes",
        "pending", "orphaned", "failed", "blocked", "not started",
    }  # fmt: skip
    assert ERROR_STATUSES == {"failed", "blocked"}
    assert [int(c) for c in (ExitCode.OK, ExitCode.ERROR, ExitCode.CHANGES, ExitCode.DEGRADED)] == [
        0, 1, 2, 3,
    ]  # fmt: skip
    doc = json.dumps(StackResult("networks-eu", Status.NO_CHANGES).to_json())
    assert '"status": "no changes"' in doc and f"{Status.FAILED}" == "failed"
