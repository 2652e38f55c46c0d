"""What the fault-injection tests share: router processes to kill, simulators of the providers
and of the referring OW system, the load, and the audit that counts lost and duplicated outcomes
from the database and the stream.

The simulators publish as the real parties would (JetStream publish, ``Nats-Msg-Id`` = the
message id) and draw every choice from a seed and the id of the offer or referral concerned, so
a run is the same run whatever order the messages arrive in (only the timing differs).
"""

import asyncio
import collections
import contextlib
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import asyncpg
import httpx
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.codec import decode_outbound, encode
from contracts.common import Message
from contracts.referrals import (
    PROGRESS_CODES,
    ROUTING_OUTCOMES,
    TERMINAL_STATUSES,
    ProgressStatus,
    ProviderNotice,
    ReferralOffered,
    ReferralRequested,
    ReferralStatusChanged,
)
from contracts.subjects import (
    NOTICE_PREFIX,
    OFFERED_PREFIX,
    ROUTER_DURABLE,
    STATUS_PREFIX,
    STREAM,
    all_of,
    cancel_subject,
    progress_subject,
    requested_subject,
    response_subject,
)
from services.infra.embedded import free_port, terminate
from tests.referrals import SYSTEM, answer, cancel, make_request, progress

OFFERED_ALL = all_of(OFFERED_PREFIX)
STATUS_ALL = all_of(STATUS_PREFIX)
NOTICE_ALL = all_of(NOTICE_PREFIX)
EO = Path(sys.executable).parent / "eo"

#: The states only an accepted referral reaches: its routing outcome was ``accepted``.
AFTER_ACCEPTANCE: frozenset[str] = frozenset(
    {"in_service", "completed", "not_started", "ended_early", "withdrawn"}
)
#: A referral in one of these states has its routing outcome (DESIGN.md section 6).
ROUTED: frozenset[str] = ROUTING_OUTCOMES | AFTER_ACCEPTANCE
#: How an accepted referral closes: at most one of these each.
CLOSING: frozenset[str] = TERMINAL_STATUSES - ROUTING_OUTCOMES
#: The lifecycle of DESIGN.md section 3, written out here rather than imported from the router,
#: so the audit checks the router against the design and not against itself.
NEXT_STATES: dict[str, frozenset[str]] = {
    "received": frozenset({"offered", "unmatched", "rejected", "cancelled"}),
    "offered": frozenset({"accepted", "declined", "expired", "cancelled"}),
    "declined": frozenset({"offered", "unmatched", "cancelled"}),
    "expired": frozenset({"offered", "unmatched", "cancelled"}),
    "accepted": frozenset({"in_service", "not_started", "withdrawn"}),
    "in_service": frozenset({"completed", "ended_early", "withdrawn"}),
}
#: Statuses a referral passes through at most once (offered, declined, expired repeat, one
#: attempt each).
ONCE: frozenset[str] = ROUTED | {"received", "accepted"}
#: The notice each refused event of a provider gets (a refused cancel tells nobody).
REFUSAL_NOTICE: dict[str, str] = {
    "accept": "response_refused",
    "decline": "response_refused",
    "start": "progress_refused",
    "complete": "progress_refused",
    "not_start": "progress_refused",
    "end_early": "progress_refused",
}
#: The notice a transition sends the provider concerned (cancel: only with an open offer).
TRANSITION_NOTICE: dict[str, str] = {
    "withdrawn": "referral_withdrawn",
    "cancelled": "offer_cancelled",
    "expired": "offer_expired",
}

#: Router settings for fault runs: fast loops, fast redelivery, quiet logs.
FAST = {
    "ROUTER_SWEEP_INTERVAL_S": "0.2",
    "ROUTER_FETCH_TIMEOUT_S": "0.2",
    "ROUTER_RELAY_GRACE_S": "0.5",
    "ROUTER_BACKOFF_S": "0.5,1,2",
    "EO_LOG_LEVEL": "warning",
}


