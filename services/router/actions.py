"""What the router's HTTP writes do, decided without I/O (DESIGN.md section 3d).

Each write of a party (an OW system's intake and cancel, a provider's accept, decline and
progress) becomes the very message that party would publish over NATS, on the subject it would
use; ``api`` publishes it and the router handles it like any other, so one path changes state.
Before anything is published the caller is checked against what the referral or offer is:
- a role that never does this (a provider referring a client, an admin acting for a party) is
  a 403 saying whose token to use;
- another party's referral or offer is a 404, as one that does not exist (never confirmed);
- an action the state already rules out (an offer no longer open, a closed referral) is a 409
  saying why; the router re-checks everything, so a race is refused there, with a notice;
- an invalid value is a 422 naming the field.
Also here: the ``Idempotency-Key`` (the message id), the list's cursor and its day bounds.
"""

import base64
import binascii
import datetime
import uuid
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import msgspec

from contracts.referrals import (
    TERMINAL_STATUSES,
    ReferralCancel,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
    Source,
)
from contracts.router import CancelRequest, ProgressReport, ReferralIntake
from contracts.subjects import (
    cancel_subject,
    progress_subject,
    requested_subject,
    response_subject,
)
from services.access.principal import Principal

#: Dates of the list filters are Ontario calendar days.
TORONTO = ZoneInfo("America/Toronto")
#: A progress report may be dated this far ahead of the router's clock (clocks drift).
CLOCK_SKEW = datetime.timedelta(minutes=5)


