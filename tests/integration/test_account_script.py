"""account.sh run for real (as root: useradd, usermod, userdel) for two fleets with
the same group name: a fleet removes or takes over only the user and data root
its own name marks; older markers naming no fleet stay removable by their fleet."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from components.hostcmd import SCRIPTS_DIR

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="useradd/userdel need root")

GROUP = "eu"


@dataclass
class Host:
    base: Path
    users: list[str]

    def run(
        self, action: str, user: str, root: Path, fleet: str | None
    ) -> subprocess.CompletedProcess[str]:
        """account.sh ACTION as the provider runs it: configuration in the environment."""
        if user not in self.users:
            self.users.append(user)
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "ACCOUNT_USER": user,
            "DATA_ROOT": str(root),
        }
        if fleet is not None:
            env["FLEET_NAME"] = fleet
        return subprocess.run(
            ["bash", str(SCRIPTS_DIR / "account.sh"), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, action: str, user: str, root: Path, fleet: str | None) -> str:
        proc = self.run(action, user, root, fleet)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def refused(self, action: str, user: str, root: Path, fleet: str | None) -> str:
        proc = self.run(action, user, root, fleet)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        assert proc.stdout == ""
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        return lines[0]


def gecos(user: str) -> str:
    return pwd.getpwnam(user).pw_gecos


def exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


@pytest.fixture
def host() -> Iterator[Host]:
    base = Path(tempfile.mkdtemp(prefix="dbfleet-account-", dir="/tmp"))
    base.chmod(0o755)  # the accounts must reach their data roots
    h = Host(base, [])
    yield h
    # Clean up by the names this test created, and nothing else.
    for user in h.users:
        if exists(user):
            subprocess.run(["userdel", "--", user], check=False, capture_output=True)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def fleets() -> tuple[str, str]:
    tag = os.urandom(3).hex()
    return f"hsa{tag}", f"hsb{tag}"


def test_fleet_b_cannot_remove_or_take_over_fleet_a_account(host, fleets):
    a, b = fleets
    user, root = f"{a}-{GROUP}", host.base / f"{a}-{GROUP}"
    host.ok("create", user, root, a)
    assert gecos(user) == f"dbfleet managed fleet={a}"
    assert (root / ".dbfleet-root").read_text() == f"dbfleet managed data root\nfleet={a}\n"

    # Fleet B's delete of the same names (a group named alike, a mixed-up
    # stack): one line naming both fleets, and everything stays.
    line = host.refused("delete", user, root, b)
    assert f"belongs to fleet {a}, not to fleet {b}; refusing to remove it" in line
    assert exists(user) and root.is_dir()
    # Nor may it take them over.
    assert "refusing to take over" in host.refused("create", user, root, b)
    # Its own user, with A's data root: still refused, and its user is not made.
    line = host.refused("delete", f"{b}-{GROUP}", root, b)
    assert f"DATA_ROOT={root} belongs to fleet {a}" in line
    assert root.is_dir()
    # A resource deployed before FLEET_NAME existed cannot remove it either.
    assert "belongs to fleet" in host.refused("delete", user, root, None)

    # Fleet A removes what it made.
    assert "user removed" in host.ok("delete", user, root, a)
    assert not exists(user) and not root.exists()


def test_fleet_b_cannot_remove_a_node_directory_of_fleet_a_in_its_root(host, fleets):
    a, b = fleets
    user, root = f"{b}-{GROUP}", host.base / f"{b}-{GROUP}"
    host.ok("create", user, root, b)
    node = root / "fra-0"
    node.mkdir()
    (node / ".dbfleet").write_text(f"dbfleet managed postgresql node\nfleet={a}\n")
    proc = host.run("delete", user, root, b)
    assert proc.returncode == 1
    assert f"{node} (belongs to fleet {a}, not to fleet {b})" in proc.stderr
    assert node.is_dir() and exists(user)


def test_accounts_made_before_markers_named_fleets_stay_removable_by_their_fleet(host, fleets):
    a, b = fleets
    user, root = f"{a}-{GROUP}", host.base / f"{a}-{GROUP}"
    # What the previous account.sh made: no FLEET_NAME, a marker naming no fleet.
    host.ok("create", user, root, None)
    assert gecos(user) == "dbfleet managed"
    assert (root / ".dbfleet-root").read_text() == "dbfleet managed data root\n"

    # Another fleet cannot claim it: the name is not one it gives.
    line = host.refused("delete", user, root, b)
    assert f"user {user} has a marker naming no fleet" in line
    assert exists(user) and root.is_dir()

    # The first update with FLEET_NAME re-marks both for their fleet ...
    out = host.ok("update", user, root, a)
    assert "user marked" in out and "data root marked" in out
    assert gecos(user) == f"dbfleet managed fleet={a}"
    assert (root / ".dbfleet-root").read_text().endswith(f"fleet={a}\n")
    assert "no changes" in host.ok("update", user, root, a)
    # ... and after it only that fleet removes them.
    assert "belongs to fleet" in host.refused("delete", user, root, b)
    host.ok("delete", user, root, a)
    assert not exists(user) and not root.exists()


def test_old_state_deletes_an_old_account_as_before(host, fleets):
    a, _ = fleets
    user, root = f"{a}-{GROUP}", host.base / f"{a}-{GROUP}"
    host.ok("create", user, root, None)
    # A destroy run with the state an older dbfleet wrote (no FLEET_NAME).
    assert "user removed" in host.ok("delete", user, root, None)
    assert not exists(user) and not root.exists()


@pytest.mark.parametrize(
    ("script", "var"), [("patroni.sh", "NODE_DIR"), ("haproxy.sh", "PROXY_DIR")]
)
def test_node_and_proxy_deletes_refuse_another_fleets_directory(host, fleets, script, var):
    a, b = fleets
    user, root = f"{b}-{GROUP}", host.base / f"{b}-{GROUP}"
    host.ok("create", user, root, b)
    target = root / "fra-0"
    target.mkdir()
    (target / ".dbfleet").write_text(f"dbfleet managed thing\nfleet={a}\n")
    shutil.chown(target, user, user)  # as the scripts make it: the account's
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "RUN_AS": user, var: str(target)}
    proc = subprocess.run(
        ["bash", str(SCRIPTS_DIR / script), "delete"],
        env={**env, "FLEET_NAME": b},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith(
        f"{target} belongs to fleet {a}, not to fleet {b}; refusing to delete it"
    )
    assert target.is_dir()
    # Its own fleet deletes it.
    subprocess.run(
        ["bash", str(SCRIPTS_DIR / script), "delete"],
        env={**env, "FLEET_NAME": a},
        capture_output=True,
        check=True,
        timeout=120,
    )
    assert not target.exists()
