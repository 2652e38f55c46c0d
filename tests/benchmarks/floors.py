"""The router's two floors: its per-referral work done by the bare dependencies in one loop,
one transaction per referral or one per fetched batch.

Both loops do the same work for each referral: JetStream fetch(100); claim its message id
(an insert that a repeat would conflict with, as the router's idempotency does); the 5 nearest
suitable sites (the router's candidates query); count what each rule excluded nearer than the
first (the router's exclusion counts, which explain its choice); reserve a place at the first;
insert the referral, its offer, two history rows and three outbox rows; commit; publish the
three messages with ``Nats-Msg-Id``; mark them sent; ack. They differ only in how the work is
grouped:

- ``per_referral``: one transaction per referral, 8 referrals at once on 8 held connections
  (the router's per-message path), the three publishes in flight together;
- ``batched``: one transaction per fetched batch with set-based statements (a LATERAL KNN over
  ``unnest`` of the batch's points, ``unnest`` inserts), one commit, the batch's outbox as one
  JetStream atomic batch (one store write, one fsync), one mark-sent, the acks together.

The floors keep their own tables (``public.floor_*``) and stream (``BENCHFLOOR``), and reserve
places in ``public.floor_site`` rather than the directory, so they leave the router's data as
they found it.
"""

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Literal

import asyncpg
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

from services.directory.candidates import (
    EXCLUSION_SCAN,
    EXCLUSION_SCAN_CHOSEN,
    Criteria,
    suitable_query,
)
from services.directory.site_query import (
    SiteFilter,
    batch_criteria,
    batch_exclusions_query,
    exclusions_query,
)
from services.geo import geodesic_km

Shape = Literal["per_referral", "batched"]

STREAM = "BENCHFLOOR"
REQUESTED = "benchfloor.requested"
OFFERED = "benchfloor.offered"
STATUS = "benchfloor.status"
#: Referrals in flight at once in the per-referral loop (the router's ``concurrency``).
CONCURRENCY = 8
FETCH = 100

SCHEMA = """
DROP TABLE IF EXISTS public.floor_referral, public.floor_processed, public.floor_offer,
    public.floor_history, public.floor_outbox, public.floor_site;
CREATE TABLE public.floor_referral (id uuid PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE public.floor_processed (message_id uuid PRIMARY KEY, referral_id uuid NOT NULL);
CREATE TABLE public.floor_offer (id uuid PRIMARY KEY, referral_id uuid NOT NULL, site_id text);
CREATE TABLE public.floor_history (id bigserial PRIMARY KEY, referral_id uuid NOT NULL,
    status text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE TABLE public.floor_outbox (id bigserial PRIMARY KEY, message_id uuid NOT NULL,
    subject text NOT NULL, payload bytea NOT NULL, sent_at timestamptz);
CREATE TABLE public.floor_site AS SELECT id, 0 AS reserved, 1000000000 AS capacity
    FROM directory.site;
ALTER TABLE public.floor_site ADD PRIMARY KEY (id);
"""