@dataclass
class RouterProcess:
    """One ``eo router`` process; ``kill()`` is SIGKILL: no drain, no goodbye."""

    database_url: str
    nats_url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "EO_"))}
        env |= FAST | self.extra_env
        env |= {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "ROUTER_PORT": str(self.port),
        }
        self.starts += 1
        self._close_log()
        self._log = (self.log_dir / f"router-{self.port}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [str(EO), "router"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as http:
            while True:
                assert self.process is not None
                assert self.process.poll() is None, f"router exited:\n{self.log_tail()}"
                try:
                    reply = await http.get(f"http://127.0.0.1:{self.port}/ready", timeout=1)
                    if reply.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "router not ready"
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_dir / f"router-{self.port}-{self.starts}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {path})"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = terminate(self.process, timeout=30)
        self._close_log()
        return code


# -- the parties --------------------------------------------------------------------------------


def keyed(seed: int, *key: object) -> random.Random:
    """A random generator for one decision: the same seed and key, the same draws."""
    return random.Random(":".join([str(seed), *map(str, key)]))


def derived_id(about: uuid.UUID, what: str) -> uuid.UUID:
    """The id of the message a simulator sends about ``about``: a retry is the same message."""
    return uuid.uuid5(about, what)


SentKind = Literal["response", "progress", "cancel"]


@dataclass(frozen=True)
class Sent:
    """One message a simulator published and JetStream stored.

    ``what``: the decision of a response (accept, decline), the status of a progress report,
    or what OW meant by a cancel (``cancel`` before acceptance, ``withdraw`` after it; the
    router decides which it is from the referral's state when it handles it).
    """

    kind: SentKind
    referral_id: uuid.UUID
    what: str


async def publish_stored(
    js: JetStreamContext, subject: str, message: Message, tries: int = 50
) -> bool:
    """Publish with ``Nats-Msg-Id``, again until JetStream says it is stored (a repeat of a
    stored one is dropped as a duplicate, and acknowledged); False after ``tries``."""
    headers = {"Nats-Msg-Id": str(message.message_id)}
    for _ in range(tries):
        try:
            await js.publish(subject, encode(message), headers=headers)
            return True
        except (nats.errors.Error, OSError, TimeoutError):
            await asyncio.sleep(0.2)
    return False


class _Party:
    """A simulated party: a durable pull consumer of its own on the stream, the messages it
    sent, and its background tasks (answers and reports waiting for their moment)."""

    filters: tuple[str, ...] = ()

    def __init__(self, nc: NatsClient, seed: int, prefix: str) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.seed = seed
        self.name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        #: Every message it published (stored by JetStream), by message id.
        self.sent: dict[uuid.UUID, Sent] = {}
        #: Publishes given up on (none expected while nats-server runs).
        self.failed = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        config = ConsumerConfig(
            name=self.name,
            durable_name=self.name,
            filter_subjects=list(self.filters),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=5,
        )
        await self.js.add_consumer(STREAM, config)
        sub = await self.js.pull_subscribe_bind(durable=self.name, stream=STREAM)
        self._task = asyncio.create_task(self._run(sub))

    async def _run(self, sub: Any) -> None:
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except (nats.errors.TimeoutError, TimeoutError):
                continue
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                await self._on(msg)

    async def _on(self, msg: Msg) -> None:
        raise NotImplementedError

    def later(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background (``caught_up()`` waits for it)."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def send(self, subject: str, message: Message, sent: Sent) -> bool:
        if await publish_stored(self.js, subject, message):
            self.sent[message.message_id] = sent
            return True
        self.failed += 1
        return False

    async def caught_up(self) -> bool:
        """Nothing left in the background, and every message for it read and acked."""
        if self._tasks:
            return False
        info = await self.js.consumer_info(STREAM, self.name)
        return not (info.num_pending or info.num_ack_pending)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


#: What a provider goes on to report on an accepted referral (DESIGN.md section 3c), with its
#: weight: started then finished, never started, started then stopped, started only.
PLANS: tuple[tuple[tuple[ProgressStatus, ...], int], ...] = (
    (("in_service", "completed"), 4),
    (("not_started",), 2),
    (("in_service", "ended_early"), 2),
    (("in_service",), 2),
)


class ProviderSimulator(_Party):
    """Every provider at once, as a real integration would: a JetStream consumer on its offers
    and notices (so it sees each stored one once), answering each offer with accept or decline.

    With ``progress`` > 0 it goes on, for that share of the referrals it accepted, to report
    what happened (``PLANS``), one report every ``pace`` seconds (drawn), each once the one
    before is stored. ``think`` > 0: it takes up to that long to answer an offer, so an OW
    cancel may come first. A notice that a referral is not or no longer its own (offer
    cancelled, referral withdrawn, a response or report refused) stops what it had left to say
    about it, as it would stop a caseworker; the notice may of course come too late.
    """

    filters = (OFFERED_ALL, NOTICE_ALL)

    def __init__(
        self,
        nc: NatsClient,
        *,
        accept: float = 0.7,
        seed: int = 7,
        progress: float = 0.0,
        think: float = 0.0,
        pace: tuple[float, float] = (0.1, 1.5),
    ) -> None:
        super().__init__(nc, seed, "sim")
        self.accept = accept
        self.progress = progress
        self.think = think
        self.pace = pace
        self.offers: list[ReferralOffered] = []
        self.notices: list[ProviderNotice] = []
        self.answered = 0
        #: Referrals the router said are not, or no longer, this provider's.
        self.gone: set[uuid.UUID] = set()
        #: Reports it had planned and dropped after such a notice (or an offer not answered).
        self.dropped = 0
        self._planned: set[uuid.UUID] = set()

    async def _on(self, msg: Msg) -> None:
        event = decode_outbound(msg.data)
        if isinstance(event, ProviderNotice):
            self.notices.append(event)
            self.gone.add(event.referral_id)
            await _ack(msg)
            return
        assert isinstance(event, ReferralOffered)
        self.offers.append(event)
        if self.think > 0:
            self.later(self._answer_later(event, msg))
        else:
            await self._answer(event, msg)

    async def _answer_later(self, offer: ReferralOffered, msg: Msg) -> None:
        await asyncio.sleep(keyed(self.seed, offer.offer_id, "think").uniform(0, self.think))
        if offer.referral_id in self.gone:  # cancelled meanwhile: nothing to answer
            self.dropped += 1
            await _ack(msg)
            return
        await self._answer(offer, msg)

    async def _answer(self, offer: ReferralOffered, msg: Msg) -> None:
        accepts = keyed(self.seed, offer.offer_id, "answer").random() < self.accept
        decision = "accept" if accepts else "decline"
        reply = msgspec.structs.replace(
            answer(offer, decision, None if accepts else "full"),
            message_id=derived_id(offer.offer_id, "answer"),
        )
        subject = response_subject(offer.provider_id)
        if not await self.send(subject, reply, Sent("response", offer.referral_id, decision)):
            await _settle(msg.nak(delay=0.5))  # answer again later, like a real provider
            return
        await _ack(msg)
        self.answered += 1
        if accepts and offer.referral_id not in self._planned:
            self._planned.add(offer.referral_id)
            rng = keyed(self.seed, offer.referral_id, "plan")
            if rng.random() < self.progress:
                steps = rng.choices([p for p, _ in PLANS], weights=[w for _, w in PLANS])[0]
                self.later(self._report(offer, steps, rng))

    async def _report(
        self, offer: ReferralOffered, steps: Sequence[ProgressStatus], rng: random.Random
    ) -> None:
        subject = progress_subject(offer.provider_id)
        for position, status in enumerate(steps):
            await asyncio.sleep(rng.uniform(*self.pace))
            if offer.referral_id in self.gone:
                self.dropped += len(steps) - position
                return
            codes = PROGRESS_CODES[status]
            report = msgspec.structs.replace(
                progress(offer.referral_id, status, rng.choice(codes) if codes else None),
                message_id=derived_id(offer.referral_id, f"progress:{status}"),
            )
            sent = Sent("progress", offer.referral_id, status)
            if not await self.send(subject, report, sent):
                return


class OwSimulator(_Party):
    """The referring OW system, reading its status events from a consumer of its own: it
    cancels a share (``cancel``) of its referrals soon after their first offer, racing the
    provider's answer, and withdraws a share (``withdraw``) of the accepted ones after a while
    (``pace``), racing the provider's reports. At most one call-off per referral; none once it
    has seen the referral close.
    """

    filters = (STATUS_ALL,)

    def __init__(
        self,
        nc: NatsClient,
        *,
        cancel: float = 0.1,
        withdraw: float = 0.2,
        seed: int = 7,
        pace: tuple[float, float] = (0.0, 3.0),
        system: str = SYSTEM,
    ) -> None:
        super().__init__(nc, seed, "ow-sim")
        self.cancel_share = cancel
        self.withdraw_share = withdraw
        self.pace = pace
        self.system = system
        #: The status events it read, per referral, in the order read.
        self.seen: dict[uuid.UUID, list[str]] = collections.defaultdict(list)
        #: Call-offs it had planned and let go, the referral having closed first.
        self.dropped = 0
        self._decided: set[tuple[uuid.UUID, str]] = set()
        self._called_off: set[uuid.UUID] = set()

    async def _on(self, msg: Msg) -> None:
        event = decode_outbound(msg.data)
        await _ack(msg)
        if not isinstance(event, ReferralStatusChanged):
            return
        rid = event.referral_id
        self.seen[rid].append(event.status)
        if event.status == "offered" and event.attempt == 1:
            self._maybe(rid, "cancel", self.cancel_share, (0.0, 0.5))
        elif event.status == "accepted":
            self._maybe(rid, "withdraw", self.withdraw_share, self.pace)

    def _maybe(self, rid: uuid.UUID, intent: str, share: float, delay: tuple[float, float]) -> None:
        if (rid, intent) in self._decided or rid in self._called_off:
            return
        self._decided.add((rid, intent))
        rng = keyed(self.seed, rid, intent)
        if rng.random() < share:
            self._called_off.add(rid)
            self.later(self._call_off(rid, intent, rng.uniform(*delay)))

    async def _call_off(self, rid: uuid.UUID, intent: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if any(status in TERMINAL_STATUSES for status in self.seen[rid]):
            self.dropped += 1
            return
        reason = "client moved" if intent == "cancel" else "client found work on their own"
        message = msgspec.structs.replace(cancel(rid, reason), message_id=derived_id(rid, "cancel"))
        subject = cancel_subject(self.system)
        await self.send(subject, message, Sent("cancel", rid, intent))


async def _settle(ack: Any) -> None:
    # A failed ack: the message comes back, and is answered the same way.
    with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
        await ack


async def _ack(msg: Msg) -> None:
    await _settle(msg.ack())


# -- the load and the waits -------------------------------------------------------------------


async def send_referrals(
    js: JetStreamContext,
    count: int,
    *,
    per_second: float | None = None,
    rng: random.Random | None = None,
) -> list[ReferralRequested]:
    """Publish ``count`` requests from Almonte as fast as JetStream takes them, or spread at
    ``per_second``; referral ids drawn from ``rng`` when given (a seeded run's referrals are the
    same referrals, and so get the same decisions from the simulators)."""
    requests = [
        make_request(
            referral_id=None if rng is None else uuid.UUID(int=rng.getrandbits(128), version=4)
        )
        for _ in range(count)
    ]
    started = time.monotonic()
    for position, request in enumerate(requests):
        await js.publish_async(
            requested_subject(request.source.system),
            encode(request),
            headers={"Nats-Msg-Id": str(request.message_id)},
        )
        if per_second is not None:
            ahead = started + (position + 1) / per_second - time.monotonic()
            if ahead > 0:
                await asyncio.sleep(ahead)
    await js.publish_async_completed()
    return requests


async def wait_all_terminal(
    database_url: str, referral_ids: Iterable[uuid.UUID], within: float
) -> float:
    """Seconds until every referral has its routing outcome (``ROUTED``: accepted or a state
    after it, unmatched, cancelled, rejected); AssertionError after ``within``."""
    ids = list(referral_ids)
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM router.referral WHERE id = ANY($1::uuid[])"
                " AND status = ANY($2::text[])",
                ids,
                list(ROUTED),
            )
            if done == len(ids):
                return time.monotonic() - started
            if time.monotonic() - started >= within:
                stuck = await conn.fetch(
                    "SELECT status, count(*) AS n FROM router.referral"
                    " WHERE id = ANY($1::uuid[]) GROUP BY status",
                    ids,
                )
                states = {row["status"]: row["n"] for row in stuck}
                raise AssertionError(f"{len(ids) - done} not terminal after {within} s: {states}")
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def unhandled(conn: asyncpg.Connection, message_ids: Iterable[uuid.UUID]) -> int:
    """How many of these inbound messages the router has not handled (committed) yet."""
    ids = list(message_ids)
    done = await conn.fetchval(
        "SELECT count(*) FROM router.processed WHERE message_id = ANY($1::uuid[])"
        " AND outcome <> 'handling'",
        ids,
    )
    return len(ids) - int(done)


async def wait_settled(
    database_url: str, js: JetStreamContext, parties: Sequence[_Party], within: float
) -> float:
    """Seconds until nothing moves any more: every party has sent all it meant to and read all
    it was sent, the router has handled every message (its consumer empty, every message the
    parties sent handled) and published its whole outbox. Checked three times in a row, since
    one party's last message may make another act. AssertionError after ``within``."""
    started = time.monotonic()
    quiet = 0
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            busy: list[str] = [p.name for p in parties if not await p.caught_up()]
            info = await js.consumer_info(STREAM, ROUTER_DURABLE)
            if info.num_pending or info.num_ack_pending:
                busy.append(f"router ({info.num_pending} pending, {info.num_ack_pending} acks)")
            sent = [mid for p in parties for mid in p.sent]
            if left := await unhandled(conn, sent):
                busy.append(f"{left} messages not handled")
            if await conn.fetchval("SELECT count(*) FROM router.outbox WHERE sent_at IS NULL"):
                busy.append("outbox")
            quiet = 0 if busy else quiet + 1
            if quiet >= 3:
                return time.monotonic() - started
            assert time.monotonic() - started < within, f"not settled after {within} s: {busy}"
            await asyncio.sleep(0.3)
    finally:
        await conn.close()


#: Each site's places in use, counted as DESIGN.md section 4 defines them (open offers, and the
#: referrals held: accepted or in service), next to the router's counter; one statement, so one
#: snapshot of committed transactions.
PLACES = (
    "SELECT s.id, s.reserved, (SELECT count(*) FROM router.offer o"
    " JOIN router.referral r ON r.id = o.referral_id WHERE o.site_id = s.id"
    " AND (o.state = 'open' OR (o.state = 'accepted'"
    " AND r.status IN ('accepted', 'in_service')))) AS held"
    " FROM directory.site s"
)


class PlacesWatcher:
    """Samples ``PLACES`` all through a run: a site whose ``reserved`` differs from its places
    in use at any moment is a leak or a double count, even one a later transaction hides."""

    def __init__(self, database_url: str, every: float = 0.05) -> None:
        self.database_url = database_url
        self.every = every
        self.samples = 0
        #: Samples in which some site's counter was off, and the worst difference seen.
        self.off = 0
        self.worst = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        self._task = asyncio.create_task(self._run(conn))

    async def _run(self, conn: asyncpg.Connection) -> None:
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(PLACES)
                gaps = [abs(row["reserved"] - row["held"]) for row in rows]
                self.samples += 1
                self.off += any(gaps)
                self.worst = max(self.worst, *gaps, 0)
                await asyncio.sleep(self.every)
        finally:
            await conn.close()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


# -- the audit ----------------------------------------------------------------------------------


class Figures(msgspec.Struct):
    """What a fault run printed: the acceptance criteria are lost == 0 and duplicated == 0."""

    test: str
    sent: int
    terminal: int
    lost: int
    duplicated: int
    accepted: int
    unmatched: int
    offers: int
    seconds: float
    note: str = ""

    def line(self) -> str:
        return (
            f"| {self.test} | {self.sent} | {self.terminal} | {self.lost} | {self.duplicated} "
            f"| {self.accepted} | {self.unmatched} | {self.offers} | {self.seconds:.1f} "
            f"| {self.note} |"
        )


HEADER = (
    "| test | sent | terminal | lost | duplicated | accepted | unmatched | offers | s | note |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


async def _stream_messages(js: JetStreamContext, subject: str) -> list[Any]:
    """Every message the stream holds on ``subject``, decoded (an ordered read, no ack)."""
    name = f"audit-{uuid.uuid4().hex[:8]}"
    sub = await js.pull_subscribe(
        subject,
        durable=name,
        stream=STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    found: list[Any] = []
    unavailable = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=2.0)
            except (nats.errors.TimeoutError, TimeoutError):
                # Nothing left. (nats-py raises the bare TimeoutError when its no-wait probe
                # found no messages but answered so late that no time was left to wait.)
                break
            except nats.js.errors.ServiceUnavailableError:
                # On a cluster the new consumer may not have its leader yet: ask again.
                unavailable += 1
                assert unavailable < 50, "the audit consumer never became available"
                await asyncio.sleep(0.2)
                continue
            found.extend(decode_outbound(m.data) for m in msgs)
    finally:
        await js.delete_consumer(STREAM, name)
    return found


def accepted_count(states: collections.Counter[str]) -> int:
    """Referrals accepted, whether still accepted or in a state after it."""
    return sum(n for state, n in states.items() if state == "accepted" or state in AFTER_ACCEPTANCE)


def _is_path(path: Sequence[str]) -> bool:
    """Whether ``path`` (a referral's states, in order) is a path of the lifecycle."""
    return (
        bool(path)
        and path[0] in ("received", "rejected")
        and all(b in NEXT_STATES.get(a, ()) for a, b in itertools.pairwise(path))
    )


async def audit(
    test: str,
    database_url: str,
    js: JetStreamContext,
    requests: list[ReferralRequested],
    seconds: float,
    note: str = "",
) -> Figures:
    """Count outcomes from the database, the router's history and the stream itself.

    lost: a referral sent but with no routing outcome (``ROUTED``), or with one but no status
    event of it in the stream; a transition of the router's history with no status event in the
    stream; a notice owed to a provider (a refused response or progress report, an open offer
    cancelled or expired, a referral withdrawn) missing from the stream.

    duplicated: a referral with more than one routing-outcome event or more than one closing
    event (``CLOSING``); a status event (referral, status, attempt) stored twice or with no
    transition behind it; a once-only status (``ONCE``) published twice; a notice more than
    owed; an offer (referral, attempt) stored twice, or two open at once; a history that is not
    a path of the lifecycle (DESIGN.md section 3: a second closing state, a state reached from
    one it cannot follow) or does not end in the referral's state; a site whose ``reserved``
    is not its places in use (open offers, accepted and in-service referrals).
    """
    ids = [r.referral_id for r in requests]
    wanted = set(ids)
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status FROM router.referral WHERE id = ANY($1::uuid[])", ids
        )
        offers = await conn.fetchval(
            "SELECT count(*) FROM router.offer WHERE referral_id = ANY($1::uuid[])", ids
        )
        open_offers = await conn.fetchval("SELECT count(*) FROM router.offer WHERE state = 'open'")
        two_open = await conn.fetchval(
            "SELECT count(*) FROM (SELECT referral_id FROM router.offer WHERE state = 'open'"
            " GROUP BY referral_id HAVING count(*) > 1) twice"
        )
        places = await conn.fetch(PLACES)
        history = await conn.fetch(
            "SELECT referral_id, event, status, refused, attempt, site_id FROM router.history"
            " WHERE referral_id = ANY($1::uuid[]) ORDER BY id",
            ids,
        )
    finally:
        await conn.close()
    status = {row["id"]: row["status"] for row in rows}
    terminal = [rid for rid in ids if status.get(rid) in ROUTED]
    lost = len(ids) - len(terminal)

    events = [
        e
        for e in await _stream_messages(js, STATUS_ALL)
        if isinstance(e, ReferralStatusChanged) and e.referral_id in wanted
    ]
    offered = await _stream_messages(js, OFFERED_ALL)
    notices = [
        n
        for n in await _stream_messages(js, NOTICE_ALL)
        if isinstance(n, ProviderNotice) and n.referral_id in wanted
    ]
    finals = collections.Counter(e.referral_id for e in events if e.status in ROUTING_OUTCOMES)
    closings = collections.Counter(e.referral_id for e in events if e.status in CLOSING)
    published: collections.Counter[tuple[uuid.UUID, str, int]] = collections.Counter(
        (e.referral_id, e.status, e.attempt) for e in events
    )
    once = collections.Counter((e.referral_id, e.status) for e in events if e.status in ONCE)
    per_attempt = collections.Counter(
        (o.referral_id, o.attempt) for o in offered if isinstance(o, ReferralOffered)
    )
    told: collections.Counter[tuple[uuid.UUID, str]] = collections.Counter(
        (n.referral_id, n.kind) for n in notices
    )

    # What the history says must be in the stream: a status event per transition, and the
    # notices the transitions and refusals owe the provider concerned.
    transitions: collections.Counter[tuple[uuid.UUID, str, int]] = collections.Counter()
    owed: collections.Counter[tuple[uuid.UUID, str]] = collections.Counter()
    paths: dict[uuid.UUID, list[str]] = collections.defaultdict(list)
    for h in history:
        rid = h["referral_id"]
        if h["refused"]:
            if h["event"] in REFUSAL_NOTICE:
                owed[(rid, REFUSAL_NOTICE[h["event"]])] += 1
            continue
        transitions[(rid, h["status"], h["attempt"])] += 1
        paths[rid].append(h["status"])
        kind = TRANSITION_NOTICE.get(h["status"])
        if kind is not None and h["site_id"] is not None:  # a cancel with no open offer: none
            owed[(rid, kind)] += 1
    invalid = sum(
        1
        for rid in ids
        if rid in status and not (_is_path(paths[rid]) and paths[rid][-1] == status[rid])
    )

    missing_final = sum(1 for rid in terminal if finals[rid] == 0)
    duplicated = (
        sum(1 for n in finals.values() if n > 1)
        + sum(1 for n in closings.values() if n > 1)
        + sum(1 for n in once.values() if n > 1)
        + sum((published - transitions).values())
        + sum((told - owed).values())
        + sum(1 for n in per_attempt.values() if n > 1)
        + two_open
        + invalid
        + sum(1 for p in places if p["reserved"] != p["held"])
    )
    lost += missing_final + sum((transitions - published).values()) + sum((owed - told).values())
    counts = collections.Counter(status.values())
    figures = Figures(
        test=test,
        sent=len(ids),
        terminal=len(terminal),
        lost=lost,
        duplicated=duplicated,
        accepted=accepted_count(counts),
        unmatched=counts["unmatched"],
        offers=offers,
        seconds=seconds,
        note=note + (f"; {open_offers} offers still open" if open_offers else ""),
    )
    print(f"\n{HEADER}\n{figures.line()}", flush=True)
    return figures


# -- the audit of the closed loop ---------------------------------------------------------------


class LoopFigures(msgspec.Struct):
    """What the closed loop of a fault run came to, from the router's database, set against
    what the simulators sent: the acceptance criteria are mismatched == 0 and unexplained == 0.

    reports: progress reports the providers sent; call_offs: cancels OW sent (before or after
    acceptance). in_service ... cancelled: referrals that reached that state (in_service: ever).
    still_open: accepted or in service at the end. refused: sent messages the router refused.
    unexplained: refusals that are not one of the expected races (``RACES``) or that the
    history does not explain. mismatched: sent messages not handled, or handled with an outcome
    they cannot have, and referrals whose state differs from what the messages the router
    applied to them say.
    """

    test: str
    reports: int
    call_offs: int
    in_service: int
    completed: int
    not_started: int
    ended_early: int
    withdrawn: int
    cancelled: int
    still_open: int
    refused: int
    unexplained: int
    mismatched: int
    seconds: float
    note: str = ""

    def line(self) -> str:
        return (
            f"| {self.test} | {self.reports} | {self.call_offs} | {self.in_service} "
            f"| {self.completed} | {self.not_started} | {self.ended_early} | {self.withdrawn} "
            f"| {self.cancelled} | {self.still_open} | {self.refused} | {self.unexplained} "
            f"| {self.mismatched} | {self.seconds:.1f} | {self.note} |"
        )


LOOP_HEADER = (
    "| test | reports | call-offs | in service | completed | not started | ended early "
    "| withdrawn | cancelled | still open | refused | unexplained | mismatched | s | note |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)

#: The refusals expected when the parties act independently and the router is killed, by
#: what the router says (``router.history.reason`` of the refused entry).
RACES: dict[str, re.Pattern[str]] = {
    # Two parties closed the same referral: OW withdrew (or cancelled) it while the provider
    # answered or reported, the provider closed it (completed, not started, ended early) while
    # OW withdrew it, or the last site declined while OW cancelled. The second is refused.
    "closed meanwhile": re.compile(
        r"the referral is already (cancelled|withdrawn|completed|not_started|ended_early|unmatched)"
    ),
    # A router killed while it held a provider's acceptance or in_service report: JetStream
    # redelivered it after the report that follows it had been handled, so that one came too
    # early. Rare with one router (redeliveries come before new messages); with replicas,
    # another one handles the later message while the redelivery waits for its ack deadline.
    "overtaken by a redelivery": re.compile(
        r"cannot (start|not start|complete|end early) a referral that is (offered|accepted)"
    ),
}

#: The outcomes (``router.processed.outcome``) each message can have besides ``refused``.
OUTCOMES: dict[tuple[str, str], frozenset[str]] = {
    ("response", "accept"): frozenset({"accepted"}),
    ("response", "decline"): frozenset({"offered", "unmatched"}),
    ("progress", "in_service"): frozenset({"in_service"}),
    ("progress", "completed"): frozenset({"completed"}),
    ("progress", "not_started"): frozenset({"not_started"}),
    ("progress", "ended_early"): frozenset({"ended_early"}),
    ("cancel", "cancel"): frozenset({"cancelled", "withdrawn"}),
    ("cancel", "withdraw"): frozenset({"cancelled", "withdrawn"}),
}
#: The closing states a message the router applied puts a referral in.
_CLOSED_BY = frozenset({"completed", "not_started", "ended_early", "withdrawn", "cancelled"})


async def audit_closed_loop(
    test: str,
    database_url: str,
    requests: list[ReferralRequested],
    parties: Sequence[_Party],
    seconds: float,
    note: str = "",
) -> LoopFigures:
    """Set every message the simulators sent against what the router did with it
    (``router.processed``, ``router.history``) and against each referral's state.

    For each referral: the acceptances, in-service reports and closing messages (a completed,
    not started or ended early report, a cancel or withdrawal) the router applied are exactly
    those its state and history show: accepted at most once, in service at most once, closed
    by at most one message, and by the one its state says. Every refusal has one refused history
    entry whose reason is one of ``RACES``. Prints the figures and the refusals by race.
    """
    sent = {mid: s for party in parties for mid, s in party.sent.items()}
    ids = [r.referral_id for r in requests]
    conn = await asyncpg.connect(database_url)
    try:
        processed = await conn.fetch(
            "SELECT message_id, outcome FROM router.processed WHERE message_id = ANY($1::uuid[])",
            list(sent),
        )
        refusals = await conn.fetch(
            "SELECT message_id, event, reason FROM router.history"
            " WHERE refused AND message_id = ANY($1::uuid[])",
            list(sent),
        )
        states = await conn.fetch(
            "SELECT id, status FROM router.referral WHERE id = ANY($1::uuid[])", ids
        )
        reached = await conn.fetch(
            "SELECT DISTINCT referral_id, status FROM router.history"
            " WHERE NOT refused AND status IN ('accepted', 'in_service')"
            " AND referral_id = ANY($1::uuid[])",
            ids,
        )
    finally:
        await conn.close()
    outcome = {row["message_id"]: row["outcome"] for row in processed}
    why: dict[uuid.UUID, list[str | None]] = collections.defaultdict(list)
    for row in refusals:
        why[row["message_id"]].append(row["reason"])
    status = {row["id"]: row["status"] for row in states}

    problems: list[str] = []
    races: collections.Counter[str] = collections.Counter()
    refused_as: collections.Counter[tuple[str, str, str]] = collections.Counter()
    tally: collections.Counter[tuple[str, str, str]] = collections.Counter()
    unexplained = 0
    applied: dict[tuple[uuid.UUID, str], list[uuid.UUID]] = collections.defaultdict(list)
    for mid, s in sent.items():
        got = outcome.get(mid)
        tally[(s.kind, s.what, got or "not handled")] += 1
        said = f"{s.kind} {s.what} {mid} (referral {s.referral_id})"
        if got is None or got == "handling":
            problems.append(f"{said}: not handled")
            continue
        if got == "refused":
            reasons = why.get(mid, [])
            race = next(
                (
                    name
                    for name, p in RACES.items()
                    if len(reasons) == 1 and p.fullmatch(reasons[0] or "")
                ),
                None,
            )
            if race is None:
                unexplained += 1
                problems.append(f"{said}: refused, the history says {reasons}")
            else:
                races[race] += 1
                refused_as[(s.kind, s.what, reasons[0] or "")] += 1
            continue
        if got not in OUTCOMES[(s.kind, s.what)] or mid in why:
            problems.append(f"{said}: outcome {got}, refusals {why.get(mid)}")
            continue
        applied[(s.referral_id, got if s.kind != "response" else s.what)].append(mid)
    mismatched = len(problems) - unexplained

    holding: dict[str, set[uuid.UUID]] = collections.defaultdict(set)
    for row in reached:
        holding[row["status"]].add(row["referral_id"])
    for rid in ids:
        state = status.get(rid)
        closed_by = [c for c in sorted(_CLOSED_BY) for _ in applied.get((rid, c), [])]
        expected_close = [state] if state in _CLOSED_BY else []
        checks = {
            "closed by": (closed_by, expected_close),
            "accepted": (len(applied.get((rid, "accept"), [])), int(rid in holding["accepted"])),
            "in service": (
                len(applied.get((rid, "in_service"), [])),
                int(rid in holding["in_service"]),
            ),
        }
        for what, (got_, want) in checks.items():
            if got_ != want:
                mismatched += 1
                problems.append(f"referral {rid} ({state}): {what} {got_}, expected {want}")

    counts = collections.Counter(status.values())
    by_kind = collections.Counter(s.kind for s in sent.values())
    refused = sum(1 for mid in sent if outcome.get(mid) == "refused")
    race_note = ", ".join(f"{name} {races[name]}" for name in RACES)
    figures = LoopFigures(
        test=test,
        reports=by_kind["progress"],
        call_offs=by_kind["cancel"],
        in_service=len(holding["in_service"]),
        completed=counts["completed"],
        not_started=counts["not_started"],
        ended_early=counts["ended_early"],
        withdrawn=counts["withdrawn"],
        cancelled=counts["cancelled"],
        still_open=counts["accepted"] + counts["in_service"],
        refused=refused,
        unexplained=unexplained,
        mismatched=mismatched,
        seconds=seconds,
        note="; ".join(part for part in (f"refused: {race_note}", note) if part),
    )
    print(f"\n{LOOP_HEADER}\n{figures.line()}", flush=True)
    for kind, what in OUTCOMES:
        got_ = {o: n for (k, w, o), n in sorted(tally.items()) if (k, w) == (kind, what)}
        parts = ", ".join(f"{o} {n}" for o, n in got_.items())
        print(f"  {kind} {what}: sent {sum(got_.values())}: {parts}", flush=True)
    print(
        f"  in the database: accepted {accepted_count(counts)}, in service (ever)"
        f" {figures.in_service}, "
        + ", ".join(f"{state} {counts[state]}" for state in sorted(_CLOSED_BY)),
        flush=True,
    )
    for (kind, what, reason), n in sorted(refused_as.items()):
        print(f"  refused {n} x {kind} {what}: {reason}", flush=True)
    for problem in problems[:20]:
        print(f"  {problem}", flush=True)
    return figures
