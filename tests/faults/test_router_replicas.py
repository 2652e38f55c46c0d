"""Two and three router processes on one stream and one database, with 24 sites of capacity 1
and providers declining most offers (so places are freed and taken again): never over-committed.
"""

import asyncio
import time
from pathlib import Path

import asyncpg
import httpx
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

REFERRALS = 300


@pytest.mark.parametrize("replicas", [2, 3])
async def test_replicas_never_overcommit_capacity_one(
    replicas: int,
    servers: Servers,
    fresh_database_url: str,
    nc: NatsClient,
    empty_stream: None,
    log_dir: Path,
) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    # 24 sites of capacity 1: the seed's three and seven copies of each, a little apart.
    columns = ", ".join(
        row["column_name"]
        for row in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'directory'"
            " AND table_name = 'site' AND is_generated = 'NEVER' ORDER BY ordinal_position"
        )
    )  # every column but the generated earth_point, which follows lat
    await conn.execute(
        f"INSERT INTO directory.site ({columns}) SELECT {columns} FROM ("
        " SELECT (jsonb_populate_record(s, jsonb_build_object("
        "  'id', s.id || '-' || g, 'lat', s.lat + g * 0.002))).*"
        " FROM directory.site s, generate_series(1, 7) g) copies"
    )
    await conn.execute("UPDATE directory.site SET capacity = 1")
    small_batches = {"ROUTER_BATCH_SIZE": "5"}  # spread the work over the replicas
    routers = [
        RouterProcess(fresh_database_url, servers.nats_url, log_dir, small_batches)
        for _ in range(replicas)
    ]
    for router in routers:
        router.start()
    await asyncio.gather(*(router.ready() for router in routers))
    simulator = ProviderSimulator(nc, accept=0.2)
    await simulator.start()

    worst = 0
    watching = True

    async def watch_places() -> None:
        nonlocal worst
        while watching:
            over = await conn.fetchval("SELECT max(reserved - capacity) FROM directory.site")
            worst = max(worst, over)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_places())
    started = time.monotonic()
    try:
        requests = await send_referrals(nc.jetstream(), REFERRALS)
        await wait_all_terminal(fresh_database_url, [r.referral_id for r in requests], within=300)
    finally:
        watching = False
        await watcher
        await simulator.stop()
    accepted_per_site = await conn.fetch(
        "SELECT site_id, count(*) AS n FROM router.offer WHERE state = 'accepted' GROUP BY site_id"
    )
    await conn.close()
    async with httpx.AsyncClient() as http:
        handled = [
            (await http.get(f"http://127.0.0.1:{r.port}/ready")).json()["handled"] for r in routers
        ]
    figures = await audit(
        f"{replicas} routers, capacity 1",
        fresh_database_url,
        nc.jetstream(),
        requests,
        time.monotonic() - started,
        note=f"handled per router {handled}; worst reserved - capacity {worst}",
    )
    assert [router.stop() for router in routers] == [0] * replicas
    assert worst <= 0
    assert all(row["n"] <= 1 for row in accepted_per_site)
    assert len(accepted_per_site) > 3  # the copies took referrals too
    assert figures.lost == 0
    assert figures.duplicated == 0
    # Replicas competed for the places (which one gets a batch is up to JetStream).
    assert sum(n > 0 for n in handled) >= 2, handled
