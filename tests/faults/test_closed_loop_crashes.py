"""Kill -9 the router again and again while the whole closed loop runs (DESIGN.md sections 3c
and 6), restarting it each time: OW sends referrals, providers answer them, then report on the
ones they accepted (in service then completed; not started; in service then ended early; in
service only), and OW cancels some referrals soon after their first offer and withdraws some
accepted ones. Nothing may be lost, nothing done twice, every accepted referral must end in at
most one closing state (or still be accepted or in service), and each site's ``reserved`` must
equal its places in use (open offers, accepted and in-service referrals), at every moment.

The parties act independently, as real ones do, so some of their messages cross; the router
handles whichever comes first and refuses the other, saying why (a refused entry in
``router.history``; a provider also gets a ``progress_refused`` or ``response_refused`` notice,
and stops what it had left to say about that referral). Expected (``harness.RACES``):

- OW withdraws while the provider reports: a report handled after the withdrawal is refused
  ("the referral is already withdrawn"), a withdrawal handled after a closing report too
  ("the referral is already completed", ``not_started``, ``ended_early``).
- OW cancels soon after the first offer while the provider answers it: handled after an
  acceptance, the cancel is a withdrawal (not a refusal); handled before the answer, the answer
  (accept or decline) is refused ("the referral is already cancelled"), and so is any report
  the provider sends before the notice reaches it. A cancel handled after the last site
  declined: "the referral is already unmatched".
- A router killed while it held a provider's acceptance or ``in_service`` report: JetStream
  redelivers it, and should the report that follows it be handled first, that one is refused
  ("cannot start a referral that is offered", "cannot complete a referral that is accepted").
  Rare with one router, since redeliveries come before new messages; with replicas, another
  one may handle the later report while the redelivery waits for its ack deadline.

Any other refusal is unexplained and fails the test.
"""

import asyncio
import random
import time
from collections.abc import Sequence
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from contracts.subjects import ROUTER_DURABLE, STREAM
from services.infra.embedded import Servers
from tests.faults.harness import (
    OwSimulator,
    PlacesWatcher,
    ProviderSimulator,
    RouterProcess,
    audit,
    audit_closed_loop,
    send_referrals,
    unhandled,
    wait_all_terminal,
    wait_settled,
)

pytestmark = pytest.mark.faults

REFERRALS = 500
KILLS = 8
SEED = 20261127
#: Referrals sent per second: the sending spans most of the kills, so routing, reports and
#: call-offs are all under way at each.
PER_SECOND = 30.0


async def in_flight(
    js: JetStreamContext,
    conn: asyncpg.Connection,
    providers: ProviderSimulator,
    ow: OwSimulator,
) -> tuple[bool, bool]:
    """Whether the router has messages in hand (fetched, not acked yet), and whether any
    progress report or call-off is among the messages not handled yet."""
    info = await js.consumer_info(STREAM, ROUTER_DURABLE)
    closing = [mid for mid, s in providers.sent.items() if s.kind == "progress"] + list(ow.sent)
    return info.num_ack_pending > 0, await unhandled(conn, closing) > 0


async def moment_to_kill(
    js: JetStreamContext,
    conn: asyncpg.Connection,
    providers: ProviderSimulator,
    ow: OwSimulator,
    within: float = 3.0,
) -> tuple[bool, bool]:
    """Wait (up to ``within`` s) for the router to hold messages, reports or call-offs among
    those not handled yet: a router that keeps up is idle most of the time, and killing an
    idle one tests little. What ``in_flight`` says at the moment chosen."""
    deadline = time.monotonic() + within
    while True:
        busy, closing = await in_flight(js, conn, providers, ow)
        if (busy and closing) or time.monotonic() > deadline:
            return busy, closing
        await asyncio.sleep(0.005)


async def test_kill_9_during_progress_and_withdrawals_loses_and_duplicates_nothing(
    servers: Servers, roomy_sites: str, nc: NatsClient, empty_stream: None, log_dir: Path
) -> None:
    router = RouterProcess(roomy_sites, servers.nats_url, log_dir)
    router.start()
    await router.ready()
    js = nc.jetstream()
    providers = ProviderSimulator(nc, accept=0.7, seed=SEED, progress=0.85, think=0.8)
    ow = OwSimulator(nc, cancel=0.12, withdraw=0.25, seed=SEED)
    parties: Sequence[ProviderSimulator | OwSimulator] = (providers, ow)
    places = PlacesWatcher(roomy_sites)
    for party in parties:
        await party.start()
    await places.start()
    started = time.monotonic()
    sending = asyncio.create_task(
        send_referrals(js, REFERRALS, per_second=PER_SECOND, rng=random.Random(SEED))
    )
    rng = random.Random(SEED + 1)
    busy_kills = closing_kills = 0
    conn = await asyncpg.connect(roomy_sites)
    try:
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            busy, closing = await moment_to_kill(js, conn, providers, ow)
            busy_kills += busy
            closing_kills += closing
            router.kill()
            router.start()
            await router.ready()
        requests = await sending
        try:
            await wait_all_terminal(roomy_sites, [r.referral_id for r in requests], within=120)
            drained = await wait_settled(roomy_sites, js, parties, within=120)
        except AssertionError as exc:  # say what the router was doing
            raise AssertionError(f"{exc}\nrouter log:\n{router.log_tail(60)}") from None
    finally:
        await conn.close()
        sending.cancel()
        await places.stop()
        for party in parties:
            await party.stop()
    seconds = time.monotonic() - started
    test = f"kill -9 x{KILLS}, closed loop"
    figures = await audit(
        test,
        roomy_sites,
        js,
        requests,
        seconds,
        note=f"{busy_kills} of {KILLS} kills with messages in hand, {closing_kills} with reports"
        f" or call-offs not yet handled; last {drained:.1f} s to settle",
    )
    loop = await audit_closed_loop(
        test,
        roomy_sites,
        requests,
        parties,
        seconds,
        note=f"places checked {places.samples} times, off {places.off} times;"
        f" dropped by the parties after a notice or a close {providers.dropped + ow.dropped}",
    )
    assert router.stop() == 0
    assert router.starts == KILLS + 1
    # Nothing lost, nothing twice, every accepted referral closed at most once.
    assert figures.lost == 0
    assert figures.duplicated == 0
    assert figures.terminal == REFERRALS
    # Every report and call-off handled as the referral's state says; refusals only by the
    # expected races.
    assert loop.mismatched == 0
    assert loop.unexplained == 0
    # Places in use equal the counter at every moment sampled, not only at the end.
    assert places.samples > 100
    assert places.off == 0, f"worst gap {places.worst}"
    assert providers.failed == ow.failed == 0
    # The run did what it claims: each kind of report and call-off happened, some raced, and
    # the kills hit a router with work in flight, reports and call-offs among it.
    assert min(loop.completed, loop.not_started, loop.ended_early) > 0, loop
    assert min(loop.withdrawn, loop.cancelled, loop.still_open) > 0, loop
    assert busy_kills >= KILLS // 2
    assert closing_kills >= KILLS // 2
