"""The referral state machine: every allowed transition, and every refused one."""

import datetime
import itertools
import uuid
from typing import get_args

import pytest

from contracts.referrals import TERMINAL_STATUSES, ReferralStatus
from services.router.lifecycle import (
    HOLDING,
    Cancel,
    Event,
    Expire,
    Match,
    Refused,
    Respond,
    decide,
    is_terminal,
    transition,
)
from services.router.matching import Candidate, choose
from services.router.model import OfferRow, ReferralRow
from tests.referrals import make_request

SECOND = datetime.timedelta(seconds=1)

ALLOWED = {
    ("received", "offer"): "offered",
    ("received", "no_site_left"): "unmatched",
    ("received", "reject"): "rejected",
    ("received", "cancel"): "cancelled",
    ("offered", "accept"): "accepted",
    ("offered", "decline"): "declined",
    ("offered", "expire"): "expired",
    ("offered", "cancel"): "cancelled",
    ("declined", "offer"): "offered",
    ("declined", "no_site_left"): "unmatched",
    ("declined", "cancel"): "cancelled",
    ("expired", "offer"): "offered",
    ("expired", "no_site_left"): "unmatched",
    ("expired", "cancel"): "cancelled",
    # v1.1: after acceptance (DESIGN.md section 3c)
    ("accepted", "start"): "in_service",
    ("accepted", "not_start"): "not_started",
    ("accepted", "withdraw"): "withdrawn",
    ("in_service", "complete"): "completed",
    ("in_service", "end_early"): "ended_early",
    ("in_service", "withdraw"): "withdrawn",
}
STATES: tuple[ReferralStatus, ...] = get_args(ReferralStatus)
EVENTS: tuple[Event, ...] = get_args(Event)


@pytest.mark.parametrize(("state", "event"), sorted(ALLOWED))
def test_allowed_transitions(state: ReferralStatus, event: Event) -> None:
    assert transition(state, event) == ALLOWED[state, event]


REFUSED = sorted(set(itertools.product(STATES, EVENTS)) - set(ALLOWED))


@pytest.mark.parametrize(("state", "event"), REFUSED)
def test_every_other_transition_is_refused(state: ReferralStatus, event: Event) -> None:
    refused = transition(state, event)
    assert isinstance(refused, Refused)
    assert (refused.state, refused.event) == (state, event)
    assert state in refused.reason


def test_terminal_states_refuse_everything_including_cancel() -> None:
    assert {s for s in STATES if is_terminal(s)} == set(TERMINAL_STATUSES)
    for state in TERMINAL_STATUSES:
        for event in EVENTS:
            result = transition(state, event)
            assert isinstance(result, Refused)
            assert result.reason == f"the referral is already {state}"


def test_ow_can_call_off_every_open_referral() -> None:
    """Before acceptance a cancel, after it a withdrawal (DESIGN.md section 3)."""
    for state in STATES:
        if not is_terminal(state):
            event: Event = "withdraw" if state in HOLDING else "cancel"
            assert transition(state, event) == ("withdrawn" if state in HOLDING else "cancelled")


# -- decide: the rules around the table ---------------------------------------------------------

NOW = datetime.datetime(2026, 11, 23, 15, 0, tzinfo=datetime.UTC)
RID = uuid.UUID(int=1)
OFFER = OfferRow(
    id=uuid.UUID(int=2),
    referral_id=RID,
    attempt=1,
    provider_id="canadian-career-academy",
    site_id="cca-carleton-place",
    distance_km=11.3,
    offered_at=NOW,
    expires_at=NOW + datetime.timedelta(days=2),
)


def referral(status: ReferralStatus = "offered") -> ReferralRow:
    return ReferralRow(RID, status, 1, make_request(referral_id=RID), 45.2, -76.2)


def answer(provider: str = OFFER.provider_id, *, accept: bool = True, offer=OFFER.id) -> Respond:
    return Respond(offer, provider, accept, "evening hours", uuid.uuid4(), RID)


def test_decline_closes_the_offer_frees_the_place_and_asks_for_the_next_site() -> None:
    decision = decide(referral(), OFFER, answer(accept=False), NOW)
    assert decision.close_offer == (OFFER.id, "declined")
    assert decision.release_site == OFFER.site_id
    assert decision.offer_next
    assert decision.status == "declined"
    [entry] = decision.entries
    assert entry.reason == "declined by canadian-career-academy: evening hours"
    assert (entry.site_id, entry.attempt, entry.message_id) == (OFFER.site_id, 1, None)


def test_accept_keeps_the_place() -> None:
    decision = decide(referral(), OFFER, answer(), NOW)
    assert (decision.outcome, decision.close_offer, decision.release_site) == (
        "accepted",
        (OFFER.id, "accepted"),
        None,
    )


@pytest.mark.parametrize(
    ("state", "offer", "trigger", "why"),
    [
        ("offered", OFFER, answer("ontrac"), "provider ontrac does not hold the open offer"),
        ("offered", OFFER, answer(offer=uuid.UUID(int=9)), "is not the referral's open offer"),
        ("offered", None, answer(), "the referral has no open offer"),
        ("accepted", None, answer(), "the referral is already accepted"),
        ("cancelled", None, Cancel("ow-test", "moved", uuid.uuid4()), "is already cancelled"),
    ],
)
def test_what_does_not_apply_is_refused_and_changes_nothing(state, offer, trigger, why) -> None:
    decision = decide(referral(state), offer, trigger, NOW)
    assert decision.outcome == "refused"
    assert why in (decision.reason or "")
    [entry] = decision.entries
    assert (entry.refused, entry.status) == (True, state)
    assert decision.status is None
    assert (decision.close_offer, decision.release_site, decision.new_offer) == (None, None, None)


def test_a_deadline_counts_only_once_it_has_passed() -> None:
    assert decide(referral(), OFFER, Expire(), OFFER.expires_at - SECOND).outcome == "nothing_due"
    due = decide(referral(), OFFER, Expire(), OFFER.expires_at)
    assert (due.outcome, due.reason, due.release_site, due.offer_next) == (
        "expired",
        "timeout",
        OFFER.site_id,
        True,
    )
    assert decide(None, None, Expire(), NOW).outcome == "nothing_due"


def test_a_match_makes_the_next_attempts_offer_with_its_deadline() -> None:
    site = Candidate("ces-perth", "community-employment-services", 36.9, 0)
    choice = choose([site], excluded={})
    timeout = datetime.timedelta(days=2)
    decision = decide(referral("declined"), None, Match(choice, NOW + timeout, None), NOW)
    assert decision.new_offer is not None
    assert (decision.new_offer.attempt, decision.new_offer.expires_at) == (2, NOW + timeout)
    assert decision.entries[0].attempt == 2
    [(subject, offered)] = decision.messages
    assert subject == "referral.offered.community-employment-services"
    assert getattr(offered, "offer_id", None) == decision.new_offer.id
    none_left = decide(
        referral("declined"), None, Match(choose([], excluded={}), NOW + timeout, None), NOW
    )
    assert (none_left.outcome, none_left.status) == ("unmatched", "unmatched")
