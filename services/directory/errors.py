"""The directory's error tree; ``app.py`` maps it to RFC 9457 problem responses.

    DirectoryError
    ├── InvalidInput            422: a value is well-formed JSON/query but not acceptable
    ├── Forbidden               403: a valid token without the right to this change
    ├── NotFound                404: no provider/site/token with that id
    └── Conflict                409: the id is taken, or a row still depends on this one

A missing or invalid token (401) is ``services.access.errors``', mapped in ``app.py`` too.

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


class Forbidden(DirectoryError):
    status = 403
    title = "Forbidden"


class NotFound(DirectoryError):
    status = 404
    title = "Not found"


class Conflict(DirectoryError):
    status = 409
    title = "Conflict"
