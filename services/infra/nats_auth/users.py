"""The NATS users of the referral flow and what each may do (DESIGN.md section 7).

One account, ``EO``, with JetStream, and these users:

- ``router``: publish ``referral.>``, ``$JS.API.>`` (the stream and its consumers) and
  ``$JS.ACK.>``; subscribe ``referral.>`` and ``_INBOX.>``;
- ``operator``: everything in the account (tests, ``eo referral watch``, operations);
- one per OW system (``ow-lanark``): publish ``referral.requested.<system>`` and
  ``referral.cancel.<system>``; subscribe ``referral.status.<system>``; of JetStream only its
  own consumer ``ow-<system>`` (consumer info, fetch, ack);
- one per provider (``provider-<id>``): subscribe ``referral.offered.<id>`` and
  ``referral.notice.<id>``; publish ``referral.response.<id>`` and ``referral.progress.<id>``;
  of JetStream only its own consumer ``provider-<id>`` (consumer info, fetch, ack).

Neither an OW system nor a provider may manage a stream or a consumer, read another consumer
or read the stream directly: the router creates their consumers (DESIGN.md section 7), and
every subject they may use ends in their own token.

Every user but ``router`` and ``operator`` has its own inbox prefix, ``_INBOX_<user>`` (nats-py's
``inbox_prefix``), and may subscribe only there: JetStream's replies (publish acks, fetched
messages) reach their requester, and no one can read another user's replies.

Which providers get a user is the caller's input (``default_users(provider_ids=...)``): the
directory owns the providers, and its seed names those of the embedded default. A running
server is given more with ``users_to_add`` (here) and ``EmbeddedNats.add_users``.
"""

import re
from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

from contracts.subjects import (
    STREAM,
    STREAM_SUBJECTS,
    cancel_subject,
    notice_subject,
    offered_subject,
    ow_durable,
    progress_subject,
    provider_durable,
    requested_subject,
    response_subject,
    status_subject,
)

#: The account every user of the referral flow belongs to (JetStream enabled).
ACCOUNT = "EO"
ROUTER_USER = "router"
#: Full access within the account: tests, `eo referral watch`, operations.
OPERATOR_USER = "operator"
#: OW systems that get a user by default: the example system, and the `eo referral` commands'
#: and the `make run` demo's ``source.system``.
DEFAULT_OW_SYSTEMS: tuple[str, ...] = ("ow-lanark", "eo-cli", "eo-demo")
#: The users of the deploy example (deploy/nats/accounts.template.conf): no CLI or demo users.
DEPLOY_OW_SYSTEMS: tuple[str, ...] = ("ow-lanark",)
#: Provider users are ``provider-<provider_id>``, like their consumers.
PROVIDER_USER_PREFIX = "provider-"
#: nats-py's default inbox prefix, kept by the trusted users.
DEFAULT_INBOX = "_INBOX"

Role = Literal["router", "operator", "ow", "provider"]

_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_RESERVED = (ROUTER_USER, OPERATOR_USER)


class NatsUser(msgspec.Struct, frozen=True, kw_only=True):
    """A user of the ``EO`` account and the subjects it may use (``None``: no restriction)."""

    name: str
    role: Role
    publish: tuple[str, ...] | None = None
    subscribe: tuple[str, ...] | None = None
    #: For a provider's user: the provider it acts for.
    provider_id: str | None = None

    @property
    def inbox_prefix(self) -> str:
        return inbox_prefix(self.name)


def inbox_prefix(user: str) -> str:
    return DEFAULT_INBOX if user in _RESERVED else f"{DEFAULT_INBOX}_{user}"


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a NATS user name (a slug such as 'ow-lanark')")
    return name


def router_user() -> NatsUser:
    return NatsUser(
        name=ROUTER_USER,
        role="router",
        # The stream and its consumers (create, fetch), acks, and every referral subject.
        publish=(*STREAM_SUBJECTS, "$JS.API.>", "$JS.ACK.>"),
        subscribe=(*STREAM_SUBJECTS, f"{DEFAULT_INBOX}.>"),
    )


def operator_user() -> NatsUser:
    return NatsUser(name=OPERATOR_USER, role="operator")


def _own_consumer(durable: str) -> tuple[str, ...]:
    """What a party may publish to use its own consumer ``durable`` and no other: its info,
    a fetch, and the acks of what it fetched."""
    return (
        f"$JS.API.CONSUMER.INFO.{STREAM}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{durable}",
        f"$JS.ACK.{STREAM}.{durable}.>",
    )


def ow_user(system: str) -> NatsUser:
    """An OW system: its own requests and cancellations, its own status events (core and its
    consumer ``ow-<system>``), nothing else."""
    name = _check_name(system)
    if name in _RESERVED or name.startswith(PROVIDER_USER_PREFIX):
        raise ValueError(f"{name!r} cannot name an OW system (reserved for another user)")
    return NatsUser(
        name=name,
        role="ow",
        publish=(
            requested_subject(system),
            cancel_subject(system),
            *_own_consumer(ow_durable(system)),
        ),
        subscribe=(status_subject(system), f"{inbox_prefix(name)}.>"),
    )


def provider_user_name(provider_id: str) -> str:
    return provider_durable(provider_id)  # "provider-<id>", the same name as its consumer


def provider_user(provider_id: str) -> NatsUser:
    """A provider: its own offers and notices (core and its consumer), its own responses and
    progress reports, nothing else."""
    name = provider_user_name(provider_id)
    return NatsUser(
        name=name,
        role="provider",
        provider_id=provider_id,
        publish=(
            response_subject(provider_id),
            progress_subject(provider_id),
            *_own_consumer(provider_durable(provider_id)),
        ),
        subscribe=(
            offered_subject(provider_id),
            notice_subject(provider_id),
            f"{inbox_prefix(name)}.>",
        ),
    )


def all_ow_systems(more: Iterable[str], builtin: Sequence[str] = DEFAULT_OW_SYSTEMS) -> list[str]:
    """The OW systems that get a user: ``builtin`` and ``more`` (EO_OW_SYSTEMS), each once."""
    return list(dict.fromkeys([*builtin, *more]))


def default_users(
    ow_systems: Sequence[str] = DEFAULT_OW_SYSTEMS, *, provider_ids: Sequence[str]
) -> list[NatsUser]:
    """router, operator, one user per OW system and one per provider of ``provider_ids``."""
    users = [
        router_user(),
        operator_user(),
        *(ow_user(system) for system in ow_systems),
        *(provider_user(provider_id) for provider_id in provider_ids),
    ]
    names = [user.name for user in users]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"NATS user names given twice: {', '.join(duplicates)}")
    return users


def users_to_add(current: Iterable[NatsUser], wanted: Iterable[NatsUser]) -> list[NatsUser]:
    """The users of ``wanted`` that ``current`` (a server's users) has no user of that name
    for, each once, in ``wanted``'s order: what a server must be given, and nothing when all
    are there."""
    known = {user.name for user in current}
    new: list[NatsUser] = []
    for user in wanted:
        if user.name not in known:
            known.add(user.name)
            new.append(user)
    return new
