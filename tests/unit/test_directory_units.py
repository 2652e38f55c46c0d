"""Pure parts of the directory: settings, placement, patch merging, query building, seed file."""

import datetime
import hashlib

import msgspec
import pytest
from geopy.distance import geodesic
from hypothesis import given, settings, strategies as st

from contracts.directory import Address, Site, SiteCreate, SitePatch
from services.access.principal import Principal
from services.access.tokens import digest
from services.directory.errors import InvalidInput
from services.directory.placement import merge_site_patch, place_site
from services.directory.search import search_query
from services.directory.seed import read_seed
from services.directory.settings import DirectorySettings
from services.directory.site_query import SiteFilter
from services.geo import OfflineGeocoder, default_gazetteer, geodesic_km
from services.infra.settings import InfraSettings


def site_create(**changes) -> SiteCreate:
    base = SiteCreate(
        id="test-site",
        provider_id="test-provider",
        name="Test",
        address=Address(address_1="1 Gore St", city="Perth"),
        services=["resume_writing"],
    )
    return msgspec.structs.replace(base, **changes)


def test_infra_settings_from_env() -> None:
    settings = InfraSettings.from_env(
        {"EO_STATE_DIR": "/tmp/x", "EO_PG_PORT": "6000", "DATABASE_URL": "postgresql://db/eo"}
    )
    assert str(settings.state_dir) == "/tmp/x"
    assert settings.pg_port == 6000
    assert settings.database_url == "postgresql://db/eo"
    assert settings.nats_url is None


def test_a_bad_setting_names_the_environment_variable() -> None:
    with pytest.raises(msgspec.ValidationError, match="EO_NATS_PORT"):
        InfraSettings.from_env({"EO_NATS_PORT": "four"})


def test_directory_settings_from_env() -> None:
    settings = DirectorySettings.from_env(
        "postgresql://db/eo", {"DIRECTORY_PORT": "9000", "DIRECTORY_ADMIN_TOKEN": "s3cret"}
    )
    assert (settings.port, settings.admin_token, settings.geocoder) == (9000, "s3cret", "offline")


def test_placement_keeps_given_coordinates() -> None:
    site = site_create(lat=44.9, lon=-76.2, coord_precision="street")
    assert place_site(site, OfflineGeocoder()) is site


def test_placement_from_postal_code_then_city() -> None:
    with_code = site_create(
        address=Address(address_1="1 Main", city="Perth", postal_code="K7H 1A1")
    )
    placed = place_site(with_code, OfflineGeocoder())
    assert placed.coord_precision in {"postal_code", "town"}
    assert placed.lat == pytest.approx(44.9, abs=0.05)
    by_city = place_site(site_create(), OfflineGeocoder())
    assert by_city.coord_precision == "town"
    assert "Perth" in by_city.coord_source


def test_placement_that_finds_nothing_names_the_address() -> None:
    lost = site_create(address=Address(address_1="1 Main", city="Atlantis"))
    with pytest.raises(InvalidInput) as caught:
        place_site(lost, OfflineGeocoder())
    assert caught.value.field == "$.address"


def stored(site: SiteCreate) -> Site:
    now = datetime.datetime.now(datetime.UTC)
    fields = msgspec.structs.asdict(site)
    return Site(
        **fields | {"lat": 44.9, "lon": -76.25},
        reserved=0,
        last_verified=None,
        created_at=now,
        updated_at=now,
    )


def test_patch_changes_only_what_it_names() -> None:
    current = stored(site_create(capacity=10))
    merged = merge_site_patch(current, SitePatch(capacity=3))
    assert (merged.capacity, merged.lat, merged.name) == (3, 44.9, "Test")


def test_a_new_address_without_coordinates_is_placed_again() -> None:
    current = stored(site_create())
    merged = merge_site_patch(current, SitePatch(address=Address(address_1="1", city="Almonte")))
    assert merged.lat is None
    assert place_site(merged, OfflineGeocoder()).lat == pytest.approx(45.23, abs=0.01)


def test_patch_that_breaks_a_rule_across_fields_is_refused() -> None:
    current = stored(site_create(min_age=16))
    with pytest.raises(InvalidInput):
        merge_site_patch(current, SitePatch(max_age=15))


def test_nearest_query_binds_only_the_filters_given() -> None:
    sql, args = search_query(45.0, -76.0, SiteFilter(), 10)
    assert args == [45.0, -76.0, 10]
    assert "ORDER BY s.earth_point <-> (SELECT ll_to_earth($1, $2)) LIMIT $3" in sql
    where = SiteFilter(services=["job_search"], language="fr", radius_km=10, accepting=True)
    sql, args = search_query(45.0, -76.0, where, 5)
    assert "earth_box" in sql
    assert "s.reserved < s.capacity" in sql
    assert args == [45.0, -76.0, ["job_search"], "fr", pytest.approx(10_100), 5]


def test_seed_offices_sit_at_their_towns_gazetteer_points() -> None:
    seed = read_seed()
    assert {p.id for p in seed.providers} == {
        "canadian-career-academy",
        "community-employment-services",
        "ontrac-employment-resource-services",
    }
    for site in seed.sites:
        town = default_gazetteer().resolve_community(site.address.city)
        assert (site.lat, site.lon) == pytest.approx((town.lat, town.lon), abs=1e-5)
        assert site.coord_precision == "town"
    assert len(seed.catchments) == 15
    assert len(seed.services) == 16
    assert len(seed.accessibility) == 6


def test_who_may_write_whose_records() -> None:
    admin = Principal(token_id="t1", role="admin")
    staff = Principal(token_id="t2", role="staff")
    ontrac = Principal(token_id="t3", role="provider", provider_id="ontrac")
    assert admin.may_write("ontrac")
    assert admin.may_write("anyone")
    assert not staff.may_write("ontrac")
    assert ontrac.may_write("ontrac")
    assert not ontrac.may_write("ces")


def test_a_token_digest_is_sha256_of_its_whole_text() -> None:
    token = "tok_0123456789ab.secret"
    assert digest(token) == hashlib.sha256(token.encode()).digest()
    assert len(digest(token)) == 32


latitudes = st.floats(min_value=-90, max_value=90)
longitudes = st.floats(min_value=-180, max_value=180)


@settings(max_examples=2000)
@given(latitudes, longitudes, latitudes, longitudes)
def test_geodesic_km_is_geopys_geodesic(lat1, lon1, lat2, lon2):
    """PROJ's C geodesic gives the distance geopy's ``geodesic`` gives, anywhere on earth
    (nearly antipodal points included), to within a micrometre."""
    expected = geodesic((lat1, lon1), (lat2, lon2)).km
    assert geodesic_km(lat1, lon1, lat2, lon2) == pytest.approx(expected, abs=1e-9)


def test_geodesic_km_between_lanark_county_offices():
    # Carleton Place to Smiths Falls (Canadian Career Academy to Ontrac), by geopy: 27.5 km.
    carleton_place, smiths_falls = (45.1369, -76.1425), (44.9043, -76.0226)
    expected = geodesic(carleton_place, smiths_falls).km
    assert geodesic_km(*carleton_place, *smiths_falls) == pytest.approx(expected, abs=1e-9)
    assert expected == pytest.approx(27.523, abs=1e-3)
    assert geodesic_km(*carleton_place, *carleton_place) == 0
