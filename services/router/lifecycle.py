"""The referral's lifecycle (DESIGN.md sections 3 and 3c): which event moves which state where,
and what each event does besides. Pure: no clock read, no I/O; the handlers load what ``decide``
needs, call it, and write what it says.

    received ─offer─▶ offered ─accept─▶ accepted ─start─▶ in_service ─complete──▶ completed
        │                │ ─decline─▶ declined ─offer─▶ ...  │ ─not_start─▶ not_started
        │                │ ─expire──▶ expired  ─offer─▶ ...  │            │ ─end_early─▶ ended_early
        │                └──────────── no_site_left ─▶ unmatched         │
        ├─reject─▶ rejected                     accepted | in_service ─withdraw─▶ withdrawn
        └─ received | offered | declined | expired ─cancel─▶ cancelled

``transition(state, event)`` is the table; ``decide(referral, offer, trigger, now)`` the rules
around it: who may act (the provider holding the offer or the referral, the OW system that sent
it), whether a report is plausible, what each event does to the offer and its place (a place is
held from the offer until the referral closes), which party is told, and why a refusal.
"""

import datetime
import uuid
from dataclasses import dataclass
from typing import Literal

from contracts.codec import derive_message_id
from contracts.common import Message
from contracts.directory import Origin
from contracts.referrals import (
    TERMINAL_STATUSES,
    Explanation,
    NoticeKind,
    ProgressCode,
    ProgressStatus,
    ReferralStatus,
)
from contracts.subjects import notice_subject, offered_subject
from services.router import messages
from services.router.matching import Choice
from services.router.model import OfferEnd, OfferRow, ReferralRow, Transition
from services.router.privacy import personal_information

#: What can happen to a referral. ``offer`` is the router offering it to a (next) site.
Event = Literal[
    "offer",
    "accept",
    "decline",
    "expire",
    "no_site_left",
    "cancel",
    "reject",
    "start",
    "complete",
    "not_start",
    "end_early",
    "withdraw",
]

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
    ("accepted", "start"): "in_service",
    ("accepted", "not_start"): "not_started",
    ("accepted", "withdraw"): "withdrawn",
    ("in_service", "complete"): "completed",
    ("in_service", "end_early"): "ended_early",
    ("in_service", "withdraw"): "withdrawn",
}
#: The states in which the referral holds a place at its site (given back when it closes).
HOLDING: frozenset[ReferralStatus] = frozenset({"accepted", "in_service"})
#: The event each progress report is.
PROGRESS_EVENTS: dict[ProgressStatus, Event] = {
    "in_service": "start",
    "completed": "complete",
    "not_started": "not_start",
    "ended_early": "end_early",
}
_ROUTING: frozenset[Event] = frozenset({"offer", "accept", "decline", "expire", "no_site_left"})
#: How far in the future a report's ``occurred_at`` may be: the clocks of two machines.
CLOCK_SKEW = datetime.timedelta(minutes=5)


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
    if is_terminal(state) or (state in HOLDING and event in _ROUTING):
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
    #: The referral the answer names (a notice about an unknown one carries it back).
    referral_id: uuid.UUID


@dataclass(frozen=True)
class Expire:
    """The sweeper found the referral's open offer at or past its deadline (maybe)."""


@dataclass(frozen=True)
class Cancel:
    """An OW system calls the referral off: a cancel before acceptance, a withdrawal after.
    ``system`` is the subject's."""

    system: str
    reason: str
    message_id: uuid.UUID


@dataclass(frozen=True)
class Progress:
    """A provider reports on a referral after acceptance; ``provider_id`` is the subject's."""

    provider_id: str
    status: ProgressStatus
    code: ProgressCode | None
    note: str | None
    occurred_at: datetime.datetime
    message_id: uuid.UUID
    referral_id: uuid.UUID


