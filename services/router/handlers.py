"""What the router does with each message and each deadline: orchestration only.

A handler takes the message first and its collaborators after: the ``RouterStore`` (inside the
transaction the worker opened), the router's ``Directory`` port and the clock reading ``now``.
Decisions come from the pure modules (``lifecycle.transition``, ``matching.choose``); every
transition is written to the history and, with the events it causes, to the outbox, in the same
transaction. A handler returns what happened and which outbox rows to publish after commit.
"""

import dataclasses
import datetime
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from contracts.codec import derive_message_id, peek_referral_id
from contracts.common import ClientLocation, Message
from contracts.directory import Origin
from contracts.referrals import (
    DeadLetter,
    ReferralCancel,
    ReferralOffered,
    ReferralRequested,
    ReferralResponse,
    ReferralStatus,
    ReferralStatusChanged,
)
from contracts.subjects import DEAD, REQUESTED, STATUS, offered_subject, response_subject
from services.directory.candidates import SiteFilter, referral_filter
from services.geo import UnresolvableLocation
from services.router.lifecycle import Event, Refused, transition
from services.router.matching import Candidate, Choice, choose
from services.router.store import OfferRow, OutboxRow, ReferralRow, RouterStore, Transition

#: Sites tried per matching round when the chosen one's last place goes to another replica.
MAX_RESERVE_TRIES = 5
#: The referral id of a dead letter whose payload had none.
NO_REFERRAL = uuid.UUID(int=0)
#: The longest ``ReferralStatusChanged.reason`` the contract allows (``StatusReason``).
STATUS_REASON_MAX = 2000
#: Bytes of an invalid message a dead letter carries: base64 grows it by a third, and the
#: dead letter must stay under NATS's 1 MiB payload limit. Longer ones are truncated.
DEAD_PAYLOAD_MAX = 256 * 1024


class InvalidRequest(Exception):
    """The message decoded but cannot be acted on (an unresolvable location): reject it."""


class Contention(Exception):
    """Every suitable site's last place went to another replica meanwhile: retry later."""


class Directory(Protocol):
    """The router's view of the directory: the narrow query it owns, on the same transaction."""

    async def suitable(
        self, lat: float, lon: float, where: SiteFilter, limit: int
    ) -> list[Candidate]: ...

    async def excluded(
        self, lat: float, lon: float, where: SiteFilter, within_km: float | None
    ) -> dict[str, int]: ...

    async def reserve(self, site_id: str) -> bool: ...

    async def release(self, site_id: str) -> None: ...


Locate = Callable[[ClientLocation], Origin]


@dataclass
class Context:
    """What one transaction's handlers share.

    History entries, status changes, outcomes of handled messages and outbox messages are
    queued here (nothing in the transaction reads them back) and written by ``flush`` in one
    statement before the commit; ``outbox`` then holds the rows to publish after it.
    """

    store: RouterStore
    directory: Directory
    now: datetime.datetime
    offer_timeout: datetime.timedelta
    candidates: int = 5
    outbox: list[OutboxRow] = field(default_factory=list)
    history: list[tuple[uuid.UUID, Transition, datetime.datetime]] = field(default_factory=list)
    #: Each referral's latest (status, attempt).
    statuses: dict[uuid.UUID, tuple[ReferralStatus, int]] = field(default_factory=dict)
    #: Each handled message's (outcome, reason).
    finished: dict[uuid.UUID, tuple[str, str | None]] = field(default_factory=dict)
    pending: list[tuple[str, Message]] = field(default_factory=list)

    def finish(self, message_id: uuid.UUID, outcome: str, reason: str | None) -> None:
        self.finished[message_id] = (outcome, reason)

    async def flush(self) -> None:
        """Write what the handlers queued (call it inside the transaction, before commit)."""
        self.outbox += await self.store.write_behind(
            self.history,
            [(rid, status, attempt, self.now) for rid, (status, attempt) in self.statuses.items()],
            [(mid, outcome, reason) for mid, (outcome, reason) in self.finished.items()],
            self.pending,
        )
        self.history, self.statuses, self.finished, self.pending = [], {}, {}, []


@dataclass(frozen=True)
class Handled:
    """What handling one message (or deadline) did, for the log line and the tests."""

    outcome: str
    referral_id: uuid.UUID | None
    reason: str | None = None
    #: The message itself was unacceptable: terminate it, never redeliver.
    poison: bool = False


def _emit(
    ctx: Context, subject: str, message: DeadLetter | ReferralOffered | ReferralStatusChanged
) -> None:
    ctx.pending.append((subject, message))


