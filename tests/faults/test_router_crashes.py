"""Kill -9 the router at random moments of a run with providers answering; restart it; check
that every referral reaches exactly one terminal state and nothing was done twice.
"""

import asyncio
import random
import time
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from services.infra.embedded import Servers
from tests.faults.harness import (
    ProviderSimulator,
    RouterProcess,
    audit,
    send_referrals,
    wait_all_terminal,
)

pytestmark = pytest.mark.faults

REFERRALS = 2000
KILLS = 10


async def pending(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM router.referral"
                " WHERE status NOT IN ('accepted', 'unmatched', 'cancelled', 'rejected')"
            )
        )
    finally:
        await conn.close()


async def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    servers: Servers, roomy_sites: str, nc: NatsClient, empty_stream: None, log_dir: Path
) -> None:
    router = RouterProcess(roomy_sites, servers.nats_url, log_dir)
    router.start()
    await router.ready()
    simulator = ProviderSimulator(nc, accept=0.6)
    await simulator.start()
    started = time.monotonic()
    # Spread over the kills (the batch path drains 2,000 at once in about 2 s: the kills would
    # then find an idle router).
    sending = asyncio.create_task(send_referrals(nc.jetstream(), REFERRALS, per_second=100))
    rng = random.Random(20261121)
    busy_kills = 0
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            # Count kills that hit a router with work in flight, not an idle one.
            busy_kills += (await pending(roomy_sites)) > 0
            router.kill()
            router.start()
            await router.ready()
        requests = await sending
        seconds = await wait_all_terminal(
            roomy_sites, [r.referral_id for r in requests], within=600
        )
    finally:
        await simulator.stop()
    figures = await audit(
        "kill -9 x10",
        roomy_sites,
        nc.jetstream(),
        requests,
        time.monotonic() - started,
        note=f"{busy_kills} of {KILLS} kills with work in flight; last {seconds:.1f} s to drain",
    )
    assert router.stop() == 0
    assert router.starts == KILLS + 1
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.terminal == REFERRALS
    assert busy_kills >= KILLS // 2  # the kills hit a working router, not an idle one
