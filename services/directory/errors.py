"""The directory's error tree; ``app.py`` maps it to RFC 9457 problem responses.

    DirectoryError
    ├── InvalidInput            422: a value is well-formed JSON/query but not acceptable
    ├── Unauthenticated         401: no usable bearer token (answered with WWW-Authenticate)
    │   ├── MissingToken        the request carries no token
    │   └── InvalidToken        the token is malformed, unknown or revoked
    ├── Forbidden               403: a valid token without the right to this change
    ├── NotFound                404: no provider/site/token with that id
    └── Conflict                409: the id is taken, or a row still depends on this one

Every error names the ``field`` it is about (a query parameter or a body path) when there is
one, so a client can show the message next to the right input. A location the gazetteer cannot
place (``services.geo.UnresolvableLocation``) is a 422 too, mapped in ``app.py``.
"""

from typing import ClassVar


class DirectoryError(Exception):
    status = 500
    title = "Directory error"
    #: Response headers this error requires (RFC 6750 challenges for 401).
    headers: ClassVar[dict[str, str]] = {}

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DirectoryError):
    status = 422
    title = "Invalid input"


class Unauthenticated(DirectoryError):
    status = 401
    title = "Unauthorized"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": "Bearer"}


class MissingToken(Unauthenticated):
    title = "Bearer token required"


class InvalidToken(Unauthenticated):
    title = "Invalid token"
    headers: ClassVar[dict[str, str]] = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


class Forbidden(DirectoryError):
    status = 403
    title = "Forbidden"


class NotFound(DirectoryError):
    status = 404
    title = "Not found"


class Conflict(DirectoryError):
    status = 409
    title = "Conflict"
