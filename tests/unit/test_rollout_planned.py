"""dbfleet.ops.planned: the scratch project and state a chained preview runs in."""

from __future__ import annotations

from pathlib import Path

import pytest

from dbfleet.ops import planned
from dbfleet.ops.backend import file_backend_dir


@pytest.fixture
def project(tmp_path: Path) -> Path:
    p = tmp_path / "project"
    (p / "stacks").mkdir(parents=True)
    (p / "dbfleet").mkdir()
    (p / "Pulumi.yaml").write_text("name: dbfleet\nruntime: python\nstackConfigDir: stacks\n")
    (p / "__main__.py").write_text("print('program')\n")
    (p / "stacks" / "fleet.yaml").write_text("groups: {}\n")
    (p / "stacks" / "Pulumi.replicas-eu.yaml").write_text("encryptionsalt: v1:abc\n")
    return p


@pytest.fixture
def backend(tmp_path: Path) -> Path:
    b = tmp_path / "state"
    stacks = b / ".pulumi" / "stacks" / "dbfleet"
    stacks.mkdir(parents=True)
    (stacks / "replicas-eu.json").write_text('{"checkpoint": {}}')
    (b / ".pulumi" / "meta.yaml").write_text("version: 1\n")
    for skipped in ("history", "backups", "locks"):
        (b / ".pulumi" / skipped / "dbfleet").mkdir(parents=True)
        (b / ".pulumi" / skipped / "dbfleet" / "big").write_text("x" * 1000)
    return b


def test_scratch_links_the_code_and_copies_what_pulumi_writes(project: Path, backend: Path) -> None:
    with planned.PlannedWorkspace(project, backend) as pw:
        root = pw.project
        assert (root / "Pulumi.yaml").is_file() and not (root / "Pulumi.yaml").is_symlink()
        assert (root / "__main__.py").is_symlink() and (
            root / "dbfleet"
        ).resolve() == project / "dbfleet"
        config = root / "stacks" / "Pulumi.replicas-eu.yaml"
        assert config.is_file() and not config.is_symlink()
        assert (root / "stacks" / "fleet.yaml").is_symlink()
        # a scratch `stack init` writes here, never into the real project
        (root / "stacks" / "Pulumi.accounts-ca.yaml").write_text("encryptionsalt: new\n")
        config.write_text("changed\n")
        state = pw.backend / ".pulumi"
        assert (
            state / "stacks" / "dbfleet" / "replicas-eu.json"
        ).read_text() == '{"checkpoint": {}}'
        assert (state / "meta.yaml").is_file()
        assert not any((state / s).exists() for s in ("history", "backups", "locks"))
        assert pw.env == {"PULUMI_BACKEND_URL": f"file://{pw.backend}"}
        assert (pw._tmp.stat().st_mode & 0o077) == 0
        tmp = pw._tmp
    assert not tmp.exists()
    assert not (project / "stacks" / "Pulumi.accounts-ca.yaml").exists()
    assert (
        project / "stacks" / "Pulumi.replicas-eu.yaml"
    ).read_text() == "encryptionsalt: v1:abc\n"


def test_stack_files_beside_pulumi_yaml_are_copied(project: Path, backend: Path) -> None:
    (project / "Pulumi.yaml").write_text("name: dbfleet\nruntime: python\n")
    (project / "Pulumi.networks-eu.yaml").write_text("config: {}\n")
    with planned.PlannedWorkspace(project, backend) as pw:
        copied = pw.project / "Pulumi.networks-eu.yaml"
        assert copied.is_file() and not copied.is_symlink()
        assert (pw.project / "stacks").is_symlink()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///srv/dbfleet/state", Path("/srv/dbfleet/state")),
        ("file:///srv/state?no_checksum=true", Path("/srv/state")),
        ("s3://bucket/state", None),
        ("https://api.pulumi.com", None),
    ],
)
def test_file_backend_dir(url: str, expected: Path | None) -> None:
    assert file_backend_dir(url) == expected


def test_available_needs_a_file_backend_with_state(
    backend: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{backend}")
    assert planned.available()
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"file://{tmp_path / 'nothing'}")
    assert not planned.available()
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://bucket")
    assert not planned.available()
