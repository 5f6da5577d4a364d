"""The operator commands through `dbfleet.ops.cli.main`, with the engine replaced by canned results."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from dbfleet.ops import commands as ops
from dbfleet.ops import rollout, status
from dbfleet.ops.changes import ResourceChange
from dbfleet.ops.cli import main
from dbfleet.ops.results import StackResult

ROOT = Path(__file__).resolve().parents[2]
from dbfleet.model.stackname import LAYERS


@pytest.fixture(autouse=True)
def default_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBFLEET_SPEC", str(ROOT / "stacks" / "fleet.yaml"))
    monkeypatch.setattr(ops, "_known_secrets", lambda fleet, groups: ["hunter2-password-value"])
    # The engine is faked here, and so is the Vault the real one would need.
    monkeypatch.setattr(ops, "vault_ready", lambda: None)
    monkeypatch.setattr(ops, "engine_ready", lambda: None)


class FakeRun:
    def __init__(self, statuses: dict[str, str] | None = None, **extra: Any) -> None:
        self.statuses = statuses or {}
        self.extra = extra
        self.calls: list[dict[str, Any]] = []

    def __call__(self, groups, action, *, layers=None, progress=None, options=None, printer=None):
        self.calls.append(
            {"groups": groups, "action": action, "layers": layers, "options": options}
        )
        chosen = [layer for layer in LAYERS if layers is None or layer in layers]
        if action == "destroy":
            chosen.reverse()
        out = {}
        for g in groups:
            out[g] = []
            for layer in chosen:
                name = f"{layer}-{g}"
                default = {"up": "unchanged", "destroy": "destroyed", "preview": "no changes"}[
                    action
                ]
                r = StackResult(name, self.statuses.get(name, default), 1.0)
                if r.status in ("changes", "applied"):
                    r.changes = {"update": 1}
                    r.resources = [
                        ResourceChange(
                            f"urn:pulumi:{name}::dbfleet::x::fra-0-server",
                            "fra-0-server",
                            "x",
                            "update",
                        )
                    ]
                if r.status == "failed":
                    r.error = "error: boom hunter2-password-value"
                out[g].append(r)
        return out


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("statuses", "code", "word"),
    [
        ({}, 0, "no changes"),
        ({"replicas-eu": "changes"}, 2, "changes pending"),
        ({"replicas-eu": "changes", "proxies-us": "failed"}, 1, "preview failed"),
        ({"replicas-us": "blocked"}, 1, "preview failed"),
        ({"replicas-us": "pending"}, 2, "changes pending"),
    ],
)
def test_preview_exit_codes(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    statuses: dict,
    code: int,
    word: str,
) -> None:
    monkeypatch.setattr(rollout, "run", FakeRun(statuses))
    got, out, err = run(capsys, "preview", "-q")
    assert got == code
    assert f"{word} (exit {code})" in err
    assert sum(1 for ln in out.splitlines() if ln.startswith(tuple(f"{la}-" for la in LAYERS))) == 8


def test_preview_writes_markdown_and_json_without_secrets(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(rollout, "run", FakeRun({"replicas-eu": "changes", "proxies-us": "failed"}))
    md, js = tmp_path / "r" / "report.md", tmp_path / "report.json"
    code, out, _ = run(capsys, "preview", "--diff", "--markdown", str(md), "--json", str(js), "-q")
    assert code == 1
    text = md.read_text()
    assert "### `replicas-eu` — changes" in text and "### `proxies-us` — failed" in text
    assert "hunter2-password-value" not in text + js.read_text() + out
    doc = json.loads(js.read_text())
    assert doc["exit_code"] == 1 and doc["changed_stacks"] == ["replicas-eu"]
    assert "replicas-eu:\n  ~ fra-0-server (x) update" in out  # --diff


def test_preview_json_to_stdout_prints_only_json(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rollout, "run", FakeRun({"replicas-eu": "changes"}))
    code, out, _ = run(capsys, "preview", "eu", "--json", "-")
    assert code == 2
    assert json.loads(out)["changed_stacks"] == ["replicas-eu"]


def test_preview_passes_the_policy_pack_when_there_is_one(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(rollout, "policy_pack_dir", lambda: tmp_path / "policies")
    _, _, err = run(capsys, "preview", "eu", "--layer", "replicas", "--layer", "proxies", "-q")
    assert fake.calls[-1]["options"].policy_packs == [str(tmp_path / "policies")]
    assert fake.calls[-1]["layers"] == ["replicas", "proxies"] and fake.calls[-1]["groups"] == [
        "eu"
    ]
    assert f"policies: {tmp_path / 'policies'}" in err
    run(capsys, "preview", "eu", "--no-policies", "-q")
    assert fake.calls[-1]["options"].policy_packs == []
    monkeypatch.setattr(rollout, "policy_pack_dir", lambda: None)
    _, _, err = run(capsys, "preview", "eu", "-q")
    assert fake.calls[-1]["options"].policy_packs == [] and "no policies/PulumiPolicy.yaml" in err


def test_preview_usage_errors_exit_1_not_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "preview", "--layer", "databases")[0] == 1
    assert run(capsys, "preview", "--frobnicate")[0] == 1
    assert run(capsys, "up", "--frobnicate")[0] == 2  # other commands keep argparse's code


def test_unknown_group_is_an_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    code, _, err = run(capsys, "up", "mars")
    assert code == 1 and "unknown group(s) mars" in err and fake.calls == []


def test_up_prints_the_table_and_fails_on_any_failed_stack(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        rollout,
        "run",
        FakeRun({"accounts-us": "applied", "replicas-eu": "failed", "proxies-eu": "not started"}),
    )
    code, out, _ = run(capsys, "up", "-q")
    assert code == 1
    rows = {ln.split()[0]: ln for ln in out.splitlines()[1:] if ln and not ln.startswith(" ")}
    assert "applied" in rows["accounts-us"] and "unchanged" in rows["networks-us"]
    assert "failed" in rows["replicas-eu"] and "not started" in rows["proxies-eu"]
    assert "error: boom [secret]" in out and "hunter2-password-value" not in out
    monkeypatch.setattr(rollout, "run", FakeRun())
    code, out, _ = run(capsys, "up", "eu", "--json")
    assert code == 0 and [s["status"] for s in json.loads(out)["stacks"]] == ["unchanged"] * 4


def test_destroy_needs_yes_without_a_terminal(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(ops, "_stack_groups", lambda: {"eu": ["replicas-eu"]})
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code, _, err = run(capsys, "destroy")
    assert code == 1 and "pass --yes" in err and fake.calls == []
    code, _, _ = run(capsys, "destroy", "--yes", "-q")
    assert code == 0 and fake.calls[-1]["action"] == "destroy"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("answer", "destroyed"), [("y\n", True), ("n\n", False), ("\n", False)])
def test_destroy_asks_on_a_terminal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    destroyed: bool,
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(
        ops, "_stack_groups", lambda: {"eu": ["replicas-eu", "proxies-eu"], "old": ["accounts-old"]}
    )
    monkeypatch.setattr(sys, "stdin", Tty(answer))
    code, _, err = run(capsys, "destroy", "eu", "-q")
    assert "This destroys replicas-eu, proxies-eu" in err
    assert (code == 0) == destroyed and bool(fake.calls) == destroyed


def test_destroy_can_remove_a_group_that_left_the_fleet_file(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(ops, "_stack_groups", lambda: {"old": ["accounts-old"]})
    code, _, _ = run(capsys, "destroy", "old", "--yes", "-q")
    assert code == 0 and fake.calls[-1]["groups"] == ["old"]


def test_status_exit_codes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    healthy = status.GroupStatus("eu", "fra")
    down = status.GroupStatus(
        "us", "iad", nodes=[status.NodeStatus("us", "ord", 0, "127.0.0.1", 5432, "replica")]
    )
    missing = status.GroupStatus(
        "eu", error="networks-eu, replicas-eu not deployed: run dbfleet up eu"
    )
    unknown = status.GroupStatus(
        "eu",
        "fra",
        nodes=[status.NodeStatus("eu", "fra", 0, "127.0.0.1", 5432, "primary", probed=False)],
        error="cannot read the group's superuser password from Vault: connection refused",
    )
    # Vault down: nothing is known to be down, the fleet cannot be read (1, not 3).
    for groups, code in (
        ([healthy], 0),
        ([healthy, down], 3),
        ([missing], 1),
        ([unknown], 1),
        ([down, unknown], 1),
    ):
        monkeypatch.setattr(status, "collect", lambda names, g=groups: g)
        got, out, _ = run(capsys, "status", "--json")
        assert got == code
        assert [g["group"] for g in json.loads(out)["groups"]] == [g.group for g in groups]


def test_endpoints(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        rollout,
        "many_outputs",
        lambda stacks: {
            s: {"read_endpoints": {"fra": "h:6432"}, "write_endpoints": {"fra": "h:6433"}}
            for s in stacks
        },
    )
    code, out, _ = run(capsys, "endpoints", "eu", "--json")
    assert code == 0 and json.loads(out) == {"eu": {"fra": {"read": "h:6432", "write": "h:6433"}}}
    monkeypatch.setattr(rollout, "many_outputs", lambda stacks: {s: None for s in stacks})
    code, _, err = run(capsys, "endpoints")
    assert code == 1 and "proxies-us is not deployed" in err


APP_URIS = {
    "lhr": {
        "read": "postgresql://app:Pa55%2Fword@127.77.20.1:6432/app",
        "write": "postgresql://app:Pa55%2Fword@127.77.20.1:6433/app",
    }
}


@pytest.fixture
def app_outputs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Canned outputs of proxies-eu (with its secret URIs) and replicas-eu; records reads."""
    asked: list[tuple[str, bool]] = []

    def stack_outputs(stack: str, *, show_secrets: bool = False) -> dict | None:
        asked.append((stack, show_secrets))
        if stack == "proxies-eu":
            return {"connection_uris": APP_URIS if show_secrets else "[secret]"}
        return {"primary_region": "lhr"} if stack == "replicas-eu" else None

    monkeypatch.setattr(rollout, "stack_outputs", stack_outputs)
    return asked


