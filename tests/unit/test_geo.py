"""The offline gazetteer: postal codes, FSAs and community names to points, and its geopy face."""

from pathlib import Path

import pytest
from geopy.distance import geodesic
from geopy.exc import GeocoderServiceError

from contracts.common import ClientLocation
from contracts.directory import Origin
from services.geo import (
    Gazetteer,
    InvalidPostalCode,
    OfflineGeocoder,
    UnknownCommunity,
    UnknownPostalCode,
    default_gazetteer,
)

ALMONTE = (45.22993, -76.19585)
CARLETON_PLACE = (45.13341, -76.14938)
KEMPTVILLE = (44.9983, -75.6558)  # K0G 1J0, as PROVENANCE.md cites it
RICHMOND = (45.1834, -75.83266)
BELLEVILLE = (44.16682, -77.38277)


@pytest.fixture(scope="module")
def gazetteer() -> Gazetteer:
    return default_gazetteer()


def km(point: Origin, other: tuple[float, float]) -> float:
    return float(geodesic((point.lat, point.lon), other).km)


def test_almonte_resolves_to_the_geonames_place(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_community("Almonte")
    assert (found.lat, found.lon) == pytest.approx(ALMONTE, abs=1e-4)
    assert found.precision == "town"
    assert found.resolved_from == "community Almonte (GeoNames place)"


@pytest.mark.parametrize(
    "spelling", ["carleton place", "CARLETON-PLACE", "  Carleton   Place ", "carletonplace"]
)
def test_community_names_ignore_case_spaces_and_punctuation(
    gazetteer: Gazetteer, spelling: str
) -> None:
    assert gazetteer.resolve_community(spelling) == gazetteer.resolve_community("Carleton Place")


def test_community_names_ignore_accents(gazetteer: Gazetteer) -> None:
    assert gazetteer.resolve_community("orleans") == gazetteer.resolve_community("ORLÉANS")


def test_saint_and_st_are_the_same_word(gazetteer: Gazetteer) -> None:
    listed = gazetteer.resolve_community("Ste Anne De Prescott")  # the postal file's spelling
    assert gazetteer.resolve_community("Sainte-Anne-de-Prescott") == listed
    assert gazetteer.resolve_community("saint isidore") == gazetteer.resolve_community("St Isidore")


def test_full_postal_code_resolves_to_its_own_point(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_postal_code("k7c2v8")
    assert found.precision == "postal_code"
    assert found.resolved_from == "postal code K7C 2V8"
    assert km(found, CARLETON_PLACE) < 5


def test_urban_code_missing_from_the_file_falls_back_to_its_fsa(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_postal_code("M5V 3L9")
    assert found.precision == "fsa"
    assert found.resolved_from == "FSA M5V (urban)"
    assert km(found, (43.6404, -79.3995)) < 1


def test_rural_code_missing_from_the_file_is_refused(gazetteer: Gazetteer) -> None:
    with pytest.raises(UnknownPostalCode, match="rural FSA covering hundreds of km²") as caught:
        gazetteer.resolve_postal_code("K0G 9Z9")
    assert caught.value.field == "postal_code"
    assert "community name" in caught.value.message


def test_unknown_fsa_is_refused(gazetteer: Gazetteer) -> None:
    with pytest.raises(UnknownPostalCode, match="not a forward sortation area") as caught:
        gazetteer.resolve_postal_code("X9X 9X9")
    assert caught.value.field == "postal_code"


@pytest.mark.parametrize("text", ["12345", "K7C", "K7C 3P2 X", "D7C 3P2", ""])
def test_malformed_postal_code_is_invalid(gazetteer: Gazetteer, text: str) -> None:
    with pytest.raises(InvalidPostalCode) as caught:
        gazetteer.resolve_postal_code(text)
    assert caught.value.field == "postal_code"


@pytest.mark.parametrize(
    ("code", "bad_point", "town"),
    [
        ("K7C 0H9", (49.6477, -98.5465), CARLETON_PLACE),  # Manitoba
        ("K0A 0A4", (42.7642, -80.8444), RICHMOND),  # Lake Erie shore
        ("K8N 0J1", (42.6751, -81.2199), BELLEVILLE),
        ("K8N 0J2", (42.6751, -81.2199), BELLEVILLE),
        ("K0G 0A1", (44.8883, -76.1209), KEMPTVILLE),  # ≈ 40 km off, shared by 7 villages
    ],
)
def test_known_bad_rows_are_rejected_and_never_returned(
    gazetteer: Gazetteer, code: str, bad_point: tuple[float, float], town: tuple[float, float]
) -> None:
    assert code in gazetteer.rejected
    found = gazetteer.resolve_postal_code(code)
    assert (found.lat, found.lon) != bad_point
    assert km(found, town) < 25
    assert "failed sanity check" in found.resolved_from


def test_k0g_0a1_stands_in_with_the_kemptville_community(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_postal_code("K0G 0A1")
    assert found.precision == "town"
    assert found.resolved_from == (
        "postal code K0G 0A1 → community Kemptville (point failed sanity check)"
    )
    assert km(found, KEMPTVILLE) < 3


@pytest.mark.parametrize("code", ["K0G 0A2", "K0G 0A3", "K0M 0A1", "K0B 0A1"])
def test_default_points_shared_by_several_villages_are_rejected(
    gazetteer: Gazetteer, code: str
) -> None:
    assert "shared by" in gazetteer.rejected[code]


def test_urban_code_with_a_bad_point_uses_its_fsa(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_postal_code("K7C 0H9")
    assert found.precision == "fsa"
    assert found.resolved_from == (
        "postal code K7C 0H9 → FSA K7C (urban; the code's point failed sanity check)"
    )


def test_rural_code_far_from_its_community_is_rejected(gazetteer: Gazetteer) -> None:
    # Bourget's two codes are 54 km apart; GeoNames' Bourget agrees with K0A 1E0 only.
    assert "K0A 0B1" in gazetteer.rejected
    assert "K0A 1E0" not in gazetteer.rejected


def test_a_same_named_place_elsewhere_does_not_veto_rural_codes(gazetteer: Gazetteer) -> None:
    # cities500's Sydenham is near Owen Sound; the K0H Sydenham is north of Kingston.
    found = gazetteer.resolve_postal_code("K0H 2T0")
    assert found.precision == "postal_code"
    assert km(found, (44.4136, -76.5953)) < 5


def test_unknown_community_is_refused(gazetteer: Gazetteer) -> None:
    with pytest.raises(UnknownCommunity, match="Atlantis") as caught:
        gazetteer.resolve_community("Atlantis")
    assert caught.value.field == "community"


def test_unknown_community_suggests_close_names(gazetteer: Gazetteer) -> None:
    with pytest.raises(UnknownCommunity, match="did you mean Kemptville"):
        gazetteer.resolve_community("Kemptvile")


def test_athens_resolves(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_community("Athens")
    assert (found.lat, found.lon) == pytest.approx((44.63, -75.95), abs=0.01)


def test_community_known_only_from_postal_codes_uses_their_median(gazetteer: Gazetteer) -> None:
    found = gazetteer.resolve_community("Kemptville")  # not in cities500
    assert found.resolved_from == "community Kemptville (median of 4 postal codes)"
    assert km(found, KEMPTVILLE) < 3


def test_suggest_completes_a_prefix_most_populous_first(gazetteer: Gazetteer) -> None:
    assert gazetteer.suggest("carl")[0] == "Carleton Place"
    assert "Stittsville" in gazetteer.suggest("st", limit=50)
    assert len(gazetteer.suggest("k", limit=3)) == 3
    assert gazetteer.suggest("  ") == []


def test_offline_geocoder_geocodes_a_postal_code() -> None:
    location = OfflineGeocoder().geocode("K7C 3P2")
    assert location is not None
    assert location.raw["precision"] == "postal_code"
    assert location.raw["resolved_from"] == "postal code K7C 3P2"
    assert geodesic(location.point, CARLETON_PLACE).km < 10


def test_offline_geocoder_geocodes_a_community_and_can_answer_a_list() -> None:
    locations = OfflineGeocoder(default_gazetteer()).geocode("Perth", exactly_one=False)
    assert locations is not None
    assert [loc.raw["precision"] for loc in locations] == ["town"]


@pytest.mark.parametrize("query", ["Atlantis", "K0G 9Z9", "12 Bridge St, Carleton Place"])
def test_offline_geocoder_answers_none_when_it_cannot_place(query: str) -> None:
    assert OfflineGeocoder().geocode(query) is None


def test_offline_geocoder_reverse_finds_the_nearest_community() -> None:
    geocoder = OfflineGeocoder()
    near_almonte = geocoder.reverse("45.23, -76.19")
    assert near_almonte is not None
    assert near_almonte.raw["resolved_from"].startswith("community Almonte")
    assert geocoder.reverse((49.28, -123.12)) is None  # Vancouver: nothing known nearby


def test_offline_geocoder_makes_no_http_requests() -> None:
    with pytest.raises(GeocoderServiceError, match="no HTTP"):
        OfflineGeocoder().adapter.get_text("https://example.org", timeout=1, headers={})


def test_resolve_dispatches_on_the_kind_of_location(gazetteer: Gazetteer) -> None:
    exact = gazetteer.resolve(ClientLocation(lat=45.1, lon=-76.1))
    assert exact == Origin(
        lat=45.1, lon=-76.1, precision="exact", resolved_from="coordinates 45.10000, -76.10000"
    )
    assert gazetteer.resolve(ClientLocation(postal_code="K7C2V8")).precision == "postal_code"
    assert gazetteer.resolve(ClientLocation(community="Almonte")).precision == "town"


def test_community_point_is_the_median_not_the_mean(tmp_path: Path) -> None:
    rows = [("K0A 1A0", 45.00, -76.00), ("K0A 1B0", 45.01, -76.01), ("K0A 1C0", 45.15, -76.00)]
    (tmp_path / "postal_codes_K_eastern_ontario.csv").write_text(
        "postal_code,place_name,province,latitude,longitude\n"
        + "".join(f"{code},Testville,Ontario,{lat},{lon}\n" for code, lat, lon in rows),
        encoding="utf-8",
    )
    (tmp_path / "CA.txt").write_text(
        "CA\tK0A\tSomewhere\tOntario\tON\t\t\t\t\t45.2\t-76.2\t5\n", encoding="utf-8"
    )
    (tmp_path / "fsa_centroids_pypostalcode.csv").write_text(
        "fsa,place_name,province,latitude,longitude,utc_offset_hours,dst\n", encoding="utf-8"
    )
    (tmp_path / "ontario_places_geonames_cities500.csv").write_text(
        "geonameid,name,latitude,longitude,countrycode,admin1code,population,timezone\n",
        encoding="utf-8",
    )
    found = Gazetteer.load(tmp_path).resolve_community("testville")
    assert (found.lat, found.lon) == (45.01, -76.00)  # the mean latitude would be 45.053
