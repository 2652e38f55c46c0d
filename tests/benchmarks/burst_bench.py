"""Burst benchmark: a running router given a burst of referrals all at once (published
concurrently, as fast as JetStream takes them); how long it takes to route every one, the router
process's peak RSS, and what was lost or duplicated (0 / 0 expected).

A referral is routed when the database has its routing decision (offered, or a routing outcome:
unmatched, rejected): nobody answers the offers here. The synthetic sites get ``--capacity``
places each so that the burst is routed to offers rather than found unmatched; the output says
how many were offered and how many unmatched.

Lost and duplicated are counted as the fault suite counts them (tests/faults/harness.py), from
the database, the router's history and the stream, with routed meaning decided rather than
closed: a referral sent but not decided, or decided with no status event for it in the stream,
or a transition of its history with no status event, is lost; a referral decided twice in the
stream, a once-only status published twice, a status event with no transition behind it, an
offer stored twice, two offers open at once, a history that is not a path of the lifecycle, or a
site whose places in use differ from its counter, is duplicated.

    python -m tests.benchmarks.burst_bench --referrals 100000 --sites 500 [--transaction batch]

Not a test: nothing here asserts a time. Figures are noisy on 2 shared cores.
"""

import argparse
import asyncio
import collections
import contextlib
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import nats
from nats.js import JetStreamContext
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from contracts.codec import encode
from contracts.referrals import ROUTING_OUTCOMES, ReferralOffered, ReferralStatusChanged
from contracts.subjects import ROUTER_DURABLE, STREAM
from services.directory.seed import seed_provider_ids
from services.infra.embedded import Servers, free_port, running_servers
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings
from tests.benchmarks.generate import PREFIX
from tests.benchmarks.router_bench import (
    REQUESTED,
    knows_transaction_setting,
    prepare,
    requests,
    start_router,
    until_ready,
)
from tests.faults.harness import (
    OFFERED_ALL,
    ONCE,
    PLACES,
    ROUTED,
    STATUS_ALL,
    _is_path,
    _stream_messages,
)

#: A referral with one of these has had its routing decision (no provider answers here).
DECIDED: frozenset[str] = ROUTED | {"offered"}
#: The status events that carry a routing decision: one per referral when nobody answers.
DECISIONS: frozenset[str] = ROUTING_OUTCOMES | {"offered"}
CAPACITY = 1_000_000


class RssSampler:
    """The resident set of a process, sampled: the largest seen, and the kernel's high-water
    mark (VmHWM, which no sampling gap can miss)."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        self.pid = pid
        self.every = every
        self.sampled_mb = 0.0
        self.hwm_mb = 0.0
        self._task: asyncio.Task[None] | None = None

    def read(self) -> None:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    mb = int(value.split()[0]) / 1024
                    if key == "VmRSS":
                        self.sampled_mb = max(self.sampled_mb, mb)
                    else:
                        self.hwm_mb = mb

    async def _run(self) -> None:
        while True:
            self.read()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self.read()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def publish_all(js: JetStreamContext, burst: list[Any], published: list[int]) -> float:
    """Publish every request concurrently (nats-py keeps up to 4,000 in flight); seconds."""
    started = time.perf_counter()
    for request in burst:
        await js.publish_async(
            REQUESTED, encode(request), headers={"Nats-Msg-Id": str(request.message_id)}
        )
        published[0] += 1
    await js.publish_async_completed()
    return time.perf_counter() - started


async def wait_decided(
    conn: asyncpg.Connection, total: int, published: list[int], within: float
) -> tuple[float, int]:
    """Seconds until every referral of ``pg_temp.burst_ids`` is decided (or ``within``, then
    the count decided), with a progress bar."""
    started = time.perf_counter()
    decided = 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    ) as progress:
        sent = progress.add_task("published", total=total)
        routed = progress.add_task("routed   ", total=total)
        while decided < total and time.perf_counter() - started < within:
            await asyncio.sleep(0.5)
            decided = await conn.fetchval(
                "SELECT count(*) FROM pg_temp.burst_ids b JOIN router.referral r ON r.id = b.id"
                " WHERE r.status = ANY($1::text[])",
                list(DECIDED),
            )
            progress.update(sent, completed=published[0])
            progress.update(routed, completed=decided)
    return time.perf_counter() - started, decided


async def wait_published(conn: asyncpg.Connection, js: JetStreamContext, within: float) -> bool:
    """Whether the router's outbox is all sent and its consumer empty within ``within`` s."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        unsent = await conn.fetchval("SELECT count(*) FROM router.outbox WHERE sent_at IS NULL")
        info = await js.consumer_info(STREAM, ROUTER_DURABLE)
        if not unsent and not info.num_pending and not info.num_ack_pending:
            return True
        await asyncio.sleep(0.5)
    return False


