"""Who may write: for now, whoever presents the admin token from the settings."""

import secrets
from typing import Any

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler


def require_admin(
    connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
) -> None:
    """Guard: ``Authorization: Bearer <admin token>``. With no token configured, nobody writes."""
    expected: str | None = connection.app.state.settings.admin_token
    scheme, _space, token = connection.headers.get("authorization", "").partition(" ")
    if (
        scheme.lower() != "bearer"
        or not expected
        or not secrets.compare_digest(token.encode(), expected.encode())
    ):
        raise NotAuthorizedException("an admin bearer token is required to write")
