"""The batch path's plan (services/router/batch.py) without servers: the real handlers on an
in-memory snapshot, what they queue to write, when the snapshot cannot answer (the message is
deferred, its changes undone), and when the writes find the database moved (``Stale``)."""

import dataclasses
import datetime
import uuid
from collections.abc import Sequence

import pytest

from contracts.referrals import ReferralRequested, ReferralResponse
from services.directory.candidates import CandidateSite
from services.geo import geodesic_km
from services.router.batch import (
    BatchState,
    Excluded,
    NeedsDatabase,
    Prefetched,
    Snapshot,
    Stale,
    Writes,
    likely_choice,
    read_snapshot,
    write,
)
from services.router.handlers import on_requested, on_response
from services.router.model import OfferRow, OutboxRow, Point, ReferralRow
from services.router.ports import Claim, NewReferral, Route
from tests.fakes import ALMONTE, NOW, TIMEOUT, lanark_sites, locate_almonte
from tests.referrals import SYSTEM, make_request

AT = Point(ALMONTE.lat, ALMONTE.lon)
CCA_SITE, CES_SITE, ONTRAC_SITE = (site.site_id for site in lanark_sites())


def nearby(capacity: int = 25, reserved: int = 0, skip: Sequence[str] = ()) -> list[CandidateSite]:
    """The seed sites as the batch's candidates query reads them from Almonte."""
    return [
        CandidateSite(
            s.site_id,
            s.provider_id,
            geodesic_km(AT.lat, AT.lon, s.lat, s.lon),
            reserved,
            capacity,
            s.lat,
            s.lon,
        )
        for s in lanark_sites()
        if s.site_id not in skip
    ]


def snapshot_for(
    requests: Sequence[ReferralRequested], *, capacity: int = 25, complete: bool = True
) -> Snapshot:
    """What ``read_snapshot`` reads for new requests from Almonte: no referral, the seed sites
    as candidates, and the exclusion counts of the nearest (Carleton Place, 11.3 km)."""
    snapshot = Snapshot()
    sites = nearby(capacity)
    for request in requests:
        snapshot.referrals[request.referral_id] = None
        snapshot.candidates[request.referral_id] = Prefetched(AT, frozenset(), sites, complete)
        snapshot.exclusions[request.referral_id] = Excluded(
            frozenset(), sites[0].distance_km, {"services": 2}
        )
    snapshot.places = {s.site_id: (s.reserved, s.capacity) for s in sites}
    return snapshot


def state_for(snapshot: Snapshot) -> BatchState:
    return BatchState(snapshot, deadline=lambda moment: moment + TIMEOUT)


async def plan_request(state: BatchState, request: ReferralRequested) -> str:
    handled = await state.run(
        NOW, lambda uow: on_requested(request, SYSTEM, uow=uow, locate=locate_almonte)
    )
    return handled.outcome


async def test_a_request_is_planned_in_memory_with_everything_to_write() -> None:
    request = make_request()
    state = state_for(snapshot_for([request]))
    assert await plan_request(state, request) == "offered"
    w = state.writes
    assert [c[0] for c in w.claims] == [request.message_id]
    assert [r[0].referral_id for r in w.referrals] == [request.referral_id]
    assert w.places == {CCA_SITE: 1}
    assert [(o.site_id, o.attempt, o.expires_at) for o in w.offers] == [
        (CCA_SITE, 1, NOW + TIMEOUT)
    ]
    assert [(h[1].event, h[1].status) for h in w.history] == [
        ("receive", "received"),
        ("offer", "offered"),
    ]
    assert w.history[1][1].explanation is not None
    assert w.history[1][1].explanation.excluded == {"services": 2}  # the counts read
    assert w.statuses == {request.referral_id: ("offered", 1, NOW)}
    assert w.finished == {request.message_id: ("offered", f"{CCA_SITE} at 11.3 km")}
    assert [subject.split(".")[1] for subject, _ in w.outbox] == ["status", "status", "offered"]


