"""HTTP bodies of the router service (DESIGN.md section 3d).

Reads: a referral with its offers and history (``ReferralView``), an OW system's referrals
(``ReferralPage`` of ``ReferralSummary``), a provider's open offers (``OfferList``) and caseload
(``Caseload``), and who a token is (``Caller``). Writes: the bodies of the party's actions
(``ReferralIntake``, ``CancelRequest``, ``DeclineRequest``, ``ProgressReport``); each becomes the
NATS message the party would publish, and the answer is a ``Published``.
"""

import datetime
import uuid
from typing import Annotated, Literal

import msgspec

from contracts.common import AccessibilityCode, Language, ServiceCode, Slug
from contracts.referrals import (
    Client,
    ClientRef,
    Explanation,
    Needs,
    OpaqueRef,
    ProgressCode,
    ProgressNote,
    ProgressStatus,
    Reason,
    ReferralId,
    ReferralStatus,
    Source,
    UtcDateTime,
)

__all__ = [
    "Caller",
    "CancelRequest",
    "Caseload",
    "CaseloadEntry",
    "DeclineRequest",
    "HistoryEntry",
    "IntakeSource",
    "OfferList",
    "OfferState",
    "OfferView",
    "OpenOffer",
    "ProgressReport",
    "Published",
    "ReferralIntake",
    "ReferralPage",
    "ReferralSummary",
    "ReferralView",
]

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


class ReferralSummary(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One referral in an OW system's list: where it stands and with whom."""

    referral_id: uuid.UUID
    status: ReferralStatus
    attempt: int
    created_at: datetime.datetime
    updated_at: datetime.datetime
    source: Source | None = None
    client_ref: ClientRef | None = None
    needs: list[ServiceCode] = []
    language: Language | None = None
    #: The site of the open offer, or of the accepted one.
    provider_id: Slug | None = None
    site_id: Slug | None = None
    site_name: str | None = None
    distance_km: float | None = None
    url: Annotated[str, msgspec.Meta(description="Its full view: GET this path.")]


class ReferralPage(msgspec.Struct, frozen=True, kw_only=True):
    """A page of referrals, newest first; ``next`` is the cursor of the following page."""

    items: list[ReferralSummary]
    next: Annotated[
        str | None, msgspec.Meta(description="Pass as ?cursor= for the next page; null: last.")
    ] = None


class OpenOffer(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An offer waiting for the provider's answer: what it needs to decide, and by when."""

    offer_id: uuid.UUID
    referral_id: uuid.UUID
    attempt: int
    provider_id: Slug
    site_id: Slug
    site_name: str | None = None
    distance_km: float
    offered_at: datetime.datetime
    expires_at: Annotated[
        datetime.datetime,
        msgspec.Meta(description="No answer by then counts as a decline (reason timeout)."),
    ]
    client_ref: ClientRef
    needs: list[ServiceCode]
    language: Language
    accessibility_needs: list[AccessibilityCode] = []
    source: Source | None = None


class OfferList(msgspec.Struct, frozen=True, kw_only=True):
    """Open offers, the soonest deadline first."""

    items: list[OpenOffer]


class CaseloadEntry(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A referral a provider holds: accepted, or the client is in service."""

    referral_id: uuid.UUID
    offer_id: uuid.UUID
    status: Literal["accepted", "in_service"]
    accepted_at: datetime.datetime
    updated_at: datetime.datetime
    provider_id: Slug
    site_id: Slug
    site_name: str | None = None
    client_ref: ClientRef
    needs: list[ServiceCode]
    language: Language
    accessibility_needs: list[AccessibilityCode] = []
    source: Source | None = None


class Caseload(msgspec.Struct, frozen=True, kw_only=True):
    """The referrals a provider holds, the most recently changed first."""

    items: list[CaseloadEntry]


class Caller(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Who a token stands for."""

    role: Literal["admin", "staff", "provider", "ow"]
    provider_id: Slug | None = None
    provider_name: str | None = None
    system: str | None = None


class IntakeSource(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The office that refers; the system is the token's (given, it must be the same)."""

    office_id: OpaqueRef
    system: OpaqueRef | None = None


class ReferralIntake(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """``POST /api/v1/referrals``: a ``referral.requested`` without its ``message_id`` (the
    ``Idempotency-Key``, or a new one) and ``type``; ``requested_at`` defaults to now. A field
    the contract does not have is refused, so personal data sent by mistake goes no further."""

    referral_id: ReferralId
    requested_at: UtcDateTime | None = None
    source: IntakeSource
    client: Client
    needs: Needs
    max_distance_km: Annotated[float, msgspec.Meta(gt=0)] | None = None
    preferred_provider_id: Slug | None = None
    exclude_provider_ids: list[Slug] = []
    action_plan_ref: OpaqueRef | None = None
    consent_ref: OpaqueRef | None = None


class CancelRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/referrals/{id}/cancel``: before acceptance it is cancelled, after it is
    withdrawn (the provider is told the reason)."""

    reason: Reason


class DeclineRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/v1/offers/{offer_id}/decline``: the OW caseworker reads the reason."""

    reason: Reason


class ProgressReport(
    msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """``POST /api/v1/referrals/{id}/progress``: a ``referral.progress`` without its ids;
    ``occurred_at`` defaults to now; ``code`` must fit ``status`` (``PROGRESS_CODES``)."""

    status: ProgressStatus
    code: ProgressCode | None = None
    note: ProgressNote | None = None
    occurred_at: UtcDateTime | None = None


class Published(msgspec.Struct, frozen=True, kw_only=True):
    """202: the action is published as the party's NATS message; the router handles it like
    any other, and the referral at ``url`` shows the result."""

    message_id: Annotated[
        uuid.UUID, msgspec.Meta(description="Its Nats-Msg-Id; a repeat with it is dropped.")
    ]
    referral_id: uuid.UUID
    url: str
