"""The `make run` demo: sample referrals from Lanark County, sample providers that answer and
report on only those, and a live view of every event on the stream (contract v1.1).

The story, on the seed data:

- Almonte goes to Canadian Career Academy, which accepts; the client starts (``in_service``)
  and finishes (``completed``, outcome ``employed``);
- Lanark goes to Community Employment Services, which declines; it is re-routed to Ontrac,
  which accepts (and keeps the place);
- a Smiths Falls postal code goes to Ontrac, which accepts, but the client never starts
  (``not_started``, ``could_not_contact``): the place is given back;
- Perth goes to Community Employment Services, which accepts; then OW withdraws it, and the
  provider gets a ``ProviderNotice`` on its own notice subject;
- a French-language referral from Pakenham finds no site that serves in French: ``unmatched``,
  with the explanation.

Then two more referrals, from Almonte and Carleton Place, are offered to Canadian Career
Academy (``PERSON_PROVIDER``) and left to a person: nothing here answers them; the person
accepts or declines them in the provider inbox (``eo run`` prints the tokens to sign in with)
and the live view prints what follows.

The places in use at the sites (the directory's ``reserved`` of ``capacity``) are printed
before and after. Every wait for the router is bounded (``STEP_S``): a router that does not
handle a step says so in the output, and the demo goes on.
"""

import asyncio
import contextlib
import functools
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from contracts.codec import decode_outbound
from contracts.common import ClientLocation
from contracts.directory import NearestSites
from contracts.referrals import (
    ROUTING_OUTCOMES,
    NoticeKind,
    OutboundEvent,
    ProgressCode,
    ProgressStatus,
    ProviderNotice,
    ReferralOffered,
    ReferralStatusChanged,
)
from contracts.subjects import (
    DEAD,
    NOTICE_PREFIX,
    OFFERED_PREFIX,
    STATUS_PREFIX,
    all_of,
    cancel_subject,
    notice_subject,
    offered_subject,
    progress_subject,
    requested_subject,
    response_subject,
    status_subject,
)
from services.client import (
    ClientError,
    build_request,
    cancellation,
    describe,
    directory_url as default_directory_url,
    get_bytes,
    get_json,
    progress,
    publish,
    response,
    short,
)
from services.infra.nats_auth import OPERATOR_USER, provider_user_name

T = TypeVar("T")

#: Seconds a sample party takes for each step, so a person can follow along.
THINK_S = 1.0
#: Seconds the demo waits for the router at each step before it says so and moves on.
STEP_S = 15.0
#: The OW system (and NATS user) the demo sends its referrals as.
DEMO_SYSTEM = "eo-demo"
#: Where the places in use are looked at: the sites nearest to it (all the seed's).
PLACES_NEAR = "Perth"
#: The sample provider a person plays in the browser: the referrals of ``for_a_person`` are
#: offered to its site in Carleton Place, and ``eo run`` prints a token to sign in as it.
PERSON_PROVIDER = "canadian-career-academy"
_HINT = f"is the router running, on contract v1.1 ({requested_subject(DEMO_SYSTEM)})?"


@dataclass(frozen=True)
class Progress:
    """The provider holding the referral reports on it."""

    status: ProgressStatus
    code: ProgressCode | None = None
    note: str | None = None


@dataclass(frozen=True)
class Withdraw:
    """The OW system calls the accepted referral off."""

    reason: str


@dataclass
class Sample:
    label: str
    location: ClientLocation
    needs: list[str]
    #: What should happen, in words.
    story: str
    language: str = "en"
    #: The sample provider's answers to this referral's offers, in order.
    answers: list[tuple[str, str | None]] = field(default_factory=list)
    #: What happens once it is accepted, in order.
    then: list[Progress | Withdraw] = field(default_factory=list)
    referral_id: uuid.UUID = field(default_factory=uuid.uuid4)
    #: Its status events, as the OW system received them.
    path: list[str] = field(default_factory=list)
    #: Why the story stopped short (the router did not do a step in time), if it did.
    stopped: str | None = None


