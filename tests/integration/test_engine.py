"""The toolchain itself: the pinned Pulumi CLI, its Python language host and the
HostScript provider, driven through the real engine on the file backend."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VERSION = next(
    line.split('"')[1]
    for line in (REPO / "scripts/versions.sh").read_text().splitlines()
    if line.startswith("PULUMI_VERSION=")
)

PROGRAM = """
import pulumi
from components.hostcmd import LOCAL, HostScript

root = HostScript(
    "probe",
    connection=LOCAL,
    script="account.sh",
    environment={"ACCOUNT_USER": pulumi.Config().require("user"), "DATA_ROOT": pulumi.Config().require("root")},
)
pulumi.export("summary", root.summary)
"""


@pytest.fixture
def tiny_project():
    base = Path(tempfile.mkdtemp(prefix="dbfleet-engine-", dir="/tmp"))
    base.chmod(0o755)
    project = base / "project"
    project.mkdir()
    (project / "Pulumi.yaml").write_text("name: enginecheck\nruntime: python\n")
    (project / "__main__.py").write_text(PROGRAM)
    (base / "state").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")}
    passphrase = base / "passphrase"
    passphrase.write_text("engine-check-" + os.urandom(8).hex())
    env.update(
        PULUMI_BACKEND_URL=f"file://{base / 'state'}",
        PULUMI_CONFIG_PASSPHRASE_FILE=str(passphrase),
        PULUMI_HOME=str(base / "home"),
        PULUMI_SKIP_UPDATE_CHECK="true",
        PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
        PYTHONPATH=str(REPO),
    )

    def pulumi(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            check=False,
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    yield pulumi, base
    shutil.rmtree(base, ignore_errors=True)


def test_pulumi_is_the_pinned_version():
    out = subprocess.run(
        ["pulumi", "version"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == f"v{VERSION}"
    pip = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pulumi, importlib.metadata as m; print(m.version('pulumi'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert pip == VERSION, "the Python SDK and the CLI must be the same version"
    for tool in (
        "pulumi-language-python",
        "pulumi-language-python-exec",
        "pulumi-resource-pulumi-python",
    ):
        assert shutil.which(tool), f"{tool} is not on PATH"


def test_up_noop_destroy_of_a_host_script(tiny_project):
    pulumi, base = tiny_project
    root = base / "made-by-pulumi"
    pulumi("stack", "init", "dev")
    pulumi("config", "set", "user", pwd.getpwuid(os.geteuid()).pw_name)
    pulumi("config", "set", "root", str(root))

    up = pulumi("up", "--yes", "--skip-preview")
    assert "+ 2 created" in up.stdout
    assert root.is_dir() and (root.stat().st_mode & 0o777) == 0o700

    again = pulumi("up", "--yes", "--skip-preview")
    assert "2 unchanged" in again.stdout
    pulumi("preview", "--expect-no-changes")

    down = pulumi("destroy", "--yes", "--skip-preview")
    assert "2 deleted" in down.stdout
    assert not root.exists()
