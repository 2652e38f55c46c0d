"""The directory's HTTP API through Litestar's async test client, on the real embedded database."""

import asyncio
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from contracts.vocabulary import ENDED_EARLY_REASONS, NOT_STARTED_REASONS, OUTCOMES
from services.directory.app import create_app
from services.directory.settings import DirectorySettings
from services.geo import OfflineGeocoder

pytestmark = pytest.mark.e2e

CCA = "canadian-career-academy"
CES = "community-employment-services"
ONTRAC = "ontrac-employment-resource-services"
NEAREST = "/api/v1/sites/nearest"


def provider_ids(body: dict[str, Any]) -> list[str]:
    return [hit["provider"]["id"] for hit in body["results"]]


def new_site(site_id: str, **overrides: Any) -> dict[str, Any]:
    site = {
        "id": site_id,
        "provider_id": CCA,
        "name": "Test office",
        "address": {"address_1": "1 Mill Street", "city": "Almonte"},
        "lat": 45.2299,
        "lon": -76.1959,
        "coord_precision": "street",
        "services": ["resume_writing"],
    }
    return site | overrides


async def problem_fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == response.status_code
    assert body["title"]
    return [error["field"] for error in body.get("errors", [])]


# ranking on the seed data --------------------------------------------------------------


async def test_almonte_gets_canadian_career_academy_first(client: AsyncTestClient) -> None:
    response = await client.get(NEAREST, params={"lat": 45.2299, "lon": -76.1959})
    assert response.status_code == 200
    body = response.json()
    assert provider_ids(body) == [CCA, CES, ONTRAC]
    assert body["results"][0]["distance_km"] == pytest.approx(11.3, abs=0.1)
    assert body["results"][1]["distance_km"] == pytest.approx(36.9, abs=0.1)
    assert body["origin"]["precision"] == "exact"


async def test_community_search_from_the_issue(client: AsyncTestClient) -> None:
    response = await client.get(
        NEAREST, params={"community": "Almonte", "service": "resume_writing"}
    )
    assert response.status_code == 200
    body = response.json()
    assert provider_ids(body)[0] == CCA
    assert body["origin"]["precision"] == "town"
    assert "Almonte" in body["origin"]["resolved_from"]


async def test_community_suggestions_for_the_office_finder(client: AsyncTestClient) -> None:
    almo = await client.get("/api/v1/communities", params={"prefix": "almo"})
    assert almo.status_code == 200
    assert almo.json()["communities"][0] == "Almonte"
    # Accents and case do not matter; the most populous come first; limit bounds the list.
    for prefix in ("Smiths", "smiths"):
        names = (await client.get("/api/v1/communities", params={"prefix": prefix})).json()
        assert "Smiths Falls" in names["communities"], names
    many = (await client.get("/api/v1/communities", params={"prefix": "Ca", "limit": 3})).json()
    assert len(many["communities"]) == 3
    assert (await client.get("/api/v1/communities", params={"prefix": "zzqx"})).json() == {
        "communities": []
    }
    bad_queries: list[tuple[dict[str, str | int], str]] = [
        ({"prefix": ""}, "prefix"),
        ({"prefix": "a", "limit": 0}, "limit"),
    ]
    for bad, field in bad_queries:
        response = await client.get("/api/v1/communities", params=bad)
        assert response.status_code == 422
        assert await problem_fields(response) == [field]


