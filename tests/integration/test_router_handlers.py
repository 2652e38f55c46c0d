"""Router handlers against real PostgreSQL (no NATS): deadlines, replicas, capacity."""

import asyncio
import datetime

import asyncpg
import pytest

from services.geo import default_gazetteer
from services.router.directory import SqlDirectory
from services.router.handlers import on_requested, on_timeout
from services.router.model import Handled
from services.router.store import SqlStore
from services.router.unit_of_work import UnitOfWork
from tests.referrals import CCA_SITE, CES_SITE, make_request

pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 11, 21, 15, 0, tzinfo=datetime.UTC)
TIMEOUT = datetime.timedelta(days=2)


def context(conn: asyncpg.Connection, now: datetime.datetime = NOW) -> UnitOfWork:
    return UnitOfWork(
        store=SqlStore(conn),
        directory=SqlDirectory(conn),
        now=now,
        deadline=lambda at: at + TIMEOUT,
    )


async def request_in_tx(conn: asyncpg.Connection, **kwargs) -> tuple[Handled, UnitOfWork]:
    ctx = context(conn)
    async with conn.transaction():
        handled = await on_requested(
            make_request(**kwargs), "ow-test", uow=ctx, locate=default_gazetteer().resolve
        )
        await ctx.flush()
    return handled, ctx


async def test_request_commits_referral_offer_history_reservation_and_outbox(conn) -> None:
    handled, ctx = await request_in_tx(conn)
    assert handled.outcome == "offered"
    assert [row.subject for row in ctx.outbox] == [
        "referral.status.ow-test",  # received
        "referral.status.ow-test",  # offered
        "referral.offered.canadian-career-academy",
    ]
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM router.referral) AS referrals,"
        " (SELECT count(*) FROM router.offer) AS offers,"
        " (SELECT count(*) FROM router.history) AS history,"
        " (SELECT count(*) FROM router.outbox WHERE sent_at IS NULL) AS unsent,"
        " (SELECT reserved FROM directory.site WHERE id = $1) AS reserved",
        CCA_SITE,
    )
    assert dict(counts) == {"referrals": 1, "offers": 1, "history": 2, "unsent": 3, "reserved": 1}


async def test_deadline_passed_counts_as_a_timeout_decline(conn) -> None:
    handled, _ = await request_in_tx(conn)
    referral_id = handled.referral_id
    assert referral_id is not None

    early = context(conn, NOW + TIMEOUT - datetime.timedelta(seconds=1))
    async with conn.transaction():
        assert await early.store.lock_expired(early.now, 10) == []
        assert (await on_timeout(referral_id, uow=early)).outcome == "nothing_due"
        await early.flush()

    late = context(conn, NOW + TIMEOUT)
    async with conn.transaction():
        assert await late.store.lock_expired(late.now, 10) == [referral_id]
        handled = await on_timeout(referral_id, uow=late)
        await late.flush()
    assert handled.outcome == "offered"
    assert handled.reason is not None
    assert handled.reason.startswith(CES_SITE)
    history = await conn.fetch(
        "SELECT event, status, reason FROM router.history WHERE referral_id = $1 ORDER BY id",
        referral_id,
    )
    assert [(h["event"], h["status"]) for h in history] == [
        ("receive", "received"),
        ("offer", "offered"),
        ("expire", "expired"),
        ("offer", "offered"),
    ]
    assert history[2]["reason"] == "timeout"
    reserved = dict(await conn.fetch("SELECT id, reserved FROM directory.site"))
    assert reserved[CCA_SITE] == 0
    assert reserved[CES_SITE] == 1


async def test_a_replica_skips_deadlines_another_replica_holds(conn, fresh_database_url) -> None:
    handled, _ = await request_in_tx(conn)
    late = NOW + TIMEOUT
    other = await asyncpg.connect(fresh_database_url)
    try:
        async with conn.transaction():
            assert await SqlStore(conn).lock_expired(late, 10) == [handled.referral_id]
            async with other.transaction():
                assert await SqlStore(other).lock_expired(late, 10) == []
    finally:
        await other.close()


async def test_concurrent_requests_never_overcommit_capacity_one(conn, fresh_database_url) -> None:
    await conn.execute("UPDATE directory.site SET capacity = 1")
    connections = [await asyncpg.connect(fresh_database_url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(request_in_tx(c) for c in connections))
    finally:
        for c in connections:
            await c.close()
    outcomes = sorted(handled.outcome for handled, _ in results)
    assert outcomes == ["offered"] * 3 + ["unmatched"] * 3
    assert await conn.fetchval("SELECT max(reserved) FROM directory.site") == 1
    assert await conn.fetchval("SELECT count(DISTINCT site_id) FROM router.offer") == 3
