"""Router benchmark: referrals published -> offers received, for each of the router's
transaction modes (``ROUTER_TRANSACTION``: ``message``, today's path, one transaction per
referral; ``batch``, one per fetched batch), against two bare floor loops.

The floors (tests/benchmarks/floors.py) are the router's per-referral work done by the bare
dependencies: one transaction per referral, 8 at once, or one per fetched batch of 100 with
set-based statements and the batch's outbox as one JetStream atomic batch. Everything runs
against the same servers and the same directory, in one run.

    python -m tests.benchmarks.router_bench --sites 500 [--modes message,batch]
"""

import argparse
import asyncio
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from contracts.codec import encode
from contracts.common import ClientLocation
from contracts.subjects import STATUS_PREFIX, all_of, requested_subject
from services.directory.schema import MIGRATIONS as DIRECTORY_MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.infra.embedded import Servers, free_port, running_servers
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings
from services.router.app import MIGRATIONS as ROUTER_MIGRATIONS
from services.router.settings import RouterSettings
from tests.benchmarks import floors
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
        #: How the referrals came back: offered, or unmatched.
        self.outcomes: collections.Counter[str] = collections.Counter()

    async def on_result(self, msg: Msg) -> None:
        body = json.loads(msg.data)
        rid = body.get("referral_id")
        if msg.subject.startswith(f"{STATUS_PREFIX}.") and body.get("status") != "unmatched":
            return
        if rid in self.sent and rid not in self.done:
            self.done[rid] = time.perf_counter()
            # The router says unmatched in a status event; the floors with a null site.
            unmatched = msg.subject.startswith(f"{STATUS_PREFIX}.") or (
                "site" in body and body["site"] is None
            )
            self.outcomes["unmatched" if unmatched else "offered"] += 1
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


# -- the floors ----------------------------------------------------------------------------------


async def measure_floor(
    nc: NatsClient, database_url: str, shape: floors.Shape, batch: list[Any]
) -> dict[str, Any]:
    """Referrals per second of one floor loop over ``batch``, on a fresh stream."""
    js = nc.jetstream()
    await floors.create_stream(js)
    timer = Timer()
    sub = await nc.subscribe(floors.OFFERED, cb=timer.on_result, pending_msgs_limit=10_000_000)
    stop = asyncio.Event()
    stats: floors.Stats = {}
    loop = asyncio.create_task(floors.floor_loop(nc, database_url, shape, stop, stats))
    try:
        seconds = await drive(nc, floors.REQUESTED, batch, timer, rate=None)
    finally:
        stop.set()
        await loop
        await sub.unsubscribe()
        await js.delete_stream(floors.STREAM)
    fetched = stats.pop("batches", 0)
    atomic = stats.pop("atomic_stored", None)
    return {
        "per_second": round(len(batch) / seconds, 1),
        "seconds": round(seconds, 2),
        "mean_fetch": round(stats.pop("messages", 0) / max(1, fetched), 1),
        "ms_per_referral": {k: round(1000 * v / len(batch), 2) for k, v in stats.items()},
        # The messages the server's atomic-batch acks said they stored (3 per referral).
        **({"messages_stored_by_atomic_batches": int(atomic)} if atomic is not None else {}),
    }


# -- the router -----------------------------------------------------------------------------------


#: The router's transaction modes (``ROUTER_TRANSACTION``): ``message`` is today's path (one
#: transaction per referral, 8 at once), ``batch`` one transaction per fetched batch.
MODES = ("message", "batch")


def knows_transaction_setting() -> bool:
    """Whether this checkout's router reads ``ROUTER_TRANSACTION`` (before it did, both modes
    ran today's path: the setting was ignored)."""
    return "transaction" in RouterSettings.__struct_fields__


