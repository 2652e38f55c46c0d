"""HTTP handlers of the directory: thin, typed by contracts; the work is in store and placement."""

import asyncio
import datetime
from typing import Annotated, get_args

import msgspec
from litestar import Controller, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import Body, FromQuery, PathParameter, QueryParameter

from contracts.common import AccessibilityCode, Language, ServiceCode, Slug
from contracts.directory import (
    Communities,
    NearestSites,
    Origin,
    Provider,
    ProviderCreate,
    ProviderPage,
    ProviderPatch,
    Site,
    SiteCreate,
    SiteMatch,
    SitePage,
    SitePatch,
    Taxonomy,
)
from services.access.auth import PUBLIC
from services.access.principal import Principal
from services.directory import openapi
from services.directory.auth import require_owner, writers
from services.directory.errors import InvalidInput
from services.directory.placement import patch_site, place_site
from services.directory.search import nearest_sites
from services.directory.site_query import SiteFilter
from services.directory.store import DirectoryStore
from services.geo import Gazetteer

Limit = Annotated[int, QueryParameter(ge=1, le=100, description="page size (at most 100)")]
Offset = Annotated[int, QueryParameter(ge=0, le=1_000_000)]
#: The contracts' slug, so an id in a path or query is checked before any lookup. (Litestar
#: reads a parameter's constraints from its QueryParameter/PathParameter, not from msgspec.Meta.)
_SLUG: msgspec.Meta = get_args(Slug)[1]
_ID = {"pattern": _SLUG.pattern, "max_length": _SLUG.max_length}
ProviderId = Annotated[str, PathParameter(**_ID, examples=openapi.PROVIDER_ID)]
SiteId = Annotated[str, PathParameter(**_ID, examples=openapi.SITE_ID)]
QueryId = Annotated[str | None, QueryParameter(**_ID)]
Store = NamedDependency[DirectoryStore]
Caller = NamedDependency[Principal]
#: Reads need any valid token (BearerAuth, for every route not marked PUBLIC); writes, this guard.
WRITERS = [writers]


def resolve_origin(
    gazetteer: Gazetteer,
    lat: float | None,
    lon: float | None,
    postal_code: str | None,
    community: str | None,
) -> Origin:
    """Exactly one origin: lat+lon, a postal code or a community name."""
    if (lat is None) != (lon is None):
        missing = "lon" if lon is None else "lat"
        raise InvalidInput("lat and lon must be given together", field=missing)
    given = [name for name, value in [("lat", lat), ("postal_code", postal_code),
                                      ("community", community)] if value is not None]  # fmt: skip
    if len(given) != 1:
        raise InvalidInput(
            "give exactly one origin: lat and lon, postal_code, or community",
            field="postal_code" if not given else given[1],
        )
    if lat is not None and lon is not None:
        return gazetteer.resolve_point(lat, lon)
    if postal_code is not None:
        return gazetteer.resolve_postal_code(postal_code)
    assert community is not None
    return gazetteer.resolve_community(community)


@get("/api/v1/sites/nearest", tags=["search"], opt=PUBLIC, responses=openapi.PUBLIC_READ)
async def search(
    state: State,
    gazetteer: NamedDependency[Gazetteer],
    lat: Annotated[float | None, QueryParameter(ge=-90, le=90)] = None,
    lon: Annotated[float | None, QueryParameter(ge=-180, le=180)] = None,
    postal_code: Annotated[str | None, QueryParameter(max_length=10)] = None,
    community: Annotated[
        str | None, QueryParameter(min_length=1, max_length=100, examples=openapi.COMMUNITY)
    ] = None,
    service: Annotated[list[ServiceCode] | None, QueryParameter(max_items=16)] = None,
    language: FromQuery[Language | None] = None,
    accessibility: Annotated[list[AccessibilityCode] | None, QueryParameter(max_items=6)] = None,
    accepting: FromQuery[bool | None] = None,
    radius_km: Annotated[float | None, QueryParameter(gt=0, le=5000)] = None,
    limit: Limit = 10,
) -> NearestSites:
    """Active sites nearest to an origin (lat+lon, postal_code or community), nearest first.

    Filters: every ``service`` offered, the ``language`` of service, every ``accessibility``
    code met, ``accepting`` referrals with a place left, within ``radius_km`` (no radius by
    default). Each result carries its geodesic ``distance_km``.

    Public, like the taxonomy: the public office-finder page searches without a token.
    """
    origin = resolve_origin(gazetteer, lat, lon, postal_code, community)
    where = SiteFilter(
        services=service or (),
        language=language,
        accessibility=accessibility or (),
        accepting=bool(accepting),
        radius_km=radius_km,
    )
    # The connection is taken here rather than through the ``store`` dependency: with two
    # dependencies Litestar resolves them in an anyio task group, per request.
    async with state.pool.acquire() as conn:
        hits = await nearest_sites(conn, origin.lat, origin.lon, where, limit)
    return NearestSites(
        origin=origin,
        results=[
            SiteMatch(provider=hit.provider, site=hit.site, distance_km=round(hit.distance_km, 3))
            for hit in hits
        ],
    )


