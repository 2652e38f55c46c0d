"""One router process's loops: the consumer and the sweeper, sharing a pool, JetStream, the
wiring and the outbox publisher. Several processes share the stream's consumer and the database.
"""

import asyncio

import asyncpg
from nats.js import JetStreamContext

from services.router.consumer import Consumer
from services.router.handlers import Locate
from services.router.publisher import OutboxPublisher
from services.router.settings import RouterSettings
from services.router.sweeper import Sweeper
from services.router.unit_of_work import Wiring


class Router:
    def __init__(
        self,
        pool: asyncpg.Pool,
        js: JetStreamContext,
        settings: RouterSettings,
        wiring: Wiring,
        locate: Locate,
    ) -> None:
        self.publisher = OutboxPublisher(js)
        self.consumer = Consumer(pool, js, settings, wiring, locate, self.publisher)
        self.sweeper = Sweeper(pool, settings, wiring, self.publisher)

    @property
    def handled(self) -> int:
        """Messages this process has handled and settled."""
        return self.consumer.handled

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The consumer and sweeper loops, running until ``stop`` is set."""
        return [
            asyncio.create_task(self.consumer.consume(stop), name="router.consume"),
            asyncio.create_task(self.sweeper.sweep(stop), name="router.sweep"),
        ]
