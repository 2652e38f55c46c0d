"""Why a location cannot be placed. Each service maps these at its edge: the directory to a
422 problem naming the field, the router to a ``rejected`` referral with the reason.

    UnresolvableLocation
    ├── InvalidPostalCode   the text is not a Canadian postal code
    ├── UnknownPostalCode   a valid code the offline gazetteer cannot place
    └── UnknownCommunity    a place name the gazetteer does not know
"""


class UnresolvableLocation(ValueError):
    title = "Unresolvable location"

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        #: The input it is about (``postal_code``, ``community``).
        self.field = field


class InvalidPostalCode(UnresolvableLocation):
    title = "Invalid postal code"


class UnknownPostalCode(UnresolvableLocation):
    title = "Unknown postal code"


class UnknownCommunity(UnresolvableLocation):
    title = "Unknown community"
