"""The router under faults, on real JetStream and PostgreSQL (DESIGN.md sections 1, 3 and 6):
offers that time out, poison messages, a crash between commit and ack, two replicas at once.
"""

import asyncio
import collections
import contextlib
import datetime
import json
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import nats
import pytest
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.codec import encode
from contracts.referrals import DeadLetter, ReferralOffered
from contracts.subjects import (
    DEAD,
    ROUTER_DURABLE,
    STREAM,
    cancel_subject,
    offered_subject,
    requested_subject,
    response_subject,
    status_subject,
)
from services.geo import default_gazetteer
from services.infra.embedded import free_port
from services.router.app import wiring
from services.router.settings import RouterSettings
from services.router.stream import ensure_stream_and_consumer
from services.router.worker import Router
from tests.conftest import router_client
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    CES_SITE,
    ONTRAC,
    ONTRAC_SITE,
    SYSTEM,
    Observer,
    answer,
    as_dict,
    cancel,
    make_request,
    publish,
    send_request,
)
from tests.waits import until

pytestmark = pytest.mark.e2e

REQUESTED = requested_subject(SYSTEM)
CANCEL = cancel_subject(SYSTEM)
STATUS = status_subject(SYSTEM)


@contextlib.asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def places(url: str) -> dict[str, tuple[int, int]]:
    """Per site: places reserved, and offers holding one (open or accepted), in one snapshot."""
    async with database(url) as conn:
        rows = await conn.fetch(
            "SELECT s.id, s.reserved, count(o.id) AS held FROM directory.site s"
            " LEFT JOIN router.offer o ON o.site_id = s.id AND o.state IN ('open', 'accepted')"
            " GROUP BY s.id"
        )
    return {row["id"]: (row["reserved"], row["held"]) for row in rows}


async def stream_counts(js: JetStreamContext, subjects: str) -> dict[str, int]:
    """Messages the stream holds per subject (after JetStream's Nats-Msg-Id de-duplication)."""
    info = await js.stream_info(STREAM, subjects_filter=subjects)
    return dict(info.state.subjects or {})


