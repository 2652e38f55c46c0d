"""The referral's lifecycle (DESIGN.md section 3): which event moves which state where, and what
each event does besides. Pure: no clock read, no I/O; the handlers load what ``decide`` needs,
call it, and write what it says.

    received ─offer─▶ offered ─accept─▶ accepted                     (terminal)
        │                │ ─decline─▶ declined ─offer─▶ offered ...
        │                │ ─expire──▶ expired  ─offer─▶ offered ...
        │                └───────────────────────── no_site_left ─▶ unmatched (terminal)
        ├─reject─▶ rejected (terminal)
        └─ any non-terminal state ─cancel─▶ cancelled (terminal)

``transition(state, event)`` is the table; ``decide(referral, open_offer, trigger, now)`` the
rules around it: whether a provider's answer is valid, what a decline, a timeout or a cancel
does to the open offer and its place, what a match offers, and why a refusal is refused.
"""

import datetime
import uuid
from dataclasses import dataclass
from typing import Literal

from contracts.codec import derive_message_id
from contracts.common import Message
from contracts.directory import Origin
from contracts.referrals import TERMINAL_STATUSES, Explanation, ReferralStatus
from contracts.subjects import offered_subject
from services.router import messages
from services.router.matching import Choice
from services.router.model import OfferEnd, OfferRow, ReferralRow, Transition

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


# -- what happens to a referral -----------------------------------------------------------------


@dataclass(frozen=True)
class Respond:
    """A provider's answer to an offer; ``provider_id`` is the subject's, not the body's."""

    offer_id: uuid.UUID
    provider_id: str
    accept: bool
    reason: str | None
    message_id: uuid.UUID


@dataclass(frozen=True)
class Expire:
    """The sweeper found the referral's open offer at or past its deadline (maybe)."""


@dataclass(frozen=True)
class Cancel:
    """OW withdraws the referral."""

    reason: str
    message_id: uuid.UUID


@dataclass(frozen=True)
class Match:
    """The directory was searched for the referral: the site chosen (or none) and why."""

    choice: Choice
    offer_timeout: datetime.timedelta
    #: The message that led here (a request or a decline); None for a timeout.
    message_id: uuid.UUID | None


Trigger = Respond | Expire | Cancel | Match


@dataclass(frozen=True)
class Decision:
    """What to do: the history entries to record (and publish unless refused), the open offer
    to close and the place to give back, a new offer and the messages it sends, and whether to
    look for the next site. ``outcome`` and ``reason`` are for the log line.
    """

    outcome: str
    reason: str | None = None
    entries: tuple[Transition, ...] = ()
    close_offer: tuple[uuid.UUID, OfferEnd] | None = None
    release_site: str | None = None
    new_offer: OfferRow | None = None
    messages: tuple[tuple[str, Message], ...] = ()
    #: Offer the referral to the next suitable site (after a decline or a timeout).
    offer_next: bool = False

    @property
    def status(self) -> ReferralStatus | None:
        """The referral's state afterwards, when this decision changes it."""
        changed = [entry.status for entry in self.entries if not entry.refused]
        return changed[-1] if changed else None


def received(origin: Origin, message_id: uuid.UUID) -> Transition:
    """The first entry of a referral: stored, and where its location was resolved from."""
    return Transition(
        event="receive",
        status="received",
        attempt=0,
        reason=f"location resolved from {origin.resolved_from} ({origin.precision})",
        message_id=message_id,
    )


def refuse(
    referral: ReferralRow, event: Event, reason: str, message_id: uuid.UUID | None
) -> Decision:
    """Nothing changes; the refusal is recorded in the history (not published)."""
    entry = Transition(
        event=event,
        status=referral.status,
        attempt=referral.attempt,
        refused=True,
        reason=reason,
        message_id=message_id,
    )
    return Decision("refused", reason, entries=(entry,))


def decide(
    referral: ReferralRow | None,
    open_offer: OfferRow | None,
    trigger: Trigger,
    now: datetime.datetime,
) -> Decision:
    """What ``trigger`` does to ``referral`` (locked) holding ``open_offer``, at ``now``."""
    if isinstance(trigger, Expire):
        return _expire(referral, open_offer, now)
    if referral is None:
        return Decision("refused", "unknown referral")
    match trigger:
        case Respond():
            return _respond(referral, open_offer, trigger)
        case Cancel():
            return _cancel(referral, open_offer, trigger)
        case Match():
            return _match(referral, trigger, now)