async def audit_routing(
    conn: asyncpg.Connection, js: JetStreamContext, ids: list[uuid.UUID]
) -> dict[str, Any]:
    """Lost and duplicated (see the module docstring), and how the referrals were decided."""
    wanted = set(ids)
    rows = await conn.fetch(
        "SELECT r.id, r.status FROM pg_temp.burst_ids b JOIN router.referral r ON r.id = b.id"
    )
    two_open = await conn.fetchval(
        "SELECT count(*) FROM (SELECT referral_id FROM router.offer WHERE state = 'open'"
        " GROUP BY referral_id HAVING count(*) > 1) twice"
    )
    places = await conn.fetch(PLACES)
    history = await conn.fetch(
        "SELECT h.referral_id, h.status, h.refused, h.attempt FROM router.history h"
        " JOIN pg_temp.burst_ids b ON b.id = h.referral_id ORDER BY h.id"
    )
    status = {row["id"]: row["status"] for row in rows}
    events = [
        e
        for e in await _stream_messages(js, STATUS_ALL)
        if isinstance(e, ReferralStatusChanged) and e.referral_id in wanted
    ]
    offered = [
        o
        for o in await _stream_messages(js, OFFERED_ALL)
        if isinstance(o, ReferralOffered) and o.referral_id in wanted
    ]
    decisions = collections.Counter(e.referral_id for e in events if e.status in DECISIONS)
    published: collections.Counter[tuple[uuid.UUID, str, int]] = collections.Counter(
        (e.referral_id, e.status, e.attempt) for e in events
    )
    once = collections.Counter((e.referral_id, e.status) for e in events if e.status in ONCE)
    per_attempt = collections.Counter((o.referral_id, o.attempt) for o in offered)
    transitions: collections.Counter[tuple[uuid.UUID, str, int]] = collections.Counter()
    paths: dict[uuid.UUID, list[str]] = collections.defaultdict(list)
    for h in history:
        if not h["refused"]:
            transitions[(h["referral_id"], h["status"], h["attempt"])] += 1
            paths[h["referral_id"]].append(h["status"])
    decided = [rid for rid in ids if status.get(rid) in DECIDED]
    lost = (
        len(ids)
        - len(decided)
        + sum(1 for rid in decided if decisions[rid] == 0)
        + sum((transitions - published).values())
    )
    invalid = sum(
        1 for rid, now in status.items() if not (_is_path(paths[rid]) and paths[rid][-1] == now)
    )
    duplicated = (
        sum(1 for n in decisions.values() if n > 1)
        + sum(1 for n in once.values() if n > 1)
        + sum((published - transitions).values())
        + sum(1 for n in per_attempt.values() if n > 1)
        + two_open
        + invalid
        + sum(1 for p in places if p["reserved"] != p["held"])
    )
    states = collections.Counter(status.values())
    return {
        "lost": lost,
        "duplicated": duplicated,
        "states": dict(states),
        "status_events": len(events),
        "offers_in_stream": len(offered),
    }


