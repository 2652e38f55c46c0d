"""Who may read a referral over the router's HTTP API (issue 15, item 1; DESIGN.md 3d): the
HTTP half of the cross-party matrix for GET /api/v1/referrals/{id}."""

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from services.access.tokens import TokenStore
from tests.conftest import bearer
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    CES_SITE,
    ONTRAC,
    SYSTEM,
    Observer,
    answer,
    make_request,
    send_request,
    send_response,
)

pytestmark = pytest.mark.e2e

DECLINE_REASON = "no evening intake at Carleton Place"

Issue = Callable[..., Awaitable[str]]


async def get(router: AsyncTestClient, path: str, headers: dict[str, str] | None) -> Any:
    """GET ``path`` with ``headers`` (None: with no Authorization header at all)."""
    if headers is not None:
        return await router.get(path, headers=headers)
    admin = router.headers.pop("Authorization")
    try:
        return await router.get(path)
    finally:
        router.headers["Authorization"] = admin


async def declined_then_accepted(observer: Observer, nc: Any) -> uuid.UUID:
    """A referral of ``SYSTEM``: offered to CCA, which declines with a reason, then to CES,
    which accepts."""
    js = nc.jetstream()
    request = make_request()
    await send_request(js, request)
    first = await observer.until_offer(request.referral_id, 1)
    assert first.provider_id == CCA
    await send_response(js, CCA, answer(first, "decline", DECLINE_REASON))
    second = await observer.until_offer(request.referral_id, 2)
    assert (second.provider_id, second.site_id) == (CES, CES_SITE)
    await send_response(js, CES, answer(second, "accept"))
    assert (await observer.until_terminal(request.referral_id)).status == "accepted"
    return request.referral_id


async def test_each_party_reads_only_its_own_referrals(
    router: AsyncTestClient, observer: Observer, nc: Any, issue_token: Issue
) -> None:
    rid = await declined_then_accepted(observer, nc)
    path = f"/api/v1/referrals/{rid}"
    staff = bearer(await issue_token("staff"))
    own_system = bearer(await issue_token("ow", system=SYSTEM))
    other_system = bearer(await issue_token("ow", system="ow-elsewhere"))
    cca = bearer(await issue_token("provider", CCA))
    ces = bearer(await issue_token("provider", CES))
    ontrac = bearer(await issue_token("provider", ONTRAC))

    # Anonymous, or a token nobody issued: 401, a problem with its challenge.
    for headers in (None, bearer("tok_000000000000.not-a-token"), {"Authorization": "Basic x"}):
        refused = await get(router, path, headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "history" not in refused.text

    # Another party's referral is not confirmed to exist.
    for headers in (staff, other_system, ontrac):
        assert (await get(router, path, headers)).status_code == 404

    full = (await get(router, path, dict(router.headers))).json()
    assert [h["event"] for h in full["history"]] == [
        "receive",
        "offer",
        "decline",
        "offer",
        "accept",
    ]
    assert (await get(router, path, own_system)).json() == full

    # The declining provider: its own offer and decline; nothing of CES's site or acceptance.
    declined = await get(router, path, cca)
    assert declined.status_code == 200
    seen = declined.json()
    assert [o["provider_id"] for o in seen["offers"]] == [CCA]
    assert "current_offer" not in seen
    assert [h["event"] for h in seen["history"]] == ["receive", "offer", "decline"]
    assert DECLINE_REASON in seen["history"][2]["reason"]
    assert CES not in declined.text
    assert CES_SITE not in declined.text

    # The accepting provider holds it: its own offer, and never CCA's decline or site.
    held = await get(router, path, ces)
    assert held.status_code == 200
    mine = held.json()
    assert mine["status"] == "accepted"
    assert [o["provider_id"] for o in mine["offers"]] == [CES]
    assert mine.get("current_offer") == full.get("current_offer")  # its own, if any
    assert [h["event"] for h in mine["history"]] == ["receive", "offer", "accept"]
    assert DECLINE_REASON not in held.text
    assert CCA not in held.text
    assert CCA_SITE not in held.text


async def test_an_unknown_referral_is_404_for_every_authenticated_caller(
    router: AsyncTestClient, issue_token: Issue
) -> None:
    path = f"/api/v1/referrals/{uuid.uuid4()}"
    callers = [
        router.headers,
        bearer(await issue_token("staff")),
        bearer(await issue_token("ow", system=SYSTEM)),
        bearer(await issue_token("provider", CCA)),
    ]
    for headers in callers:
        missing = await get(router, path, dict(headers))
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert (await get(router, path, None)).status_code == 401


async def test_a_revoked_token_is_refused_from_the_next_request(
    router: AsyncTestClient, issue_token: Issue, router_settings: Any
) -> None:
    text = await issue_token("ow", system=SYSTEM)
    path = f"/api/v1/referrals/{uuid.uuid4()}"
    assert (await get(router, path, bearer(text))).status_code == 404
    conn = await asyncpg.connect(router_settings.database_url)
    try:
        await TokenStore(conn).revoke(text.partition(".")[0])
    finally:
        await conn.close()
    assert (await get(router, path, bearer(text))).status_code == 401


async def test_health_ready_and_the_openapi_document_stay_public(router: AsyncTestClient) -> None:
    for path in ("/health", "/ready", "/schema/openapi.json"):
        assert (await get(router, path, None)).status_code == 200, path
    schema = (await get(router, "/schema/openapi.json", None)).json()
    assert "bearer" in schema["components"]["securitySchemes"]
