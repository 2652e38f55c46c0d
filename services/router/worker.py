"""The router's JetStream edge: stream and consumer set-up, the fetch loop, the deadline sweeper
and the outbox relay. The ack is decided here, in one place, after the effects are committed.

    fetch batch ─▶ parse (invalid ─▶ on_invalid: dead letter, rejected) ─▶ handler in one
    transaction ─▶ commit ─▶ publish its outbox rows (Nats-Msg-Id) ─▶ ack
    transient failure (database or NATS down, contention) ─▶ nak(delay), retried with backoff
"""

import asyncio
import contextlib
import datetime
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from contracts.codec import decode_inbound, peek_referral_id
from contracts.referrals import ReferralCancel, ReferralEvent, ReferralRequested, ReferralResponse
from contracts.subjects import (
    CANCEL,
    REQUESTED,
    RESPONSE_PREFIX,
    ROUTER_DURABLE,
    ROUTER_FILTER_SUBJECTS,
    STREAM,
    STREAM_SUBJECTS,
    provider_id_from_response_subject,
)
from services.geo import Gazetteer
from services.infra.db import Connection
from services.router.directory import SqlDirectory
from services.router.handlers import (
    Contention,
    Context,
    Handled,
    InvalidRequest,
    on_cancel,
    on_invalid,
    on_requested,
    on_response,
    on_timeout,
)
from services.router.provider_consumers import ProviderConsumers
from services.router.settings import RouterSettings
from services.router.store import OutboxRow, RouterStore

log = structlog.get_logger("router")

#: Failures that say nothing about the message: retry it later.
TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    nats.errors.Error,
    Contention,
)

#: Expired offers handled per sweeper transaction; outbox rows per relay transaction.
SWEEP_BATCH = 50
RELAY_BATCH = 500


#: A JSON escape of the NUL character (not preceded by another backslash).
_NUL = re.compile(rb"(?<!\\)\\u0000")


