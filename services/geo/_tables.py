"""The gazetteer's tables: the bundled GeoNames / StatCan files, read once and sanity-checked.

Every full postal code is screened here, at load time, so a lookup never returns a point that
the data's known faults would put in Manitoba or 40 km from the town (see PROVENANCE.md of
``geonames-postal-eastern-ontario``). ``Tables.rejected`` says why each rejected code is unused.
"""

import csv
import math
import re
import statistics
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

from geopy.distance import geodesic

POSTAL_CODES_FILE = "postal_codes_K_eastern_ontario.csv"
GEONAMES_FSA_FILE = "CA.txt"
STATCAN_FSA_FILE = "fsa_centroids_pypostalcode.csv"
PLACES_FILE = "ontario_places_geonames_cities500.csv"

#: How far a full code's point may lie from its reference (FSA or community point).
MAX_OFFSET_KM = 25.0
#: (south, north, west, east): the K district (Lindsay, Haliburton and Peterborough to the
#: Quebec border) with a margin; rough on purpose, the distance check does the fine work.
EASTERN_ONTARIO_BOX = (43.7, 46.5, -79.4, -74.2)

_ALIASES = {"st": "saint", "ste": "sainte"}
_KM_PER_DEGREE = 6371.0 * math.pi / 180


class Point(NamedTuple):
    lat: float
    lon: float


class PostalRow(NamedTuple):
    code: str
    place: str
    key: str  # community_key(place)
    point: Point


class FsaPoint(NamedTuple):
    point: Point
    source: str


class Community(NamedTuple):
    name: str
    point: Point
    population: int  # 0 when the name comes only from the postal-code file
    codes: int  # accepted full postal codes carrying this name
    source: str


class Tables(NamedTuple):
    postal_codes: dict[str, PostalRow]  # every row, accepted or not
    rejected: dict[str, str]  # code -> why its point is not used
    fallbacks: dict[str, str]  # rejected rural code -> key of the community standing in
    fsas: dict[str, FsaPoint]
    communities: dict[str, Community]  # community_key(name) -> community


