"""The batch path's plan (issue 16, ``ROUTER_TRANSACTION=batch``): a fetched batch's messages
handled by the same handlers, in stream order, against an in-memory snapshot of what they read,
so that the batch costs a few set-based statements instead of ten round trips per message.

    read, set-based (``read_snapshot``): the handled message ids, the batch's referrals (locked)
        and their offers, the candidates of every referral it routes, and the exclusion counts
        of each one's likely choice
    ─▶ each message's handler on ``BatchStore`` / ``BatchDirectory`` (``BatchState.run``): in
        memory, a message's changes undone when it fails
    ─▶ write, set-based (``write``): claims, new referrals, places, closed and new offers,
        history, statuses, outcomes and the outbox (``Writes``)

When the snapshot cannot answer a question as the database would (a radius, a preferred
provider beyond the candidates read, a referral not read), it raises ``NeedsDatabase``: the
consumer handles that message, and the later ones of its referral, on the database after the
writes (a savepoint each). When the writes find that the world moved since the read (another
replica claimed a message, created a referral or took the last place), ``write`` raises
``Stale``: the consumer rolls the batch back and plans it again on what is committed then.

One difference from handling the messages one by one: the candidates are read once, so a site
that was full when they were read and had a place freed by an earlier message of the same batch
is not offered to a later one (the next suitable site is) - as if the two had been handled
at once by two replicas.
"""

import datetime
import uuid
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from contracts.common import Message
from contracts.directory import Origin
from contracts.referrals import ReferralRequested, ReferralStatus
from services.directory import candidates as directory_candidates
from services.router.deadlines import Deadline
from services.router.matching import Candidate, choose
from services.router.model import (
    Handled,
    OfferEnd,
    OfferRow,
    OutboxRow,
    Point,
    ReferralRow,
    Transition,
)
from services.router.ports import (
    DirectoryRows,
    History,
    NearbySite,
    Outbound,
    Outcomes,
    Route,
    Statuses,
    StoreRows,
)
from services.router.unit_of_work import UnitOfWork

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")

#: Candidates read per referral beyond those a matching round asks for: room for sites taken
#: by earlier messages of the batch before the snapshot runs short.
PREFETCH_SPARE = 5


class NeedsDatabase(Exception):
    """The snapshot cannot answer this as the database would: handle the message there."""


class Stale(Exception):
    """The database changed since the snapshot was read: handle the batch on the database."""


@dataclass(frozen=True)
class Prefetched:
    """A referral's suitable sites as read, in the database's order (nearest on the sphere
    first), none of ``skip``; ``complete`` when there are no more."""

    point: Point
    skip: frozenset[str]
    sites: Sequence[NearbySite]
    complete: bool


@dataclass(frozen=True)
class Excluded:
    """A referral's exclusion counts as read, for one ``skip`` and ``within_km``."""

    skip: frozenset[str]
    within_km: float | None
    counts: dict[str, int]


@dataclass
class Snapshot:
    #: Of the batch's message ids, those handled before.
    processed: set[uuid.UUID] = field(default_factory=set)
    #: Every referral id the batch names: its row (locked), or None when there is none.
    referrals: dict[uuid.UUID, ReferralRow | None] = field(default_factory=dict)
    #: The offers of those referrals, oldest first.
    offers: dict[uuid.UUID, list[OfferRow]] = field(default_factory=dict)
    candidates: dict[uuid.UUID, Prefetched] = field(default_factory=dict)
    exclusions: dict[uuid.UUID, Excluded] = field(default_factory=dict)
    #: Each candidate site's (places in use, places in all) as read, with the places the
    #: previous batch's plan took when its commit was not in what was read.
    places: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class Writes:
    """What the batch's handlers changed, in order, to write set-based."""

    claims: list[tuple[uuid.UUID, uuid.UUID | None, str, datetime.datetime]] = field(
        default_factory=list
    )
    referrals: list[tuple[ReferralRequested, Origin, datetime.datetime]] = field(
        default_factory=list
    )
    #: Net places taken (positive) or given back (negative) per site.
    places: dict[str, int] = field(default_factory=dict)
    closed: list[tuple[uuid.UUID, OfferEnd, datetime.datetime]] = field(default_factory=list)
    offers: list[OfferRow] = field(default_factory=list)
    history: list[tuple[uuid.UUID, Transition, datetime.datetime]] = field(default_factory=list)
    #: Each referral's latest (status, attempt, at).
    statuses: dict[uuid.UUID, tuple[ReferralStatus, int, datetime.datetime]] = field(
        default_factory=dict
    )
    finished: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    outbox: list[tuple[str, Message]] = field(default_factory=list)


