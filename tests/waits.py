"""Waiting in tests: for the thing itself, never for a fixed time.

``until(check)`` calls ``check`` (plain or async) until it gives something truthy and returns
that, so a wait can hand back what it waited for (a row, a view, an offer). When ``within``
seconds pass first it fails, as a failed ``assert`` does, saying what it waited for (``what=``,
else the check's name, else a lambda's source) and the last value the check gave.
``until_sync`` is the same for code that cannot await: a plain test, a thread.

A wait on events that announce themselves (the ``Observer``'s messages) passes ``wake=``, the
``asyncio.Condition`` notified on each: the check runs again at once, and ``every`` is only the
backstop.
"""

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

#: Long enough for a busy 2-core machine, short enough to fail before pytest's own timeout.
WITHIN_S = 15.0
#: Seconds between two checks.
EVERY_S = 0.05


class TimedOut(AssertionError):
    """What a wait waited for did not happen in time."""


@overload
async def until(
    check: Callable[[], Awaitable[T | None]],
    *,
    within: float = WITHIN_S,
    every: float = EVERY_S,
    what: str | None = None,
    wake: asyncio.Condition | None = None,
) -> T: ...


@overload
async def until(
    check: Callable[[], T | None],
    *,
    within: float = WITHIN_S,
    every: float = EVERY_S,
    what: str | None = None,
    wake: asyncio.Condition | None = None,
) -> T: ...


async def until(
    check: Callable[[], Any],
    *,
    within: float = WITHIN_S,
    every: float = EVERY_S,
    what: str | None = None,
    wake: asyncio.Condition | None = None,
) -> Any:
    """The first truthy value ``check()`` gives (awaited if it is awaitable), checked every
    ``every`` s (and whenever ``wake`` is notified); ``TimedOut`` after ``within`` s.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise TimedOut(_message(check, what, within, last))
        await _pause(min(every, remaining), wake)


def until_sync(
    check: Callable[[], T | None],
    *,
    within: float = WITHIN_S,
    every: float = EVERY_S,
    what: str | None = None,
) -> T:
    """``until`` for code that cannot await: blocks between checks."""
    deadline = time.monotonic() + within
    while True:
        last = check()
        if inspect.isawaitable(last):  # truthy, and never run: a bug in the test
            if inspect.iscoroutine(last):
                last.close()
            raise TypeError(f"{_describe(check)} is async: await until() instead")
        if last:
            return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimedOut(_message(check, what, within, last))
        time.sleep(min(every, remaining))


async def _pause(seconds: float, wake: asyncio.Condition | None) -> None:
    if wake is None:
        await asyncio.sleep(seconds)
        return
    # Nothing ran between a plain check and this wait, so it missed no notification; after an
    # async check one may have come in the meantime, and ``seconds`` bounds what that costs.
    async with wake:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await wake.wait()


def _message(check: Callable[[], object], what: str | None, within: float, last: object) -> str:
    seen = repr(last)
    if len(seen) > 500:
        seen = seen[:500] + "..."
    return f"waited {within:g} s for {what or _describe(check)}; the last check gave {seen}"


def _describe(check: Callable[[], object]) -> str:
    """The check's name; for a lambda, the source line that defines it."""
    name = getattr(check, "__name__", None)
    if name == "<lambda>":
        with contextlib.suppress(OSError, TypeError):
            return " ".join(inspect.getsource(check).split())
    return name or repr(check)