async def referral_statuses(conn: asyncpg.Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT status, count(*) AS n FROM router.referral GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


# -- 1. an offer nobody answers ------------------------------------------------------------------


async def test_unanswered_offers_expire_and_reroute_until_none_is_left(
    observer: Observer, nc, router_settings: RouterSettings
) -> None:
    settings = msgspec.structs.replace(router_settings, offer_timeout_s=1.0)
    url = settings.database_url
    async with router_client(settings) as router:
        request = make_request()
        rid = request.referral_id
        await send_request(nc.jetstream(), request)
        first = await observer.until_offer(rid, 1)
        assert (first.provider_id, first.site_id) == (CCA, CCA_SITE)

        second = await observer.until_offer(rid, 2, within=5)
        assert (second.provider_id, second.site_id) == (CES, CES_SITE)
        expired = next(s for s in observer.status if s.referral_id == rid and s.status == "expired")
        assert (expired.reason, expired.attempt) == ("timeout", 1)
        assert (expired.provider_id, expired.site_id) == (CCA, CCA_SITE)
        assert expired.at >= first.expires_at  # not a moment early
        # The first site's place came back when the offer expired, and stays free.
        reserved = await places(url)
        assert reserved[CCA_SITE] == (0, 0)
        assert all(held == taken for taken, held in reserved.values()), reserved

        # Nobody answers the others either: each expires in turn, then nothing is left.
        final = await observer.until_terminal(rid, within=10)
        assert final.status == "unmatched"
        assert final.explanation is not None
        assert final.explanation.excluded == {"already_offered": 3}
        assert observer.statuses(rid) == [
            "received",
            "offered",
            "expired",
            "offered",
            "expired",
            "offered",
            "expired",
            "unmatched",
        ]
        offers = observer.offers(rid)
        assert [o.site_id for o in offers] == [CCA_SITE, CES_SITE, ONTRAC_SITE]
        expiries = [s for s in observer.status if s.referral_id == rid and s.status == "expired"]
        for offer, expiry in zip(offers, expiries, strict=True):
            assert (expiry.site_id, expiry.reason) == (offer.site_id, "timeout")
            assert expiry.at >= offer.expires_at
            assert expiry.at - offer.expires_at < datetime.timedelta(seconds=2)  # promptly
        assert {taken for taken, _ in (await places(url)).values()} == {0}

        view = (await router.get(f"/api/v1/referrals/{rid}")).json()
    assert view["status"] == "unmatched"
    assert "current_offer" not in view
    assert [o["state"] for o in view["offers"]] == ["expired"] * 3
    assert [h["event"] for h in view["history"]] == [
        "receive",
        "offer",
        "expire",
        "offer",
        "expire",
        "offer",
        "expire",
        "no_site_left",
    ]
    expire = view["history"][2]
    assert (expire["status"], expire["reason"], expire["site_id"]) == (
        "expired",
        "timeout",
        CCA_SITE,
    )


# -- 2. poison messages ------------------------------------------------------------------------


class Bad(msgspec.Struct, frozen=True):
    label: str
    subject: str
    payload: bytes
    #: A part of the error the dead letter must carry (e.g. the JSON path of the bad field).
    error: str
    #: The referral id the router can still read from the payload, if any.
    referral_id: uuid.UUID | None = None
    #: Whether that referral must become ``rejected`` (a new id on referral.requested).
    rejected: bool = False


def bad_request(label: str, error: str, change: Callable[[dict[str, Any]], object]) -> Bad:
    """A request with a new referral id, made invalid by ``change`` (which edits its JSON)."""
    body = as_dict(make_request())
    change(body)
    rid = uuid.UUID(body["referral_id"])
    return Bad(label, REQUESTED, msgspec.json.encode(body), error, rid, rejected=True)


def first_bad_batch() -> list[Bad]:
    cancel_body = cancel(uuid.uuid4())
    return [
        Bad(
            "undecodable",
            REQUESTED,
            b'{"referral_id": "' + str(uuid.uuid4()).encode() + b'", oops',
            "not a JSON message",
        ),
        Bad("not an object", REQUESTED, b"[1, 2, 3]", "Expected `object`, got `array`"),
        bad_request(
            "wrong type tag",
            "Invalid value 'referral.requested.v9' - at `$.type`",
            lambda body: body.update(type="referral.requested.v9"),
        ),
        Bad(
            "a cancel on referral.requested",
            REQUESTED,
            encode(cancel_body),
            "a referral.cancel.v1 message does not belong on referral.requested",
            cancel_body.referral_id,
            rejected=True,
        ),
        bad_request(
            "missing needs",
            "missing required field `needs`",
            lambda body: body.pop("needs"),
        ),
        bad_request(
            "latitude 91",
            "`$.client.location.lat`",
            lambda body: body["client"].update(location={"lat": 91.0, "lon": -76.2}),
        ),
    ]


def second_bad_batch() -> list[Bad]:
    return [
        bad_request("age 200", "`$.client.age`", lambda body: body["client"].update(age=200)),
        bad_request(
            "unknown service code",
            "Invalid enum value 'basket_weaving' - at `$.needs[0]`",
            lambda body: body.update(needs=["basket_weaving"]),
        ),
        bad_request(
            # The error quotes the value: the rejected status event must still fit its contract.
            "a very long unknown service code",
            "`$.needs[0]`",
            lambda body: body.update(needs=["x" * 5000]),
        ),
        bad_request(
            "unknown community",
            "client.location: 'Atlantis' is not a community",
            lambda body: body["client"].update(location={"community": "Atlantis"}),
        ),
        bad_request(
            "postal code in an unknown rural FSA",
            "K0A is a rural FSA",
            lambda body: body["client"].update(location={"postal_code": "K0A 9Z9"}),
        ),
    ]


def bad_for_live_referral(offer: ReferralOffered) -> list[Bad]:
    """Invalid messages naming a referral that exists and is offered: they must not touch it."""
    rid = offer.referral_id
    return [
        Bad(
            "response with decision maybe",
            response_subject(CCA),
            msgspec.json.encode({**as_dict(answer(offer, "accept")), "decision": "maybe"}),
            "Invalid enum value 'maybe' - at `$.decision`",
            rid,
        ),
        Bad(
            "response on a subject that names no provider",
            "referral.response.Not_A_Slug",
            encode(answer(offer, "accept")),
            "'Not_A_Slug' is not a provider id",
            rid,
        ),
        Bad(
            "cancel with an empty reason",
            CANCEL,
            msgspec.json.encode({**as_dict(cancel(rid)), "reason": ""}),
            "`$.reason`",
            rid,
        ),
        Bad(
            "an invalid repeat of the live request",
            REQUESTED,
            msgspec.json.encode({**as_dict(make_request(referral_id=rid)), "needs": []}),
            "`$.needs`",
            rid,
        ),
    ]


async def test_invalid_messages_are_dead_lettered_once_with_the_reason(
    router, observer: Observer, nc, router_settings: RouterSettings
) -> None:
    js = nc.jetstream()
    terminated: list[bytes] = []

    async def on_terminated(msg: Msg) -> None:
        terminated.append(msg.data)

    # JetStream announces each message a consumer terminated (term, not ack).
    advisory = f"$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{STREAM}.{ROUTER_DURABLE}"
    await nc.subscribe(advisory, cb=on_terminated)
    valid = make_request()
    first, second = first_bad_batch(), second_bad_batch()
    for bad in first:
        await publish(js, bad.subject, bad.payload, msg_id=str(uuid.uuid4()))
    await send_request(js, valid)
    for bad in second:
        await publish(js, bad.subject, bad.payload, msg_id=str(uuid.uuid4()))

    # The valid referral in between is routed as usual.
    offer = await observer.until_offer(valid.referral_id, 1)
    assert offer.site_id == CCA_SITE
    third = bad_for_live_referral(offer)
    for bad in third:
        await publish(js, bad.subject, bad.payload, msg_id=str(uuid.uuid4()))
    everything = [*first, *second, *third]

    dead = await observer.until_dead(len(everything))
    by_payload: dict[bytes, list[DeadLetter]] = {}
    for letter in dead:
        by_payload.setdefault(letter.payload, []).append(letter)
    errors: dict[str, str] = {}
    for bad in everything:
        letters = by_payload.get(bad.payload, [])
        assert len(letters) == 1, (bad.label, letters)
        letter = letters[0]
        assert bad.error in letter.error, (bad.label, letter.error)
        assert letter.subject == bad.subject, bad.label
        assert letter.referral_id == bad.referral_id, bad.label
        errors[bad.label] = letter.error

    for bad in everything:
        if not bad.rejected:
            continue
        assert bad.referral_id is not None
        rejected = await observer.until_terminal(bad.referral_id)
        assert observer.statuses(bad.referral_id) == ["rejected"], bad.label
        assert rejected.reason is not None
        assert bad.error in rejected.reason, (bad.label, rejected.reason)
        error = errors[bad.label]
        if len(error) <= 2000:  # the status event's reason is the dead letter's error
            assert rejected.reason == error, bad.label
        else:  # cut to the contract's bound, keeping both ends
            assert rejected.reason[:500] == error[:500], bad.label
            assert rejected.reason[-500:] == error[-500:], bad.label
        view = (await router.get(f"/api/v1/referrals/{bad.referral_id}")).json()
        assert view["status"] == "rejected", bad.label
        assert [(h["event"], h["status"]) for h in view["history"]] == [("reject", "rejected")]
        assert bad.error in view["history"][0]["reason"], bad.label

    # Invalid messages naming the live referral changed nothing but its history (a refusal).
    assert observer.statuses(valid.referral_id) == ["received", "offered"]
    view = (await router.get(f"/api/v1/referrals/{valid.referral_id}")).json()
    assert view["status"] == "offered"
    assert view["current_offer"]["offer_id"] == str(offer.offer_id)
    assert [(h["event"], h.get("refused", False)) for h in view["history"]] == [
        ("receive", False),
        ("offer", False),
        ("reject", True),
    ]
    assert "an invalid repeat was dead-lettered" in view["history"][-1]["reason"]

    # Settled: every message acked, none waiting for a redelivery, and after a while still one
    # dead letter per bad message in the stream (no redelivery dead-lettered it again).
    async def settled() -> bool:
        info = await js.consumer_info(STREAM, ROUTER_DURABLE)
        return bool(info.num_pending == 0 and info.num_ack_pending == 0)

    await until(settled, what="every message acked")
    await asyncio.sleep(1.5)  # longer than the first redelivery backoff (1 s)
    info = await js.consumer_info(STREAM, ROUTER_DURABLE)
    assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
    assert info.delivered is not None
    assert info.delivered.consumer_seq == len(everything) + 1  # each delivered exactly once
    assert (await stream_counts(js, DEAD)) == {DEAD: len(everything)}
    assert len({letter.message_id for letter in observer.dead}) == len(everything)
    async with database(router_settings.database_url) as conn:
        statuses = await referral_statuses(conn)
    assert statuses == {"offered": 1, "rejected": sum(bad.rejected for bad in everything)}
    # Poison messages were terminated, the valid one acked.
    assert len(terminated) == len(everything)


# -- 3. a crash after commit, before publish and ack ----------------------------------------------


async def test_redelivery_after_a_crash_before_ack_changes_nothing_twice(
    observer: Observer, nc, router_settings: RouterSettings
) -> None:
    js = nc.jetstream()
    url = router_settings.database_url
    await ensure_stream_and_consumer(js, router_settings)
    request = make_request()
    rid = request.referral_id
    await send_request(js, request)

    # A router process handles the message through the real dispatch path, commits, and dies
    # before it publishes the outbox rows or acks: its connection closes with the message
    # still pending on the shared durable consumer.
    crashed_nc = await nats.connect(router_settings.nats_url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    try:
        crashed_js = crashed_nc.jetstream()
        sub = await crashed_js.pull_subscribe_bind(durable=ROUTER_DURABLE, stream=STREAM)
        [msg] = await sub.fetch(1, timeout=5)
        assert msg.metadata.num_delivered == 1
        crashed = Router(
            pool, crashed_js, router_settings, wiring(router_settings), default_gazetteer().resolve
        )
        async with pool.acquire() as held:
            handled, rows = await crashed.consumer.dispatch(
                held, msg.subject, msg.data, msg.metadata.sequence.stream
            )
        assert (handled.outcome, handled.referral_id) == ("offered", rid)
        assert sorted(row.subject for row in rows) == sorted([offered_subject(CCA), STATUS, STATUS])
    finally:
        await pool.close()
        await crashed_nc.close()
    async with database(url) as conn:
        unsent = await conn.fetchval("SELECT count(*) FROM router.outbox WHERE sent_at IS NULL")
    assert unsent == 3
    assert observer.offers(rid) == []

    # A router starts: the relay publishes what the dead one committed, JetStream redelivers
    # the message after its backoff, and the redelivery is recognised as handled already.
    async with router_client(router_settings) as router:
        offer = await observer.until_offer(rid, 1)
        assert offer.site_id == CCA_SITE

        async def redelivered_and_acked() -> bool:
            info = await js.consumer_info(STREAM, ROUTER_DURABLE)
            assert info.delivered is not None
            return bool(info.delivered.consumer_seq >= 2 and info.num_ack_pending == 0)

        await until(redelivered_and_acked, within=10, what="the redelivery, acked")
        ready = (await router.get("/ready")).json()
        view = (await router.get(f"/api/v1/referrals/{rid}")).json()
    assert ready["handled"] == 1  # the redelivery, handled and acked by the new router

    info = await js.consumer_info(STREAM, ROUTER_DURABLE)
    assert info.delivered is not None
    assert (info.delivered.consumer_seq, info.delivered.stream_seq) == (2, 1)
    assert (info.num_pending, info.num_redelivered) == (0, 0)

    assert observer.statuses(rid) == ["received", "offered"]
    assert len(observer.offers(rid)) == 1
    assert await stream_counts(js, "referral.>") == {
        REQUESTED: 1,
        STATUS: 2,
        offered_subject(CCA): 1,
    }
    assert view["status"] == "offered"
    assert [h["event"] for h in view["history"]] == ["receive", "offer"]
    async with database(url) as conn:
        offers = await conn.fetchval(
            "SELECT count(*) FROM router.offer WHERE referral_id = $1", rid
        )
        processed = await conn.fetch(
            "SELECT message_id, outcome FROM router.processed WHERE referral_id = $1", rid
        )
        unsent = await conn.fetchval("SELECT count(*) FROM router.outbox WHERE sent_at IS NULL")
    assert offers == 1
    # The redelivery claimed nothing new: the one record is the committed handling's outcome.
    assert [(r["message_id"], r["outcome"]) for r in processed] == [(request.message_id, "offered")]
    assert unsent == 0
    assert (await places(url))[CCA_SITE] == (1, 1)


# -- 4. two router processes, sites of capacity 1 -------------------------------------------------

EO = Path(sys.executable).parent / "eo"
REPLICAS = 2
REQUESTS = 30


class Replica:
    """One ``eo router`` process, its port and its log file."""

    def __init__(self, process: asyncio.subprocess.Process, port: int, log: Path) -> None:
        self.process = process
        self.port = port
        self.log = log

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def handled(self) -> list[dict[str, Any]]:
        """The ``message.handled`` lines of its JSON log."""
        lines = self.log.read_text(errors="replace").splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if e.get("event") == "message.handled"]


async def start_replica(settings: RouterSettings, log: Path) -> Replica:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROUTER_")}
    env |= {
        "DATABASE_URL": settings.database_url,
        "NATS_URL": settings.nats_url,
        "ROUTER_PORT": str(port),
        "ROUTER_SWEEP_INTERVAL_S": "0.2",
        "ROUTER_FETCH_TIMEOUT_S": "0.2",
        "ROUTER_BATCH_SIZE": "5",
    }
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            str(EO), "router", env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    return Replica(process, port, log)


async def wait_ready(replica: Replica, http: httpx.AsyncClient) -> None:
    async def ready() -> bool:
        assert replica.process.returncode is None, replica.tail()
        try:
            return (await http.get(f"{replica.base}/ready")).status_code == 200
        except httpx.TransportError:
            return False

    await until(ready, within=30, what=f"{replica.base}/ready to answer 200")


async def test_two_router_processes_never_overcommit_a_site(
    observer: Observer, nc, router_settings: RouterSettings, tmp_path: Path
) -> None:
    url = router_settings.database_url
    async with database(url) as conn:
        await conn.execute("UPDATE directory.site SET capacity = 1")
    replicas: list[Replica] = []
    try:
        for n in range(REPLICAS):
            replicas.append(await start_replica(router_settings, tmp_path / f"router-{n}.log"))
        async with httpx.AsyncClient(timeout=2) as http:
            await asyncio.gather(*(wait_ready(replica, http) for replica in replicas))

            requests = [make_request() for _ in range(REQUESTS)]
            js = nc.jetstream()
            await asyncio.gather(*(send_request(js, request) for request in requests))

            def all_routed() -> bool:
                return all(
                    (last := observer.last_status(r.referral_id)) is not None
                    and last.status in ("offered", "unmatched")
                    for r in requests
                )

            await observer.wait_for(all_routed, within=30)
            await asyncio.sleep(0.5)  # anything a replica would wrongly add shows up by now
            handled = [
                (await http.get(f"{replica.base}/ready")).json()["handled"] for replica in replicas
            ]
    finally:
        for replica in replicas:
            if replica.process.returncode is None:
                replica.process.send_signal(signal.SIGTERM)
        stuck = []
        for replica in replicas:
            try:
                await asyncio.wait_for(replica.process.wait(), 30)
            except TimeoutError:
                stuck.append(replica.port)
                replica.process.kill()
                await replica.process.wait()
    assert not stuck, f"routers on ports {stuck} did not stop within 30 s of SIGTERM"
    for replica in replicas:
        assert replica.process.returncode == 0, replica.tail()

    outcomes = {r.referral_id: tuple(observer.statuses(r.referral_id)) for r in requests}
    seen = collections.Counter(outcomes.values())
    offered = [rid for rid, statuses in outcomes.items() if statuses == ("received", "offered")]
    unmatched = [rid for rid, s in outcomes.items() if s == ("received", "unmatched")]
    assert (len(offered), len(unmatched)) == (3, REQUESTS - 3), seen
    sites = sorted(o.site_id for rid in offered for o in observer.offers(rid))
    assert sites == sorted([CCA_SITE, CES_SITE, ONTRAC_SITE])
    assert {o.provider_id for o in observer.offered} == {CCA, CES, ONTRAC}
    for rid in unmatched:
        final = observer.last_status(rid)
        assert final is not None
        assert final.explanation is not None
        assert final.explanation.excluded == {"not_accepting_or_full": 3}, final.explanation

    async with database(url) as conn:
        assert await conn.fetchval("SELECT max(reserved) FROM directory.site") == 1
        offers = await conn.fetchval("SELECT count(*) FROM router.offer")
        statuses = await referral_statuses(conn)
    assert offers == 3
    assert statuses == {"offered": 3, "unmatched": REQUESTS - 3}
    assert all(taken == held == 1 for taken, held in (await places(url)).values())
    # Both replicas took part, and together they handled each message once; their JSON logs
    # say the same.
    assert sum(handled) == REQUESTS, handled
    assert all(count > 0 for count in handled), handled
    logged = [replica.handled() for replica in replicas]
    assert [len(lines) for lines in logged] == handled
    outcomes_logged = collections.Counter(e["outcome"] for lines in logged for e in lines)
    assert outcomes_logged == {"offered": 3, "unmatched": REQUESTS - 3}
    assert {e["referral_id"] for lines in logged for e in lines} == {
        str(r.referral_id) for r in requests
    }


async def test_an_oversized_poison_message_is_dead_lettered_truncated(
    router, observer: Observer, nc
) -> None:
    """A message near NATS's 1 MiB limit cannot be re-published whole once base64-encoded;
    its dead letter carries the start, its size and its stream sequence instead.
    """
    huge = b'{"type": "referral.requested.v1", "junk": "' + b"x" * 900_000 + b'"}'
    await publish(nc.jetstream(), REQUESTED, huge, msg_id=str(uuid.uuid4()))
    (dead,) = await observer.until_dead(1)
    assert dead.payload_truncated is True
    assert dead.payload_size == len(huge)
    assert dead.payload == huge[: len(dead.payload)]
    assert 0 < len(dead.payload) < len(huge)
    assert dead.stream_sequence is not None
    original = await nc.jetstream().get_msg("REFERRALS", dead.stream_sequence)
    assert original.data == huge
