"""The router's JetStream consumer: the fetch loop, parsing each message, handling it, and the
ack, decided here in one place, after the effects are committed. Two ways to handle a fetched
batch (``RouterSettings.transaction``):

``batch`` (issue 16): the whole batch in one transaction, in stream order
    fetch batch ─▶ read a snapshot set-based ─▶ every handler on it, in memory (``batch.py``)
    ─▶ write what they did set-based ─▶ the messages the plan deferred, a savepoint each
    ─▶ one commit ─▶ the batch's outbox rows as JetStream atomic batches ─▶ one mark-sent
    ─▶ ack (or term) every message handled; nak the others
    The next batch's transaction runs while this one is published and settled (``finish``),
    which completes before the next one's starts. A message that fails alone on the database
    (a deadlock, every place taken meanwhile, a bug) rolls back to its savepoint and is retried
    alone, with the later messages of its referral, so its neighbours are not failed with it;
    a failure of the connection fails the whole batch (nothing committed: every message comes
    back).

``message``: one transaction per message, ``concurrency`` referrals at once
    fetch batch ─▶ parse ─▶ handler in one transaction ─▶ commit ─▶ publish its outbox rows
    (Nats-Msg-Id) ─▶ ack

In both, a transient failure (database or NATS down, contention) ─▶ nak(delay), retried with
backoff.
"""

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from contracts.codec import decode_inbound, peek_referral_id
from contracts.referrals import (
    ReferralCancel,
    ReferralEvent,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
)
from contracts.subjects import ROUTER_DURABLE, STREAM, InboundKind, inbound_party
from services.geo import UnresolvableLocation
from services.infra.db import Connection
from services.router import batch
from services.router.batch import BatchState, Snapshot, Stale
from services.router.handlers import (
    Contention,
    InvalidRequest,
    Locate,
    on_cancel,
    on_invalid,
    on_progress,
    on_requested,
    on_response,
)
from services.router.model import Handled, OutboxRow, Point
from services.router.ports import Route
from services.router.publisher import OutboxPublisher
from services.router.settings import RouterSettings
from services.router.transient import TRANSIENT, nak_delay, pause, utcnow
from services.router.unit_of_work import BatchRows, Wiring, Work

log = structlog.get_logger("router")

#: A JSON escape of the NUL character (not preceded by another backslash).
_NUL = re.compile(rb"(?<!\\)\\u0000")


class InvalidMessage(Exception):
    """The bytes on the subject are not a message the router accepts."""


#: Which message each kind of inbound subject carries.
_EXPECTED: dict[InboundKind, type] = {
    "requested": ReferralRequested,
    "cancel": ReferralCancel,
    "response": ReferralResponse,
    "progress": ReferralProgress,
}


def parse(subject: str, data: bytes) -> tuple[ReferralEvent, str]:
    """The message on ``subject`` and the party the subject names (the OW system of a request
    or cancel, the provider of a response or progress report)."""
    if _NUL.search(data):
        # Valid JSON, but no PostgreSQL text can hold it, and no real value contains it.
        raise InvalidMessage("invalid message: a string contains the NUL character (\\u0000)")
    try:
        event = decode_inbound(data)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"invalid message: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"not a JSON message: {exc}") from exc
    try:
        kind, party = inbound_party(subject)
    except ValueError as exc:
        raise InvalidMessage(str(exc)) from exc
    if not isinstance(event, _EXPECTED[kind]):
        tag = type(event).__struct_config__.tag
        raise InvalidMessage(f"a {tag} message does not belong on {subject}")
    return event, party


#: Failures of one statement that leave the transaction usable once rolled back to the
#: message's savepoint: that message alone is retried.
_ALONE: tuple[type[BaseException], ...] = (asyncpg.exceptions.TransactionRollbackError, Contention)


@dataclass
class _Transacted:
    """A batch committed, waiting to be published and settled."""

    messages: int
    done: list["_Done"]
    retry: list[Msg]
    rows: list[OutboxRow]
    laps: "_Laps"


@dataclass
class _Done:
    """A message of a batch handled in the batch's transaction, to settle after the commit."""

    msg: Msg
    handled: Handled
    started: float