@get("/api/v1/communities", tags=["search"], opt=PUBLIC, responses=openapi.PUBLIC_READ)
async def communities(
    gazetteer: NamedDependency[Gazetteer],
    prefix: Annotated[str, QueryParameter(min_length=1, max_length=100)],
    limit: Annotated[int, QueryParameter(ge=1, le=25)] = 10,
) -> Communities:
    """Community names starting with ``prefix`` (accents and case ignored), most populous
    first: the suggestions of the office finder's community field. Public, like the search.
    """
    return Communities(communities=gazetteer.suggest(prefix, limit))


@get("/api/v1/taxonomy", tags=["taxonomy"], opt=PUBLIC, responses=openapi.PUBLIC_READ)
async def taxonomy(store: Store) -> Taxonomy:
    """Service and accessibility codes with English and French names, the catchments, and the
    outcome and reason codes of progress reports (DESIGN.md section 3c)."""
    return await store.taxonomy()


class ProviderController(Controller):
    path = "/api/v1/providers"
    tags = ["providers"]

    @get(security=openapi.BEARER, responses=openapi.READ)
    async def list_providers(
        self, store: Store, limit: Limit = 50, offset: Offset = 0
    ) -> ProviderPage:
        return await store.list_providers(limit=limit, offset=offset)

    @get("/{provider_id:str}", security=openapi.BEARER, responses=openapi.READ_ONE)
    async def get_provider(self, store: Store, provider_id: ProviderId) -> Provider:
        return await store.get_provider(provider_id)

    @post(guards=WRITERS, security=openapi.BEARER, responses=openapi.CREATE)
    async def create_provider(
        self,
        store: Store,
        caller: Caller,
        data: Annotated[ProviderCreate, Body(examples=openapi.NEW_PROVIDER)],
    ) -> Provider:
        require_owner(caller, data.id, field="$.id")
        return await store.upsert_provider(data, create_only=True)

    @put("/{provider_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.REPLACE)
    async def replace_provider(
        self,
        store: Store,
        provider_id: ProviderId,
        data: Annotated[ProviderCreate, Body(examples=openapi.SAME_PROVIDER)],
    ) -> Provider:
        if data.id != provider_id:
            raise InvalidInput("the body's id must match the path", field="$.id")
        return await store.upsert_provider(data)

    @patch("/{provider_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.PATCH)
    async def patch_provider(
        self,
        store: Store,
        provider_id: ProviderId,
        data: Annotated[ProviderPatch, Body(examples=openapi.PROVIDER_CHANGES)],
    ) -> Provider:
        return await store.patch_provider(provider_id, data)

    @delete("/{provider_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.DELETE)
    async def delete_provider(self, store: Store, provider_id: ProviderId) -> None:
        await store.delete_provider(provider_id)


class SiteController(Controller):
    """The guard checks the site in the path; each write checks the provider its body names."""

    path = "/api/v1/sites"
    tags = ["sites"]

    @get(security=openapi.BEARER, responses=openapi.READ)
    async def list_sites(
        self, store: Store, provider_id: QueryId = None, limit: Limit = 50, offset: Offset = 0
    ) -> SitePage:
        return await store.list_sites(limit=limit, offset=offset, provider_id=provider_id)

    @get("/{site_id:str}", security=openapi.BEARER, responses=openapi.READ_ONE)
    async def get_site(self, store: Store, site_id: SiteId) -> Site:
        return await store.get_site(site_id)

    @post(guards=WRITERS, security=openapi.BEARER, responses=openapi.CREATE)
    async def create_site(
        self,
        store: Store,
        caller: Caller,
        state: State,
        data: Annotated[SiteCreate, Body(examples=openapi.NEW_SITE)],
    ) -> Site:
        require_owner(caller, data.provider_id, field="$.provider_id")
        placed = await asyncio.to_thread(place_site, data, state.geocoder)
        return await store.upsert_site(placed, verified=datetime.date.today(), create_only=True)

    @put("/{site_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.REPLACE)
    async def replace_site(
        self,
        store: Store,
        caller: Caller,
        state: State,
        site_id: SiteId,
        data: Annotated[SiteCreate, Body(examples=openapi.SAME_SITE)],
    ) -> Site:
        if data.id != site_id:
            raise InvalidInput("the body's id must match the path", field="$.id")
        require_owner(caller, data.provider_id, field="$.provider_id")
        placed = await asyncio.to_thread(place_site, data, state.geocoder)
        return await store.upsert_site(placed, verified=datetime.date.today())

    @patch("/{site_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.PATCH)
    async def patch_site(
        self,
        store: Store,
        caller: Caller,
        state: State,
        site_id: SiteId,
        data: Annotated[SitePatch, Body(examples=openapi.SITE_CHANGES)],
    ) -> Site:
        def owned(site: SiteCreate) -> None:
            require_owner(caller, site.provider_id, field="$.provider_id")

        return await patch_site(store, site_id, data, state.geocoder, check=owned)

    @delete("/{site_id:str}", guards=WRITERS, security=openapi.BEARER, responses=openapi.DELETE)
    async def delete_site(self, store: Store, site_id: SiteId) -> None:
        await store.delete_site(site_id)