class BatchState:
    """The snapshot, the batch's writes so far, and the undo log of the message being handled."""

    def __init__(self, snapshot: Snapshot, *, deadline: Deadline, candidates: int = 5) -> None:
        self.snapshot = snapshot
        self.writes = Writes()
        self.deadline = _same_moment_once(deadline)
        self.candidates = candidates
        self._undo: list[Callable[[], None]] = []

    async def run(
        self, now: datetime.datetime, work: Callable[[UnitOfWork], Awaitable[Handled]]
    ) -> Handled:
        """``work`` (a handler) on the snapshot; its changes kept, or undone if it raises."""
        uow = UnitOfWork(
            store=BatchStore(self),
            directory=BatchDirectory(self),
            now=now,
            deadline=self.deadline,
            candidates=self.candidates,
        )
        self._undo = []
        try:
            handled = await work(uow)
            await uow.flush()
        except BaseException:
            for undo in reversed(self._undo):
                undo()
            raise
        finally:
            self._undo = []
        return handled

    # -- changes that can be undone ------------------------------------------------------------

    def put(self, mapping: MutableMapping[K, V], key: K, value: V) -> None:
        had, old = key in mapping, mapping.get(key)
        mapping[key] = value

        def undo() -> None:
            if had:
                mapping[key] = old  # type: ignore[assignment]  # had: old is a V
            else:
                del mapping[key]

        self._undo.append(undo)

    def append(self, items: list[T], value: T) -> None:
        items.append(value)
        self._undo.append(lambda: _drop_last(items))

    def add(self, items: set[uuid.UUID], value: uuid.UUID) -> None:
        items.add(value)
        self._undo.append(lambda: items.discard(value))

    # -- reads the handlers share -------------------------------------------------------------

    def referral(self, referral_id: uuid.UUID) -> ReferralRow | None:
        if referral_id not in self.snapshot.referrals:
            raise NeedsDatabase(f"referral {referral_id} was not read")
        return self.snapshot.referrals[referral_id]

    def room(self, site_id: str) -> tuple[int, bool]:
        """A candidate site's places in use now, and whether one is free."""
        reserved, capacity = self.snapshot.places[site_id]
        in_use = reserved + self.writes.places.get(site_id, 0)
        return in_use, in_use < capacity


def _same_moment_once(deadline: Deadline) -> Deadline:
    """``deadline``, worked out once for the moment a batch's messages share."""
    known: dict[datetime.datetime, datetime.datetime] = {}

    def remembered(moment: datetime.datetime) -> datetime.datetime:
        if moment not in known:
            known.clear()
            known[moment] = deadline(moment)
        return known[moment]

    return remembered


def _drop_last(items: list[T]) -> None:
    items.pop()


