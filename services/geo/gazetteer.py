"""Client locations to points, offline: the bundled gazetteer (GeoNames and Statistics Canada).

DESIGN.md section 4: coordinates as given; otherwise a full postal code, then its FSA when the
FSA is urban, then a community name. Every answer says how precise it is and how it was found.
Nothing here touches the network; the data is read from ``data/`` once, by ``Gazetteer.load``.
"""

import difflib
import functools
import itertools
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from geopy.distance import great_circle

from contracts.common import ClientLocation, normalize_postal_code
from contracts.directory import Origin, OriginPrecision
from services.geo._tables import Tables, community_key, is_rural, load_tables, name_tokens
from services.geo.errors import InvalidPostalCode, UnknownCommunity, UnknownPostalCode

__all__ = ["DEFAULT_DATA_DIR", "Gazetteer", "default_gazetteer"]

DEFAULT_DATA_DIR = Path(__file__).parent / "data"
#: ``reverse`` answers only when a known community is this close.
NEAREST_COMMUNITY_MAX_KM = 50.0


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

    def resolve(self, location: ClientLocation) -> Origin:
        """Resolve whichever of coordinates, postal code or community ``location`` carries."""
        if location.postal_code is not None:
            return self.resolve_postal_code(location.postal_code)
        if location.community is not None:
            return self.resolve_community(location.community)
        if location.lat is None or location.lon is None:  # ClientLocation's own rule forbids it
            raise ValueError("the location has no coordinates, postal code or community")
        return self.resolve_point(location.lat, location.lon)

    def resolve_point(self, lat: float, lon: float) -> Origin:
        return _origin(lat, lon, "exact", f"coordinates {lat:.5f}, {lon:.5f}")

    def resolve_postal_code(self, text: str) -> Origin:
        """Full code, else its urban FSA; raises ``InvalidPostalCode`` / ``UnknownPostalCode``."""
        try:
            code = normalize_postal_code(text)
        except ValueError as exc:
            raise InvalidPostalCode(str(exc), field="postal_code") from exc
        tables, fsa = self._tables, code[:3]
        row = tables.postal_codes.get(code)
        if row is not None and code not in tables.rejected:
            return _origin(row.point.lat, row.point.lon, "postal_code", f"postal code {code}")
        if code in tables.fallbacks:
            town = tables.communities[tables.fallbacks[code]]
            trail = f"postal code {code} → community {town.name} (point failed sanity check)"
            return _origin(town.point.lat, town.point.lon, "town", trail)
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
        return _origin(known.point.lat, known.point.lon, "fsa", trail)

    def resolve_community(self, name: str) -> Origin:
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
        return _origin(found.point.lat, found.point.lon, "town", trail)

    def suggest(self, prefix: str, limit: int = 10) -> list[str]:
        """Community names starting with ``prefix``, most populous (or most postal codes) first."""
        key, plain = community_key(prefix), "".join(name_tokens(prefix))
        if not plain or limit <= 0:
            return []
        matches = (c.name for k, p, c in self._ranked if k.startswith(key) or p.startswith(plain))
        return list(itertools.islice(matches, limit))

    def nearest_community(
        self, lat: float, lon: float, max_km: float = NEAREST_COMMUNITY_MAX_KM
    ) -> Origin | None:
        """The known community closest to the point, if one lies within ``max_km``."""
        distances = (
            (great_circle((lat, lon), c.point).km, c) for c in self._tables.communities.values()
        )
        km, nearest = min(distances, key=lambda pair: pair[0])
        if km > max_km:
            return None
        trail = f"community {nearest.name}, nearest to {lat:.5f}, {lon:.5f} ({km:.1f} km)"
        return _origin(nearest.point.lat, nearest.point.lon, "town", trail)


@functools.cache
def default_gazetteer() -> Gazetteer:
    """The gazetteer over the bundled data, loaded on first use and shared (it is read-only)."""
    return Gazetteer.load()


def _origin(lat: float, lon: float, precision: OriginPrecision, resolved_from: str) -> Origin:
    return Origin(lat=lat, lon=lon, precision=precision, resolved_from=resolved_from)