async def test_a_message_handled_before_is_a_duplicate_and_writes_nothing() -> None:
    request = make_request()
    snapshot = snapshot_for([request])
    snapshot.processed.add(request.message_id)
    state = state_for(snapshot)
    assert await plan_request(state, request) == "duplicate_message"
    assert state.writes == Writes()


async def test_a_request_the_snapshot_cannot_answer_is_deferred_and_its_changes_undone() -> None:
    """One place at Carleton Place: the first request takes it; the second would go to Perth,
    whose exclusion counts were not read (the snapshot foresaw Carleton Place): the database
    must answer. Everything the second request did in memory is undone."""
    first, second = make_request(), make_request()
    state = state_for(snapshot_for([first, second], capacity=1))
    assert await plan_request(state, first) == "offered"
    before = dataclasses.replace(
        state.writes,
        claims=list(state.writes.claims),
        referrals=list(state.writes.referrals),
        places=dict(state.writes.places),
        offers=list(state.writes.offers),
        history=list(state.writes.history),
        statuses=dict(state.writes.statuses),
        finished=dict(state.writes.finished),
        outbox=list(state.writes.outbox),
    )
    with pytest.raises(NeedsDatabase):
        await plan_request(state, second)
    assert state.writes == before
    assert state.snapshot.referrals[second.referral_id] is None
    assert second.message_id not in state.snapshot.processed
    # The first's place is still taken in memory: a third request would not get it either.
    assert state.room(CCA_SITE) == (1, False)


async def test_candidates_beyond_those_read_send_the_message_to_the_database() -> None:
    """A preferred provider none of whose sites was read, when more sites exist than were
    read."""
    request = make_request(preferred_provider_id="some-other-provider")
    state = state_for(snapshot_for([request], complete=False))
    with pytest.raises(NeedsDatabase):
        await plan_request(state, request)
    assert state.writes == Writes()


async def test_a_decline_is_planned_with_the_next_site_from_the_candidates_read() -> None:
    request = make_request()
    offer = OfferRow(
        id=uuid.uuid4(),
        referral_id=request.referral_id,
        attempt=1,
        provider_id="canadian-career-academy",
        site_id=CCA_SITE,
        distance_km=11.33,
        offered_at=NOW - datetime.timedelta(hours=1),
        expires_at=NOW + TIMEOUT,
    )
    referral = ReferralRow(
        request.referral_id, "offered", 1, request, AT.lat, AT.lon, request.source.system
    )
    sites = nearby(skip=[CCA_SITE], reserved=3)
    snapshot = Snapshot(
        referrals={request.referral_id: referral},
        offers={request.referral_id: [offer]},
        candidates={
            request.referral_id: Prefetched(AT, frozenset({CCA_SITE}), sites, complete=True)
        },
        exclusions={request.referral_id: Excluded(frozenset({CCA_SITE}), sites[0].distance_km, {})},
        places={s.site_id: (s.reserved, s.capacity) for s in sites},
    )
    state = state_for(snapshot)
    decline = ReferralResponse(
        message_id=uuid.uuid4(),
        referral_id=request.referral_id,
        offer_id=offer.id,
        decision="decline",
        reason="no room this month",
    )
    handled = await state.run(
        NOW, lambda uow: on_response(decline, "canadian-career-academy", uow=uow)
    )
    assert handled.outcome == "offered"
    w = state.writes
    assert w.closed == [(offer.id, "declined", NOW)]
    assert w.places == {CCA_SITE: -1, CES_SITE: 1}
    assert [(o.site_id, o.attempt) for o in w.offers] == [(CES_SITE, 2)]
    assert w.statuses[request.referral_id] == ("offered", 2, NOW)
    # Later messages of the batch see the referral as it is now.
    assert state.snapshot.referrals[request.referral_id].status == "offered"  # type: ignore[union-attr]
    assert [o.state for o in state.snapshot.offers[request.referral_id]] == ["declined", "open"]


