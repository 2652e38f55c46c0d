"""NATS names of the referral flow, in one place: the stream, its subjects, the consumers.

DESIGN.md section 3 (contract v1.1) is the source: every subject names the party it belongs to
in its last token, an OW system's id (``referral.status.ow-lanark``) or a provider's id
(``referral.offered.canadian-career-academy``). Section 7's permissions tie each party's NATS
user to its own token, so the router trusts the subject, never the body, for who sent a
message. Renaming a subject is a breaking change for every integrator.
"""

from functools import lru_cache
from typing import Literal

import msgspec

from contracts.common import Slug

__all__ = [
    "CANCEL_PREFIX",
    "DEAD",
    "NOTICE_PREFIX",
    "OFFERED_PREFIX",
    "OW_DURABLE_PREFIX",
    "PROGRESS_PREFIX",
    "PROVIDER_DURABLE_PREFIX",
    "REQUESTED_PREFIX",
    "RESPONSE_PREFIX",
    "ROUTER_DURABLE",
    "ROUTER_FILTER_SUBJECTS",
    "STATUS_PREFIX",
    "STREAM",
    "STREAM_SUBJECTS",
    "InboundKind",
    "all_of",
    "cancel_subject",
    "inbound_party",
    "notice_subject",
    "offered_subject",
    "ow_durable",
    "progress_subject",
    "provider_durable",
    "requested_subject",
    "response_subject",
    "status_subject",
]

STREAM = "REFERRALS"
#: Everything the stream captures: all subjects below.
STREAM_SUBJECTS: tuple[str, ...] = ("referral.>",)

# OW system -> router, ``<prefix>.<system>``.
REQUESTED_PREFIX = "referral.requested"
CANCEL_PREFIX = "referral.cancel"
# Router -> OW system, ``referral.status.<system>``: one message per transition of its referrals.
STATUS_PREFIX = "referral.status"
# Router -> provider, ``<prefix>.<provider_id>``: offers, and notices about its own things.
OFFERED_PREFIX = "referral.offered"
NOTICE_PREFIX = "referral.notice"
# Provider -> router, ``<prefix>.<provider_id>``: answers to offers, progress after acceptance.
RESPONSE_PREFIX = "referral.response"
PROGRESS_PREFIX = "referral.progress"
#: Router -> operators: messages it could not accept.
DEAD = "referral.dead"

#: The durable pull consumer every router replica shares (DESIGN.md section 7).
ROUTER_DURABLE = "router"
#: Each provider's own durable pull consumer, ``provider-<provider_id>``, on its offers and
#: notices; each OW system's, ``ow-<system>``, on its status events. The only consumer the
#: party's NATS user may read, created by the router before the first message it holds.
PROVIDER_DURABLE_PREFIX = "provider"
OW_DURABLE_PREFIX = "ow"

#: What an inbound subject says the message is, and so whose token its last part is.
InboundKind = Literal["requested", "cancel", "response", "progress"]
_INBOUND: dict[str, InboundKind] = {
    REQUESTED_PREFIX: "requested",
    CANCEL_PREFIX: "cancel",
    RESPONSE_PREFIX: "response",
    PROGRESS_PREFIX: "progress",
}


def all_of(prefix: str) -> str:
    """Every party's subject under ``prefix`` (``referral.status.*``)."""
    return f"{prefix}.*"


#: What the router's consumer receives; several filters need nats-server 2.10+.
ROUTER_FILTER_SUBJECTS: tuple[str, ...] = tuple(all_of(prefix) for prefix in _INBOUND)


@lru_cache(maxsize=4096)  # a few parties, checked for every message (5 % of the router's CPU)
def _token(party: str, what: str = "provider id") -> str:
    # A dot, space, '*' or '>' in a token would change which subjects a message reaches, so the
    # token is checked against the Slug type itself. Slug's pattern ends in '$', which in Python
    # also matches before a final newline, hence the explicit newline check.
    try:
        msgspec.convert(party, Slug)
        if party.endswith("\n"):
            raise ValueError("ends with a newline")
    except ValueError as exc:
        raise ValueError(f"{party!r} is not a {what} (a slug such as 'abc-1')") from exc
    return party


def requested_subject(system: str) -> str:
    """Where OW system ``system`` publishes its referral requests; ValueError for a non-slug."""
    return f"{REQUESTED_PREFIX}.{_token(system, 'system id')}"


def cancel_subject(system: str) -> str:
    """Where OW system ``system`` cancels or withdraws its referrals."""
    return f"{CANCEL_PREFIX}.{_token(system, 'system id')}"


def status_subject(system: str) -> str:
    """Where the router publishes the status events of ``system``'s referrals."""
    return f"{STATUS_PREFIX}.{_token(system, 'system id')}"


def offered_subject(provider_id: str) -> str:
    """Subject the router publishes a provider's offers on; ValueError for a non-slug id."""
    return f"{OFFERED_PREFIX}.{_token(provider_id)}"


def notice_subject(provider_id: str) -> str:
    """Subject the router tells a provider about its offers and referrals on."""
    return f"{NOTICE_PREFIX}.{_token(provider_id)}"


def response_subject(provider_id: str) -> str:
    """Subject a provider answers its offers on; ValueError for a non-slug id."""
    return f"{RESPONSE_PREFIX}.{_token(provider_id)}"


def progress_subject(provider_id: str) -> str:
    """Subject a provider reports on the referrals it holds."""
    return f"{PROGRESS_PREFIX}.{_token(provider_id)}"


def provider_durable(provider_id: str) -> str:
    """The provider's own JetStream consumer on the stream; ValueError for a non-slug id."""
    return f"{PROVIDER_DURABLE_PREFIX}-{_token(provider_id)}"


def ow_durable(system: str) -> str:
    """The OW system's own JetStream consumer on its status events."""
    return f"{OW_DURABLE_PREFIX}-{_token(system, 'system id')}"


def inbound_party(subject: str) -> tuple[InboundKind, str]:
    """What an inbound subject carries and whose it is: (``requested``, ``ow-lanark``) for
    ``referral.requested.ow-lanark``; ValueError for any other subject.

    The party comes from the subject, which NATS permissions tie to that party's own user: the
    trustworthy source, whatever the body says.
    """
    prefix, dot, token = subject.rpartition(".")
    kind = _INBOUND.get(prefix)
    if kind is None or not dot:
        expected = ", ".join(all_of(p) for p in _INBOUND)
        raise ValueError(f"{subject!r} is not an inbound subject ({expected})")
    what = "provider id" if kind in ("response", "progress") else "system id"
    return kind, _token(token, what)
