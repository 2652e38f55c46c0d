"""The HTTP access log of both services: one structured line (``http.request``) per request.

A line holds the method, the path as sent (percent-encoded) without its query string, the
status, the time to answer and the caller's role once a token was checked; never a header,
token, body or query string, which can carry a secret or personal data (a search for a
person's town, say). uvicorn's own access log is off (``serving.py``) because it logs the
query string and the client's address.

The log wraps the whole app, not one route: Litestar runs an app's ``middleware`` only for
requests that reach a route, so a 404 for an unknown path or a 405 would go unlogged.
"""

import time
from typing import Any
from urllib.parse import quote

import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("http")

#: Longer paths are cut: a path is the client's to choose, and a log line should stay a line.
MAX_PATH_CHARS = 200


class AccessLog:
    """ASGI middleware: logs ``http.request`` once the app has answered (or failed to)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status: int | None = None  # None: no answer began (the client went away, or a crash)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(
                "http.request",
                service=self.service,
                method=scope["method"],
                path=wire_path(scope)[:MAX_PATH_CHARS],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                **caller_role(scope),
            )


def wire_path(scope: Scope) -> str:
    """The path as the client sent it, still percent-encoded, without the query string: an
    encoded ``?`` (``%3F``) in a path stays encoded, so a log line never seems to hold a query
    string."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return quote(scope["path"], safe="/:@!$&'()*+,;=-._~")
    return raw.partition(b"?")[0].decode("latin-1")


def caller_role(scope: Scope) -> dict[str, Any]:
    """``{"role": ...}`` of the principal the bearer check put in the scope, if it did."""
    role = getattr(scope.get("user"), "role", None)
    return {} if role is None else {"role": role}


def access_logged(app: Litestar, service: str) -> Litestar:
    """``app``, each request it answers logged as one ``http.request`` line."""
    app.asgi_handler = AccessLog(app.asgi_handler, service)
    return app
