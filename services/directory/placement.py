"""Placing a site on the map: its given coordinates, or its address through a geopy geocoder.

The geocoder is any ``geopy.geocoders.base.Geocoder``: the bundled offline gazetteer by
default, or a network geocoder such as Nominatim where the machine can reach one. Calls are
synchronous (geopy's default adapter), so callers run ``place_site`` in a worker thread.
"""

from typing import Any

import msgspec
from geopy.exc import GeopyError
from geopy.geocoders import Nominatim
from geopy.geocoders.base import Geocoder

from contracts.directory import Precision, Site, SiteCreate, SitePatch
from services.directory.errors import InvalidInput
from services.directory.settings import DirectorySettings
from services.geo import OfflineGeocoder

#: What each of the gazetteer's origin precisions means for a site's point.
_SITE_PRECISION: dict[str, Precision] = {
    "exact": "street",
    "postal_code": "postal_code",
    "fsa": "town",
    "town": "town",
}


def make_geocoder(settings: DirectorySettings) -> Geocoder:
    if settings.geocoder == "offline":
        return OfflineGeocoder()
    if settings.geocoder == "nominatim":
        return Nominatim(user_agent=settings.geocoder_user_agent, timeout=5)
    raise ValueError(f"unknown geocoder {settings.geocoder!r} (use 'offline' or 'nominatim')")


def place_site(site: SiteCreate, geocoder: Geocoder) -> SiteCreate:
    """``site`` with coordinates: as given, else the best the geocoder finds for its address.

    Tries the street address (network geocoders only resolve that), then the postal code,
    then the city; records the precision and source of whichever answered.
    """
    if site.lat is not None:
        return site
    address = site.address
    street = ", ".join(
        part for part in [address.address_1, address.city, address.province, "Canada"] if part
    )
    attempts: list[tuple[str, Precision | None]] = [(street, "street")]
    if address.postal_code:
        attempts.append((address.postal_code, None))
    attempts.append((address.city, None))
    for query, precision in attempts:
        try:
            found: Any = geocoder.geocode(query, exactly_one=True)
        except GeopyError:
            found = None
        if found is None:
            continue
        raw = found.raw if isinstance(found.raw, dict) else {}
        offline_precision = raw.get("precision")
        return msgspec.structs.replace(
            site,
            lat=found.latitude,
            lon=found.longitude,
            coord_precision=precision
            if offline_precision is None
            else _SITE_PRECISION.get(offline_precision, "town"),
            coord_source=f"{type(geocoder).__name__}: {raw.get('resolved_from', query)}",
        )
    raise InvalidInput(
        f"cannot place the site from its address (tried {', '.join(q for q, _ in attempts)}); "
        "give lat and lon",
        field="$.address",
    )


def merge_site_patch(current: Site, patch: SitePatch) -> SiteCreate:
    """The full site that ``patch`` makes of ``current``.

    A new address without new coordinates clears them, so ``place_site`` places it again.
    """
    changes = {k: v for k, v in msgspec.structs.asdict(patch).items() if v is not msgspec.UNSET}
    merged = {name: getattr(current, name) for name in SiteCreate.__struct_fields__} | changes
    if "address" in changes and "lat" not in changes:
        merged["lat"] = merged["lon"] = None
    try:
        # Through the contract again, so rules across fields (min_age <= max_age) still hold.
        return msgspec.convert(merged, SiteCreate, from_attributes=True)
    except msgspec.ValidationError as exc:
        raise InvalidInput(str(exc), field="body") from exc