def _status_reason(reason: str | None, limit: int = STATUS_REASON_MAX) -> str | None:
    """``reason`` cut to ``limit``, keeping its start and its end (where a validation error
    names the field), e.g. for an error that quotes a huge invalid value.
    """
    if reason is None:
        return None
    # Error texts may quote the invalid value, NUL included; PostgreSQL text cannot hold it.
    reason = reason.replace("\x00", "\\u0000")
    if len(reason) <= limit:
        return reason
    gap = " … "
    head = (limit - len(gap)) // 2
    tail = limit - len(gap) - head
    return f"{reason[:head]}{gap}{reason[-tail:]}"


def _record(ctx: Context, referral_id: uuid.UUID, entry: Transition) -> None:
    """Store a transition and queue its status event (a refusal is stored, not published)."""
    ctx.history.append((referral_id, entry, ctx.now))
    if entry.refused:
        return
    ctx.statuses[referral_id] = (entry.status, entry.attempt)
    status = ReferralStatusChanged(
        message_id=derive_message_id(referral_id, "status", entry.status, entry.attempt),
        referral_id=referral_id,
        status=entry.status,
        at=ctx.now,
        attempt=entry.attempt,
        provider_id=entry.provider_id,
        site_id=entry.site_id,
        distance_km=None if entry.distance_km is None else round(entry.distance_km, 3),
        # The history keeps the full text; the dead letter of a rejected request does too.
        reason=_status_reason(entry.reason),
        explanation=entry.explanation,
    )
    _emit(ctx, STATUS, status)


async def _refuse(
    ctx: Context, ref: ReferralRow, event: Event, reason: str, message_id: uuid.UUID | None
) -> Handled:
    entry = Transition(
        event=event,
        status=ref.status,
        attempt=ref.attempt,
        refused=True,
        reason=reason,
        message_id=message_id,
    )
    _record(ctx, ref.id, entry)
    return Handled("refused", ref.id, reason)


def _next(ref: ReferralRow, event: Event) -> Transition | Refused:
    following = transition(ref.status, event)
    if isinstance(following, Refused):
        return following
    return Transition(event=event, status=following, attempt=ref.attempt)


# -- matching --------------------------------------------------------------------------------


async def _choose(
    ctx: Context, request: ReferralRequested, lat: float, lon: float, where: SiteFilter
) -> tuple[Choice, Sequence[Candidate]]:
    found = await ctx.directory.suitable(lat, lon, where, ctx.candidates)
    preferred = request.preferred_provider_id
    if preferred and not any(c.provider_id == preferred for c in found):
        # The preferred provider may have a suitable site farther than the nearest few.
        only = dataclasses.replace(where, provider=preferred)
        found = [*found, *await ctx.directory.suitable(lat, lon, only, 1)]
    return choose(found, excluded={}, preferred_provider_id=preferred), found


async def _offer_next(ctx: Context, ref: ReferralRow, message_id: uuid.UUID | None) -> Handled:
    """Offer the referral to the next suitable site not yet offered it, or make it unmatched."""
    request, lat, lon = ref.request, ref.lat, ref.lon
    # Only a routable referral (decoded, located) gets here.
    assert request is not None
    assert lat is not None
    assert lon is not None
    offered = await ctx.store.offered_sites(ref.id)
    where = referral_filter(
        needs=request.needs,
        language=request.client.language,
        accessibility=request.client.accessibility_needs,
        age=request.client.age,
        eligibility=request.client.eligibility,
        max_distance_km=request.max_distance_km,
        exclude_providers=request.exclude_provider_ids,
        already_offered=offered,
    )
    taken_meanwhile: list[str] = []
    for _ in range(MAX_RESERVE_TRIES):
        trying = dataclasses.replace(where, exclude_sites=[*offered, *taken_meanwhile])
        choice, found = await _choose(ctx, request, lat, lon, trying)
        site = choice.candidate
        if site is None or await ctx.directory.reserve(site.site_id):
            break
        taken_meanwhile.append(site.site_id)
    else:
        raise Contention(f"the last place at {taken_meanwhile} went to other referrals meanwhile")

    within = None if site is None else site.distance_km
    excluded = await ctx.directory.excluded(lat, lon, where, within)
    explanation = choose(
        found, excluded=excluded, preferred_provider_id=request.preferred_provider_id
    ).explanation

    if site is None:
        step = _next(ref, "no_site_left")
        assert not isinstance(step, Refused)  # only routable states reach here
        entry = dataclasses.replace(
            step, reason=explanation.text, explanation=explanation, message_id=message_id
        )
        _record(ctx, ref.id, entry)
        return Handled("unmatched", ref.id, explanation.text)

    attempt = ref.attempt + 1
    offer = OfferRow(
        id=derive_message_id(ref.id, "offer", attempt),
        referral_id=ref.id,
        attempt=attempt,
        provider_id=site.provider_id,
        site_id=site.site_id,
        distance_km=site.distance_km,
        offered_at=ctx.now,
        expires_at=ctx.now + ctx.offer_timeout,
    )
    await ctx.store.insert_offer(offer)
    step = _next(ref, "offer")
    assert not isinstance(step, Refused)
    entry = dataclasses.replace(
        step,
        attempt=attempt,
        provider_id=site.provider_id,
        site_id=site.site_id,
        distance_km=site.distance_km,
        explanation=explanation,
        message_id=message_id,
    )
    _record(ctx, ref.id, entry)
    _emit(
        ctx,
        offered_subject(site.provider_id),
        ReferralOffered(
            message_id=derive_message_id(ref.id, "offered", attempt),
            referral_id=ref.id,
            offer_id=offer.id,
            provider_id=site.provider_id,
            site_id=site.site_id,
            attempt=attempt,
            expires_at=offer.expires_at,
            distance_km=round(site.distance_km, 3),
            needs=request.needs,
            language=request.client.language,
            accessibility_needs=request.client.accessibility_needs,
            client_ref=request.client.client_ref,
        ),
    )
    return Handled("offered", ref.id, f"{site.site_id} at {site.distance_km:.1f} km")