def test_endpoints_env_prints_an_apps_environment_with_passwords_masked(
    capsys: pytest.CaptureFixture[str], app_outputs: list[tuple[str, bool]]
) -> None:
    code, out, err = run(capsys, "endpoints", "--env", "lhr")
    assert code == 0 and err == "" and "Pa55" not in out
    assert out.splitlines() == [
        "DATABASE_URL=postgresql://app:****@127.77.20.1:6432/app",
        "DATABASE_WRITE_URL=postgresql://app:****@127.77.20.1:6433/app",
        "PRIMARY_REGION=lhr",  # the deployed primary (after a failover), not the file's fra
        "DBFLEET_REGION=lhr",
        "DBFLEET_GROUP=dbfleet/eu",
    ]
    code, out, _ = run(capsys, "endpoints", "--env", "lhr", "--json")
    assert code == 0 and json.loads(out)["DATABASE_URL"].startswith("postgresql://app:****@")


def test_endpoints_env_shows_secrets_only_when_asked_and_not_to_a_terminal(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    app_outputs: list[tuple[str, bool]],
) -> None:
    code, out, err = run(capsys, "endpoints", "--env", "lhr", "--json", "--show-secrets")
    assert code == 0 and json.loads(out)["DATABASE_WRITE_URL"] == APP_URIS["lhr"]["write"]
    assert "keep it 0600" in err and "Pa55" not in err
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    app_outputs.clear()
    code, out, err = run(capsys, "endpoints", "--env", "lhr", "--show-secrets")
    assert code == 1 and out == "" and "refuses to print passwords to a terminal" in err
    assert app_outputs == []  # refused before the secrets were even read


