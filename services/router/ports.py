"""What the handlers need from the world, as Protocols: the router's own state (``Store``) and
its view of the directory (``Directory``). The composition root (``app.py``) picks the
implementations: PostgreSQL in the service (``store.SqlStore``, ``directory.SqlDirectory``),
in-memory fakes in the unit tests.
"""

import datetime
import uuid
from collections.abc import Sequence
from typing import Protocol

from contracts.common import Message
from contracts.directory import Origin
from contracts.referrals import ReferralRequested, ReferralStatus
from services.router.matching import Candidate
from services.router.model import (
    OfferEnd,
    OfferRow,
    OutboxRow,
    Point,
    ReferralRow,
    Transition,
)

#: What a transaction's handlers queued: history entries, each referral's latest status, each
#: handled message's outcome, and outbox messages (``Store.write_behind``).
History = Sequence[tuple[uuid.UUID, Transition, datetime.datetime]]
Statuses = Sequence[tuple[uuid.UUID, ReferralStatus, int, datetime.datetime]]
Outcomes = Sequence[tuple[uuid.UUID, str, str | None]]
Outbound = Sequence[tuple[str, Message]]


class Store(Protocol):
    """Referrals, offers, history, handled message ids and the outbox, inside one transaction."""

    async def claim_message(
        self,
        message_id: uuid.UUID,
        referral_id: uuid.UUID | None,
        subject: str,
        now: datetime.datetime,
    ) -> bool:
        """Record an inbound message as handled; False when it was handled before."""
        ...

    async def create_referral(
        self, request: ReferralRequested, *, origin: Origin, now: datetime.datetime
    ) -> bool:
        """Store a new referral as ``received``; False when its id is already known."""
        ...

    async def create_rejected(
        self, referral_id: uuid.UUID, system: str, now: datetime.datetime
    ) -> bool:
        """Store a referral whose request was invalid as ``rejected``; False when known."""
        ...

    async def lock_referral(self, referral_id: uuid.UUID) -> ReferralRow | None:
        """The referral, locked until the transaction ends."""
        ...

    async def lock_expired(self, now: datetime.datetime, limit: int) -> list[uuid.UUID]:
        """Referrals whose open offer is past its deadline, locked (others' locks skipped)."""
        ...

    async def offered_sites(self, referral_id: uuid.UUID) -> list[str]: ...

    async def current_offer(self, referral_id: uuid.UUID) -> OfferRow | None:
        """The referral's open offer, or the accepted one it is held under."""
        ...

    async def insert_offer(self, offer: OfferRow) -> None: ...

    async def close_offer(
        self, offer_id: uuid.UUID, state: OfferEnd, now: datetime.datetime
    ) -> None: ...

    async def write_behind(
        self, history: History, statuses: Statuses, finished: Outcomes, outbox: Outbound
    ) -> list[OutboxRow]:
        """Write what was queued; the outbox rows stored (a message id queued before is not)."""
        ...

    async def lock_unsent(
        self, *, older_than: datetime.datetime, limit: int
    ) -> list[OutboxRow]: ...

    async def mark_sent(self, ids: Sequence[int], now: datetime.datetime) -> None: ...


class Directory(Protocol):
    """The router's view of the directory: suitable sites for a referral near a point, the
    exclusion counts that explain a choice, and a site's places (same transaction)."""

    async def suitable(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        only_provider: str | None = None,
        limit: int,
    ) -> list[Candidate]:
        """Up to ``limit`` suitable sites, nearest first, except ``skip_sites``."""
        ...

    async def excluded(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        within_km: float | None,
    ) -> dict[str, int]:
        """How many sites nearer than ``within_km`` each suitability rule excluded."""
        ...

    async def reserve(self, site_id: str) -> bool:
        """Take one of the site's places; False when it has none left."""
        ...

    async def release(self, site_id: str) -> None:
        """Give a place back."""
        ...


#: A message handled by a batch: (message_id, referral_id, subject, at, outcome, reason).
Claim = tuple[uuid.UUID, uuid.UUID | None, str, datetime.datetime, str, str | None]
#: A referral a batch created: (request, origin, created_at, status, attempt, updated_at).
NewReferral = tuple[
    ReferralRequested, Origin, datetime.datetime, ReferralStatus, int, datetime.datetime
]


class NearbySite(Protocol):
    """A suitable site as the batch path reads it: a ``matching.Candidate`` and its capacity
    (``services.directory.candidates.CandidateSite`` is one)."""

    @property
    def site_id(self) -> str: ...
    @property
    def provider_id(self) -> str: ...
    @property
    def distance_km(self) -> float:
        """Geodesic (WGS84) distance from the client, in kilometres."""
        ...

    @property
    def reserved(self) -> int:
        """Places in use (open offers and referrals held) when read."""
        ...

    @property
    def capacity(self) -> int: ...
    @property
    def lat(self) -> float: ...
    @property
    def lon(self) -> float: ...


# -- the batch path's set-based reads and writes (``services.router.batch``) ----------------------

#: One referral to route: its id, point, request, and the sites to skip (offered already).
Route = tuple[uuid.UUID, Point, ReferralRequested, Sequence[str]]


class StoreRows(Protocol):
    """The router's set-based reads and writes of a batch (``SqlStore``, on the batch's
    connection and in its transaction)."""

    async def handled_already(self, message_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]: ...

    async def lock_referrals(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ReferralRow]: ...

    async def offers_of(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[OfferRow]]: ...

    async def known_referrals(self, ids: Sequence[uuid.UUID]) -> int:
        """How many of these referrals exist (committed by another transaction meanwhile)."""
        ...

    async def claim_messages(self, claims: Sequence[Claim]) -> int:
        """Record these messages as handled, with their outcomes; how many were not before."""
        ...

    async def create_referrals(self, referrals: Sequence[NewReferral]) -> int:
        """Store these referrals at their latest status; how many were not known before."""
        ...

    async def close_offers(
        self, closed: Sequence[tuple[uuid.UUID, OfferEnd, datetime.datetime]]
    ) -> None: ...

    async def insert_offers(self, offers: Sequence[OfferRow]) -> None: ...

    async def write_behind(
        self, history: History, statuses: Statuses, finished: Outcomes, outbox: Outbound
    ) -> list[OutboxRow]: ...


class DirectoryRows(Protocol):
    """The directory's set-based reads and writes of a batch (``SqlDirectory``)."""

    async def suitable_many(
        self, routes: Sequence[Route], limit: int, *, xid: int | None = None
    ) -> tuple[Sequence[Sequence[NearbySite]], bool | None]:
        """Each route's ``limit`` nearest suitable sites, and whether the transaction ``xid``
        had committed when they were read (None: not asked, or nothing read)."""
        ...

    async def excluded_many(
        self, asks: Sequence[tuple[Route, float | None]], *, xid: int | None = None
    ) -> tuple[list[dict[str, int]], bool | None]:
        """Each route's exclusion counts nearer than its distance, and whether the
        transaction ``xid`` had committed when they were counted."""
        ...

    async def adjust_places(self, changes: dict[str, int]) -> set[str]: ...
