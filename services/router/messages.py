"""What the router says: the status event of a transition, an offer to a provider and a dead
letter, built from domain values. Pure; message ids are derived, so a rebuild is the same
message and JetStream drops the repeat.
"""

import datetime
import uuid

from contracts.codec import derive_message_id
from contracts.referrals import (
    DeadLetter,
    NoticeKind,
    ProviderNotice,
    ReferralOffered,
    ReferralStatusChanged,
)
from services.router.model import OfferRow, ReferralRow, Transition

#: The referral id of a dead letter whose payload had none.
NO_REFERRAL = uuid.UUID(int=0)
#: The longest ``ReferralStatusChanged.reason`` the contract allows (``StatusReason``).
STATUS_REASON_MAX = 2000
#: Bytes of an invalid message a dead letter carries: base64 grows it by a third, and the
#: dead letter must stay under NATS's 1 MiB payload limit. Longer ones are truncated.
DEAD_PAYLOAD_MAX = 256 * 1024


def status_reason(reason: str | None, limit: int = STATUS_REASON_MAX) -> str | None:
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


def status_changed(
    referral_id: uuid.UUID, entry: Transition, at: datetime.datetime
) -> ReferralStatusChanged:
    return ReferralStatusChanged(
        message_id=derive_message_id(referral_id, "status", entry.status, entry.attempt),
        referral_id=referral_id,
        status=entry.status,
        at=at,
        attempt=entry.attempt,
        provider_id=entry.provider_id,
        site_id=entry.site_id,
        distance_km=None if entry.distance_km is None else round(entry.distance_km, 3),
        # The history keeps the full text; the dead letter of a rejected request does too.
        reason=status_reason(entry.reason),
        explanation=entry.explanation,
        code=entry.code,
    )


def notice(
    referral_id: uuid.UUID,
    kind: NoticeKind,
    reason: str,
    *,
    at: datetime.datetime,
    cause: str | int | uuid.UUID,
    offer_id: uuid.UUID | None = None,
) -> ProviderNotice:
    """A notice to a provider; ``cause`` (the offer's attempt, the refused message's id) makes
    its message id, so the same cause is the same notice."""
    return ProviderNotice(
        message_id=derive_message_id(referral_id, "notice", kind, str(cause)),
        referral_id=referral_id,
        kind=kind,
        reason=status_reason(reason) or reason,
        offer_id=offer_id,
        at=at,
    )


def offered(referral: ReferralRow, offer: OfferRow) -> ReferralOffered:
    request = referral.request
    assert request is not None  # only a routable referral is offered
    return ReferralOffered(
        message_id=derive_message_id(referral.id, "offered", offer.attempt),
        referral_id=referral.id,
        offer_id=offer.id,
        provider_id=offer.provider_id,
        site_id=offer.site_id,
        attempt=offer.attempt,
        expires_at=offer.expires_at,
        distance_km=round(offer.distance_km, 3),
        needs=request.needs,
        language=request.client.language,
        accessibility_needs=request.client.accessibility_needs,
        client_ref=request.client.client_ref,
        source=request.source,
    )


def dead_letter(
    subject: str,
    payload: bytes,
    error: str,
    *,
    referral_id: uuid.UUID | None,
    sequence: int,
    at: datetime.datetime,
) -> DeadLetter:
    return DeadLetter(
        # From the stream sequence: a redelivery of the same message is the same dead letter.
        message_id=derive_message_id(referral_id or NO_REFERRAL, "dead", subject, sequence),
        subject=subject,
        received_at=at,
        error=status_reason(error) or error,
        payload=payload[:DEAD_PAYLOAD_MAX],
        referral_id=referral_id,
        payload_size=len(payload),
        payload_truncated=len(payload) > DEAD_PAYLOAD_MAX,
        stream_sequence=sequence,
    )
