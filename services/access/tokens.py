"""The API tokens of both services: issued, listed, revoked and looked up; only their digests
are stored, in ``directory.api_token`` (a table of the directory's migrations).

A token reads ``tok_<12 hex>.<secret>``: the id before the dot is what listings and revocations
name; the secret (256 random bits) is printed once, when the token is issued, and kept nowhere.
"""

import datetime
import hashlib
import secrets

import asyncpg
import msgspec

from services.access.errors import InvalidTokenInput, UnknownToken
from services.access.principal import OwnerError, Role, check_owner
from services.infra.db import Connection

#: Longer than any token we issue; a longer header is refused before any lookup.
MAX_TOKEN_CHARS = 200

_COLUMNS = "id, role, provider_id, system, name, created_at, revoked_at"


class Token(msgspec.Struct, frozen=True, kw_only=True):
    """A token as stored and listed: everything but its secret."""

    id: str
    role: Role
    provider_id: str | None
    system: str | None
    name: str
    created_at: datetime.datetime
    revoked_at: datetime.datetime | None


def digest(token: str) -> bytes:
    """What is stored and looked up: SHA-256 of the whole token text."""
    return hashlib.sha256(token.encode()).digest()


def _token_from_row(row: asyncpg.Record) -> Token:
    return Token(**{name: row[name] for name in Token.__struct_fields__})


class TokenStore:
    """The ``directory.api_token`` table, through one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def issue(
        self, *, role: Role, name: str, provider_id: str | None = None, system: str | None = None
    ) -> tuple[Token, str]:
        """A new token and its text; the text is returned here only, never stored.

        The OW system of an ``ow`` token is not checked against a list: the directory keeps
        no registry of OW systems (their NATS users are configuration, EO_OW_SYSTEMS).
        """
        try:
            check_owner(role, provider_id=provider_id, system=system)
        except OwnerError as exc:
            raise InvalidTokenInput(exc.message, field=exc.field) from exc
        if not 1 <= len(name) <= 200:
            raise InvalidTokenInput("a token's name has 1 to 200 characters", field="name")
        if provider_id is not None:
            exists = await self.conn.fetchval(
                "SELECT EXISTS (SELECT 1 FROM directory.provider WHERE id = $1)", provider_id
            )
            if not exists:
                raise UnknownToken(f"no provider {provider_id!r}", field="provider_id")
        token_id = f"tok_{secrets.token_hex(6)}"
        text = f"{token_id}.{secrets.token_urlsafe(32)}"
        row = await self.conn.fetchrow(
            "INSERT INTO directory.api_token (id, digest, role, provider_id, system, name)"
            f" VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}",
            token_id,
            digest(text),
            role,
            provider_id,
            system,
            name,
        )
        assert row is not None
        return _token_from_row(row), text

    async def revoke(self, token_id: str) -> Token:
        """Revoke ``token_id`` from now on; revoking it again changes nothing."""
        row = await self.conn.fetchrow(
            "UPDATE directory.api_token SET revoked_at = coalesce(revoked_at, now())"
            f" WHERE id = $1 RETURNING {_COLUMNS}",
            token_id,
        )
        if row is None:
            raise UnknownToken(f"no token {token_id!r}", field="id")
        return _token_from_row(row)

    async def list(self) -> list[Token]:
        rows = await self.conn.fetch(
            f"SELECT {_COLUMNS} FROM directory.api_token ORDER BY created_at, id"
        )
        return [_token_from_row(row) for row in rows]

    async def find_active(self, token: str) -> Token | None:
        """The unrevoked token whose text this is, if any."""
        if len(token) > MAX_TOKEN_CHARS:
            return None
        row = await self.conn.fetchrow(
            f"SELECT {_COLUMNS} FROM directory.api_token WHERE digest = $1 AND revoked_at IS NULL",
            digest(token),
        )
        return None if row is None else _token_from_row(row)
