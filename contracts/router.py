"""HTTP bodies of the router service (DESIGN.md section 3b): a referral, its offers, its history."""

import datetime
import uuid
from typing import Annotated, Literal

import msgspec

from contracts.common import Slug
from contracts.referrals import Explanation, ReferralStatus

__all__ = ["HistoryEntry", "OfferState", "OfferView", "ReferralView"]

OfferState = Literal["open", "accepted", "declined", "expired", "withdrawn"]


class OfferView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One offer of a referral to a provider site."""

    offer_id: uuid.UUID
    attempt: Annotated[int, msgspec.Meta(ge=1)]
    provider_id: Slug
    site_id: Slug
    distance_km: float
    offered_at: datetime.datetime
    expires_at: datetime.datetime
    state: OfferState
    closed_at: datetime.datetime | None = None


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One event the router handled for a referral, in order: a transition, or a refusal."""

    at: datetime.datetime
    event: Annotated[
        str, msgspec.Meta(description="offer, accept, decline, expire, cancel, reject, ...")
    ]
    status: Annotated[
        ReferralStatus, msgspec.Meta(description="The state after it (unchanged if refused).")
    ]
    refused: Annotated[
        bool, msgspec.Meta(description="True when the event changed nothing; see reason.")
    ] = False
    attempt: int
    provider_id: Slug | None = None
    site_id: Slug | None = None
    distance_km: float | None = None
    reason: str | None = None
    explanation: Explanation | None = None
    # v1.1 (additive): the outcome or reason code of a progress report.
    code: str | None = None


class ReferralView(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A referral's state, its current offer, every offer made and its full history."""

    referral_id: uuid.UUID
    status: ReferralStatus
    attempt: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    source_system: str | None = None
    current_offer: OfferView | None = None
    offers: list[OfferView] = []
    history: list[HistoryEntry] = []