def samples() -> list[Sample]:
    return [
        Sample(
            "Almonte (community)",
            ClientLocation(community="Almonte"),
            ["resume_writing", "interview_skills"],
            "accepted, in service, completed with an outcome",
            answers=[("accept", None)],
            then=[Progress("in_service"), Progress("completed", "employed")],
        ),
        Sample(
            "Lanark (community)",
            ClientLocation(community="Lanark"),
            ["employment_counselling", "job_search"],
            "declined, re-routed to the next site, accepted",
            answers=[("decline", "no intake until next month"), ("accept", None)],
        ),
        Sample(
            "Smiths Falls (postal code K7A 1A1)",
            ClientLocation(postal_code="K7A 1A1"),
            ["job_matching_placement"],
            "accepted, never started: the place is given back",
            answers=[("accept", None)],
            then=[Progress("not_started", "could_not_contact", "no answer to three calls")],
        ),
        Sample(
            "Perth (community)",
            ClientLocation(community="Perth"),
            ["job_search"],
            "accepted, then withdrawn by OW: the provider is told",
            answers=[("accept", None)],
            then=[Withdraw("the client moved out of the region")],
        ),
        Sample(
            "Pakenham, service in French (community)",
            ClientLocation(community="Pakenham"),
            ["employment_counselling"],
            "no site serves in French: unmatched, with the explanation",
            language="fr",
        ),
    ]


def for_a_person() -> list[Sample]:
    """The referrals left to a person, near ``PERSON_PROVIDER``'s site: nobody here answers."""
    return [
        Sample(
            "Almonte (community)",
            ClientLocation(community="Almonte"),
            ["resume_writing", "job_search"],
            "for you to accept or decline in the provider inbox",
        ),
        Sample(
            "Carleton Place (community)",
            ClientLocation(community="Carleton Place"),
            ["interview_skills", "employment_counselling"],
            "for you to accept or decline in the provider inbox",
        ),
    ]


class Seen:
    """What the demo's parties received: the OW system's status events, the providers' offers
    and notices, by referral. The samples wait on it, each wait bounded."""

    def __init__(self) -> None:
        self.status: defaultdict[uuid.UUID, list[ReferralStatusChanged]] = defaultdict(list)
        self.offers: defaultdict[uuid.UUID, list[ReferralOffered]] = defaultdict(list)
        self.notices: defaultdict[uuid.UUID, list[ProviderNotice]] = defaultdict(list)
        self._changed = asyncio.Condition()

    async def add(self, event: OutboundEvent) -> None:
        match event:
            case ReferralStatusChanged():
                self.status[event.referral_id].append(event)
            case ReferralOffered():
                self.offers[event.referral_id].append(event)
            case ProviderNotice():
                self.notices[event.referral_id].append(event)
            case _:
                return
        async with self._changed:
            self._changed.notify_all()

    async def until(self, found: Callable[[], T | None], within: float | None = None) -> T | None:
        """What ``found()`` gives once it is not None, or None after ``within`` seconds
        (default ``STEP_S``)."""

        async def wait() -> T:
            async with self._changed:
                while (value := found()) is None:
                    await self._changed.wait()
                return value

        try:
            return await asyncio.wait_for(wait(), STEP_S if within is None else within)
        except TimeoutError:
            return None

    def offer(self, referral_id: uuid.UUID, attempt: int) -> ReferralOffered | None:
        return next((o for o in self.offers[referral_id] if o.attempt == attempt), None)

    def status_in(
        self, referral_id: uuid.UUID, statuses: Collection[str]
    ) -> ReferralStatusChanged | None:
        return next((s for s in self.status[referral_id] if s.status in statuses), None)

    def notice(self, referral_id: uuid.UUID, kind: NoticeKind) -> ProviderNotice | None:
        return next((n for n in self.notices[referral_id] if n.kind == kind), None)

    def status_or_notice(
        self, referral_id: uuid.UUID, status: str, refused: NoticeKind
    ) -> ReferralStatusChanged | ProviderNotice | None:
        return self.status_in(referral_id, {status}) or self.notice(referral_id, refused)


@dataclass
class Cast:
    """The parties of the demo, each connected as its own NATS user."""

    ow: NatsClient
    providers: dict[str, NatsClient]
    seen: Seen
    say: Callable[[str], None]


async def play(sample: Sample, cast: Cast) -> None:
    """One sample's story: OW sends it, the provider answers, then reports or OW withdraws.

    Each step waits for the router at most ``STEP_S``; when it does not come, the sample says
    why in ``stopped`` and its story ends there.
    """
    rid, ref, seen, say = sample.referral_id, short(sample.referral_id), cast.seen, cast.say
    await send(sample, cast)
    accepted: ReferralOffered | None = None
    for attempt, (decision, reason) in enumerate(sample.answers, 1):
        offer = await seen.until(functools.partial(seen.offer, rid, attempt))
        if offer is None:
            sample.stopped = f"no offer {attempt} reached a provider within {STEP_S:.0f} s; {_HINT}"
            return
        provider = cast.providers.get(offer.provider_id)
        if provider is None:
            sample.stopped = f"offered to {offer.provider_id}, which the demo does not act for"
            return
        await asyncio.sleep(THINK_S)
        why = f" ({reason})" if reason else ""
        say(f"  [provider {offer.provider_id}] {decision}s referral {ref}{why}")
        answer = response(rid, offer.offer_id, decision, reason)
        await publish(provider, response_subject(offer.provider_id), answer)
        accepted = offer if decision == "accept" else accepted
    outcome = await seen.until(functools.partial(seen.status_in, rid, ROUTING_OUTCOMES))
    if outcome is None:
        sample.stopped = f"routing did not end within {STEP_S:.0f} s; {_HINT}"
        return
    if outcome.status != "accepted" or accepted is None:
        return
    for step in sample.then:
        await asyncio.sleep(THINK_S)
        if isinstance(step, Progress):
            sample.stopped = await report(step, accepted, cast)
        else:
            sample.stopped = await withdraw(step, accepted, cast)
        if sample.stopped:
            return


