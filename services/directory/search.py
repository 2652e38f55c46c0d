"""The staff search: active sites nearest to a point, as full provider and site records."""

from dataclasses import dataclass
from typing import Any

from contracts.directory import Provider, Site
from services.directory.site_query import SiteFilter, nearest_query
from services.directory.store import (
    PROVIDER_COLUMNS,
    SITE_COLUMNS,
    provider_from_row,
    site_from_row,
)
from services.geo import geodesic_km
from services.infra.db import Connection

_SELECT = (
    "SELECT {site}, {provider} FROM directory.site s"
    " JOIN directory.provider p ON p.id = s.provider_id"
).format(
    site=", ".join(f"s.{c.strip()}" for c in SITE_COLUMNS.split(",")),
    provider=", ".join(f"p.{c.strip()} AS p_{c.strip()}" for c in PROVIDER_COLUMNS.split(",")),
)


@dataclass(frozen=True)
class NearbySite:
    provider: Provider
    site: Site
    distance_km: float


def search_query(lat: float, lon: float, where: SiteFilter, limit: int) -> tuple[str, list[Any]]:
    """The search's SQL text and arguments (the benchmarks run it bare)."""
    return nearest_query(_SELECT, lat, lon, where, limit)


async def nearest_sites(
    conn: Connection, lat: float, lon: float, where: SiteFilter, limit: int
) -> list[NearbySite]:
    """Up to ``limit`` qualifying sites, nearest first by geodesic distance (ties by site id)."""
    sql, args = search_query(lat, lon, where, limit)
    found = []
    for row in await conn.fetch(sql, *args):
        distance = geodesic_km(lat, lon, row["lat"], row["lon"])
        if where.radius_km is None or distance <= where.radius_km:
            found.append(NearbySite(provider_from_row(row, "p_"), site_from_row(row), distance))
    found.sort(key=lambda hit: (hit.distance_km, hit.site.id))
    return found