class _Laps:
    """Milliseconds spent in each phase of a batch, for its log line."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self.last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.ms[f"{phase}_ms"] = round(self.ms.get(f"{phase}_ms", 0) + (now - self.last) * 1000, 2)
        self.last = now


class Consumer:
    """Fetches from the router's durable consumer, shared by every router process."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        settings: RouterSettings,
        wiring: Wiring,
        locate: Locate,
        publisher: OutboxPublisher,
    ) -> None:
        self.pool = pool
        self.js = js
        self.settings = settings
        self.wiring = wiring
        self.locate = locate
        self.publisher = publisher
        self.handled = 0
        #: Batch path: messages handled by the plan, deferred to the database, and batches
        #: replanned on the database because it changed under the plan.
        self.planned = 0
        self.deferred = 0
        self.replanned = 0

    def work(self, event: ReferralEvent, party: str) -> Work:
        """The handler of ``event`` from ``party``, bound to it, waiting for its unit of work."""
        match event:
            case ReferralRequested():
                locate = self.locate
                return lambda uow: on_requested(event, party, uow=uow, locate=locate)
            case ReferralResponse():
                return lambda uow: on_response(event, party, uow=uow)
            case ReferralCancel():
                return lambda uow: on_cancel(event, party, uow=uow)
            case ReferralProgress():
                return lambda uow: on_progress(event, party, uow=uow)

    async def dispatch(
        self, conn: Connection, subject: str, data: bytes, sequence: int
    ) -> tuple[Handled, list[OutboxRow]]:
        """Handle one message's bytes in one transaction on ``conn`` (committed on return);
        what it did and the outbox rows to publish. Not settled: that is ``handle``'s."""
        now = utcnow()
        try:
            event, party = parse(subject, data)
            return await self.wiring.run(conn, now, self.work(event, party))
        except (InvalidMessage, InvalidRequest) as exc:
            error = str(exc)
        return await self.wiring.run(
            conn, now, lambda uow: on_invalid(subject, data, error, sequence=sequence, uow=uow)
        )

    async def handle(self, conn: Connection, msg: Msg) -> tuple[bool, list[OutboxRow]]:
        """Handle one message and settle it; False when it failed for a transient reason."""
        started = time.perf_counter()
        meta = msg.metadata
        delivered = meta.num_delivered
        bound = structlog.contextvars.bound_contextvars(subject=msg.subject, delivered=delivered)
        with bound:
            try:
                handled, rows = await self.dispatch(
                    conn, msg.subject, msg.data, meta.sequence.stream
                )
            except TRANSIENT as exc:
                delay = nak_delay(self.settings, delivered)
                log.warning("message.retry", error=repr(exc), retry_in_s=delay)
                await _settle(msg.nak(delay=delay))
                return False, []
            except Exception as exc:  # a bug must not stop the router: retry, then dead-letter
                error = self.give_up(exc, delivered)
                if error is None:
                    await _settle(msg.nak(delay=nak_delay(self.settings, delivered)))
                    return True, []
                try:
                    handled, rows = await self.dead_letter(conn, msg, error)
                except Exception as again:  # e.g. the connection it failed on is broken
                    log.warning("message.dead_letter_failed", error=repr(again))
                    await _settle(msg.nak(delay=nak_delay(self.settings, delivered)))
                    return False, []
            published = await self.publisher.publish(rows)
            # A poison message is terminated: JetStream never redelivers it, and the
            # MSG_TERMINATED advisory tells operators; its dead letter is committed already.
            await _settle(msg.term() if handled.poison else msg.ack())
            self.handled += 1
            log.info(
                "message.handled",
                referral_id=None if handled.referral_id is None else str(handled.referral_id),
                outcome=handled.outcome,
                reason=handled.reason,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
            )
            return True, [row for row in rows if row.id in published]

    async def handle_batch(
        self, msgs: Sequence[Msg], finishing: "asyncio.Task[None] | None" = None
    ) -> tuple[bool, "asyncio.Task[None] | None"]:
        """Handle a fetched batch as ``settings.transaction`` says: whether it went without a
        transient failure, and (batch path) the task finishing it, to pass to the next call.

        On the batch path the batch's transaction runs while the previous batch (``finishing``)
        is still being published and settled; that is awaited before this batch's own finish
        starts, so outbox rows go out and messages are settled in batch order."""
        if self.settings.transaction != "batch":
            return await self.handle_batch_by_message(msgs), None
        transacted = await self.transact(msgs)
        if finishing is not None:
            await _finished(finishing)
        if transacted is None:
            return False, None
        return not transacted.retry, asyncio.create_task(self.finish(transacted))

    async def transact(self, msgs: Sequence[Msg]) -> "_Transacted | None":
        """The whole batch in one transaction, planned in memory and written set-based (the
        messages the plan defers in a savepoint each), committed; None when it failed for a
        transient reason (every message nak'ed: nothing was committed)."""
        laps = _Laps()
        try:
            async with asyncio.timeout(self.settings.message_timeout_s):
                try:
                    done, retry, rows = await self._in_one_transaction(msgs, laps, plan=True)
                except Stale as exc:  # rolled back: every message on the database instead
                    self.replanned += 1
                    log.info("batch.replanned", reason=str(exc), messages=len(msgs))
                    done, retry, rows = await self._in_one_transaction(msgs, laps, plan=False)
        except TRANSIENT as exc:
            log.warning("batch.retry", error=repr(exc), messages=len(msgs))
            for msg in msgs:
                await _settle(msg.nak(delay=nak_delay(self.settings, msg.metadata.num_delivered)))
            return None
        laps.lap("commit")
        return _Transacted(len(msgs), done, retry, rows, laps)

    async def finish(self, batch: "_Transacted") -> None:
        """A committed batch's outbox as atomic batches, one mark-sent, then every message
        settled. Where the batch's time went is logged (``batch.handled``, debug level)."""
        laps = batch.laps
        laps.lap("waiting")  # for the previous batch's finish
        published = await self.publisher.publish_atomic(batch.rows)
        laps.lap("publish")
        if published:
            try:
                async with self.pool.acquire() as conn:
                    await self.wiring.store(conn).mark_sent(published, utcnow())
            except TRANSIENT as exc:  # the relay re-publishes them; JetStream drops repeats
                log.warning("outbox.mark_sent_failed", error=repr(exc))
        laps.lap("mark_sent")
        for item in batch.done:  # an ack is only queued on the connection: no need to gather
            await self._settle_done(item)
        for msg in batch.retry:
            await _settle(msg.nak(delay=nak_delay(self.settings, msg.metadata.num_delivered)))
        laps.lap("settle")
        log.debug(
            "batch.handled",
            messages=batch.messages,
            retried=len(batch.retry),
            rows=len(batch.rows),
            **laps.ms,
        )

    async def _settle_done(self, item: _Done) -> None:
        # A poison message is terminated (its dead letter is committed); the rest acked.
        await _settle(item.msg.term() if item.handled.poison else item.msg.ack())
        self.handled += 1
        handled = item.handled
        log.info(
            "message.handled",
            subject=item.msg.subject,
            delivered=item.msg.metadata.num_delivered,
            referral_id=None if handled.referral_id is None else str(handled.referral_id),
            outcome=handled.outcome,
            reason=handled.reason,
            duration_ms=round((time.perf_counter() - item.started) * 1000, 2),
        )

    async def _in_one_transaction(
        self, msgs: Sequence[Msg], laps: "_Laps", *, plan: bool
    ) -> tuple[list[_Done], list[Msg], list[OutboxRow]]:
        """The batch in one transaction: the messages handled, those to retry, and the outbox
        rows written. With ``plan``, the batch is planned first (``_plan``) and only what the
        plan defers is handled on the database, in a savepoint each."""
        done: list[_Done] = []
        retry: list[Msg] = []
        rows: list[OutboxRow] = []
        held_back: set[object] = set()  # referrals with a message retried: keep their order
        async with self.pool.acquire() as conn, conn.transaction():
            later: Sequence[Msg] = msgs
            if plan and self.wiring.batch_rows is not None:
                done, later, rows = await self._plan(conn, msgs, self.wiring.batch_rows, laps)
            for msg in later:
                key = peek_referral_id(msg.data)
                if key is not None and key in held_back:
                    retry.append(msg)
                    continue
                result = await self._handle_in_batch(conn, msg)
                if result is None:
                    retry.append(msg)
                    if key is not None:
                        held_back.add(key)
                else:
                    done.append(result[0])
                    rows += result[1]
            laps.lap("on_database")
        return done, retry, rows

    async def _plan(
        self, conn: Connection, msgs: Sequence[Msg], batch_rows: BatchRows, laps: "_Laps"
    ) -> tuple[list[_Done], list[Msg], list[OutboxRow]]:
        """Handle ``msgs`` on an in-memory snapshot read set-based, and write what they did
        set-based (``services.router.batch``): the messages handled, those deferred to the
        database (in stream order), and the outbox rows written."""
        store, directory = batch_rows(conn)
        parsed: list[tuple[Msg, ReferralEvent | None, str]] = []
        for msg in msgs:
            try:
                parsed.append((msg, *parse(msg.subject, msg.data)))
            except InvalidMessage:
                parsed.append((msg, None, ""))  # dead-lettered on the database
        events = [event for _, event, _ in parsed if event is not None]
        snapshot = await batch.read_snapshot(
            store,
            directory,
            [event.message_id for event in events],
            [event.referral_id for event in events],
            lambda snapshot: self._routes(events, snapshot),
            candidates=self.wiring.candidates,
        )
        laps.lap("read")
        state = BatchState(
            snapshot, deadline=self.wiring.deadline, candidates=self.wiring.candidates
        )
        done: list[_Done] = []
        later: list[Msg] = []
        deferred: set[object] = set()  # referrals with a message deferred: keep their order
        now = utcnow()  # one transaction, one moment: every message of the batch is handled at it
        for msg, event, party in parsed:
            started = time.perf_counter()
            key = peek_referral_id(msg.data) if event is None else event.referral_id
            if event is not None and key not in deferred:
                try:
                    handled = await state.run(now, self.work(event, party))
                except Exception as exc:  # the database path decides: it may know more
                    log.debug("message.deferred", subject=msg.subject, reason=repr(exc))
                else:
                    done.append(_Done(msg, handled, started))
                    continue
            later.append(msg)
            if key is not None:
                deferred.add(key)
        laps.lap("plan")
        rows = await batch.write(store, directory, state.writes)
        laps.lap("write")
        self.planned += len(done)
        self.deferred += len(later)
        return done, later, rows

    def _routes(self, events: Sequence[ReferralEvent], snapshot: Snapshot) -> list[Route]:
        """The referrals the batch will route, for their candidates to be read with the
        snapshot: new requests, and referrals an offer of which is declined. A radius is left
        to the database path (its KNN scan needs the radius as an index condition)."""
        routes: dict[uuid.UUID, Route] = {}
        for event in events:
            match event:
                case ReferralRequested(max_distance_km=None) if (
                    event.message_id not in snapshot.processed
                    and snapshot.referrals.get(event.referral_id) is None
                ):
                    try:
                        origin = self.locate(event.client.location)
                    except UnresolvableLocation:
                        continue  # rejected on the database path
                    at = Point(origin.lat, origin.lon)
                    routes.setdefault(event.referral_id, (event.referral_id, at, event, ()))
                case ReferralResponse(decision="decline"):
                    referral = snapshot.referrals.get(event.referral_id)
                    if (
                        referral is None
                        or referral.request is None
                        or referral.request.max_distance_km is not None
                        or referral.lat is None
                        or referral.lon is None
                    ):
                        continue
                    skip = [o.site_id for o in snapshot.offers.get(referral.id, [])]
                    at = Point(referral.lat, referral.lon)
                    routes.setdefault(referral.id, (referral.id, at, referral.request, skip))
        return list(routes.values())

    async def _handle_in_batch(
        self, conn: Connection, msg: Msg
    ) -> tuple[_Done, list[OutboxRow]] | None:
        """One message of a batch, in a savepoint of the batch's transaction (``Wiring.run``
        nests): what it did and its outbox rows, or None to retry it alone. A failure of the
        connection itself propagates: the batch's transaction is lost."""
        started = time.perf_counter()
        meta = msg.metadata
        delivered = meta.num_delivered
        with structlog.contextvars.bound_contextvars(subject=msg.subject, delivered=delivered):
            try:
                handled, rows = await self.dispatch(
                    conn, msg.subject, msg.data, meta.sequence.stream
                )
                return _Done(msg, handled, started), rows
            except _ALONE as exc:
                log.warning("message.retry", error=repr(exc))
                return None
            except TRANSIENT:
                raise
            except Exception as exc:  # a bug must not fail its neighbours: retry, then dead-letter
                error = self.give_up(exc, delivered)
                if error is None:
                    return None
                handled, rows = await self.dead_letter(conn, msg, error)
                return _Done(msg, handled, started), rows

    def give_up(self, exc: Exception, delivered: int) -> str | None:
        """Why a message that failed unexpectedly is dead-lettered now, or None to retry it.

        PostgreSQL class 22 (data exception), or text it cannot encode, is the message's fault:
        retrying cannot help. Anything else is retried until its last delivery."""
        poison = isinstance(exc, asyncpg.DataError | UnicodeError)
        log.exception("message.failed", error=repr(exc), poison=poison)
        if poison:
            return f"cannot be stored: {exc}"
        if delivered < self.settings.max_deliver - 1:
            return None
        return f"gave up after {delivered} deliveries: {exc!r}"

    async def dead_letter(
        self, conn: Connection, msg: Msg, error: str
    ) -> tuple[Handled, list[OutboxRow]]:
        """Dead-letter ``msg`` with ``error`` in a transaction (a savepoint inside a batch's)."""
        sequence = msg.metadata.sequence.stream
        return await self.wiring.run(
            conn,
            utcnow(),
            lambda uow: on_invalid(msg.subject, msg.data, error, sequence=sequence, uow=uow),
        )

    async def handle_batch_by_message(self, msgs: Sequence[Msg]) -> bool:
        """Handle a batch: one referral's messages in stream order, different referrals at once
        (up to ``concurrency``, each on its own connection); False after a transient failure.
        """
        groups: dict[object, list[Msg]] = {}
        for msg in msgs:
            # A message whose referral cannot be read is poison; it forms a group of its own.
            key = peek_referral_id(msg.data) or object()
            groups.setdefault(key, []).append(msg)
        sent: list[OutboxRow] = []
        failed = False
        slots = asyncio.Semaphore(self.settings.concurrency)

        async def run(group: list[Msg]) -> None:
            nonlocal failed
            async with slots:
                for position, msg in enumerate(group):
                    if failed:  # the database is likely down: the rest would fail the same way
                        for rest in group[position:]:
                            await _settle(rest.nak(delay=nak_delay(self.settings, 1)))
                        return
                    try:
                        # Bounded: after a database restart a broken connection could
                        # otherwise hold this batch, and so the consumer, for good.
                        async with asyncio.timeout(self.settings.message_timeout_s):
                            async with self.pool.acquire() as conn:
                                ok, published = await self.handle(conn, msg)
                    except TRANSIENT as exc:
                        log.warning("database.unavailable", error=repr(exc))
                        ok, published = False, []
                        await _settle(msg.nak(delay=nak_delay(self.settings, 1)))
                    sent.extend(published)
                    failed = failed or not ok

        await asyncio.gather(*(run(group) for group in groups.values()))
        if sent:
            try:
                async with self.pool.acquire() as conn:
                    await self.wiring.store(conn).mark_sent([row.id for row in sent], utcnow())
            except TRANSIENT as exc:  # the relay re-publishes them; JetStream drops repeats
                log.warning("outbox.mark_sent_failed", error=repr(exc))
        return not failed

    async def consume(self, stop: asyncio.Event) -> None:
        """Fetch and handle batches until ``stop`` is set; the current batch is finished first."""
        sub = None
        finishing: asyncio.Task[None] | None = None
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=ROUTER_DURABLE, stream=STREAM)
                msgs = await sub.fetch(
                    self.settings.batch_size, timeout=self.settings.fetch_timeout_s
                )
            except (nats.errors.TimeoutError, TimeoutError):
                if finishing is not None:  # idle: finish the last batch now
                    await _finished(finishing)
                    finishing = None
                continue  # idle (nats-py raises either, depending on where the wait ends)
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.warning("nats.fetch_failed", error=repr(exc))
                await pause(stop, 1.0)
                continue
            try:
                handled, finishing = await self.handle_batch(msgs, finishing)
            except Exception as exc:  # the loop must outlive any batch; JetStream redelivers
                log.exception("consume.batch_failed", error=repr(exc), messages=len(msgs))
                handled, finishing = False, None
            if not handled:
                await pause(stop, 1.0)
        if finishing is not None:
            await _finished(finishing)
        if sub is not None:
            # A pull subscription left open makes the connection's drain wait for its timeout.
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()


async def _finished(finishing: "asyncio.Task[None]") -> None:
    """Wait for a batch's finish; a failure is logged (its messages come back unsettled)."""
    try:
        await finishing
    except Exception as exc:
        log.exception("consume.finish_failed", error=repr(exc))


async def _settle(ack: Awaitable[None]) -> None:
    """Ack / nak / term; a failure is harmless: the message comes back and is a duplicate."""
    try:
        await ack
    except (nats.errors.Error, OSError) as exc:
        log.warning("message.settle_failed", error=repr(exc))