async def send(sample: Sample, cast: Cast) -> None:
    """The OW system sends ``sample``'s referral."""
    request = build_request(
        location=sample.location,
        needs=sample.needs,
        language=sample.language,
        referral_id=sample.referral_id,
        system=DEMO_SYSTEM,
        office_id="lanark",
    )
    cast.say(
        f"  [OW {DEMO_SYSTEM}] referral {short(sample.referral_id)} from {sample.label}, "
        f"needs {', '.join(sample.needs)}, language {sample.language}"
    )
    await publish(cast.ow, requested_subject(DEMO_SYSTEM), request)


async def leave_to_a_person(sample: Sample, cast: Cast) -> ReferralOffered | None:
    """Send ``sample`` and wait for its first offer, which the demo does not answer."""
    try:
        await send(sample, cast)
    except (ClientError, msgspec.ValidationError) as exc:
        sample.stopped = str(exc)
        return None
    offer = await cast.seen.until(functools.partial(cast.seen.offer, sample.referral_id, 1))
    if offer is None:
        sample.stopped = f"no offer reached a provider within {STEP_S:.0f} s; {_HINT}"
    return offer


async def report(step: Progress, offer: ReferralOffered, cast: Cast) -> str | None:
    """The provider holding ``offer``'s referral reports ``step``; why not done, or None."""
    rid, provider_id, seen = offer.referral_id, offer.provider_id, cast.seen
    code = f" ({step.code})" if step.code else ""
    cast.say(f"  [provider {provider_id}] reports referral {short(rid)} {step.status}{code}")
    message = progress(rid, step.status, code=step.code, note=step.note)
    await publish(cast.providers[provider_id], progress_subject(provider_id), message)
    found = await seen.until(
        functools.partial(seen.status_or_notice, rid, step.status, "progress_refused")
    )
    if found is None:
        return (
            f"the router did not confirm {step.status} within {STEP_S:.0f} s (does it handle "
            f"{progress_subject(provider_id)} yet?)"
        )
    if isinstance(found, ProviderNotice):
        return f"the router refused the {step.status} report: {found.reason}"
    return None


async def withdraw(step: Withdraw, offer: ReferralOffered, cast: Cast) -> str | None:
    """OW withdraws ``offer``'s accepted referral; the provider is told. Why not done, or None."""
    rid, ref, seen = offer.referral_id, short(offer.referral_id), cast.seen
    cast.say(f"  [OW {DEMO_SYSTEM}] withdraws referral {ref} ({step.reason})")
    await publish(cast.ow, cancel_subject(DEMO_SYSTEM), cancellation(rid, step.reason))
    closed = await seen.until(functools.partial(seen.status_in, rid, {"withdrawn"}))
    if closed is None:
        return f"the router did not report it withdrawn within {STEP_S:.0f} s"
    told = await seen.until(functools.partial(seen.notice, rid, "referral_withdrawn"))
    if told is None:
        return f"{offer.provider_id} got no notice on {notice_subject(offer.provider_id)}"
    where = notice_subject(offer.provider_id)
    cast.say(f"  [provider {offer.provider_id}] told on {where}: {ref} {told.kind} ({told.reason})")
    return None


#: Places in use at a site: (reserved, capacity), by site id.
Places = dict[str, tuple[int, int]]


async def site_places(directory_url: str) -> Places | str:
    """The places in use at the sites nearest to ``PLACES_NEAR``, or why they are unknown.

    From the directory's public search (the office finder's), so the demo needs no token.
    """
    url = f"{directory_url}/api/v1/sites/nearest?community={PLACES_NEAR}&limit=10"
    try:
        body = await asyncio.to_thread(get_bytes, url, server="the directory")
        found = msgspec.json.decode(body, type=NearestSites)
    except (ClientError, msgspec.DecodeError) as exc:
        return f"places in use unknown: {exc}"
    return {match.site.id: (match.site.reserved, match.site.capacity) for match in found.results}