#: The candidates query for a whole batch: the same filters as ``suitable_query`` (needs, the
#: language, eligibility, accepting with a place left), the 5 nearest sites of each referral by
#: a KNN index scan per point. Two planner traps, each measured at 100 referrals:
#: - each origin's earth point is computed once, in a materialized CTE (inlined into the ORDER
#:   BY, ``ll_to_earth`` ran again for every site compared: 300 ms at 500 sites);
#: - the KNN scan sits in a subquery the planner may not flatten (OFFSET 0) and the filters
#:   apply to its stream: with the filters beside it, the planner guessed 1 row (a needs array
#:   it cannot see) and chose a sequential scan and a sort per referral: 5 s at 100,000 sites,
#:   30 ms this way.
#: Needs travel as comma-joined text: arrays of arrays must be rectangular.
BATCH_CANDIDATES = """
WITH r AS MATERIALIZED (
    SELECT ord, ll_to_earth(lat, lon) AS here, string_to_array(needs, ',') AS needs
    FROM unnest($1::float8[], $2::float8[], $3::text[]) WITH ORDINALITY AS u(lat, lon, needs, ord)
)
SELECT r.ord, c.id, c.d FROM r
LEFT JOIN LATERAL (
    SELECT s.id, s.d FROM (
        SELECT s.*, s.earth_point <-> r.here AS d FROM directory.site s
        ORDER BY s.earth_point <-> r.here OFFSET 0
    ) s JOIN directory.provider p ON p.id = s.provider_id
    WHERE s.active AND p.active AND s.accepting_referrals AND s.reserved < s.capacity
      AND s.services @> r.needs AND 'en' = ANY(s.languages)
      AND (cardinality(s.eligibility) = 0 OR s.eligibility && '{}'::text[])
    ORDER BY s.d LIMIT 5
) c ON true
ORDER BY r.ord, c.d
"""
#: One place at each chosen site per referral that chose it; the sites that had room.
RESERVE = """
UPDATE public.floor_site f SET reserved = f.reserved + t.n
FROM (SELECT id, count(*) AS n FROM unnest($1::text[]) AS id GROUP BY id) t
WHERE f.id = t.id AND f.reserved + t.n <= f.capacity RETURNING f.id
"""
#: The router's exclusion counts for a batch (its own SQL text, as the per-referral floor runs
#: the router's ``exclusions_query``).
BATCH_EXCLUSIONS = batch_exclusions_query()
CLAIM = (
    "INSERT INTO public.floor_processed (message_id, referral_id)"
    " SELECT * FROM unnest($1::uuid[], $2::uuid[]) ON CONFLICT DO NOTHING"
)
INSERT_REFERRALS = (
    "INSERT INTO public.floor_referral (id, body) SELECT * FROM unnest($1::uuid[], $2::jsonb[])"
)
INSERT_OFFERS = (
    "INSERT INTO public.floor_offer (id, referral_id, site_id)"
    " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[])"
)
INSERT_HISTORY = (
    "INSERT INTO public.floor_history (referral_id, status)"
    " SELECT * FROM unnest($1::uuid[], $2::text[])"
)
INSERT_OUTBOX = (
    "INSERT INTO public.floor_outbox (message_id, subject, payload)"
    " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bytea[]) RETURNING id"
)
MARK_SENT = "UPDATE public.floor_outbox SET sent_at = now() WHERE id = ANY($1::bigint[])"


Outgoing = tuple[uuid.UUID, str, bytes]


def _criteria(body: dict[str, Any]) -> SiteFilter:
    """What the floors ask of a site (the BATCH_CANDIDATES filters)."""
    return Criteria(needs=body["needs"], language="en", eligibility=()).site_filter()


async def _record(
    conn: asyncpg.Connection, bodies: Sequence[dict[str, Any]], sites: Sequence[str | None]
) -> tuple[list[int], list[Outgoing]]:
    """In the open transaction: reserve, insert the referrals, offers, history and outbox;
    the outbox ids and the messages to publish, three per referral."""
    reserved = {
        row["id"] for row in await conn.fetch(RESERVE, [site for site in sites if site is not None])
    }
    chosen = [site if site in reserved else None for site in sites]
    ids = [uuid.UUID(body["referral_id"]) for body in bodies]
    await conn.execute(CLAIM, [uuid.UUID(body["message_id"]) for body in bodies], ids)
    await conn.execute(INSERT_REFERRALS, ids, [json.dumps(body) for body in bodies])
    offered = [(rid, site) for rid, site in zip(ids, chosen, strict=True) if site is not None]
    if offered:
        await conn.execute(
            INSERT_OFFERS,
            [uuid.uuid4() for _ in offered],
            [rid for rid, _ in offered],
            [site for _, site in offered],
        )
    outcomes = ["offered" if site is not None else "unmatched" for site in chosen]
    await conn.execute(
        INSERT_HISTORY,
        [rid for rid in ids for _ in range(2)],
        [status for outcome in outcomes for status in ("received", outcome)],
    )
    encoded: list[Outgoing] = []
    for rid, site, outcome in zip(ids, chosen, outcomes, strict=True):
        referral = str(rid)
        for subject, body in (
            (STATUS, {"referral_id": referral, "status": "received"}),
            (OFFERED, {"referral_id": referral, "site": site}),
            (STATUS, {"referral_id": referral, "status": outcome}),
        ):
            encoded.append((uuid.uuid4(), subject, json.dumps(body).encode()))
    rows = await conn.fetch(
        INSERT_OUTBOX,
        [mid for mid, _, _ in encoded],
        [subject for _, subject, _ in encoded],
        [payload for _, _, payload in encoded],
    )
    return [row["id"] for row in rows], encoded


