"""The router's JetStream consumer: the fetch loop, parsing each message, handling it, and the
ack, decided here in one place, after the effects are committed. Two ways to handle a fetched
batch (``RouterSettings.transaction``):

``batch`` (issue 16, the default): the whole batch in one transaction, in stream order
    fetch ─▶ ``_open``: read a snapshot set-based, every handler on it in memory (``batch.py``)
    ─▶ ``_close``: write what they did set-based, the messages the plan deferred (a savepoint
    each), one commit ─▶ ``finish``: the outbox rows as JetStream atomic batches, one
    mark-sent, ack (or term) every message handled, nak the others
    Three batches are in flight (``BatchFlow``): one opened while the one before is closed and the
    one before that finished; each stage waits for the same stage of the batch before. A batch
    locks nothing until the one before is closed. When the writes find the database moved
    under the plan (``batch.Stale``) the batch is planned again (``_again``). A message that
    fails alone on the database (a deadlock, every place taken meanwhile, a bug) rolls back to
    its savepoint and is retried alone, with the later messages of its referral, so its
    neighbours are not failed with it; a failure of the connection fails the whole batch
    (nothing committed: every message comes back).

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
from collections.abc import Awaitable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import structlog
from asyncpg.pool import PoolConnectionProxy
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
from services.router.batch import BatchState, InFlight, Snapshot, Stale
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

#: A connection taken from the pool (given back with ``pool.release``).
Pooled: TypeAlias = "PoolConnectionProxy[Any]"

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
class _Opened:
    """A batch read and planned in its open transaction, waiting to be written."""

    msgs: Sequence[Msg]
    conn: "Pooled"
    transaction: Any
    laps: "_Laps"
    #: The plan (None: no batch rows wired; every message on the database).
    state: BatchState | None
    done: list["_Done"]
    #: Deferred to the database, in stream order.
    later: list[Msg]
    #: Its transaction's id (when planned).
    xid: int | None


@dataclass
class BatchFlow:
    """The batch path's batches in flight: the last one being written and committed, the one
    before it being published and settled, and what the last one's plan took."""

    committing: "asyncio.Task[_Transacted | None] | None" = None
    finishing: "asyncio.Task[None] | None" = None
    #: The places the batch being committed planned to take, and its transaction id.
    in_flight: InFlight | None = None
    #: False when the last batch committed failed for a transient reason or left messages
    #: to retry (the consumer pauses).
    ok: bool = True

    def close(
        self, consumer: "Consumer", closing: "Coroutine[Any, Any, _Transacted | None]"
    ) -> None:
        """Write and commit a batch in the background; the moment it is committed, start its
        finish (after the previous batch's), whether or not another batch has come."""
        task: asyncio.Task[_Transacted | None] = asyncio.create_task(closing)

        def closed(task: "asyncio.Task[_Transacted | None]") -> None:
            if task.cancelled() or task.exception() is not None:
                return  # ``committed`` logs it
            transacted = task.result()
            if transacted is None:
                return
            previous = self.finishing

            async def finish() -> None:
                if previous is not None:
                    await _finished(previous)
                await consumer.finish(transacted)

            self.finishing = asyncio.create_task(finish())

        # Registered first, so it runs before whoever awaits the task resumes.
        task.add_done_callback(closed)
        self.committing = task

    async def committed(self, consumer: "Consumer") -> bool:
        """Wait for the batch being committed (or handled again). False when what it
        committed may differ from its plan."""
        if self.committing is None:
            return True
        try:
            transacted = await self.committing
        except Exception as exc:  # its messages come back unsettled
            log.exception("consume.batch_failed", error=repr(exc))
            transacted = None
        self.committing = None
        self.in_flight = None
        if transacted is None:
            self.ok = False
            return False
        self.ok = self.ok and not transacted.retry
        return transacted.exact

    async def drain(self, consumer: "Consumer") -> None:
        await self.committed(consumer)
        if self.finishing is not None:
            await _finished(self.finishing)
            self.finishing = None