async def test_the_office_finder_page_and_its_assets(client: AsyncTestClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js" defer></script>' in page.text
    for asset, kind in [("/static/app.js", "text/javascript"), ("/static/app.css", "text/css")]:
        response = await client.get(asset)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(kind)
    assert (await client.get("/static/../app.py")).status_code == 404


async def test_athens_gets_ontrac_first(client: AsyncTestClient) -> None:
    body = (await client.get(NEAREST, params={"community": "Athens"})).json()
    assert provider_ids(body) == [ONTRAC, CES, CCA]
    distances = [hit["distance_km"] for hit in body["results"]]
    assert distances == sorted(distances)


async def test_postal_code_origin(client: AsyncTestClient) -> None:
    body = (await client.get(NEAREST, params={"postal_code": "k7a4r4"})).json()
    assert body["origin"]["precision"] in {"postal_code", "fsa"}
    assert provider_ids(body)[0] == ONTRAC


# filters -------------------------------------------------------------------------------


async def test_service_filter_requires_every_service(client: AsyncTestClient, admin) -> None:
    extra = new_site("cca-almonte-training", services=["resume_writing", "skills_training"])
    assert (await client.post("/api/v1/sites", json=extra, headers=admin)).status_code == 201
    params = {"community": "Almonte", "service": ["resume_writing", "skills_training"]}
    body = (await client.get(NEAREST, params=params)).json()
    assert [hit["site"]["id"] for hit in body["results"]] == ["cca-almonte-training"]


async def test_language_filter(client: AsyncTestClient, admin) -> None:
    french = new_site("cca-almonte-fr", languages=["fr", "en"], lat=45.0, lon=-76.5)
    assert (await client.post("/api/v1/sites", json=french, headers=admin)).status_code == 201
    body = (await client.get(NEAREST, params={"community": "Almonte", "language": "fr"})).json()
    assert [hit["site"]["id"] for hit in body["results"]] == ["cca-almonte-fr"]
    english = (await client.get(NEAREST, params={"community": "Almonte", "language": "en"})).json()
    assert len(english["results"]) == 4


async def test_accessibility_filter(client: AsyncTestClient, admin) -> None:
    site = new_site("cca-accessible", accessibility=["wheelchair_access", "large_print"])
    assert (await client.post("/api/v1/sites", json=site, headers=admin)).status_code == 201
    params: dict[str, Any] = {
        "lat": 44.6,
        "lon": -75.9,
        "accessibility": ["wheelchair_access", "large_print"],
    }
    body = (await client.get(NEAREST, params=params)).json()
    assert [hit["site"]["id"] for hit in body["results"]] == ["cca-accessible"]
    params["accessibility"] = ["wheelchair_access", "asl_interpretation"]
    assert (await client.get(NEAREST, params=params)).json()["results"] == []


async def test_accepting_filter(client: AsyncTestClient, admin) -> None:
    patch = {"accepting_referrals": False}
    site_id = "canadian-career-academy-carleton-place"
    response = await client.patch(f"/api/v1/sites/{site_id}", json=patch, headers=admin)
    assert response.status_code == 200
    assert response.json()["accepting_referrals"] is False
    all_sites = (await client.get(NEAREST, params={"community": "Almonte"})).json()
    assert provider_ids(all_sites)[0] == CCA
    params = {"community": "Almonte", "accepting": "true"}
    accepting = (await client.get(NEAREST, params=params)).json()
    assert provider_ids(accepting) == [CES, ONTRAC]


async def test_accepting_filter_excludes_full_sites(client: AsyncTestClient, admin, conn) -> None:
    await conn.execute("UPDATE directory.site SET reserved = capacity WHERE provider_id = $1", CES)
    params = {"community": "Almonte", "accepting": "true"}
    assert provider_ids((await client.get(NEAREST, params=params)).json()) == [CCA, ONTRAC]


async def test_radius_is_optional_and_exact(client: AsyncTestClient) -> None:
    near = (await client.get(NEAREST, params={"community": "Almonte", "radius_km": 20})).json()
    assert provider_ids(near) == [CCA]
    edge = (await client.get(NEAREST, params={"community": "Almonte", "radius_km": 11.0})).json()
    assert edge["results"] == []


async def test_limit(client: AsyncTestClient) -> None:
    body = (await client.get(NEAREST, params={"community": "Almonte", "limit": 2})).json()
    assert provider_ids(body) == [CCA, CES]


async def test_inactive_sites_and_providers_are_not_found(client: AsyncTestClient, admin) -> None:
    await client.patch(f"/api/v1/providers/{CCA}", json={"active": False}, headers=admin)
    body = (await client.get(NEAREST, params={"community": "Almonte"})).json()
    assert provider_ids(body) == [CES, ONTRAC]


# bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"community": "Almonte", "service": "basket_weaving"}, "service"),
        ({"lat": 91, "lon": -76.0}, "lat"),
        ({"lat": 45.0}, "lon"),
        ({"postal_code": "K7C 3P"}, "postal_code"),
        ({"postal_code": "12345"}, "postal_code"),
        ({"community": "Atlantis"}, "community"),
        ({"community": "Almonte", "limit": 10000}, "limit"),
        ({"community": "Almonte", "language": "de"}, "language"),
        ({"community": "Almonte", "accessibility": "ramp"}, "accessibility"),
        ({"community": "Almonte", "radius_km": -5}, "radius_km"),
        ({}, "postal_code"),
        ({"community": "Almonte", "postal_code": "K7C 3P2"}, "community"),
    ],
)
async def test_bad_search_input_names_the_field(
    client: AsyncTestClient, params: dict[str, Any], field: str
) -> None:
    response = await client.get(NEAREST, params=params)
    assert 400 <= response.status_code < 500
    assert field in await problem_fields(response)


