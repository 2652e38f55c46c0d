"""One router process's loops: the consumer and the sweeper, sharing a pool, JetStream, the
wiring and the outbox publisher. Several processes share the stream's consumer and the database.
"""

import asyncio
import contextlib
import signal

import asyncpg
import structlog
from nats.aio.client import Client as NatsClient
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
        nc: NatsClient | None = None,
    ) -> None:
        # With ``nc``, a batch's outbox goes out as JetStream atomic batches.
        self.publisher = OutboxPublisher(js, nc)
        self.consumer = Consumer(pool, js, settings, wiring, locate, self.publisher)
        self.sweeper = Sweeper(pool, settings, wiring, self.publisher)
        self.tasks: list[asyncio.Task[None]] = []

    @property
    def handled(self) -> int:
        """Messages this process has handled and settled."""
        return self.consumer.handled

    def start(self, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        """The consumer and sweeper loops, running until ``stop`` is set. ``kill -USR1`` makes
        the process log where each of its tasks is waiting (``router.tasks``)."""
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, log_tasks)
        self.tasks = [
            asyncio.create_task(self.consumer.consume(stop), name="router.consume"),
            asyncio.create_task(self.sweeper.sweep(stop), name="router.sweep"),
        ]
        return self.tasks

    @property
    def stopped_loops(self) -> list[str]:
        """The loops that have ended (before shutdown, a bug: ``/ready`` then fails)."""
        return [task.get_name() for task in self.tasks if task.done()]


def log_tasks() -> None:
    """Each task of the process and the await chain it is suspended in, innermost last, for an
    operator asking why it hangs."""
    for task in asyncio.all_tasks():
        where: list[str] = []
        awaiting: object = task.get_coro()
        while awaiting is not None and len(where) < 20:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "gi_frame", None)
            if frame is not None:
                where.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
            inner = getattr(awaiting, "cr_await", None)
            awaiting = inner if inner is not None else getattr(awaiting, "gi_yieldfrom", None)
        structlog.get_logger("router").warning("router.tasks", task=task.get_name(), waiting=where)
