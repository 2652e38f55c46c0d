"""HTTP bodies of the directory service (DESIGN.md section 3b), aligned with Open Referral HSDS 3.0.

HSDS names: a provider is an ``organization``; a site is a ``location`` with its
``service_at_location`` rows folded in as ``services`` (taxonomy codes of section 5).

Request bodies forbid unknown fields, so a typo is an error rather than silently ignored.
Server-owned fields (timestamps, ``last_verified``, ``reserved``) appear only in responses.
"""

import datetime
from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, UnsetType

from contracts.common import (
    AccessibilityCode,
    EligibilityCode,
    Language,
    Latitude,
    Longitude,
    PostalCodeText,
    ServiceCode,
    Slug,
)
from contracts.referrals import ProgressCode

__all__ = [
    "Address",
    "Catchment",
    "Communities",
    "FieldError",
    "NearestSites",
    "OpeningHours",
    "Origin",
    "Precision",
    "Problem",
    "ProgressTerm",
    "Provider",
    "ProviderCreate",
    "ProviderPage",
    "ProviderPatch",
    "Site",
    "SiteCreate",
    "SiteMatch",
    "SitePage",
    "SitePatch",
    "Taxonomy",
    "TaxonomyTerm",
]

#: How exact a site's coordinates are: geocoded from a street address, from its postal code,
#: or only to the town it is in.
Precision = Literal["street", "postal_code", "town"]
#: How the origin of a search was placed: given as coordinates, or resolved offline.
OriginPrecision = Literal["exact", "postal_code", "fsa", "town"]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ClockTime = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$(?!\n)")]
# Free text excludes NUL (U+0000): PostgreSQL text cannot hold it.
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]
Text = Annotated[str, msgspec.Meta(max_length=2000, pattern=r"^[^\x00]*$")]
Phone = Annotated[str, msgspec.Meta(pattern=r"^[0-9 ()+.-]{7,30}$(?!\n)")]
# Blanks and control characters spelled out: `\s` means one set in Python (msgspec) and
# another in ECMA-262 (the JSON Schema and OpenAPI documents), e.g. for U+001C and U+FEFF.
_BLANK = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
Email = Annotated[
    str,
    msgspec.Meta(pattern=rf"^[^@{_BLANK}]+@[^@{_BLANK}]+\.[^@{_BLANK}]+$(?!\n)", max_length=200),
]
# Square brackets only delimit an IPv6 host (RFC 3986); a provider's website has none, and a
# URL with an unbalanced one is not a URL at all (urllib refuses it: "Invalid IPv6 URL").
Url = Annotated[
    str,
    msgspec.Meta(
        pattern=rf"^https?://[^{_BLANK}\[\]]+$(?!\n)",
        max_length=500,
        description="An http(s) URL: no blanks, no square brackets.",
    ),
]
Age = Annotated[int, msgspec.Meta(ge=0, le=130)]
Capacity = Annotated[int, msgspec.Meta(ge=0, le=100_000)]


