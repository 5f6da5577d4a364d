"""Stale lock detection: only this host's locks whose engine process is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from dbfleet import locks


def write_lock(state, stack, pid, hostname=None):
    d = state / ".pulumi" / "locks" / "organization" / "dbfleet" / stack
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"lock-{pid}.json"
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "username": "root",
                "hostname": hostname or socket.gethostname(),
                "timestamp": "2026-11-22T00:00:00Z",
            }
        )
    )
    return path


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_lock_of_a_dead_process_on_this_host_is_removed(tmp_path):
    path = write_lock(tmp_path, "replicas-eu", dead_pid())
    msgs = locks.clear_stale_locks("replicas-eu", f"file://{tmp_path}")
    assert not path.exists()
    assert len(msgs) == 1 and "stale lock" in msgs[0] and "replicas-eu" in msgs[0]


def test_a_lock_of_another_host_is_kept(tmp_path):
    path = write_lock(tmp_path, "replicas-eu", dead_pid(), hostname="elsewhere")
    assert locks.clear_stale_locks("replicas-eu", f"file://{tmp_path}") == []
    assert path.exists()


def test_a_lock_held_by_a_live_pulumi_is_kept(tmp_path, monkeypatch):
    path = write_lock(tmp_path, "replicas-eu", os.getpid())
    monkeypatch.setattr(locks, "_alive_engine", lambda pid: pid == os.getpid())
    assert locks.clear_stale_locks("replicas-eu", f"file://{tmp_path}") == []
    assert path.exists()


def test_a_live_pid_that_is_not_pulumi_does_not_hold_the_lock(tmp_path):
    # This test process is python, not pulumi: its pid cannot hold an engine lock.
    path = write_lock(tmp_path, "replicas-eu", os.getpid())
    assert locks.clear_stale_locks("replicas-eu", f"file://{tmp_path}")
    assert not path.exists()


def test_other_stacks_and_other_backends_are_untouched(tmp_path):
    other = write_lock(tmp_path, "replicas-us", dead_pid())
    assert locks.clear_stale_locks("replicas-eu", f"file://{tmp_path}") == []
    assert other.exists()
    assert locks.clear_stale_locks("replicas-us", "https://api.example") == []
