"""Restart nats-server and, separately, PostgreSQL in the middle of a run: nothing lost, nothing
done twice, and the router recovers by itself. Own servers, since they are restarted here.
"""

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from services.directory.schema import MIGRATIONS as DIRECTORY_MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.infra.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import default_users
from services.router.app import MIGRATIONS as ROUTER_MIGRATIONS
from tests.faults.harness import (
    ProviderSimulator,
    RouterProcess,
    audit,
    send_referrals,
    wait_all_terminal,
)

pytestmark = pytest.mark.faults

REFERRALS = 1000


@pytest.fixture
def own_servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedNats, Path]]:
    state = Path(tempfile.mkdtemp(prefix="eo-faults-restart-"))
    postgres = EmbeddedPostgres(state / "postgres", port=free_port(), durable=False)
    users = default_users(provider_ids=seed_provider_ids())
    broker = EmbeddedNats(state / "nats", port=free_port(), durable=False, users=users)
    postgres.start()
    broker.start()
    try:
        yield postgres, broker, state
    finally:
        broker.stop()
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("restart", ["nats-server", "postgres"])
async def test_a_server_restart_mid_run_loses_and_duplicates_nothing(
    restart: str, own_servers: tuple[EmbeddedPostgres, EmbeddedNats, Path]
) -> None:
    postgres, broker, state = own_servers
    conn = await asyncpg.connect(postgres.url)
    try:
        await apply_migrations(conn, "directory", DIRECTORY_MIGRATIONS)
        await apply_migrations(conn, "router", ROUTER_MIGRATIONS)
        await load_seed(conn)
        await conn.execute("UPDATE directory.site SET capacity = 1000000")
    finally:
        await conn.close()
    router = RouterProcess(postgres.url, broker.url, state)
    router.start()
    await router.ready()
    nc = await nats.connect(broker.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    simulator = ProviderSimulator(nc, accept=0.6)
    await simulator.start()
    started = time.monotonic()
    try:
        requests = await send_referrals(nc.jetstream(), REFERRALS)
        await asyncio.sleep(1.5)  # mid-run
        server = broker if restart == "nats-server" else postgres
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(2.0)
        await asyncio.to_thread(server.start)
        try:
            await wait_all_terminal(postgres.url, [r.referral_id for r in requests], within=200)
        except AssertionError as exc:  # say what the router was doing
            raise AssertionError(f"{exc}\nrouter log:\n{router.log_tail(60)}") from None
    finally:
        await simulator.stop()
    figures = await audit(
        f"restart {restart} mid-run",
        postgres.url,
        nc.jetstream(),
        requests,
        time.monotonic() - started,
        note="down 2 s, 1.5 s into the run",
    )
    await nc.close()
    assert router.stop() == 0
    assert router.starts == 1  # it recovered by itself
    assert figures.lost == 0
    assert figures.duplicated == 0
