"""Scale-out (DESIGN.md section 7): a 3-node NATS JetStream cluster with the REFERRALS stream at
R3, one PostgreSQL and three router processes sharing the durable consumer. With providers
answering, kill -9 the node leading the stream and one router in the middle of the run (the
node comes back on its own store a few seconds later, the router does not): every referral
still reaches exactly one terminal state, none lost, none done twice.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import nats
import pytest
from nats.aio.client import Client as NatsClient

from contracts.subjects import STREAM
from services.infra.nats_auth import OPERATOR_USER
from tests.faults.cluster import NatsCluster
from tests.faults.harness import (
    ROUTED,
    ProviderSimulator,
    RouterProcess,
    audit,
    send_referrals,
    wait_all_terminal,
)

pytestmark = [pytest.mark.faults, pytest.mark.timeout(1200)]

REFERRALS = 5000
ROUTERS = 3
#: Kill when this share of the referrals is terminal: the run is well under way, most is left.
KILL_AT = 0.25
#: The killed node stays down this long (the stream keeps a quorum of 2), then restarts.
NODE_DOWN_S = 8.0


@pytest.fixture
async def cluster(log_dir: Path) -> AsyncIterator[NatsCluster]:
    nodes = NatsCluster(log_dir / "cluster")
    nodes.start()
    try:
        await nodes.wait_ready()
        yield nodes
    finally:
        nodes.stop()


async def terminal_count(database_url: str) -> int:
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM router.referral WHERE status = ANY($1::text[])",
                list(ROUTED),
            )
        )
    finally:
        await conn.close()


async def handled(router: RouterProcess) -> int | None:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{router.port}/ready", timeout=5)
    value = reply.json().get("handled")
    return int(value) if isinstance(value, int) else None


async def stream_leader(nc: NatsClient) -> str:
    for _ in range(100):
        info = await nc.jetstream(timeout=10).stream_info(STREAM)
        if info.cluster is not None and info.cluster.leader:
            return info.cluster.leader
        await asyncio.sleep(0.2)
    raise AssertionError("the REFERRALS stream has no leader")


async def test_three_routers_on_a_3_node_cluster_survive_a_node_and_a_router_kill(
    roomy_sites: str, cluster: NatsCluster, log_dir: Path
) -> None:
    replicas = {"ROUTER_STREAM_REPLICAS": "3"}
    routers = [
        RouterProcess(roomy_sites, cluster.url(), log_dir, dict(replicas)) for _ in range(ROUTERS)
    ]
    try:
        for router in routers:
            router.start()
        await asyncio.gather(*(router.ready(within=120) for router in routers))
        await run_and_audit(roomy_sites, cluster, routers)
    finally:
        for router in routers:  # whatever happened, no router outlives the test
            router.kill()


async def run_and_audit(
    roomy_sites: str, cluster: NatsCluster, routers: list[RouterProcess]
) -> None:
    nc = await nats.connect(
        **cluster.connect_options(OPERATOR_USER),
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
    )
    info = await nc.jetstream().stream_info(STREAM)
    assert info.config.num_replicas == 3
    assert info.cluster is not None
    assert len(info.cluster.replicas or []) == 2  # the leader and two followers

    try:
        await route_with_kills(nc, roomy_sites, cluster, routers)
    finally:
        await nc.close()


async def route_with_kills(
    nc: NatsClient, roomy_sites: str, cluster: NatsCluster, routers: list[RouterProcess]
) -> None:
    simulator = ProviderSimulator(nc, accept=0.6)
    await simulator.start()
    started = time.monotonic()
    try:
        requests = await send_referrals(nc.jetstream(timeout=30), REFERRALS)
        sent_s = time.monotonic() - started
        while (done := await terminal_count(roomy_sites)) < REFERRALS * KILL_AT:
            assert time.monotonic() - started < 600, f"only {done} terminal before the kills"
            await asyncio.sleep(0.2)
        leader = await stream_leader(nc)
        node = cluster.node_named(leader)
        node.kill()
        killed_node_at = time.monotonic() - started
        await asyncio.sleep(1.0)
        victim = routers[1]
        victim.kill()
        killed_router_at = time.monotonic() - started
        in_flight = REFERRALS - await terminal_count(roomy_sites)
        await asyncio.sleep(NODE_DOWN_S)
        node.start()
        await asyncio.to_thread(node.wait_listening)
        restarted_at = time.monotonic() - started
        seconds = await wait_all_terminal(
            roomy_sites, [r.referral_id for r in requests], within=900
        )
        await cluster.wait_ready()
        survivors = [router for router in routers if router is not victim]
        shares = [await handled(router) for router in survivors]
    finally:
        await simulator.stop()
    figures = await audit(
        f"scale-out: 3 routers, 3-node cluster R3 (kill -9 stream leader {leader} and a router)",
        roomy_sites,
        nc.jetstream(timeout=30),
        requests,
        time.monotonic() - started,
        note=(
            f"sent in {sent_s:.1f} s; node killed at {killed_node_at:.1f} s, router at "
            f"{killed_router_at:.1f} s ({in_flight} referrals not terminal yet), node back at "
            f"{restarted_at:.1f} s; last {seconds:.1f} s to drain; messages handled by the "
            f"surviving routers {shares}"
        ),
    )
    assert [router.stop() for router in survivors] == [0, 0]
    assert in_flight > 0  # the kills hit a run with work left
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.terminal == REFERRALS
