"""The HSDS API profile (/hsds), every response validated against the official JSON Schemas
(the copies in services/directory/hsds/data), on the seed data and a generated directory."""

import functools
import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker
from litestar.testing import AsyncTestClient
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from services.directory.hsds import SCHEMA_DIR, mapping as m
from tests.benchmarks.generate import generate

pytestmark = pytest.mark.e2e

BASE = "https://hsds.test/schema/"
ONTRAC = "ontrac-employment-resource-services"
LISTS = {
    "/hsds/services": ("compiled/service_list.json", "service.json"),
    "/hsds/organizations": ("compiled/organization_list.json", "organization.json"),
    "/hsds/service_at_locations": (
        "compiled/service_at_location_list.json",
        "service_at_location.json",
    ),
    "/hsds/taxonomies": ("taxonomy.json", "taxonomy.json"),
    "/hsds/taxonomy_terms": ("taxonomy_term.json", "taxonomy_term.json"),
}
#: The object schema of each detail endpoint. (The official OpenAPI names compiled/service.json
#: for /service_at_locations/{id}, an upstream slip: it is a service_at_location.)
DETAILS = {
    "/hsds/services": "service.json",
    "/hsds/organizations": "organization.json",
    "/hsds/service_at_locations": "service_at_location.json",
    "/hsds/taxonomies": "taxonomy.json",
    "/hsds/taxonomy_terms": "taxonomy_term.json",
}


