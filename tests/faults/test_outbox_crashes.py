"""A router dies between the outbox commit and its publish, or between the publish and marking
the rows sent: the next router publishes what is missing, and nothing reaches the stream twice.

The dying router runs the real code path (``Consumer.dispatch`` commits; ``OutboxPublisher.publish``
publishes) and then stops short, as a SIGKILL at that point would: no mark-sent, no ack.
"""

import asyncio
import collections
import time

import asyncpg
import nats
import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from contracts.subjects import (
    ROUTER_DURABLE,
    STREAM,
    offered_subject,
    requested_subject,
    status_subject,
)
from services.geo import default_gazetteer
from services.router.app import create_app, wiring
from services.router.settings import RouterSettings
from services.router.stream import ensure_stream_and_consumer
from services.router.worker import Router
from tests.faults.harness import HEADER, Figures
from tests.referrals import CCA, SYSTEM, Observer, make_request, send_request

REQUESTED = requested_subject(SYSTEM)
STATUS = status_subject(SYSTEM)

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("crash", ["after commit", "after publish"])
async def test_a_crash_around_the_outbox_loses_and_duplicates_nothing(
    crash: str, router_settings: RouterSettings, nc: NatsClient, observer: Observer
) -> None:
    started = time.monotonic()
    js = nc.jetstream()
    await ensure_stream_and_consumer(js, router_settings)
    request = make_request()
    await send_request(js, request)

    dying = await nats.connect(router_settings.nats_url)
    pool = await asyncpg.create_pool(router_settings.database_url, min_size=1, max_size=1)
    try:
        dying_js = dying.jetstream()
        sub = await dying_js.pull_subscribe_bind(durable=ROUTER_DURABLE, stream=STREAM)
        [msg] = await sub.fetch(1, timeout=5)
        router = Router(
            pool, dying_js, router_settings, wiring(router_settings), default_gazetteer().resolve
        )
        async with pool.acquire() as conn:
            handled, rows = await router.consumer.dispatch(
                conn, msg.subject, msg.data, msg.metadata.sequence.stream
            )
        assert handled.outcome == "offered"
        if crash == "after publish":
            assert len(await router.publisher.publish(rows)) == len(rows)
    finally:
        await pool.close()
        await dying.close()  # the process is gone: nothing marked sent, nothing acked

    async with AsyncTestClient(app=create_app(router_settings)):
        await observer.until_offer(request.referral_id, 1)

        async def settled() -> bool:
            conn = await asyncpg.connect(router_settings.database_url)
            try:
                unsent = await conn.fetchval(
                    "SELECT count(*) FROM router.outbox WHERE sent_at IS NULL"
                )
            finally:
                await conn.close()
            info = await js.consumer_info(STREAM, ROUTER_DURABLE)
            return bool(unsent == 0 and info.num_ack_pending == 0 and info.num_pending == 0)

        deadline = time.monotonic() + 20
        while not await settled():
            assert time.monotonic() < deadline, "the new router did not settle"
            await asyncio.sleep(0.2)

    stored: collections.Counter[str] = collections.Counter()
    for subject in (REQUESTED, STATUS, offered_subject(CCA)):
        info = await js.stream_info(STREAM, subjects_filter=subject)
        stored.update(info.state.subjects or {})
    db = await asyncpg.connect(router_settings.database_url)
    try:
        offers = await db.fetchval("SELECT count(*) FROM router.offer")
        reserved = await db.fetchval("SELECT sum(reserved) FROM directory.site")
    finally:
        await db.close()
    # One request; its received and offered status events; one offer.
    expected = {REQUESTED: 1, STATUS: 2, offered_subject(CCA): 1}
    duplicated = sum(max(stored[s] - n, 0) for s, n in expected.items()) + max(offers - 1, 0)
    lost = sum(max(n - stored[s], 0) for s, n in expected.items())
    figures = Figures(
        test=f"crash {crash}",
        sent=1,
        terminal=0,
        lost=lost,
        duplicated=duplicated,
        accepted=0,
        unmatched=0,
        offers=offers,
        seconds=time.monotonic() - started,
        note=f"stream holds {dict(stored)}; {reserved} place reserved",
    )
    print(f"\n{HEADER}\n{figures.line()}", flush=True)
    assert dict(stored) == expected
    assert offers == 1
    assert reserved == 1
    assert figures.lost == 0
    assert figures.duplicated == 0