@dataclass(frozen=True)
class Match:
    """The directory was searched for the referral: the site chosen (or none) and why."""

    choice: Choice
    #: When an offer made now would expire.
    deadline: datetime.datetime
    #: The message that led here (a request or a decline); None for a timeout.
    message_id: uuid.UUID | None


Trigger = Respond | Expire | Cancel | Progress | Match


@dataclass(frozen=True)
class Decision:
    """What to do: the history entries to record (and publish to the referring system unless
    refused), the offer to close and the place to give back, a new offer, the messages to send
    besides (offers, notices), and whether to look for the next site. ``outcome`` and
    ``reason`` are for the log line.
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
    referral: ReferralRow | None,
    event: Event,
    reason: str,
    message_id: uuid.UUID | None,
    *,
    notice: tuple[str, Message] | None = None,
) -> Decision:
    """Nothing changes; the refusal is recorded in the history (not published to OW), and the
    provider that asked gets ``notice`` when there is one."""
    entries: tuple[Transition, ...] = ()
    if referral is not None:
        entries = (
            Transition(
                event=event,
                status=referral.status,
                attempt=referral.attempt,
                refused=True,
                reason=reason,
                message_id=message_id,
            ),
        )
    return Decision(
        "refused", reason, entries=entries, messages=() if notice is None else (notice,)
    )


def _told(
    provider_id: str,
    referral_id: uuid.UUID,
    kind: NoticeKind,
    reason: str,
    now: datetime.datetime,
    cause: str | int | uuid.UUID,
    offer_id: uuid.UUID | None = None,
) -> tuple[str, Message]:
    """A notice to ``provider_id``; ``cause`` (its refused message's id, an offer's attempt)
    makes the notice's message id."""
    notice = messages.notice(referral_id, kind, reason, at=now, cause=cause, offer_id=offer_id)
    return notice_subject(provider_id), notice


def decide(
    referral: ReferralRow | None,
    offer: OfferRow | None,
    trigger: Trigger,
    now: datetime.datetime,
) -> Decision:
    """What ``trigger`` does to ``referral`` (locked), whose current ``offer`` is its open one
    before acceptance and the accepted one after, at ``now``."""
    match trigger:
        case Expire():
            return _expire(referral, offer, now)
        case Respond():
            return _respond(referral, offer, trigger, now)
        case Cancel():
            return _cancel(referral, offer, trigger, now)
        case Progress():
            return _progress(referral, offer, trigger, now)
        case Match():
            assert referral is not None  # only a stored referral is matched
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
    code: ProgressCode | None = None,
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
        code=code,
    )


def _notice(
    offer: OfferRow, kind: NoticeKind, reason: str, now: datetime.datetime, cause: str | int
) -> tuple[str, Message]:
    """A notice to the provider of ``offer`` about it."""
    return _told(offer.provider_id, offer.referral_id, kind, reason, now, cause, offer.id)


def _respond(
    referral: ReferralRow | None,
    offer: OfferRow | None,
    answer: Respond,
    now: datetime.datetime,
) -> Decision:
    event: Event = "accept" if answer.accept else "decline"

    def refused(why: str) -> Decision:
        told = _told(
            answer.provider_id,
            answer.referral_id,
            "response_refused",
            why,
            now,
            answer.message_id,
            answer.offer_id,
        )
        return refuse(referral, event, why, answer.message_id, notice=told)

    if referral is None:
        return refused("unknown referral")
    if referral.status != "offered" or offer is None or offer.state != "open":
        refusal = transition(referral.status, event)
        return refused(
            refusal.reason if isinstance(refusal, Refused) else "the referral has no open offer"
        )
    if offer.id != answer.offer_id:
        return refused(f"offer {answer.offer_id} is not the referral's open offer")
    if offer.provider_id != answer.provider_id:
        return refused(f"provider {answer.provider_id} does not hold the open offer")
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
    if referral is None or offer is None or offer.state != "open" or offer.expires_at > now:
        return Decision("nothing_due")
    entry = _step(referral, "expire", offer, reason="timeout")
    why = f"no answer before the deadline ({offer.expires_at.isoformat()}); offered elsewhere"
    return Decision(
        "expired",
        "timeout",
        entries=(entry,),
        close_offer=(offer.id, "expired"),
        release_site=offer.site_id,
        messages=(_notice(offer, "offer_expired", why, now, offer.attempt),),
        offer_next=True,
    )


