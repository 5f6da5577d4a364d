"""Read-your-writes across a user's requests: WSGI and ASGI middleware.

Two patterns for web applications on a read-nearest / write-primary fleet:

1. **The token travels with the user.** After a write the app calls
   `set_token(request, w.token)`; the middleware sends it back as a cookie (and as
   the `X-DBFleet-Token` response header, for API clients). On the user's next
   request, in whichever region, `token(request)` is that token (from the cookie, or
   from an `X-DBFleet-Token` request header), validated for this fleet's group; the
   app reads with `fleet.read(after=token(request))` and sees its own writes.
   `request` is the WSGI environ or the ASGI scope.

2. **Fly's replay** (`replay=True`): a request that writes is answered, outside the
   primary region, with `fly-replay: region=<primary>` so Fly's proxy runs it again
   in the primary region. Non-GET/HEAD/OPTIONS requests are replayed before the app
   sees them; a read-only-transaction error (SQLSTATE 25006) the app raises — it
   wrote through a replica — becomes the same answer, as long as no response has
   been sent yet. In the primary region nothing is replayed (that would loop).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

from dbfleet.client import FleetConfig, Token, accept_token

__all__ = [
    "COOKIE",
    "HEADER",
    "ASGIMiddleware",
    "WSGIMiddleware",
    "is_read_only_error",
    "set_token",
    "token",
]

log = logging.getLogger("dbfleet.web")

COOKIE = "dbfleet_rw"
HEADER = "X-DBFleet-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
READ_ONLY_SQLSTATE = "25006"
REPLAY_STATUS = 409  # Fly's proxy replays on the header whatever the status; 409 says why to others

_TOKEN_KEY = "dbfleet.token"
_NEW_KEY = "dbfleet.new_token"

Request = MutableMapping[str, Any]  # a WSGI environ or an ASGI scope


def token(request: Request) -> Token | None:
    """The token of the user's last write, if it came with the request and belongs here."""
    return request.get(_TOKEN_KEY)


def set_token(request: Request, new: Token | None) -> None:
    """Sends `new` back to the user (cookie and header) with this request's response.
    Call it before the response starts (WSGI start_response, ASGI http.response.start)."""
    if new is not None:
        request[_NEW_KEY] = new


def is_read_only_error(exc: BaseException) -> bool:
    """A write refused by a read-only node (psycopg.errors.ReadOnlySqlTransaction)."""
    return getattr(exc, "sqlstate", None) == READ_ONLY_SQLSTATE


def _config(fleet: Any) -> FleetConfig:
    return fleet if isinstance(fleet, FleetConfig) else fleet.config