async def bench_burst(
    servers: Servers,
    *,
    referrals: int = 100_000,
    transaction: str = "batch",
    within: float = 1800.0,
    capacity: int = CAPACITY,
    seed: int = 31,
) -> dict[str, Any]:
    """One router process, ``referrals`` published at once; drain time, rate, peak RSS, lost and
    duplicated. Gives the synthetic sites ``capacity`` places each (generate.py's next run
    restores realistic ones)."""
    conn = await asyncpg.connect(servers.database_url)
    nc = await nats.connect(**servers.nats_connect_options(OPERATOR_USER))
    js = nc.jetstream(timeout=30)
    log = Path(tempfile.mkdtemp(prefix="eo-burst-")) / f"router-{transaction}.log"
    port = free_port()
    try:
        await conn.execute(
            f"UPDATE directory.site SET capacity = $1 WHERE id LIKE '{PREFIX}-%'", capacity
        )
        burst = requests(referrals, seed)
        ids = [r.referral_id for r in burst]
        await conn.execute("CREATE TEMP TABLE burst_ids (id uuid PRIMARY KEY)")
        await conn.copy_records_to_table("burst_ids", records=[(rid,) for rid in ids])
        router = start_router(servers, port, log, transaction=transaction)
        rss = RssSampler(router.pid)
        try:
            await until_ready(port, router, log)
            rss.start()
            published = [0]
            print(
                f"burst: {referrals:,} referrals into one router"
                f" (ROUTER_TRANSACTION={transaction}), sites with {capacity:,} places each",
                flush=True,
            )
            started = time.perf_counter()
            publisher = asyncio.create_task(publish_all(js, burst, published))
            drain_s, decided = await wait_decided(conn, referrals, published, within)
            publish_s = await publisher
            drain_s = time.perf_counter() - started if decided == referrals else drain_s
            settled = await wait_published(conn, js, within=120)
            await rss.stop()
        finally:
            router.terminate()
            router.wait(timeout=60)
        print("auditing: the database, the router's history and the stream ...", flush=True)
        audit_started = time.perf_counter()
        counts = await audit_routing(conn, js, ids)
    finally:
        await nc.close()
        await conn.close()
    states = counts.pop("states")
    result = {
        "referrals": referrals,
        "transaction": transaction,
        "transaction_setting_known": knows_transaction_setting(),
        "drained": decided == referrals,
        "decided": decided,
        "publish_s": round(publish_s, 1),
        "drain_s": round(drain_s, 1),
        "per_second": round(decided / drain_s, 1),
        "offered": states.get("offered", 0),
        "unmatched": states.get("unmatched", 0),
        "rejected": states.get("rejected", 0),
        "states": states,
        "router_peak_rss_mb": round(rss.hwm_mb, 1),
        "router_sampled_peak_rss_mb": round(rss.sampled_mb, 1),
        "outbox_sent_and_consumer_empty": settled,
        "site_capacity": capacity,
        **counts,
        "audit_s": round(time.perf_counter() - audit_started, 1),
    }
    result["table"] = table([result])
    print(json.dumps({k: v for k, v in result.items() if k != "table"}, indent=2))
    print(result["table"], flush=True)
    return result


HEADER = (
    "| referrals | ROUTER_TRANSACTION | drained in s | routed ref/s | publish s | offered "
    "| unmatched | router peak RSS MB | lost | duplicated |\n" + "|---" * 10 + "|"
)


def table(runs: list[dict[str, Any]]) -> str:
    rows = [
        "| "
        + " | ".join(
            str(c)
            for c in (
                f"{run['referrals']:,}"
                + ("" if run["drained"] else f" ({run['decided']:,} routed)"),
                run["transaction"],
                run["drain_s"],
                run["per_second"],
                run["publish_s"],
                run["offered"],
                run["unmatched"],
                run["router_peak_rss_mb"],
                run["lost"],
                run["duplicated"],
            )
        )
        + " |"
        for run in runs
    ]
    return HEADER + "\n" + "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--sites", type=int, default=500)
    parser.add_argument(
        "--transaction",
        default="batch",
        help="ROUTER_TRANSACTION of the router (batch, the default; message, the path before "
        "issue 16); several, comma-separated, run one after another on the same servers",
    )
    parser.add_argument("--capacity", type=int, default=CAPACITY, help="places per site")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait for the drain"
    )
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="eo-bench-state-"))
    infra = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())
    runs = []
    with running_servers(infra, provider_ids=seed_provider_ids(), durable=True) as servers:
        asyncio.run(prepare(servers, args.sites))
        for n, mode in enumerate(m for m in args.transaction.split(",") if m):
            runs.append(
                asyncio.run(
                    bench_burst(
                        servers,
                        referrals=args.referrals,
                        transaction=mode,
                        within=args.timeout,
                        capacity=args.capacity,
                        seed=31 + n,
                    )
                )
            )
    print(f"\n{args.sites:,} sites; durable servers\n{table(runs)}", flush=True)


if __name__ == "__main__":
    main()
