"""What the pages of both services share: the base stylesheet and the language switch
(``common/``, served at ``/common`` by the directory and the router alike), the headers every
page is sent with, and serving a page's HTML with its few placeholders filled in.

No template engine: a page is a static file in which ``__NAME__`` placeholders (the other
service's public address, say) are replaced, HTML-escaped, when it is served.
"""

import html
from collections.abc import Mapping
from pathlib import Path

from litestar import Response, Router
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from services.access.auth import PUBLIC

__all__ = ["COMMON", "SECURITY_HEADERS", "common_static_router", "html_page", "static_router"]

COMMON = Path(__file__).parent / "common"

#: What a page may load and talk to: its own origin only (no inline script, no third party).
#: Links to the other service are navigation, which this does not restrict.
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def static_router(path: str, directory: Path) -> Router:
    """``directory``'s files at ``path``: public, cached for five minutes, not in the schema."""
    return create_static_files_router(
        path=path,
        directories=[directory],
        opt=PUBLIC,
        cache_control=CacheControlHeader(max_age=300),
        include_in_schema=False,
    )


def common_static_router() -> Router:
    """The shared stylesheet and language switch at ``/common``."""
    return static_router("/common", COMMON)


def html_page(path: Path, placeholders: Mapping[str, str] | None = None) -> Response[bytes]:
    """The page at ``path`` (read per request: it is small, and edits show at once), each
    ``__NAME__`` of ``placeholders`` replaced by its value, HTML-escaped."""
    text = path.read_text(encoding="utf-8")
    for name, value in (placeholders or {}).items():
        text = text.replace(f"__{name}__", html.escape(value, quote=True))
    return Response(text.encode(), media_type="text/html", headers=SECURITY_HEADERS)
