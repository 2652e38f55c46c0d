"""Placing a site on the map: its given coordinates, or its address through a geopy geocoder.

The geocoder is any ``geopy.geocoders.base.Geocoder``: the bundled offline gazetteer by
default, or a network geocoder such as Nominatim where the machine can reach one. Calls are
synchronous (geopy's default adapter), so callers run ``place_site`` in a worker thread, and
never while they hold a row lock (``patch_site``).
"""

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import msgspec
from geopy.exc import GeopyError
from geopy.geocoders import Nominatim
from geopy.geocoders.base import Geocoder

from contracts.directory import Precision, Site, SiteCreate, SitePatch
from services.directory.errors import InvalidInput
from services.directory.settings import DirectorySettings
from services.directory.store import DirectoryStore
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


def placed_as(site: SiteCreate, merged: SiteCreate, placed: SiteCreate) -> SiteCreate | None:
    """``site`` placed without the geocoder, if the place found for ``merged`` holds for it.

    ``placed`` is ``merged`` placed; ``site`` is the same patch merged again onto the row as
    it is now. A site with coordinates needs no placing; one without takes the point found
    for the same address. None: its address was not the one placed, so place it again.
    """
    if site.lat is not None:
        return site
    if merged.lat is not None or site.address != merged.address:
        return None
    return msgspec.structs.replace(
        site,
        lat=placed.lat,
        lon=placed.lon,
        coord_precision=placed.coord_precision,
        coord_source=placed.coord_source,
    )


async def patch_site(
    store: DirectoryStore,
    site_id: str,
    patch: SitePatch,
    geocoder: Geocoder,
    *,
    check: Callable[[SiteCreate], None],
) -> Site:
    """Apply ``patch`` to the stored site, placing it again when it moves; ``check`` vets
    the merged site (it raises to refuse it).

    Geocoding may go over the network, so it runs before the row is locked. Under the lock
    the patch is merged again onto the row as it is then, so two concurrent patches cannot
    undo each other's fields, and the place found is kept when it still holds.
    """
    while True:
        merged = merge_site_patch(await store.get_site(site_id), patch)
        check(merged)
        placed = await asyncio.to_thread(place_site, merged, geocoder)
        async with store.conn.transaction():
            again = merge_site_patch(await store.get_site(site_id, for_update=True), patch)
            check(again)
            site = placed_as(again, merged, placed)
            if site is not None:
                return await store.upsert_site(site, verified=datetime.date.today())
        # The address to place changed meanwhile: place the site as it is now, unlocked.