async def test_rural_postal_code_without_a_known_point_is_explained(
    client: AsyncTestClient,
) -> None:
    response = await client.get(NEAREST, params={"postal_code": "K0A 9Z9"})
    assert response.status_code == 422
    assert await problem_fields(response) == ["postal_code"]
    assert "rural" in response.json()["detail"].lower()


# CRUD (authentication and authorization: test_directory_security.py) --------------------


async def test_provider_crud(client: AsyncTestClient, admin, staff) -> None:
    body = {"id": "lanark-jobs", "name": "Lanark Jobs", "phone": "613-555-0100"}
    created = await client.post("/api/v1/providers", json=body, headers=admin)
    assert created.status_code == 201
    assert created.json()["name"] == "Lanark Jobs"
    again = await client.post("/api/v1/providers", json=body, headers=admin)
    assert again.status_code == 409
    assert await problem_fields(again) == ["id"]

    patched = await client.patch(
        "/api/v1/providers/lanark-jobs", json={"name": "Lanark Jobs Centre"}, headers=admin
    )
    assert patched.json()["name"] == "Lanark Jobs Centre"
    assert patched.json()["phone"] == "613-555-0100"

    replaced = await client.put(
        "/api/v1/providers/lanark-jobs", json={"id": "lanark-jobs", "name": "LJ"}, headers=admin
    )
    assert replaced.json()["phone"] is None

    page = (await client.get("/api/v1/providers", params={"limit": 2}, headers=staff)).json()
    assert page["total"] == 4
    assert len(page["items"]) == 2

    assert (await client.delete("/api/v1/providers/lanark-jobs", headers=admin)).status_code == 204
    assert (await client.get("/api/v1/providers/lanark-jobs", headers=staff)).status_code == 404


async def test_provider_with_sites_cannot_be_deleted(client: AsyncTestClient, admin) -> None:
    response = await client.delete(f"/api/v1/providers/{CCA}", headers=admin)
    assert response.status_code == 409


async def test_site_crud_and_server_owned_fields(client: AsyncTestClient, admin, staff) -> None:
    created = await client.post("/api/v1/sites", json=new_site("cca-almonte"), headers=admin)
    assert created.status_code == 201
    site = created.json()
    assert site["reserved"] == 0
    assert site["last_verified"] is not None

    sneaky = new_site("cca-sneaky", reserved=5)
    response = await client.post("/api/v1/sites", json=sneaky, headers=admin)
    assert response.status_code == 422
    assert "reserved" in " ".join(e["message"] for e in response.json()["errors"])
    assert response.json()["errors"][0]["field"] == "$.reserved"

    params = {"provider_id": CCA}
    listed = (await client.get("/api/v1/sites", params=params, headers=staff)).json()
    assert {s["id"] for s in listed["items"]} == {"cca-almonte", f"{CCA}-carleton-place"}

    assert (await client.delete("/api/v1/sites/cca-almonte", headers=admin)).status_code == 204
    assert (await client.get("/api/v1/sites/cca-almonte", headers=staff)).status_code == 404


