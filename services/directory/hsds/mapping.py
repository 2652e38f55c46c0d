"""The directory's model as HSDS 3.0 objects: pure functions, deterministic ids and order.

How the model maps (README "HSDS 3.0"):

- a provider is an ``organization``; its slug is kept as an ``organization_identifier``
  (``identifier_type`` ``eo_provider_id``) and its ``active`` flag as an attribute;
- a site is a ``location`` (``external_identifier`` = the site's slug, type ``eo_site_id``) with
  its ``address``, ``phone``, ``contact`` (e-mail), ``language``, ``accessibility`` (``details``
  = the EO code) and one weekly ``schedule`` per opening period;
- an HSDS ``service`` is one EO service code offered by one provider, and each (site, code)
  pair is a ``service_at_location``; a service is linked to its ``eo_service`` taxonomy term
  by an ``attribute``;
- the EO-specific fields of a site (capacity, accepting referrals, active, coordinate precision
  and source, eligibility, age range) are location ``attribute``s whose term is in the
  ``eo_attribute`` taxonomy, the catchment an attribute with its ``eo_catchment`` term, and the
  last-verified date a ``metadata`` record (``last_action_type`` ``verified``). ``reserved`` is
  server-owned state and never published.

HSDS ids are uuids: ``uuid5`` of the record's kind and our key, except for records first
imported from another publisher (slug ``hsds-<uuid>``), which keep that publisher's uuid.
"""

import datetime
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from contracts.directory import Catchment, Provider, Site, Taxonomy, TaxonomyTerm

Obj = dict[str, Any]

#: Namespace of every uuid5 this directory mints (uuid5 of the DNS namespace and a fixed name).
NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_DNS, "hsds.eo-referrals.ontario")
#: Slug prefix of records imported from another publisher: ``hsds-`` + their uuid.
FOREIGN_PREFIX: Final = "hsds-"
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

PROVIDER_ID_TYPE: Final = "eo_provider_id"
SITE_ID_TYPE: Final = "eo_site_id"
IDENTIFIER_SCHEME: Final = "eo-referrals"
VERIFIED: Final = "verified"
UPDATED_BY: Final = "eo-directory"

SERVICE_TAXONOMY: Final = "eo_service"
ACCESSIBILITY_TAXONOMY: Final = "eo_accessibility"
CATCHMENT_TAXONOMY: Final = "eo_catchment"
ATTRIBUTE_TAXONOMY: Final = "eo_attribute"

#: The EO vocabularies published as HSDS taxonomies: name -> description.
TAXONOMIES: Final[dict[str, str]] = {
    SERVICE_TAXONOMY: "Employment Ontario services (DESIGN.md section 5): what a site offers.",
    ACCESSIBILITY_TAXONOMY: "Accessibility features of an Employment Ontario site.",
    CATCHMENT_TAXONOMY: "The 15 Employment Services Transformation catchment areas.",
    ATTRIBUTE_TAXONOMY: "EO-specific fields of a site or provider, carried as HSDS attributes.",
}
#: The ``eo_attribute`` terms: code -> (name, description). Values are text in ``value``.
ATTRIBUTE_KINDS: Final[dict[str, tuple[str, str]]] = {
    "active": ("Active", "true or false: the provider or site is listed and may receive referrals"),
    "accepting_referrals": ("Accepting referrals", "true or false: the site takes new referrals"),
    "capacity": ("Capacity", "how many referrals the site can hold at once (offered or accepted)"),
    "coord_precision": ("Coordinate precision", "street, postal_code or town"),
    "coord_source": ("Coordinate source", "where the site's latitude and longitude come from"),
    "eligibility": ("Eligibility", "a client group the site serves (one attribute per group)"),
    "min_age": ("Minimum age", "youngest client age served, in years"),
    "max_age": ("Maximum age", "oldest client age served, in years"),
}
LANGUAGE_NAMES: Final[dict[str, str]] = {"en": "English", "fr": "French"}
WEEKDAYS: Final[dict[str, str]] = {
    "mon": "MO", "tue": "TU", "wed": "WE", "thu": "TH", "fri": "FR", "sat": "SA", "sun": "SU",
}  # fmt: skip


