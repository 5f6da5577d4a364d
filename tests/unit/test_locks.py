"""Stale lock detection: only this host's locks whose engine process is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess

from dbfleet.ops import locks


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


def checkpoint(state, stack, attrs: str):
    d = state / ".pulumi" / "stacks" / "dbfleet"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{stack}.json").write_text("{}")
    sidecar = d / f"{stack}.json.attrs"
    sidecar.write_text(attrs)
    return sidecar


def test_a_torn_checkpoint_sidecar_left_by_a_killed_engine_is_removed(tmp_path):
    # A SIGKILL while the file backend rewrote it in place left it empty, and every
    # later load of the stack failed with "failed to load checkpoint: EOF".
    torn = checkpoint(tmp_path, "replicas-eu", "")
    cut = checkpoint(tmp_path, "proxies-eu", '{"user.cache_control":"","user.con')
    whole = checkpoint(tmp_path, "networks-eu", '{"user.content_type":"application/json"}\n')
    write_lock(tmp_path, "replicas-eu", dead_pid())
    msgs = locks.repair_torn_metadata("replicas-eu", f"file://{tmp_path}")
    assert not torn.exists() and len(msgs) == 1 and "replicas-eu" in msgs[0]
    assert locks.repair_torn_metadata("proxies-eu", f"file://{tmp_path}") and not cut.exists()
    assert locks.repair_torn_metadata("networks-eu", f"file://{tmp_path}") == []
    assert whole.exists()


def test_a_sidecar_of_a_stack_a_live_engine_holds_is_left_alone(tmp_path, monkeypatch):
    sidecar = checkpoint(tmp_path, "replicas-eu", "")
    lock = write_lock(tmp_path, "replicas-eu", 4242)
    # the engine holding the lock is alive: its sidecar may be half-written right now
    monkeypatch.setattr(locks, "_alive_engine", lambda pid: pid == 4242)
    assert locks.repair_torn_metadata("replicas-eu", f"file://{tmp_path}") == []
    assert sidecar.exists() and lock.exists()


def test_a_locked_stack_names_who_holds_it_and_warns_against_cancel(tmp_path, monkeypatch):
    write_lock(tmp_path, "replicas-eu", os.getpid())
    write_lock(tmp_path, "replicas-eu", dead_pid())  # a stale one is not a holder
    monkeypatch.setattr(locks, "_alive_engine", lambda pid: pid == os.getpid())
    message = locks.locked_message("replicas-eu", f"file://{tmp_path}")
    assert message.startswith(
        f"replicas-eu is locked by another run: pid {os.getpid()} by root on host "
        f"{socket.gethostname()}, since 2026-11-22T00:00:00Z, still running."
    )
    assert "do not `pulumi cancel`" in message


def test_another_hosts_lock_is_named_but_not_judged(tmp_path):
    write_lock(tmp_path, "replicas-eu", 4242, hostname="ops-laptop")
    (holder,) = locks.live_holders("replicas-eu", f"file://{tmp_path}")
    assert (
        holder
        == "pid 4242 by root on host ops-laptop, since 2026-11-22T00:00:00Z, on another host, not checked"
    )


def test_every_stacks_torn_metadata_is_repaired_before_anything_lists_them(tmp_path):
    stacks = tmp_path / ".pulumi" / "stacks" / "dbfleet"
    stacks.mkdir(parents=True)
    (stacks / "replicas-eu.json").write_text("{}")
    (stacks / "replicas-eu.json.attrs").write_text("")  # torn by a killed engine
    (stacks / "proxies-eu.json").write_text("{}")
    (stacks / "proxies-eu.json.attrs").write_text('{"md5": "x"}')  # whole
    done = locks.repair_every_stack(f"file://{tmp_path}")
    assert list(done) == ["replicas-eu"] and "torn" in done["replicas-eu"][0]
    assert not (stacks / "replicas-eu.json.attrs").exists()
    assert (stacks / "proxies-eu.json.attrs").exists()