def start_router(
    servers: Servers,
    port: int,
    log: Path,
    *,
    transaction: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``eo router`` on ``servers``; ``transaction`` sets ``ROUTER_TRANSACTION``, ``env`` any
    other ``ROUTER_*`` settings (the caller's own ``ROUTER_*`` and ``EO_*`` are not passed on)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "EO_"))}
    env = base | (env or {})
    env |= {
        "DATABASE_URL": servers.database_url,
        "NATS_URL": servers.nats_url,
        "ROUTER_PORT": str(port),
        "EO_LOG_LEVEL": "warning",
    }
    if transaction is not None:
        env["ROUTER_TRANSACTION"] = transaction
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


async def measure_router(
    servers: Servers,
    nc: NatsClient,
    transaction: str,
    *,
    count: int,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    """Max throughput (a burst of ``count``) and latency at half of it, of one router process
    started with ``ROUTER_TRANSACTION=transaction``."""
    log = Path(tempfile.mkdtemp(prefix="eo-bench-")) / f"router-{transaction}.log"
    port = free_port()
    router = start_router(servers, port, log, transaction=transaction)
    subs = []
    try:
        await until_ready(port, router, log)
        timer, paced = Timer(), Timer()
        for t in (timer, paced):
            for subject in ("referral.offered.*", all_of(STATUS_PREFIX)):
                subs.append(
                    await nc.subscribe(subject, cb=t.on_result, pending_msgs_limit=10_000_000)
                )
        took = await drive(nc, REQUESTED, requests(count, seed), timer, rate=None)
        max_rate = count / took
        half = max_rate / 2
        steady = requests(max(50, int(half * seconds)), seed + 1)
        await drive(nc, REQUESTED, steady, paced, rate=half)
        latencies = paced.latencies_ms()
        rss = peak_rss_mb(router.pid)
    finally:
        for sub in subs:
            await sub.unsubscribe()
        router.terminate()
        router.wait(timeout=30)
    result = {
        "per_second": round(max_rate, 1),
        "p50_ms_at_half": round(statistics.median(latencies), 2),
        "p99_ms_at_half": round(percentile(latencies, 0.99), 2),
        "half_rate": round(half, 1),
        "peak_rss_mb": rss,
        "burst_offered": timer.outcomes["offered"],
        "burst_unmatched": timer.outcomes["unmatched"],
    }
    print(f"router, ROUTER_TRANSACTION={transaction}: {json.dumps(result)}", flush=True)
    return result


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b else None


async def bench_router(
    servers: Servers,
    *,
    count: int = 3000,
    seconds: float = 10.0,
    seed: int = 11,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    """The router in each of ``modes`` and both floors, one after another on the same servers.

    The headline router is the last mode (``batch`` by default); ``batch_vs_message`` is the
    issue 16 target (the batch-native router against today's path, in this run). Each router
    run's referrals take places, so a later run sees fuller sites: ``burst_unmatched`` shows
    how many of its burst found none.
    """
    nc = await nats.connect(**servers.nats_connect_options(OPERATOR_USER))
    try:
        routers = {
            mode: await measure_router(servers, nc, mode, count=count, seconds=seconds, seed=seed)
            for mode in modes
        }
        floor = await measure_floor(
            nc, servers.database_url, "per_referral", requests(count, seed + 2)
        )
        print(f"floor, per referral: {json.dumps(floor)}", flush=True)
        batched = await measure_floor(
            nc, servers.database_url, "batched", requests(count, seed + 2)
        )
        print(f"floor, batched: {json.dumps(batched)}", flush=True)
    finally:
        await nc.close()
    head = routers[modes[-1]]
    result: dict[str, Any] = {
        "router_mode": modes[-1],
        "transaction_setting_known": knows_transaction_setting(),
        "router_per_second": head["per_second"],
        "router_p50_ms_at_half": head["p50_ms_at_half"],
        "router_p99_ms_at_half": head["p99_ms_at_half"],
        "half_rate": head["half_rate"],
        "router_peak_rss_mb": head["peak_rss_mb"],
        "floor_per_second": floor["per_second"],
        "batched_floor_per_second": batched["per_second"],
        "router_vs_floor": _ratio(head["per_second"], floor["per_second"]),
        "router_vs_batched_floor": _ratio(head["per_second"], batched["per_second"]),
        "batched_floor_vs_floor": _ratio(batched["per_second"], floor["per_second"]),
        "modes": routers,
    }
    if "message" in routers and "batch" in routers:
        result["message_router_per_second"] = routers["message"]["per_second"]
        result["batch_vs_message"] = _ratio(
            routers["batch"]["per_second"], routers["message"]["per_second"]
        )
    if not result["transaction_setting_known"]:
        result["note"] = (
            "this router does not read ROUTER_TRANSACTION yet: every mode ran today's path"
        )
    print(json.dumps({k: v for k, v in result.items() if k != "modes"}, indent=2), flush=True)
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
    parser.add_argument(
        "--modes",
        default=",".join(MODES),
        help="ROUTER_TRANSACTION values to measure, in order; the last is the headline router "
        "(default message,batch)",
    )
    args = parser.parse_args()
    modes = tuple(m for m in args.modes.split(",") if m)
    state = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    infra = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())
    with running_servers(infra, provider_ids=seed_provider_ids(), durable=True) as servers:
        asyncio.run(prepare(servers, args.sites))
        asyncio.run(bench_router(servers, count=args.count, seconds=args.seconds, modes=modes))


if __name__ == "__main__":
    main()
