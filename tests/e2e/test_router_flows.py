"""The router end to end on real JetStream and PostgreSQL (DESIGN.md sections 1, 3, 4 and 6)."""

import uuid
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from contracts.common import ClientLocation
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    CES_SITE,
    ONTRAC,
    ONTRAC_SITE,
    Observer,
    answer,
    cancel,
    make_request,
    send_cancel,
    send_request,
    send_response,
)
from tests.waits import until

pytestmark = pytest.mark.e2e


async def refused_last(router: AsyncTestClient, referral_id: uuid.UUID) -> dict[str, Any]:
    """The router's view of the referral once its history ends with a refused message."""

    async def view() -> dict[str, Any] | None:
        found: dict[str, Any] = (await router.get(f"/api/v1/referrals/{referral_id}")).json()
        return found if found["history"][-1].get("refused") else None

    return await until(view, what=f"a refusal at the end of referral {referral_id}'s history")


async def test_accept(router, observer: Observer, nc, router_settings) -> None:
    request = make_request()
    await send_request(nc.jetstream(), request)
    offer = await observer.until_offer(request.referral_id, 1)
    assert (offer.provider_id, offer.site_id) == (CCA, CCA_SITE)
    assert offer.distance_km == pytest.approx(11.33, abs=0.01)
    assert offer.client_ref == request.client.client_ref

    await send_response(nc.jetstream(), CCA, answer(offer, "accept"))
    final = await observer.until_terminal(request.referral_id)
    assert final.status == "accepted"
    assert observer.statuses(request.referral_id) == ["received", "offered", "accepted"]

    view = (await router.get(f"/api/v1/referrals/{request.referral_id}")).json()
    assert view["status"] == "accepted"
    assert [h["event"] for h in view["history"]] == ["receive", "offer", "accept"]
    assert view["history"][1]["explanation"]["rule"] == "nearest"
    conn = await asyncpg.connect(router_settings.database_url)
    try:
        reserved = await conn.fetchval(
            "SELECT reserved FROM directory.site WHERE id = $1", CCA_SITE
        )
    finally:
        await conn.close()
    assert reserved == 1  # an accepted referral keeps its place


async def test_decline_reroutes_to_the_next_nearest(router, observer: Observer, nc) -> None:
    request = make_request()
    js = nc.jetstream()
    await send_request(js, request)
    first = await observer.until_offer(request.referral_id, 1)
    assert first.site_id == CCA_SITE
    await send_response(js, CCA, answer(first, "decline", "no intake this month"))
    second = await observer.until_offer(request.referral_id, 2)
    assert (second.provider_id, second.site_id) == (CES, CES_SITE)
    assert second.distance_km == pytest.approx(36.9, abs=0.05)
    await send_response(js, CES, answer(second, "accept"))
    await observer.until_terminal(request.referral_id)
    assert observer.statuses(request.referral_id) == [
        "received",
        "offered",
        "declined",
        "offered",
        "accepted",
    ]
    declined = next(s for s in observer.status if s.status == "declined")
    assert declined.reason == f"declined by {CCA}: no intake this month"
    rerouted = observer.status[-2].explanation
    assert rerouted is not None
    assert rerouted.excluded == {"already_offered": 1}


async def test_all_decline_then_unmatched(router, observer: Observer, nc) -> None:
    request = make_request()
    js = nc.jetstream()
    await send_request(js, request)
    for attempt, provider in enumerate([CCA, CES, ONTRAC], start=1):
        offer = await observer.until_offer(request.referral_id, attempt)
        assert offer.provider_id == provider
        await send_response(js, provider, answer(offer, "decline"))
    final = await observer.until_terminal(request.referral_id)
    assert final.status == "unmatched"
    assert final.explanation is not None
    assert final.explanation.rule == "no_suitable_site"
    assert final.explanation.excluded == {"already_offered": 3}


async def test_max_distance_excluding_everything_is_unmatched(
    router, observer: Observer, nc
) -> None:
    request = make_request(max_distance_km=5.0)
    await send_request(nc.jetstream(), request)
    final = await observer.until_terminal(request.referral_id)
    assert final.status == "unmatched"
    assert final.explanation is not None
    assert final.explanation.excluded == {"distance": 3}
    assert "distance 3" in final.explanation.text
    assert observer.offers(request.referral_id) == []