def test_the_likely_choice_is_the_nearest_with_a_place_left_unless_the_read_cannot_tell() -> None:
    request = make_request()
    sites = nearby(capacity=2)
    read = Prefetched(AT, frozenset(), sites, complete=True)
    taken: dict[str, int] = {}
    chosen = [likely_choice(read, request, 5, taken) for _ in range(3)]
    # Two places at Carleton Place, then the next nearest: the batch's own reservations count.
    assert [None if c is None else c.site_id for c in chosen] == [CCA_SITE, CCA_SITE, CES_SITE]
    assert taken == {CCA_SITE: 2, CES_SITE: 1}
    assert likely_choice(Prefetched(AT, frozenset(), [], complete=True), request, 5, {}) is None
    with pytest.raises(NeedsDatabase):  # 3 read, 5 wanted, and there may be more
        likely_choice(Prefetched(AT, frozenset(), sites, complete=False), request, 5, {})


async def test_a_site_filled_by_the_batch_counts_as_full_in_the_explanation() -> None:
    """Two requests, one place at Carleton Place: the second is offered Perth, and its
    explanation counts Carleton Place as full, as handling them one by one would."""
    first, second = make_request(), make_request()
    snapshot = snapshot_for([first, second], capacity=1)
    perth = next(s for s in nearby() if s.site_id == CES_SITE)
    snapshot.exclusions[second.referral_id] = Excluded(frozenset(), perth.distance_km, {})
    state = state_for(snapshot)
    assert await plan_request(state, first) == "offered"
    assert await plan_request(state, second) == "offered"
    offered = state.writes.history[-1][1]
    assert offered.site_id == CES_SITE
    assert offered.explanation is not None
    assert offered.explanation.excluded == {"not_accepting_or_full": 1}


class Rows:
    """The set-based writes, recording what they were given and answering as told."""

    def __init__(
        self, *, claimed: int | None = None, full: set[str] | None = None, known: int = 0
    ) -> None:
        self.claimed, self.full, self.known = claimed, full or set(), known
        self.claims: list[Claim] = []
        self.referrals: list[NewReferral] = []
        self.behind: list[object] = []

    async def known_referrals(self, ids: Sequence[uuid.UUID]) -> int:
        return self.known

    async def claim_messages(self, claims: Sequence[Claim]) -> int:
        self.claims += claims
        return len(claims) if self.claimed is None else self.claimed

    async def create_referrals(self, referrals: Sequence[NewReferral]) -> int:
        self.referrals += referrals
        return len(referrals)

    async def adjust_places(self, changes: dict[str, int]) -> set[str]:
        return self.full

    async def close_offers(self, closed: object) -> None:
        pass

    async def insert_offers(self, offers: object) -> None:
        pass

    async def write_behind(
        self, history: object, statuses: object, finished: object, outbox: object
    ) -> list[OutboxRow]:
        self.behind = [history, statuses, finished, outbox]
        return []

    # (reads: not used by ``write``)
    async def handled_already(self, ids: object) -> set[uuid.UUID]:
        raise AssertionError

    async def lock_referrals(self, ids: object) -> dict[uuid.UUID, ReferralRow]:
        raise AssertionError

    async def offers_of(self, ids: object) -> dict[uuid.UUID, list[OfferRow]]:
        raise AssertionError

    async def suitable_many(self, routes: Sequence[Route], limit: int) -> list[list[object]]:
        raise AssertionError

    async def excluded_many(self, asks: object) -> list[dict[str, int]]:
        raise AssertionError


async def planned() -> BatchState:
    """A request planned, beside a message about a referral the snapshot did not find."""
    request = make_request()
    state = state_for(snapshot_for([request]))
    state.snapshot.referrals[uuid.uuid4()] = None
    await plan_request(state, request)
    return state


