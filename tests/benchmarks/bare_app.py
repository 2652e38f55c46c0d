"""The floor for the directory's search over HTTP: litestar + asyncpg and nothing else.

``GET /nearest?lat=..&lon=..`` runs the directory's nearest-site SQL (the filter of
``BENCH_FILTER`` in directory_bench.py) on a pooled connection and answers the rows as JSON
(litestar's msgspec encoder); ``GET /const`` answers a constant, for litestar alone. No auth,
no validation beyond the two floats, no geodesic re-rank, no contract structs.

Served by directory_bench.py with uvicorn (uvloop, httptools, 1 worker) through
``create_bare_app_from_env`` (``BENCH_DATABASE_URL``).
"""

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from litestar import Litestar, get
from litestar.datastructures import State

from services.directory.search import search_query
from services.directory.site_query import SiteFilter

#: The search every contender runs: two services and a language, 10 nearest.
BENCH_FILTER = SiteFilter(services=("employment_counselling", "skills_training"), language="en")
BENCH_LIMIT = 10
#: As the directory's default pool (DirectorySettings.pool_min_size / pool_max_size).
POOL_MIN, POOL_MAX = 2, 10


def create_bare_app(database_url: str) -> Litestar:
    sql, args = search_query(0.0, 0.0, BENCH_FILTER, BENCH_LIMIT)
    fixed = args[2:]  # everything but the origin ($1, $2)

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        pool = await asyncpg.create_pool(database_url, min_size=POOL_MIN, max_size=POOL_MAX)
        try:
            app.state.pool = pool
            yield
        finally:
            await pool.close()

    @get("/nearest")
    async def nearest(state: State, lat: float, lon: float) -> list[dict[str, Any]]:
        async with state.pool.acquire() as conn:
            rows = await conn.fetch(sql, lat, lon, *fixed)
        return [dict(row) for row in rows]

    @get("/const")
    async def const() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(route_handlers=[nearest, const], lifespan=[lifespan], logging_config=None)


def create_bare_app_from_env() -> Litestar:
    """uvicorn ``--factory`` entry: the database from ``BENCH_DATABASE_URL``."""
    return create_bare_app(os.environ["BENCH_DATABASE_URL"])
