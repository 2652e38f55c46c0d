"""Places, postal codes and distances in Ontario: what the directory and the router both need
and neither owns (DESIGN.md section 2). Offline: the bundled data in ``data/`` (see its
ATTRIBUTION.md), read once.
"""

from services.geo.distance import geodesic_km
from services.geo.errors import (
    InvalidPostalCode,
    UnknownCommunity,
    UnknownPostalCode,
    UnresolvableLocation,
)
from services.geo.gazetteer import Gazetteer, default_gazetteer
from services.geo.geocoder import OfflineGeocoder

__all__ = [
    "Gazetteer",
    "InvalidPostalCode",
    "OfflineGeocoder",
    "UnknownCommunity",
    "UnknownPostalCode",
    "UnresolvableLocation",
    "default_gazetteer",
    "geodesic_km",
]
