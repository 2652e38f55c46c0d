"""What the router does with each message and each deadline: orchestration only.

A handler takes the message first and the ``UnitOfWork`` of its transaction after. It loads
what the lifecycle needs (the referral, locked, and its open offer), asks ``lifecycle.decide``,
and writes what the decision says: close the offer, give its place back, store a new offer,
record the history (each transition also queues its status event) and queue the messages.
Matching is the one step with I/O in the middle: the directory is searched, ``matching.choose``
picks, and the chosen site's place is reserved; when another replica took its last place
meanwhile, the next best is tried.
"""

import dataclasses
import uuid
from collections.abc import Callable, Sequence

from contracts.codec import peek_referral_id
from contracts.common import ClientLocation
from contracts.directory import Origin
from contracts.referrals import (
    ReferralCancel,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
)
from contracts.subjects import (
    DEAD,
    cancel_subject,
    inbound_party,
    progress_subject,
    requested_subject,
    response_subject,
)
from services.geo import UnresolvableLocation
from services.router import lifecycle, messages
from services.router.lifecycle import (
    Cancel,
    Decision,
    Expire,
    Match,
    Progress,
    Respond,
    Trigger,
)
from services.router.matching import Candidate, Choice, choose
from services.router.model import Handled, Point, ReferralRow, Transition
from services.router.unit_of_work import UnitOfWork

#: Sites tried per matching round when the chosen one's last place goes to another replica.
MAX_RESERVE_TRIES = 5

Locate = Callable[[ClientLocation], Origin]


class InvalidRequest(Exception):
    """The message decoded but cannot be acted on (an unresolvable location): reject it."""


class Contention(Exception):
    """Every suitable site's last place went to another replica meanwhile: retry later."""


# -- the handlers ------------------------------------------------------------------------------


async def on_requested(
    msg: ReferralRequested, system: str, *, uow: UnitOfWork, locate: Locate
) -> Handled:
    """A new referral from OW system ``system`` (the subject's): store it, then offer it to the
    nearest suitable site (or unmatched)."""
    subject = requested_subject(system)
    if not await uow.store.claim_message(msg.message_id, msg.referral_id, subject, uow.now):
        return Handled("duplicate_message", msg.referral_id)
    if msg.source.system != system:
        raise InvalidRequest(
            f"source.system: {msg.source.system!r} is not the system whose subject it came on "
            f"({subject})"
        )
    try:
        origin = locate(msg.client.location)
    except UnresolvableLocation as exc:
        raise InvalidRequest(f"client.location: {exc.message}") from exc
    if not await uow.store.create_referral(msg, origin=origin, now=uow.now):
        reason = "a referral with this referral_id exists already; the repeat changed nothing"
        uow.finish(msg.message_id, "duplicate_referral", reason)
        return Handled("duplicate_referral", msg.referral_id, reason)
    uow.record(msg.referral_id, system, lifecycle.received(origin, msg.message_id))
    referral = ReferralRow(msg.referral_id, "received", 0, msg, origin.lat, origin.lon, system)
    handled = await offer_next(referral, uow, msg.message_id)
    uow.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def on_response(msg: ReferralResponse, provider_id: str, *, uow: UnitOfWork) -> Handled:
    """A provider's answer; ``provider_id`` comes from the subject, which NATS ties to its user."""
    subject = response_subject(provider_id)
    if not await uow.store.claim_message(msg.message_id, msg.referral_id, subject, uow.now):
        return Handled("duplicate_message", msg.referral_id)
    answer = Respond(
        offer_id=msg.offer_id,
        provider_id=provider_id,
        accept=msg.decision == "accept",
        reason=msg.reason,
        message_id=msg.message_id,
        referral_id=msg.referral_id,
    )
    handled = await _handle(msg.referral_id, answer, uow, msg.message_id)
    uow.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def on_timeout(referral_id: uuid.UUID, *, uow: UnitOfWork) -> Handled:
    """The referral's open offer passed its deadline: a decline with reason ``timeout``."""
    return await _handle(referral_id, Expire(), uow, None)


async def on_cancel(msg: ReferralCancel, system: str, *, uow: UnitOfWork) -> Handled:
    """OW system ``system`` calls its referral off: before acceptance it is cancelled (an open
    offer withdrawn, its place freed), after it withdrawn (the place freed, the provider told).
    """
    subject = cancel_subject(system)
    if not await uow.store.claim_message(msg.message_id, msg.referral_id, subject, uow.now):
        return Handled("duplicate_message", msg.referral_id)
    cancel = Cancel(system=system, reason=msg.reason, message_id=msg.message_id)
    handled = await _handle(msg.referral_id, cancel, uow, msg.message_id)
    uow.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def on_progress(msg: ReferralProgress, provider_id: str, *, uow: UnitOfWork) -> Handled:
    """The provider ``provider_id`` (the subject's) reports on a referral it holds."""
    subject = progress_subject(provider_id)
    if not await uow.store.claim_message(msg.message_id, msg.referral_id, subject, uow.now):
        return Handled("duplicate_message", msg.referral_id)
    report = Progress(
        provider_id=provider_id,
        status=msg.status,
        code=msg.code,
        note=msg.note,
        occurred_at=msg.occurred_at,
        message_id=msg.message_id,
        referral_id=msg.referral_id,
    )
    handled = await _handle(msg.referral_id, report, uow, msg.message_id)
    uow.finish(msg.message_id, handled.outcome, handled.reason)
    return handled