def test_endpoints_env_refuses_what_it_cannot_answer(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    app_outputs: list[tuple[str, bool]],
) -> None:
    code, _, err = run(capsys, "endpoints", "--env", "xyz")
    assert code == 1 and "no region 'xyz'" in err and "fra" in err
    code, _, err = run(capsys, "endpoints", "--env", "iad")
    assert code == 1 and "proxies-us is not deployed (run: dbfleet up us)" in err
    code, _, err = run(capsys, "endpoints", "--env", "lhr", "eu")
    assert code == 1 and "--env REGION takes no GROUP" in err
    code, _, err = run(capsys, "endpoints", "--show-secrets")
    assert code == 1 and "--show-secrets goes with --env REGION" in err


def test_dotenv_quotes_only_what_needs_it() -> None:
    assert ops.dotenv({"A": "postgresql://u:****@h:1/db", "B": "two words", "C": "~x"}) == (
        "A=postgresql://u:****@h:1/db\nB='two words'\nC='~x'"
    )


def test_graph_prints_dot_or_writes_a_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(capsys, "graph", "eu")
    assert code == 0 and out.startswith("digraph dbfleet") and "cluster_us" not in out
    target = tmp_path / "fleet.dot"
    code, out, _ = run(capsys, "graph", "--out", str(target))
    assert code == 0 and target.read_text().startswith("digraph") and str(target) in out
    code, _, err = run(capsys, "graph", "--out", str(tmp_path / "fleet.txt"))
    assert code == 1 and "cannot tell the format" in err


