"""The referral messages on NATS (DESIGN.md section 3): OW systems, providers and the router.

Every message is a frozen ``Message`` tagged with a versioned ``type``. Evolution is additive
(STYLE.md habit 6): a new field gets a default, a type never changes, and a breaking change is
a new tag (``...v2``) decoded alongside the old one. Unknown fields are ignored on decode, so
``forbid_unknown_fields`` is never set here.
"""

import datetime
import uuid
from typing import Annotated, Literal

import msgspec

from contracts.common import (
    AccessibilityCode,
    ClientLocation,
    EligibilityCode,
    Language,
    Message,
    ServiceCode,
    Slug,
)

__all__ = [
    "EXCLUSION_RULES",
    "PROGRESS_CODES",
    "ROUTING_OUTCOMES",
    "TERMINAL_STATUSES",
    "Client",
    "ClientRef",
    "DeadLetter",
    "DecidingRule",
    "Decision",
    "EndedEarlyReason",
    "ExclusionRule",
    "Explanation",
    "NotStartedReason",
    "NoticeKind",
    "OpaqueRef",
    "OutboundEvent",
    "OutcomeCode",
    "ProgressCode",
    "ProgressNote",
    "ProgressStatus",
    "ProviderNotice",
    "ReferralCancel",
    "ReferralEvent",
    "ReferralOffered",
    "ReferralProgress",
    "ReferralRequested",
    "ReferralResponse",
    "ReferralStatus",
    "ReferralStatusChanged",
    "Source",
    "UtcDateTime",
]

#: An opaque reference chosen by the sender. The pattern keeps out spaces and ``@``, so a
#: name or an e-mail address cannot pass for one.
#: (Python's ``$`` also matches before a final newline; ``(?!\n)`` closes that gap and is a
#: no-op in the ECMA-262 regexes of JSON Schema.)
OpaqueRef = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$(?!\n)"),
]
ClientRef = Annotated[
    OpaqueRef,
    msgspec.Meta(description="Opaque reference; never a name, SIN, health or OW case number."),
]
#: RFC 3339 with an explicit offset; naive times are invalid. The router always sends UTC (Z).
UtcDateTime = Annotated[
    datetime.datetime,
    msgspec.Meta(tz=True, description="RFC 3339 time with an offset; sent as UTC (Z)."),
]

ReferralStatus = Literal[
    "received",
    "offered",
    "accepted",
    "declined",
    "expired",
    "unmatched",
    "cancelled",
    "rejected",
    # v1.1, after acceptance (DESIGN.md section 3c)
    "in_service",
    "completed",
    "not_started",
    "ended_early",
    "withdrawn",
]
#: A referral in one of these states never changes again (it is closed).
TERMINAL_STATUSES: frozenset[ReferralStatus] = frozenset(
    {"unmatched", "cancelled", "rejected", "completed", "not_started", "ended_early", "withdrawn"}
)
#: How routing ends: every request reaches exactly one of these (DESIGN.md section 6); an
#: accepted referral then goes on to one closing state.
ROUTING_OUTCOMES: frozenset[ReferralStatus] = frozenset(
    {"accepted", "unmatched", "cancelled", "rejected"}
)
Decision = Literal["accept", "decline"]

#: What a provider reports after acceptance (``ReferralProgress.status``).
ProgressStatus = Literal["in_service", "completed", "not_started", "ended_early"]
#: Outcomes of ``completed``.
OutcomeCode = Literal["employed", "in_training", "in_education", "plan_completed", "other"]
#: Reasons for ``not_started``.
NotStartedReason = Literal[
    "could_not_contact", "no_show", "client_declined", "not_eligible", "other"
]
#: Reasons for ``ended_early``.
EndedEarlyReason = Literal["client_withdrew", "moved", "could_not_contact", "other"]
#: Every code a progress report may carry; which ones fit which status: ``PROGRESS_CODES``.
ProgressCode = Literal[
    "employed",
    "in_training",
    "in_education",
    "plan_completed",
    "could_not_contact",
    "no_show",
    "client_declined",
    "not_eligible",
    "client_withdrew",
    "moved",
    "other",
]
#: The codes each progress status takes (``in_service`` takes none).
PROGRESS_CODES: dict[str, tuple[str, ...]] = {
    "in_service": (),
    "completed": OutcomeCode.__args__,  # type: ignore[attr-defined]
    "not_started": NotStartedReason.__args__,  # type: ignore[attr-defined]
    "ended_early": EndedEarlyReason.__args__,  # type: ignore[attr-defined]
}
#: Why the router tells a provider something (``ProviderNotice.kind``).
NoticeKind = Literal[
    "offer_cancelled",
    "offer_expired",
    "referral_withdrawn",
    "response_refused",
    "progress_refused",
]

