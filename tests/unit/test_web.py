"""dbfleet.web with fake apps: the token's cookie and header, fly-replay outside the
primary region, and a read-only-transaction error (25006) turned into a replay."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any

import psycopg.errors
import pytest

from dbfleet import web
from dbfleet.client import FleetConfig, Token

URL = "postgresql://app:pw@127.0.0.1:6432/app"
MINE = Token("prod/eu", 0x1_0000_0000)


def cfg(region: str = "lhr") -> FleetConfig:
    return FleetConfig(region, "fra", URL, URL, "prod/eu")


def run_async(coro: Any) -> Any:
    """Runs `coro` on a loop of its own: asyncio.run would leave the thread without
    a current event loop, which the Pulumi mocks of later tests need."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


class ReadOnly(Exception):
    sqlstate = "25006"


# -- WSGI ------------------------------------------------------------------------------
def call_wsgi(
    app: Any, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[str, list[tuple[str, str]], bytes, dict]:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/",
        "wsgi.input": io.BytesIO(),
        **{f"HTTP_{k.upper().replace('-', '_')}": v for k, v in (headers or {}).items()},
    }
    got: dict[str, Any] = {}

    def start_response(status: str, hdrs: list[tuple[str, str]], exc_info: Any = None):
        got["status"], got["headers"], got["exc_info"] = status, hdrs, exc_info
        return lambda data: None

    body = b"".join(app(environ, start_response))
    return got["status"], got["headers"], body, environ


def echo_app(new: Token | None = None, error: Exception | None = None):
    """A WSGI app that reports the token it was given and maybe sets one or fails."""

    def app(environ: dict, start_response: Any) -> list[bytes]:
        if error is not None:
            raise error
        web.set_token(environ, new)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(web.token(environ)).encode()]

    return app


def test_the_token_comes_from_the_cookie_or_the_header() -> None:
    app = web.WSGIMiddleware(echo_app(), cfg())
    _, _, body, _ = call_wsgi(app, headers={"Cookie": f"other=1; dbfleet_rw={MINE}"})
    assert body == str(MINE).encode()
    _, _, body, _ = call_wsgi(app, headers={"X-DBFleet-Token": str(MINE)})
    assert body == str(MINE).encode()
    older = Token("prod/eu", 5)
    _, _, body, _ = call_wsgi(
        app, headers={"Cookie": f"dbfleet_rw={older}", "X-DBFleet-Token": str(MINE)}
    )
    assert body == str(MINE).encode()  # the newer of the two
    _, _, body, _ = call_wsgi(app)
    assert body == b"None"


@pytest.mark.parametrize(
    "cookie", ["dbfleet_rw=dbf1:prod/us:0/1", "dbfleet_rw=nonsense", 'dbfleet_rw="unclosed', "=;;"]
)
def test_a_foreign_or_broken_token_is_ignored(cookie: str) -> None:
    _, _, body, _ = call_wsgi(web.WSGIMiddleware(echo_app(), cfg()), headers={"Cookie": cookie})
    assert body == b"None"


def test_a_new_token_goes_back_as_a_cookie_and_a_header() -> None:
    app = web.WSGIMiddleware(echo_app(new=MINE), cfg(), max_age=60)
    status, headers, _, _ = call_wsgi(app, "POST")
    assert status == "200 OK"
    cookie = dict(headers)["Set-Cookie"]
    assert cookie.startswith(f"dbfleet_rw={MINE}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax")
    assert cookie.endswith("; Secure") and dict(headers)["X-DBFleet-Token"] == str(MINE)
    _, headers, _, _ = call_wsgi(web.WSGIMiddleware(echo_app(new=MINE), cfg(), secure=False))
    assert "Secure" not in dict(headers)["Set-Cookie"]
    _, headers, _, _ = call_wsgi(web.WSGIMiddleware(echo_app(), cfg()))
    assert "Set-Cookie" not in dict(headers)


def test_without_replay_writes_run_in_any_region() -> None:
    status, _, _, _ = call_wsgi(web.WSGIMiddleware(echo_app(), cfg()), "POST")
    assert status == "200 OK"


@pytest.mark.parametrize(
    ("method", "replayed"), [("POST", True), ("DELETE", True), ("GET", False), ("HEAD", False)]
)
def test_outside_the_primary_region_writes_are_replayed(method: str, replayed: bool) -> None:
    status, headers, _, _ = call_wsgi(web.WSGIMiddleware(echo_app(), cfg(), replay=True), method)
    assert (dict(headers).get("fly-replay") == "region=fra") is replayed
    assert status.startswith("409") is replayed