def foreign_uuid(slug: str) -> str | None:
    """The publisher's uuid of a record imported as ``hsds-<uuid>``, else None."""
    if slug.startswith(FOREIGN_PREFIX) and _UUID.match(slug[len(FOREIGN_PREFIX) :]):
        return slug[len(FOREIGN_PREFIX) :]
    return None


def hsds_id(kind: str, *key: str) -> str:
    """The HSDS id of a record: stable across exports, so consumers can upsert by it."""
    return str(uuid.uuid5(NAMESPACE, ":".join((kind, *key))))


def organization_id(provider_id: str) -> str:
    return foreign_uuid(provider_id) or hsds_id("organization", provider_id)


def location_id(site_id: str) -> str:
    return foreign_uuid(site_id) or hsds_id("location", site_id)


def service_id(provider_id: str, code: str) -> str:
    return hsds_id("service", provider_id, code)


def service_at_location_id(site_id: str, code: str) -> str:
    return hsds_id("service_at_location", site_id, code)


def taxonomy_id(name: str) -> str:
    return hsds_id("taxonomy", name)


def term_id(taxonomy: str, code: str, language: str = "en") -> str:
    return hsds_id("taxonomy_term", taxonomy, code, language)


def compact(obj: Obj) -> Obj:
    """``obj`` without None values: HSDS fields are optional strings, never null."""
    return {key: value for key, value in obj.items() if value is not None}


def one_to_one(obj: Obj) -> Obj:
    """The object's own fields and nested single objects, without its arrays (list views)."""
    return {key: value for key, value in obj.items() if not isinstance(value, list)}