#: Which rule picked the site (or found none), for the caseworker reading a status event.
DecidingRule = Literal[
    "preferred_provider",
    "nearest",
    "tie_lower_load",
    "tie_site_id",
    "no_suitable_site",
]
#: The suitability rules of DESIGN.md section 4, as counted in ``Explanation.excluded``.
ExclusionRule = Literal[
    "inactive",
    "not_accepting_or_full",
    "services",
    "language",
    "accessibility",
    "eligibility",
    "distance",
    "excluded_provider",
    "already_offered",
]
EXCLUSION_RULES: tuple[str, ...] = ExclusionRule.__args__  # type: ignore[attr-defined]

Age = Annotated[int, msgspec.Meta(ge=0, le=130)]
Attempt = Annotated[
    int, msgspec.Meta(ge=1, description="1 for the first site offered, then 2, ...")
]
DistanceKm = Annotated[
    float, msgspec.Meta(ge=0, description="Geodesic (WGS84) distance in kilometres.")
]
#: Free text from OW or a provider, bounded because it is stored and re-published.
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
# Longer: may quote a provider's Reason or say why a request was invalid.
StatusReason = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
# Annotated, not a validator, so the JSON Schema says it too; repeats are checked in __post_init__.
Needs = Annotated[
    list[ServiceCode],
    msgspec.Meta(
        min_length=1,
        extra_json_schema={"uniqueItems": True},
        description="Service codes (DESIGN.md section 5), at least one, no repeats.",
    ),
]
ReferralId = Annotated[
    uuid.UUID,
    msgspec.Meta(description="Chosen by OW; the idempotency key of the referral."),
]


def _only(*given: str) -> dict[str, object]:
    return {
        "required": list(given),
        "properties": {
            name: {"not": {"type": "null"}} if name in given else {"type": "null"}
            for name in ("lat", "lon", "postal_code", "community")
        },
    }


# JSON Schema cannot see ClientLocation.__post_init__; this states its "exactly one form" rule
# for integrators who validate against the schema files instead of these Structs.
_ONE_LOCATION_FORM = {"oneOf": [_only("lat", "lon"), _only("postal_code"), _only("community")]}


def _check_unique_needs(needs: list[ServiceCode]) -> None:
    if len(set(needs)) != len(needs):
        raise ValueError("needs must not repeat a service code")


class Source(msgspec.Struct, frozen=True, kw_only=True):
    """The OW system and office that sent a referral."""

    system: OpaqueRef
    office_id: OpaqueRef


class Client(msgspec.Struct, frozen=True, kw_only=True):
    """What matching needs to know about the client, and nothing that identifies them."""

    client_ref: ClientRef
    location: Annotated[
        ClientLocation,
        msgspec.Meta(
            description="Exactly one of {lat, lon}, {postal_code} or {community} (a place name).",
            extra_json_schema=_ONE_LOCATION_FORM,
        ),
    ]
    language: Annotated[Language, msgspec.Meta(description="Service language the client needs.")]
    age: Age | None = None
    accessibility_needs: list[AccessibilityCode] = []
    eligibility: list[EligibilityCode] = []


class Explanation(msgspec.Struct, frozen=True, kw_only=True):
    """Why the router chose this site, or none: the deciding rule and what each rule excluded."""

    rule: DecidingRule
    text: Annotated[str, msgspec.Meta(description="The same, in a sentence for people.")]
    distance_km: DistanceKm | None = None
    excluded: Annotated[
        dict[str, Annotated[int, msgspec.Meta(ge=0)]],
        msgspec.Meta(
            description=(
                "How many sites each suitability rule excluded, keyed by rule: "
                + ", ".join(EXCLUSION_RULES)
                + ". Consumers must accept keys they do not know."
            )
        ),
    ] = {}


