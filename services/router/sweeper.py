"""The router's sweeper: offers past their deadline (a decline with reason ``timeout``), and the
outbox relay, which publishes rows a crashed or failed publish left unsent. Any replica may run
it: rows are locked with SKIP LOCKED, so replicas share the work without waiting on each other.
"""

import asyncio
import datetime
import functools

import asyncpg
import structlog

from services.router.handlers import on_timeout
from services.router.model import Handled
from services.router.publisher import OutboxPublisher
from services.router.settings import RouterSettings
from services.router.transient import TRANSIENT, pause, utcnow
from services.router.unit_of_work import UnitOfWork, Wiring

log = structlog.get_logger("router")

#: Expired offers handled per sweeper transaction; outbox rows per relay transaction.
SWEEP_BATCH = 50
RELAY_BATCH = 500


class Sweeper:
    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: RouterSettings,
        wiring: Wiring,
        publisher: OutboxPublisher,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.wiring = wiring
        self.publisher = publisher

    async def sweep_once(self) -> int:
        """Handle expired offers, then publish outbox rows left unsent; how many were expired.
        Bounded by ``message_timeout_s`` per round, like a message."""
        async with asyncio.timeout(self.settings.message_timeout_s * 2):
            return await self._sweep()

    async def _sweep(self) -> int:
        expired = 0
        async with self.pool.acquire() as conn:
            store = self.wiring.store(conn)
            while True:
                results: list[Handled] = []
                expire = functools.partial(_expire_due, results)
                _, rows = await self.wiring.run(conn, utcnow(), expire)
                for handled in results:
                    log.info(
                        "offer.expired",
                        referral_id=str(handled.referral_id),
                        outcome=handled.outcome,
                        reason=handled.reason,
                    )
                if rows:
                    await store.mark_sent(await self.publisher.publish(rows), utcnow())
                expired += len(results)
                if len(results) < SWEEP_BATCH:
                    break
            older_than = utcnow() - datetime.timedelta(seconds=self.settings.relay_grace_s)
            async with conn.transaction():
                unsent = await store.lock_unsent(older_than=older_than, limit=RELAY_BATCH)
                if unsent:
                    published = await self.publisher.publish(unsent)
                    await store.mark_sent(published, utcnow())
                    log.info("outbox.relayed", rows=len(published), of=len(unsent))
        return expired

    async def sweep(self, stop: asyncio.Event) -> None:
        """``sweep_once`` every ``sweep_interval_s`` until ``stop`` is set."""
        while not stop.is_set():
            try:
                await self.sweep_once()
            except TRANSIENT as exc:
                log.warning("sweep.retry", error=repr(exc))
            except Exception as exc:  # keep sweeping; the next round retries
                log.exception("sweep.failed", error=repr(exc))
            await pause(stop, self.settings.sweep_interval_s)


async def _expire_due(results: list[Handled], uow: UnitOfWork) -> Handled:
    for referral_id in await uow.store.lock_expired(uow.now, SWEEP_BATCH):
        results.append(await on_timeout(referral_id, uow=uow))
    return Handled("swept", None)
