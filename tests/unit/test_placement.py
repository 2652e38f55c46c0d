"""A patch's place, found before the row is locked, applied to the patch merged again under it."""

import msgspec
import pytest

from contracts.directory import Address, SiteCreate
from services.directory.placement import place_site, placed_as
from services.geo import OfflineGeocoder

PERTH = Address(address_1="1 Gore St", city="Perth")
ALMONTE = Address(address_1="1 Main St", city="Almonte")


def site_create(**changes) -> SiteCreate:
    base = SiteCreate(
        id="test-site",
        provider_id="test-provider",
        name="Test",
        address=PERTH,
        services=["resume_writing"],
    )
    return msgspec.structs.replace(base, **changes)


def test_a_site_with_coordinates_needs_no_place() -> None:
    merged = site_create(lat=44.9, lon=-76.25)
    again = site_create(lat=44.9, lon=-76.25, capacity=7)
    assert placed_as(again, merged, merged) is again


def test_the_place_found_for_the_same_address_is_kept() -> None:
    merged = site_create(address=ALMONTE)
    placed = place_site(merged, OfflineGeocoder())
    again = site_create(address=ALMONTE, capacity=7)
    site = placed_as(again, merged, placed)
    assert site is not None
    assert (site.lat, site.lon) == (placed.lat, placed.lon)
    assert (site.coord_precision, site.coord_source) == (
        placed.coord_precision,
        placed.coord_source,
    )
    assert site.lat == pytest.approx(45.23, abs=0.01)
    assert site.capacity == 7


def test_another_address_must_be_placed_again() -> None:
    merged = site_create(address=ALMONTE)
    placed = place_site(merged, OfflineGeocoder())
    assert placed_as(site_create(address=PERTH), merged, placed) is None


def test_a_place_not_found_by_the_geocoder_is_not_reused() -> None:
    merged = site_create(lat=44.9, lon=-76.25)
    assert placed_as(site_create(), merged, merged) is None
