"""The access error tree; ``on_access_error`` answers each as an RFC 9457 problem.

AccessError
├── Unauthenticated     401: no usable bearer token (answered with WWW-Authenticate)
│   ├── MissingToken    the request carries no token
│   └── InvalidToken    the token is malformed, unknown or revoked
├── InvalidTokenInput   422: a token cannot be issued so (role, owner or name)
└── UnknownToken        404: no token (or provider) with that id, to revoke or to own one
"""

from typing import Any, ClassVar

from litestar import Request, Response

from contracts.directory import FieldError, Problem
from services.infra.http import problem


class AccessError(Exception):
    status = 500
    title = "Access error"
    #: Response headers this error requires (RFC 6750 challenges for 401).
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Unauthenticated(AccessError):
    status = 401
    title = "Unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class MissingToken(Unauthenticated):
    title = "Bearer token required"


class InvalidToken(Unauthenticated):
    title = "Invalid token"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class InvalidTokenInput(AccessError):
    status = 422
    title = "Invalid input"


class UnknownToken(AccessError):
    status = 404
    title = "Not found"


def on_access_error(_: Request[Any, Any, Any], exc: AccessError) -> Response[Problem]:
    errors = [FieldError(field=exc.field, message=exc.message)] if exc.field else []
    return problem(exc.status, exc.title, exc.message, errors, headers=exc.headers)
