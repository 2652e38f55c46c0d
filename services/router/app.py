"""Composition root of the router service: ``create_app(settings)`` builds its Litestar app.

The app's lifespan owns everything the router runs: the PostgreSQL pool, the NATS connection,
the stream and consumer set-up, and the consumer and sweeper loops. Serving the app (``eo
router``, ``eo run``) runs the router; shutting it down drains the loops, then NATS, then the pool.
``wiring(settings)`` is where the handlers' store and directory are chosen: PostgreSQL here.

The HTTP API is the directory's token scheme (``services.access``): every route but ``/health``,
``/ready`` and the OpenAPI document needs a bearer token, and ``visibility`` says what of a
referral each caller sees; what it may not see is a 404, as a referral that does not exist.
"""

import asyncio
import contextlib
import datetime
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import nats
import nats.errors
import structlog
from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from nats.aio.client import Client as NatsClient

from services.access.auth import PUBLIC, BearerAuth
from services.access.errors import AccessError, on_access_error
from services.geo import default_gazetteer
from services.infra.access_log import access_logged
from services.infra.db import Connection, keep_session
from services.infra.edge import MAX_BODY_BYTES, before_request
from services.infra.http import on_http_error, on_validation_error, unexpected_error_handler
from services.infra.migrations import apply_migrations, pending_migrations
from services.infra.nats_auth import redact, servers_option, strip_login, url_login
from services.infra.openapi import ClosedStructSchemaPlugin
from services.router.actions import Refused
from services.router.api import ROUTES, on_refused
from services.router.deadlines import deadline_policy, ontario_holidays
from services.router.directory import SqlDirectory, missing_directory_schema
from services.router.pages import PAGES
from services.router.settings import RouterSettings
from services.router.store import SqlStore
from services.router.stream import set_up_stream
from services.router.unit_of_work import Wiring
from services.router.worker import Router

log = structlog.get_logger("router")

MIGRATIONS = Path(__file__).parent / "migrations"


class DirectorySchemaMissing(RuntimeError):
    """The database lacks the directory's tables, which the candidates query reads."""


def wiring(settings: RouterSettings) -> Wiring:
    """The handlers' collaborators in the service: the router's SQL store and the directory's
    candidates query, on each transaction's connection."""
    return Wiring(
        store=SqlStore,
        directory=SqlDirectory,
        deadline=deadline_policy(settings),
        candidates=settings.candidates,
        batch_rows=lambda conn: (SqlStore(conn), SqlDirectory(conn)),
    )


async def check_directory_schema(conn: Connection) -> None:
    """Refuse to start without the directory's schema: the router applies only its own
    migrations; ``eo migrate`` (or the directory service) applies the directory's."""
    missing = await missing_directory_schema(conn)
    if missing:
        raise DirectorySchemaMissing(
            "the database has no (or an outdated) directory schema: its migrations "
            f"{', '.join(missing)} are not applied. Run `eo migrate` (or start the directory "
            "service) on this database first."
        )


async def connect_nats(url: str, *, name: str = "eo-router") -> NatsClient:
    """Connect, waiting for the server if it is not up yet; reconnects forever afterwards.

    ``url`` may list a cluster's nodes, comma-separated: the client fails over between them
    (and the nodes the cluster announces), with the login given as options so that it holds
    for every node, announced ones included.
    """
    login = url_login(url)
    auth = {"user": login[0], "password": login[1]} if login else {}

    async def on_error(exc: Exception) -> None:
        log.warning("nats.error", error=repr(exc))

    async def on_disconnected() -> None:
        log.warning("nats.disconnected")

    async def on_reconnected() -> None:
        log.info("nats.reconnected")

    delay = 0.2
    while True:
        try:
            return await nats.connect(
                servers=servers_option(strip_login(url) if login else url),
                **auth,
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                connect_timeout=2,
                drain_timeout=5,
                error_cb=on_error,
                disconnected_cb=on_disconnected,
                reconnected_cb=on_reconnected,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            log.warning("nats.unavailable", url=redact(url), error=repr(exc), retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


@get("/health", tags=["operations"], opt=PUBLIC)
async def health() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@get("/ready", tags=["operations"], opt=PUBLIC)
async def ready(state: State) -> Response[dict[str, Any]]:
    """Ready: the database answers with every migration applied, NATS is connected, and the
    consumer and sweeper loops are running."""
    try:
        async with state.pool.acquire() as conn:
            pending = await pending_migrations(conn, "router", MIGRATIONS)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return Response({"status": "unavailable", "error": str(exc)}, status_code=503)
    if pending:
        return Response({"status": "migrating", "pending": pending}, status_code=503)
    if not state.nc.is_connected:
        return Response({"status": "unavailable", "error": "NATS not connected"}, status_code=503)
    if stopped := state.router.stopped_loops:
        return Response({"status": "broken", "stopped": stopped}, status_code=503)
    return Response({"status": "ready", "handled": state.router.handled})


def create_app(settings: RouterSettings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            reset=keep_session,
            command_timeout=settings.db_command_timeout_s,
        )
        try:
            async with pool.acquire() as conn:
                try:
                    await check_directory_schema(conn)
                except DirectorySchemaMissing as exc:
                    log.error("router.cannot_start", reason=str(exc))
                    raise
                if settings.apply_migrations:
                    await apply_migrations(conn, "router", MIGRATIONS)
            nc = await connect_nats(settings.nats_url)
            try:
                js = nc.jetstream()
                await set_up_stream(js, settings)
                if settings.offer_timeout_s is None:
                    # The holiday calendar loads on first use (~0.4 s): at start, not while
                    # the first referral waits.
                    this_year = datetime.datetime.now(datetime.UTC).year
                    await asyncio.to_thread(ontario_holidays, this_year)
                router = Router(
                    pool, js, settings, wiring(settings), default_gazetteer().resolve, nc
                )
                stop = asyncio.Event()
                # What start-up made (modules, the gazetteer, the holiday calendar) lives as
                # long as the process: out of the collector's way, so that its full
                # collections, triggered by a burst's allocations, do not scan it each time.
                gc.freeze()
                loops = router.start(stop)
                app.state.update(pool=pool, nc=nc, router=router)
                log.info("router.started", nats=strip_login(settings.nats_url), port=settings.port)
                try:
                    yield
                finally:
                    stop.set()
                    await asyncio.wait(loops, timeout=settings.fetch_timeout_s + 10)
                    log.info("router.stopped", handled=router.handled)
            finally:
                with contextlib.suppress(nats.errors.Error, OSError, TimeoutError):
                    await nc.drain()
        finally:
            await pool.close()

    openapi = OpenAPIConfig(
        title="EO referral router",
        version="1.0.0",
        path="/schema",
        components=Components(
            security_schemes={
                "bearer": SecurityScheme(
                    type="http",
                    scheme="bearer",
                    description="A token of `eo token issue` (admin, provider or ow).",
                )
            }
        ),
    )
    app = Litestar(
        route_handlers=[*ROUTES, health, ready, *PAGES],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        middleware=[DefineMiddleware(BearerAuth, exclude=f"^{openapi.path}")],
        exception_handlers={
            AccessError: on_access_error,
            Refused: on_refused,
            ValidationException: on_validation_error,
            HTTPException: on_http_error,
            Exception: unexpected_error_handler("router"),
        },
        openapi_config=openapi,
        before_request=before_request,
        plugins=[ClosedStructSchemaPlugin()],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    return access_logged(app, "router")
