"""The router's pages (issue 15, items 3-5): the provider inbox at ``/inbox`` and the OW
referral tracker at ``/tracker``. Static HTML, CSS and JavaScript (``web/``) over the router's
own API, with the shared stylesheet and language switch (``services.web``) at ``/common``.

``PAGES`` are the route handlers ``create_app`` mounts. The pages are public (signing in happens
in the browser, with a token the page sends to the API); no referral data is in them.
"""

from pathlib import Path
from typing import Any

from litestar import Response, get
from litestar.datastructures import State

from services.access.auth import PUBLIC
from services.router.settings import RouterSettings
from services.web import common_static_router, html_page, static_router

WEB = Path(__file__).parent / "web"


def _page(name: str, state: State) -> Response[bytes]:
    settings: RouterSettings = state.settings
    return html_page(WEB / name, {"FINDER_URL": settings.finder_url})


@get("/inbox", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def inbox(state: State) -> Response[bytes]:
    """The provider inbox: open offers with their deadlines, and the caseload."""
    return _page("inbox.html", state)


@get("/tracker", opt=PUBLIC, include_in_schema=False, sync_to_thread=False)
def tracker(state: State) -> Response[bytes]:
    """The OW referral tracker: the system's referrals, their history, cancel or withdraw."""
    return _page("tracker.html", state)


PAGES: list[Any] = [inbox, tracker, static_router("/static", WEB), common_static_router()]
