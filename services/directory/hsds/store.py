"""SQL of the HSDS API profile (``/hsds``): its lists, filtered and paged in SQL, and its
lookups by HSDS id.

Ids are uuid5 of our keys, which SQL cannot invert, so a lookup by HSDS id hashes the
candidate keys (a scan of ids: fine for a real EO directory of a few thousand sites). Rows
come back as contract structs; shaping them into HSDS objects is ``mapping``'s job.
"""

import datetime
from dataclasses import dataclass

from contracts.directory import Provider, Site, Taxonomy
from services.directory.hsds import mapping as m
from services.directory.store import (
    PROVIDER_COLUMNS,
    SITE_COLUMNS,
    DirectoryStore,
    provider_from_row,
    site_from_row,
)
from services.infra.db import Connection


@dataclass(frozen=True)
class HsdsFilter:
    """The filters the HSDS lists share. Every field narrows; None admits everything."""

    #: A provider's slug; ``""`` (an unknown organization) matches nothing.
    provider_id: str | None = None
    #: An EO service code; ``""`` (an unknown taxonomy term) matches nothing.
    code: str | None = None
    #: Text to find (case-insensitive, taken literally: ``%`` and ``_`` are no wildcards).
    search: str | None = None
    modified_after: datetime.datetime | None = None

    def args(self) -> tuple[object, ...]:
        """$1 to $4 of the list queries."""
        return (self.provider_id, self.code, _like(self.search), self.modified_after)


@dataclass(frozen=True)
class OfferedService:
    """An HSDS service: an EO service code one provider offers at one site or more."""

    provider: Provider
    code: str
    #: Offered at one active site or more.
    active: bool
    #: The later of the provider's and its sites' last changes.
    last_modified: datetime.datetime


def _like(search: str | None) -> str | None:
    if search is None:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


#: Services (provider, code) with the HsdsFilter as $1 to $4.
_SERVICE_FROM = """
    FROM (SELECT s.provider_id, u.code, bool_or(s.active) AS offered_active,
                 max(s.updated_at) AS sites_updated
            FROM directory.site s CROSS JOIN LATERAL unnest(s.services) AS u(code)
           WHERE ($1::text IS NULL OR s.provider_id = $1) AND ($2::text IS NULL OR u.code = $2)
           GROUP BY s.provider_id, u.code) svc
    JOIN directory.provider p ON p.id = svc.provider_id
    LEFT JOIN directory.taxonomy_term t ON t.code = svc.code
   WHERE ($3::text IS NULL OR p.name ILIKE $3 OR t.name_en ILIKE $3 OR t.name_fr ILIKE $3
          OR svc.code ILIKE $3)
     AND ($4::timestamptz IS NULL OR greatest(p.updated_at, svc.sites_updated) >= $4)
"""

#: (site, code) pairs with the HsdsFilter as $1 to $4, and $5, $6 (lat, lon) and $7 (metres)
#: for "within $7 metres of the point".
_SAL_FROM = """
    FROM directory.site s
    CROSS JOIN LATERAL unnest(s.services) WITH ORDINALITY AS u(code, n)
    JOIN directory.provider p ON p.id = s.provider_id
    LEFT JOIN directory.taxonomy_term t ON t.code = u.code
   WHERE ($1::text IS NULL OR s.provider_id = $1) AND ($2::text IS NULL OR u.code = $2)
     AND ($3::text IS NULL OR s.name ILIKE $3 OR s.city ILIKE $3 OR p.name ILIKE $3
          OR t.name_en ILIKE $3 OR t.name_fr ILIKE $3 OR u.code ILIKE $3)
     AND ($4::timestamptz IS NULL OR greatest(p.updated_at, s.updated_at) >= $4)
     AND ($7::float8 IS NULL OR (earth_box(ll_to_earth($5, $6), $7) @> s.earth_point
          AND earth_distance(ll_to_earth($5, $6), s.earth_point) <= $7))
"""

_ORGANIZATION_WHERE = (
    "$1::text IS NULL OR name ILIKE $1 OR alternate_name ILIKE $1 OR description ILIKE $1"
)