class InvalidMessage(Exception):
    """The bytes on the subject are not a message the router accepts."""


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def parse(subject: str, data: bytes) -> tuple[ReferralEvent, str | None]:
    """The message on ``subject`` and, for a response, the provider the subject names."""
    if _NUL.search(data):
        # Valid JSON, but no PostgreSQL text can hold it, and no real value contains it.
        raise InvalidMessage("invalid message: a string contains the NUL character (\\u0000)")
    try:
        event = decode_inbound(data)
    except msgspec.ValidationError as exc:
        raise InvalidMessage(f"invalid message: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise InvalidMessage(f"not a JSON message: {exc}") from exc
    provider_id = None
    expected: type | None = {REQUESTED: ReferralRequested, CANCEL: ReferralCancel}.get(subject)
    if subject.startswith(f"{RESPONSE_PREFIX}."):
        try:
            provider_id = provider_id_from_response_subject(subject)
        except ValueError as exc:
            raise InvalidMessage(str(exc)) from exc
        expected = ReferralResponse
    if expected is None or not isinstance(event, expected):
        tag = type(event).__struct_config__.tag
        raise InvalidMessage(f"a {tag} message does not belong on {subject}")
    return event, provider_id


def stream_config(settings: RouterSettings) -> StreamConfig:
    return StreamConfig(
        name=STREAM,
        subjects=list(STREAM_SUBJECTS),
        storage=StorageType.FILE,
        duplicate_window=settings.duplicate_window_s,
        num_replicas=settings.stream_replicas,
    )


def consumer_config(settings: RouterSettings) -> ConsumerConfig:
    return ConsumerConfig(
        name=ROUTER_DURABLE,
        durable_name=ROUTER_DURABLE,
        filter_subjects=list(ROUTER_FILTER_SUBJECTS),
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        max_deliver=settings.max_deliver,
        # Redelivery delays of a message nobody acked (a router died holding it).
        backoff=list(settings.backoff_s),
        max_ack_pending=settings.batch_size * 10,
    )


async def ensure_stream_and_consumer(js: JetStreamContext, settings: RouterSettings) -> None:
    """Create the stream and the router's durable consumer, or bring them to this config."""
    try:
        await js.stream_info(STREAM)
    except nats.js.errors.NotFoundError:
        await js.add_stream(stream_config(settings))
    else:
        await js.update_stream(stream_config(settings))
    # Named consumer creation is create-or-update on nats-server 2.10+.
    await js.add_consumer(STREAM, consumer_config(settings))


async def set_up_stream(
    js: JetStreamContext, settings: RouterSettings, *, within: float = 60.0
) -> None:
    """``ensure_stream_and_consumer``, retried while JetStream is not ready or busy: a cluster
    that has just elected its leaders, or replicas creating the stream at the same moment,
    answer with a timeout or an error for a few seconds. The last error after ``within`` s.
    """
    deadline = asyncio.get_running_loop().time() + within
    delay = 0.2
    while True:
        try:
            await ensure_stream_and_consumer(js, settings)
            return
        except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise
            log.warning("stream.setup_failed", error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def nak_delay(settings: RouterSettings, delivered: int) -> float:
    steps = settings.backoff_s or [1.0]
    return steps[min(delivered, len(steps)) - 1]


class Router:
    """One router process's loops; several processes share the consumer and the database."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        settings: RouterSettings,
        gazetteer: Gazetteer,
    ) -> None:
        self.pool = pool
        self.js = js
        self.settings = settings
        self.gazetteer = gazetteer
        self.provider_consumers = ProviderConsumers(js)
        self.handled = 0

    # -- one transaction -------------------------------------------------------------------

    async def _in_transaction(
        self, conn: Connection, work: Callable[[Context], Awaitable[Handled]]
    ) -> tuple[Handled, list[OutboxRow]]:
        ctx = Context(
            store=RouterStore(conn),
            directory=SqlDirectory(conn),
            now=utcnow(),
            offer_timeout=datetime.timedelta(seconds=self.settings.offer_timeout_s),
            candidates=self.settings.candidates,
        )
        async with conn.transaction():
            handled = await work(ctx)
            await ctx.flush()
        return handled, ctx.outbox

    async def _publish(self, rows: Sequence[OutboxRow]) -> list[int]:
        """Publish outbox rows with their Nats-Msg-Id; the ids of those JetStream stored."""
        await self.provider_consumers.ensure([row.subject for row in rows])

        async def one(row: OutboxRow) -> int:
            headers = {"Nats-Msg-Id": str(row.message_id)}
            await self.js.publish(row.subject, row.payload, headers=headers)
            return row.id

        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("outbox.publish_failed", failed=len(failed), error=repr(failed[0]))
        return [r for r in results if isinstance(r, int)]

    async def _dispatch(
        self, conn: Connection, subject: str, data: bytes, sequence: int
    ) -> tuple[Handled, list[OutboxRow]]:
        try:
            event, provider_id = parse(subject, data)
            match event:
                case ReferralRequested():
                    locate = self.gazetteer.resolve
                    return await self._in_transaction(
                        conn, lambda ctx: on_requested(event, ctx=ctx, locate=locate)
                    )
                case ReferralResponse():
                    assert provider_id is not None  # parse() read it from the subject
                    return await self._in_transaction(
                        conn, lambda ctx: on_response(event, provider_id, ctx=ctx)
                    )
                case ReferralCancel():
                    return await self._in_transaction(conn, lambda ctx: on_cancel(event, ctx=ctx))
        except (InvalidMessage, InvalidRequest) as exc:
            error = str(exc)
        return await self._in_transaction(
            conn, lambda ctx: on_invalid(subject, data, error, sequence=sequence, ctx=ctx)
        )

    # -- the consumer ------------------------------------------------------------------------

    async def handle(self, conn: Connection, msg: Msg) -> tuple[bool, list[OutboxRow]]:
        """Handle one message and settle it; False when it failed for a transient reason."""
        started = time.perf_counter()
        meta = msg.metadata
        delivered = meta.num_delivered
        bound = structlog.contextvars.bound_contextvars(subject=msg.subject, delivered=delivered)
        with bound:
            try:
                handled, rows = await self._dispatch(
                    conn, msg.subject, msg.data, meta.sequence.stream
                )
            except TRANSIENT as exc:
                delay = nak_delay(self.settings, delivered)
                log.warning("message.retry", error=repr(exc), retry_in_s=delay)
                await _settle(msg.nak(delay=delay))
                return False, []
            except Exception as exc:  # a bug must not stop the router: retry, then dead-letter
                # PostgreSQL class 22 (data exception), or text it cannot encode, is the message's
                # fault: retrying cannot help, so it is dead-lettered at once.
                poison = isinstance(exc, asyncpg.DataError | UnicodeError)
                log.exception("message.failed", error=repr(exc), poison=poison)
                if not poison and delivered < self.settings.max_deliver - 1:
                    await _settle(msg.nak(delay=nak_delay(self.settings, delivered)))
                    return True, []
                error = (
                    f"cannot be stored: {exc}"
                    if poison
                    else f"gave up after {delivered} deliveries: {exc!r}"
                )
                handled, rows = await self._in_transaction(
                    conn,
                    lambda ctx: on_invalid(
                        msg.subject, msg.data, error, sequence=meta.sequence.stream, ctx=ctx
                    ),
                )
            published = await self._publish(rows)
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

    async def _handle_batch(self, msgs: Sequence[Msg]) -> bool:
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
                    await RouterStore(conn).mark_sent([row.id for row in sent], utcnow())
            except TRANSIENT as exc:  # the relay re-publishes them; JetStream drops repeats
                log.warning("outbox.mark_sent_failed", error=repr(exc))
        return not failed

    async def consume(self, stop: asyncio.Event) -> None:
        """Fetch and handle batches until ``stop`` is set; the current batch is finished first."""
        sub = None
        while not stop.is_set():
            try:
                if sub is None:
                    sub = await self.js.pull_subscribe_bind(durable=ROUTER_DURABLE, stream=STREAM)
                msgs = await sub.fetch(
                    self.settings.batch_size, timeout=self.settings.fetch_timeout_s
                )
            except (nats.errors.TimeoutError, TimeoutError):
                continue  # idle (nats-py raises either, depending on where the wait ends)
            except (nats.errors.Error, nats.js.errors.Error, OSError) as exc:
                log.warning("nats.fetch_failed", error=repr(exc))
                await _sleep(stop, 1.0)
                continue
            if not await self._handle_batch(msgs):
                await _sleep(stop, 1.0)
        if sub is not None:
            # A pull subscription left open makes the connection's drain wait for its timeout.
            with contextlib.suppress(nats.errors.Error, OSError):
                await sub.unsubscribe()

    # -- deadlines and the outbox relay --------------------------------------------------------

    async def sweep_once(self) -> int:
        """Handle expired offers, then publish outbox rows left unsent; how many were expired."""
        expired = 0
        async with self.pool.acquire() as conn:
            store = RouterStore(conn)
            while True:
                results: list[Handled] = []
                _, rows = await self._in_transaction(conn, functools.partial(_expire_due, results))
                for handled in results:
                    log.info(
                        "offer.expired",
                        referral_id=str(handled.referral_id),
                        outcome=handled.outcome,
                        reason=handled.reason,
                    )
                if rows:
                    await store.mark_sent(await self._publish(rows), utcnow())
                expired += len(results)
                if len(results) < SWEEP_BATCH:
                    break
            older_than = utcnow() - datetime.timedelta(seconds=self.settings.relay_grace_s)
            async with conn.transaction():
                unsent = await store.lock_unsent(older_than=older_than, limit=RELAY_BATCH)
                if unsent:
                    published = await self._publish(unsent)
                    await store.mark_sent(published, utcnow())
                    log.info("outbox.relayed", rows=len(published), of=len(unsent))
        return expired

    async def sweep(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep_once()
            except TRANSIENT as exc:
                log.warning("sweep.retry", error=repr(exc))
            except Exception as exc:  # keep sweeping; the next round retries
                log.exception("sweep.failed", error=repr(exc))
            await _sleep(stop, self.settings.sweep_interval_s)


async def _expire_due(results: list[Handled], ctx: Context) -> Handled:
    for referral_id in await ctx.store.lock_expired(ctx.now, SWEEP_BATCH):
        results.append(await on_timeout(referral_id, ctx=ctx))
    return Handled("swept", None)


async def _settle(ack: Awaitable[None]) -> None:
    """Ack / nak / term; a failure is harmless: the message comes back and is a duplicate."""
    try:
        await ack
    except (nats.errors.Error, OSError) as exc:
        log.warning("message.settle_failed", error=repr(exc))


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
