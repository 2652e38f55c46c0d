"""Test helpers for the referral flow: build requests, publish them, watch what the router says."""

import asyncio
import contextlib
import datetime
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import msgspec
import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from contracts.codec import decode_outbound, encode
from contracts.common import ClientLocation, Message
from contracts.referrals import (
    ROUTING_OUTCOMES,
    TERMINAL_STATUSES,
    Client,
    DeadLetter,
    ProviderNotice,
    ReferralCancel,
    ReferralOffered,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
    ReferralStatusChanged,
    Source,
)
from contracts.subjects import (
    STREAM,
    cancel_subject,
    progress_subject,
    requested_subject,
    response_subject,
)
from services import client
from tests.waits import until

T = TypeVar("T")

CORE_NEEDS = ["resume_writing", "interview_skills"]
CCA = "canadian-career-academy"
CES = "community-employment-services"
ONTRAC = "ontrac-employment-resource-services"
CCA_SITE = "canadian-career-academy-carleton-place"
CES_SITE = "community-employment-services-perth"
ONTRAC_SITE = "ontrac-employment-resource-services-smiths-falls"


def make_request(
    *,
    referral_id: uuid.UUID | None = None,
    location: ClientLocation | None = None,
    needs: list[Any] | None = None,
    language: Any = "en",
    **extra: Any,
) -> ReferralRequested:
    return ReferralRequested(
        message_id=uuid.uuid4(),
        referral_id=referral_id or uuid.uuid4(),
        requested_at=datetime.datetime.now(datetime.UTC),
        source=Source(system=SYSTEM, office_id="smiths-falls"),
        client=Client(
            client_ref=f"c-{uuid.uuid4().hex[:8]}",
            location=location or ClientLocation(community="Almonte"),
            language=language,
            eligibility=["ow_recipient"],
        ),
        needs=needs or list(CORE_NEEDS),
        **extra,
    )


def answer(offer: ReferralOffered, decision: Any, reason: str | None = None) -> ReferralResponse:
    return ReferralResponse(
        message_id=uuid.uuid4(),
        referral_id=offer.referral_id,
        offer_id=offer.offer_id,
        decision=decision,
        reason=reason,
    )


def cancel(referral_id: uuid.UUID, reason: str = "client moved") -> ReferralCancel:
    return ReferralCancel(message_id=uuid.uuid4(), referral_id=referral_id, reason=reason)


async def publish(
    js: Any, subject: str, payload: Message | bytes, msg_id: str | None = None
) -> None:
    data = payload if isinstance(payload, bytes) else encode(payload)
    if msg_id is None and not isinstance(payload, bytes):
        msg_id = str(payload.message_id)
    headers = {"Nats-Msg-Id": msg_id} if msg_id else None
    await js.publish(subject, data, headers=headers)


#: The OW system of ``make_request``'s referrals.
SYSTEM = "ow-test"


async def send_request(js: Any, request: ReferralRequested) -> None:
    """On the subject of the system the request says it comes from."""
    await publish(js, requested_subject(request.source.system), request)


async def send_response(js: Any, provider_id: str, response: ReferralResponse) -> None:
    await publish(js, response_subject(provider_id), response)


async def send_cancel(js: Any, message: ReferralCancel, system: str = SYSTEM) -> None:
    await publish(js, cancel_subject(system), message)


async def send_progress(js: Any, provider_id: str, report: ReferralProgress) -> None:
    await publish(js, progress_subject(provider_id), report)


def progress(
    referral_id: uuid.UUID,
    status: Any,
    code: Any = None,
    *,
    note: str | None = None,
    occurred_at: datetime.datetime | None = None,
) -> ReferralProgress:
    """``services.client.progress`` with the code as a third positional argument."""
    return client.progress(referral_id, status, code=code, note=note, occurred_at=occurred_at)


async def delete_stream(nc: NatsClient) -> None:
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await nc.jetstream().delete_stream(STREAM)


