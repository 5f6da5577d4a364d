"""What isolates one throw-away dbfleet environment from the user's fleet and from every
other one: its own directory under /tmp with a copy of the Pulumi project, a file
backend, a passphrase and a PULUMI_HOME, and an environment that points dbfleet and
Pulumi there and drops whatever PULUMI_*, VAULT_* and DBFLEET_* the caller had set.

Shared by the benchmarks (bench.fleetenv.FleetEnv) and the integration tests
(tests/integration/conftest.py `make_fleet_env`), which add their own fleet name,
loopback range and Vault. Standard library only, so importing it costs nothing.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

# What a Pulumi project directory needs: the program is dbfleet, imported from PYTHONPATH.
PROJECT_FILES = ("Pulumi.yaml", "__main__.py")
# Variables of the caller's environment that would reach its own fleet, state or Vault.
CALLER_PREFIXES = ("PULUMI_", "VAULT_", "DBFLEET_")


@dataclass(frozen=True)
class Sandbox:
    root: Path
    project: Path  # the Pulumi project copy, with an empty stacks/
    home: Path  # DBFLEET_HOME: the file backend's state/, the passphrase, PULUMI_HOME
    passphrase: Path
    spec: Path  # where the fleet file goes (the caller writes it)

    def env(self, **extra: str) -> dict[str, str]:
        """The caller's environment without its PULUMI_*/VAULT_*/DBFLEET_* variables,
        pointed at this sandbox, plus `extra`."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(CALLER_PREFIXES)}
        env.update(
            DBFLEET_HOME=str(self.home),
            DBFLEET_PROJECT_DIR=str(self.project),
            DBFLEET_SPEC=str(self.spec),
            PULUMI_BACKEND_URL=f"file://{self.home / 'state'}",
            PULUMI_CONFIG_PASSPHRASE_FILE=str(self.passphrase),
            PULUMI_HOME=str(self.home / "pulumi-home"),
            PULUMI_SKIP_UPDATE_CHECK="true",
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK="true",
        )
        env.update(extra)
        return env


def make_sandbox(prefix: str, code: Path) -> Sandbox:
    """A new sandbox under /tmp whose project is copied from the checkout `code`."""
    # Not under pytest's tmp dir or another 0700 one: the group's OS user must be able
    # to reach its data root under DBFLEET_HOME.
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    root.chmod(0o755)
    project = root / "project"
    (project / "stacks").mkdir(parents=True)
    for f in PROJECT_FILES:
        shutil.copy(Path(code) / f, project / f)
    home = root / "home"
    (home / "state").mkdir(parents=True)
    home.chmod(0o755)
    passphrase = home / "passphrase"
    passphrase.write_text(os.urandom(24).hex())
    passphrase.chmod(0o600)
    return Sandbox(root, project, home, passphrase, root / "fleet.yaml")
