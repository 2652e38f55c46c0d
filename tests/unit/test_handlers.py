"""The router's handlers against in-memory fakes of the store and the directory: what each
message and deadline changes, publishes and refuses (no PostgreSQL, no NATS)."""

import datetime
import uuid
from collections.abc import Awaitable, Callable

import msgspec
import pytest

from contracts.codec import decode_outbound, encode
from contracts.common import ClientLocation
from contracts.directory import Origin
from contracts.referrals import (
    DeadLetter,
    ProviderNotice,
    ReferralOffered,
    ReferralResponse,
    ReferralStatusChanged,
)
from contracts.subjects import DEAD, notice_subject, requested_subject, status_subject
from services.geo import UnknownCommunity
from services.router.handlers import (
    Contention,
    InvalidRequest,
    on_cancel,
    on_invalid,
    on_progress,
    on_requested,
    on_response,
    on_timeout,
)
from services.router.model import Handled
from services.router.privacy import personal_information
from services.router.unit_of_work import UnitOfWork
from tests.fakes import (
    NOW,
    TIMEOUT,
    FakeDirectory,
    FakeSite,
    FakeStore,
    lanark_sites,
    locate_almonte,
    unit_of_work,
)
from tests.referrals import cancel, make_request, progress

CCA = "canadian-career-academy"
CES = "community-employment-services"
ONTRAC = "ontrac-employment-resource-services"
SYSTEM = "ow-test"
REQUESTED = requested_subject(SYSTEM)
STATUS = status_subject(SYSTEM)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory(lanark_sites())


Work = Callable[[UnitOfWork], Awaitable[Handled]]


async def run(store: FakeStore, directory: FakeDirectory, work: Work, now=NOW) -> Handled:
    """One transaction's worth: the handler, then the unit of work's flush (as before commit)."""
    uow = unit_of_work(store, directory, now)
    handled = await work(uow)
    await uow.flush()
    return handled


def published(store: FakeStore) -> list[tuple[str, object]]:
    return [(row.subject, decode_outbound(row.payload)) for row in store.outbox]


def respond(referral_id: uuid.UUID, offer_id: uuid.UUID, decision: str, reason=None):
    return ReferralResponse(
        message_id=uuid.uuid4(),
        referral_id=referral_id,
        offer_id=offer_id,
        decision=decision,  # type: ignore[arg-type]
        reason=reason,
    )


async def request(store: FakeStore, directory: FakeDirectory, **kwargs) -> Handled:
    msg = make_request(**kwargs)
    return await run(
        store, directory, lambda uow: on_requested(msg, SYSTEM, uow=uow, locate=locate_almonte)
    )


async def new_referral(store: FakeStore, directory: FakeDirectory) -> uuid.UUID:
    handled = await request(store, directory)
    assert handled.referral_id is not None
    return handled.referral_id


async def test_a_request_is_offered_to_the_nearest_site_with_its_place_taken(store, directory):
    handled = await request(store, directory)
    assert (handled.outcome, handled.reason) == ("offered", "cca-carleton-place at 11.3 km")
    rid = handled.referral_id
    assert store.events(rid) == [("receive", "received"), ("offer", "offered")]
    [offer] = store.open_offers()
    assert (offer.site_id, offer.attempt, offer.expires_at) == (
        "cca-carleton-place",
        1,
        NOW + TIMEOUT,
    )
    assert directory.site("cca-carleton-place").reserved == 1
    subjects = [subject for subject, _ in published(store)]
    assert subjects == [STATUS, STATUS, f"referral.offered.{CCA}"]
    status = published(store)[1][1]
    assert isinstance(status, ReferralStatusChanged)
    assert status.explanation is not None
    assert status.explanation.rule == "nearest"
    offered = published(store)[2][1]
    assert isinstance(offered, ReferralOffered)
    assert (offered.offer_id, offered.distance_km) == (offer.id, round(offer.distance_km, 3))