async def publish_atomic(nc: NatsClient, js: JetStreamContext, messages: Sequence[Outgoing]) -> int:
    """``messages`` as one JetStream atomic batch (ADR-50, nats-server 2.12+; the stream needs
    ``allow_atomic``): every message carries the batch id and its sequence, the last also
    ``Nats-Batch-Commit: 1`` and goes as a request whose reply is the one ack. One store write
    and one fsync for all of them; ``Nats-Msg-Id`` still de-duplicates each. The batch size
    the server's ack reports."""
    batch = uuid.uuid4().hex
    for sequence, (mid, subject, payload) in enumerate(messages[:-1], start=1):
        headers = {
            "Nats-Msg-Id": str(mid),
            "Nats-Batch-Id": batch,
            "Nats-Batch-Sequence": str(sequence),
        }
        await nc.publish(subject, payload, headers=headers)
    mid, subject, payload = messages[-1]
    ack = await js.publish(
        subject,
        payload,
        headers={
            "Nats-Msg-Id": str(mid),
            "Nats-Batch-Id": batch,
            "Nats-Batch-Sequence": str(len(messages)),
            "Nats-Batch-Commit": "1",
        },
    )
    if ack.batch_size is not None and ack.batch_size != len(messages):
        raise nats.js.errors.Error(f"atomic batch stored {ack.batch_size} of {len(messages)}")
    return ack.batch_size or 0


# -- the loops ------------------------------------------------------------------------------------


#: Where a floor's time went: seconds awaited in each phase (summed over the concurrent
#: referrals of the per-referral loop), batches and messages handled.
Stats = dict[str, float]


class _Clock:
    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.stats[phase] = self.stats.get(phase, 0.0) + now - self.last
        self.last = now


async def _batched(
    nc: NatsClient, js: JetStreamContext, conn: asyncpg.Connection, msgs: list[Msg], stats: Stats
) -> None:
    clock = _Clock(stats)
    bodies = [json.loads(msg.data) for msg in msgs]
    points = [body["client"]["location"] for body in bodies]
    async with conn.transaction():
        # As the router's batch does (services/directory/candidates.py, _index_scans): walk
        # the GiST index rather than sort every site per referral in a small directory.
        await conn.execute("SET LOCAL enable_seqscan = off")
        rows = await conn.fetch(
            BATCH_CANDIDATES,
            [p["lat"] for p in points],
            [p["lon"] for p in points],
            [",".join(body["needs"]) for body in bodies],
        )
        first: dict[int, tuple[str, float]] = {}
        for row in rows:
            if row["id"] is not None:
                first.setdefault(row["ord"], (row["id"], row["d"]))
        nearest = [first.get(n) for n in range(1, len(bodies) + 1)]
        sites = [None if hit is None else hit[0] for hit in nearest]
        clock.lap("candidates_s")
        origins = [
            batch_criteria(
                p["lat"],
                p["lon"],
                _criteria(body),
                within_km=None if hit is None else hit[1] / 1000,
                scan=EXCLUSION_SCAN if hit is None else EXCLUSION_SCAN_CHOSEN,
            )
            for p, body, hit in zip(points, bodies, nearest, strict=True)
        ]
        await conn.fetch(BATCH_EXCLUSIONS, json.dumps(origins), None)
        clock.lap("exclusions_s")
        outbox, messages = await _record(conn, bodies, sites)
        clock.lap("writes_s")
    clock.lap("commit_s")
    stats["atomic_stored"] = stats.get("atomic_stored", 0) + await publish_atomic(nc, js, messages)
    clock.lap("publish_s")
    await conn.execute(MARK_SENT, outbox)
    clock.lap("mark_sent_s")
    await asyncio.gather(*(msg.ack() for msg in msgs))
    clock.lap("ack_s")


