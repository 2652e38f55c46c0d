"""Who calls the directory API and what they may change: bearer tokens carrying a role.

Roles (``eo token issue``): ``admin`` may do everything; ``staff`` may read; ``provider`` may
read, and write its own provider record and its own sites, nothing else. The configured
``settings.admin_token`` (``DIRECTORY_ADMIN_TOKEN``, or ``.state/admin-token`` of ``eo run``)
is a bootstrap admin token, so the first tokens can be issued and ``make run`` keeps working.

``BearerAuth`` authenticates every request except to routes marked ``PUBLIC`` and the OpenAPI
document: no token, or an unknown or revoked one, is a 401 with ``WWW-Authenticate: Bearer``.
The ``writers`` guard then decides writes from the path (403), and controllers check the
provider a body names with ``require_owner``.
"""

import secrets
from typing import Any

import asyncpg
import msgspec
from litestar import Request
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.handlers.base import BaseRouteHandler
from litestar.middleware import AbstractAuthenticationMiddleware, AuthenticationResult

from contracts.common import Slug
from services.directory.errors import Forbidden, InvalidToken, MissingToken
from services.directory.settings import DirectorySettings
from services.directory.store import DirectoryStore
from services.directory.tokens import Role, TokenStore

#: ``opt`` of the routes anyone may call: ``BearerAuth`` skips them.
PUBLIC: dict[str, Any] = {"exclude_from_auth": True}


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    """The caller a token stands for."""

    token_id: str
    role: Role
    provider_id: str | None = None

    def may_write(self, provider_id: str) -> bool:
        """May change records that belong to ``provider_id``."""
        return self.role == "admin" or (self.role == "provider" and provider_id == self.provider_id)


async def identify(
    authorization: str | None, settings: DirectorySettings, pool: asyncpg.Pool
) -> Principal:
    """The principal of an ``Authorization`` header, or ``Unauthenticated``."""
    if not authorization:
        raise MissingToken("this endpoint needs a token: Authorization: Bearer <token>")
    scheme, _space, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise InvalidToken("the Authorization header must read: Bearer <token>")
    bootstrap = settings.admin_token
    if bootstrap and secrets.compare_digest(token.encode(), bootstrap.encode()):
        return Principal(token_id="bootstrap", role="admin")
    async with pool.acquire() as conn:
        found = await TokenStore(conn).find_active(token)
    if found is None:
        raise InvalidToken("the token is unknown or revoked")
    return Principal(token_id=found.id, role=found.role, provider_id=found.provider_id)


class BearerAuth(AbstractAuthenticationMiddleware):
    """Sets ``request.user`` to the caller's ``Principal``; routes with ``opt=PUBLIC`` skip it."""

    async def authenticate_request(
        self, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        state = connection.app.state
        principal = await identify(
            connection.headers.get("authorization"), state.settings, state.pool
        )
        return AuthenticationResult(user=principal, auth=principal.token_id)


def provide_principal(request: Request[Principal, str, State]) -> Principal:
    return request.user


def require_owner(principal: Principal, provider_id: str, *, field: str) -> None:
    """``Forbidden`` unless ``principal`` may write records of ``provider_id``."""
    if not principal.may_write(provider_id):
        raise Forbidden(
            f"this token may not change records of provider {provider_id!r}", field=field
        )


async def writers(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard of every write: an admin; or a provider, for the provider or site in the path."""
    principal: Principal = connection.user
    if principal.role == "admin":
        return
    if principal.role != "provider":
        raise Forbidden(f"a {principal.role} token may read, not write")
    params = connection.path_params
    if "provider_id" in params:
        require_owner(principal, params["provider_id"], field="provider_id")
    if "site_id" in params and _is_slug(params["site_id"]):
        async with connection.app.state.pool.acquire() as conn:
            owner = await DirectoryStore(conn).site_owner(params["site_id"])
        # A site not there yet is created by PUT for the provider its body names.
        if owner is not None:
            require_owner(principal, owner, field="site_id")


def _is_slug(text: str) -> bool:
    # Anything else fails the handler's own validation (422) and cannot name a stored site.
    try:
        msgspec.convert(text, Slug)
    except msgspec.ValidationError:
        return False
    return True
