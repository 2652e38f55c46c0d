"""HSDS tables -> the directory's model, with a row-level report of what was not taken and why.

Pure: ``plan(tables, known)`` decides everything; ``db.apply_plan`` writes it in one
transaction. What fits is mapped; a record that cannot be (a location without coordinates, a
service with no EO service code or no location, a record whose parent was rejected) is
rejected with its reason; a field that does not fit (a phone number in another format, a
language the directory does not serve) is dropped from an otherwise good record and reported;
rows of tables the directory keeps nothing of (funding, programs, ...) are reported as skipped.
"""

import datetime
import re
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Final, Literal, TypeVar

import msgspec

from contracts.common import ACCESSIBILITY_CODES, ELIGIBILITY_CODES, SERVICE_CODES
from contracts.directory import Catchment, ProviderCreate, SiteCreate, TaxonomyTerm
from services.directory.hsds import mapping as m
from services.directory.hsds.tables import Row, Tables

Action = Literal["rejected", "dropped_field", "skipped"]
Vocabulary = Literal["eo_service", "eo_accessibility"]
T = TypeVar("T")

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_CODE = re.compile(r"^[a-z0-9_]+$")
_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(:[0-5][0-9](\.[0-9]+)?)?([+-].*|Z)?$")
LANGUAGES: Final[dict[str, str]] = {
    "en": "en", "eng": "en", "english": "en", "fr": "fr", "fra": "fr", "fre": "fr", "french": "fr",
    "français": "fr", "francais": "fr",
}  # fmt: skip
BY_DAY: Final[dict[str, str]] = {day: name for name, day in m.WEEKDAYS.items()}
#: Tables whose rows the directory maps (the rest are reported as skipped).
MAPPED: Final = frozenset(
    {
        "organization", "service", "location", "service_at_location", "address", "phone",
        "contact", "language", "accessibility", "schedule", "attribute", "metadata",
        "organization_identifier", "taxonomy", "taxonomy_term",
    }
)  # fmt: skip
#: Site fields that may be dropped when they do not fit (the rest make the row fail).
_SITE_OPTIONAL: Final = frozenset(
    {"phone", "email", "website", "address.address_2", "address.postal_code", "min_age",
     "max_age", "catchment_id", "coord_source", "address.province", "address.country"}
)  # fmt: skip
_PROVIDER_OPTIONAL: Final = frozenset(
    {"alternate_name", "description", "email", "website", "phone"}
)


class Issue(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the report: ``row`` is the 1-based position of the record in its table."""

    table: str
    row: int
    id: str
    action: Action
    reason: str


class Known(msgspec.Struct, frozen=True, kw_only=True):
    """What the database already holds that imported records may refer to."""

    providers: dict[str, str] = {}  # HSDS organization id -> provider slug
    catchments: frozenset[str] = frozenset()


class PlannedSite(msgspec.Struct, frozen=True, kw_only=True):
    site: SiteCreate
    last_verified: datetime.date | None


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    terms: list[TaxonomyTerm]
    catchments: list[Catchment]
    providers: list[ProviderCreate]
    sites: list[PlannedSite]
    issues: list[Issue]

    def counts(self) -> dict[str, int]:
        actions = [issue.action for issue in self.issues]
        return {
            "taxonomy_terms": len(self.terms),
            "catchments": len(self.catchments),
            "providers": len(self.providers),
            "sites": len(self.sites),
            "rejected": actions.count("rejected"),
            "dropped_fields": actions.count("dropped_field"),
            "skipped": actions.count("skipped"),
        }


def text(row: Row, key: str) -> str | None:
    """A field as text; missing and empty are both None (a CSV cell cannot tell them apart)."""
    value = row.get(key)
    if value is None or isinstance(value, (dict, list)):
        return None
    result = str(value).strip() if not isinstance(value, bool) else ("true" if value else "false")
    return result or None


def slug_for(hsds_id: str) -> str | None:
    """Our slug for a record of another publisher: ``hsds-`` and its id, made slug-safe."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", hsds_id.lower()).strip("-")
    return f"{m.FOREIGN_PREFIX}{cleaned}"[:100] if cleaned else None


def _error_field(exc: msgspec.ValidationError) -> str | None:
    found = re.search(r"at `\$\.([A-Za-z0-9_.]+)`", str(exc))
    return found.group(1) if found else None


