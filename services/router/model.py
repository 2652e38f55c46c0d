"""The router's domain values: a referral and its offer as the handlers see them, one history
entry, an outbox row, and what handling a message did. Plain frozen dataclasses, no I/O.
"""

import datetime
import uuid
from dataclasses import dataclass
from typing import Literal

from contracts.referrals import Explanation, ProgressCode, ReferralRequested, ReferralStatus

#: How an offer ends: the provider accepted or declined it, its deadline passed, or OW
#: cancelled the referral while it was open.
OfferEnd = Literal["accepted", "declined", "expired", "withdrawn"]


@dataclass(frozen=True)
class Point:
    lat: float
    lon: float


@dataclass(frozen=True)
class ReferralRow:
    id: uuid.UUID
    status: ReferralStatus
    attempt: int
    #: None only for a rejected request that could not be decoded.
    request: ReferralRequested | None
    lat: float | None
    lon: float | None
    #: The OW system that sent it (its status events go to that system only).
    system: str | None = None


@dataclass(frozen=True)
class OfferRow:
    id: uuid.UUID
    referral_id: uuid.UUID
    attempt: int
    provider_id: str
    site_id: str
    distance_km: float
    offered_at: datetime.datetime
    expires_at: datetime.datetime
    #: ``open`` until answered; ``accepted`` for the offer the referral is held under.
    state: str = "open"
    #: When it stopped being open (for an accepted offer: the acceptance).
    closed_at: datetime.datetime | None = None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    message_id: uuid.UUID
    subject: str
    payload: bytes


@dataclass(frozen=True)
class Transition:
    """One history entry: an event and the state after it (or a refusal, state unchanged)."""

    event: str
    status: ReferralStatus
    attempt: int
    refused: bool = False
    provider_id: str | None = None
    site_id: str | None = None
    distance_km: float | None = None
    reason: str | None = None
    explanation: Explanation | None = None
    message_id: uuid.UUID | None = None
    #: The outcome or reason code of a progress report.
    code: ProgressCode | None = None


@dataclass(frozen=True)
class Handled:
    """What handling one message (or deadline) did, for the log line and the tests."""

    outcome: str
    referral_id: uuid.UUID | None
    reason: str | None = None
    #: The message itself was unacceptable: terminate it, never redeliver.
    poison: bool = False
