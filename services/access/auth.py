"""Who calls an HTTP API: ``BearerAuth`` sets ``request.user`` to the caller's ``Principal``.

Both apps install it (``DefineMiddleware(BearerAuth, exclude=<the OpenAPI path>)``) and keep
their settings in ``app.state.settings``, whose ``admin_token`` (DIRECTORY_ADMIN_TOKEN,
ROUTER_ADMIN_TOKEN, or ``.state/admin-token`` of ``eo run``) is a bootstrap admin token, so the
first tokens can be issued and ``make run`` keeps working. Every other token is looked up in
``TokenStore``. No token, or an unknown or revoked one, is a 401 with ``WWW-Authenticate:
Bearer``. Routes marked ``opt=PUBLIC`` skip it. What a principal may then do is each service's.
"""

import secrets
from typing import Any

import asyncpg
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from services.access.errors import InvalidToken, MissingToken
from services.access.principal import Principal
from services.access.tokens import TokenStore

#: ``opt`` of the routes anyone may call: ``BearerAuth`` skips them.
PUBLIC: dict[str, Any] = {"exclude_from_auth": True}


async def identify(
    authorization: str | None, admin_token: str | None, pool: asyncpg.Pool
) -> Principal:
    """The principal of an ``Authorization`` header, or ``Unauthenticated``; ``admin_token``,
    when set, is the bootstrap admin token."""
    if not authorization:
        raise MissingToken("this endpoint needs a token: Authorization: Bearer <token>")
    scheme, _space, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("the Authorization header must read: Bearer <token>")
    if admin_token and secrets.compare_digest(token.encode(), admin_token.encode()):
        return Principal(token_id="bootstrap", role="admin")
    async with pool.acquire() as conn:
        found = await TokenStore(conn).find_active(token)
    if found is None:
        raise InvalidToken("the token is unknown or revoked")
    return Principal(
        token_id=found.id, role=found.role, provider_id=found.provider_id, system=found.system
    )


class BearerAuth(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the caller's ``Principal``; routes with ``opt=PUBLIC`` skip it."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        state = connection.app.state
        principal = await identify(
            connection.headers.get("authorization"), state.settings.admin_token, state.pool
        )
        return AuthenticationResult(user=principal, auth=principal.token_id)


def provide_principal(request: Request[Principal, str, State]) -> Principal:
    return request.user