def _cancel(
    referral: ReferralRow | None,
    offer: OfferRow | None,
    cancel: Cancel,
    now: datetime.datetime,
) -> Decision:
    if referral is None:
        return refuse(None, "cancel", "unknown referral", cancel.message_id)
    holding = referral.status in HOLDING
    event: Event = "withdraw" if holding else "cancel"
    if referral.system is not None and referral.system != cancel.system:
        why = f"only the referring system may call it off; {cancel.system} did not send it"
        return refuse(referral, event, why, cancel.message_id)
    step = transition(referral.status, event)
    if isinstance(step, Refused):
        return refuse(referral, event, step.reason, cancel.message_id)
    if holding:
        assert offer is not None  # an accepted referral is held under its accepted offer
        reason = f"withdrawn by OW: {cancel.reason}"
        entry = _step(referral, "withdraw", offer, reason=reason, message_id=cancel.message_id)
        told = _notice(offer, "referral_withdrawn", reason, now, "withdrawn")
        return Decision(
            "withdrawn", reason, entries=(entry,), release_site=offer.site_id, messages=(told,)
        )
    reason = f"cancelled by OW: {cancel.reason}"
    if offer is None:
        entry = _step(referral, "cancel", reason=reason, message_id=cancel.message_id)
        return Decision("cancelled", reason, entries=(entry,))
    told = _notice(offer, "offer_cancelled", reason, now, offer.attempt)
    reason = f"{reason}; the open offer to {offer.site_id} is withdrawn"
    entry = _step(referral, "cancel", offer, reason=reason, message_id=cancel.message_id)
    return Decision(
        "cancelled",
        reason,
        entries=(entry,),
        close_offer=(offer.id, "withdrawn"),
        release_site=offer.site_id,
        messages=(told,),
    )


def _progress(
    referral: ReferralRow | None,
    offer: OfferRow | None,
    report: Progress,
    now: datetime.datetime,
) -> Decision:
    event = PROGRESS_EVENTS[report.status]

    def refused(why: str) -> Decision:
        told = _told(
            report.provider_id, report.referral_id, "progress_refused", why, now, report.message_id
        )
        return refuse(referral, event, why, report.message_id, notice=told)

    if referral is None:
        return refused("unknown referral")
    if offer is None or offer.state != "accepted" or referral.status not in HOLDING:
        refusal = transition(referral.status, event)
        why = refusal.reason if isinstance(refusal, Refused) else "the referral is not accepted"
        return refused(why)
    if offer.provider_id != report.provider_id:
        return refused(f"provider {report.provider_id} does not hold the referral")
    step = transition(referral.status, event)
    if isinstance(step, Refused):
        return refused(step.reason)
    if report.note is not None and (what := personal_information(report.note)):
        return refused(
            f"note: it looks like {what}; a note must not carry personal information "
            "(send the report again without it)"
        )
    if report.occurred_at > now + CLOCK_SKEW:
        return refused(f"occurred_at {report.occurred_at.isoformat()} is in the future")
    if offer.closed_at is not None and report.occurred_at < offer.closed_at - CLOCK_SKEW:
        return refused(
            f"occurred_at {report.occurred_at.isoformat()} is before the referral was accepted "
            f"({offer.closed_at.isoformat()})"
        )
    entry = _step(
        referral,
        event,
        offer,
        reason=report.note,
        message_id=report.message_id,
        code=report.code,
    )
    closes = step in TERMINAL_STATUSES
    return Decision(
        step,
        report.code,
        entries=(entry,),
        release_site=offer.site_id if closes else None,
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
        expires_at=match.deadline,
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