def test_an_unexpected_failure_is_one_line_not_a_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("the backend at file:///nowhere cannot be read")

    monkeypatch.setattr(rollout, "run", broken)
    code, _, err = run(capsys, "up", "eu")
    assert code == 1
    assert err.strip() == "dbfleet up: RuntimeError: the backend at file:///nowhere cannot be read"


def test_destroy_works_from_the_state_when_the_fleet_file_is_broken(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "fleet.yaml"
    broken.write_text("groups: [oops]\n")
    monkeypatch.setenv("DBFLEET_SPEC", str(broken))
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    monkeypatch.setattr(
        ops, "_stack_groups", lambda: {"eu": ["replicas-eu"], "us": ["accounts-us"]}
    )
    code, _, err = run(capsys, "destroy", "--yes", "-q")
    assert code == 0 and fake.calls[-1]["groups"] == ["eu", "us"]
    assert "the fleet file is invalid" in err
    code, _, err = run(capsys, "destroy", "mars", "--yes", "-q")
    assert code == 1 and "no stacks deployed for group(s) mars" in err


@pytest.mark.parametrize("command", ["preview", "up"])
def test_without_a_vault_token_nothing_runs_and_one_line_says_why(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    empty_backend: Path,
    command: str,
) -> None:
    monkeypatch.undo()
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{empty_backend}")
    monkeypatch.setattr(ops, "engine_ready", lambda: None)
    monkeypatch.setenv("DBFLEET_SPEC", str(ROOT / "stacks" / "fleet.yaml"))
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
    monkeypatch.delenv("VAULT_TOKEN", raising=False)
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    code, out, err = run(capsys, command, "-q")
    assert code == 1 and out == ""
    (line,) = err.splitlines()
    assert line.startswith("dbfleet: VAULT_TOKEN is not set (VAULT_ADDR=http://127.0.0.1:1)")
    assert fake.calls == []


@pytest.mark.parametrize("command", ["up", "preview", "status", "destroy", "endpoints", "prove"])
def test_outside_a_set_up_shell_one_line_says_what_to_run(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    command: str,
) -> None:
    monkeypatch.undo()
    monkeypatch.setenv("DBFLEET_SPEC", str(ROOT / "stacks" / "fleet.yaml"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi here
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path}")
    fake = FakeRun()
    monkeypatch.setattr(rollout, "run", fake)
    code, out, err = run(capsys, command, *(["--yes"] if command == "destroy" else []))
    (line,) = err.splitlines()
    assert code == 1 and out == "" and fake.calls == []
    assert line.startswith("dbfleet: the pulumi CLI is not on PATH: run `source scripts/env.sh`")


def test_without_a_backend_it_does_not_ask_for_a_pulumi_cloud_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.undo()  # the real check, not the autouse stand-in
    (tmp_path / "pulumi").write_text("#!/bin/sh\n")
    (tmp_path / "pulumi").chmod(0o755)
    with pytest.raises(ops.Abort, match="PULUMI_BACKEND_URL is not set .*source scripts/env.sh"):
        ops.engine_ready({"PATH": str(tmp_path)})
    ops.engine_ready({"PATH": str(tmp_path), "PULUMI_BACKEND_URL": "file:///x"})  # ready
