"""The `make run` demo: sample referrals from Lanark County, a sample provider responder that
answers only those, and a live view of every status event on the stream.

Sample plan (seed data): Almonte is offered to Canadian Career Academy, which accepts; Lanark
is offered to Community Employment Services, which declines, and is re-routed to Ontrac; a
Smiths Falls postal code goes to Ontrac; a French-language referral from Pakenham finds no
site that serves in French and is unmatched, with the explanation.
"""

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from contracts.codec import decode_outbound
from contracts.common import ClientLocation
from contracts.referrals import (
    TERMINAL_STATUSES,
    ReferralOffered,
    ReferralStatusChanged,
)
from contracts.subjects import (
    DEAD,
    OFFERED_ALL,
    REQUESTED,
    STATUS,
    offered_subject,
    response_subject,
)
from services.client import build_request, describe, publish, response
from services.infra.nats_auth import OPERATOR_USER, provider_user_name

#: Seconds the sample provider takes to answer, so a person can follow along.
THINK_S = 1.0
#: The OW system (and NATS user) the demo sends its referrals as.
DEMO_SYSTEM = "eo-demo"


@dataclass
class Sample:
    label: str
    location: ClientLocation
    needs: list[str]
    language: str = "en"
    #: The sample provider's answers to this referral's offers, in order.
    answers: list[tuple[str, str | None]] = field(default_factory=list)
    referral_id: uuid.UUID = field(default_factory=uuid.uuid4)
    path: list[str] = field(default_factory=list)
    done: bool = False


def samples() -> list[Sample]:
    return [
        Sample(
            "Almonte (community)",
            ClientLocation(community="Almonte"),
            ["resume_writing", "interview_skills"],
            answers=[("accept", None)],
        ),
        Sample(
            "Lanark (community)",
            ClientLocation(community="Lanark"),
            ["employment_counselling", "job_search"],
            answers=[("decline", "no intake until next month"), ("accept", None)],
        ),
        Sample(
            "Smiths Falls (postal code K7A 1A1)",
            ClientLocation(postal_code="K7A 1A1"),
            ["job_matching_placement"],
            answers=[("accept", None)],
        ),
        Sample(
            "Pakenham, service in French (community)",
            ClientLocation(community="Pakenham"),
            ["employment_counselling"],
            language="fr",
        ),
    ]


async def run_demo(
    connect: Callable[[str], Awaitable[NatsClient]],
    router_url: str,
    *,
    providers: Sequence[str],
    say: Callable[[str], None] = print,
) -> list[Sample]:
    """Send the samples, answer their offers, print every event; return when all are final.

    Each party uses its own NATS user (``connect(user)`` opens a connection as that user): the
    OW side is the ``eo-demo`` system, each of ``providers`` answers its own offers as
    ``provider-<id>``, and the live view reads every event as the operator. The live view
    keeps printing events (also for referrals sent with ``eo referral send``) until the task
    is cancelled.
    """
    plan = samples()
    by_id = {sample.referral_id: sample for sample in plan}
    all_done = asyncio.Event()
    answering: set[asyncio.Task[None]] = set()
    connections: list[NatsClient] = []

    async def on_event(msg: Msg) -> None:
        event = decode_outbound(msg.data)
        say(f"  [stream] {describe(event)}")
        if isinstance(event, ReferralStatusChanged) and event.referral_id in by_id:
            sample = by_id[event.referral_id]
            sample.path.append(describe(event).split("  ", 1)[1])
            if event.status in TERMINAL_STATUSES:
                sample.done = True
                if all(s.done for s in plan):
                    all_done.set()

    def on_offer(provider: NatsClient) -> Callable[[Msg], Awaitable[None]]:
        async def received(msg: Msg) -> None:
            offer = decode_outbound(msg.data)
            if isinstance(offer, ReferralOffered) and offer.referral_id in by_id:
                task = asyncio.create_task(answer(provider, by_id[offer.referral_id], offer))
                answering.add(task)
                task.add_done_callback(answering.discard)

        return received

    async def answer(provider: NatsClient, sample: Sample, offer: ReferralOffered) -> None:
        if not sample.answers:
            return
        decision, reason = sample.answers.pop(0)
        await asyncio.sleep(THINK_S)
        say(f"  [provider {offer.provider_id}] {decision}s referral {str(offer.referral_id)[:8]}")
        await publish(
            provider,
            response_subject(offer.provider_id),
            response(offer.referral_id, offer.offer_id, decision, reason),
        )

    try:
        watch = await connect(OPERATOR_USER)
        connections.append(watch)
        for subject in (STATUS, OFFERED_ALL, DEAD):
            await watch.subscribe(subject, cb=on_event)
        for provider_id in providers:
            provider = await connect(provider_user_name(provider_id))
            connections.append(provider)
            await provider.subscribe(offered_subject(provider_id), cb=on_offer(provider))
        ow = await connect(DEMO_SYSTEM)
        connections.append(ow)
        for connection in connections:
            await connection.flush()  # subscribed before the first request goes out
        say("\n  Demo: sending sample referrals (a sample provider answers only these).")
        for sample in plan:
            request = build_request(
                location=sample.location,
                needs=sample.needs,
                language=sample.language,
                referral_id=sample.referral_id,
                system=DEMO_SYSTEM,
                office_id="lanark",
            )
            say(
                f"  [OW] referral {str(sample.referral_id)[:8]} from {sample.label}, "
                f"needs {', '.join(sample.needs)}, language {sample.language}"
            )
            await publish(ow, REQUESTED, request)
        await all_done.wait()
        say(summary(plan, router_url))
        await asyncio.Event().wait()  # keep the live view until cancelled
    finally:
        for task in answering:
            task.cancel()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
    return plan


def summary(plan: list[Sample], router_url: str) -> str:
    lines = ["", "  Paths of the sample referrals:"]
    for sample in plan:
        lines.append(f"  {sample.referral_id}  from {sample.label}")
        lines.extend(f"      {step}" for step in sample.path)
    lines.append("")
    lines.append(f"  Full history: curl {router_url}/api/v1/referrals/<referral_id>")
    lines.append("  Send your own: eo referral send --community Perth --need job_search --wait")
    lines.append("  (with .venv/bin/eo, or `make run` in one terminal and these in another)")
    lines.append("")
    return "\n".join(lines)