async def test_same_referral_published_twice_is_one_referral(
    router, observer: Observer, nc, router_settings
) -> None:
    request = make_request()
    js = nc.jetstream()
    await send_request(js, request)
    # The same bytes again (JetStream drops it by Nats-Msg-Id), then the same referral id with
    # a new message id (the router's unique key catches it).
    await send_request(js, request)
    again = make_request(referral_id=request.referral_id)
    await send_request(js, again)
    await observer.until_offer(request.referral_id, 1)
    # Nothing more happens: a cancel sent after the copies is handled after them (one
    # referral's messages in stream order) and published after whatever they made, so once
    # the observer has its status event it has seen everything the copies led to.
    await send_cancel(js, cancel(request.referral_id))
    await observer.until_terminal(request.referral_id)
    assert len(observer.offers(request.referral_id)) == 1
    assert observer.statuses(request.referral_id) == ["received", "offered", "cancelled"]
    conn = await asyncpg.connect(router_settings.database_url)
    try:
        offers = await conn.fetchval(
            "SELECT count(*) FROM router.offer WHERE referral_id = $1", request.referral_id
        )
        outcome = await conn.fetchval(
            "SELECT outcome FROM router.processed WHERE message_id = $1", again.message_id
        )
    finally:
        await conn.close()
    assert offers == 1
    assert outcome == "duplicate_referral"


async def test_cancel_withdraws_an_open_offer(
    router, observer: Observer, nc, router_settings
) -> None:
    request = make_request()
    js = nc.jetstream()
    await send_request(js, request)
    offer = await observer.until_offer(request.referral_id, 1)
    await send_cancel(js, cancel(request.referral_id, "client found work"))
    final = await observer.until_terminal(request.referral_id)
    assert final.status == "cancelled"
    assert final.site_id == offer.site_id
    assert "withdrawn" in (final.reason or "")
    # The provider's late accept changes nothing and is recorded as refused.
    await send_response(js, CCA, answer(offer, "accept"))
    view = await refused_last(router, request.referral_id)
    assert view["status"] == "cancelled"
    assert view["history"][-1]["reason"] == "the referral is already cancelled"
    conn = await asyncpg.connect(router_settings.database_url)
    try:
        reserved = await conn.fetchval(
            "SELECT reserved FROM directory.site WHERE id = $1", CCA_SITE
        )
    finally:
        await conn.close()
    assert reserved == 0


async def test_response_from_another_provider_is_refused(router, observer: Observer, nc) -> None:
    request = make_request()
    js = nc.jetstream()
    await send_request(js, request)
    offer = await observer.until_offer(request.referral_id, 1)
    await send_response(js, CES, answer(offer, "accept"))  # CES answers CCA's offer
    view = await refused_last(router, request.referral_id)
    assert view["status"] == "offered"
    assert view["history"][-1].get("refused") is True
    assert view["history"][-1]["reason"] == f"provider {CES} does not hold the open offer"


async def test_unknown_referral_is_404_problem(router) -> None:
    response = await router.get(f"/api/v1/referrals/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    bad = await router.get("/api/v1/referrals/not-a-uuid")
    assert bad.status_code in (400, 404, 422)


async def test_health_and_ready(router) -> None:
    assert (await router.get("/health")).json() == {"status": "ok"}
    ready = await router.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"


async def test_postal_code_and_point_locations(router, observer: Observer, nc) -> None:
    by_point = make_request(location=ClientLocation(lat=44.9, lon=-76.25))  # Perth
    await send_request(nc.jetstream(), by_point)
    offer = await observer.until_offer(by_point.referral_id, 1)
    assert offer.site_id == CES_SITE
    by_postal = make_request(location=ClientLocation(postal_code="K7A 1A1"))  # Smiths Falls
    await send_request(nc.jetstream(), by_postal)
    offer = await observer.until_offer(by_postal.referral_id, 1)
    assert offer.site_id == ONTRAC_SITE
