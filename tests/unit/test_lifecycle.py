"""The referral state machine: every allowed transition, and every refused one."""

import itertools
from typing import get_args

import pytest

from contracts.referrals import TERMINAL_STATUSES, ReferralStatus
from services.router.lifecycle import Event, Refused, is_terminal, transition

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


def test_a_cancel_reaches_every_non_terminal_state() -> None:
    for state in STATES:
        if not is_terminal(state):
            assert transition(state, "cancel") == "cancelled"