async def _close_open_offer(
    ctx: Context, ref: ReferralRow, offer: OfferRow, state: str, event: Event, reason: str
) -> ReferralRow:
    """Close ``offer``, free its place, record the transition; the referral as it is now."""
    await ctx.store.close_offer(offer.id, state, ctx.now)
    await ctx.directory.release(offer.site_id)
    step = _next(ref, event)
    assert not isinstance(step, Refused)
    entry = dataclasses.replace(
        step,
        provider_id=offer.provider_id,
        site_id=offer.site_id,
        distance_km=offer.distance_km,
        reason=reason,
    )
    _record(ctx, ref.id, entry)
    return dataclasses.replace(ref, status=step.status)


# -- the handlers ------------------------------------------------------------------------------


async def on_requested(msg: ReferralRequested, *, ctx: Context, locate: Locate) -> Handled:
    """A new referral: store it, then offer it to the nearest suitable site (or unmatched)."""
    if not await ctx.store.claim_message(msg.message_id, msg.referral_id, REQUESTED, ctx.now):
        return Handled("duplicate_message", msg.referral_id)
    try:
        point = locate(msg.client.location)
    except UnresolvableLocation as exc:
        raise InvalidRequest(f"client.location: {exc.message}") from exc
    created = await ctx.store.create_referral(
        msg,
        lat=point.lat,
        lon=point.lon,
        precision=point.precision,
        resolved_from=point.resolved_from,
        now=ctx.now,
    )
    if not created:
        reason = "a referral with this referral_id exists already; the repeat changed nothing"
        ctx.finish(msg.message_id, "duplicate_referral", reason)
        return Handled("duplicate_referral", msg.referral_id, reason)
    received = Transition(
        event="receive",
        status="received",
        attempt=0,
        reason=f"location resolved from {point.resolved_from} ({point.precision})",
        message_id=msg.message_id,
    )
    _record(ctx, msg.referral_id, received)
    ref = ReferralRow(msg.referral_id, "received", 0, msg, point.lat, point.lon)
    handled = await _offer_next(ctx, ref, msg.message_id)
    ctx.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def on_response(msg: ReferralResponse, provider_id: str, *, ctx: Context) -> Handled:
    """A provider's answer; ``provider_id`` comes from the subject, which NATS ties to its user."""
    subject = response_subject(provider_id)
    if not await ctx.store.claim_message(msg.message_id, msg.referral_id, subject, ctx.now):
        return Handled("duplicate_message", msg.referral_id)
    handled = await _respond(msg, provider_id, ctx)
    ctx.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def _respond(msg: ReferralResponse, provider_id: str, ctx: Context) -> Handled:
    ref = await ctx.store.lock_referral(msg.referral_id)
    event: Event = "accept" if msg.decision == "accept" else "decline"
    if ref is None:
        return Handled("refused", msg.referral_id, "unknown referral")
    offer = await ctx.store.open_offer(ref.id)
    reason = None
    if ref.status != "offered" or offer is None:
        refusal = transition(ref.status, event)
        reason = (
            refusal.reason if isinstance(refusal, Refused) else "the referral has no open offer"
        )
    elif offer.id != msg.offer_id:
        reason = f"offer {msg.offer_id} is not the referral's open offer"
    elif offer.provider_id != provider_id:
        reason = f"provider {provider_id} does not hold the open offer"
    if reason is not None or offer is None:
        return await _refuse(ctx, ref, event, reason or "no open offer", msg.message_id)

    if msg.decision == "accept":
        await ctx.store.close_offer(offer.id, "accepted", ctx.now)
        step = _next(ref, "accept")
        assert not isinstance(step, Refused)
        entry = dataclasses.replace(
            step,
            provider_id=offer.provider_id,
            site_id=offer.site_id,
            distance_km=offer.distance_km,
            reason=msg.reason,
            message_id=msg.message_id,
        )
        _record(ctx, ref.id, entry)
        return Handled("accepted", ref.id, offer.site_id)
    why = f"declined by {provider_id}" + (f": {msg.reason}" if msg.reason else "")
    ref = await _close_open_offer(ctx, ref, offer, "declined", "decline", why)
    return await _offer_next(ctx, ref, msg.message_id)


