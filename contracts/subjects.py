"""NATS names of the referral flow, in one place: the stream, its subjects, the router's consumer.

DESIGN.md section 3 is the source; section 7's per-provider permissions are written against
these subjects, so renaming one is a breaking change for every integrator.
"""

import msgspec

from contracts.common import Slug

__all__ = [
    "CANCEL",
    "DEAD",
    "OFFERED_ALL",
    "OFFERED_PREFIX",
    "PROVIDER_DURABLE_PREFIX",
    "REQUESTED",
    "RESPONSE_ALL",
    "RESPONSE_PREFIX",
    "ROUTER_DURABLE",
    "ROUTER_FILTER_SUBJECTS",
    "STATUS",
    "STREAM",
    "STREAM_SUBJECTS",
    "offered_subject",
    "provider_durable",
    "provider_id_from_response_subject",
    "response_subject",
]

STREAM = "REFERRALS"
#: Everything the stream captures: all subjects below.
STREAM_SUBJECTS: tuple[str, ...] = ("referral.>",)

#: OW system -> router.
REQUESTED = "referral.requested"
#: OW system -> router.
CANCEL = "referral.cancel"
#: Router -> OW, one message per state transition.
STATUS = "referral.status"
#: Router -> operators: messages it could not accept.
DEAD = "referral.dead"

#: Router -> provider: ``referral.offered.<provider_id>``.
OFFERED_PREFIX = "referral.offered"
#: Provider -> router: ``referral.response.<provider_id>``.
RESPONSE_PREFIX = "referral.response"
OFFERED_ALL = f"{OFFERED_PREFIX}.*"
RESPONSE_ALL = f"{RESPONSE_PREFIX}.*"

#: The durable pull consumer every router replica shares (DESIGN.md section 7).
ROUTER_DURABLE = "router"
#: What that consumer receives; one consumer with several filters needs nats-server 2.10+.
ROUTER_FILTER_SUBJECTS: tuple[str, ...] = (REQUESTED, RESPONSE_ALL, CANCEL)
#: Each provider's own durable pull consumer, ``provider-<provider_id>``, filtered on its
#: ``referral.offered.<provider_id>``: the only consumer its NATS user may read.
PROVIDER_DURABLE_PREFIX = "provider"


def _token(provider_id: str) -> str:
    # A dot, space, '*' or '>' in a token would change which subjects a message reaches, so the
    # token is checked against the Slug type itself. Slug's pattern ends in '$', which in Python
    # also matches before a final newline, hence the explicit newline check.
    try:
        msgspec.convert(provider_id, Slug)
        if provider_id.endswith("\n"):
            raise ValueError("ends with a newline")
    except ValueError as exc:
        raise ValueError(f"{provider_id!r} is not a provider id (a slug such as 'abc-1')") from exc
    return provider_id


def offered_subject(provider_id: str) -> str:
    """Subject the router publishes a provider's offers on; ValueError for a non-slug id."""
    return f"{OFFERED_PREFIX}.{_token(provider_id)}"


def response_subject(provider_id: str) -> str:
    """Subject a provider answers its offers on; ValueError for a non-slug id."""
    return f"{RESPONSE_PREFIX}.{_token(provider_id)}"


def provider_durable(provider_id: str) -> str:
    """The provider's own JetStream consumer on the stream; ValueError for a non-slug id."""
    return f"{PROVIDER_DURABLE_PREFIX}-{_token(provider_id)}"


def provider_id_from_response_subject(subject: str) -> str:
    """The provider a response came from, read from its subject; ValueError for any other subject.

    A response carries no provider id in its body: the subject, which NATS permissions tie to
    the provider's own user, is the trustworthy source.
    """
    prefix, dot, token = subject.rpartition(".")
    if prefix != RESPONSE_PREFIX or not dot:
        raise ValueError(f"{subject!r} is not a {RESPONSE_ALL} subject")
    return _token(token)