async def on_invalid(
    subject: str, payload: bytes, error: str, *, sequence: int, uow: UnitOfWork
) -> Handled:
    """A message the router cannot accept: dead-letter it with the reason and the original
    bytes; an invalid request whose referral id can be read makes that referral ``rejected``.
    """
    error = error.replace("\x00", "\\u0000")
    referral_id = peek_referral_id(payload)
    dead = messages.dead_letter(
        subject, payload, error, referral_id=referral_id, sequence=sequence, at=uow.now
    )
    before = len(uow.outbox)
    uow.emit(DEAD, dead)
    await uow.flush()  # written now: whether it was queued before decides what follows
    if len(uow.outbox) == before:
        return Handled("duplicate_message", referral_id, error, poison=True)
    system = _requesting_system(subject)
    if system is None or referral_id is None:
        return Handled("dead_letter", referral_id, error, poison=True)
    if await uow.store.create_rejected(referral_id, system, uow.now):
        entry = Transition(event="reject", status="rejected", attempt=0, reason=error)
        uow.record(referral_id, system, entry)
        return Handled("rejected", referral_id, error, poison=True)
    referral = await uow.store.lock_referral(referral_id)
    assert referral is not None  # it exists: creating it conflicted
    why = f"an invalid repeat was dead-lettered: {error}"
    decision = lifecycle.refuse(referral, "reject", why, None)
    await _apply(referral, decision, uow)
    return Handled(decision.outcome, referral_id, decision.reason, poison=True)


def _requesting_system(subject: str) -> str | None:
    """The OW system of a ``referral.requested.<system>`` subject; None for any other."""
    try:
        kind, system = inbound_party(subject)
    except ValueError:
        return None
    return system if kind == "requested" else None


# -- load, decide, write -----------------------------------------------------------------------


async def _handle(
    referral_id: uuid.UUID, trigger: Trigger, uow: UnitOfWork, message_id: uuid.UUID | None
) -> Handled:
    referral = await uow.store.lock_referral(referral_id)
    offer = None if referral is None else await uow.store.current_offer(referral_id)
    decision = lifecycle.decide(referral, offer, trigger, uow.now)
    await _apply(referral, decision, uow)
    if referral is None:
        return Handled(decision.outcome, referral_id, decision.reason)
    if decision.offer_next and decision.status is not None:
        moved = dataclasses.replace(referral, status=decision.status)
        return await offer_next(moved, uow, message_id)
    return Handled(decision.outcome, referral.id, decision.reason)


async def _apply(referral: ReferralRow | None, decision: Decision, uow: UnitOfWork) -> None:
    """Write what ``decision`` says, in the transaction of ``uow`` (about an unknown referral
    it says only whom to tell)."""
    if decision.close_offer is not None:
        offer_id, end = decision.close_offer
        await uow.store.close_offer(offer_id, end, uow.now)
    if decision.release_site is not None:
        await uow.directory.release(decision.release_site)
    if decision.new_offer is not None:
        await uow.store.insert_offer(decision.new_offer)
    for entry in decision.entries:
        assert referral is not None  # an unknown referral has no history
        uow.record(referral.id, referral.system, entry)
    for subject, message in decision.messages:
        uow.emit(subject, message)


# -- matching ----------------------------------------------------------------------------------


async def offer_next(
    referral: ReferralRow, uow: UnitOfWork, message_id: uuid.UUID | None
) -> Handled:
    """Offer the referral to the next suitable site not yet offered it, or make it unmatched."""
    request = referral.request
    # Only a routable referral (decoded, located) gets here.
    assert request is not None
    assert referral.lat is not None
    assert referral.lon is not None
    at = Point(referral.lat, referral.lon)
    offered = await uow.store.offered_sites(referral.id)
    taken_meanwhile: list[str] = []
    for _ in range(MAX_RESERVE_TRIES):
        found = await _suitable(uow, at, request, [*offered, *taken_meanwhile])
        choice = choose(found, excluded={}, preferred_provider_id=request.preferred_provider_id)
        site = choice.candidate
        if site is None or await uow.directory.reserve(site.site_id):
            break
        taken_meanwhile.append(site.site_id)
    else:
        raise Contention(f"the last place at {taken_meanwhile} went to other referrals meanwhile")

    within = None if site is None else site.distance_km
    excluded = await uow.directory.excluded(at, request, skip_sites=offered, within_km=within)
    explained = choose(
        found, excluded=excluded, preferred_provider_id=request.preferred_provider_id
    )
    match = Match(
        choice=Choice(site, explained.explanation),
        deadline=uow.deadline(uow.now),
        message_id=message_id,
    )
    decision = lifecycle.decide(referral, None, match, uow.now)
    await _apply(referral, decision, uow)
    return Handled(decision.outcome, referral.id, decision.reason)


async def _suitable(
    uow: UnitOfWork, at: Point, request: ReferralRequested, skip: Sequence[str]
) -> list[Candidate]:
    found = await uow.directory.suitable(at, request, skip_sites=skip, limit=uow.candidates)
    preferred = request.preferred_provider_id
    if preferred and not any(c.provider_id == preferred for c in found):
        # The preferred provider may have a suitable site farther than the nearest few.
        found += await uow.directory.suitable(
            at, request, skip_sites=skip, only_provider=preferred, limit=1
        )
    return found
