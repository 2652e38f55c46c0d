"""The router rides out a PostgreSQL outage and a NATS restart by itself (DESIGN.md section 6).

Own servers on free ports (not the session's), since they are stopped and started here.
"""

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from services.directory.schema import MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.infra.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import default_users
from services.router.app import create_app
from services.router.settings import RouterSettings
from tests.referrals import Observer, make_request, send_request

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedNats]]:
    state = Path(tempfile.mkdtemp(prefix="eo-test-outage-"))
    postgres = EmbeddedPostgres(state / "postgres", port=free_port(), durable=False)
    users = default_users(provider_ids=seed_provider_ids())
    broker = EmbeddedNats(state / "nats", port=free_port(), durable=False, users=users)
    postgres.start()
    broker.start()
    try:
        yield postgres, broker
    finally:
        broker.stop()
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
async def running(
    own_servers: tuple[EmbeddedPostgres, EmbeddedNats],
) -> AsyncIterator[tuple[Observer, NatsClient]]:
    postgres, broker = own_servers
    conn = await asyncpg.connect(postgres.url)
    try:
        await apply_migrations(conn, "directory", MIGRATIONS)
        await load_seed(conn)
    finally:
        await conn.close()
    settings = RouterSettings(
        database_url=postgres.url,
        nats_url=broker.url,
        sweep_interval_s=0.2,
        fetch_timeout_s=0.2,
        backoff_s=(0.5, 1.0),
        pool_min_size=1,
        pool_max_size=2,
    )
    nc = await nats.connect(broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    observer = Observer()
    await observer.start(nc)
    try:
        async with AsyncTestClient(app=create_app(settings)):
            yield observer, nc
    finally:
        await nc.close()


async def test_database_outage_delays_but_loses_nothing(
    own_servers: tuple[EmbeddedPostgres, EmbeddedNats], running: tuple[Observer, NatsClient]
) -> None:
    postgres, _ = own_servers
    observer, nc = running
    before = make_request()
    await send_request(nc.jetstream(), before)
    await observer.until_offer(before.referral_id, 1)

    await asyncio.to_thread(postgres.stop)
    during = make_request()
    await send_request(nc.jetstream(), during)  # JetStream holds it while the database is down
    await asyncio.sleep(2.0)
    assert observer.offers(during.referral_id) == []
    await asyncio.to_thread(postgres.start)

    offer = await observer.until_offer(during.referral_id, 1, within=30)
    assert offer.attempt == 1
    assert observer.statuses(during.referral_id) == ["received", "offered"]


async def test_nats_restart_is_survived(
    own_servers: tuple[EmbeddedPostgres, EmbeddedNats], running: tuple[Observer, NatsClient]
) -> None:
    _, broker = own_servers
    observer, nc = running
    await asyncio.to_thread(broker.stop)
    await asyncio.sleep(1.0)
    await asyncio.to_thread(broker.start)  # same store: the stream and the consumer survive

    after = make_request()
    for _ in range(100):  # our own client reconnects too
        if nc.is_connected:
            break
        await asyncio.sleep(0.1)
    await send_request(nc.jetstream(), after)
    offer = await observer.until_offer(after.referral_id, 1, within=30)
    assert offer.attempt == 1
