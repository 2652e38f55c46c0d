"""Publishing outbox rows to JetStream, each with its ``Nats-Msg-Id`` (JetStream drops a repeat
within the stream's duplicate window), after making sure the consumer of each party it is for
exists.
"""

import asyncio
from collections.abc import Sequence

import structlog
from nats.js import JetStreamContext

from services.router.model import OutboxRow
from services.router.party_consumers import PartyConsumers

log = structlog.get_logger("router")


class OutboxPublisher:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
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