class Address(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address_1: Name
    address_2: Name | None = None
    city: Name
    province: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$(?!\n)")] = "ON"
    postal_code: PostalCodeText | None = None
    country: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$(?!\n)")] = "CA"


class OpeningHours(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One opening period (HSDS ``schedule``): ``opens``/``closes`` as local 24-hour times."""

    weekday: Weekday
    opens: ClockTime
    closes: ClockTime

    def __post_init__(self) -> None:
        if self.closes <= self.opens:
            raise ValueError("closes must be later than opens")


class ProviderCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An EO service provider (HSDS ``organization``)."""

    id: Slug
    name: Name
    alternate_name: Name | None = None
    description: Text | None = None
    email: Email | None = None
    website: Url | None = None
    phone: Phone | None = None
    active: bool = True


class ProviderPatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; absent fields stay as they are (``null`` clears an optional one)."""

    name: Name | UnsetType = UNSET
    alternate_name: Name | UnsetType | None = UNSET
    description: Text | UnsetType | None = UNSET
    email: Email | UnsetType | None = UNSET
    website: Url | UnsetType | None = UNSET
    phone: Phone | UnsetType | None = UNSET
    active: bool | UnsetType = UNSET


class Provider(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    name: str
    alternate_name: str | None
    description: str | None
    email: str | None
    website: str | None
    phone: str | None
    active: bool
    created_at: datetime.datetime
    updated_at: datetime.datetime


class SiteCreate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A provider's office (HSDS ``location`` with its ``service_at_location`` rows).

    Without ``lat``/``lon`` the directory places the site itself, from the address's postal
    code or else its city, and records the precision and source of that point.
    """

    id: Slug
    provider_id: Slug
    name: Name
    address: Address
    lat: Latitude | None = None
    lon: Longitude | None = None
    coord_precision: Precision = "street"
    coord_source: Name = "provided"
    phone: Phone | None = None
    email: Email | None = None
    website: Url | None = None
    hours: list[OpeningHours] = []
    services: Annotated[list[ServiceCode], msgspec.Meta(min_length=1)]
    languages: Annotated[list[Language], msgspec.Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: ["en"]
    )
    accessibility: list[AccessibilityCode] = []
    #: The client must hold at least one of these; empty means open to every client.
    eligibility: list[EligibilityCode] = []
    min_age: Age | None = None
    max_age: Age | None = None
    catchment_id: Slug | None = None
    #: How many referrals the site can hold at once (offered or accepted).
    capacity: Capacity = 25
    accepting_referrals: bool = True
    active: bool = True

    def __post_init__(self) -> None:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon must be given together")
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise ValueError("min_age must not exceed max_age")


class SitePatch(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields to change; absent fields stay as they are. A new address without new
    coordinates re-places the site from that address."""

    provider_id: Slug | UnsetType = UNSET
    name: Name | UnsetType = UNSET
    address: Address | UnsetType = UNSET
    lat: Latitude | UnsetType = UNSET
    lon: Longitude | UnsetType = UNSET
    coord_precision: Precision | UnsetType = UNSET
    coord_source: Name | UnsetType = UNSET
    phone: Phone | UnsetType | None = UNSET
    email: Email | UnsetType | None = UNSET
    website: Url | UnsetType | None = UNSET
    hours: list[OpeningHours] | UnsetType = UNSET
    services: Annotated[list[ServiceCode], msgspec.Meta(min_length=1)] | UnsetType = UNSET
    languages: Annotated[list[Language], msgspec.Meta(min_length=1)] | UnsetType = UNSET
    accessibility: list[AccessibilityCode] | UnsetType = UNSET
    eligibility: list[EligibilityCode] | UnsetType = UNSET
    min_age: Age | UnsetType | None = UNSET
    max_age: Age | UnsetType | None = UNSET
    catchment_id: Slug | UnsetType | None = UNSET
    capacity: Capacity | UnsetType = UNSET
    accepting_referrals: bool | UnsetType = UNSET
    active: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        if (self.lat is UNSET) != (self.lon is UNSET):
            raise ValueError("lat and lon must be changed together")


class Site(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    provider_id: str
    name: str
    address: Address
    lat: float
    lon: float
    coord_precision: Precision
    coord_source: str
    phone: str | None
    email: str | None
    website: str | None
    hours: list[OpeningHours]
    services: list[str]
    languages: list[str]
    accessibility: list[str]
    eligibility: list[str]
    min_age: int | None
    max_age: int | None
    catchment_id: str | None
    capacity: int
    #: Referrals currently holding a place (offered or accepted); server-owned.
    reserved: int
    accepting_referrals: bool
    active: bool
    last_verified: datetime.date | None
    created_at: datetime.datetime
    updated_at: datetime.datetime


class ProviderPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Provider]
    total: int
    limit: int
    offset: int


class SitePage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Site]
    total: int
    limit: int
    offset: int


class Origin(msgspec.Struct, frozen=True, kw_only=True):
    """Where a search was measured from, and how that point was found."""

    lat: float
    lon: float
    precision: OriginPrecision
    resolved_from: str


class SiteMatch(msgspec.Struct, frozen=True, kw_only=True):
    provider: Provider
    site: Site
    #: Geodesic (WGS84) distance from the origin, in kilometres.
    distance_km: float


class NearestSites(msgspec.Struct, frozen=True, kw_only=True):
    origin: Origin
    results: list[SiteMatch]


class TaxonomyTerm(msgspec.Struct, frozen=True, kw_only=True):
    """A code of the service or accessibility vocabulary (HSDS ``taxonomy_term``)."""

    code: str
    taxonomy: Literal["eo_service", "eo_accessibility"]
    name_en: str
    name_fr: str


class Catchment(msgspec.Struct, frozen=True, kw_only=True):
    """One of the 15 Employment Services Transformation catchment areas."""

    id: str
    name_en: str
    name_fr: str


class Communities(msgspec.Struct, frozen=True, kw_only=True):
    """Community names the gazetteer knows that start with a prefix (the finder's suggestions)."""

    #: Most populous first.
    communities: list[str]


class ProgressTerm(msgspec.Struct, frozen=True, kw_only=True):
    """A code a provider reports after acceptance (DESIGN.md section 3c): an outcome of
    ``completed``, or a reason for ``not_started`` or ``ended_early``."""

    code: ProgressCode
    name_en: str
    name_fr: str


class Taxonomy(msgspec.Struct, frozen=True, kw_only=True):
    services: list[TaxonomyTerm]
    accessibility: list[TaxonomyTerm]
    catchments: list[Catchment]
    # Added in v1.1 (additive): the progress codes of ``referral.progress.v1``, each list in
    # the order of its Literal in contracts/referrals.py (``other`` last).
    outcomes: list[ProgressTerm] = []
    not_started_reasons: list[ProgressTerm] = []
    ended_early_reasons: list[ProgressTerm] = []


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    #: The query parameter or body path (``$.address.city``) the message is about.
    field: str
    message: str


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] = []
