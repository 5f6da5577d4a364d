"""dbfleet.ops.workspace: one workspace per process, stacks without select/read-back,
and new stacks that share the clone's passphrase salt."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from pulumi import automation as auto

from dbfleet.ops import backend, workspace


class RecordingWorkspace:
    """Stands in for auto.LocalWorkspace: records `stack init` and can refuse it."""

    def __init__(self, project: Path, refuse: str | None = None) -> None:
        self.project = project
        self.refuse = refuse
        self.created: list[tuple[str, str | None]] = []

    def create_stack(self, stack: str) -> None:
        path = backend.stack_config_file(self.project, stack)
        salt = workspace._salt_of(path)
        if self.refuse and salt is not None:
            raise auto.CommandError(
                auto.CommandResult(stdout="", stderr=f"error: {self.refuse}", code=255)
            )
        self.created.append((stack, salt))
        if salt is None:  # what `stack init` does: a salt of the stack's own
            text = path.read_text() if path.exists() else ""
            path.write_text(text + f"encryptionsalt: own-{stack}\n")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "Pulumi.yaml").write_text(
        "name: dbfleet\nruntime: python\nstackConfigDir: stacks\n"
    )
    (tmp_path / "stacks").mkdir()
    return tmp_path


def config(project: Path, stack: str, salt: str | None = None) -> Path:
    path = project / "stacks" / f"Pulumi.{stack}.yaml"
    path.write_text("config: {}\n" + (f"encryptionsalt: {salt}\n" if salt else ""))
    return path


@pytest.fixture
def ws(project: Path, monkeypatch: pytest.MonkeyPatch) -> RecordingWorkspace:
    rec = RecordingWorkspace(project)
    monkeypatch.setattr(workspace, "workspace", lambda p: rec)
    return rec


def test_config_file_follows_stack_config_dir(project: Path, tmp_path: Path) -> None:
    assert backend.stack_config_file(project, "accounts-us") == (
        project / "stacks" / "Pulumi.accounts-us.yaml"
    )
    (tmp_path / "Pulumi.yaml").write_text("name: x\nruntime: python\n")
    assert backend.stack_config_file(tmp_path, "a-b") == tmp_path / "./Pulumi.a-b.yaml"


def test_first_stack_gets_a_salt_of_its_own(project: Path, ws: RecordingWorkspace) -> None:
    config(project, "accounts-us")
    st = workspace.create(project, "accounts-us", [])
    assert ws.created == [("accounts-us", None)]
    assert isinstance(st, workspace.RolloutStack) and st.name == "accounts-us"


def test_new_stack_takes_its_groups_salt_before_stack_init(
    project: Path, ws: RecordingWorkspace
) -> None:
    config(project, "accounts-us", "salt-us")
    config(project, "networks-us", "salt-us")
    config(project, "accounts-eu", "salt-eu")
    path = config(project, "replicas-us")
    workspace.create(project, "replicas-us", ["accounts-us", "networks-us", "accounts-eu"])
    assert ws.created == [("replicas-us", "salt-us")]
    assert path.read_text() == "config: {}\nencryptionsalt: salt-us\n"


def test_a_new_group_takes_another_groups_salt(project: Path, ws: RecordingWorkspace) -> None:
    config(project, "accounts-eu", "salt-eu")
    config(project, "accounts-ap")
    workspace.create(project, "accounts-ap", ["accounts-eu"])
    assert ws.created == [("accounts-ap", "salt-eu")]


def test_only_stacks_that_exist_in_the_backend_lend_their_salt(
    project: Path, ws: RecordingWorkspace
) -> None:
    config(project, "accounts-us", "leftover-from-elsewhere")
    config(project, "networks-us")
    workspace.create(project, "networks-us", [])
    assert ws.created == [("networks-us", None)]


def test_a_salt_the_passphrase_cannot_open_falls_back_to_an_own_salt(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = RecordingWorkspace(project, refuse="incorrect passphrase")
    monkeypatch.setattr(workspace, "workspace", lambda p: rec)
    config(project, "accounts-us", "salt-of-another-passphrase")
    path = config(project, "networks-us")
    workspace.create(project, "networks-us", ["accounts-us"])
    assert rec.created == [("networks-us", None)]
    assert path.read_text() == "config: {}\nencryptionsalt: own-networks-us\n"


def test_any_other_init_failure_restores_the_file_and_is_raised(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = RecordingWorkspace(project, refuse="backend is not reachable")
    monkeypatch.setattr(workspace, "workspace", lambda p: rec)
    config(project, "accounts-us", "salt-us")
    path = project / "stacks" / "Pulumi.networks-us.yaml"
    with pytest.raises(auto.CommandError, match="not reachable"):
        workspace.create(project, "networks-us", ["accounts-us"])
    assert not path.exists()
    assert rec.created == []


def test_a_stack_file_with_a_salt_already_is_left_alone(
    project: Path, ws: RecordingWorkspace
) -> None:
    config(project, "accounts-us", "salt-us")
    path = config(project, "networks-us", "its-own")
    workspace.create(project, "networks-us", ["accounts-us"])
    assert ws.created == [("networks-us", "its-own")]
    assert path.read_text().count("encryptionsalt") == 1


def test_rollout_stack_is_not_selected_and_reads_nothing_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[list[str]] = []

    class Ws:
        def _run_pulumi_cmd_sync(self, args, on_output=None):
            calls.append(args)

    st = workspace.RolloutStack("proxies-us", Ws())  # type: ignore[arg-type]
    assert calls == []
    assert st.outputs() == {}
    assert st.info().resource_changes is None
    assert calls == []


def test_one_workspace_per_project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    made: list[str] = []

    class Ws:
        def __init__(self, work_dir: str) -> None:
            made.append(work_dir)

    workspace.forget_workspaces()
    monkeypatch.setattr(workspace.auto, "LocalWorkspace", Ws)
    try:
        a = workspace.workspace(tmp_path)
        assert workspace.workspace(tmp_path) is a
        workspace.workspace(tmp_path / "other")
        assert made == [str(tmp_path), str(tmp_path / "other")]
    finally:
        workspace.forget_workspaces()


# -- stack config files are per clone -------------------------------------------------------
def write_state(state: Path, stack: str, salt: str | None) -> None:
    """A file-backend checkpoint as the engine writes it after an update."""
    latest: dict = {"resources": []}
    if salt is not None:
        latest["secrets_providers"] = {"type": "passphrase", "state": {"salt": salt}}
    path = state / ".pulumi" / "stacks" / "dbfleet" / f"{stack}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 3, "checkpoint": {"stack": stack, "latest": latest}}))


def test_a_deployed_stack_without_its_config_file_gets_its_states_salt_back(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The files are not in git: a clone that lost them (they were untracked under it)
    # must not get a new salt per stack from the engine — that costs a key derivation
    # per StackReference read.
    state = tmp_path / "state"
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{state}")
    write_state(state, "accounts-us", "v1:salt-of-the-state")
    monkeypatch.setattr(workspace, "workspace", lambda p: object())
    workspace.existing(project, "accounts-us")
    path = project / "stacks" / "Pulumi.accounts-us.yaml"
    assert path.read_text() == "encryptionsalt: v1:salt-of-the-state\n"
    # A file with a salt is never rewritten.
    write_state(state, "accounts-us", "v1:another")
    assert workspace.restore_salt(project, "accounts-us") is None
    assert path.read_text() == "encryptionsalt: v1:salt-of-the-state\n"


def test_nothing_is_restored_without_a_salt_in_the_state(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{state}")
    write_state(state, "networks-us", None)  # `stack init` only, never updated
    assert workspace.restore_salt(project, "networks-us") is None
    assert workspace.restore_salt(project, "replicas-us") is None  # no such stack
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://bucket")
    assert workspace.restore_salt(project, "networks-us") is None
    assert not list((project / "stacks").glob("Pulumi.*.yaml"))


def test_no_stack_config_file_is_tracked_and_git_ignores_them() -> None:
    root = Path(__file__).resolve().parents[2]
    tracked = subprocess.run(
        ["git", "ls-files", "stacks"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    # only fleet files: the default fleet and the ssh lab's
    assert not [p for p in tracked if Path(p).name.startswith("Pulumi.")]
    assert "stacks/fleet.yaml" in tracked
    ignored = subprocess.run(
        ["git", "check-ignore", "stacks/Pulumi.accounts-zz.yaml", "stacks/fleet.yaml"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    assert ignored == ["stacks/Pulumi.accounts-zz.yaml"]