def iso(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as HSDS ``date-time`` fields are written."""
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


# taxonomies ---------------------------------------------------------------------------------


def taxonomies() -> list[Obj]:
    return [
        {"id": taxonomy_id(name), "name": name, "description": text, "version": "1"}
        for name, text in TAXONOMIES.items()
    ]


def _term(taxonomy: str, code: str, language: str, name: str, description: str) -> Obj:
    return {
        "id": term_id(taxonomy, code, language),
        "code": code,
        "name": name,
        "description": description,
        "taxonomy": taxonomy,
        "language": language,
        "taxonomy_id": taxonomy_id(taxonomy),
    }


def _bilingual(taxonomy: str, code: str, name_en: str, name_fr: str) -> list[Obj]:
    """One term per language (HSDS ``taxonomy_term.language``): English, then French."""
    return [
        _term(taxonomy, code, "en", name_en, f"{name_en} ({code})"),
        _term(taxonomy, code, "fr", name_fr, f"{name_fr} ({code})"),
    ]


def taxonomy_terms(vocabulary: Taxonomy) -> list[Obj]:
    """Every term of the EO taxonomies, in a fixed order."""
    terms: list[Obj] = []
    for term in [*vocabulary.services, *vocabulary.accessibility]:
        terms += _bilingual(term.taxonomy, term.code, term.name_en, term.name_fr)
    for catchment in vocabulary.catchments:
        terms += _bilingual(CATCHMENT_TAXONOMY, catchment.id, catchment.name_en, catchment.name_fr)
    for code, (name, description) in ATTRIBUTE_KINDS.items():
        terms.append(_term(ATTRIBUTE_TAXONOMY, code, "en", name, description))
    return terms


def names(vocabulary: Taxonomy) -> dict[tuple[str, str], TaxonomyTerm]:
    """(taxonomy, code) -> term, for the service and accessibility vocabularies."""
    return {(t.taxonomy, t.code): t for t in [*vocabulary.services, *vocabulary.accessibility]}


# attributes and metadata ----------------------------------------------------------------------


def attribute(
    entity: str, owner: str, link_id: str, kind: str, value: str, *, multi: bool = False
) -> Obj:
    """An ``eo_attribute`` value of a record; ``multi`` kinds get one attribute per value."""
    key = (entity, owner, kind, value) if multi else (entity, owner, kind)
    return {
        "id": hsds_id("attribute", *key),
        "link_id": link_id,
        "link_entity": entity,
        "taxonomy_term_id": term_id(ATTRIBUTE_TAXONOMY, kind),
        "value": value,
    }


def term_attribute(entity: str, owner: str, link_id: str, taxonomy: str, code: str) -> Obj:
    """A record classified by a term (a service's EO code, a site's catchment)."""
    return {
        "id": hsds_id("attribute", entity, owner, taxonomy, code),
        "link_id": link_id,
        "link_entity": entity,
        "taxonomy_term_id": term_id(taxonomy, code),
        "value": code,
    }


def flag(value: bool) -> str:
    return "true" if value else "false"


def verified_metadata(site: Site, resource_id: str) -> list[Obj]:
    if site.last_verified is None:
        return []
    date = site.last_verified.isoformat()
    return [
        {
            "id": hsds_id("metadata", site.id, VERIFIED),
            "resource_id": resource_id,
            "resource_type": "location",
            "last_action_date": date,
            "last_action_type": VERIFIED,
            "field_name": "last_verified",
            "previous_value": "",
            "replacement_value": date,
            "updated_by": UPDATED_BY,
        }
    ]


# organizations, services, locations -----------------------------------------------------------


def _phone(kind: str, owner: str, number: str | None, **link: str) -> list[Obj]:
    if number is None:
        return []
    return [{"id": hsds_id("phone", kind, owner), **link, "number": number, "type": "voice"}]


def organization(provider: Provider) -> Obj:
    """A provider as a full HSDS organization (phones, identifiers, attributes)."""
    oid = organization_id(provider.id)
    return compact(
        {
            "id": oid,
            "name": provider.name,
            "alternate_name": provider.alternate_name,
            "description": provider.description or "",
            "email": provider.email,
            "website": provider.website,
            "phones": _phone("organization", provider.id, provider.phone, organization_id=oid),
            "organization_identifiers": [
                {
                    "id": hsds_id("organization_identifier", provider.id),
                    "organization_id": oid,
                    "identifier_scheme": IDENTIFIER_SCHEME,
                    "identifier_type": PROVIDER_ID_TYPE,
                    "identifier": provider.id,
                }
            ],
            "attributes": [
                attribute("organization", provider.id, oid, "active", flag(provider.active))
            ],
        }
    )


def service(
    provider: Provider,
    code: str,
    term: TaxonomyTerm | None,
    *,
    active: bool,
    last_modified: datetime.datetime | None = None,
) -> Obj:
    """One EO service of one provider; ``active`` when the provider and a site offering it are."""
    sid = service_id(provider.id, code)
    return compact(
        {
            "id": sid,
            "organization_id": organization_id(provider.id),
            "name": term.name_en if term else code,
            "alternate_name": term.name_fr if term else None,
            "description": f"{term.name_en if term else code} at {provider.name}",
            "status": "active" if provider.active and active else "inactive",
            "last_modified": iso(last_modified) if last_modified else None,
            "attributes": [term_attribute("service", provider.id, sid, SERVICE_TAXONOMY, code)],
        }
    )


def _site_attributes(site: Site, lid: str) -> list[Obj]:
    def one(kind: str, value: str, *, multi: bool = False) -> Obj:
        return attribute("location", site.id, lid, kind, value, multi=multi)

    found = [
        one("active", flag(site.active)),
        one("accepting_referrals", flag(site.accepting_referrals)),
        one("capacity", str(site.capacity)),
        one("coord_precision", site.coord_precision),
        one("coord_source", site.coord_source),
        *(one("eligibility", code, multi=True) for code in site.eligibility),
    ]
    if site.min_age is not None:
        found.append(one("min_age", str(site.min_age)))
    if site.max_age is not None:
        found.append(one("max_age", str(site.max_age)))
    if site.catchment_id is not None:
        found.append(
            term_attribute("location", site.id, lid, CATCHMENT_TAXONOMY, site.catchment_id)
        )
    return found


def location(site: Site, vocabulary: dict[tuple[str, str], TaxonomyTerm]) -> Obj:
    """A site as a full HSDS location, with every EO field as an attribute or metadata."""
    lid = location_id(site.id)
    address = site.address
    return compact(
        {
            "id": lid,
            "location_type": "physical",
            "url": site.website,
            "organization_id": organization_id(site.provider_id),
            "name": site.name,
            "latitude": site.lat,
            "longitude": site.lon,
            "external_identifier": site.id,
            "external_identifier_type": SITE_ID_TYPE,
            "languages": [
                {
                    "id": hsds_id("language", site.id, code),
                    "location_id": lid,
                    "name": LANGUAGE_NAMES.get(code, code),
                    "code": code,
                }
                for code in site.languages
            ],
            "addresses": [
                compact(
                    {
                        "id": hsds_id("address", site.id),
                        "location_id": lid,
                        "address_1": address.address_1,
                        "address_2": address.address_2,
                        "city": address.city,
                        "state_province": address.province,
                        "postal_code": address.postal_code or "",
                        "country": address.country,
                        "address_type": "physical",
                    }
                )
            ],
            "contacts": (
                [{"id": hsds_id("contact", site.id), "location_id": lid, "email": site.email}]
                if site.email
                else []
            ),
            "accessibility": [
                compact(
                    {
                        "id": hsds_id("accessibility", site.id, code),
                        "location_id": lid,
                        "description": _term_name(vocabulary, ACCESSIBILITY_TAXONOMY, code),
                        "details": code,
                    }
                )
                for code in site.accessibility
            ],
            "phones": _phone("location", site.id, site.phone, location_id=lid),
            "schedules": [
                {
                    "id": hsds_id("schedule", site.id, str(n)),
                    "location_id": lid,
                    "freq": "WEEKLY",
                    "wkst": "MO",
                    "byday": WEEKDAYS[period.weekday],
                    "opens_at": period.opens,
                    "closes_at": period.closes,
                }
                for n, period in enumerate(site.hours)
            ],
            "attributes": _site_attributes(site, lid),
            "metadata": verified_metadata(site, lid),
        }
    )


def _term_name(vocabulary: dict[tuple[str, str], TaxonomyTerm], taxonomy: str, code: str) -> str:
    term = vocabulary.get((taxonomy, code))
    return term.name_en if term else code


def service_at_location(site: Site, code: str) -> Obj:
    return {
        "id": service_at_location_id(site.id, code),
        "service_id": service_id(site.provider_id, code),
        "location_id": location_id(site.id),
    }


# the whole directory ---------------------------------------------------------------------------


def provider_services(sites: Iterable[Site]) -> dict[tuple[str, str], bool]:
    """(provider, code) -> whether an active site offers it, in (provider, code) order."""
    found: dict[tuple[str, str], bool] = {}
    for site in sites:
        for code in site.services:
            found[(site.provider_id, code)] = (
                found.get((site.provider_id, code), False) or site.active
            )
    return dict(sorted(found.items()))


def directory_objects(
    providers: Sequence[Provider], sites: Sequence[Site], vocabulary: Taxonomy
) -> list[tuple[str, Obj]]:
    """Every HSDS object of the directory as (kind, full object), in export order.

    Providers and sites come sorted by id; a site's languages, services, hours and so on keep
    their stored order, so the same directory always gives the same objects in the same order.
    """
    terms = names(vocabulary)
    by_id = {provider.id: provider for provider in providers}
    objects: list[tuple[str, Obj]] = [("taxonomy", t) for t in taxonomies()]
    objects += [("taxonomy_term", t) for t in taxonomy_terms(vocabulary)]
    objects += [("organization", organization(p)) for p in providers]
    for (provider_id, code), active in provider_services(sites).items():
        term = terms.get((SERVICE_TAXONOMY, code))
        objects.append(("service", service(by_id[provider_id], code, term, active=active)))
    objects += [("location", location(site, terms)) for site in sites]
    objects += [
        ("service_at_location", service_at_location(s, c)) for s in sites for c in s.services
    ]
    return objects


def catchment_terms(catchments: Iterable[Catchment]) -> dict[str, str]:
    """Term id -> catchment id (English and French terms)."""
    return {
        term_id(CATCHMENT_TAXONOMY, c.id, language): c.id
        for c in catchments
        for language in ("en", "fr")
    }