class Observer:
    """Everything the router publishes (core subscription on referral.>), decoded and indexed."""

    def __init__(self) -> None:
        self.status: list[ReferralStatusChanged] = []
        self.offered: list[ReferralOffered] = []
        self.dead: list[DeadLetter] = []
        self.notices: list[ProviderNotice] = []
        self._seen: set[uuid.UUID] = set()
        self.raw: list[tuple[str, bytes]] = []
        self._changed = asyncio.Condition()

    async def start(self, nc: NatsClient) -> None:
        await nc.subscribe("referral.>", cb=self._on, pending_msgs_limit=1_000_000)

    async def _on(self, msg: Msg) -> None:
        self.raw.append((msg.subject, msg.data))
        if msg.subject.startswith(
            ("referral.status", "referral.offered", "referral.notice", "referral.dead")
        ):
            event = decode_outbound(msg.data)
            # A core subscription sees every publish; the stream (and so every party's
            # consumer) keeps one per Nats-Msg-Id. The outbox relay may re-publish a row the
            # worker published but had not marked sent yet: count it once, as a party would.
            if event.message_id in self._seen:
                return
            self._seen.add(event.message_id)
            match event:
                case ReferralStatusChanged():
                    self.status.append(event)
                case ReferralOffered():
                    self.offered.append(event)
                case DeadLetter():
                    self.dead.append(event)
                case ProviderNotice():
                    self.notices.append(event)
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(
        self, done: Callable[[], T | None], within: float = 15.0, what: str | None = None
    ) -> T:
        """What ``done()`` gives once it is truthy, checked again on each message received."""
        return await until(done, within=within, what=what, wake=self._changed)

    def statuses(self, referral_id: uuid.UUID) -> list[str]:
        return [s.status for s in self.status if s.referral_id == referral_id]

    def offers(self, referral_id: uuid.UUID) -> list[ReferralOffered]:
        return [o for o in self.offered if o.referral_id == referral_id]

    def last_status(self, referral_id: uuid.UUID) -> ReferralStatusChanged | None:
        found = [s for s in self.status if s.referral_id == referral_id]
        return found[-1] if found else None

    async def until_terminal(
        self, referral_id: uuid.UUID, within: float = 15.0
    ) -> ReferralStatusChanged:
        """The referral's routing outcome (accepted, unmatched, cancelled, rejected) or any
        later closing state, whichever is the latest seen."""

        def terminal() -> ReferralStatusChanged | None:
            last = self.last_status(referral_id)
            settled = ROUTING_OUTCOMES | TERMINAL_STATUSES
            return last if last and last.status in settled else None

        return await self.wait_for(terminal, within, f"a final status of referral {referral_id}")

    async def until_status(
        self, referral_id: uuid.UUID, status: str, within: float = 15.0
    ) -> ReferralStatusChanged:
        def reached() -> ReferralStatusChanged | None:
            return next(
                (s for s in self.status if s.referral_id == referral_id and s.status == status),
                None,
            )

        return await self.wait_for(reached, within, f"status {status} of referral {referral_id}")

    def notices_for(self, referral_id: uuid.UUID) -> list[ProviderNotice]:
        return [n for n in self.notices if n.referral_id == referral_id]

    async def until_offer(
        self, referral_id: uuid.UUID, attempt: int, within: float = 15.0
    ) -> ReferralOffered:
        def offered() -> ReferralOffered | None:
            return next((o for o in self.offers(referral_id) if o.attempt == attempt), None)

        return await self.wait_for(offered, within, f"offer {attempt} of referral {referral_id}")

    async def until_dead(self, count: int, within: float = 15.0) -> list[DeadLetter]:
        return await self.wait_for(
            lambda: self.dead if len(self.dead) >= count else None, within, f"{count} dead letters"
        )


def as_dict(struct: msgspec.Struct) -> Any:
    return msgspec.to_builtins(struct)
