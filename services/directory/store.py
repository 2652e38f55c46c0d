"""All SQL of the directory's CRUD: rows in, contract structs out, asyncpg errors to errors.py.

The site's columns are listed once, here (``SITE_COLUMN_NAMES``): the select list of a whole
site and the columns a write sets (the API's, an HSDS import's) are derived from it.
"""

import datetime
import functools

import asyncpg
import msgspec

from contracts.directory import (
    Address,
    Catchment,
    OpeningHours,
    Provider,
    ProviderCreate,
    ProviderPage,
    ProviderPatch,
    Site,
    SiteCreate,
    SitePage,
    Taxonomy,
    TaxonomyTerm,
)
from contracts.vocabulary import ENDED_EARLY_REASONS, NOT_STARTED_REASONS, OUTCOMES
from services.directory.errors import Conflict, InvalidInput, NotFound
from services.infra.db import Connection

_hours = msgspec.json.Decoder(list[OpeningHours])
_encode = msgspec.json.Encoder().encode

PROVIDER_COLUMNS = (
    "id, name, alternate_name, description, email, website, phone, active, created_at, updated_at"
)
#: The site's columns, defined once: a whole site as ``site_from_row`` reads it, in table order.
#: (``earth_point``, generated from lat/lon, is for the search's SQL only.)
SITE_COLUMN_NAMES = (
    "id", "provider_id", "name", "address_1", "address_2", "city", "province", "postal_code",
    "country", "lat", "lon", "coord_precision", "coord_source", "phone", "email", "website",
    "hours", "services", "languages", "accessibility", "eligibility", "min_age", "max_age",
    "catchment_id", "capacity", "reserved", "accepting_referrals", "active", "last_verified",
    "created_at", "updated_at",
)  # fmt: skip
#: Server-owned, never written by a site write: ``reserved`` changes only through the
#: router's reservations (candidates.py), and the database keeps the timestamps.
_SITE_SERVER_OWNED = ("reserved", "created_at", "updated_at")
#: The columns a site write (the API's, an HSDS import's) sets, in the order of ``site_values``.
SITE_WRITABLE = tuple(name for name in SITE_COLUMN_NAMES if name not in _SITE_SERVER_OWNED)
#: The select list of a whole site, as ``site_from_row`` reads it.
SITE_COLUMNS = ", ".join(
    "hours::text AS hours" if name == "hours" else name for name in SITE_COLUMN_NAMES
)
#: A site's insert, to be completed by an ``ON CONFLICT`` clause; its values: ``site_values``.
INSERT_SITE = (
    f"INSERT INTO directory.site ({', '.join(SITE_WRITABLE)})"
    f" VALUES ({', '.join(f'${n}' for n in range(1, len(SITE_WRITABLE) + 1))})"
)
_PROVIDER_WRITE = ("name", "alternate_name", "description", "email", "website", "phone", "active")


_PROVIDER_FIELDS: tuple[str, ...] = Provider.__struct_fields__
#: Site fields read from the column of the same name (the others are built in site_from_row).
_SITE_PLAIN = tuple(
    name
    for name in Site.__struct_fields__
    if name not in ("id", "provider_id", "name", "address", "hours")
)