class BatchStore:
    """``ports.Store`` on a ``BatchState``."""

    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.snapshot = state.snapshot
        self.writes = state.writes

    async def claim_message(
        self,
        message_id: uuid.UUID,
        referral_id: uuid.UUID | None,
        subject: str,
        now: datetime.datetime,
    ) -> bool:
        if message_id in self.snapshot.processed:
            return False
        self.state.add(self.snapshot.processed, message_id)
        self.state.append(self.writes.claims, (message_id, referral_id, subject, now))
        return True

    async def create_referral(
        self, request: ReferralRequested, *, origin: Origin, now: datetime.datetime
    ) -> bool:
        if self.state.referral(request.referral_id) is not None:
            return False
        row = ReferralRow(
            request.referral_id,
            "received",
            0,
            request,
            origin.lat,
            origin.lon,
            request.source.system,
        )
        self.state.put(self.snapshot.referrals, request.referral_id, row)
        self.state.append(self.writes.referrals, (request, origin, now))
        return True

    async def create_rejected(
        self, referral_id: uuid.UUID, system: str, now: datetime.datetime
    ) -> bool:
        raise NeedsDatabase("a rejection is written on the database")

    async def lock_referral(self, referral_id: uuid.UUID) -> ReferralRow | None:
        return self.state.referral(referral_id)

    async def lock_expired(self, now: datetime.datetime, limit: int) -> list[uuid.UUID]:
        raise NeedsDatabase("the sweeper reads the database")

    def _offers(self, referral_id: uuid.UUID) -> list[OfferRow]:
        self.state.referral(referral_id)  # read with its referral, or NeedsDatabase
        return self.snapshot.offers.get(referral_id, [])

    async def offered_sites(self, referral_id: uuid.UUID) -> list[str]:
        return [offer.site_id for offer in self._offers(referral_id)]

    async def current_offer(self, referral_id: uuid.UUID) -> OfferRow | None:
        return next((o for o in self._offers(referral_id) if o.state in ("open", "accepted")), None)

    async def insert_offer(self, offer: OfferRow) -> None:
        offers = [*self._offers(offer.referral_id), replace(offer, state="open")]
        self.state.put(self.snapshot.offers, offer.referral_id, offers)
        self.state.append(self.writes.offers, offer)

    async def close_offer(
        self, offer_id: uuid.UUID, state: OfferEnd, now: datetime.datetime
    ) -> None:
        for referral_id, offers in self.snapshot.offers.items():
            for n, offer in enumerate(offers):
                if offer.id == offer_id and offer.state == "open":
                    closed = replace(offer, state=state, closed_at=now)
                    self.state.put(
                        self.snapshot.offers, referral_id, [*offers[:n], closed, *offers[n + 1 :]]
                    )
                    self.state.append(self.writes.closed, (offer_id, state, now))
                    return

    async def write_behind(
        self, history: History, statuses: Statuses, finished: Outcomes, outbox: Outbound
    ) -> list[OutboxRow]:
        """Queued for the batch's one write; the outbox rows come from it."""
        for entry in history:
            self.state.append(self.writes.history, entry)
        for referral_id, status, attempt, at in statuses:
            self.state.put(self.writes.statuses, referral_id, (status, attempt, at))
            referral = self.state.referral(referral_id)
            if referral is not None:
                moved = replace(referral, status=status, attempt=attempt)
                self.state.put(self.snapshot.referrals, referral_id, moved)
        for message_id, outcome, reason in finished:
            self.state.put(self.writes.finished, message_id, (outcome, reason))
        for item in outbox:
            self.state.append(self.writes.outbox, item)
        return []

    async def lock_unsent(self, *, older_than: datetime.datetime, limit: int) -> list[OutboxRow]:
        raise NeedsDatabase("the relay reads the database")

    async def mark_sent(self, ids: Sequence[int], now: datetime.datetime) -> None:
        raise NeedsDatabase("the outbox is marked on the database")


class BatchDirectory:
    """``ports.Directory`` on a ``BatchState``: the candidates and exclusion counts read for
    the batch, and its places as read plus the batch's own changes."""

    def __init__(self, state: BatchState) -> None:
        self.state = state
        self.snapshot = state.snapshot

    async def suitable(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        only_provider: str | None = None,
        limit: int,
    ) -> list[Candidate]:
        read = self.snapshot.candidates.get(request.referral_id)
        skip = set(skip_sites)
        if read is None or read.point != at or not read.skip <= skip:
            raise NeedsDatabase("these candidates were not read")
        found: list[Candidate] = []
        for site in read.sites:
            in_use, free = self.state.room(site.site_id)
            if site.site_id in skip or not free:
                continue
            if only_provider is not None and site.provider_id != only_provider:
                continue
            found.append(Candidate(site.site_id, site.provider_id, site.distance_km, in_use))
            if len(found) == limit:
                break
        else:
            if not read.complete:
                raise NeedsDatabase("more candidates than were read")
        return sorted(found, key=lambda c: (c.distance_km, c.site_id))

    async def excluded(
        self,
        at: Point,
        request: ReferralRequested,
        *,
        skip_sites: Sequence[str],
        within_km: float | None,
    ) -> dict[str, int]:
        read = self.snapshot.exclusions.get(request.referral_id)
        if read is None or read.skip != frozenset(skip_sites) or read.within_km != within_km:
            raise NeedsDatabase("these exclusion counts were not read")
        counts = dict(read.counts)
        # A site suitable when read and full now (its last place went to an earlier message
        # of the batch) is counted as the database would count it now.
        candidates = self.snapshot.candidates[request.referral_id]
        full = sum(
            1
            for site in candidates.sites
            if not self.state.room(site.site_id)[1]
            and site.site_id not in read.skip
            and directory_candidates.counted_as_nearer(
                at.lat, at.lon, site.lat, site.lon, within_km
            )
        )
        if full:
            counts["not_accepting_or_full"] = counts.get("not_accepting_or_full", 0) + full
        return counts

    async def reserve(self, site_id: str) -> bool:
        if site_id not in self.snapshot.places:
            raise NeedsDatabase(f"site {site_id} was not read")
        if not self.state.room(site_id)[1]:
            return False
        self._places(site_id, +1)
        return True

    async def release(self, site_id: str) -> None:
        self._places(site_id, -1)

    def _places(self, site_id: str, change: int) -> None:
        places = self.state.writes.places
        self.state.put(places, site_id, places.get(site_id, 0) + change)


