"""The directory's error tree; ``app.py`` maps it to RFC 9457 problem responses.

    DirectoryError
    ├── InvalidInput            422: a value is well-formed JSON/query but not acceptable
    │   ├── InvalidPostalCode   the text is not a Canadian postal code
    │   ├── UnknownPostalCode   a valid code the offline gazetteer cannot place
    │   └── UnknownCommunity    a place name the gazetteer does not know
    ├── NotFound                404: no provider/site with that id
    └── Conflict                409: the id is taken, or a row still depends on this one

Every error names the ``field`` it is about (a query parameter or a body path), so a client
can show the message next to the right input.
"""


class DirectoryError(Exception):
    status = 500
    title = "Directory error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DirectoryError):
    status = 422
    title = "Invalid input"


class InvalidPostalCode(InvalidInput):
    title = "Invalid postal code"


class UnknownPostalCode(InvalidInput):
    title = "Unknown postal code"


class UnknownCommunity(InvalidInput):
    title = "Unknown community"


class NotFound(DirectoryError):
    status = 404
    title = "Not found"


class Conflict(DirectoryError):
    status = 409
    title = "Conflict"