@functools.cache
def _provider_columns(prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((name, prefix + name) for name in _PROVIDER_FIELDS)


def provider_from_row(row: asyncpg.Record, prefix: str = "") -> Provider:
    return Provider(**{name: row[column] for name, column in _provider_columns(prefix)})


def site_from_row(row: asyncpg.Record) -> Site:
    return Site(
        id=row["id"],
        provider_id=row["provider_id"],
        name=row["name"],
        address=Address(
            address_1=row["address_1"],
            address_2=row["address_2"],
            city=row["city"],
            province=row["province"],
            postal_code=row["postal_code"],
            country=row["country"],
        ),
        hours=_hours.decode(row["hours"]),
        **{name: row[name] for name in _SITE_PLAIN},
    )


def site_values(site: SiteCreate, last_verified: datetime.date | None) -> tuple[object, ...]:
    """A placed site's values in the order of ``SITE_WRITABLE``."""
    if site.lat is None or site.lon is None:
        raise ValueError("a site must be placed (lat/lon) before it is stored")
    fields = msgspec.structs.asdict(site) | msgspec.structs.asdict(site.address)
    fields["hours"] = _encode(site.hours).decode()
    fields["last_verified"] = last_verified
    return tuple(fields[name] for name in SITE_WRITABLE)


def _foreign_key_error(exc: asyncpg.ForeignKeyViolationError) -> InvalidInput:
    field = "catchment_id" if "catchment" in (exc.constraint_name or "") else "provider_id"
    return InvalidInput(f"{field} names no existing record", field=field)


class DirectoryStore:
    """The directory's tables, through one connection (the caller owns the transaction)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # taxonomy ---------------------------------------------------------------------------
    async def taxonomy(self) -> Taxonomy:
        terms = await self.conn.fetch(
            "SELECT code, taxonomy, name_en, name_fr FROM directory.taxonomy_term ORDER BY code"
        )
        catchments = await self.conn.fetch(
            "SELECT id, name_en, name_fr FROM directory.catchment ORDER BY id"
        )
        by_kind: dict[str, list[TaxonomyTerm]] = {"eo_service": [], "eo_accessibility": []}
        for row in terms:
            by_kind[row["taxonomy"]].append(TaxonomyTerm(**dict(row)))
        return Taxonomy(
            services=by_kind["eo_service"],
            accessibility=by_kind["eo_accessibility"],
            catchments=[Catchment(**dict(row)) for row in catchments],
            # Part of the wire contract, so a constant of contracts/, not rows of this schema.
            outcomes=list(OUTCOMES),
            not_started_reasons=list(NOT_STARTED_REASONS),
            ended_early_reasons=list(ENDED_EARLY_REASONS),
        )

    async def upsert_term(self, term: TaxonomyTerm) -> None:
        await self.conn.execute(
            "INSERT INTO directory.taxonomy_term (code, taxonomy, name_en, name_fr)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (code) DO UPDATE SET taxonomy = $2,"
            " name_en = $3, name_fr = $4",
            term.code,
            term.taxonomy,
            term.name_en,
            term.name_fr,
        )

    async def upsert_catchment(self, catchment: Catchment) -> None:
        await self.conn.execute(
            "INSERT INTO directory.catchment (id, name_en, name_fr) VALUES ($1, $2, $3)"
            " ON CONFLICT (id) DO UPDATE SET name_en = $2, name_fr = $3",
            catchment.id,
            catchment.name_en,
            catchment.name_fr,
        )

    # providers --------------------------------------------------------------------------
    async def list_providers(self, *, limit: int, offset: int) -> ProviderPage:
        rows = await self.conn.fetch(
            f"SELECT {PROVIDER_COLUMNS} FROM directory.provider ORDER BY id LIMIT $1 OFFSET $2",
            limit,
            offset,
        )
        total = await self.conn.fetchval("SELECT count(*) FROM directory.provider")
        items = [provider_from_row(row) for row in rows]
        return ProviderPage(items=items, total=total, limit=limit, offset=offset)

    async def provider_ids(self) -> list[str]:
        """Every provider's id, active or not (each gets a NATS user: services/nats_users.py)."""
        rows = await self.conn.fetch("SELECT id FROM directory.provider ORDER BY id")
        return [row["id"] for row in rows]

    async def get_provider(self, provider_id: str) -> Provider:
        row = await self.conn.fetchrow(
            f"SELECT {PROVIDER_COLUMNS} FROM directory.provider WHERE id = $1", provider_id
        )
        if row is None:
            raise NotFound(f"no provider {provider_id!r}", field="id")
        return provider_from_row(row)

    async def upsert_provider(
        self, provider: ProviderCreate, *, create_only: bool = False
    ) -> Provider:
        """Create ``provider`` or replace its writable fields; ``create_only``: Conflict instead."""
        values = [getattr(provider, name) for name in _PROVIDER_WRITE]
        on_conflict = (
            "DO NOTHING"
            if create_only
            else "DO UPDATE SET "
            + ", ".join(f"{name} = EXCLUDED.{name}" for name in _PROVIDER_WRITE)
            + ", updated_at = now()"
        )
        row = await self.conn.fetchrow(
            f"INSERT INTO directory.provider (id, {', '.join(_PROVIDER_WRITE)})"
            f" VALUES ($1, {', '.join(f'${i}' for i in range(2, len(values) + 2))})"
            f" ON CONFLICT (id) {on_conflict} RETURNING {PROVIDER_COLUMNS}",
            provider.id,
            *values,
        )
        if row is None:
            raise Conflict(f"provider {provider.id!r} already exists", field="id")
        return provider_from_row(row)

    async def patch_provider(self, provider_id: str, patch: ProviderPatch) -> Provider:
        changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not msgspec.UNSET}
        if not changes:
            return await self.get_provider(provider_id)
        sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(changes, start=2))
        row = await self.conn.fetchrow(
            f"UPDATE directory.provider SET {sets}, updated_at = now() WHERE id = $1"
            f" RETURNING {PROVIDER_COLUMNS}",
            provider_id,
            *changes.values(),
        )
        if row is None:
            raise NotFound(f"no provider {provider_id!r}", field="id")
        return provider_from_row(row)

    async def delete_provider(self, provider_id: str) -> None:
        try:
            status = await self.conn.execute(
                "DELETE FROM directory.provider WHERE id = $1", provider_id
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise Conflict(
                f"provider {provider_id!r} still has sites; delete or move them first", field="id"
            ) from exc
        if status == "DELETE 0":
            raise NotFound(f"no provider {provider_id!r}", field="id")

    # sites ------------------------------------------------------------------------------
    async def list_sites(
        self, *, limit: int, offset: int, provider_id: str | None = None
    ) -> SitePage:
        rows = await self.conn.fetch(
            f"SELECT {SITE_COLUMNS} FROM directory.site"
            " WHERE ($3::text IS NULL OR provider_id = $3) ORDER BY id LIMIT $1 OFFSET $2",
            limit,
            offset,
            provider_id,
        )
        total = await self.conn.fetchval(
            "SELECT count(*) FROM directory.site WHERE ($1::text IS NULL OR provider_id = $1)",
            provider_id,
        )
        items = [site_from_row(row) for row in rows]
        return SitePage(items=items, total=total, limit=limit, offset=offset)

    async def get_site(self, site_id: str, *, for_update: bool = False) -> Site:
        """The site; ``for_update`` locks its row until the caller's transaction ends."""
        lock = " FOR UPDATE" if for_update else ""
        row = await self.conn.fetchrow(
            f"SELECT {SITE_COLUMNS} FROM directory.site WHERE id = $1{lock}", site_id
        )
        if row is None:
            raise NotFound(f"no site {site_id!r}", field="id")
        return site_from_row(row)

    async def site_owner(self, site_id: str) -> str | None:
        """The provider a site belongs to, or None when there is no such site."""
        owner: str | None = await self.conn.fetchval(
            "SELECT provider_id FROM directory.site WHERE id = $1", site_id
        )
        return owner

    async def upsert_site(
        self,
        site: SiteCreate,
        *,
        verified: datetime.date,
        create_only: bool = False,
    ) -> Site:
        """Store a placed site; ``create_only`` makes an existing id a Conflict."""
        on_conflict = (
            "DO NOTHING"
            if create_only
            else "DO UPDATE SET "
            + ", ".join(f"{name} = EXCLUDED.{name}" for name in SITE_WRITABLE if name != "id")
            + ", updated_at = now()"
        )
        try:
            row = await self.conn.fetchrow(
                f"{INSERT_SITE} ON CONFLICT (id) {on_conflict} RETURNING {SITE_COLUMNS}",
                *site_values(site, verified),
            )
        except asyncpg.ForeignKeyViolationError as exc:
            raise _foreign_key_error(exc) from exc
        if row is None:
            raise Conflict(f"site {site.id!r} already exists", field="id")
        return site_from_row(row)

    async def delete_site(self, site_id: str) -> None:
        status = await self.conn.execute("DELETE FROM directory.site WHERE id = $1", site_id)
        if status == "DELETE 0":
            raise NotFound(f"no site {site_id!r}", field="id")