def _step(
    referral: ReferralRow,
    event: Event,
    at: OfferRow | None = None,
    *,
    attempt: int | None = None,
    reason: str | None = None,
    explanation: Explanation | None = None,
    message_id: uuid.UUID | None = None,
) -> Transition:
    """The transition ``event`` makes (the caller checked that it applies), at the site of
    offer ``at`` when there is one; ``attempt`` is the referral's unless a new offer says."""
    following = transition(referral.status, event)
    assert not isinstance(following, Refused), following
    return Transition(
        event=event,
        status=following,
        attempt=referral.attempt if attempt is None else attempt,
        provider_id=None if at is None else at.provider_id,
        site_id=None if at is None else at.site_id,
        distance_km=None if at is None else at.distance_km,
        reason=reason,
        explanation=explanation,
        message_id=message_id,
    )


def _respond(referral: ReferralRow, offer: OfferRow | None, answer: Respond) -> Decision:
    event: Event = "accept" if answer.accept else "decline"
    if referral.status != "offered" or offer is None:
        refusal = transition(referral.status, event)
        why = refusal.reason if isinstance(refusal, Refused) else "the referral has no open offer"
        return refuse(referral, event, why, answer.message_id)
    if offer.id != answer.offer_id:
        why = f"offer {answer.offer_id} is not the referral's open offer"
        return refuse(referral, event, why, answer.message_id)
    if offer.provider_id != answer.provider_id:
        why = f"provider {answer.provider_id} does not hold the open offer"
        return refuse(referral, event, why, answer.message_id)
    if answer.accept:
        entry = _step(referral, "accept", offer, reason=answer.reason, message_id=answer.message_id)
        return Decision(
            "accepted", offer.site_id, entries=(entry,), close_offer=(offer.id, "accepted")
        )
    why = f"declined by {answer.provider_id}" + (f": {answer.reason}" if answer.reason else "")
    entry = _step(referral, "decline", offer, reason=why)
    return Decision(
        "declined",
        why,
        entries=(entry,),
        close_offer=(offer.id, "declined"),
        release_site=offer.site_id,
        offer_next=True,
    )


def _expire(
    referral: ReferralRow | None, offer: OfferRow | None, now: datetime.datetime
) -> Decision:
    if referral is None or offer is None or offer.expires_at > now:
        return Decision("nothing_due")
    entry = _step(referral, "expire", offer, reason="timeout")
    return Decision(
        "expired",
        "timeout",
        entries=(entry,),
        close_offer=(offer.id, "expired"),
        release_site=offer.site_id,
        offer_next=True,
    )


def _cancel(referral: ReferralRow, offer: OfferRow | None, cancel: Cancel) -> Decision:
    step = transition(referral.status, "cancel")
    if isinstance(step, Refused):
        return refuse(referral, "cancel", step.reason, cancel.message_id)
    reason = f"cancelled by OW: {cancel.reason}"
    if offer is None:
        entry = _step(referral, "cancel", reason=reason, message_id=cancel.message_id)
        return Decision("cancelled", reason, entries=(entry,))
    reason = f"{reason}; the open offer to {offer.site_id} is withdrawn"
    entry = _step(referral, "cancel", offer, reason=reason, message_id=cancel.message_id)
    return Decision(
        "cancelled",
        reason,
        entries=(entry,),
        close_offer=(offer.id, "withdrawn"),
        release_site=offer.site_id,
    )


def _match(referral: ReferralRow, match: Match, now: datetime.datetime) -> Decision:
    explanation = match.choice.explanation
    site = match.choice.candidate
    if site is None:
        entry = _step(
            referral,
            "no_site_left",
            reason=explanation.text,
            explanation=explanation,
            message_id=match.message_id,
        )
        return Decision("unmatched", explanation.text, entries=(entry,))
    attempt = referral.attempt + 1
    offer = OfferRow(
        id=derive_message_id(referral.id, "offer", attempt),
        referral_id=referral.id,
        attempt=attempt,
        provider_id=site.provider_id,
        site_id=site.site_id,
        distance_km=site.distance_km,
        offered_at=now,
        expires_at=now + match.offer_timeout,
    )
    entry = _step(
        referral,
        "offer",
        offer,
        attempt=attempt,
        explanation=explanation,
        message_id=match.message_id,
    )
    return Decision(
        "offered",
        f"{site.site_id} at {site.distance_km:.1f} km",
        entries=(entry,),
        new_offer=offer,
        messages=((offered_subject(site.provider_id), messages.offered(referral, offer)),),
    )
