"""The referral state machine (DESIGN.md section 3): which event moves which state where.

Pure: no clock, no I/O. ``transition(state, event)`` answers the next state, or a ``Refused``
with the reason; the router records refusals in the history instead of changing anything.

    received ─offer─▶ offered ─accept─▶ accepted                     (terminal)
        │                │ ─decline─▶ declined ─offer─▶ offered ...
        │                │ ─expire──▶ expired  ─offer─▶ offered ...
        │                └───────────────────────── no_site_left ─▶ unmatched (terminal)
        ├─reject─▶ rejected (terminal)
        └─ any non-terminal state ─cancel─▶ cancelled (terminal)
"""

from dataclasses import dataclass
from typing import Literal

from contracts.referrals import TERMINAL_STATUSES, ReferralStatus

#: What can happen to a referral. ``offer`` is the router offering it to a (next) site.
Event = Literal["offer", "accept", "decline", "expire", "no_site_left", "cancel", "reject"]

_NEXT: dict[tuple[ReferralStatus, Event], ReferralStatus] = {
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


@dataclass(frozen=True)
class Refused:
    """The event does not apply to the state; nothing changes."""

    state: ReferralStatus
    event: Event
    reason: str


def is_terminal(state: ReferralStatus) -> bool:
    return state in TERMINAL_STATUSES


def transition(state: ReferralStatus, event: Event) -> ReferralStatus | Refused:
    """The state ``event`` leads to from ``state``, or why it is refused."""
    following = _NEXT.get((state, event))
    if following is not None:
        return following
    if is_terminal(state):
        return Refused(state, event, f"the referral is already {state}")
    return Refused(state, event, f"cannot {event.replace('_', ' ')} a referral that is {state}")