async def test_the_writes_store_outcomes_and_statuses_with_their_rows() -> None:
    rows = Rows()
    await write(rows, rows, await planned())  # type: ignore[arg-type]
    [claim] = rows.claims
    assert claim[4:] == ("offered", f"{CCA_SITE} at 11.3 km")  # the outcome with the claim...
    [referral] = rows.referrals
    assert referral[3:5] == ("offered", 1)  # ...and the referral at its latest status
    _, statuses, finished, outbox = rows.behind
    assert statuses == []  # so nothing is updated after
    assert finished == []
    assert len(outbox) == 3  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (Rows(claimed=0), "handled one of the batch's messages"),
        (Rows(full={CCA_SITE}), "the last places at"),
        (Rows(known=1), "a referral the batch did not find was created meanwhile"),
    ],
)
async def test_writes_that_find_the_database_moved_are_stale(rows: Rows, why: str) -> None:
    with pytest.raises(Stale, match=why):
        await write(rows, rows, await planned())  # type: ignore[arg-type]


class Reads:
    """The snapshot's reads, with the previous batch committing at a chosen moment: ``seen``
    says, for each directory statement in turn, whether its commit is in what it read."""

    def __init__(self, seen: list[bool]) -> None:
        self.seen = seen
        self.statements = 0
        self.locked_after = -1

    async def handled_already(self, ids: object) -> set[uuid.UUID]:
        return set()

    async def lock_referrals(self, ids: object) -> dict[uuid.UUID, ReferralRow]:
        self.locked_after = self.statements
        return {}

    async def offers_of(self, ids: object) -> dict[uuid.UUID, list[OfferRow]]:
        return {}

    def _seen(self) -> bool:
        self.statements += 1
        return self.seen[self.statements - 1]

    async def suitable_many(
        self, routes: Sequence[Route], limit: int, *, xid: int | None = None
    ) -> tuple[list[list[CandidateSite]], bool | None]:
        seen = self._seen()
        # Once the previous batch committed, its place at Carleton Place is in the rows.
        return [nearby(capacity=2, reserved=1 if seen else 0) for _ in routes], seen

    async def excluded_many(
        self, asks: Sequence[object], *, xid: int | None = None
    ) -> tuple[list[dict[str, int]], bool | None]:
        return [{} for _ in asks], self._seen()


@pytest.mark.parametrize(
    ("seen", "exact", "statements", "waited_at"),
    [
        ([False, False], True, 2, 2),  # read before its commit: its place counted in
        ([True, True], True, 2, 2),  # read after: already in the rows
        ([False, True, True, True], True, 4, 4),  # committed between the two: read again
        # It committed something else than its plan (planned again): read again after it.
        ([False, False, True, True], False, 4, 2),
    ],
)
async def test_the_previous_batchs_places_are_counted_once(
    seen: list[bool], exact: bool, statements: int, waited_at: int
) -> None:
    """The previous batch's plan took one of Carleton Place's two places; it commits at some
    moment while this batch reads. Its place is counted once whichever the moment, and this
    batch locks nothing before it is committed."""
    request = make_request()
    reads = Reads(seen)
    waited: list[int] = []

    async def previous() -> bool:
        waited.append(reads.statements)
        return exact

    snapshot = await read_snapshot(
        reads,  # type: ignore[arg-type]
        reads,  # type: ignore[arg-type]
        [request.message_id],
        [request.referral_id],
        lambda _: [(request.referral_id, AT, request, ())],
        candidates=5,
        in_flight=({CCA_SITE: 1}, 1234),
        previous=previous,
    )
    assert reads.statements == statements
    assert waited == [waited_at]  # after the directory's reads, before the referrals' locks
    assert reads.locked_after == statements
    assert snapshot.places[CCA_SITE] == (1, 2)  # one of two places in use, either way
    assert state_for(snapshot).room(CCA_SITE) == (1, True)
