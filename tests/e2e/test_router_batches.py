"""The batch-native router (issue 16): a fetched batch is one transaction, and a message that
fails does not fail its neighbours; it is retried alone, with the later messages of its
referral held back so one referral's messages stay in stream order."""

import uuid
from typing import Any

import asyncpg
import msgspec
import pytest

from contracts.referrals import ReferralRequested
from services.router import consumer, handlers
from services.router.settings import RouterSettings
from services.router.stream import set_up_stream
from tests.conftest import router_client
from tests.referrals import (
    CCA_SITE,
    CES_SITE,
    Observer,
    answer,
    cancel,
    make_request,
    send_cancel,
    send_request,
    send_response,
)

pytestmark = pytest.mark.e2e


async def test_a_failing_message_is_retried_alone_and_its_referral_keeps_its_order(
    router_settings: RouterSettings,
    observer: Observer,
    nc: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = msgspec.structs.replace(router_settings, transaction="batch", backoff_s=(0.5,))
    js = nc.jetstream()
    await set_up_stream(js, settings)
    first, unlucky, last = make_request(), make_request(), make_request()
    failures: list[uuid.UUID] = []
    handle_request = handlers.on_requested

    async def once_broken(msg: ReferralRequested, system: str, **kw: Any) -> Any:
        if msg.referral_id == unlucky.referral_id and not failures:
            failures.append(msg.referral_id)
            raise RuntimeError("a bug that strikes once")
        return await handle_request(msg, system, **kw)

    monkeypatch.setattr(consumer, "on_requested", once_broken)
    # All four wait in the stream before the router starts, so one fetch takes them together.
    for request in (first, unlucky):
        await send_request(js, request)
    await send_cancel(js, cancel(unlucky.referral_id, "the client found work"))
    await send_request(js, last)

    async with router_client(settings):
        # The neighbours were handled in the batch the failure was in...
        for request in (first, last):
            offered = await observer.until_status(request.referral_id, "offered")
            assert offered.attempt == 1
        # ...and the unlucky referral, retried alone, was offered and then cancelled, in its
        # stream order (the cancel was held back with it, not handled before the request).
        assert (await observer.until_terminal(unlucky.referral_id)).status == "cancelled"
    assert failures == [unlucky.referral_id]
    assert observer.statuses(unlucky.referral_id) == ["received", "offered", "cancelled"]
    for request in (first, last):
        assert observer.statuses(request.referral_id) == ["received", "offered"]


def _consumer(test_client: Any) -> Any:
    return test_client.app.state.router.consumer


async def _places(database_url: str) -> dict[str, tuple[int, int, int]]:
    """Each site's (places in use, capacity, referrals holding or offered a place there)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT s.id, s.reserved, s.capacity, count(o.id) AS held FROM directory.site s"
            " LEFT JOIN router.offer o ON o.site_id = s.id AND o.state IN ('open', 'accepted')"
            " GROUP BY s.id"
        )
    finally:
        await conn.close()
    return {r["id"]: (r["reserved"], r["capacity"], r["held"]) for r in rows}


async def test_a_batch_is_planned_in_memory_and_written_set_based(
    router_settings: RouterSettings, observer: Observer, nc: Any
) -> None:
    """20 requests in one fetch, then their 20 declines: every message handled by the plan
    (none deferred to a savepoint, none replanned), each referral's story as the per-message
    path tells it, and every place taken is one an open offer holds."""
    settings = msgspec.structs.replace(router_settings, transaction="batch")
    js = nc.jetstream()
    await set_up_stream(js, settings)
    requests = [make_request() for _ in range(20)]
    for request in requests:
        await send_request(js, request)
    async with router_client(settings) as client:
        consumer = _consumer(client)
        offers = [await observer.until_offer(r.referral_id, 1) for r in requests]
        assert {o.site_id for o in offers} == {CCA_SITE}  # the nearest, with 25 places
        assert (consumer.planned, consumer.deferred, consumer.replanned) == (20, 0, 0)
        for offer in offers:
            await send_response(js, offer.provider_id, answer(offer, "decline", "no room"))
        again = [await observer.until_offer(r.referral_id, 2) for r in requests]
        assert {o.site_id for o in again} == {CES_SITE}  # the next nearest
        assert (consumer.planned, consumer.deferred, consumer.replanned) == (40, 0, 0)
    for request in requests:
        assert observer.statuses(request.referral_id) == [
            "received",
            "offered",
            "declined",
            "offered",
        ]
    places = await _places(settings.database_url)
    assert places[CCA_SITE][0] == places[CCA_SITE][2] == 0
    assert places[CES_SITE][0] == places[CES_SITE][2] == 20


async def test_when_places_run_out_within_a_batch_the_plan_moves_on_to_the_next_site(
    router_settings: RouterSettings, observer: Observer, nc: Any
) -> None:
    """Two places at the nearest site and four requests in one fetch: the plan offers the two,
    and the other two the next site, explaining that the nearest is full, as handling them
    one by one would; no site holds more offers than places."""
    settings = msgspec.structs.replace(router_settings, transaction="batch")
    conn = await asyncpg.connect(settings.database_url)
    try:
        await conn.execute("UPDATE directory.site SET capacity = 2 WHERE id = $1", CCA_SITE)
    finally:
        await conn.close()
    js = nc.jetstream()
    await set_up_stream(js, settings)
    requests = [make_request() for _ in range(4)]
    for request in requests:
        await send_request(js, request)
    async with router_client(settings) as client:
        consumer = _consumer(client)
        offers = [await observer.until_offer(r.referral_id, 1) for r in requests]
        assert (consumer.planned, consumer.deferred, consumer.replanned) == (4, 0, 0)
    assert [o.site_id for o in offers] == [CCA_SITE, CCA_SITE, CES_SITE, CES_SITE]
    for offer in offers[2:]:
        status = await observer.until_status(offer.referral_id, "offered")
        assert status.explanation is not None
        assert status.explanation.excluded.get("not_accepting_or_full") == 1
    for reserved, capacity, held in (await _places(settings.database_url)).values():
        assert reserved == held <= capacity


async def test_what_the_plan_cannot_answer_goes_to_the_database_in_stream_order(
    router_settings: RouterSettings, observer: Observer, nc: Any
) -> None:
    """A request with a radius (its candidates are not read with the batch's) and its cancel
    are handled on the database, in that order, in the same transaction; their neighbours
    are planned."""
    settings = msgspec.structs.replace(router_settings, transaction="batch")
    js = nc.jetstream()
    await set_up_stream(js, settings)
    before, within, after = make_request(), make_request(max_distance_km=50.0), make_request()
    for request in (before, within):
        await send_request(js, request)
    await send_cancel(js, cancel(within.referral_id, "the client moved"))
    await send_request(js, after)
    async with router_client(settings) as client:
        consumer = _consumer(client)
        assert (await observer.until_terminal(within.referral_id)).status == "cancelled"
        for request in (before, after):
            await observer.until_offer(request.referral_id, 1)
        assert (consumer.planned, consumer.deferred, consumer.replanned) == (2, 2, 0)
    assert observer.statuses(within.referral_id) == ["received", "offered", "cancelled"]