async def on_timeout(referral_id: uuid.UUID, *, ctx: Context) -> Handled:
    """The referral's open offer passed its deadline: a decline with reason ``timeout``."""
    ref = await ctx.store.lock_referral(referral_id)
    offer = None if ref is None else await ctx.store.open_offer(referral_id)
    if ref is None or offer is None or offer.expires_at > ctx.now:
        return Handled("nothing_due", referral_id)
    ref = await _close_open_offer(ctx, ref, offer, "expired", "expire", "timeout")
    return await _offer_next(ctx, ref, None)


async def on_cancel(msg: ReferralCancel, *, ctx: Context) -> Handled:
    """OW withdraws the referral: any non-terminal state becomes cancelled; an open offer is
    withdrawn and its place freed.
    """
    if not await ctx.store.claim_message(
        msg.message_id, msg.referral_id, "referral.cancel", ctx.now
    ):
        return Handled("duplicate_message", msg.referral_id)
    handled = await _cancel(msg, ctx)
    ctx.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def _cancel(msg: ReferralCancel, ctx: Context) -> Handled:
    ref = await ctx.store.lock_referral(msg.referral_id)
    if ref is None:
        return Handled("refused", msg.referral_id, "unknown referral")
    step = _next(ref, "cancel")
    if isinstance(step, Refused):
        return await _refuse(ctx, ref, "cancel", step.reason, msg.message_id)
    reason = f"cancelled by OW: {msg.reason}"
    entry = dataclasses.replace(step, reason=reason, message_id=msg.message_id)
    offer = await ctx.store.open_offer(ref.id)
    if offer is not None:
        await ctx.store.close_offer(offer.id, "withdrawn", ctx.now)
        await ctx.directory.release(offer.site_id)
        entry = dataclasses.replace(
            entry,
            provider_id=offer.provider_id,
            site_id=offer.site_id,
            distance_km=offer.distance_km,
            reason=f"{reason}; the open offer to {offer.site_id} is withdrawn",
        )
    _record(ctx, ref.id, entry)
    return Handled("cancelled", ref.id, entry.reason)


async def on_invalid(
    subject: str, payload: bytes, error: str, *, sequence: int, ctx: Context
) -> Handled:
    """A message the router cannot accept: dead-letter it with the reason and the original
    bytes; an invalid request whose referral id can be read makes that referral ``rejected``.
    """
    error = error.replace("\x00", "\\u0000")
    handled = await _dead_letter(subject, payload, error, sequence, ctx)
    return dataclasses.replace(handled, poison=True)


async def _dead_letter(
    subject: str, payload: bytes, error: str, sequence: int, ctx: Context
) -> Handled:
    referral_id = peek_referral_id(payload)
    dead = DeadLetter(
        # From the stream sequence: a redelivery of the same message is the same dead letter.
        message_id=derive_message_id(referral_id or NO_REFERRAL, "dead", subject, sequence),
        subject=subject,
        received_at=ctx.now,
        error=_status_reason(error) or error,
        payload=payload[:DEAD_PAYLOAD_MAX],
        referral_id=referral_id,
        payload_size=len(payload),
        payload_truncated=len(payload) > DEAD_PAYLOAD_MAX,
        stream_sequence=sequence,
    )
    before = len(ctx.outbox)
    _emit(ctx, DEAD, dead)
    await ctx.flush()  # written now: whether it was queued before decides what follows
    if len(ctx.outbox) == before:
        return Handled("duplicate_message", referral_id, error)
    if subject != REQUESTED or referral_id is None:
        return Handled("dead_letter", referral_id, error)
    if await ctx.store.create_rejected(referral_id, ctx.now):
        entry = Transition(event="reject", status="rejected", attempt=0, reason=error)
        _record(ctx, referral_id, entry)
        return Handled("rejected", referral_id, error)
    ref = await ctx.store.lock_referral(referral_id)
    assert ref is not None  # it exists: creating it conflicted
    return await _refuse(ctx, ref, "reject", f"an invalid repeat was dead-lettered: {error}", None)
