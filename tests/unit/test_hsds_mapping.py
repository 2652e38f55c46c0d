"""The pure HSDS mapping: ids, objects, flattening and the import plan, without a database."""

import datetime
import uuid

from contracts.directory import (
    Address,
    Catchment,
    OpeningHours,
    Provider,
    Site,
    Taxonomy,
    TaxonomyTerm,
)
from services.directory.hsds import EXAMPLES, mapping as m
from services.directory.hsds.importer import Known, plan, slug_for
from services.directory.hsds.tables import (
    columns,
    flatten_json,
    flatten_objects,
    kind_of,
    read_datapackage,
    to_csv,
)

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
VOCABULARY = Taxonomy(
    services=[
        TaxonomyTerm(
            code="job_search", taxonomy="eo_service", name_en="Job search", name_fr="Recherche"
        )
    ],
    accessibility=[
        TaxonomyTerm(
            code="large_print", taxonomy="eo_accessibility", name_en="Large print", name_fr="Gros"
        )
    ],
    catchments=[Catchment(id="ottawa", name_en="Ottawa", name_fr="Ottawa")],
)
PROVIDER = Provider(
    id="acme", name="Acme", alternate_name=None, description=None, email="a@b.ca",
    website=None, phone="613 555 0100", active=True, created_at=NOW, updated_at=NOW,
)  # fmt: skip
SITE = Site(
    id="acme-perth", provider_id="acme", name="Acme, Perth",
    address=Address(address_1="1 Main St", city="Perth", postal_code="K7H 1A1"),
    lat=44.9, lon=-76.25, coord_precision="postal_code", coord_source="geonames",
    phone=None, email="perth@acme.ca", website="https://acme.ca",
    hours=[OpeningHours(weekday="tue", opens="09:00", closes="12:00"),
           OpeningHours(weekday="mon", opens="13:00", closes="17:00")],
    services=["job_search"], languages=["fr", "en"], accessibility=["large_print"],
    eligibility=["youth", "newcomer"], min_age=15, max_age=30, catchment_id="ottawa",
    capacity=12, reserved=4, accepting_referrals=False, active=True,
    last_verified=datetime.date(2026, 1, 1), created_at=NOW, updated_at=NOW,
)  # fmt: skip


def test_ids_are_stable_uuids_and_foreign_ids_come_back() -> None:
    assert m.organization_id("acme") == m.organization_id("acme")
    assert m.organization_id("acme") != m.location_id("acme")
    uuid.UUID(m.service_id("acme", "job_search"))
    foreign = "3a19ff88-4620-4d17-9830-ac1d859eb5d5"
    assert slug_for(foreign) == f"hsds-{foreign}"
    assert m.location_id(f"hsds-{foreign}") == foreign
    assert m.foreign_uuid("hsds-not-a-uuid") is None


def kind(code: str) -> str:
    return m.term_id(m.ATTRIBUTE_TAXONOMY, code)


def test_site_fields_become_attributes_and_metadata() -> None:
    location = m.location(SITE, m.names(VOCABULARY))
    values = {(a["taxonomy_term_id"], a["value"]) for a in location["attributes"]}
    assert {
        (kind("capacity"), "12"),
        (kind("accepting_referrals"), "false"),
        (kind("coord_precision"), "postal_code"),
        (kind("eligibility"), "youth"),
        (kind("eligibility"), "newcomer"),
        (kind("min_age"), "15"),
        (m.term_id(m.CATCHMENT_TAXONOMY, "ottawa"), "ottawa"),
    } <= values
    assert location["metadata"][0]["replacement_value"] == "2026-01-01"
    assert [s["byday"] for s in location["schedules"]] == ["TU", "MO"]
    assert [lang["code"] for lang in location["languages"]] == ["fr", "en"]
    assert "reserved" not in str(location)
    assert location["accessibility"][0]["details"] == "large_print"


def test_services_are_per_provider_and_code() -> None:
    service = m.service(
        PROVIDER, "job_search", VOCABULARY.services[0], active=True, last_modified=NOW
    )
    assert service["name"] == "Job search"
    assert service["last_modified"] == "2026-01-02T03:04:05Z"
    assert service["attributes"][0]["taxonomy_term_id"] == m.term_id("eo_service", "job_search")
    inactive = m.service(PROVIDER, "job_search", None, active=False)
    assert inactive["status"] == "inactive"
    assert m.provider_services([SITE]) == {("acme", "job_search"): True}


def test_export_tables_plan_back_to_the_same_model() -> None:
    tables = flatten_objects(m.directory_objects([PROVIDER], [SITE], VOCABULARY))
    assert set(tables) == set(columns())
    assert len(tables["service_at_location"]) == 1
    decided = plan(tables, Known())
    assert [i for i in decided.issues if i.action != "skipped"] == []
    assert decided.providers[0].id == "acme"
    assert decided.providers[0].phone == "613 555 0100"
    planned = decided.sites[0]
    assert planned.last_verified == datetime.date(2026, 1, 1)
    site = planned.site
    assert (site.id, site.provider_id, site.capacity, site.accepting_referrals) == (
        "acme-perth", "acme", 12, False,
    )  # fmt: skip
    assert site.hours == SITE.hours
    assert (site.languages, site.eligibility, site.catchment_id) == (
        ["fr", "en"], ["youth", "newcomer"], "ottawa",
    )  # fmt: skip
    assert {t.code: t.name_fr for t in decided.terms} == {
        "job_search": "Recherche",
        "large_print": "Gros",
    }


def test_csv_cells_and_header_follow_the_descriptor() -> None:
    text = to_csv("location", [{"id": "x", "latitude": 44.9, "longitude": -76.25}])
    assert text.splitlines()[0].split(",") == list(columns()["location"])
    assert text.splitlines()[1].startswith("x,,,,,,,,44.9,-76.25")


def test_foreign_json_is_flattened_with_parent_links() -> None:
    tables, unknown = flatten_json(
        {"id": "s1", "name": "Help", "status": "active",
         "organization": {"id": "o1", "name": "Org", "description": "d"},
         "service_at_locations": [{"id": "sal1", "location": {
             "id": "l1", "location_type": "physical",
             "phones": [{"id": "p1", "number": "613 555 0100"}]}}]}
    )  # fmt: skip
    assert unknown == []
    assert tables["service"][0]["organization_id"] == "o1"
    assert tables["service_at_location"][0] == {
        "id": "sal1",
        "service_id": "s1",
        "location_id": "l1",
    }
    assert tables["phone"][0]["location_id"] == "l1"
    assert kind_of({"id": "t", "name": "n", "description": "d", "version": "1"}) == "taxonomy"


def test_foreign_rows_are_reported_with_reasons() -> None:
    decided = plan(read_datapackage(EXAMPLES / "csv"), Known())
    reasons = {(i.table, i.action) for i in decided.issues}
    assert ("service", "rejected") in reasons
    assert ("location", "rejected") in reasons
    assert ("funding", "skipped") in reasons
    assert all(i.reason for i in decided.issues)
    assert decided.providers[0].id == "hsds-d9d5e0f5-d3ce-4f73-9a2f-4dd0ecc6c610"
