"""After acceptance, end to end on real JetStream and PostgreSQL (contract v1.1, DESIGN.md
sections 3 and 3c): progress reported back to the referring system, places given back, notices
to providers, and an OW system's own consumer that keeps what it missed."""

import uuid

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError

from contracts.codec import decode_outbound
from contracts.referrals import ProviderNotice, ReferralStatusChanged
from contracts.subjects import STREAM, ow_durable
from services.router.settings import RouterSettings
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    SYSTEM,
    Observer,
    answer,
    cancel,
    make_request,
    progress,
    send_cancel,
    send_progress,
    send_request,
    send_response,
)
from tests.waits import until

pytestmark = pytest.mark.e2e


async def places_in_use(settings: RouterSettings, site_id: str) -> tuple[int, int]:
    """The site's ``reserved`` counter, and what it should be: its open offers plus the
    referrals it holds (accepted or in service)."""
    conn = await asyncpg.connect(settings.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT s.reserved, (SELECT count(*) FROM router.offer o"
            " JOIN router.referral r ON r.id = o.referral_id WHERE o.site_id = s.id"
            " AND (o.state = 'open' OR (o.state = 'accepted'"
            " AND r.status IN ('accepted', 'in_service')))) AS held"
            " FROM directory.site s WHERE s.id = $1",
            site_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["reserved"], row["held"]


async def accept_one(nc: NatsClient, observer: Observer) -> uuid.UUID:
    request = make_request()
    await send_request(nc.jetstream(), request)
    offer = await observer.until_offer(request.referral_id, 1)
    assert offer.provider_id == CCA
    assert offer.source is not None
    assert (offer.source.system, offer.source.office_id) == (SYSTEM, "smiths-falls")
    await send_response(nc.jetstream(), CCA, answer(offer, "accept"))
    await observer.until_status(request.referral_id, "accepted")
    return request.referral_id


async def test_the_whole_loop_is_reported_to_the_referring_system(
    router, observer: Observer, nc: NatsClient, router_settings: RouterSettings
) -> None:
    rid = await accept_one(nc, observer)
    assert await places_in_use(router_settings, CCA_SITE) == (1, 1)
    await send_progress(nc.jetstream(), CCA, progress(rid, "in_service"))
    await observer.until_status(rid, "in_service")
    await send_progress(nc.jetstream(), CCA, progress(rid, "completed", "employed"))
    done = await observer.until_status(rid, "completed")
    assert (done.code, done.site_id) == ("employed", CCA_SITE)
    assert observer.statuses(rid) == ["received", "offered", "accepted", "in_service", "completed"]
    assert all(
        subject == f"referral.status.{SYSTEM}"
        for subject, data in observer.raw
        if subject.startswith("referral.status.")
    )
    assert await places_in_use(router_settings, CCA_SITE) == (0, 0)
    view = (await router.get(f"/api/v1/referrals/{rid}")).json()
    assert [h["event"] for h in view["history"]][-2:] == ["start", "complete"]
    assert view["history"][-1]["code"] == "employed"


async def test_withdrawal_after_acceptance_tells_the_provider_and_frees_the_place(
    router, observer: Observer, nc: NatsClient, router_settings: RouterSettings
) -> None:
    rid = await accept_one(nc, observer)
    await send_cancel(nc.jetstream(), cancel(rid, "client moved to Ottawa"))
    withdrawn = await observer.until_status(rid, "withdrawn")
    assert withdrawn.reason == "withdrawn by OW: client moved to Ottawa"
    [notice] = await observer.wait_for(lambda: observer.notices_for(rid) or None)
    assert (notice.kind, notice.reason) == ("referral_withdrawn", withdrawn.reason)
    assert await places_in_use(router_settings, CCA_SITE) == (0, 0)


async def test_a_report_on_a_referral_the_provider_does_not_hold_changes_nothing(
    router, observer: Observer, nc: NatsClient, router_settings: RouterSettings
) -> None:
    rid = await accept_one(nc, observer)
    await send_progress(nc.jetstream(), CES, progress(rid, "completed", "employed"))
    [notice] = await observer.wait_for(lambda: observer.notices_for(rid) or None)
    assert notice.kind == "progress_refused"
    assert notice.reason == f"provider {CES} does not hold the referral"
    assert ("referral.notice." + CES) in [s for s, _ in observer.raw]
    view = (await router.get(f"/api/v1/referrals/{rid}")).json()
    assert view["status"] == "accepted"
    assert view["history"][-1]["refused"] is True
    assert observer.statuses(rid)[-1] == "accepted"
    assert await places_in_use(router_settings, CCA_SITE) == (1, 1)


async def test_thirty_accept_and_complete_cycles_give_every_place_back(
    router, observer: Observer, nc: NatsClient, router_settings: RouterSettings
) -> None:
    for _ in range(30):  # more than the site's 25 places: none may leak
        rid = await accept_one(nc, observer)
        await send_progress(nc.jetstream(), CCA, progress(rid, "in_service"))
        await send_progress(nc.jetstream(), CCA, progress(rid, "completed", "plan_completed"))
        await observer.until_status(rid, "completed")
    assert await places_in_use(router_settings, CCA_SITE) == (0, 0)


async def test_an_ow_system_offline_during_fifty_events_gets_them_all_from_its_consumer(
    router, observer: Observer, nc: NatsClient
) -> None:
    js = nc.jetstream()
    with pytest.raises(NotFoundError):  # made by the router before its first status event
        await js.consumer_info(STREAM, ow_durable(SYSTEM))
    requests = [make_request() for _ in range(25)]  # received + offered: 50 status events
    for request in requests:
        await send_request(js, request)
    for request in requests:
        await observer.until_offer(request.referral_id, 1)

    # The system comes back and reads its own consumer (nobody read it live).
    sub = await js.pull_subscribe_bind(durable=ow_durable(SYSTEM), stream=STREAM)
    got: list[ReferralStatusChanged] = []

    async def drained() -> bool:
        try:
            batch = await sub.fetch(100, timeout=0.5)
        except TimeoutError:
            return len(got) >= 50
        for msg in batch:
            event = decode_outbound(msg.data)
            assert isinstance(event, ReferralStatusChanged)
            got.append(event)
            await msg.ack()
        return len(got) >= 50

    await until(drained, within=20, what="50 status events on the system's consumer")
    assert len(got) == 50
    wanted = {r.referral_id for r in requests}
    assert {e.referral_id for e in got} == wanted
    assert sorted(e.status for e in got) == ["offered"] * 25 + ["received"] * 25
    assert not [n for n in observer.notices if isinstance(n, ProviderNotice)]


async def test_a_note_with_personal_information_is_refused_and_never_published(
    router, observer: Observer, nc: NatsClient
) -> None:
    rid = await accept_one(nc, observer)
    careless = "call her at 613-555-0199"
    await send_progress(nc.jetstream(), CCA, progress(rid, "in_service", note=careless))
    [notice] = await observer.wait_for(lambda: observer.notices_for(rid) or None)
    assert notice.kind == "progress_refused"
    assert "a phone number" in notice.reason
    outbound = [d for s, d in observer.raw if not s.startswith("referral.progress.")]
    assert not [d for d in outbound if b"613-555-0199" in d]
    assert observer.statuses(rid)[-1] == "accepted"
