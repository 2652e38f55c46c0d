"""The router's one door into the directory (DESIGN.md section 2): the sites suitable for a
referral near a point, how many sites each rule excluded, and taking or giving back a place.

Every function runs on the connection it is given, so inside the router's transaction: a match
and its capacity reservation commit together. Rows are slim (ids, distance, places in use and
capacity), not the HTTP records. The router imports nothing else from the directory.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from services.directory.schema import missing_schema
from services.directory.site_query import (
    SiteFilter,
    batch_criteria,
    batch_exclusions_query,
    batch_nearest_query,
    exclusions_query,
    nearer_than_m,
    nearest_query,
    sphere_m,
)
from services.geo import geodesic_km
from services.infra.db import Connection

__all__ = [
    "CandidateSite",
    "Criteria",
    "Seen",
    "adjust_places",
    "counted_as_nearer",
    "exclusions",
    "exclusions_many",
    "missing_schema",
    "provider_name",
    "release_place",
    "reserve_place",
    "site_names",
    "suitable_query",
    "suitable_sites",
    "suitable_sites_many",
]

_SELECT = (
    "SELECT s.id, s.provider_id, s.lat, s.lon, s.reserved, s.capacity FROM directory.site s"
    " JOIN directory.provider p ON p.id = s.provider_id"
)

#: How many of the nearest sites the exclusion counts look at: bounded, so explaining a choice
#: costs the same in a directory of 500 sites or of 1,000,000. When a site was chosen only the
#: sites nearer than it count, and a few hundred nearest cover them in all but the densest spots.
EXCLUSION_SCAN = 1000
EXCLUSION_SCAN_CHOSEN = 200


@dataclass(frozen=True)
class Criteria:
    """What a referral asks of a site: every rule of DESIGN.md section 4 that the data decides."""

    needs: Sequence[str]
    language: str
    accessibility: Sequence[str] = ()
    age: int | None = None
    eligibility: Sequence[str] = ()
    max_distance_km: float | None = None
    exclude_providers: Sequence[str] = ()
    #: Sites already offered this referral (or whose last place just went elsewhere).
    exclude_sites: Sequence[str] = ()
    #: Only this provider's sites (the look for a referral's preferred provider).
    only_provider: str | None = None

    def site_filter(self) -> SiteFilter:
        return SiteFilter(
            services=self.needs,
            language=self.language,
            accessibility=self.accessibility,
            accepting=True,
            radius_km=self.max_distance_km,
            age=self.age,
            eligibility=self.eligibility,
            exclude_providers=self.exclude_providers,
            exclude_sites=self.exclude_sites,
            provider=self.only_provider,
        )


@dataclass(frozen=True)
class CandidateSite:
    site_id: str
    provider_id: str
    #: Geodesic (WGS84) distance from the client, in kilometres.
    distance_km: float
    #: Places in use (open offers and referrals held) and places in all.
    reserved: int
    capacity: int
    #: Where the site is (the batch path measures as the exclusion counts do).
    lat: float = 0.0
    lon: float = 0.0


def suitable_query(lat: float, lon: float, criteria: Criteria, limit: int) -> tuple[str, list[Any]]:
    """The candidates query's SQL text and arguments (the benchmarks' floor runs it bare)."""
    return nearest_query(_SELECT, lat, lon, criteria.site_filter(), limit)


async def suitable_sites(
    conn: Connection, lat: float, lon: float, criteria: Criteria, limit: int
) -> list[CandidateSite]:
    """Up to ``limit`` sites suitable for the referral, nearest first by geodesic distance
    (ties by site id)."""
    sql, args = suitable_query(lat, lon, criteria, limit)
    found = []
    for row in await conn.fetch(sql, *args):
        distance = geodesic_km(lat, lon, row["lat"], row["lon"])
        if criteria.max_distance_km is None or distance <= criteria.max_distance_km:
            found.append(
                CandidateSite(
                    row["id"],
                    row["provider_id"],
                    distance,
                    row["reserved"],
                    row["capacity"],
                    row["lat"],
                    row["lon"],
                )
            )
    found.sort(key=lambda hit: (hit.distance_km, hit.site_id))
    return found


async def exclusions(
    conn: Connection,
    lat: float,
    lon: float,
    criteria: Criteria,
    *,
    within_km: float | None = None,
    scan: int | None = None,
) -> dict[str, int]:
    """How many sites each rule excluded: among the ``scan`` nearest sites, those nearer than
    ``within_km`` (the chosen site's distance; None when no site was suitable).
    """
    if scan is None:
        scan = EXCLUSION_SCAN if within_km is None else EXCLUSION_SCAN_CHOSEN
    sql, args = exclusions_query(lat, lon, criteria.site_filter(), within_km=within_km, scan=scan)
    return {row["rule"]: row["n"] for row in await conn.fetch(sql, *args)}


#: The batch candidates query's columns, and its SQL (one statement for many origins).
_BATCH_COLUMNS = "s.id, s.provider_id, s.lat, s.lon, s.reserved, s.capacity"
_BATCH_NEAREST = batch_nearest_query(_BATCH_COLUMNS)
_BATCH_EXCLUSIONS = batch_exclusions_query()

#: One origin of a batch: a point and what the referral asks of a site.
Ask = tuple[float, float, Criteria]


def _found(lat: float, lon: float, rows: Sequence[Any]) -> list[CandidateSite]:
    # Rows of _BATCH_NEAREST: ord, then _BATCH_COLUMNS in order (by position: a thousand rows
    # a batch).
    return [
        CandidateSite(
            row[1], row[2], geodesic_km(lat, lon, row[3], row[4]), row[5], row[6], row[3], row[4]
        )
        for row in rows
    ]


async def _index_scans(conn: Connection) -> None:
    """Plan the rest of the transaction with index scans: for the batch queries' KNN scans the
    planner cannot see how many sites the per-origin rules let through (arrays in JSON), so in
    a small directory it scanned and sorted every site for each origin rather than walk the
    GiST index until enough qualify (72 ms instead of 12 for 100 origins at 500 sites). Only
    inside a transaction (the router's batch)."""
    await conn.execute("SET LOCAL enable_seqscan = off")


#: Whether another transaction's changes are in what a statement read: the transaction asked
#: about (``xid``) had committed when it began; None when not asked, or nothing was read.
Seen = bool | None


async def suitable_sites_many(
    conn: Connection, asks: Sequence[Ask], limit: int, *, xid: int | None = None
) -> tuple[list[list[CandidateSite]], Seen]:
    """For each of ``asks`` (no ``max_distance_km``: ask those alone), up to ``limit`` suitable
    sites in one statement, in the database's order (nearest on the sphere first), with their
    geodesic distance: ``suitable_sites`` for many referrals at once. And whether the
    transaction ``xid`` had committed when they were read (its places counted in or not)."""
    if not asks:
        return [], None
    origins = [batch_criteria(lat, lon, c.site_filter()) for lat, lon, c in asks]
    await _index_scans(conn)
    rows: dict[int, list[Any]] = {}
    seen: Seen = None
    for row in await conn.fetch(_BATCH_NEAREST, msgspec.json.encode(origins).decode(), limit, xid):
        rows.setdefault(row["ord"], []).append(row)
        seen = row["seen"]
    found = [_found(lat, lon, rows.get(n, [])) for n, (lat, lon, _) in enumerate(asks, start=1)]
    return found, seen


async def exclusions_many(
    conn: Connection,
    asks: Sequence[tuple[float, float, Criteria, float | None]],
    *,
    xid: int | None = None,
) -> tuple[list[dict[str, int]], Seen]:
    """``exclusions`` for many (lat, lon, criteria, within_km) in one statement, and whether
    the transaction ``xid`` had committed when they were counted."""
    if not asks:
        return [], None
    origins = [
        batch_criteria(
            lat,
            lon,
            c.site_filter(),
            within_km=within,
            scan=EXCLUSION_SCAN if within is None else EXCLUSION_SCAN_CHOSEN,
        )
        for lat, lon, c, within in asks
    ]
    counts: list[dict[str, int]] = [{} for _ in asks]
    await _index_scans(conn)
    seen: Seen = None
    for row in await conn.fetch(_BATCH_EXCLUSIONS, msgspec.json.encode(origins).decode(), xid):
        counts[row["ord"] - 1][row["rule"]] = row["n"]
        seen = row["seen"]
    return counts, seen


async def adjust_places(conn: Connection, changes: Mapping[str, int]) -> set[str]:
    """Take (positive) or give back (negative) places at many sites in one statement; the
    sites where the places asked for were not all free (nothing changed there).

    ``reserve_place`` and ``release_place`` for a batch: a site is never over-committed, and
    the rows are locked in site id order, so two batches cannot deadlock on them.
    """
    changes = {site: n for site, n in changes.items() if n}
    if not changes:
        return set()
    ids = sorted(changes)
    taken = await conn.fetch(
        "WITH locked AS (SELECT id FROM directory.site WHERE id = ANY($1::text[])"
        " ORDER BY id FOR UPDATE)"
        " UPDATE directory.site s SET reserved = greatest(s.reserved + t.n, 0)"
        " FROM unnest($1::text[], $2::integer[]) AS t(id, n), locked"
        " WHERE s.id = t.id AND locked.id = t.id AND (t.n < 0"
        " OR (s.active AND s.accepting_referrals AND s.reserved + t.n <= s.capacity))"
        " RETURNING s.id",
        ids,
        [changes[site] for site in ids],
    )
    done = {row["id"] for row in taken}
    return {site for site in ids if changes[site] > 0 and site not in done}


def counted_as_nearer(
    lat: float, lon: float, site_lat: float, site_lon: float, within_km: float | None
) -> bool:
    """Whether ``exclusions`` (within ``within_km``; None: all) counts a site at (site_lat,
    site_lon) for a referral at (lat, lon): the same sphere and the same slack as its SQL."""
    return within_km is None or sphere_m(lat, lon, site_lat, site_lon) < nearer_than_m(within_km)


async def reserve_place(conn: Connection, site_id: str) -> bool:
    """Take one of the site's places for a referral; False when it has none left.

    One conditional UPDATE: PostgreSQL's row lock makes concurrent reservers (several router
    replicas) wait for each other, so a site is never over-committed. Call it inside the
    transaction that records the offer, so both commit or neither does.
    """
    taken = await conn.fetchval(
        "UPDATE directory.site SET reserved = reserved + 1"
        " WHERE id = $1 AND active AND accepting_referrals AND reserved < capacity"
        " RETURNING reserved",
        site_id,
    )
    return taken is not None


async def release_place(conn: Connection, site_id: str) -> None:
    """Give back a place taken by ``reserve_place`` (declined, expired or cancelled offer)."""
    await conn.execute(
        "UPDATE directory.site SET reserved = greatest(reserved - 1, 0) WHERE id = $1", site_id
    )


async def site_names(conn: Connection, site_ids: Sequence[str]) -> dict[str, str]:
    """The names of these sites, by id (the router's pages show them beside the ids)."""
    rows = await conn.fetch(
        "SELECT id, name FROM directory.site WHERE id = ANY($1::text[])", list(set(site_ids))
    )
    return {row["id"]: row["name"] for row in rows}


async def provider_name(conn: Connection, provider_id: str) -> str | None:
    """A provider's name, or None when there is no such provider."""
    name: str | None = await conn.fetchval(
        "SELECT name FROM directory.provider WHERE id = $1", provider_id
    )
    return name