async def test_site_without_coordinates_is_placed_offline(client: AsyncTestClient, admin) -> None:
    site = new_site("cca-perth-annex", address={"address_1": "1 Gore St", "city": "Perth"})
    del site["lat"], site["lon"], site["coord_precision"]
    created = await client.post("/api/v1/sites", json=site, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["coord_precision"] == "town"
    assert body["lat"] == pytest.approx(44.90, abs=0.02)
    assert "Perth" in body["coord_source"]


async def test_moving_a_site_re_places_it(client: AsyncTestClient, admin) -> None:
    site_id = "ontrac-employment-resource-services-smiths-falls"
    moved = await client.patch(
        f"/api/v1/sites/{site_id}",
        json={"address": {"address_1": "1 Main St", "city": "Almonte"}},
        headers=admin,
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["lat"] == pytest.approx(45.23, abs=0.02)
    body = (await client.get(NEAREST, params={"community": "Almonte"})).json()
    assert provider_ids(body)[0] == ONTRAC


class WritingGeocoder:
    """The offline geocoder that, each time it is asked, first runs an SQL statement on a
    connection of its own (from the worker thread the directory calls it in): a write
    that waits for no lock, or fails within a second."""

    def __init__(self, database_url: str, sql: str, *args: object) -> None:
        self.database_url, self.sql, self.args = database_url, sql, args
        self.calls = 0
        self.errors: list[Exception] = []
        self.offline = OfflineGeocoder()

    def geocode(self, query: str, *, exactly_one: bool = True) -> Any:
        assert exactly_one
        self.calls += 1
        try:
            asyncio.run(self.write())
        except asyncpg.PostgresError as exc:
            self.errors.append(exc)
        return self.offline.geocode(query)

    async def write(self) -> None:
        conn = await asyncpg.connect(self.database_url)
        try:
            await conn.execute("SET lock_timeout = '1s'")
            await conn.execute(self.sql, *self.args)
        finally:
            await conn.close()


async def test_a_patch_geocodes_before_locking_the_site(
    directory_settings: DirectorySettings, fresh_database_url: str, admin
) -> None:
    """The geocoder (maybe a network one) is called while the site's row is not locked, and
    a write that lands meanwhile survives the patch: it is merged again under the lock."""
    site_id = "ontrac-employment-resource-services-smiths-falls"
    geocoder = WritingGeocoder(
        fresh_database_url, "UPDATE directory.site SET capacity = 7 WHERE id = $1", site_id
    )
    app = create_app(directory_settings)
    app.state.geocoder = geocoder
    async with AsyncTestClient(app=app) as client:
        moved = await client.patch(
            f"/api/v1/sites/{site_id}",
            json={"address": {"address_1": "1 Main St", "city": "Almonte"}},
            headers=admin,
        )
    assert moved.status_code == 200, moved.text
    assert geocoder.calls > 0
    assert geocoder.errors == []
    assert moved.json()["capacity"] == 7
    assert moved.json()["address"]["city"] == "Almonte"
    assert moved.json()["lat"] == pytest.approx(45.23, abs=0.02)
    assert moved.json()["coord_source"].startswith("WritingGeocoder: ")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"services": ["basket_weaving"]}, "$.services[0]"),
        ({"provider_id": "no-such-provider"}, "provider_id"),
        ({"catchment_id": "atlantis"}, "catchment_id"),
        ({"lat": 91.0}, "$.lat"),
        ({"id": "Not A Slug"}, "$.id"),
        ({"address": {"city": "Almonte"}}, "$.address"),
        ({"surprise": True}, "$.surprise"),
        ({"name": "Test\u0000office"}, "$.name"),
    ],
)
async def test_bad_site_bodies_name_the_field(
    client: AsyncTestClient, admin, change: dict[str, Any], field: str
) -> None:
    response = await client.post("/api/v1/sites", json=new_site("bad-site") | change, headers=admin)
    assert response.status_code == 422, response.text
    fields = await problem_fields(response)
    assert any(f.startswith(field) for f in fields), fields


async def test_malformed_json_is_a_problem(client: AsyncTestClient, admin) -> None:
    response = await client.post(
        "/api/v1/providers",
        content=b"{not json",
        headers=admin | {"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    await problem_fields(response)


async def test_unknown_ids_are_404_problems(client: AsyncTestClient, staff) -> None:
    response = await client.get("/api/v1/sites/nowhere", headers=staff)
    assert response.status_code == 404
    assert await problem_fields(response) == ["id"]


# taxonomy and operations ---------------------------------------------------------------


async def test_taxonomy_lists_codes_in_both_languages(client: AsyncTestClient) -> None:
    body = (await client.get("/api/v1/taxonomy")).json()
    assert len(body["services"]) == 16
    assert len(body["accessibility"]) == 6
    assert len(body["catchments"]) == 15
    resume = next(t for t in body["services"] if t["code"] == "resume_writing")
    assert resume["name_en"] == "Resume writing"
    assert resume["name_fr"].startswith("Rédaction")
    assert "kingston-pembroke" in {c["id"] for c in body["catchments"]}
    # v1.1: the progress codes, in the order of the contract's Literals
    assert [t["code"] for t in body["outcomes"]] == [t.code for t in OUTCOMES]
    assert [t["code"] for t in body["not_started_reasons"]] == [t.code for t in NOT_STARTED_REASONS]
    assert [t["code"] for t in body["ended_early_reasons"]] == [t.code for t in ENDED_EARLY_REASONS]
    employed = body["outcomes"][0]
    assert (employed["name_en"], employed["name_fr"]) == ("Employed", "En emploi")


async def test_health_ready_and_openapi(client: AsyncTestClient) -> None:
    assert (await client.get("/health")).json() == {"status": "ok"}
    assert (await client.get("/ready")).json() == {"status": "ready"}
    schema = (await client.get("/schema/openapi.json")).json()
    assert NEAREST in schema["paths"]
    assert "/api/v1/providers/{provider_id}" in schema["paths"]