class _Core:
    """What both middlewares share: reading the token, the cookie, the replay answer."""

    def __init__(
        self,
        fleet: Any,
        *,
        replay: bool = False,
        cookie_name: str = COOKIE,
        max_age: int = 300,
        secure: bool = True,
    ) -> None:
        self.config = _config(fleet)
        self.replay = replay
        self.cookie_name = cookie_name
        self.max_age = max_age
        self.secure = secure

    def incoming(self, cookie_header: str | None, header_value: str | None) -> Token | None:
        """The newest valid token among the request's cookie and header."""
        found: list[Token] = []
        if header_value:
            found.append(accept_token(header_value, self.config.scope))
        if cookie_header:
            try:
                jar = SimpleCookie(cookie_header)
            except CookieError:
                jar = SimpleCookie()
            morsel = jar.get(self.cookie_name)
            if morsel is not None and morsel.value:
                found.append(accept_token(morsel.value, self.config.scope))
        valid = [t for t in found if t is not None]
        return max(valid) if valid else None

    def outgoing(self, new: Token) -> list[tuple[str, str]]:
        cookie = f"{self.cookie_name}={new}; Path=/; Max-Age={self.max_age}; HttpOnly; SameSite=Lax"
        if self.secure:
            cookie += "; Secure"
        return [("Set-Cookie", cookie), (HEADER, str(new))]

    def must_replay(self, method: str) -> bool:
        return (
            self.replay and not self.config.in_primary_region and method.upper() not in SAFE_METHODS
        )

    def can_replay(self, exc: BaseException) -> bool:
        return self.replay and not self.config.in_primary_region and is_read_only_error(exc)

    def replay_answer(self) -> tuple[int, list[tuple[str, str]], bytes]:
        primary = self.config.primary_region
        body = f"replaying in the primary region {primary}\n".encode()
        headers = [
            ("fly-replay", f"region={primary}"),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        return REPLAY_STATUS, headers, body


# -- WSGI --------------------------------------------------------------------------------
StartResponse = Callable[..., Callable[[bytes], Any]]


class WSGIMiddleware(_Core):
    """`app = WSGIMiddleware(app, fleet, replay=...)`; see the module docstring."""

    def __init__(self, app: Callable[..., Iterable[bytes]], fleet: Any, **options: Any) -> None:
        super().__init__(fleet, **options)
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        environ[_TOKEN_KEY] = self.incoming(
            environ.get("HTTP_COOKIE"), environ.get("HTTP_X_DBFLEET_TOKEN")
        )
        if self.must_replay(environ.get("REQUEST_METHOD", "GET")):
            return self._replay(start_response)
        started: list[bool] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            new = environ.get(_NEW_KEY)
            if new is not None:
                headers = [h for h in headers if h[0].lower() != HEADER.lower()]
                headers += self.outgoing(new)
            started.append(True)
            return start_response(status, headers, exc_info)

        try:
            result = self.app(environ, start)
            # The first chunk too: a generator app does its work while iterating.
            chunks = iter(result)
            first = next(chunks, None)
        except Exception as exc:
            if not self.can_replay(exc):
                raise
            log.info("dbfleet.web: a write reached a read-only node: replaying in the primary")
            return self._replay(start_response, bool(started), exc)
        return _Body(first, chunks, result)

    def _replay(
        self, start_response: StartResponse, started: bool = False, exc: BaseException | None = None
    ) -> list[bytes]:
        status, headers, body = self.replay_answer()
        exc_info = (type(exc), exc, exc.__traceback__) if started and exc is not None else None
        start_response(f"{status} Conflict", headers, exc_info)
        return [body]


class _Body:
    """The app's body with its first chunk already taken; closes what the app returned."""

    def __init__(self, first: bytes | None, rest: Iterator[bytes], result: Iterable[bytes]) -> None:
        self.first, self.rest, self.result = first, rest, result

    def __iter__(self) -> Iterator[bytes]:
        if self.first is not None:
            yield self.first
        yield from self.rest

    def close(self) -> None:
        close = getattr(self.result, "close", None)
        if close is not None:
            close()


# -- ASGI --------------------------------------------------------------------------------
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ASGIMiddleware(_Core):
    """`app = ASGIMiddleware(app, fleet, replay=...)` for ASGI 3 apps (HTTP only)."""

    def __init__(self, app: Callable[..., Awaitable[None]], fleet: Any, **options: Any) -> None:
        super().__init__(fleet, **options)
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        scope[_TOKEN_KEY] = self.incoming(headers.get("cookie"), headers.get(HEADER.lower()))
        if self.must_replay(scope.get("method", "GET")):
            await self._replay(send)
            return
        started = False

        async def wrapped(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                new = scope.get(_NEW_KEY)
                if new is not None:
                    extra = [(k.lower().encode(), v.encode()) for k, v in self.outgoing(new)]
                    kept = [
                        h
                        for h in message.get("headers", [])
                        if h[0].lower() != HEADER.lower().encode()
                    ]
                    message = {**message, "headers": kept + extra}
            await send(message)

        try:
            await self.app(scope, receive, wrapped)
        except Exception as exc:
            if started or not self.can_replay(exc):
                raise
            log.info("dbfleet.web: a write reached a read-only node: replaying in the primary")
            await self._replay(send)

    async def _replay(self, send: Send) -> None:
        status, headers, body = self.replay_answer()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