async def _one(js: JetStreamContext, conn: asyncpg.Connection, msg: Msg, stats: Stats) -> None:
    clock = _Clock(stats)
    body = json.loads(msg.data)
    location = body["client"]["location"]
    lat, lon = location["lat"], location["lon"]
    sql, args = suitable_query(lat, lon, Criteria(needs=body["needs"], language="en"), 5)
    async with conn.transaction():
        rows = await conn.fetch(sql, *args)
        clock.lap("candidates_s")
        within = geodesic_km(lat, lon, rows[0]["lat"], rows[0]["lon"]) if rows else None
        sql, args = exclusions_query(
            lat,
            lon,
            _criteria(body),
            within_km=within,
            scan=EXCLUSION_SCAN if within is None else EXCLUSION_SCAN_CHOSEN,
        )
        await conn.fetch(sql, *args)
        clock.lap("exclusions_s")
        outbox, messages = await _record(conn, [body], [rows[0]["id"] if rows else None])
        clock.lap("writes_s")
    clock.lap("commit_s")
    await asyncio.gather(
        *(
            js.publish(subject, payload, headers={"Nats-Msg-Id": str(mid)})
            for mid, subject, payload in messages
        )
    )
    clock.lap("publish_s")
    await conn.execute(MARK_SENT, outbox)
    clock.lap("mark_sent_s")
    await msg.ack()
    clock.lap("ack_s")


async def _fetch(sub: Any) -> list[Msg]:
    try:
        msgs: list[Msg] = await sub.fetch(FETCH, timeout=0.5)
    except (nats.errors.TimeoutError, TimeoutError):
        return []
    return msgs


def _count(stats: Stats, msgs: list[Msg]) -> None:
    if msgs:
        stats["batches"] = stats.get("batches", 0) + 1
        stats["messages"] = stats.get("messages", 0) + len(msgs)


async def floor_loop(
    nc: NatsClient, database_url: str, shape: Shape, stop: asyncio.Event, stats: Stats
) -> None:
    """The bare dependencies doing the router's work in ``shape``, until ``stop``; adds to
    ``stats`` where the time went."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        REQUESTED,
        durable=f"floor-{shape.replace('_', '-')}",
        stream=STREAM,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=10_000),
    )
    conns = [await asyncpg.connect(database_url) for _ in range(CONCURRENCY)]
    await conns[0].execute(SCHEMA)
    try:
        if shape == "batched":
            while not stop.is_set():
                if msgs := await _fetch(sub):
                    _count(stats, msgs)
                    await _batched(nc, js, conns[0], msgs, stats)
            return
        queue: asyncio.Queue[Msg] = asyncio.Queue(maxsize=2 * FETCH)

        async def worker(conn: asyncpg.Connection) -> None:
            while True:
                msg = await queue.get()
                try:
                    await _one(js, conn, msg, stats)
                finally:
                    queue.task_done()

        workers = [asyncio.create_task(worker(conn)) for conn in conns]
        try:
            while not stop.is_set():
                msgs = await _fetch(sub)
                _count(stats, msgs)
                for msg in msgs:
                    await queue.put(msg)
            await queue.join()
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
    finally:
        for conn in conns:
            await conn.close()


async def create_stream(js: JetStreamContext) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_stream(STREAM)
    await js.add_stream(
        StreamConfig(
            name=STREAM,
            subjects=["benchfloor.>"],
            storage=StorageType.FILE,
            duplicate_window=120,
            allow_atomic=True,
        )
    )
