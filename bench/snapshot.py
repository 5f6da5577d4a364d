"""What is measured: a frozen copy of dbfleet's code.

The checkout is shared with other engineers who edit it while a benchmark runs (a
changed host script changes every resource's `script_sha`, so a "no-change" preview
would suddenly plan updates). So a run measures a snapshot: by default the committed
tree of HEAD (`git archive`), or with --worktree the working tree as it is at the
start (tracked and untracked files, not ignored ones). The snapshot is put first on
PYTHONPATH of every command; the Python environment stays the repo's .venv.
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Snapshot:
    path: Path
    commit: str  # the commit measured (HEAD's when --worktree)
    source: str  # "HEAD" or "working tree"
    dirty: list[
        str
    ]  # files of the working tree that differ from HEAD (not measured unless --worktree)

    def to_json(self) -> dict:
        return {"commit": self.commit, "source": self.source, "dirty": self.dirty}

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
    ).stdout


def take(worktree: bool = False, ref: str = "HEAD") -> Snapshot:
    dest = Path(tempfile.mkdtemp(prefix="dbfleet-bench-code-", dir="/tmp"))
    dest.chmod(0o755)
    commit = _git("rev-parse", ref).strip()
    dirty = [line[3:] for line in _git("status", "--porcelain").splitlines() if line.strip()]
    if worktree:
        files = [f for f in _git("ls-files", "-co", "--exclude-standard", "-z").split("\0") if f]
        for rel in files:
            src = REPO / rel
            if src.is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
        source = "working tree"
    else:
        with tempfile.TemporaryFile() as tar:
            subprocess.run(
                ["git", "-C", str(REPO), "archive", "--format=tar", commit], stdout=tar, check=True
            )
            tar.seek(0)
            with tarfile.open(fileobj=tar) as tf:
                tf.extractall(dest, filter="data")
        source = ref
    # The policy pack and scripts/env.sh find the Python environment at <root>/.venv: a
    # real directory (tests compare resolved paths) whose entries link to the repo's.
    venv = dest / ".venv"
    venv.mkdir()
    for entry in (REPO / ".venv").iterdir():
        (venv / entry.name).symlink_to(entry)
    return Snapshot(dest, commit, source, dirty)
