"""Publishing outbox rows to JetStream, each with its ``Nats-Msg-Id`` (JetStream drops a repeat
within the stream's duplicate window), after making sure the consumer of each party it is for
exists.

``publish`` sends rows concurrently, each its own store write; ``publish_atomic`` sends a
batch's rows as JetStream atomic batches (ADR-50: ``Nats-Batch-Id``, ``Nats-Batch-Sequence``,
and ``Nats-Batch-Commit`` on the last, whose reply is the one ack): one store write and one
fsync for all of them, in order. A batch the server refuses falls back to ``publish``; a row
neither stores stays unsent, for the relay.
"""

import asyncio
import uuid
from collections.abc import Sequence

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from services.router.model import OutboxRow
from services.router.party_consumers import PartyConsumers

log = structlog.get_logger("router")

#: Messages per atomic batch (nats-server accepts up to 1,000 by default).
ATOMIC_BATCH_MAX = 500


class OutboxPublisher:
    def __init__(self, js: JetStreamContext, nc: NatsClient | None = None) -> None:
        self.js = js
        #: The connection the atomic batches' messages go out on; without it, ``publish``.
        self.nc = nc
        self.party_consumers = PartyConsumers(js)

    async def publish(self, rows: Sequence[OutboxRow]) -> list[int]:
        """Publish ``rows`` concurrently; the ids of those JetStream stored (the others stay
        unsent, for the relay)."""
        await self.party_consumers.ensure([row.subject for row in rows])

        async def one(row: OutboxRow) -> int:
            headers = {"Nats-Msg-Id": str(row.message_id)}
            await self.js.publish(row.subject, row.payload, headers=headers)
            return row.id

        results = await asyncio.gather(*(one(row) for row in rows), return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.warning("outbox.publish_failed", failed=len(failed), error=repr(failed[0]))
        return [r for r in results if isinstance(r, int)]

    async def publish_atomic(self, rows: Sequence[OutboxRow]) -> list[int]:
        """Publish ``rows`` in order as atomic batches; the ids of those JetStream stored."""
        if self.nc is None or len(rows) < 2:
            return await self.publish(rows)
        await self.party_consumers.ensure([row.subject for row in rows])
        stored: list[int] = []
        for start in range(0, len(rows), ATOMIC_BATCH_MAX):
            chunk = rows[start : start + ATOMIC_BATCH_MAX]
            try:
                await self._atomic(self.nc, chunk)
            except (nats.errors.Error, nats.js.errors.Error, TimeoutError) as exc:
                log.warning("outbox.atomic_batch_failed", rows=len(chunk), error=repr(exc))
                stored += await self.publish(chunk)
            else:
                stored += [row.id for row in chunk]
        return stored

    async def _atomic(self, nc: NatsClient, chunk: Sequence[OutboxRow]) -> None:
        batch = uuid.uuid4().hex

        def headers(sequence: int) -> dict[str, str]:
            return {
                "Nats-Msg-Id": str(chunk[sequence - 1].message_id),
                "Nats-Batch-Id": batch,
                "Nats-Batch-Sequence": str(sequence),
            }

        for sequence, row in enumerate(chunk[:-1], start=1):
            await nc.publish(row.subject, row.payload, headers=headers(sequence))
        last = chunk[-1]
        ack = await self.js.publish(
            last.subject,
            last.payload,
            headers={**headers(len(chunk)), "Nats-Batch-Commit": "1"},
        )
        if ack.batch_size is not None and ack.batch_size != len(chunk):
            raise nats.js.errors.Error(
                f"the atomic batch stored {ack.batch_size} of {len(chunk)} messages"
            )