def name_tokens(text: str) -> list[str]:
    """Lower-case, accent-free alphanumeric runs of ``text``."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", plain)


def community_key(text: str) -> str:
    """Match key: ``Carleton-Place``, ``carleton place`` and ``CARLETONPLACE`` are equal."""
    # The postal file writes "St Isidore", "Ste Anne De Prescott"; people write "Saint-Isidore".
    return "".join(_ALIASES.get(token, token) for token in name_tokens(text))


def is_rural(fsa: str) -> bool:
    """A zero second character marks a rural FSA (hundreds of km², no meaningful point)."""
    return fsa[1] == "0"


def in_box(point: Point) -> bool:
    south, north, west, east = EASTERN_ONTARIO_BOX
    return south <= point.lat <= north and west <= point.lon <= east


def distance_km(a: Point, b: Point) -> float:
    return float(geodesic(a, b).km)


def is_near(a: Point, b: Point, km: float = MAX_OFFSET_KM) -> bool:
    """Whether ``a`` is within ``km`` of ``b`` (WGS84 geodesic)."""
    # geodesic costs ~0.1 ms and there are 46k rows: a flat-earth estimate (well under 1 %
    # off at this scale) settles the clear cases, geodesic only those near the line.
    east = (a.lon - b.lon) * math.cos(math.radians((a.lat + b.lat) / 2))
    rough = _KM_PER_DEGREE * math.hypot(a.lat - b.lat, east)
    if rough < 0.9 * km or rough > 1.1 * km:
        return rough < km
    return distance_km(a, b) <= km


def median_point(points: Iterable[Point]) -> Point:
    """Median latitude and median longitude: one wild row cannot drag it, unlike a mean."""
    listed = list(points)
    return Point(statistics.median(p.lat for p in listed), statistics.median(p.lon for p in listed))


def load_tables(data_dir: Path) -> Tables:
    """Read the four files in ``data_dir`` and decide, once, which full-code points to trust."""
    fsas = _read_statcan_fsas(data_dir / STATCAN_FSA_FILE)
    fsas.update(_read_geonames_fsas(data_dir / GEONAMES_FSA_FILE))  # newer; wins when both
    places = _read_places(data_dir / PLACES_FILE)
    rows = _read_postal_codes(data_dir / POSTAL_CODES_FILE)
    rejected = _screen_box_and_shared_defaults(rows)

    by_key: defaultdict[str, list[PostalRow]] = defaultdict(list)
    for row in rows.values():
        if row.code not in rejected:
            by_key[row.key].append(row)
    rural_refs = {key: _rural_reference(places.get(key), group) for key, group in by_key.items()}

    def reference(row: PostalRow) -> tuple[Point, str] | None:
        fsa = row.code[:3]
        if is_rural(fsa):
            return rural_refs.get(row.key)
        known = fsas.get(fsa)
        return None if known is None else (known.point, f"the FSA {fsa} point")

    for row in rows.values():
        if row.code in rejected:
            continue
        ref = reference(row)
        if ref is None:
            rejected[row.code] = "no reference point to check it against"
        elif not is_near(row.point, ref[0]):
            rejected[row.code] = f"{distance_km(row.point, ref[0]):.0f} km from {ref[1]}"

    communities = _communities(places, (r for r in rows.values() if r.code not in rejected))
    fallbacks: dict[str, str] = {}
    for code in rejected:
        row, key = rows[code], rows[code].key
        ref, stand_in = reference(row), communities.get(key)
        # Urban codes fall back to their FSA instead (a few km across, unlike a city's point);
        # a same-named place elsewhere in Ontario must not stand in for a rural one.
        if is_rural(code[:3]) and ref and stand_in and is_near(stand_in.point, ref[0]):
            fallbacks[code] = key
    return Tables(rows, rejected, fallbacks, fsas, communities)


def _rural_reference(place: Community | None, group: list[PostalRow]) -> tuple[Point, str]:
    # cities500 holds a "Sydenham" near Owen Sound and a Toronto "Maple Leaf": trust its point
    # only when one of the place's own codes agrees with it; else take the codes' median.
    if place is not None and any(is_near(place.point, row.point) for row in group):
        return place.point, f"the {place.name} community point"
    return median_point(row.point for row in group), f"the median of {group[0].place}'s codes"


def _screen_box_and_shared_defaults(rows: dict[str, PostalRow]) -> dict[str, str]:
    rejected: dict[str, str] = {}
    shared: defaultdict[Point, list[PostalRow]] = defaultdict(list)
    for row in rows.values():
        if not in_box(row.point):
            rejected[row.code] = f"{row.point.lat},{row.point.lon} is outside Eastern Ontario"
        elif is_rural(row.code[:3]) and row.code[4] == "0":
            shared[row.point].append(row)
    # Rural "…0A1"-style codes of towns tens of km apart can carry one identical default point.
    for point, group in shared.items():
        names = sorted({row.place for row in group})
        if len(names) > 1:
            for row in group:
                rejected[row.code] = (
                    f"default point {point.lat},{point.lon} shared by {', '.join(names)}"
                )
    return rejected


def _communities(
    places: dict[str, Community], accepted: Iterable[PostalRow]
) -> dict[str, Community]:
    by_key: defaultdict[str, list[PostalRow]] = defaultdict(list)
    for row in accepted:
        by_key[row.key].append(row)
    communities = {key: c._replace(codes=len(by_key.get(key, ()))) for key, c in places.items()}
    for key, group in by_key.items():
        if key not in communities:
            point = median_point(row.point for row in group)
            source = f"median of {len(group)} postal code{'' if len(group) == 1 else 's'}"
            communities[key] = Community(group[0].place, point, 0, len(group), source)
    return communities


def _read_csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as file:
        yield from csv.DictReader(file)


def _read_postal_codes(path: Path) -> dict[str, PostalRow]:
    keys: dict[str, str] = {}  # 46k rows but a few hundred names: normalise each name once
    rows: dict[str, PostalRow] = {}
    with path.open(encoding="utf-8", newline="") as file:
        reader = csv.reader(file)
        columns = {name: index for index, name in enumerate(next(reader))}
        code, place = columns["postal_code"], columns["place_name"]
        lat, lon = columns["latitude"], columns["longitude"]
        for fields in reader:
            name = fields[place]
            if name not in keys:
                keys[name] = community_key(name)
            point = Point(float(fields[lat]), float(fields[lon]))
            rows[fields[code]] = PostalRow(fields[code], name, keys[name], point)
    return rows


def _read_places(path: Path) -> dict[str, Community]:
    places: dict[str, Community] = {}
    for r in _read_csv(path):
        key, population = community_key(r["name"]), int(r["population"] or 0)
        # Names repeat ("Vanier" in Ottawa and near Kitchener): keep the most populous.
        if key not in places or population > places[key].population:
            point = Point(float(r["latitude"]), float(r["longitude"]))
            places[key] = Community(r["name"], point, population, 0, "GeoNames place")
    return places


def _read_geonames_fsas(path: Path) -> dict[str, FsaPoint]:
    fsas: dict[str, FsaPoint] = {}
    with path.open(encoding="utf-8", newline="") as file:
        for fields in csv.reader(file, delimiter="\t"):
            if fields[9] and fields[10]:
                fsas[fields[1]] = FsaPoint(Point(float(fields[9]), float(fields[10])), "GeoNames")
    return fsas


def _read_statcan_fsas(path: Path) -> dict[str, FsaPoint]:
    return {
        r["fsa"]: FsaPoint(Point(float(r["latitude"]), float(r["longitude"])), "StatCan 2011")
        for r in _read_csv(path)
    }