def show_places(places: Places | str, after: Places | str | None = None) -> list[str]:
    if isinstance(places, str):
        return [f"  {places}"]
    title = "before -> after the demo" if after is not None else "before the demo"
    lines = [f"  Places in use at the sites near {PLACES_NEAR} (reserved of capacity), {title}:"]
    width = max((len(site) for site in places), default=0)
    for site, (reserved, capacity) in places.items():
        if after is None:
            lines.append(f"      {site:<{width}}  {reserved} of {capacity}")
        elif isinstance(after, str) or site not in after:
            lines.append(f"      {site:<{width}}  {reserved} -> ? of {capacity}")
        else:
            lines.append(f"      {site:<{width}}  {reserved} -> {after[site][0]} of {capacity}")
    if isinstance(after, str):
        lines.append(f"  (after: {after})")
    return lines


async def run_demo(
    connect: Callable[[str], Awaitable[NatsClient]],
    router_url: str,
    *,
    providers: Sequence[str],
    directory_url: str | None = None,
    sign_in: str | None = None,
    ow_token: str | None = None,
    say: Callable[[str], None] = print,
) -> list[Sample]:
    """Send the samples, play their stories, print every event; leave two referrals to a
    person; keep the live view after.

    Each party uses its own NATS user (``connect(user)`` opens a connection as that user): the
    OW side is the ``eo-demo`` system, which reads its own status events; each of
    ``providers`` answers its own offers and reads its own notices as ``provider-<id>``; the
    live view reads every event as the operator. ``directory_url`` (default: where ``eo run``
    serves it, from the environment) gives the places in use. Once every story has ended (or
    stopped, each wait being bounded) the summary is printed. Then the referrals of
    ``for_a_person`` are sent and left unanswered, and where to answer them is printed, with
    ``sign_in`` (how to sign in to the pages), if given. With ``ow_token`` (the ``eo-demo``
    system's token), referrals an earlier run left open are called off first, so a kept state
    folder does not fill the sample sites' places run after run. The live view keeps printing events
    (of the person's answers, and of referrals sent with ``eo referral send``) until the task
    is cancelled.
    """
    plan = samples()
    by_id = {sample.referral_id: sample for sample in plan}
    seen = Seen()
    connections: list[NatsClient] = []
    directory = directory_url or default_directory_url()

    async def on_event(msg: Msg) -> None:  # the operator's live view
        try:
            say(f"  [stream] {describe(decode_outbound(msg.data), msg.subject)}")
        except msgspec.DecodeError as exc:
            say(f"  [stream] {msg.subject}: not a message of this contract ({exc})")

    async def on_own(msg: Msg) -> None:  # what a party receives on its own subjects
        with contextlib.suppress(msgspec.DecodeError):
            event = decode_outbound(msg.data)
            await seen.add(event)
            if isinstance(event, ReferralStatusChanged) and event.referral_id in by_id:
                by_id[event.referral_id].path.append(describe(event).split("  ", 1)[1])

    try:
        watch = await connect(OPERATOR_USER)
        connections.append(watch)
        for subject in (all_of(p) for p in (STATUS_PREFIX, OFFERED_PREFIX, NOTICE_PREFIX)):
            await watch.subscribe(subject, cb=on_event)
        await watch.subscribe(DEAD, cb=on_event)
        acting: dict[str, NatsClient] = {}
        for provider_id in providers:
            provider = await connect(provider_user_name(provider_id))
            connections.append(provider)
            acting[provider_id] = provider
            await provider.subscribe(offered_subject(provider_id), cb=on_own)
            await provider.subscribe(notice_subject(provider_id), cb=on_own)
        ow = await connect(DEMO_SYSTEM)
        connections.append(ow)
        await ow.subscribe(status_subject(DEMO_SYSTEM), cb=on_own)
        for connection in connections:
            await connection.flush()  # subscribed before the first request goes out
        if ow_token is not None and (note := await call_off_leftovers(ow, router_url, ow_token)):
            say(note)
        before = await site_places(directory)
        say("")
        say("\n".join(show_places(before)))
        say("\n  Demo: sending sample referrals (sample providers answer only these).")
        cast = Cast(ow=ow, providers=acting, seen=seen, say=say)
        await asyncio.gather(*(_play_safely(sample, cast) for sample in plan))
        after = await site_places(directory)
        say(summary(plan, router_url, before, after))
        waiting = for_a_person()
        say(f"  Demo: sending {len(waiting)} referrals for you to answer in the browser.")
        offers = await asyncio.gather(*(leave_to_a_person(sample, cast) for sample in waiting))
        say(waiting_for_you(list(zip(waiting, offers, strict=True)), router_url, sign_in))
        await asyncio.Event().wait()  # keep the live view until cancelled
    finally:
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.close()
    return plan


