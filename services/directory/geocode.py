"""Client locations to points, offline: the bundled gazetteer and a geopy geocoder over it.

DESIGN.md section 4: coordinates as given; otherwise a full postal code, then its FSA when the
FSA is urban, then a community name. Every answer says how precise it is and how it was found.
Nothing here touches the network; the data is read from ``data/`` once, by ``Gazetteer.load``.
"""

import difflib
import functools
import itertools
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, overload

import msgspec
from geopy.adapters import BaseSyncAdapter
from geopy.distance import great_circle
from geopy.exc import GeocoderServiceError
from geopy.geocoders.base import Geocoder
from geopy.location import Location
from geopy.point import Point as GeopyPoint

from contracts.common import ClientLocation, normalize_postal_code
from services.directory._gazetteer_data import (
    Tables,
    community_key,
    is_rural,
    load_tables,
    name_tokens,
)
from services.directory.errors import InvalidPostalCode, UnknownCommunity, UnknownPostalCode

__all__ = [
    "DEFAULT_DATA_DIR",
    "Gazetteer",
    "OfflineGeocoder",
    "Precision",
    "ResolvedPoint",
    "default_gazetteer",
]

DEFAULT_DATA_DIR = Path(__file__).parent / "data"
#: ``reverse`` answers only when a known community is this close.
NEAREST_COMMUNITY_MAX_KM = 50.0

Precision = Literal["exact", "postal_code", "fsa", "town"]

_LOOKS_LIKE_POSTAL_CODE = re.compile(r"\s*[A-Za-z][0-9][A-Za-z]\s*[0-9][A-Za-z][0-9]\s*$")


class ResolvedPoint(msgspec.Struct, frozen=True):
    """A WGS84 point, how precise it is, and the trail a caseworker reads to see why."""

    lat: float
    lon: float
    precision: Precision
    resolved_from: str


class Gazetteer:
    """Postal codes and Ontario community names to points; build one with ``Gazetteer.load``."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        #: Full postal codes whose point is not used, with the reason.
        self.rejected: Mapping[str, str] = MappingProxyType(tables.rejected)
        by_rank = sorted(
            tables.communities.items(),
            key=lambda item: (-item[1].population, -item[1].codes, item[1].name),
        )
        # The plain key lets "St" still suggest "Stittsville" while the alias finds "Saint-…".
        self._ranked = [(key, "".join(name_tokens(c.name)), c) for key, c in by_rank]

    @classmethod
    def load(cls, data_dir: Path = DEFAULT_DATA_DIR) -> "Gazetteer":
        return cls(load_tables(data_dir))

    def resolve(self, location: ClientLocation) -> ResolvedPoint:
        """Resolve whichever of coordinates, postal code or community ``location`` carries."""
        if location.postal_code is not None:
            return self.resolve_postal_code(location.postal_code)
        if location.community is not None:
            return self.resolve_community(location.community)
        if location.lat is None or location.lon is None:  # ClientLocation's own rule forbids it
            raise ValueError("the location has no coordinates, postal code or community")
        return self.resolve_point(location.lat, location.lon)

    def resolve_point(self, lat: float, lon: float) -> ResolvedPoint:
        return ResolvedPoint(lat, lon, "exact", f"coordinates {lat:.5f}, {lon:.5f}")

    def resolve_postal_code(self, text: str) -> ResolvedPoint:
        """Full code, else its urban FSA; raises ``InvalidPostalCode`` / ``UnknownPostalCode``."""
        try:
            code = normalize_postal_code(text)
        except ValueError as exc:
            raise InvalidPostalCode(str(exc), field="postal_code") from exc
        tables, fsa = self._tables, code[:3]
        row = tables.postal_codes.get(code)
        if row is not None and code not in tables.rejected:
            return ResolvedPoint(row.point.lat, row.point.lon, "postal_code", f"postal code {code}")
        if code in tables.fallbacks:
            town = tables.communities[tables.fallbacks[code]]
            trail = f"postal code {code} → community {town.name} (point failed sanity check)"
            return ResolvedPoint(town.point.lat, town.point.lon, "town", trail)
        known = tables.fsas.get(fsa)
        if known is None:
            raise UnknownPostalCode(
                f"{code}: {fsa} is not a forward sortation area in the bundled GeoNames or "
                "Statistics Canada data; check the code or give the community name",
                field="postal_code",
            )
        if is_rural(fsa):
            why = (
                f"{code} is not in the bundled postal-code data (Eastern Ontario, 2022)"
                if row is None
                else f"the point of {code} failed the sanity check ({tables.rejected[code]})"
            )
            raise UnknownPostalCode(
                f"{why}, and {fsa} is a rural FSA covering hundreds of km², too large to place "
                "a client: give another full postal code or the community name",
                field="postal_code",
            )
        # An urban FSA is a few km across: closer than a city-wide community point would be.
        notes = ["urban"] if known.source == "GeoNames" else ["urban", f"{known.source} point"]
        if row is not None:
            notes.append("the code's point failed sanity check")
        prefix = "" if row is None else f"postal code {code} → "
        trail = f"{prefix}FSA {fsa} ({'; '.join(notes)})"
        return ResolvedPoint(known.point.lat, known.point.lon, "fsa", trail)

    def resolve_community(self, name: str) -> ResolvedPoint:
        """Look ``name`` up ignoring case, accents, spaces and punctuation; ``UnknownCommunity``."""
        key = community_key(name)
        found = self._tables.communities.get(key)
        if found is None:
            close = difflib.get_close_matches(key, self._tables.communities, n=3) if key else []
            hint = (
                f"did you mean {', '.join(self._tables.communities[k].name for k in close)}?"
                if close
                else "check the spelling or give a postal code"
            )
            raise UnknownCommunity(
                f"{name!r} is not a community the offline gazetteer knows; {hint}",
                field="community",
            )
        trail = f"community {found.name} ({found.source})"
        return ResolvedPoint(found.point.lat, found.point.lon, "town", trail)

    def suggest(self, prefix: str, limit: int = 10) -> list[str]:
        """Community names starting with ``prefix``, most populous (or most postal codes) first."""
        key, plain = community_key(prefix), "".join(name_tokens(prefix))
        if not plain or limit <= 0:
            return []
        matches = (c.name for k, p, c in self._ranked if k.startswith(key) or p.startswith(plain))
        return list(itertools.islice(matches, limit))

    def nearest_community(
        self, lat: float, lon: float, max_km: float = NEAREST_COMMUNITY_MAX_KM
    ) -> ResolvedPoint | None:
        """The known community closest to the point, if one lies within ``max_km``."""
        distances = (
            (great_circle((lat, lon), c.point).km, c) for c in self._tables.communities.values()
        )
        km, nearest = min(distances, key=lambda pair: pair[0])
        if km > max_km:
            return None
        trail = f"community {nearest.name}, nearest to {lat:.5f}, {lon:.5f} ({km:.1f} km)"
        return ResolvedPoint(nearest.point.lat, nearest.point.lon, "town", trail)


@functools.cache
def default_gazetteer() -> Gazetteer:
    """The gazetteer over the bundled data, loaded on first use and shared (it is read-only)."""
    return Gazetteer.load()


class _NoNetworkAdapter(BaseSyncAdapter):  # type: ignore[misc]  # geopy ships no types
    """geopy's HTTP seam, closed: the offline geocoder answers from memory only."""

    def get_json(self, url: str, *, timeout: float, headers: dict[str, str]) -> Any:
        raise GeocoderServiceError(f"the offline geocoder makes no HTTP requests ({url})")

    def get_text(self, url: str, *, timeout: float, headers: dict[str, str]) -> str:
        raise GeocoderServiceError(f"the offline geocoder makes no HTTP requests ({url})")