def _drop(data: dict[str, Any], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    if rest:
        inner = data.get(head)
        return isinstance(inner, dict) and _drop(inner, rest)
    return data.pop(head, None) is not None


def convert_lenient(
    data: dict[str, Any], kind: type[T], optional: frozenset[str]
) -> tuple[T, list[str]]:
    """``data`` as ``kind``; optional fields that do not fit are dropped and named, not fatal."""
    dropped: list[str] = []
    while True:
        try:
            return msgspec.convert(data, kind), dropped
        except msgspec.ValidationError as exc:
            field = _error_field(exc)
            if field is None or field not in optional or not _drop(data, field):
                raise
            dropped.append(f"{field} dropped: {exc}")


class _Planner:
    """One import's bookkeeping: indexes of the tables and the report being written."""

    def __init__(self, tables: Tables, known: Known) -> None:
        self.tables = tables
        self.known = known
        self.issues: list[Issue] = []
        #: Term id -> (taxonomy, code) of every EO term an attribute may point at.
        self.attr_kind: dict[str, tuple[str, str]] = {}
        #: HSDS ids of the locations that became sites.
        self.placed: set[str] = set()
        self.used: set[tuple[str, int]] = set()
        self.position: dict[tuple[str, str], int] = {}
        self.children: dict[tuple[str, str, str], list[tuple[int, Row]]] = defaultdict(list)
        for table, rows in tables.items():
            for n, row in enumerate(rows, start=1):
                if (key := text(row, "id")) is not None:
                    self.position.setdefault((table, key), n)
                for fk in (
                    "organization_id",
                    "location_id",
                    "service_id",
                    "link_id",
                    "resource_id",
                ):
                    if (parent := text(row, fk)) is not None:
                        self.children[(table, fk, parent)].append((n, row))

    def report(self, table: str, n: int, row: Row, action: Action, reason: str) -> None:
        self.issues.append(
            Issue(table=table, row=n, id=text(row, "id") or "", action=action, reason=reason)
        )

    def of(self, table: str, fk: str, parent: str) -> list[tuple[int, Row]]:
        """Rows of ``table`` that belong to ``parent``, marked as used, in file order."""
        found = self.children.get((table, fk, parent), [])
        self.used.update((table, n) for n, _ in found)
        return found

    # taxonomies ------------------------------------------------------------------------------
    def terms(self) -> tuple[list[TaxonomyTerm], list[Catchment], dict[str, tuple[str, str]]]:
        """EO terms and catchments of the file, and term id -> (taxonomy, code) for attributes."""
        taxonomy_names = {
            key: name
            for row in self.tables["taxonomy"]
            if (key := text(row, "id")) and (name := text(row, "name"))
        }
        for n, row in enumerate(self.tables["taxonomy"], start=1):
            self.used.add(("taxonomy", n))
            if text(row, "name") not in m.TAXONOMIES:
                self.report(
                    "taxonomy",
                    n,
                    row,
                    "skipped",
                    "not an EO taxonomy (" + ", ".join(m.TAXONOMIES) + ")",
                )
        ids: dict[str, tuple[str, str]] = {}
        for vocabulary_name, codes in (
            (m.SERVICE_TAXONOMY, SERVICE_CODES),
            (m.ACCESSIBILITY_TAXONOMY, ACCESSIBILITY_CODES),
            (m.ATTRIBUTE_TAXONOMY, tuple(m.ATTRIBUTE_KINDS)),
            (m.CATCHMENT_TAXONOMY, tuple(self.known.catchments)),
        ):
            for known_code in codes:
                for language in ("en", "fr"):
                    ids[m.term_id(vocabulary_name, known_code, language)] = (
                        vocabulary_name,
                        known_code,
                    )
        named: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
        for n, row in enumerate(self.tables["taxonomy_term"], start=1):
            self.used.add(("taxonomy_term", n))
            taxonomy = text(row, "taxonomy") or taxonomy_names.get(text(row, "taxonomy_id") or "")
            code, name = text(row, "code"), text(row, "name")
            reason = self._term_problem(taxonomy, code, name)
            if reason or taxonomy is None or code is None or name is None:
                self.report("taxonomy_term", n, row, "skipped", reason or "incomplete term")
                continue
            if key := text(row, "id"):
                ids[key] = (taxonomy, code)
            language = LANGUAGES.get((text(row, "language") or "en").lower(), "en")
            named[(taxonomy, code)].setdefault(language, name)
        terms: list[TaxonomyTerm] = []
        catchments: list[Catchment] = []
        for (taxonomy, code), by_language in named.items():
            name_en = by_language.get("en") or by_language["fr"]
            name_fr = by_language.get("fr") or name_en
            if taxonomy == m.CATCHMENT_TAXONOMY:
                catchments.append(Catchment(id=code, name_en=name_en, name_fr=name_fr))
            elif taxonomy in (m.SERVICE_TAXONOMY, m.ACCESSIBILITY_TAXONOMY):
                vocabulary: Vocabulary = (
                    "eo_service" if taxonomy == m.SERVICE_TAXONOMY else "eo_accessibility"
                )
                terms.append(
                    TaxonomyTerm(code=code, taxonomy=vocabulary, name_en=name_en, name_fr=name_fr)
                )
        return terms, catchments, ids

    @staticmethod
    def _term_problem(taxonomy: str | None, code: str | None, name: str | None) -> str | None:
        if taxonomy not in m.TAXONOMIES:
            return f"taxonomy {taxonomy!r} is not an EO taxonomy (" + ", ".join(m.TAXONOMIES) + ")"
        if code is None or name is None:
            return "an EO term needs a code and a name"
        allowed = {
            m.SERVICE_TAXONOMY: SERVICE_CODES,
            m.ACCESSIBILITY_TAXONOMY: ACCESSIBILITY_CODES,
            m.ATTRIBUTE_TAXONOMY: tuple(m.ATTRIBUTE_KINDS),
        }.get(taxonomy)
        if allowed is not None and code not in allowed:
            return f"{code!r} is not a code of {taxonomy}"
        if taxonomy == m.CATCHMENT_TAXONOMY and not (_SLUG.match(code) and len(code) <= 100):
            return f"catchment code {code!r} is not a slug"
        if len(name) > 200:
            return "name longer than 200 characters"
        return None

    # organizations -------------------------------------------------------------------------
    def providers(self) -> tuple[list[ProviderCreate], dict[str, str]]:
        """Providers of the file, and HSDS organization id -> slug of every usable provider."""
        slugs = dict(self.known.providers)
        providers: list[ProviderCreate] = []
        for n, row in enumerate(self.tables["organization"], start=1):
            self.used.add(("organization", n))
            oid = text(row, "id")
            if oid is None:
                self.report("organization", n, row, "rejected", "no id")
                continue
            slug = self._provider_slug(oid)
            if slug is None:
                self.report("organization", n, row, "rejected", f"id {oid!r} gives no usable slug")
                continue
            phones = [text(p, "number") for _, p in self.of("phone", "organization_id", oid)]
            data: dict[str, Any] = msgspec.structs.asdict(ProviderCreate(id="x", name="x"))
            data.update(
                id=slug,
                name=text(row, "name"),
                alternate_name=text(row, "alternate_name"),
                description=text(row, "description"),
                email=text(row, "email"),
                website=text(row, "website"),
                phone=next((p for p in phones if p), None),
            )
            for _, attr in self.of("attribute", "link_id", oid):
                if self.attr_kind.get(text(attr, "taxonomy_term_id") or "") == (
                    m.ATTRIBUTE_TAXONOMY,
                    "active",
                ):
                    data["active"] = text(attr, "value") != "false"
            try:
                provider, dropped = convert_lenient(data, ProviderCreate, _PROVIDER_OPTIONAL)
            except msgspec.ValidationError as exc:
                self.report("organization", n, row, "rejected", str(exc))
                continue
            for note in dropped:
                self.report("organization", n, row, "dropped_field", note)
            providers.append(provider)
            slugs[oid] = slug
        return providers, slugs

    def _provider_slug(self, oid: str) -> str | None:
        for _, ident in self.of("organization_identifier", "organization_id", oid):
            if text(ident, "identifier_type") == m.PROVIDER_ID_TYPE:
                value = text(ident, "identifier")
                if value and _SLUG.match(value) and len(value) <= 100:
                    return value
        return slug_for(oid)

    # services ------------------------------------------------------------------------------
    def services(self, providers: dict[str, str]) -> dict[str, tuple[str, str]]:
        """HSDS service id -> (provider slug, EO service code), for services that fit."""
        found: dict[str, tuple[str, str]] = {}
        for n, row in enumerate(self.tables["service"], start=1):
            self.used.add(("service", n))
            sid = text(row, "id") or ""
            codes = [
                code
                for _, attr in self.of("attribute", "link_id", sid)
                for taxonomy, code in [
                    self.attr_kind.get(text(attr, "taxonomy_term_id") or "", ("", ""))
                ]
                if taxonomy == m.SERVICE_TAXONOMY
            ]
            owner = providers.get(text(row, "organization_id") or "")
            if not codes:
                reason = "no EO service code: link it by an attribute to a term of eo_service"
                self.report("service", n, row, "rejected", reason)
            elif owner is None:
                reason = f"its organization {text(row, 'organization_id')!r} is missing or rejected"
                self.report("service", n, row, "rejected", reason)
            elif not self.children.get(("service_at_location", "service_id", sid)):
                self.report(
                    "service", n, row, "rejected", "no service_at_location places it at a location"
                )
            else:
                found[sid] = (owner, codes[0])
        return found

    # locations -----------------------------------------------------------------------------
    def sites(
        self, providers: dict[str, str], services: dict[str, tuple[str, str]], catchments: set[str]
    ) -> list[PlannedSite]:
        planned: list[PlannedSite] = []
        for n, row in enumerate(self.tables["location"], start=1):
            self.used.add(("location", n))
            lid = text(row, "id") or ""
            try:
                site, notes = self._site(row, lid, providers, services, catchments)
            except _Rejected as exc:
                self.report("location", n, row, "rejected", str(exc))
                continue
            except msgspec.ValidationError as exc:
                self.report("location", n, row, "rejected", str(exc))
                continue
            for note in notes:
                self.report("location", n, row, "dropped_field", note)
            verified = self._verified(lid)
            self.placed.add(lid)
            planned.append(PlannedSite(site=site, last_verified=verified))
        return planned

    def _site(
        self,
        row: Row,
        lid: str,
        providers: dict[str, str],
        services: dict[str, tuple[str, str]],
        catchments: set[str],
    ) -> tuple[SiteCreate, list[str]]:
        notes: list[str] = []
        slug = text(row, "external_identifier")
        if (
            text(row, "external_identifier_type") != m.SITE_ID_TYPE
            or not slug
            or not _SLUG.match(slug)
        ):
            slug = slug_for(lid)
        if not lid or slug is None:
            raise _Rejected("no usable id")
        offered: list[tuple[str, str]] = []
        for _, link in self.of("service_at_location", "location_id", lid):
            pair = services.get(text(link, "service_id") or "")
            if pair is not None and pair not in offered:
                offered.append(pair)
        provider = providers.get(text(row, "organization_id") or "")
        if provider is None and offered:
            provider = offered[0][0]
        if provider is None:
            raise _Rejected(
                "no organization: neither organization_id nor a service names one"
                " that was imported or exists"
            )
        codes = [code for owner, code in offered if owner == provider]
        if not codes:
            raise _Rejected(
                "no service with an EO service code is offered here (service_at_location)"
            )
        lat, lon = _number(row.get("latitude")), _number(row.get("longitude"))
        if lat is None or lon is None:
            raise _Rejected("no coordinates (latitude and longitude)")
        addresses = [a for _, a in self.of("address", "location_id", lid)]
        addresses.sort(key=lambda a: text(a, "address_type") != "physical")
        if not addresses or not text(addresses[0], "address_1") or not text(addresses[0], "city"):
            raise _Rejected("no address with address_1 and city")
        address = addresses[0]
        data: dict[str, Any] = {
            "id": slug,
            "provider_id": provider,
            "name": text(row, "name"),
            "address": {
                "address_1": text(address, "address_1"),
                "address_2": text(address, "address_2"),
                "city": text(address, "city"),
                "province": text(address, "state_province") or "ON",
                "postal_code": text(address, "postal_code"),
                "country": text(address, "country") or "CA",
            },
            "lat": lat,
            "lon": lon,
            "coord_precision": "street",
            "coord_source": "hsds",
            "phone": next(
                (p for _, r in self.of("phone", "location_id", lid) if (p := text(r, "number"))),
                None,
            ),
            "email": next(
                (e for _, r in self.of("contact", "location_id", lid) if (e := text(r, "email"))),
                None,
            ),
            "website": text(row, "url"),
            "services": codes,
            "languages": self._languages(lid, notes),
            "accessibility": self._accessibility(lid, notes),
            "hours": self._hours(lid, notes),
        }
        data.update(self._eo_fields(lid, catchments, notes))
        site, dropped = convert_lenient(data, SiteCreate, _SITE_OPTIONAL)
        return site, notes + dropped

    def _languages(self, lid: str, notes: list[str]) -> list[str]:
        found: list[str] = []
        for _, row in self.of("language", "location_id", lid):
            given = text(row, "code") or text(row, "name") or ""
            code = LANGUAGES.get(given.lower())
            if code is None:
                notes.append(f"language {given!r} dropped: the directory records en and fr only")
            elif code not in found:
                found.append(code)
        return found or ["en"]

    def _accessibility(self, lid: str, notes: list[str]) -> list[str]:
        found: list[str] = []
        for _, row in self.of("accessibility", "location_id", lid):
            code = text(row, "details")
            if code in ACCESSIBILITY_CODES:
                if code not in found:
                    found.append(code)
            else:
                notes.append(
                    f"accessibility {text(row, 'id')!r} dropped: details is not an EO code"
                )
        return found

    def _hours(self, lid: str, notes: list[str]) -> list[dict[str, str]]:
        hours: list[dict[str, str]] = []
        for _, row in self.of("schedule", "location_id", lid):
            opens, closes = _clock(text(row, "opens_at")), _clock(text(row, "closes_at"))
            days = [
                BY_DAY.get(day.strip().upper()) for day in (text(row, "byday") or "").split(",")
            ]
            if opens is None or closes is None or not days or None in days or closes <= opens:
                notes.append(
                    f"schedule {text(row, 'id')!r} dropped: needs byday, opens_at < closes_at"
                )
                continue
            hours += [{"weekday": day, "opens": opens, "closes": closes} for day in days if day]
        return hours

    def _eo_fields(self, lid: str, catchments: set[str], notes: list[str]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        eligibility: list[str] = []
        for _, attr in self.of("attribute", "link_id", lid):
            taxonomy, kind = self.attr_kind.get(text(attr, "taxonomy_term_id") or "", ("", ""))
            value = text(attr, "value") or ""
            if taxonomy == m.CATCHMENT_TAXONOMY:
                if kind in catchments:
                    fields["catchment_id"] = kind
                else:
                    notes.append(f"catchment {kind!r} dropped: not in the directory or the file")
            elif taxonomy != m.ATTRIBUTE_TAXONOMY:
                continue
            elif kind in ("active", "accepting_referrals"):
                fields[kind] = value != "false"
            elif kind in ("capacity", "min_age", "max_age"):
                if value.isdigit():
                    fields[kind] = int(value)
                else:
                    notes.append(f"{kind} {value!r} dropped: not a whole number")
            elif (kind == "coord_precision" and value in ("street", "postal_code", "town")) or (
                kind == "coord_source" and value
            ):
                fields[kind] = value
            elif kind == "eligibility" and value in ELIGIBILITY_CODES:
                eligibility.append(value)
            else:
                notes.append(f"{kind} {value!r} dropped: not a valid value")
        fields["eligibility"] = eligibility
        return fields

    def _verified(self, lid: str) -> datetime.date | None:
        for _, row in self.of("metadata", "resource_id", lid):
            if text(row, "last_action_type") == m.VERIFIED:
                try:
                    return datetime.date.fromisoformat(text(row, "last_action_date") or "")
                except ValueError:
                    return None
        return None

    # leftovers -------------------------------------------------------------------------------
    def leftovers(self, sites: set[str], services: set[str]) -> None:
        """Report every row that nothing took, and service_at_location rows left unplaced."""
        for n, row in enumerate(self.tables["service_at_location"], start=1):
            self.used.add(("service_at_location", n))
            if text(row, "location_id") not in sites or text(row, "service_id") not in services:
                reason = "its service or location was rejected or is missing"
                self.report("service_at_location", n, row, "rejected", reason)
        for table, rows in self.tables.items():
            for n, row in enumerate(rows, start=1):
                if (table, n) in self.used:
                    continue
                reason = (
                    f"the directory keeps no HSDS {table}"
                    if table not in MAPPED
                    else "not attached to an imported organization or location"
                )
                self.report(table, n, row, "skipped", reason)


class _Rejected(Exception):
    """A location that cannot become a site; the message is the report's reason."""


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number else None  # NaN is not a coordinate


def _clock(value: str | None) -> str | None:
    found = _TIME.match(value or "")
    return f"{found.group(1)}:{found.group(2)}" if found else None


def plan(tables: Tables, known: Known, notes: Iterable[str] = ()) -> Plan:
    """Decide what to import from ``tables``: records to upsert and the row-level report."""
    planner = _Planner(tables, known)
    for note in notes:
        planner.issues.append(Issue(table="", row=0, id="", action="skipped", reason=note))
    terms, catchments, term_ids = planner.terms()
    planner.attr_kind = term_ids
    providers, slugs = planner.providers()
    services = planner.services(slugs)
    catchment_ids = set(known.catchments) | {c.id for c in catchments}
    term_ids.update(
        {key: (m.CATCHMENT_TAXONOMY, code) for key, code in m.catchment_terms(catchments).items()}
    )
    sites = planner.sites(slugs, services, catchment_ids)
    planner.leftovers(planner.placed, set(services))
    return Plan(
        terms=terms,
        catchments=catchments,
        providers=providers,
        sites=sites,
        issues=planner.issues,
    )
