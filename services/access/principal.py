"""The caller a token stands for, and which role names which owner. Pure: no I/O."""

from typing import Literal

import msgspec

from contracts.common import Slug

Role = Literal["admin", "staff", "provider", "ow"]
ROLES: tuple[Role, ...] = ("admin", "staff", "provider", "ow")


class OwnerError(ValueError):
    """A role given the wrong owner: ``field`` names the one at fault."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def check_owner(role: Role, *, provider_id: str | None, system: str | None) -> None:
    """A provider token names its provider and an OW token its system; no other token names
    either. ``OwnerError`` otherwise, or for an owner that is not a slug."""
    if (role == "provider") != (provider_id is not None):
        raise OwnerError("a provider token names its provider; no other token does",
                         field="provider_id")  # fmt: skip
    if (role == "ow") != (system is not None):
        raise OwnerError("an ow token names its OW system; no other token does", field="system")
    for field, value in (("provider_id", provider_id), ("system", system)):
        if value is not None and not _is_slug(value):
            raise OwnerError(f"{value!r} is not an id (a slug such as 'ow-lanark')", field=field)


def _is_slug(text: str) -> bool:
    try:
        msgspec.convert(text, Slug)
    except msgspec.ValidationError:
        return False
    return True


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller a token stands for: its role, and the provider or OW system it acts for."""

    token_id: str
    role: Role
    provider_id: str | None = None
    system: str | None = None

    def may_write(self, provider_id: str) -> bool:
        """May change records that belong to ``provider_id``."""
        return self.role == "admin" or (self.role == "provider" and provider_id == self.provider_id)