async def test_an_unplaceable_location_is_an_invalid_request(store, directory):
    def nowhere(location: ClientLocation) -> Origin:
        raise UnknownCommunity("'Atlantis' is not a community", field="community")

    msg = make_request(location=ClientLocation(community="Atlantis"))
    with pytest.raises(InvalidRequest, match=r"client.location: 'Atlantis'"):
        await run(store, directory, lambda uow: on_requested(msg, SYSTEM, uow=uow, locate=nowhere))


async def test_a_repeated_message_and_a_repeated_referral_change_nothing(store, directory):
    msg = make_request()
    first = await run(
        store, directory, lambda uow: on_requested(msg, SYSTEM, uow=uow, locate=locate_almonte)
    )
    again = await run(
        store, directory, lambda uow: on_requested(msg, SYSTEM, uow=uow, locate=locate_almonte)
    )
    assert again.outcome == "duplicate_message"
    other_message = msgspec.structs.replace(msg, message_id=uuid.uuid4())
    repeat = await run(
        store,
        directory,
        lambda uow: on_requested(other_message, SYSTEM, uow=uow, locate=locate_almonte),
    )
    assert repeat.outcome == "duplicate_referral"
    assert store.processed[other_message.message_id] == "duplicate_referral"
    assert len(store.offers) == 1
    assert store.events(first.referral_id) == [("receive", "received"), ("offer", "offered")]


async def test_a_decline_frees_the_place_and_offers_the_next_site(store, directory):
    rid = await new_referral(store, directory)
    [first] = store.open_offers()
    declined = respond(rid, first.id, "decline", "no evening hours")
    handled = await run(store, directory, lambda uow: on_response(declined, CCA, uow=uow))
    assert handled.outcome == "offered"
    assert store.offer_states[first.id] == "declined"
    assert directory.site("cca-carleton-place").reserved == 0
    [second] = store.open_offers()
    assert (second.attempt, second.provider_id) == (2, CES)
    assert store.events(rid)[-2:] == [("decline", "declined"), ("offer", "offered")]
    assert store.history[-2][4] == f"declined by {CCA}: no evening hours"
    assert store.referrals[rid].attempt == 2


async def test_an_accept_closes_the_offer_and_keeps_the_place(store, directory):
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    handled = await run(
        store, directory, lambda uow: on_response(respond(rid, offer.id, "accept"), CCA, uow=uow)
    )
    assert (handled.outcome, handled.reason) == ("accepted", "cca-carleton-place")
    assert store.offer_states[offer.id] == "accepted"
    assert directory.site("cca-carleton-place").reserved == 1
    assert store.referrals[rid].status == "accepted"


@pytest.mark.parametrize(
    ("who", "which", "why"),
    [
        (CES, "open", f"provider {CES} does not hold the open offer"),
        (CCA, "stale", "is not the referral's open offer"),
    ],
)
async def test_a_response_that_does_not_fit_is_refused_and_changes_nothing(
    store, directory, who, which, why
):
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    offer_id = offer.id if which == "open" else uuid.uuid4()
    before = len(store.outbox)
    handled = await run(
        store, directory, lambda uow: on_response(respond(rid, offer_id, "accept"), who, uow=uow)
    )
    assert handled.outcome == "refused"
    assert handled.reason is not None
    assert why in handled.reason
    assert store.events(rid)[-1] == ("!accept", "offered")
    # A refusal is recorded, not published to OW; the provider that answered is told why.
    [(subject, notice)] = published(store)[before:]
    assert subject == notice_subject(who)
    assert isinstance(notice, ProviderNotice)
    assert (notice.kind, notice.offer_id) == ("response_refused", offer_id)
    assert why in notice.reason
    assert store.referrals[rid].status == "offered"
    assert store.offer_states[offer.id] == "open"


async def test_an_answer_after_acceptance_is_refused_with_the_state(store, directory):
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    accept = respond(rid, offer.id, "accept")
    await run(store, directory, lambda uow: on_response(accept, CCA, uow=uow))
    late = respond(rid, offer.id, "decline")
    handled = await run(store, directory, lambda uow: on_response(late, CCA, uow=uow))
    assert (handled.outcome, handled.reason) == ("refused", "the referral is already accepted")


