"""SQL of the HSDS import and export: the whole directory read in id order, a plan written."""

from collections.abc import Callable

from contracts.directory import Provider, Site, Taxonomy
from services.directory.hsds import mapping as m
from services.directory.hsds.importer import Known, Plan
from services.directory.store import (
    INSERT_SITE,
    PROVIDER_COLUMNS,
    SITE_COLUMNS,
    SITE_WRITABLE,
    DirectoryStore,
    provider_from_row,
    site_from_row,
    site_values,
)
from services.infra.db import Connection

Progress = Callable[[str, int, int], None]
CHUNK = 500

#: An import's site upsert: ``reserved`` is server-owned and never written (not one of the
#: writable columns), and ``last_verified`` keeps its stored value when the file says nothing.
_UPSERT_SITE = (
    f"{INSERT_SITE} ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(
        f"{name} = EXCLUDED.{name}" for name in SITE_WRITABLE if name not in ("id", "last_verified")
    )
    + ", last_verified = COALESCE(EXCLUDED.last_verified, directory.site.last_verified),"
    " updated_at = now()"
)


async def read_directory(conn: Connection) -> tuple[list[Provider], list[Site], Taxonomy]:
    """Every provider and site, by id, and the vocabulary: what an export publishes."""
    providers = await conn.fetch(f"SELECT {PROVIDER_COLUMNS} FROM directory.provider ORDER BY id")
    sites = await conn.fetch(f"SELECT {SITE_COLUMNS} FROM directory.site ORDER BY id")
    vocabulary = await DirectoryStore(conn).taxonomy()
    return (
        [provider_from_row(row) for row in providers],
        [site_from_row(row) for row in sites],
        vocabulary,
    )


async def known(conn: Connection) -> Known:
    """The providers (by HSDS id) and catchments imported records may refer to."""
    providers = await conn.fetch("SELECT id FROM directory.provider")
    catchments = await conn.fetch("SELECT id FROM directory.catchment")
    return Known(
        providers={m.organization_id(row["id"]): row["id"] for row in providers},
        catchments=frozenset(row["id"] for row in catchments),
    )


async def write_plan(conn: Connection, plan: Plan, progress: Progress | None = None) -> None:
    """Upsert everything ``plan`` holds, vocabulary first; the caller owns the transaction."""
    store = DirectoryStore(conn)
    total = len(plan.terms) + len(plan.catchments) + len(plan.providers) + len(plan.sites)
    done = 0

    def advance(step: int) -> None:
        nonlocal done
        done += step
        if progress is not None:
            progress("write", done, total)

    for term in plan.terms:
        await store.upsert_term(term)
    for catchment in plan.catchments:
        await store.upsert_catchment(catchment)
    advance(len(plan.terms) + len(plan.catchments))
    for provider in plan.providers:
        await store.upsert_provider(provider)
    advance(len(plan.providers))
    for start in range(0, len(plan.sites), CHUNK):
        chunk = plan.sites[start : start + CHUNK]
        await conn.executemany(_UPSERT_SITE, [site_values(p.site, p.last_verified) for p in chunk])
        advance(len(chunk))
