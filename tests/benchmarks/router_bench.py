"""Router benchmark: referrals published -> offers received, against a bare floor loop.

The floor is the same work done by the bare dependencies in one loop: JetStream fetch(100) ->
one PostgreSQL transaction running the same candidates query and three inserts -> publish
the offer -> ack. Both run against the same servers and the same directory, in one run.

    python -m tests.benchmarks.router_bench --sites 500
"""

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from contracts.codec import encode
from contracts.common import ClientLocation
from contracts.subjects import STATUS_PREFIX, all_of, requested_subject
from services.directory.candidates import Criteria, suitable_query
from services.directory.schema import MIGRATIONS as DIRECTORY_MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.infra.embedded import Servers, free_port, running_servers
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings
from services.router.app import MIGRATIONS as ROUTER_MIGRATIONS
from tests.benchmarks.generate import generate, places
from tests.referrals import SYSTEM, make_request

REQUESTED = requested_subject(SYSTEM)

EO = Path(sys.executable).parent / "eo"
NEEDS = [["resume_writing"], ["job_search", "interview_skills"], ["employment_counselling"]]


def requests(count: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    towns = places()
    picks = rng.choices(towns, weights=[t.population for t in towns], k=count)
    return [
        make_request(
            location=ClientLocation(lat=round(t.lat, 4), lon=round(t.lon, 4)),
            needs=rng.choice(NEEDS),
        )
        for t in picks
    ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Timer:
    """Publish time per referral, and the time its offer (or unmatched status) came back."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.all_done = asyncio.Event()
        self.expected = 0

    async def on_result(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        rid = body.get("referral_id")
        if msg.subject.startswith(f"{STATUS_PREFIX}.") and body.get("status") != "unmatched":
            return
        if rid in self.sent and rid not in self.done:
            self.done[rid] = time.perf_counter()
            if len(self.done) >= self.expected:
                self.all_done.set()

    def latencies_ms(self) -> list[float]:
        return [(self.done[r] - self.sent[r]) * 1000 for r in self.done]


async def drive(
    nc: NatsClient,
    subject: str,
    batch: list[Any],
    timer: Timer,
    *,
    rate: float | None,
    within: float = 600,
) -> float:
    """Publish ``batch`` (at ``rate`` per second, or as fast as possible); seconds to finish."""
    js = nc.jetstream()
    timer.expected += len(batch)
    started = time.perf_counter()
    for n, request in enumerate(batch):
        if rate is not None:
            due = started + n / rate
            if (wait := due - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
        timer.sent[str(request.referral_id)] = time.perf_counter()
        await js.publish_async(
            subject, encode(request), headers={"Nats-Msg-Id": str(request.message_id)}
        )
    await js.publish_async_completed()
    await asyncio.wait_for(timer.all_done.wait(), within)
    return time.perf_counter() - started


# -- the floor loop -----------------------------------------------------------------------------

FLOOR_STREAM = "BENCHFLOOR"


async def floor_loop(nc: NatsClient, database_url: str, stop: asyncio.Event) -> None:
    """The bare dependencies doing the router's work: fetch, one transaction, publish, ack."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "benchfloor.requested",
        durable="floor",
        stream=FLOOR_STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000),
    )
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "CREATE TABLE IF NOT EXISTS public.floor_referral (id uuid PRIMARY KEY, body jsonb);"
        " CREATE TABLE IF NOT EXISTS public.floor_offer (id uuid PRIMARY KEY, referral uuid,"
        "  site text); CREATE TABLE IF NOT EXISTS public.floor_outbox (id bigserial, body bytea)"
    )
    try:
        while not stop.is_set():
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            for msg in msgs:
                body = json.loads(msg.data)
                criteria = Criteria(needs=body["needs"], language="en")
                location = body["client"]["location"]
                sql, args = suitable_query(location["lat"], location["lon"], criteria, 5)
                async with conn.transaction():
                    rows = await conn.fetch(sql, *args)
                    site = rows[0]["id"] if rows else None
                    await conn.execute(
                        "INSERT INTO public.floor_referral VALUES ($1, $2)",
                        uuid.UUID(body["referral_id"]),
                        msg.data.decode(),
                    )
                    await conn.execute(
                        "INSERT INTO public.floor_offer VALUES ($1, $2, $3)",
                        uuid.uuid4(),
                        uuid.UUID(body["referral_id"]),
                        site,
                    )
                    offer = json.dumps({"referral_id": body["referral_id"], "site": site}).encode()
                    await conn.execute("INSERT INTO public.floor_outbox (body) VALUES ($1)", offer)
                await js.publish("benchfloor.offered", offer)
                await msg.ack()
    finally:
        await conn.close()