@functools.cache
def registry() -> Registry:
    resources = []
    for path in [*SCHEMA_DIR.glob("*.json"), *SCHEMA_DIR.glob("compiled/*.json")]:
        if path.name == "openapi.json":
            continue
        contents = json.loads(path.read_text())
        uri = BASE + path.relative_to(SCHEMA_DIR).as_posix()
        resources.append((uri, Resource.from_contents(contents, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


@functools.cache
def page_schema() -> dict[str, Any]:
    openapi = json.loads((SCHEMA_DIR / "openapi.json").read_text())
    page: dict[str, Any] = openapi["components"]["schemas"]["Page"]
    return page | {"required": [*page["properties"], "contents"]}


def validate(instance: Any, schema_file: str) -> None:
    validator = Draft202012Validator(
        {"$ref": BASE + schema_file}, registry=registry(), format_checker=FormatChecker()
    )
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert errors == [], (schema_file, errors[:5])


async def get_json(client: AsyncTestClient, path: str, **params: Any) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def get_page(client: AsyncTestClient, path: str, **params: Any) -> dict[str, Any]:
    """A page, validated: the envelope against the spec's Page, each item against its schemas."""
    body: dict[str, Any] = await get_json(client, path, **params)
    Draft202012Validator(page_schema()).validate(body)
    listed, full = LISTS[path]
    for item in body["contents"]:
        validate(item, listed)
        validate(item, full)
    return body


async def every_item(client: AsyncTestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        body = await get_page(client, path, page=page, per_page=100, **params)
        items += body["contents"]
        if body["last_page"]:
            return items
        page += 1


async def check_every_endpoint(client: AsyncTestClient, details: int) -> dict[str, list[Any]]:
    base = await get_json(client, "/hsds/")
    Draft202012Validator(
        json.loads((SCHEMA_DIR / "openapi.json").read_text())["paths"]["/"]["get"]["responses"][
            "200"
        ]["content"]["application/json"]["schema"],
        format_checker=FormatChecker(),
    ).validate(base)
    assert base["version"] == "3.0"
    found = {path: await every_item(client, path) for path in LISTS}
    for path, schema in DETAILS.items():
        for item in found[path][:details]:
            detail = await get_json(client, f"{path}/{item['id']}")
            validate(detail, schema)
            assert detail["id"] == item["id"]
    return found


async def test_every_endpoint_on_the_seed_validates(client: AsyncTestClient) -> None:
    found = await check_every_endpoint(client, details=50)
    assert len(found["/hsds/organizations"]) == 3
    assert len(found["/hsds/services"]) == 15  # 3 providers x 5 codes
    assert len(found["/hsds/service_at_locations"]) == 15
    assert len(found["/hsds/taxonomies"]) == 4
    openapi = await client.get("/hsds/openapi.json")
    assert openapi.status_code == 200
    assert openapi.json()["openapi"].startswith("3.")


async def test_every_endpoint_on_a_generated_directory_validates(
    client: AsyncTestClient, fresh_database_url: str
) -> None:
    await generate(fresh_database_url, 300, quiet=True)
    found = await check_every_endpoint(client, details=10)
    assert len(found["/hsds/organizations"]) == 3 + 75
    locations = {sal["location_id"] for sal in found["/hsds/service_at_locations"]}
    assert len(locations) == 303
    ids = [sal["id"] for sal in found["/hsds/service_at_locations"]]
    assert len(ids) == len(set(ids))


async def test_the_eo_fields_are_attributes_and_metadata(client: AsyncTestClient) -> None:
    org = (await get_json(client, "/hsds/organizations", search="Ontrac"))["contents"][0]
    full = await get_json(client, f"/hsds/organizations/{org['id']}")
    assert full["organization_identifiers"][0]["identifier"] == ONTRAC
    location = full["locations"][0]
    attributes = {
        a["taxonomy_term_id"]: a["value"] for a in location["attributes"]
    }  # term -> value
    assert attributes[m.term_id(m.ATTRIBUTE_TAXONOMY, "capacity")] == "25"
    assert attributes[m.term_id(m.ATTRIBUTE_TAXONOMY, "coord_precision")] == "town"
    assert attributes[m.term_id(m.ATTRIBUTE_TAXONOMY, "accepting_referrals")] == "true"
    assert attributes[m.term_id(m.CATCHMENT_TAXONOMY, "kingston-pembroke")] == "kingston-pembroke"
    assert location["metadata"][0]["last_action_type"] == "verified"
    assert location["external_identifier"] == f"{ONTRAC}-smiths-falls"
    assert "reserved" not in json.dumps(full)


async def test_paging(client: AsyncTestClient) -> None:
    pages = [await get_page(client, "/hsds/services", page=n, per_page=4) for n in (1, 2, 3, 4)]
    assert [p["size"] for p in pages] == [4, 4, 4, 3]
    assert [p["first_page"] for p in pages] == [True, False, False, False]
    assert [p["last_page"] for p in pages] == [False, False, False, True]
    assert {p["total_pages"] for p in pages} == {4}
    ids = [s["id"] for p in pages for s in p["contents"]]
    assert len(set(ids)) == 15
    beyond = await get_page(client, "/hsds/services", page=9, per_page=4)
    assert beyond["contents"] == []
    assert not beyond["empty"]
    for bad in ({"page": 0}, {"per_page": 101}):
        assert (await client.get("/hsds/services", params=bad)).status_code == 422


async def test_search_and_filters(client: AsyncTestClient) -> None:
    resume = await get_page(client, "/hsds/services", search="resume")
    assert {s["name"] for s in resume["contents"]} == {"Resume writing"}
    assert resume["total_items"] == 3
    term = m.term_id(m.SERVICE_TAXONOMY, "job_search")
    by_term = await get_page(client, "/hsds/services", taxonomy_term_id=term)
    assert {s["name"] for s in by_term["contents"]} == {"Job search"}
    by_term_sal = await get_page(client, "/hsds/service_at_locations", taxonomy_term_id=term)
    assert by_term_sal["total_items"] == 3
    org = m.organization_id(ONTRAC)
    mine = await get_page(client, "/hsds/services", organization_id=org)
    assert mine["total_items"] == 5
    assert {s["organization_id"] for s in mine["contents"]} == {org}
    perth = await get_page(client, "/hsds/service_at_locations", search="Perth")
    assert {s["location"]["name"] for s in perth["contents"]} == {
        "Community Employment Services, Perth"
    }
    nothing = await get_page(client, "/hsds/services", organization_id=m.organization_id("none"))
    assert nothing["empty"]
    assert nothing["total_pages"] == 0
    terms = await get_page(
        client, "/hsds/taxonomy_terms", taxonomy_id=m.taxonomy_id(m.CATCHMENT_TAXONOMY)
    )
    assert terms["total_items"] == 30  # 15 catchments, English and French


async def test_modified_after(client: AsyncTestClient, admin) -> None:
    everything = await get_page(client, "/hsds/services", modified_after="2000-01-01T00:00:00Z")
    assert everything["total_items"] == 15
    later = await get_page(client, "/hsds/services", modified_after="2999-01-01T00:00:00Z")
    assert later["empty"]
    stamp = everything["contents"][0]["last_modified"]
    changed = await client.patch(
        f"/api/v1/providers/{ONTRAC}", json={"description": "changed"}, headers=admin
    )
    assert changed.status_code == 200
    after = await get_page(client, "/hsds/services", modified_after=stamp.replace("Z", "+00:00"))
    assert {s["organization_id"] for s in after["contents"]} >= {m.organization_id(ONTRAC)}
    sals = await get_page(
        client, "/hsds/service_at_locations", modified_after=changed.json()["updated_at"]
    )
    assert sals["total_items"] == 5


async def test_postcode_and_proximity(client: AsyncTestClient) -> None:
    nearest = await get_page(client, "/hsds/service_at_locations", postcode="K7A 4R4")
    assert nearest["total_items"] == 15
    assert nearest["contents"][0]["location"]["external_identifier"] == f"{ONTRAC}-smiths-falls"
    near = await get_page(
        client, "/hsds/service_at_locations", postcode="K7A 4R4", proximity="10000"
    )
    assert {s["location"]["external_identifier"] for s in near["contents"]} == {
        f"{ONTRAC}-smiths-falls"
    }
    assert near["total_items"] == 5
    lonely = await client.get("/hsds/service_at_locations", params={"proximity": "100"})
    assert lonely.status_code == 422
    assert (
        await client.get("/hsds/service_at_locations", params={"postcode": "Z"})
    ).status_code == 422


async def test_unknown_ids_are_404(client: AsyncTestClient) -> None:
    for path in DETAILS:
        for unknown in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
            assert (await client.get(f"{path}/{unknown}")).status_code == 404
