"""What the router's loops share: which failures say nothing about the message (retry it later,
with backoff), the clock, and a pause that ends early when the router stops."""

import asyncio
import contextlib
import datetime

import asyncpg
import nats.errors

from services.router.handlers import Contention
from services.router.settings import RouterSettings

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


def nak_delay(settings: RouterSettings, delivered: int) -> float:
    steps = settings.backoff_s or [1.0]
    return steps[min(delivered, len(steps)) - 1]


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
