"""The office finder page at ``/``: static HTML, CSS and JavaScript (``web/``) over the public
JSON API (search, community suggestions, taxonomy). No template engine and no build step: the
page is the same for everyone but for the router's address in its links to the provider inbox
and the referral tracker; the shared switch (``services.web``) picks English or French.
"""

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import State

from services.access.auth import PUBLIC
from services.directory.settings import DirectorySettings
from services.web import html_page, static_router

WEB = Path(__file__).parent / "web"


@get("/", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def office_finder(state: State) -> Response[bytes]:
    """The office finder, its links pointing at the router's public address."""
    settings: DirectorySettings = state.settings
    return html_page(WEB / "index.html", {"ROUTER_URL": settings.router_url.rstrip("/")})


static_files = static_router("/static", WEB)
