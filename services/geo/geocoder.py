"""geopy's geocoder interface over the offline gazetteer, so a network geocoder can replace it."""

import re
from typing import Any, Literal, overload

import msgspec
from geopy.adapters import BaseSyncAdapter
from geopy.exc import GeocoderServiceError
from geopy.geocoders.base import Geocoder
from geopy.location import Location
from geopy.point import Point as GeopyPoint

from contracts.directory import Origin
from services.geo.errors import UnresolvableLocation
from services.geo.gazetteer import Gazetteer, default_gazetteer

__all__ = ["OfflineGeocoder"]

_LOOKS_LIKE_POSTAL_CODE = re.compile(r"\s*[A-Za-z][0-9][A-Za-z]\s*[0-9][A-Za-z][0-9]\s*$")


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

    def _lookup(self, query: str) -> Origin | None:
        gazetteer = self._gazetteer or default_gazetteer()
        try:
            if _LOOKS_LIKE_POSTAL_CODE.match(query):
                return gazetteer.resolve_postal_code(query)
            return gazetteer.resolve_community(query)
        except UnresolvableLocation:
            return None


def _location(found: Origin, exactly_one: bool) -> Any:
    location = Location(
        found.resolved_from, GeopyPoint(found.lat, found.lon), msgspec.structs.asdict(found)
    )
    return location if exactly_one else [location]
