"""The HSDS 3.0 API profile under ``/hsds``: public reads of the directory as HSDS objects.

Lists are paged as the spec's ``Page`` (``page`` from 1, ``per_page`` up to 100) and filtered
in SQL; detail endpoints find a record by its HSDS id. The handlers parse the parameters, ask
``HsdsStore`` (the SQL, in ``store.py``) and shape its answer with ``mapping``.
"""

import datetime
import math
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.params import PathParameter, QueryParameter
from litestar.response import File

from contracts.directory import Taxonomy, TaxonomyTerm
from services.access.auth import PUBLIC
from services.directory.errors import InvalidInput, NotFound
from services.directory.hsds import SCHEMA_DIR, mapping as m
from services.directory.hsds.store import HsdsFilter, HsdsStore, OfferedService
from services.directory.store import DirectoryStore
from services.geo import Gazetteer

Obj = dict[str, Any]
Page = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="page number, from 1")]
PerPage = Annotated[int, QueryParameter(ge=1, le=100, description="page size (at most 100)")]
Search = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]
HsdsId = Annotated[str | None, QueryParameter(max_length=100)]
PathId = Annotated[str, PathParameter(max_length=100, description="an HSDS id (uuid)")]
ModifiedAfter = Annotated[datetime.datetime | None, QueryParameter()]
Hsds = NamedDependency[HsdsStore]
HSDS_VERSION = "3.0"
PROFILE = "https://github.com/openreferral/specification/tree/3.0"
TAGS = ["hsds"]


def provide_hsds_store(store: NamedDependency[DirectoryStore]) -> HsdsStore:
    """The HSDS reads, on the connection the app's ``store`` dependency holds for the request."""
    return HsdsStore(store.conn)


def paged(contents: list[Obj], total: int, page: int, per_page: int) -> Obj:
    """The HSDS ``Page`` envelope."""
    pages = math.ceil(total / per_page)
    return {
        "total_items": total,
        "total_pages": pages,
        "page_number": page,
        "size": len(contents),
        "first_page": page == 1,
        "last_page": page >= pages,
        "empty": total == 0,
        "contents": contents,
    }


def _since(moment: datetime.datetime | None) -> datetime.datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment


def _code_of(vocabulary: Taxonomy, taxonomy_term_id: str | None) -> str | None:
    """The service code of a term id (either language); an unknown id matches nothing."""
    if taxonomy_term_id is None:
        return None
    for term in vocabulary.services:
        if taxonomy_term_id in (m.term_id(term.taxonomy, term.code, lang) for lang in ("en", "fr")):
            return term.code
    return ""


@get("/", opt=PUBLIC, tags=TAGS)
async def base(request: Request[Any, Any, State]) -> Obj:
    """The API's version, profile and OpenAPI document (the spec's ``GET /``)."""
    return {
        "version": HSDS_VERSION,
        "profile": PROFILE,
        "openapi_url": str(request.url_for("hsds_openapi")),
    }


@get("/openapi.json", opt=PUBLIC, tags=TAGS, name="hsds_openapi", media_type="application/json")
async def openapi_document() -> File:
    """The official HSDS 3.0 OpenAPI description (CC BY-SA 4.0, see data/PROVENANCE.md)."""
    path: Path = SCHEMA_DIR / "openapi.json"
    return File(path, content_disposition_type="inline", media_type="application/json")


def _service(offered: OfferedService, vocabulary: dict[tuple[str, str], TaxonomyTerm]) -> Obj:
    return m.service(
        offered.provider,
        offered.code,
        vocabulary.get((m.SERVICE_TAXONOMY, offered.code)),
        active=offered.active,
        last_modified=offered.last_modified,
    )


