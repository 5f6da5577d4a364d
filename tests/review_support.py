"""Shared by the CI review tests (tests/unit/test_workflow_review.py and
tests/integration/test_ci_review.py): a fleet file, a throw-away git repository
with a `change` branch off `main`, and a fake GitHub issue-comments API."""

from __future__ import annotations

import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FLEET = """\
groups:
  us:
    zone: US
    primary: iad
    regions: {iad: {nodes: 1}, ord: {nodes: 1}}
  eu:
    zone: EU
    primary: fra
    regions: {fra: {nodes: 1}, lhr: {nodes: 1}}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


def make_repo(root: Path) -> Path:
    """A repository at `root` whose `main` holds FLEET and a README, on branch `change`."""
    (root / "stacks").mkdir(parents=True)
    (root / "stacks" / "fleet.yaml").write_text(FLEET)
    (root / "README.md").write_text("x\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "base")
    git(root, "checkout", "-qb", "change")
    return root


def commit(repo: Path, path: str, text: str) -> None:
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(text)
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "change")


class FakeGitHub:
    """Just enough of the issue-comments API, on a local port."""

    def __init__(self) -> None:
        self.comments: list[dict] = [{"id": 7, "body": "LGTM"}]
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, code: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.requests.append(("GET", self.path))
                assert self.headers["Authorization"] == "Bearer t0ken"
                self._send(200, fake.comments)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

            def do_POST(self) -> None:
                fake.requests.append(("POST", self.path))
                c = {"id": 100 + len(fake.comments), "body": self._body()["body"]}
                fake.comments.append(c)
                self._send(201, c)

            def do_PATCH(self) -> None:
                fake.requests.append(("PATCH", self.path))
                cid = int(self.path.rsplit("/", 1)[1])
                c = next(c for c in fake.comments if c["id"] == cid)
                c["body"] = self._body()["body"]
                self._send(200, c)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
