"""Serving ASGI apps with uvicorn, several in one process, stopped together by one signal."""

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass

import uvicorn
from litestar import Litestar


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # One handler in serve_all stops every server; uvicorn's own would stop only one.
        yield


@dataclass(frozen=True)
class Served:
    name: str
    app: Litestar
    host: str
    port: int


async def serve_all(served: Sequence[Served], *, also: Sequence[Awaitable[None]] = ()) -> bool:
    """Serve every app until SIGINT/SIGTERM, or until one of them stops; True if all started.

    ``also`` are tasks (the demo) cancelled when serving ends.
    """
    servers = [
        _Server(
            uvicorn.Config(
                item.app,
                host=item.host,
                port=item.port,
                http="httptools",
                lifespan="on",
                log_config=None,
                access_log=False,
            )
        )
        for item in served
    ]

    def stop_all() -> None:
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_all)
    extras = [asyncio.ensure_future(task) for task in also]
    tasks = [asyncio.create_task(server.serve()) for server in servers]
    try:
        # The first server to stop (a signal, or a failed start) stops the others.
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop_all()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for extra in extras:
            extra.cancel()
        await asyncio.gather(*extras, return_exceptions=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return all(server.started for server in servers)