class Refused(Exception):
    """The action is refused before anything is published: an HTTP ``status``, why, and the
    field at fault (a JSON path of the body, or a header or query parameter name)."""

    def __init__(self, status: int, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field


@dataclass(frozen=True)
class OfferOwner:
    """An offer as the write checks see it."""

    offer_id: uuid.UUID
    referral_id: uuid.UUID
    provider_id: str
    state: str
    expires_at: datetime.datetime


@dataclass(frozen=True)
class HeldReferral:
    """The provider holding an accepted referral, since when."""

    provider_id: str
    accepted_at: datetime.datetime


@dataclass(frozen=True)
class ReferralOwner:
    """A referral as the write checks see it."""

    referral_id: uuid.UUID
    system: str | None
    status: str
    held: HeldReferral | None


@dataclass(frozen=True)
class Outgoing:
    """A message to publish on a subject, as the party itself would."""

    subject: str
    message: ReferralRequested | ReferralCancel | ReferralResponse | ReferralProgress

    @property
    def referral_id(self) -> uuid.UUID:
        return self.message.referral_id


def _checked(
    subject: str,
    message: ReferralRequested | ReferralCancel | ReferralResponse | ReferralProgress,
) -> Outgoing:
    """``Outgoing``, unless a text in the message holds the NUL character: valid JSON, but the
    router dead-letters such a message (no PostgreSQL text can hold it), so it is refused here,
    before anything is published, naming the field (the body's field of the same path)."""
    if field := _nul_at(msgspec.to_builtins(message), "$"):
        raise Refused(422, "a text may not contain the NUL character (\\u0000)", field=field)
    return Outgoing(subject, message)


def _nul_at(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        children = [(f"{path}.{key}", item) for key, item in value.items()]
    elif isinstance(value, list):
        children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    else:
        return None
    return next((at for child, item in children if (at := _nul_at(item, child))), None)


def message_id(idempotency_key: str | None) -> uuid.UUID:
    """The message id of a write: its ``Idempotency-Key`` header, a UUID, when sent (a retried
    POST with it is the same message: JetStream and the router drop the repeat); else new."""
    if idempotency_key is None:
        return uuid.uuid4()
    try:
        return uuid.UUID(idempotency_key.strip())
    except ValueError:
        raise Refused(
            422,
            f"Idempotency-Key must be a UUID (it becomes the message id), such as {uuid.uuid4()}",
            field="Idempotency-Key",
        ) from None


def _must_be(caller: Principal, role: str, action: str) -> str:
    """The caller's party id for ``action`` of ``role``; 403 for any other role."""
    party = caller.system if role == "ow" else caller.provider_id
    if caller.role != role or party is None:
        who = "an OW system" if role == "ow" else "a provider"
        raise Refused(
            403,
            f"only {who} may {action}, with its own token; this token is of role {caller.role}",
        )
    return party


def intake(
    body: ReferralIntake, caller: Principal, mid: uuid.UUID, now: datetime.datetime
) -> Outgoing:
    """``POST /api/v1/referrals``: the ``referral.requested`` of the caller's OW system."""
    system = _must_be(caller, "ow", "refer a client")
    if body.source.system is not None and body.source.system != system:
        raise Refused(
            422,
            f"source.system must be the token's OW system, {system!r} (or left out)",
            field="$.source.system",
        )
    try:
        message = ReferralRequested(
            message_id=mid,
            referral_id=body.referral_id,
            requested_at=body.requested_at or now,
            source=Source(system=system, office_id=body.source.office_id),
            client=body.client,
            needs=body.needs,
            max_distance_km=body.max_distance_km,
            preferred_provider_id=body.preferred_provider_id,
            exclude_provider_ids=body.exclude_provider_ids,
            action_plan_ref=body.action_plan_ref,
            consent_ref=body.consent_ref,
        )
    except ValueError as exc:  # its __post_init__: a service code given twice
        raise Refused(422, str(exc), field="$.needs") from None
    return _checked(requested_subject(system), message)


def cancel(
    referral: ReferralOwner | None, body: CancelRequest, caller: Principal, mid: uuid.UUID
) -> Outgoing:
    """``POST /api/v1/referrals/{id}/cancel``: the ``referral.cancel`` of the system that sent
    it (before acceptance it is cancelled, after it withdrawn)."""
    system = _must_be(caller, "ow", "cancel or withdraw a referral")
    if referral is None or referral.system != system:
        raise Refused(404, "no such referral of yours")
    if referral.status in TERMINAL_STATUSES:
        raise Refused(409, f"the referral is already {referral.status}: nothing to call off")
    message = ReferralCancel(message_id=mid, referral_id=referral.referral_id, reason=body.reason)
    return _checked(cancel_subject(system), message)


def respond(
    offer: OfferOwner | None,
    decision: str,
    reason: str | None,
    caller: Principal,
    mid: uuid.UUID,
) -> Outgoing:
    """``POST /api/v1/offers/{offer_id}/accept|decline``: the provider's ``referral.response``."""
    provider_id = _must_be(caller, "provider", "answer an offer")
    if offer is None or offer.provider_id != provider_id:
        raise Refused(404, "no such offer of yours")
    if offer.state != "open":
        raise Refused(409, f"the offer is no longer open: it was {offer.state}")
    message = msgspec.convert(
        {
            "message_id": str(mid),
            "referral_id": str(offer.referral_id),
            "offer_id": str(offer.offer_id),
            "decision": decision,
            **({"reason": reason} if reason is not None else {}),
        },
        ReferralResponse,
    )
    return _checked(response_subject(provider_id), message)


def report(
    referral: ReferralOwner | None,
    body: ProgressReport,
    caller: Principal,
    mid: uuid.UUID,
    now: datetime.datetime,
) -> Outgoing:
    """``POST /api/v1/referrals/{id}/progress``: the holder's ``referral.progress``."""
    provider_id = _must_be(caller, "provider", "report progress")
    held = None if referral is None else referral.held
    if referral is None or held is None or held.provider_id != provider_id:
        raise Refused(404, "no referral held by you has this id")
    if referral.status not in ("accepted", "in_service"):
        raise Refused(409, f"the referral is already {referral.status}: nothing to report on")
    occurred_at = body.occurred_at or now
    if occurred_at > now + CLOCK_SKEW:
        raise Refused(422, "occurred_at is in the future", field="$.occurred_at")
    if occurred_at < held.accepted_at:
        raise Refused(
            422,
            f"occurred_at is before the referral was accepted ({held.accepted_at.isoformat()})",
            field="$.occurred_at",
        )
    raw = {
        "message_id": str(mid),
        "referral_id": str(referral.referral_id),
        "status": body.status,
        "code": body.code,
        "note": body.note,
        "occurred_at": occurred_at.astimezone(datetime.UTC).isoformat(),
    }
    try:
        message = msgspec.convert(
            {key: value for key, value in raw.items() if value is not None}, ReferralProgress
        )
    except msgspec.ValidationError as exc:  # the code does not fit the status
        raise Refused(422, str(exc), field="$.code") from None
    return _checked(progress_subject(provider_id), message)


# -- lists --------------------------------------------------------------------------------------


def encode_cursor(created_at: datetime.datetime, referral_id: uuid.UUID) -> str:
    """The cursor of the page after a row: opaque to callers."""
    raw = f"{created_at.isoformat()}|{referral_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime.datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, rid = raw.partition("|")
        created_at = datetime.datetime.fromisoformat(at)
        if created_at.tzinfo is None:
            raise ValueError("naive time")
        # In UTC, as PostgreSQL takes it: year 1 at +14:00 is before the first UTC day.
        return created_at.astimezone(datetime.UTC), uuid.UUID(rid)
    except (ValueError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise Refused(
            422, "cursor is not one this API gave (use the `next` of a page)", field="cursor"
        ) from None


def day_bounds(
    first: datetime.date | None, last: datetime.date | None
) -> tuple[datetime.datetime | None, datetime.datetime | None]:
    """``from`` and ``to`` (both inclusive Ontario days) as [start, end) instants."""
    if first is not None and last is not None and last < first:
        raise Refused(422, "to is before from", field="to")

    def midnight(day: datetime.date) -> datetime.datetime:
        return datetime.datetime.combine(day, datetime.time(), TORONTO)

    # The calendar's last day has no day after it, and nothing is later: no bound.
    until = None if last is None or last == datetime.date.max else last + datetime.timedelta(1)
    return (None if first is None else midnight(first), None if until is None else midnight(until))


def list_scope(caller: Principal, *, lists: str, system: str | None = None) -> str | None:
    """Whose referrals ``caller`` lists: its own system's, or (an admin) ``system`` or all."""
    if caller.role == "admin":
        return system
    if caller.role == "ow" and caller.system is not None:
        if system is not None and system != caller.system:
            raise Refused(403, "an OW system lists only its own referrals", field="system")
        return caller.system
    raise Refused(403, f"{lists} are an OW system's; this token is of role {caller.role}")


def provider_scope(caller: Principal, *, lists: str, provider_id: str | None = None) -> str | None:
    """Whose offers or caseload ``caller`` lists: its own, or (an admin) ``provider_id``/all."""
    if caller.role == "admin":
        return provider_id
    if caller.role == "provider" and caller.provider_id is not None:
        if provider_id is not None and provider_id != caller.provider_id:
            raise Refused(403, "a provider lists only its own", field="provider_id")
        return caller.provider_id
    raise Refused(403, f"{lists} are a provider's; this token is of role {caller.role}")
