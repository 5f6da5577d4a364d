"""free_lab_network: a /24 another process has chosen is never handed out again, even
before its lab is up (parallel test workers), and one no interface uses is."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from dbfleet.ops import lab

HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def claims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setattr(lab, "LAB_CLAIM_DIR", tmp_path / "claims")
    held: dict[str, int] = {}
    monkeypatch.setattr(lab, "_claimed", held)
    # octets 5, then 6, then 7 are tried, in that order
    monkeypatch.setattr(lab.random, "sample", lambda population, k: [5, 6, 7])
    yield tmp_path / "claims"
    for fd in held.values():
        os.close(fd)


def _interfaces(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(lab.subprocess, "run", lambda *a, **kw: SimpleNamespace(stdout=text))


def test_a_network_claimed_by_another_process_is_skipped(claims, monkeypatch):
    _interfaces(monkeypatch, "")
    claims.mkdir(mode=0o700)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(claims / "198.18.5.lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "held\n"
        assert lab.free_lab_network() == "198.18.6"
    finally:
        holder.communicate("", timeout=10)
    # once its holder is gone, the claim is free again
    assert lab.free_lab_network() == "198.18.5"


def test_a_network_an_interface_uses_or_this_process_holds_is_skipped(claims, monkeypatch):
    _interfaces(monkeypatch, "4: dbbr-1 inet 198.18.5.1/24 scope global dbbr-1\n")
    assert lab.free_lab_network() == "198.18.6"
    assert lab.free_lab_network() == "198.18.7"  # 6 is this process's already
    with pytest.raises(lab.LabError, match="no free /24"):
        lab.free_lab_network()