async def measure_floor(nc: NatsClient, database_url: str, batch: list[Any]) -> dict[str, Any]:
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(name=FLOOR_STREAM, subjects=["benchfloor.>"], storage=StorageType.FILE)
    )
    timer = Timer()
    await nc.subscribe("benchfloor.offered", cb=timer.on_result, pending_msgs_limit=10_000_000)
    stop = asyncio.Event()
    loop = asyncio.create_task(floor_loop(nc, database_url, stop))
    try:
        seconds = await drive(nc, "benchfloor.requested", batch, timer, rate=None)
    finally:
        stop.set()
        await loop
        await js.delete_stream(FLOOR_STREAM)
    return {"per_second": round(len(batch) / seconds, 1), "seconds": round(seconds, 2)}


# -- the router -----------------------------------------------------------------------------------


def start_router(servers: Servers, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "EO_"))}
    env |= {
        "DATABASE_URL": servers.database_url,
        "NATS_URL": servers.nats_url,
        "ROUTER_PORT": str(port),
        "EO_LOG_LEVEL": "warning",
    }
    with log.open("wb") as out:
        return subprocess.Popen([str(EO), "router"], env=env, stdout=out, stderr=subprocess.STDOUT)


async def until_ready(port: int, router: subprocess.Popen[bytes], log: Path) -> None:
    """Wait for the router's /ready (60 s at most): measuring one still starting measures its
    start, not its routing."""
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            if router.poll() is not None:
                raise RuntimeError(f"the router exited at start; see {log}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the router was not ready within 60 s; see {log}")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


async def bench_router(
    servers: Servers, *, count: int = 3000, seconds: float = 10.0, seed: int = 11
) -> dict[str, Any]:
    """Max throughput and latency at half of it, for the router and for the floor loop."""
    options = servers.nats_connect_options(OPERATOR_USER)
    nc = await nats.connect(**options)
    log = Path(tempfile.mkdtemp(prefix="eo-bench-")) / "router.log"
    port = free_port()
    router = start_router(servers, port, log)
    try:
        await until_ready(port, router, log)
        timer = Timer()
        await nc.subscribe("referral.offered.*", cb=timer.on_result, pending_msgs_limit=10_000_000)
        await nc.subscribe(all_of(STATUS_PREFIX), cb=timer.on_result, pending_msgs_limit=10_000_000)
        burst = requests(count, seed)
        took = await drive(nc, REQUESTED, burst, timer, rate=None)
        max_rate = count / took
        paced = Timer()
        await nc.subscribe("referral.offered.*", cb=paced.on_result, pending_msgs_limit=10_000_000)
        await nc.subscribe(all_of(STATUS_PREFIX), cb=paced.on_result, pending_msgs_limit=10_000_000)
        half = max_rate / 2
        steady = requests(max(50, int(half * seconds)), seed + 1)
        await drive(nc, REQUESTED, steady, paced, rate=half)
        latencies = paced.latencies_ms()
        rss = peak_rss_mb(router.pid)
        floor = await measure_floor(nc, servers.database_url, requests(count, seed + 2))
    finally:
        router.terminate()
        router.wait(timeout=30)
        await nc.close()
    result = {
        "router_per_second": round(max_rate, 1),
        "router_p50_ms_at_half": round(statistics.median(latencies), 2),
        "router_p99_ms_at_half": round(percentile(latencies, 0.99), 2),
        "half_rate": round(half, 1),
        "floor_per_second": floor["per_second"],
        "router_vs_floor": round(max_rate / floor["per_second"], 2),
        "router_peak_rss_mb": rss,
    }
    print(json.dumps(result, indent=2), flush=True)
    return result


async def prepare(servers: Servers, sites: int) -> None:
    conn = await asyncpg.connect(servers.database_url)
    try:
        await apply_migrations(conn, "directory", DIRECTORY_MIGRATIONS)
        await apply_migrations(conn, "router", ROUTER_MIGRATIONS)
        await load_seed(conn)
    finally:
        await conn.close()
    await generate(servers.database_url, sites)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    infra = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())
    with running_servers(infra, provider_ids=seed_provider_ids(), durable=True) as servers:
        asyncio.run(prepare(servers, args.sites))
        asyncio.run(bench_router(servers, count=args.count, seconds=args.seconds))


if __name__ == "__main__":
    main()