async def _abandon(pool: asyncpg.Pool, conn: "Pooled", transaction: Any) -> None:
    """Roll back and give the connection back (closing it if it is broken)."""
    try:
        await transaction.rollback()
    except Exception as exc:  # a broken connection: the pool replaces it
        log.warning("batch.rollback_failed", error=repr(exc))
        conn.terminate()
    await pool.release(conn)


@dataclass
class _Transacted:
    """A batch committed, waiting to be published and settled."""

    messages: int
    done: list["_Done"]
    retry: list[Msg]
    rows: list[OutboxRow]
    laps: "_Laps"
    #: What it committed is what its plan said (no message deferred, not planned again): the
    #: places the plan took, counted in by the next batch's reads, are the places taken.
    exact: bool = True


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

    async def handle_batch(self, msgs: Sequence[Msg], flow: "BatchFlow") -> bool:
        """Handle a fetched batch as ``settings.transaction`` says; False after a transient
        failure (the caller pauses).

        On the batch path three batches can be in flight (``BatchFlow``): this one is read and
        planned while the previous one is written and committed, and the one before that
        published and settled. Each stage waits for the same stage of the previous batch, so
        commits, outbox rows and acks keep batch order; the plan counts the places the
        previous batch's plan took (not committed yet), and the writes check that nothing
        the plan read has changed under it (``batch.Stale``: the batch is then handled again
        on the database)."""
        if self.settings.transaction != "batch":
            return await self.handle_batch_by_message(msgs)
        opened = await self._open(msgs, flow)
        await flow.committed(self)  # (the plan waited for it already, before locking anything)
        ok, flow.ok = flow.ok, True
        if opened is None:
            return False
        flow.in_flight = (
            None
            if opened.state is None or opened.xid is None
            else (dict(opened.state.writes.places), opened.xid)
        )
        flow.close(self, self._close(opened))
        return ok

    async def _open(self, msgs: Sequence[Msg], flow: "BatchFlow") -> "_Opened | None":
        """A batch's transaction begun, its snapshot read and its messages planned (stage
        one); None after a transient failure (every message nak'ed, nothing written)."""
        laps = _Laps()
        conn: Pooled = await self.pool.acquire()
        transaction = conn.transaction()
        try:
            async with asyncio.timeout(self.settings.message_timeout_s):
                await transaction.start()
                if self.wiring.batch_rows is None:
                    return _Opened(msgs, conn, transaction, laps, None, [], list(msgs), None)
                # Its id, for the next batch to tell whether its commit is in what it reads.
                xid = int(await conn.fetchval("SELECT pg_current_xact_id()::text"))
                state, done, later = await self._plan(
                    conn, msgs, self.wiring.batch_rows, laps, flow
                )
                return _Opened(msgs, conn, transaction, laps, state, done, later, xid)
        except BaseException as exc:
            await _abandon(self.pool, conn, transaction)
            if not isinstance(exc, TRANSIENT):
                raise
            log.warning("batch.retry", error=repr(exc), messages=len(msgs))
            await self._nak_all(msgs)
            return None

    async def _close(self, opened: "_Opened") -> "_Transacted | None":
        """A planned batch written, its deferred messages handled on the database, committed
        (stage two); None after a transient failure (every message nak'ed). When the writes
        find the database changed under the plan, the batch is planned again on what is
        committed now (``_again``)."""
        msgs, laps = opened.msgs, opened.laps
        conn: Pooled | None = opened.conn
        done, rows, later = list(opened.done), [], opened.later
        try:
            async with asyncio.timeout(self.settings.message_timeout_s):
                try:
                    if opened.state is not None and self.wiring.batch_rows is not None:
                        store, directory = self.wiring.batch_rows(opened.conn)
                        rows = await batch.write(store, directory, opened.state)
                        laps.lap("write")
                    more, retry, more_rows = await self._on_database(opened.conn, later, laps)
                    await opened.transaction.commit()
                    exact = not later  # what was committed is what the plan said
                except Stale as exc:
                    conn = None
                    await _abandon(self.pool, opened.conn, opened.transaction)
                    self.replanned += 1
                    log.info("batch.replanned", reason=str(exc), messages=len(msgs))
                    done, later, more, retry, rows = await self._again(msgs, laps)
                    more_rows, exact = [], False
        except BaseException as exc:
            if conn is not None:
                conn = None
                await _abandon(self.pool, opened.conn, opened.transaction)
            if not isinstance(exc, TRANSIENT):
                raise
            log.warning("batch.retry", error=repr(exc), messages=len(msgs))
            await self._nak_all(msgs)
            return None
        finally:
            if conn is not None:
                await self.pool.release(conn)
        laps.lap("commit")
        self.planned += len(done)
        self.deferred += len(later)
        return _Transacted(len(msgs), done + more, retry, rows + more_rows, laps, exact)

    async def _again(
        self, msgs: Sequence[Msg], laps: "_Laps"
    ) -> tuple[list[_Done], list[Msg], list[_Done], list[Msg], list[OutboxRow]]:
        """A batch whose writes found the database moved, handled again in a new transaction:
        planned on what is committed now (nothing else in flight), or, when that plan is
        stale too (another replica at work on the same referrals or places), every message on
        the database. The messages the plan handled and deferred, those handled on the
        database and to retry, and the outbox rows."""
        async with self.pool.acquire() as conn, conn.transaction():
            if self.wiring.batch_rows is not None:
                try:
                    async with conn.transaction():  # a savepoint: a stale plan leaves nothing
                        state, done, later = await self._plan(
                            conn, msgs, self.wiring.batch_rows, laps, BatchFlow()
                        )
                        store, directory = self.wiring.batch_rows(conn)
                        rows = await batch.write(store, directory, state)
                    more, retry, more_rows = await self._on_database(conn, later, laps)
                    return done, later, more, retry, rows + more_rows
                except Stale as exc:
                    log.info("batch.on_database", reason=str(exc), messages=len(msgs))
            more, retry, rows = await self._on_database(conn, msgs, laps)
            return [], list(msgs), more, retry, rows

    async def _nak_all(self, msgs: Sequence[Msg]) -> None:
        for msg in msgs:
            await _settle(msg.nak(delay=nak_delay(self.settings, msg.metadata.num_delivered)))

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

    async def _on_database(
        self, conn: Connection, msgs: Sequence[Msg], laps: "_Laps"
    ) -> tuple[list[_Done], list[Msg], list[OutboxRow]]:
        """``msgs`` handled on the database in the open transaction, one savepoint each, in
        stream order: the messages handled, those to retry, and the outbox rows written."""
        done: list[_Done] = []
        retry: list[Msg] = []
        rows: list[OutboxRow] = []
        held_back: set[object] = set()  # referrals with a message retried: keep their order
        for msg in msgs:
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
        self,
        conn: Connection,
        msgs: Sequence[Msg],
        batch_rows: BatchRows,
        laps: "_Laps",
        flow: "BatchFlow",
    ) -> tuple[BatchState, list[_Done], list[Msg]]:
        """Handle ``msgs`` on an in-memory snapshot read set-based (``services.router.batch``;
        the previous batch, ``flow``, may be committing meanwhile): what to write, the
        messages handled, and those deferred to the database (in stream order)."""
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
            in_flight=flow.in_flight,
            previous=lambda: flow.committed(self),
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
        return state, done, later

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
        flow = BatchFlow()
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=ROUTER_DURABLE, stream=STREAM)
                msgs = await sub.fetch(
                    self.settings.batch_size, timeout=self.settings.fetch_timeout_s
                )
            except (nats.errors.TimeoutError, TimeoutError):
                await flow.drain(self)  # idle: commit and finish the batches in flight
                continue  # idle (nats-py raises either, depending on where the wait ends)
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.warning("nats.fetch_failed", error=repr(exc))
                await pause(stop, 1.0)
                continue
            try:
                handled = await self.handle_batch(msgs, flow)
            except Exception as exc:  # the loop must outlive any batch; JetStream redelivers
                log.exception("consume.batch_failed", error=repr(exc), messages=len(msgs))
                handled = False
            if not handled:
                await flow.drain(self)
                await pause(stop, 1.0)
        await flow.drain(self)
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