# -- reading the snapshot and writing the plan ----------------------------------------------------


def likely_choice(
    read: Prefetched, request: ReferralRequested, candidates: int, taken: dict[str, int]
) -> NearbySite | None:
    """The site ``offer_next`` will most likely choose from ``read`` (the exclusion counts
    are read for it), given the places ``taken`` by the batch's earlier referrals (counted in);
    None when none is suitable; ``NeedsDatabase`` when ``read`` cannot tell."""
    free = [s for s in read.sites if s.reserved + taken.get(s.site_id, 0) < s.capacity]
    load = {s.site_id: s.reserved + taken.get(s.site_id, 0) for s in free}
    found = [Candidate(s.site_id, s.provider_id, s.distance_km, load[s.site_id]) for s in free]
    nearest = found[:candidates]
    preferred = request.preferred_provider_id
    if preferred and not any(c.provider_id == preferred for c in nearest):
        extra = [c for c in found if c.provider_id == preferred][:1]
        if not extra and not read.complete:
            raise NeedsDatabase("the preferred provider's sites were not read")
        nearest += extra
    if len(nearest) < candidates and not read.complete:
        raise NeedsDatabase("more candidates than were read")
    nearest.sort(key=lambda c: (c.distance_km, c.site_id))
    chosen = choose(nearest, excluded={}, preferred_provider_id=preferred).candidate
    if chosen is None:
        return None
    taken[chosen.site_id] = taken.get(chosen.site_id, 0) + 1
    return next(s for s in free if s.site_id == chosen.site_id)


#: Places the previous batch's plan took or gave back (net, per site), and its transaction's
#: id: it may commit while this batch reads.
InFlight = tuple[dict[str, int], int]


async def read_snapshot(
    store: StoreRows,
    directory: DirectoryRows,
    message_ids: Iterable[uuid.UUID],
    referral_ids: Iterable[uuid.UUID],
    routes: Callable[[Snapshot], list[Route]],
    *,
    candidates: int,
    in_flight: InFlight | None = None,
    previous: Callable[[], Awaitable[bool]] | None = None,
) -> Snapshot:
    """What the batch's handlers will read: the handled message ids; the candidates and
    exclusion counts of the referrals ``routes`` names (new requests first, then, once the
    referrals are read, the others it names); the referrals, locked, and their offers.

    ``previous`` waits for the previous batch to be committed (or handled again): nothing is
    locked before it returns, so the two batches never wait for each other; it says whether
    what was committed is what that batch's plan said. Until then that
    batch may commit at any moment (``in_flight``): the places its plan took are counted in
    what was read before its commit (the candidates query says whether its commit was in what
    it read; when it committed between the candidates and the exclusion counts, both are read
    again)."""
    snapshot = Snapshot()
    snapshot.processed = await store.handled_already(sorted(set(message_ids)))
    ids = sorted(set(referral_ids))
    snapshot.referrals = dict.fromkeys(ids)  # none read yet: new requests route
    first = routes(snapshot)
    for _ in range(2):
        seen = await _read_directory(snapshot, directory, first, candidates, in_flight)
        if seen is not None:
            break
        in_flight = None  # it committed between the two reads: read both again
    if previous is not None and not await previous() and in_flight is not None and not seen:
        # What it committed is not what its plan said, which was counted in: read again.
        await _read_directory(snapshot, directory, first, candidates, None)
    found = await store.lock_referrals(ids)
    snapshot.referrals = {rid: found.get(rid) for rid in ids}
    snapshot.offers = await store.offers_of([rid for rid in ids if found.get(rid)])
    for rid in found:  # a request for a referral known already routes nothing
        snapshot.candidates.pop(rid, None)
        snapshot.exclusions.pop(rid, None)
    read = {route[0] for route in first}
    then = [route for route in routes(snapshot) if route[0] not in read]
    if then:
        await _read_directory(snapshot, directory, then, candidates, None)
    return snapshot


