"""Composition root of the directory service: ``create_app(settings)`` builds the Litestar app."""

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import structlog
from litestar import Litestar, Request, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.exceptions import HTTPException, ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import ResponseSpec

from contracts.directory import FieldError, Problem
from services.access.auth import PUBLIC, BearerAuth, provide_principal
from services.access.errors import AccessError, on_access_error
from services.directory.controllers import (
    ProviderController,
    SiteController,
    communities,
    search,
    taxonomy,
)
from services.directory.errors import DirectoryError
from services.directory.hsds.api import hsds_router
from services.directory.openapi import openapi_config
from services.directory.placement import make_geocoder
from services.directory.schema import MIGRATIONS
from services.directory.seed import load_seed
from services.directory.settings import DirectorySettings
from services.directory.store import DirectoryStore
from services.directory.web import office_finder, static_files
from services.geo import UnresolvableLocation, default_gazetteer
from services.infra.access_log import access_logged
from services.infra.db import keep_session
from services.infra.edge import MAX_BODY_BYTES, before_request
from services.infra.http import (
    on_http_error,
    on_validation_error,
    problem,
    unexpected_error_handler,
)
from services.infra.migrations import apply_migrations, pending_migrations
from services.infra.openapi import ClosedStructSchemaPlugin
from services.web import common_static_router

log = structlog.get_logger("directory")

NOT_READY = ResponseSpec(dict[str, Any], description="The database is unreachable or migrating")


def on_directory_error(_: Request[Any, Any, Any], exc: DirectoryError) -> Response[Problem]:
    errors = [FieldError(field=exc.field, message=exc.message)] if exc.field else []
    return problem(exc.status, exc.title, exc.message, errors, headers=exc.headers)


def on_unresolvable(_: Request[Any, Any, Any], exc: UnresolvableLocation) -> Response[Problem]:
    """A location the gazetteer cannot place is a 422 naming the field, like any bad input."""
    errors = [FieldError(field=exc.field, message=exc.message)]
    return problem(422, exc.title, exc.message, errors)


async def provide_store(state: State) -> AsyncIterator[DirectoryStore]:
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as conn:
        yield DirectoryStore(conn)


@get("/health", tags=["operations"], opt=PUBLIC)
async def health() -> dict[str, str]:
    """Alive: the process answers."""
    return {"status": "ok"}


@get("/ready", tags=["operations"], opt=PUBLIC, responses={503: NOT_READY})
async def ready(state: State) -> Response[dict[str, Any]]:
    """Ready: the database answers and every migration is applied."""
    try:
        async with state.pool.acquire() as conn:
            pending = await pending_migrations(conn, "directory", MIGRATIONS)
    except (OSError, asyncpg.PostgresError) as exc:
        return Response({"status": "unavailable", "error": str(exc)}, status_code=503)
    if pending:
        return Response({"status": "migrating", "pending": pending}, status_code=503)
    return Response({"status": "ready"})


def create_app(settings: DirectorySettings) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(
            settings.database_url,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            reset=keep_session,
        )
        try:
            async with pool.acquire() as conn:
                if settings.apply_migrations:
                    await apply_migrations(conn, "directory", MIGRATIONS)
                if settings.load_seed:
                    await load_seed(conn)
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    openapi = openapi_config()
    app = Litestar(
        route_handlers=[
            health,
            ready,
            search,
            communities,
            taxonomy,
            ProviderController,
            SiteController,
            hsds_router,
            office_finder,
            static_files,
            common_static_router(),
        ],
        lifespan=[lifespan],
        state=State({"settings": settings, "geocoder": make_geocoder(settings)}),
        middleware=[DefineMiddleware(BearerAuth, exclude=f"^{openapi.path}")],
        before_request=before_request,
        dependencies={
            "store": Provide(provide_store),
            "caller": Provide(provide_principal, sync_to_thread=False),
            "gazetteer": Provide(default_gazetteer, use_cache=True, sync_to_thread=False),
        },
        exception_handlers={
            DirectoryError: on_directory_error,
            AccessError: on_access_error,
            UnresolvableLocation: on_unresolvable,
            ValidationException: on_validation_error,
            HTTPException: on_http_error,
            Exception: unexpected_error_handler("directory"),
        },
        openapi_config=openapi,
        plugins=[ClosedStructSchemaPlugin()],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    return access_logged(app, "directory")