async def test_an_answer_about_an_unknown_referral_is_refused(store, directory):
    answer = respond(uuid.uuid4(), uuid.uuid4(), "accept")
    handled = await run(store, directory, lambda uow: on_response(answer, CCA, uow=uow))
    assert (handled.outcome, handled.reason) == ("refused", "unknown referral")
    assert store.processed[answer.message_id] == "refused"


async def test_a_deadline_is_a_timeout_decline_only_once_it_has_passed(store, directory):
    rid = await new_referral(store, directory)
    [first] = store.open_offers()
    early = await run(store, directory, lambda uow: on_timeout(rid, uow=uow), now=NOW + TIMEOUT / 2)
    assert early.outcome == "nothing_due"
    late = await run(store, directory, lambda uow: on_timeout(rid, uow=uow), now=NOW + TIMEOUT)
    assert late.outcome == "offered"
    assert store.offer_states[first.id] == "expired"
    assert store.events(rid)[-2:] == [("expire", "expired"), ("offer", "offered")]
    assert store.history[-2][4] == "timeout"


async def test_no_site_left_makes_the_referral_unmatched_and_says_why(store, directory):
    directory.sites = directory.sites[:1]
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    declined = respond(rid, offer.id, "decline")
    handled = await run(store, directory, lambda uow: on_response(declined, CCA, uow=uow))
    assert handled.outcome == "unmatched"
    assert handled.reason == "no suitable site: 1 site(s) excluded (already_offered 1)"
    assert store.referrals[rid].status == "unmatched"
    status = published(store)[-1][1]
    assert isinstance(status, ReferralStatusChanged)
    assert status.status == "unmatched"
    assert status.explanation is not None
    assert status.explanation.excluded == {"already_offered": 1}


async def test_a_cancel_withdraws_the_open_offer_and_frees_its_place(store, directory):
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    handled = await run(
        store, directory, lambda uow: on_cancel(cancel(rid, "moved"), SYSTEM, uow=uow)
    )
    assert handled.outcome == "cancelled"
    assert handled.reason == (
        "cancelled by OW: moved; the open offer to cca-carleton-place is withdrawn"
    )
    assert store.offer_states[offer.id] == "withdrawn"
    assert directory.site("cca-carleton-place").reserved == 0
    again = await run(store, directory, lambda uow: on_cancel(cancel(rid), SYSTEM, uow=uow))
    assert (again.outcome, again.reason) == ("refused", "the referral is already cancelled")


async def test_a_site_whose_last_place_went_meanwhile_is_skipped(store, directory):
    directory.taken_meanwhile = {"cca-carleton-place"}
    handled = await request(store, directory)
    assert handled.outcome == "offered"
    assert store.open_offers()[0].site_id == "ces-perth"


async def test_when_every_place_goes_meanwhile_the_message_is_retried(store, directory):
    # More suitable sites than a round tries, and each one's last place goes meanwhile.
    directory.sites = [
        FakeSite(f"site-{n}", f"provider-{n}", 45.0 + n / 100, -76.0) for n in range(8)
    ]
    directory.taken_meanwhile = {site.site_id for site in directory.sites}
    with pytest.raises(Contention):
        await request(store, directory)


async def test_a_preferred_provider_farther_than_the_nearest_few_is_found(store, directory):
    uow_candidates = 1  # only the nearest site is fetched per round
    msg = make_request(preferred_provider_id=ONTRAC)

    async def work(uow: UnitOfWork) -> Handled:
        uow.candidates = uow_candidates
        return await on_requested(msg, SYSTEM, uow=uow, locate=locate_almonte)

    handled = await run(store, directory, work)
    assert handled.reason is not None
    assert handled.reason.startswith("ontrac-smiths-falls")