class ReferralRequested(
    Message, tag="referral.requested.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """An OW system asks for an EO provider for one client (``referral.requested.<system>``;
    ``source.system`` must be that system).

    Sending the same ``referral_id`` again is the same referral, not a new one.
    """

    referral_id: ReferralId
    requested_at: UtcDateTime
    source: Source
    client: Client
    needs: Needs
    max_distance_km: Annotated[float, msgspec.Meta(gt=0)] | None = None
    preferred_provider_id: Slug | None = None
    exclude_provider_ids: list[Slug] = []
    action_plan_ref: Annotated[
        OpaqueRef | None, msgspec.Meta(description="The client's EO action plan, if any.")
    ] = None
    consent_ref: Annotated[
        OpaqueRef | None,
        msgspec.Meta(description="The consent under which the referral is shared."),
    ] = None

    def __post_init__(self) -> None:
        _check_unique_needs(self.needs)


class ReferralCancel(
    Message, tag="referral.cancel.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """The referring OW system calls a referral off (``referral.cancel.<system>``): before
    acceptance it is cancelled, after it withdrawn (the provider is told)."""

    referral_id: ReferralId
    reason: Reason


class ReferralOffered(
    Message, tag="referral.offered.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """The router offers a referral to one provider site (``referral.offered.<provider_id>``).

    Only what the provider needs to decide; no free text from the caseworker.
    """

    referral_id: uuid.UUID
    offer_id: uuid.UUID
    provider_id: Slug
    site_id: Slug
    attempt: Attempt
    expires_at: Annotated[
        UtcDateTime,
        msgspec.Meta(description="No response by then counts as a decline (reason timeout)."),
    ]
    distance_km: DistanceKm
    needs: Needs
    language: Language
    accessibility_needs: list[AccessibilityCode] = []
    client_ref: ClientRef
    # v1.1 (additive): the OW system and office the EO caseworker works with.
    source: Source | None = None

    def __post_init__(self) -> None:
        _check_unique_needs(self.needs)


class ReferralResponse(
    Message, tag="referral.response.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """A provider accepts or declines an offer (``referral.response.<provider_id>``)."""

    referral_id: uuid.UUID
    offer_id: uuid.UUID
    decision: Decision
    reason: Reason | None = None


class ReferralStatusChanged(
    Message, tag="referral.status.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """A referral changed state (``referral.status.<system>``, the referring system's only);
    one event per transition.

    ``provider_id``, ``site_id``, ``distance_km``, ``reason``, ``code`` and ``explanation`` are
    present where they apply to the new state.
    """

    referral_id: uuid.UUID
    status: ReferralStatus
    at: UtcDateTime
    attempt: Annotated[
        int, msgspec.Meta(ge=0, description="Offers made so far; 0 before the first one.")
    ]
    provider_id: Slug | None = None
    site_id: Slug | None = None
    distance_km: DistanceKm | None = None
    reason: StatusReason | None = None
    explanation: Explanation | None = None
    # v1.1 (additive): the outcome of ``completed``, the reason code of ``not_started`` or
    # ``ended_early``, as the provider reported it.
    code: ProgressCode | None = None


#: A provider's note on a progress report: short, and never personal information.
ProgressNote = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        description="At most 200 characters; never a name, contact or case detail.",
    ),
]


class ReferralProgress(
    Message, tag="referral.progress.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """The provider holding an accepted referral reports on it
    (``referral.progress.<provider_id>``): the client started (``in_service``), finished
    (``completed``, with an outcome ``code``), never started (``not_started``) or stopped
    (``ended_early``), each with a reason ``code``."""

    referral_id: uuid.UUID
    status: ProgressStatus
    code: ProgressCode | None = None
    note: ProgressNote | None = None
    occurred_at: Annotated[
        UtcDateTime, msgspec.Meta(description="When it happened: not in the future.")
    ]

    def __post_init__(self) -> None:
        allowed = PROGRESS_CODES[self.status]
        if not allowed and self.code is not None:
            raise ValueError(f"status {self.status} takes no code")
        if allowed and self.code not in allowed:
            raise ValueError(f"status {self.status} needs a code, one of: {', '.join(allowed)}")


class ProviderNotice(
    Message, tag="referral.notice.v1", frozen=True, kw_only=True, omit_defaults=True
):
    """The router tells a provider what happened to something of its own
    (``referral.notice.<provider_id>``): an offer withdrawn (cancelled by OW, expired), an
    accepted referral withdrawn, or a response or progress report refused, and why."""

    referral_id: uuid.UUID
    kind: NoticeKind
    reason: StatusReason
    offer_id: uuid.UUID | None = None
    at: UtcDateTime


class DeadLetter(Message, tag="referral.dead.v1", frozen=True, kw_only=True, omit_defaults=True):
    """A message the router could not accept, kept with the reason (subject ``referral.dead``)."""

    subject: str
    received_at: UtcDateTime
    error: str
    payload: Annotated[
        bytes, msgspec.Meta(description="The message exactly as received, base64-encoded.")
    ]
    referral_id: Annotated[
        uuid.UUID | None,
        msgspec.Meta(description="Present when it could be read from the payload."),
    ] = None
    # Added in v1 (additive): a message near NATS's payload limit cannot be re-published whole
    # once base64-encoded, so ``payload`` then holds only its start.
    payload_size: (
        Annotated[int, msgspec.Meta(ge=0, description="Size in bytes of the message as received.")]
        | None
    ) = None
    payload_truncated: Annotated[
        bool,
        msgspec.Meta(
            description="True when payload holds only the first bytes of a message too large "
            "to re-publish whole; the stream keeps the original at stream_sequence."
        ),
    ] = False
    stream_sequence: (
        Annotated[int, msgspec.Meta(ge=1, description="The original's sequence in the stream.")]
        | None
    ) = None


#: What the router consumes; the type of ``contracts.codec.decode_inbound``.
ReferralEvent = ReferralRequested | ReferralResponse | ReferralCancel | ReferralProgress
#: What the router publishes.
OutboundEvent = ReferralOffered | ReferralStatusChanged | ProviderNotice | DeadLetter
