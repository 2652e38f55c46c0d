"""The office finder page at ``/``: static HTML, CSS and JavaScript (``web/``) over the public
JSON API (search, community suggestions, taxonomy). No template engine and no build step: the
page is the same for everyone, and the browser's language picks English or French.
"""

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from services.access.auth import PUBLIC

WEB = Path(__file__).parent / "web"

#: What the page may load and talk to: itself only (no inline script, no third party).
_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


@get("/", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def office_finder() -> Response[bytes]:
    """The office finder (read from disk per request: it is small, and edits show at once)."""
    return Response(
        (WEB / "index.html").read_bytes(),
        media_type="text/html",
        headers=_SECURITY_HEADERS,
    )


static_files = create_static_files_router(
    path="/static",
    directories=[WEB],
    opt=PUBLIC,
    cache_control=CacheControlHeader(max_age=300),
    include_in_schema=False,
)