async def test_an_invalid_request_is_dead_lettered_and_its_referral_rejected(store, directory):
    referral_id = uuid.uuid4()
    payload = encode(make_request(referral_id=referral_id)).replace(b'"needs"', b'"wants"')

    def invalid(uow: UnitOfWork) -> Awaitable[Handled]:
        return on_invalid(REQUESTED, payload, "invalid: missing `needs`", sequence=7, uow=uow)

    handled = await run(store, directory, invalid)
    assert (handled.outcome, handled.poison) == ("rejected", True)
    assert store.referrals[referral_id].status == "rejected"
    dead = [m for s, m in published(store) if s == DEAD]
    assert len(dead) == 1
    assert isinstance(dead[0], DeadLetter)
    assert (dead[0].payload, dead[0].stream_sequence) == (payload, 7)
    redelivered = await run(store, directory, invalid)
    assert redelivered.outcome == "duplicate_message"
    other = await run(
        store,
        directory,
        lambda uow: on_invalid(REQUESTED, payload, "again", sequence=8, uow=uow),
    )
    assert other.outcome == "refused"
    assert store.events(referral_id)[-1] == ("!reject", "rejected")


# -- contract v1.1: after acceptance, per-party subjects, notices ----------------------------


async def accepted(store: FakeStore, directory: FakeDirectory) -> uuid.UUID:
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    await run(
        store, directory, lambda uow: on_response(respond(rid, offer.id, "accept"), CCA, uow=uow)
    )
    return rid


async def report(
    store: FakeStore,
    directory: FakeDirectory,
    rid: uuid.UUID,
    status: str,
    code: str | None = None,
    *,
    by: str = CCA,
    occurred_at: datetime.datetime = NOW,
) -> Handled:
    msg = progress(rid, status, code, note="started the workshop", occurred_at=occurred_at)
    return await run(store, directory, lambda uow: on_progress(msg, by, uow=uow))


async def test_started_then_completed_is_reported_to_ow_and_gives_the_place_back(store, directory):
    rid = await accepted(store, directory)
    site = directory.site("cca-carleton-place")
    assert site.reserved == 1
    started = await report(store, directory, rid, "in_service")
    assert started.outcome == "in_service"
    assert site.reserved == 1  # a client in service still holds the place
    done = await report(store, directory, rid, "completed", "employed")
    assert (done.outcome, done.reason) == ("completed", "employed")
    assert site.reserved == 0
    statuses = [m for s, m in published(store) if s == STATUS]
    last = statuses[-1]
    assert isinstance(last, ReferralStatusChanged)
    assert (last.status, last.code, last.site_id) == ("completed", "employed", site.site_id)
    assert [m.status for m in statuses if isinstance(m, ReferralStatusChanged)][-2:] == [
        "in_service",
        "completed",
    ]


async def test_not_started_closes_the_referral_and_frees_its_place(store, directory):
    rid = await accepted(store, directory)
    handled = await report(store, directory, rid, "not_started", "no_show")
    assert handled.outcome == "not_started"
    assert store.referrals[rid].status == "not_started"
    assert directory.site("cca-carleton-place").reserved == 0


@pytest.mark.parametrize(
    ("status", "code", "by", "when", "why"),
    [
        ("in_service", None, CES, NOW, f"provider {CES} does not hold the referral"),
        ("completed", "employed", CCA, NOW, "cannot complete a referral that is accepted"),
        ("ended_early", "moved", CCA, NOW, "cannot end early a referral that is accepted"),
        ("in_service", None, CCA, NOW + TIMEOUT, "is in the future"),
        ("in_service", None, CCA, NOW - TIMEOUT, "before the referral was accepted"),
    ],
)
async def test_a_report_that_does_not_apply_is_refused_and_the_provider_told(
    store, directory, status, code, by, when, why
):
    rid = await accepted(store, directory)
    before = len(store.outbox)
    handled = await report(store, directory, rid, status, code, by=by, occurred_at=when)
    assert handled.outcome == "refused"
    assert why in (handled.reason or "")
    assert store.referrals[rid].status == "accepted"
    assert directory.site("cca-carleton-place").reserved == 1
    [(subject, notice)] = published(store)[before:]
    assert subject == notice_subject(by)
    assert isinstance(notice, ProviderNotice)
    assert notice.kind == "progress_refused"