async def _filter(
    hsds: HsdsStore,
    vocabulary: Taxonomy,
    search: str | None,
    taxonomy_term_id: str | None,
    organization_id: str | None,
    modified_after: datetime.datetime | None,
) -> HsdsFilter:
    return HsdsFilter(
        provider_id=await hsds.provider_of(organization_id),
        code=_code_of(vocabulary, taxonomy_term_id),
        search=search,
        modified_after=_since(modified_after),
    )


@get("/services", opt=PUBLIC, tags=TAGS)
async def list_services(
    hsds: Hsds,
    search: Search = None,
    taxonomy_term_id: HsdsId = None,
    organization_id: HsdsId = None,
    modified_after: ModifiedAfter = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Obj:
    """Services (one per provider and EO service code), by provider and code."""
    vocabulary = await hsds.taxonomy()
    where = await _filter(
        hsds, vocabulary, search, taxonomy_term_id, organization_id, modified_after
    )
    total, found = await hsds.services(where, limit=per_page, offset=(page - 1) * per_page)
    names = m.names(vocabulary)
    return paged([m.one_to_one(_service(s, names)) for s in found], total, page, per_page)


@get("/services/{service_id:str}", opt=PUBLIC, tags=TAGS)
async def get_service(hsds: Hsds, service_id: PathId) -> Obj:
    """One service, fully nested: organization, and each location it is offered at."""
    key = await hsds.find_service(service_id)
    if key is None:
        raise NotFound(f"no service {service_id!r}", field="id")
    provider_id, code = key
    _, found = await hsds.services(HsdsFilter(provider_id=provider_id, code=code), limit=1)
    sites = await hsds.sites_of(provider_id, code)
    vocabulary = m.names(await hsds.taxonomy())
    return _service(found[0], vocabulary) | {
        "organization": m.one_to_one(m.organization(found[0].provider)),
        "service_at_locations": [
            m.service_at_location(site, code) | {"location": m.location(site, vocabulary)}
            for site in sites
        ],
    }


@get("/organizations", opt=PUBLIC, tags=TAGS)
async def list_organizations(
    hsds: Hsds, search: Search = None, page: Page = 1, per_page: PerPage = 50
) -> Obj:
    """Organizations (providers), by id."""
    total, found = await hsds.organizations(search, limit=per_page, offset=(page - 1) * per_page)
    contents = [m.one_to_one(m.organization(provider)) for provider in found]
    return paged(contents, total, page, per_page)


@get("/organizations/{organization_id:str}", opt=PUBLIC, tags=TAGS)
async def get_organization(hsds: Hsds, organization_id: PathId) -> Obj:
    """One organization with its phones, identifiers, locations and (brief) services."""
    provider = await hsds.organization(organization_id)
    if provider is None:
        raise NotFound(f"no organization {organization_id!r}", field="id")
    sites = await hsds.sites_of(provider.id)
    _, services = await hsds.services(HsdsFilter(provider_id=provider.id))
    vocabulary = m.names(await hsds.taxonomy())
    return m.organization(provider) | {
        "locations": [m.location(site, vocabulary) for site in sites],
        "services": [m.one_to_one(_service(s, vocabulary)) for s in services],
    }


@get("/service_at_locations", opt=PUBLIC, tags=TAGS)
async def list_service_at_locations(
    hsds: Hsds,
    gazetteer: NamedDependency[Gazetteer],
    search: Search = None,
    taxonomy_term_id: HsdsId = None,
    organization_id: HsdsId = None,
    modified_after: ModifiedAfter = None,
    postcode: Annotated[str | None, QueryParameter(max_length=10)] = None,
    proximity: Annotated[float | None, QueryParameter(gt=0, le=5_000_000)] = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Obj:
    """Each (site, service) pair with its location. With ``postcode``: nearest first from the
    postal code's point; with ``proximity`` too, only those within that many metres."""
    if proximity is not None and postcode is None:
        raise InvalidInput("proximity needs a postcode to measure from", field="proximity")
    near = None
    if postcode is not None:
        point = gazetteer.resolve_postal_code(postcode)
        near = point.lat, point.lon
    vocabulary = await hsds.taxonomy()
    where = await _filter(
        hsds, vocabulary, search, taxonomy_term_id, organization_id, modified_after
    )
    total, found = await hsds.service_at_locations(
        where, near=near, within_m=proximity, limit=per_page, offset=(page - 1) * per_page
    )
    names = m.names(vocabulary)
    contents = [
        m.service_at_location(site, code) | {"location": m.location(site, names)}
        for site, code in found
    ]
    return paged(contents, total, page, per_page)


@get("/service_at_locations/{sal_id:str}", opt=PUBLIC, tags=TAGS)
async def get_service_at_location(hsds: Hsds, sal_id: PathId) -> Obj:
    """One service at one location, with the full location and the service."""
    match = await hsds.find_service_at_location(sal_id)
    if match is None:
        raise NotFound(f"no service_at_location {sal_id!r}", field="id")
    site, code = match
    _, services = await hsds.services(HsdsFilter(provider_id=site.provider_id, code=code), limit=1)
    vocabulary = m.names(await hsds.taxonomy())
    return m.service_at_location(site, code) | {
        "location": m.location(site, vocabulary),
        "service": m.one_to_one(_service(services[0], vocabulary)),
    }


def _matches(obj: Obj, search: str | None) -> bool:
    if search is None:
        return True
    needle = search.casefold()
    return any(
        needle in str(obj.get(key, "")).casefold() for key in ("name", "code", "description")
    )


@get("/taxonomies", opt=PUBLIC, tags=TAGS)
async def list_taxonomies(search: Search = None, page: Page = 1, per_page: PerPage = 50) -> Obj:
    """The EO taxonomies: services, accessibility, catchments and EO attributes."""
    found = [t for t in m.taxonomies() if _matches(t, search)]
    start = (page - 1) * per_page
    return paged(found[start : start + per_page], len(found), page, per_page)


@get("/taxonomies/{taxonomy_id:str}", opt=PUBLIC, tags=TAGS)
async def get_taxonomy(taxonomy_id: PathId) -> Obj:
    for taxonomy in m.taxonomies():
        if taxonomy["id"] == taxonomy_id:
            return taxonomy
    raise NotFound(f"no taxonomy {taxonomy_id!r}", field="id")


@get("/taxonomy_terms", opt=PUBLIC, tags=TAGS)
async def list_taxonomy_terms(
    hsds: Hsds,
    search: Search = None,
    taxonomy_id: HsdsId = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Obj:
    """Terms of the EO taxonomies, one per code and language."""
    terms = m.taxonomy_terms(await hsds.taxonomy())
    found = [
        t
        for t in terms
        if _matches(t, search) and (taxonomy_id is None or t["taxonomy_id"] == taxonomy_id)
    ]
    start = (page - 1) * per_page
    return paged(found[start : start + per_page], len(found), page, per_page)


@get("/taxonomy_terms/{term_id:str}", opt=PUBLIC, tags=TAGS)
async def get_taxonomy_term(hsds: Hsds, term_id: PathId) -> Obj:
    for term in m.taxonomy_terms(await hsds.taxonomy()):
        if term["id"] == term_id:
            return term
    raise NotFound(f"no taxonomy_term {term_id!r}", field="id")


#: Out of the directory's own OpenAPI (/schema): the HSDS API is described by the official
#: HSDS OpenAPI document, served at /hsds/openapi.json and named by ``GET /hsds/``.
hsds_router = Router(
    path="/hsds",
    include_in_schema=False,
    dependencies={"hsds": Provide(provide_hsds_store, sync_to_thread=False)},
    route_handlers=[
        base,
        openapi_document,
        list_services,
        get_service,
        list_organizations,
        get_organization,
        list_service_at_locations,
        get_service_at_location,
        list_taxonomies,
        get_taxonomy,
        list_taxonomy_terms,
        get_taxonomy_term,
    ],
)
