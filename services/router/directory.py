"""The router's ``Directory`` port on PostgreSQL, through the directory's one door for it
(``services.directory.candidates``), on the connection (and so in the transaction) the
handler uses. The only module of the router that imports the directory.
"""

from collections.abc import Sequence

from contracts.referrals import ReferralRequested
from services.directory import candidates
from services.infra.db import Connection
from services.router.matching import Candidate
from services.router.model import Point
from services.router.ports import NearbySite, Route

__all__ = ["SqlDirectory", "missing_directory_schema"]

#: The directory's migrations not applied on a database (the router cannot start without them).
missing_directory_schema = candidates.missing_schema


def _criteria(
    request: ReferralRequested, skip_sites: Sequence[str], only_provider: str | None = None
) -> candidates.Criteria:
    client = request.client
    return candidates.Criteria(
        needs=request.needs,
        language=client.language,
        accessibility=client.accessibility_needs,
        age=client.age,
        eligibility=client.eligibility,
        max_distance_km=request.max_distance_km,
        exclude_providers=request.exclude_provider_ids,
        exclude_sites=skip_sites,
        only_provider=only_provider,
    )


class SqlDirectory:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def suitable(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        only_provider: str | None = None,
        limit: int,
    ) -> list[Candidate]:
        criteria = _criteria(request, skip_sites, only_provider)
        return [
            Candidate(site.site_id, site.provider_id, site.distance_km, site.reserved)
            for site in await candidates.suitable_sites(self.conn, at.lat, at.lon, criteria, limit)
        ]

    async def excluded(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        within_km: float | None,
    ) -> dict[str, int]:
        criteria = _criteria(request, skip_sites)
        return await candidates.exclusions(self.conn, at.lat, at.lon, criteria, within_km=within_km)

    async def reserve(self, site_id: str) -> bool:
        return await candidates.reserve_place(self.conn, site_id)

    async def release(self, site_id: str) -> None:
        await candidates.release_place(self.conn, site_id)

    # -- a batch's set-based reads and writes (``batch.DirectoryRows``) ------------------------

    async def suitable_many(
        self, routes: Sequence[Route], limit: int, *, xid: int | None = None
    ) -> tuple[Sequence[Sequence[NearbySite]], bool | None]:
        asks = [(at.lat, at.lon, _criteria(request, skip)) for _, at, request, skip in routes]
        return await candidates.suitable_sites_many(self.conn, asks, limit, xid=xid)

    async def excluded_many(
        self, asks: Sequence[tuple[Route, float | None]], *, xid: int | None = None
    ) -> tuple[list[dict[str, int]], bool | None]:
        return await candidates.exclusions_many(
            self.conn,
            [
                (at.lat, at.lon, _criteria(request, skip), within)
                for (_, at, request, skip), within in asks
            ],
            xid=xid,
        )

    async def adjust_places(self, changes: dict[str, int]) -> set[str]:
        return await candidates.adjust_places(self.conn, changes)