async def test_a_report_before_acceptance_is_refused(store, directory):
    rid = await new_referral(store, directory)
    handled = await report(store, directory, rid, "in_service")
    assert handled.outcome == "refused"
    assert store.referrals[rid].status == "offered"


async def test_ow_withdraws_after_acceptance_and_the_provider_is_told(store, directory):
    rid = await accepted(store, directory)
    await report(store, directory, rid, "in_service")
    handled = await run(
        store, directory, lambda uow: on_cancel(cancel(rid, "moved away"), SYSTEM, uow=uow)
    )
    assert (handled.outcome, handled.reason) == ("withdrawn", "withdrawn by OW: moved away")
    assert directory.site("cca-carleton-place").reserved == 0
    notices = [(s, m) for s, m in published(store) if isinstance(m, ProviderNotice)]
    assert [(s, m.kind) for s, m in notices] == [(notice_subject(CCA), "referral_withdrawn")]
    late = await report(store, directory, rid, "completed", "employed")
    assert (late.outcome, late.reason) == ("refused", "the referral is already withdrawn")


async def test_only_the_referring_system_may_cancel(store, directory):
    rid = await new_referral(store, directory)
    [offer] = store.open_offers()
    handled = await run(
        store, directory, lambda uow: on_cancel(cancel(rid), "ow-elsewhere", uow=uow)
    )
    assert handled.outcome == "refused"
    assert "ow-elsewhere did not send it" in (handled.reason or "")
    assert store.offer_states[offer.id] == "open"
    assert store.referrals[rid].status == "offered"


async def test_a_request_on_another_systems_subject_is_invalid(store, directory):
    msg = make_request()
    with pytest.raises(InvalidRequest, match=r"source\.system"):
        await run(
            store,
            directory,
            lambda uow: on_requested(msg, "ow-other", uow=uow, locate=locate_almonte),
        )


async def test_the_provider_is_told_when_its_open_offer_expires_or_is_cancelled(store, directory):
    rid = await new_referral(store, directory)
    await run(store, directory, lambda uow: on_timeout(rid, uow=uow), now=NOW + TIMEOUT)
    await run(store, directory, lambda uow: on_cancel(cancel(rid), SYSTEM, uow=uow))
    notices = [(s, m.kind) for s, m in published(store) if isinstance(m, ProviderNotice)]
    assert notices == [
        (notice_subject(CCA), "offer_expired"),
        (notice_subject(CES), "offer_cancelled"),
    ]


async def test_thirty_accept_and_complete_cycles_leave_no_place_in_use(store, directory):
    site = directory.site("cca-carleton-place")
    for _ in range(30):
        rid = await accepted(store, directory)
        await report(store, directory, rid, "in_service")
        await report(store, directory, rid, "completed", "plan_completed")
    assert (site.reserved, site.capacity) == (0, 25)
    assert {r.status for r in store.referrals.values()} == {"completed"}


@pytest.mark.parametrize(
    ("note", "what"),
    [
        ("call her at 613-555-0199", "a phone number"),
        ("reach jane.doe@example.org", "an e-mail address"),
        ("SIN 046 454 286", "a SIN or another identifying number"),
    ],
)
async def test_a_note_that_looks_like_personal_information_is_refused(store, directory, note, what):
    rid = await accepted(store, directory)
    before = len(store.outbox)
    msg = progress(rid, "in_service", note=note, occurred_at=NOW)
    handled = await run(store, directory, lambda uow: on_progress(msg, CCA, uow=uow))
    assert handled.outcome == "refused"
    assert f"it looks like {what}" in (handled.reason or "")
    [(_, notice)] = published(store)[before:]
    assert isinstance(notice, ProviderNotice)
    assert note not in notice.reason  # the refusal does not repeat what it refuses
    assert store.referrals[rid].status == "accepted"


def test_ordinary_notes_pass_the_privacy_check() -> None:
    for note in (
        "started the resume workshop on 2026-11-20",
        "attended 3 of 4 sessions",
        "employed at 40 hours a week since 2026-11-02",
    ):
        assert personal_information(note) is None, note