async def _read_directory(
    snapshot: Snapshot,
    directory: DirectoryRows,
    to_route: Sequence[Route],
    candidates: int,
    in_flight: InFlight | None,
) -> bool | None:
    """The candidates and exclusion counts of ``to_route`` into ``snapshot``, counting in the
    places ``in_flight`` took unless its commit is in what was read; None when it committed
    between the two statements (read them again), else whether its commit was in them."""
    if not to_route:
        return False
    xid = None if in_flight is None else in_flight[1]
    limit = candidates + PREFETCH_SPARE
    lists, seen = await directory.suitable_many(to_route, limit, xid=xid)
    pending = {} if in_flight is None or seen else in_flight[0]
    for route, sites in zip(to_route, lists, strict=True):
        referral_id, point, _, skip = route
        snapshot.candidates[referral_id] = Prefetched(
            point, frozenset(skip), sites, complete=len(sites) < limit
        )
        for site in sites:  # the latest read of a site wins
            reserved = site.reserved + pending.get(site.site_id, 0)
            snapshot.places[site.site_id] = (reserved, site.capacity)
    asks: list[tuple[Route, float | None]] = []
    # The places the batch's referrals will likely take, in order, after the previous batch's.
    taken: dict[str, int] = dict(pending)
    for route in to_route:
        try:
            chosen = likely_choice(snapshot.candidates[route[0]], route[2], candidates, taken)
        except NeedsDatabase:
            continue  # its handler will find out, and defer it
        asks.append((route, None if chosen is None else chosen.distance_km))
    counted, seen_later = await directory.excluded_many(asks, xid=xid)
    for (route, within), counts in zip(asks, counted, strict=True):
        snapshot.exclusions[route[0]] = Excluded(frozenset(route[3]), within, counts)
    if xid is not None and seen_later and not seen:
        return None
    return bool(seen)


async def write(store: StoreRows, directory: DirectoryRows, state: BatchState) -> list[OutboxRow]:
    """The batch's changes, set-based, in its transaction; the outbox rows stored. ``Stale``
    when the database no longer matches the snapshot they were planned on.

    A message claimed here is stored with its outcome, and a referral created here with its
    latest status, rather than updated after (two hundred row updates fewer a batch)."""
    writes = state.writes
    unknown = [rid for rid, row in state.snapshot.referrals.items() if row is None]
    if unknown and await store.known_referrals(unknown):
        raise Stale("a referral the batch did not find was created meanwhile")
    finished, statuses = dict(writes.finished), dict(writes.statuses)  # what is left to update
    claims = [(*claim, *finished.pop(claim[0], ("handling", None))) for claim in writes.claims]
    if await store.claim_messages(claims) != len(claims):
        raise Stale("another router handled one of the batch's messages meanwhile")
    referrals = [
        (request, origin, at, *statuses.pop(request.referral_id, ("received", 0, at)))
        for request, origin, at in writes.referrals
    ]
    if await store.create_referrals(referrals) != len(referrals):
        raise Stale("another router created one of the batch's referrals meanwhile")
    if full := await directory.adjust_places(writes.places):
        raise Stale(f"the last places at {sorted(full)} went to other referrals meanwhile")
    await store.close_offers(writes.closed)
    await store.insert_offers(writes.offers)
    return await store.write_behind(
        writes.history,
        [(rid, status, attempt, at) for rid, (status, attempt, at) in statuses.items()],
        [(mid, outcome, reason) for mid, (outcome, reason) in finished.items()],
        writes.outbox,
    )
