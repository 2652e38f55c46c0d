"""The HSDS 3.0 API profile under ``/hsds``: public reads of the directory as HSDS objects.

Lists are paged as the spec's ``Page`` (``page`` from 1, ``per_page`` up to 100) and filtered
in SQL; detail endpoints find a record by its HSDS id. Ids are uuid5 of our keys, which SQL
cannot invert, so a detail lookup hashes the candidate keys (a scan of ids: fine for a real
EO directory of a few thousand sites).
"""

import datetime
import math
from pathlib import Path
from typing import Annotated, Any

from litestar import Request, Router, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter
from litestar.response import File

from contracts.directory import Provider, Site, Taxonomy
from services.directory.auth import PUBLIC
from services.directory.errors import InvalidInput, NotFound
from services.directory.hsds import SCHEMA_DIR, mapping as m
from services.directory.store import (
    PROVIDER_COLUMNS,
    SITE_COLUMNS,
    DirectoryStore,
    provider_from_row,
    site_from_row,
)
from services.geo import Gazetteer
from services.infra.db import Connection

Obj = dict[str, Any]
Page = Annotated[int, QueryParameter(ge=1, le=1_000_000, description="page number, from 1")]
PerPage = Annotated[int, QueryParameter(ge=1, le=100, description="page size (at most 100)")]
Search = Annotated[str | None, QueryParameter(min_length=1, max_length=200)]
HsdsId = Annotated[str | None, QueryParameter(max_length=100)]
PathId = Annotated[str, PathParameter(max_length=100, description="an HSDS id (uuid)")]
ModifiedAfter = Annotated[datetime.datetime | None, QueryParameter()]
Store = NamedDependency[DirectoryStore]
HSDS_VERSION = "3.0"
PROFILE = "https://github.com/openreferral/specification/tree/3.0"
TAGS = ["hsds"]


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


def _like(search: str | None) -> str | None:
    if search is None:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _since(moment: datetime.datetime | None) -> datetime.datetime | None:
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment


async def _providers(conn: Connection, ids: list[str]) -> dict[str, Provider]:
    rows = await conn.fetch(
        f"SELECT {PROVIDER_COLUMNS} FROM directory.provider WHERE id = ANY($1)", ids
    )
    return {row["id"]: provider_from_row(row) for row in rows}


async def _sites(conn: Connection, where: str, *args: object) -> list[Site]:
    rows = await conn.fetch(
        f"SELECT {SITE_COLUMNS} FROM directory.site WHERE {where} ORDER BY id", *args
    )
    return [site_from_row(row) for row in rows]


async def _provider_of(conn: Connection, organization_id: str | None) -> str | None:
    """The slug of an HSDS organization id; an unknown id matches nothing (``""``)."""
    if organization_id is None:
        return None
    rows = await conn.fetch("SELECT id FROM directory.provider")
    found = (row["id"] for row in rows if m.organization_id(row["id"]) == organization_id)
    return next(found, "")


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


async def _service_rows(
    conn: Connection, args: tuple[object, ...], limit: int | None = None, offset: int = 0
) -> tuple[int, list[Obj]]:
    total: int = await conn.fetchval(f"SELECT count(*) {_SERVICE_FROM}", *args)
    rows = await conn.fetch(
        "SELECT svc.provider_id, svc.code, svc.offered_active,"
        f" greatest(p.updated_at, svc.sites_updated) AS modified {_SERVICE_FROM}"
        " ORDER BY svc.provider_id, svc.code LIMIT $5 OFFSET $6",
        *args,
        limit,
        offset,
    )
    providers = await _providers(conn, sorted({row["provider_id"] for row in rows}))
    vocabulary = m.names(await DirectoryStore(conn).taxonomy())
    return total, [
        m.service(
            providers[row["provider_id"]],
            row["code"],
            vocabulary.get((m.SERVICE_TAXONOMY, row["code"])),
            active=row["offered_active"],
            last_modified=row["modified"],
        )
        for row in rows
    ]


