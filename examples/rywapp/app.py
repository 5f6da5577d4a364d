"""rywapp: a tiny WSGI app (stdlib wsgiref, no framework) on a dbfleet fleet.

POST /notes (form field `body`) -> 201 and the note's id; GET /notes/<id> -> its body
(404 if absent); GET /visits counts a visit through the local read connection (on a
replica: a read-only transaction error, which the middleware replays in the primary
region when `replay` is on). Run it with the environment `dbfleet endpoints --env
REGION --show-secrets` prints; PORT (default 8080) and RYWAPP_REPLAY=1 choose the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

if __package__ in (None, ""):  # run as a script: make `dbfleet` importable from the clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dbfleet import web
from dbfleet.client import Fleet

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS rywapp_notes (id bigserial PRIMARY KEY, body text NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rywapp_visits (at timestamptz NOT NULL DEFAULT now())",
)
MAX_BODY = 64 * 1024


def create_schema(fleet: Fleet) -> None:
    with fleet.write() as w:
        for statement in SCHEMA:
            w.conn.execute(statement)


def _respond(start_response: Callable[..., Any], status: str, text: str, *extra) -> list[bytes]:
    body = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    start_response(status, headers + list(extra))
    return [body]


def make_app(fleet: Fleet, *, replay: bool = False, secure_cookie: bool = True):
    """The app, wrapped in dbfleet's WSGI middleware."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if method == "POST" and path == "/notes":
            size = min(int(environ.get("CONTENT_LENGTH") or 0), MAX_BODY)
            form = parse_qs(environ["wsgi.input"].read(size).decode())
            with fleet.write() as w:
                cur = w.conn.execute(
                    "INSERT INTO rywapp_notes (body) VALUES (%s) RETURNING id",
                    (form.get("body", [""])[0],),
                )
                (note_id,) = cur.fetchone()
            web.set_token(environ, w.token)  # the user's next request reads this write
            return _respond(
                start_response, "201 Created", f"{note_id}\n", ("Location", f"/notes/{note_id}")
            )
        if method == "GET" and path.startswith("/notes/") and path[7:].isdigit():
            with fleet.read(after=web.token(environ)) as conn:
                row = conn.execute(
                    "SELECT body FROM rywapp_notes WHERE id = %s", (int(path[7:]),)
                ).fetchone()
            if row is None:
                return _respond(start_response, "404 Not Found", "no such note\n")
            return _respond(start_response, "200 OK", row[0])
        if method == "GET" and path == "/visits":
            # A write through the local connection, as apps written for one database
            # do: a replica refuses it (SQLSTATE 25006) and the middleware replays.
            with fleet.read() as conn:
                (count,) = conn.execute(
                    "WITH v AS (INSERT INTO rywapp_visits DEFAULT VALUES RETURNING 1) "
                    "SELECT count(*) + 1 FROM rywapp_visits"
                ).fetchone()
            return _respond(start_response, "200 OK", f"{count}\n")
        return _respond(start_response, "404 Not Found", "not found\n")

    return web.WSGIMiddleware(app, fleet, replay=replay, secure=secure_cookie)


def main() -> None:
    from wsgiref.simple_server import make_server

    fleet = Fleet.from_env(connect_kwargs={"connect_timeout": 5})
    create_schema(fleet)
    port = int(os.environ.get("PORT", "8080"))
    # Plain http on this machine: a Secure cookie would not come back. Behind TLS,
    # keep the default (secure_cookie=True).
    app = make_app(fleet, replay=os.environ.get("RYWAPP_REPLAY") == "1", secure_cookie=False)
    print(f"rywapp: {fleet.config.region} (primary {fleet.config.primary_region}) on :{port}")
    make_server("", port, app).serve_forever()


if __name__ == "__main__":
    main()
