"""What a caller may change in the directory; who the caller is, is ``services.access``.

Roles (``eo token issue``): ``admin`` may do everything; ``staff`` and ``ow`` may read;
``provider`` may read, and write its own provider record and its own sites, nothing else.

``services.access.auth.BearerAuth`` authenticates every request except to routes marked
``PUBLIC`` and the OpenAPI document (401). The ``writers`` guard then decides writes from the
path (403), and controllers check the provider a body names with ``require_owner``.
"""

from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from contracts.common import Slug
from services.access.principal import Principal
from services.directory.errors import Forbidden
from services.directory.store import DirectoryStore


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