#: The states of a referral that still holds (or may still take) a place at a site.
OPEN_STATES = ("received", "offered", "accepted", "in_service")


async def call_off_leftovers(ow: NatsClient, router_url: str, ow_token: str) -> str | None:
    """Cancel or withdraw every ``eo-demo`` referral still open (an earlier run's), as the OW
    system does: listed through the router's API with its token, called off on its cancel
    subject. What was done, or None when there was nothing to do."""
    query = "&".join(f"status={status}" for status in OPEN_STATES)
    try:
        page = await asyncio.to_thread(
            get_json,
            f"{router_url}/api/v1/referrals?{query}&limit=200",
            server="the router",
            token=ow_token,
        )
        open_ids = [uuid.UUID(item["referral_id"]) for item in page["items"]]
        for referral_id in open_ids:
            reason = "a new make run started: the earlier run's referrals are called off"
            await publish(ow, cancel_subject(DEMO_SYSTEM), cancellation(referral_id, reason))
    except ClientError as exc:
        return f"  Demo: could not call off an earlier run's referrals ({exc})"
    if not open_ids:
        return None
    return (
        f"  Demo: called off {len(open_ids)} referral{'' if len(open_ids) == 1 else 's'} an "
        "earlier run left open, giving their places back."
    )


async def _play_safely(sample: Sample, cast: Cast) -> None:
    try:
        await play(sample, cast)
    except (ClientError, msgspec.ValidationError) as exc:  # one story failing ends only it
        sample.stopped = str(exc)


def summary(plan: list[Sample], router_url: str, before: Places | str, after: Places | str) -> str:
    lines = ["", "  Paths of the sample referrals:"]
    for sample in plan:
        lines.append(f"  {sample.referral_id}  from {sample.label}: {sample.story}")
        lines.extend(f"      {step}" for step in sample.path)
        if sample.stopped:
            lines.append(f"      (the demo stopped here: {sample.stopped})")
    lines.append("")
    lines.extend(show_places(before, after))
    lines.append("")
    lines.append("  Full history: eo referral show <referral_id>   (or, with the admin token:")
    lines.append(
        f"    curl -H 'Authorization: Bearer <admin token>' {router_url}/api/v1/referrals/<id>)"
    )
    lines.append("  Send your own: eo referral send --community Perth --need job_search --wait")
    lines.append(
        "  then, as its provider: eo referral respond --provider community-employment-services "
        "--referral <id> --accept"
    )
    lines.append(
        "                         eo referral progress --provider community-employment-services "
        "--referral <id> --status in_service"
    )
    lines.append("  or, as OW: eo referral withdraw <id> --reason 'the client found work'")
    lines.append("  (with .venv/bin/eo, or `make run` in one terminal and these in another)")
    lines.append("")
    return "\n".join(lines)


def waiting_for_you(
    left: list[tuple[Sample, ReferralOffered | None]], router_url: str, sign_in: str | None
) -> str:
    """Where the person finds the referrals left to them, and each one's offer."""
    mine = sum(1 for _, offer in left if offer is not None and offer.provider_id == PERSON_PROVIDER)
    lines = [
        "",
        f"  Waiting for you: {mine} new offer{'' if mine == 1 else 's'} in {PERSON_PROVIDER}'s "
        f"inbox, {router_url}/inbox",
        "  - accept or decline them there (the demo's sample providers leave them to you); the",
        f"  tracker {router_url}/tracker shows them as {DEMO_SYSTEM} sees them. What you do",
        "  prints below as it happens.",
    ]
    for sample, offer in left:
        needs = ", ".join(sample.needs)
        lines.append(f"  {sample.referral_id}  from {sample.label}, needs {needs}")
        if offer is None:
            lines.append(f"      (not offered: {sample.stopped})")
            continue
        lines.append(
            f"      offered {offer.site_id} ({offer.distance_km:.1f} km), "
            f"answer by {offer.expires_at:%Y-%m-%d %H:%M}Z"
        )
        if offer.provider_id != PERSON_PROVIDER:
            lines.append(
                f"      (to {offer.provider_id}, not {PERSON_PROVIDER}: sign in with its own "
                f"token, eo token issue --role provider --provider {offer.provider_id} --name ...)"
            )
    if sign_in:
        lines.append(f"  {sign_in}")
    lines.append("")
    return "\n".join(lines)