def test_in_the_primary_region_nothing_is_replayed() -> None:
    app = web.WSGIMiddleware(echo_app(error=ReadOnly()), cfg("fra"), replay=True)
    with pytest.raises(ReadOnly):
        call_wsgi(app, "GET")
    status, _, _, _ = call_wsgi(web.WSGIMiddleware(echo_app(), cfg("fra"), replay=True), "POST")
    assert status == "200 OK"


def test_a_read_only_transaction_error_becomes_a_replay() -> None:
    error = psycopg.errors.ReadOnlySqlTransaction(
        "cannot execute INSERT in a read-only transaction"
    )
    app = web.WSGIMiddleware(echo_app(error=error), cfg(), replay=True)
    status, headers, body, _ = call_wsgi(app, "GET")
    assert status.startswith("409") and dict(headers)["fly-replay"] == "region=fra"
    assert b"fra" in body
    # without replay, or another error: the app's error, untouched
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        call_wsgi(web.WSGIMiddleware(echo_app(error=error), cfg()), "GET")
    with pytest.raises(ZeroDivisionError):
        call_wsgi(web.WSGIMiddleware(echo_app(error=ZeroDivisionError()), cfg(), replay=True))


def test_an_error_while_a_generator_app_starts_its_body_is_replayed_too() -> None:
    closed: list[bool] = []

    def app(environ: dict, start_response: Any) -> Iterator[bytes]:
        try:
            start_response("200 OK", [])
            raise ReadOnly()
            yield b"never"
        finally:
            closed.append(True)

    status, headers, _, _ = call_wsgi(web.WSGIMiddleware(app, cfg(), replay=True))
    assert status.startswith("409") and dict(headers)["fly-replay"] == "region=fra"
    assert closed == [True]


def test_the_body_is_passed_through_and_closed() -> None:
    closed: list[bool] = []

    class Body:
        def __iter__(self) -> Iterator[bytes]:
            return iter([b"a", b"b"])

        def close(self) -> None:
            closed.append(True)

    def app(environ: dict, start_response: Any) -> Body:
        start_response("200 OK", [])
        return Body()

    result = web.WSGIMiddleware(app, cfg())({"REQUEST_METHOD": "GET"}, lambda *a: None)
    assert b"".join(result) == b"ab"
    result.close()
    assert closed == [True]


# -- ASGI ------------------------------------------------------------------------------
def call_asgi(app: Any, method: str = "GET", headers: dict[str, str] | None = None):
    scope = {
        "type": "http",
        "method": method,
        "path": "/",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b""}

    async def send(message: dict) -> None:
        sent.append(message)

    run_async(app(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, sent, scope


def asgi_app(new: Token | None = None, error: Exception | None = None):
    async def app(scope: dict, receive: Any, send: Any) -> None:
        if error is not None:
            raise error
        web.set_token(scope, new)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(web.token(scope)).encode()})

    return app


def test_asgi_carries_the_token_both_ways() -> None:
    app = web.ASGIMiddleware(asgi_app(new=Token("prod/eu", MINE.lsn + 1)), cfg())
    status, headers, sent, _ = call_asgi(app, "POST", {"Cookie": f"dbfleet_rw={MINE}"})
    assert status == 200 and sent[1]["body"] == str(MINE).encode()
    assert headers["set-cookie"].startswith("dbfleet_rw=dbf1:prod/eu:1/1;")
    assert headers["x-dbfleet-token"] == "dbf1:prod/eu:1/1"


def test_asgi_replays_writes_and_read_only_errors_outside_the_primary() -> None:
    status, headers, _, _ = call_asgi(web.ASGIMiddleware(asgi_app(), cfg(), replay=True), "PUT")
    assert status == 409 and headers["fly-replay"] == "region=fra"
    app = web.ASGIMiddleware(asgi_app(error=ReadOnly()), cfg(), replay=True)
    status, headers, _, _ = call_asgi(app, "GET")
    assert status == 409 and headers["fly-replay"] == "region=fra"
    with pytest.raises(ReadOnly):
        call_asgi(web.ASGIMiddleware(asgi_app(error=ReadOnly()), cfg("fra"), replay=True))
    status, _, _, _ = call_asgi(web.ASGIMiddleware(asgi_app(), cfg("fra"), replay=True), "PUT")
    assert status == 200


def test_asgi_passes_other_scopes_through() -> None:
    seen: list[str] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    run_async(web.ASGIMiddleware(app, cfg(), replay=True)({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