class OfflineGeocoder(Geocoder):  # type: ignore[misc]  # geopy ships no types
    """geopy's geocoder interface over the gazetteer, so a network geocoder can replace it.

    ``geocode`` takes a postal code or a community name, not a street address (it answers
    None, so a caller can fall back to the postal code, then the town). ``Location.raw``
    holds ``precision`` and ``resolved_from``. Network options such as ``timeout`` are
    accepted and ignored.
    """

    def __init__(self, gazetteer: Gazetteer | None = None) -> None:
        super().__init__(adapter_factory=_NoNetworkAdapter)
        self._gazetteer = gazetteer  # None: the shared default, loaded on first query

    @overload
    def geocode(
        self, query: str, *, exactly_one: Literal[True] = True, **kwargs: object
    ) -> Location | None: ...
    @overload
    def geocode(
        self, query: str, *, exactly_one: Literal[False], **kwargs: object
    ) -> list[Location] | None: ...
    def geocode(
        self, query: str, *, exactly_one: bool = True, **kwargs: object
    ) -> Location | list[Location] | None:
        found = self._lookup(query)
        return None if found is None else _location(found, exactly_one)

    @overload
    def reverse(
        self, query: Any, *, exactly_one: Literal[True] = True, **kwargs: object
    ) -> Location | None: ...
    @overload
    def reverse(
        self, query: Any, *, exactly_one: Literal[False], **kwargs: object
    ) -> list[Location] | None: ...
    def reverse(
        self, query: Any, *, exactly_one: bool = True, **kwargs: object
    ) -> Location | list[Location] | None:
        """The nearest known community to ``query`` (anything ``geopy.Point`` accepts)."""
        point = GeopyPoint(query)
        gazetteer = self._gazetteer or default_gazetteer()
        found = gazetteer.nearest_community(point.latitude, point.longitude)
        return None if found is None else _location(found, exactly_one)

    def _lookup(self, query: str) -> ResolvedPoint | None:
        gazetteer = self._gazetteer or default_gazetteer()
        try:
            if _LOOKS_LIKE_POSTAL_CODE.match(query):
                return gazetteer.resolve_postal_code(query)
            return gazetteer.resolve_community(query)
        except (InvalidPostalCode, UnknownPostalCode, UnknownCommunity):
            return None


def _location(found: ResolvedPoint, exactly_one: bool) -> Any:
    location = Location(
        found.resolved_from, GeopyPoint(found.lat, found.lon), msgspec.structs.asdict(found)
    )
    return location if exactly_one else [location]
