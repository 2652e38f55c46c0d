"""In-memory fakes of the router's ports (``services.router.ports``), for unit tests of the
handlers: a store that keeps referrals, offers, history and outbox in dicts and lists, and a
directory of a few sites with the suitability rules the data decides. No server, no I/O.
"""

from __future__ import annotations

import datetime
import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from contracts.codec import encode
from contracts.common import ClientLocation
from contracts.directory import Origin
from contracts.referrals import ReferralRequested
from services.geo import geodesic_km
from services.router.matching import Candidate
from services.router.model import OfferEnd, OfferRow, OutboxRow, Point, ReferralRow
from services.router.ports import History, Outbound, Outcomes, Statuses
from services.router.unit_of_work import UnitOfWork

NOW = datetime.datetime(2026, 11, 23, 15, 0, tzinfo=datetime.UTC)
TIMEOUT = datetime.timedelta(days=2)
#: Almonte, where the test clients live.
ALMONTE = Origin(lat=45.2299, lon=-76.1959, precision="town", resolved_from="community Almonte")


def locate_almonte(location: ClientLocation) -> Origin:
    return ALMONTE


@dataclass
class FakeStore:
    referrals: dict[uuid.UUID, ReferralRow] = field(default_factory=dict)
    offers: dict[uuid.UUID, OfferRow] = field(default_factory=dict)
    #: Offer id -> "open" or how it ended.
    offer_states: dict[uuid.UUID, str] = field(default_factory=dict)
    closed_at: dict[uuid.UUID, datetime.datetime] = field(default_factory=dict)
    #: Handled message id -> outcome.
    processed: dict[uuid.UUID, str] = field(default_factory=dict)
    history: list[tuple[uuid.UUID, str, str, bool, str | None]] = field(default_factory=list)
    outbox: list[OutboxRow] = field(default_factory=list)
    sent: set[int] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def claim_message(
        self, message_id: uuid.UUID, referral_id: uuid.UUID | None, subject: str, now: object
    ) -> bool:
        if message_id in self.processed:
            return False
        self.processed[message_id] = "handling"
        return True

    async def create_referral(
        self, request: ReferralRequested, *, origin: Origin, now: datetime.datetime
    ) -> bool:
        if request.referral_id in self.referrals:
            return False
        self.referrals[request.referral_id] = ReferralRow(
            request.referral_id,
            "received",
            0,
            request,
            origin.lat,
            origin.lon,
            request.source.system,
        )
        return True

    async def create_rejected(
        self, referral_id: uuid.UUID, system: str, now: datetime.datetime
    ) -> bool:
        if referral_id in self.referrals:
            return False
        self.referrals[referral_id] = ReferralRow(
            referral_id, "rejected", 0, None, None, None, system
        )
        return True

    async def lock_referral(self, referral_id: uuid.UUID) -> ReferralRow | None:
        return self.referrals.get(referral_id)

    async def lock_expired(self, now: datetime.datetime, limit: int) -> list[uuid.UUID]:
        due = [o for o in self.open_offers() if o.expires_at <= now]
        return [o.referral_id for o in sorted(due, key=lambda o: o.expires_at)][:limit]

    async def offered_sites(self, referral_id: uuid.UUID) -> list[str]:
        return [o.site_id for o in self.offers.values() if o.referral_id == referral_id]

    async def current_offer(self, referral_id: uuid.UUID) -> OfferRow | None:
        for offer in self.offers.values():
            state = self.offer_states[offer.id]
            if offer.referral_id == referral_id and state in ("open", "accepted"):
                return replace(offer, state=state, closed_at=self.closed_at.get(offer.id))
        return None

    async def insert_offer(self, offer: OfferRow) -> None:
        assert offer.id not in self.offers, "an offer id is unique (primary key)"
        self.offers[offer.id] = offer
        self.offer_states[offer.id] = "open"

    async def close_offer(
        self, offer_id: uuid.UUID, state: OfferEnd, now: datetime.datetime
    ) -> None:
        if self.offer_states.get(offer_id) == "open":
            self.offer_states[offer_id] = state
            self.closed_at[offer_id] = now

    async def write_behind(
        self, history: History, statuses: Statuses, finished: Outcomes, outbox: Outbound
    ) -> list[OutboxRow]:
        for referral_id, entry, _ in history:
            self.history.append(
                (referral_id, entry.event, entry.status, entry.refused, entry.reason)
            )
        for referral_id, status, attempt, _ in statuses:
            referral = self.referrals[referral_id]
            self.referrals[referral_id] = replace(referral, status=status, attempt=attempt)
        for message_id, outcome, _ in finished:
            self.processed[message_id] = outcome
        known = {row.message_id for row in self.outbox}
        stored = []
        for subject, message in outbox:
            if message.message_id not in known:
                row = OutboxRow(next(self._ids), message.message_id, subject, encode(message))
                self.outbox.append(row)
                stored.append(row)
        return stored

    async def lock_unsent(self, *, older_than: datetime.datetime, limit: int) -> list[OutboxRow]:
        return [row for row in self.outbox if row.id not in self.sent][:limit]

    async def mark_sent(self, ids: Sequence[int], now: datetime.datetime) -> None:
        self.sent.update(ids)

    # -- for the tests' assertions -------------------------------------------------------------

    def open_offers(self) -> list[OfferRow]:
        return [o for o in self.offers.values() if self.offer_states[o.id] == "open"]

    def events(self, referral_id: uuid.UUID) -> list[tuple[str, str]]:
        """(event, status) of each history entry, refusals marked with a leading '!'."""
        return [
            (("!" if refused else "") + event, status)
            for rid, event, status, refused, _ in self.history
            if rid == referral_id
        ]


