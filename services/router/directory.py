"""The router's ``Directory`` port on PostgreSQL: the directory's candidates query and capacity
functions, run on the connection (and so in the transaction) the handler uses.
"""

from services.directory.candidates import (
    SiteFilter,
    exclusions,
    nearest_sites,
    release_place,
    reserve_place,
)
from services.infra.db import Connection
from services.router.matching import Candidate


class SqlDirectory:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def suitable(
        self, lat: float, lon: float, where: SiteFilter, limit: int
    ) -> list[Candidate]:
        return [
            Candidate(hit.site.id, hit.provider.id, hit.distance_km, hit.site.reserved)
            for hit in await nearest_sites(self.conn, lat, lon, where, limit)
        ]

    async def excluded(
        self, lat: float, lon: float, where: SiteFilter, within_km: float | None
    ) -> dict[str, int]:
        return await exclusions(self.conn, lat, lon, where, within_km=within_km)

    async def reserve(self, site_id: str) -> bool:
        return await reserve_place(self.conn, site_id)

    async def release(self, site_id: str) -> None:
        await release_place(self.conn, site_id)