@get("/services", opt=PUBLIC, tags=TAGS)
async def list_services(
    store: Store,
    search: Search = None,
    taxonomy_term_id: HsdsId = None,
    organization_id: HsdsId = None,
    modified_after: ModifiedAfter = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Obj:
    """Services (one per provider and EO service code), by provider and code."""
    conn = store.conn
    provider = await _provider_of(conn, organization_id)
    code = _code_of(await store.taxonomy(), taxonomy_term_id)
    args = (provider, code, _like(search), _since(modified_after))
    total, services = await _service_rows(conn, args, per_page, (page - 1) * per_page)
    return paged([m.one_to_one(s) for s in services], total, page, per_page)


async def _find_service(conn: Connection, hsds_id: str) -> tuple[str, str]:
    rows = await conn.fetch(
        "SELECT DISTINCT provider_id, unnest(services) AS code FROM directory.site"
    )
    for row in rows:
        if m.service_id(row["provider_id"], row["code"]) == hsds_id:
            return row["provider_id"], row["code"]
    raise NotFound(f"no service {hsds_id!r}", field="id")


@get("/services/{service_id:str}", opt=PUBLIC, tags=TAGS)
async def get_service(store: Store, service_id: PathId) -> Obj:
    """One service, fully nested: organization, and each location it is offered at."""
    conn = store.conn
    provider_id, code = await _find_service(conn, service_id)
    _, found = await _service_rows(conn, (provider_id, code, None, None), 1)
    provider = (await _providers(conn, [provider_id]))[provider_id]
    sites = await _sites(conn, "provider_id = $1 AND $2 = ANY(services)", provider_id, code)
    vocabulary = m.names(await store.taxonomy())
    return found[0] | {
        "organization": m.one_to_one(m.organization(provider)),
        "service_at_locations": [
            m.service_at_location(site, code) | {"location": m.location(site, vocabulary)}
            for site in sites
        ],
    }


@get("/organizations", opt=PUBLIC, tags=TAGS)
async def list_organizations(
    store: Store, search: Search = None, page: Page = 1, per_page: PerPage = 50
) -> Obj:
    """Organizations (providers), by id."""
    where = "$1::text IS NULL OR name ILIKE $1 OR alternate_name ILIKE $1 OR description ILIKE $1"
    conn = store.conn
    total: int = await conn.fetchval(
        f"SELECT count(*) FROM directory.provider WHERE {where}", _like(search)
    )
    rows = await conn.fetch(
        f"SELECT {PROVIDER_COLUMNS} FROM directory.provider WHERE {where}"
        " ORDER BY id LIMIT $2 OFFSET $3",
        _like(search),
        per_page,
        (page - 1) * per_page,
    )
    contents = [m.one_to_one(m.organization(provider_from_row(row))) for row in rows]
    return paged(contents, total, page, per_page)


@get("/organizations/{organization_id:str}", opt=PUBLIC, tags=TAGS)
async def get_organization(store: Store, organization_id: PathId) -> Obj:
    """One organization with its phones, identifiers, locations and (brief) services."""
    conn = store.conn
    slug = await _provider_of(conn, organization_id)
    providers = await _providers(conn, [slug or ""])
    if not slug or slug not in providers:
        raise NotFound(f"no organization {organization_id!r}", field="id")
    sites = await _sites(conn, "provider_id = $1", slug)
    _, services = await _service_rows(conn, (slug, None, None, None))
    vocabulary = m.names(await store.taxonomy())
    return m.organization(providers[slug]) | {
        "locations": [m.location(site, vocabulary) for site in sites],
        "services": [m.one_to_one(s) for s in services],
    }


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


@get("/service_at_locations", opt=PUBLIC, tags=TAGS)
async def list_service_at_locations(
    store: Store,
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
    conn = store.conn
    lat = lon = None
    if postcode is not None:
        point = gazetteer.resolve_postal_code(postcode)
        lat, lon = point.lat, point.lon
    args = (
        await _provider_of(conn, organization_id),
        _code_of(await store.taxonomy(), taxonomy_term_id),
        _like(search),
        _since(modified_after),
        lat,
        lon,
        proximity,
    )
    total: int = await conn.fetchval(f"SELECT count(*) {_SAL_FROM}", *args)
    rows = await conn.fetch(
        f"SELECT s.id, u.code {_SAL_FROM} ORDER BY CASE WHEN $5::float8 IS NULL THEN 0"
        " ELSE earth_distance(ll_to_earth($5, $6), s.earth_point) END, s.id, u.n"
        " LIMIT $8 OFFSET $9",
        *args,
        per_page,
        (page - 1) * per_page,
    )
    sites = {s.id: s for s in await _sites(conn, "id = ANY($1)", [row["id"] for row in rows])}
    vocabulary = m.names(await store.taxonomy())
    contents = [
        m.service_at_location(sites[row["id"]], row["code"])
        | {"location": m.location(sites[row["id"]], vocabulary)}
        for row in rows
    ]
    return paged(contents, total, page, per_page)


@get("/service_at_locations/{sal_id:str}", opt=PUBLIC, tags=TAGS)
async def get_service_at_location(store: Store, sal_id: PathId) -> Obj:
    """One service at one location, with the full location and the service."""
    conn = store.conn
    rows = await conn.fetch("SELECT id, services FROM directory.site")
    match = next(
        ((row["id"], code) for row in rows for code in row["services"]
         if m.service_at_location_id(row["id"], code) == sal_id),
        None,
    )  # fmt: skip
    if match is None:
        raise NotFound(f"no service_at_location {sal_id!r}", field="id")
    site = (await _sites(conn, "id = $1", match[0]))[0]
    _, services = await _service_rows(conn, (site.provider_id, match[1], None, None), 1)
    vocabulary = m.names(await store.taxonomy())
    return m.service_at_location(site, match[1]) | {
        "location": m.location(site, vocabulary),
        "service": m.one_to_one(services[0]),
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
    store: Store,
    search: Search = None,
    taxonomy_id: HsdsId = None,
    page: Page = 1,
    per_page: PerPage = 50,
) -> Obj:
    """Terms of the EO taxonomies, one per code and language."""
    terms = m.taxonomy_terms(await store.taxonomy())
    found = [
        t
        for t in terms
        if _matches(t, search) and (taxonomy_id is None or t["taxonomy_id"] == taxonomy_id)
    ]
    start = (page - 1) * per_page
    return paged(found[start : start + per_page], len(found), page, per_page)


@get("/taxonomy_terms/{term_id:str}", opt=PUBLIC, tags=TAGS)
async def get_taxonomy_term(store: Store, term_id: PathId) -> Obj:
    for term in m.taxonomy_terms(await store.taxonomy()):
        if term["id"] == term_id:
            return term
    raise NotFound(f"no taxonomy_term {term_id!r}", field="id")


#: Out of the directory's own OpenAPI (/schema): the HSDS API is described by the official
#: HSDS OpenAPI document, served at /hsds/openapi.json and named by ``GET /hsds/``.
hsds_router = Router(
    path="/hsds",
    include_in_schema=False,
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