@dataclass
class FakeSite:
    site_id: str
    provider_id: str
    lat: float
    lon: float
    services: tuple[str, ...] = ("resume_writing", "interview_skills")
    languages: tuple[str, ...] = ("en",)
    capacity: int = 25
    reserved: int = 0


@dataclass
class FakeDirectory:
    sites: list[FakeSite]
    #: Sites whose last place another replica takes just before this one reserves it.
    taken_meanwhile: set[str] = field(default_factory=set)

    def _first_failed(
        self, site: FakeSite, request: ReferralRequested, skip: Sequence[str], only: str | None
    ) -> str | None:
        rules = [
            ("not_accepting_or_full", site.reserved < site.capacity),
            ("services", set(request.needs) <= set(site.services)),
            ("language", request.client.language in site.languages),
            ("excluded_provider", site.provider_id not in request.exclude_provider_ids),
            ("already_offered", site.site_id not in skip),
            ("other_provider", only is None or site.provider_id == only),
        ]
        return next((rule for rule, ok in rules if not ok), None)

    def _km(self, at: Point, site: FakeSite) -> float:
        return geodesic_km(at.lat, at.lon, site.lat, site.lon)

    async def suitable(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        only_provider: str | None = None,
        limit: int,
    ) -> list[Candidate]:
        found = [
            Candidate(s.site_id, s.provider_id, self._km(at, s), s.reserved)
            for s in self.sites
            if self._first_failed(s, request, skip_sites, only_provider) is None
        ]
        return sorted(found, key=lambda c: (c.distance_km, c.site_id))[:limit]

    async def excluded(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        within_km: float | None,
    ) -> dict[str, int]:
        counts: dict[str, int] = {}
        for site in self.sites:
            if within_km is not None and self._km(at, site) >= within_km:
                continue
            if (rule := self._first_failed(site, request, skip_sites, None)) is not None:
                counts[rule] = counts.get(rule, 0) + 1
        return counts

    async def reserve(self, site_id: str) -> bool:
        site = self.site(site_id)
        if site_id in self.taken_meanwhile:
            site.reserved = site.capacity
        if site.reserved >= site.capacity:
            return False
        site.reserved += 1
        return True

    async def release(self, site_id: str) -> None:
        site = self.site(site_id)
        site.reserved = max(site.reserved - 1, 0)

    def site(self, site_id: str) -> FakeSite:
        return next(s for s in self.sites if s.site_id == site_id)


def lanark_sites() -> list[FakeSite]:
    """The three seed offices, at their towns' points: Carleton Place (11.3 km from Almonte),
    Perth (36.9 km) and Smiths Falls."""
    return [
        FakeSite("cca-carleton-place", "canadian-career-academy", 45.13341, -76.14938),
        FakeSite("ces-perth", "community-employment-services", 44.90010, -76.24946),
        FakeSite("ontrac-smiths-falls", "ontrac-employment-resource-services", 44.90452, -76.02333),
    ]


def unit_of_work(
    store: FakeStore, directory: FakeDirectory, now: datetime.datetime = NOW
) -> UnitOfWork:
    return UnitOfWork(
        store=store, directory=directory, now=now, deadline=lambda moment: moment + TIMEOUT
    )