class HsdsStore:
    """The directory's tables as the HSDS API reads them, through one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def taxonomy(self) -> Taxonomy:
        return await DirectoryStore(self.conn).taxonomy()

    # lookups by HSDS id ------------------------------------------------------------------
    async def provider_of(self, organization_id: str | None) -> str | None:
        """The slug of an HSDS organization id; an unknown id matches nothing (``""``)."""
        if organization_id is None:
            return None
        rows = await self.conn.fetch("SELECT id FROM directory.provider")
        found = (row["id"] for row in rows if m.organization_id(row["id"]) == organization_id)
        return next(found, "")

    async def organization(self, organization_id: str) -> Provider | None:
        """The provider an HSDS organization id names, if any."""
        slug = await self.provider_of(organization_id)
        providers = await self._providers([slug or ""])
        return providers.get(slug) if slug else None

    async def find_service(self, service_id: str) -> tuple[str, str] | None:
        """(provider slug, service code) of an HSDS service id, if any."""
        rows = await self.conn.fetch(
            "SELECT DISTINCT provider_id, unnest(services) AS code FROM directory.site"
        )
        for row in rows:
            if m.service_id(row["provider_id"], row["code"]) == service_id:
                return row["provider_id"], row["code"]
        return None

    async def find_service_at_location(self, sal_id: str) -> tuple[Site, str] | None:
        """(site, service code) of an HSDS service_at_location id, if any."""
        rows = await self.conn.fetch("SELECT id, services FROM directory.site")
        match = next(
            ((row["id"], code) for row in rows for code in row["services"]
             if m.service_at_location_id(row["id"], code) == sal_id),
            None,
        )  # fmt: skip
        if match is None:
            return None
        site = (await self._sites("id = $1", match[0]))[0]
        return site, match[1]

    # lists -------------------------------------------------------------------------------
    async def organizations(
        self, search: str | None, *, limit: int, offset: int
    ) -> tuple[int, list[Provider]]:
        """How many providers match ``search``, and a page of them by id."""
        total: int = await self.conn.fetchval(
            f"SELECT count(*) FROM directory.provider WHERE {_ORGANIZATION_WHERE}", _like(search)
        )
        rows = await self.conn.fetch(
            f"SELECT {PROVIDER_COLUMNS} FROM directory.provider WHERE {_ORGANIZATION_WHERE}"
            " ORDER BY id LIMIT $2 OFFSET $3",
            _like(search),
            limit,
            offset,
        )
        return total, [provider_from_row(row) for row in rows]

    async def services(
        self, where: HsdsFilter, *, limit: int | None = None, offset: int = 0
    ) -> tuple[int, list[OfferedService]]:
        """How many services match, and a page of them by provider and code (all: no limit)."""
        args = where.args()
        total: int = await self.conn.fetchval(f"SELECT count(*) {_SERVICE_FROM}", *args)
        rows = await self.conn.fetch(
            "SELECT svc.provider_id, svc.code, svc.offered_active,"
            f" greatest(p.updated_at, svc.sites_updated) AS modified {_SERVICE_FROM}"
            " ORDER BY svc.provider_id, svc.code LIMIT $5 OFFSET $6",
            *args,
            limit,
            offset,
        )
        providers = await self._providers(sorted({row["provider_id"] for row in rows}))
        return total, [
            OfferedService(
                provider=providers[row["provider_id"]],
                code=row["code"],
                active=row["offered_active"],
                last_modified=row["modified"],
            )
            for row in rows
        ]

    async def service_at_locations(
        self,
        where: HsdsFilter,
        *,
        near: tuple[float, float] | None = None,
        within_m: float | None = None,
        limit: int,
        offset: int,
    ) -> tuple[int, list[tuple[Site, str]]]:
        """How many (site, code) pairs match, and a page of them: nearest ``near`` (lat, lon)
        first, else by site and the site's order of codes; ``within_m`` metres of it only."""
        lat, lon = near if near is not None else (None, None)
        args = (*where.args(), lat, lon, within_m)
        total: int = await self.conn.fetchval(f"SELECT count(*) {_SAL_FROM}", *args)
        rows = await self.conn.fetch(
            f"SELECT s.id, u.code {_SAL_FROM} ORDER BY CASE WHEN $5::float8 IS NULL THEN 0"
            " ELSE earth_distance(ll_to_earth($5, $6), s.earth_point) END, s.id, u.n"
            " LIMIT $8 OFFSET $9",
            *args,
            limit,
            offset,
        )
        sites = {s.id: s for s in await self._sites("id = ANY($1)", [row["id"] for row in rows])}
        return total, [(sites[row["id"]], row["code"]) for row in rows]

    async def sites_of(self, provider_id: str, code: str | None = None) -> list[Site]:
        """A provider's sites by id; with ``code``, those offering that service."""
        if code is None:
            return await self._sites("provider_id = $1", provider_id)
        return await self._sites("provider_id = $1 AND $2 = ANY(services)", provider_id, code)

    # ---------------------------------------------------------------------------------------
    async def _providers(self, ids: list[str]) -> dict[str, Provider]:
        rows = await self.conn.fetch(
            f"SELECT {PROVIDER_COLUMNS} FROM directory.provider WHERE id = ANY($1)", ids
        )
        return {row["id"]: provider_from_row(row) for row in rows}

    async def _sites(self, where: str, *args: object) -> list[Site]:
        rows = await self.conn.fetch(
            f"SELECT {SITE_COLUMNS} FROM directory.site WHERE {where} ORDER BY id", *args
        )
        return [site_from_row(row) for row in rows]
