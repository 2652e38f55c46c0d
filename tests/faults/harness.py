"""What the fault-injection tests share: router processes to kill, a provider simulator, the
load, and the audit that counts lost and duplicated outcomes from the database and the stream.
"""

import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from contracts.codec import decode_outbound, encode
from contracts.referrals import (
    TERMINAL_STATUSES,
    ReferralOffered,
    ReferralRequested,
    ReferralStatusChanged,
)
from contracts.subjects import OFFERED_ALL, REQUESTED, STATUS, STREAM, response_subject
from services.infra.embedded import free_port, terminate
from tests.referrals import answer, make_request

EO = Path(sys.executable).parent / "eo"

#: Router settings for fault runs: fast loops, fast redelivery, quiet logs.
FAST = {
    "ROUTER_SWEEP_INTERVAL_S": "0.2",
    "ROUTER_FETCH_TIMEOUT_S": "0.2",
    "ROUTER_RELAY_GRACE_S": "0.5",
    "ROUTER_BACKOFF_S": "0.5,1,2",
    "EO_LOG_LEVEL": "warning",
}


@dataclass
class RouterProcess:
    """One ``eo router`` process; ``kill()`` is SIGKILL: no drain, no goodbye."""

    database_url: str
    nats_url: str
    log_dir: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: Any = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ROUTER_", "EO_"))}
        env |= FAST | self.extra_env
        env |= {
            "DATABASE_URL": self.database_url,
            "NATS_URL": self.nats_url,
            "ROUTER_PORT": str(self.port),
        }
        self.starts += 1
        self._close_log()
        self._log = (self.log_dir / f"router-{self.port}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            [str(EO), "router"], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    async def ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with httpx.AsyncClient() as http:
            while True:
                assert self.process is not None
                assert self.process.poll() is None, f"router exited:\n{self.log_tail()}"
                try:
                    reply = await http.get(f"http://127.0.0.1:{self.port}/ready", timeout=1)
                    if reply.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "router not ready"
                await asyncio.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        path = self.log_dir / f"router-{self.port}-{self.starts}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {path})"

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self._close_log()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        code = terminate(self.process, timeout=30)
        self._close_log()
        return code


class ProviderSimulator:
    """Every provider at once, as a real integration would: a JetStream consumer on its offers
    (so it sees each stored offer once), answering each with accept or decline.
    """

    def __init__(self, nc: NatsClient, *, accept: float = 0.7, seed: int = 7) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.accept = accept
        self.random = random.Random(seed)
        self.offers: list[ReferralOffered] = []
        self.answered = 0
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self.name = f"sim-{uuid.uuid4().hex[:6]}"

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=self.name,
            filter_subject=OFFERED_ALL,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=5,
        )
        sub = await self.js.pull_subscribe(
            OFFERED_ALL, durable=self.name, stream=STREAM, config=config
        )
        self._task = asyncio.create_task(self._run(sub))

    async def _run(self, sub: Any) -> None:
        while not self._stop.is_set():
            try:
                msgs = await sub.fetch(100, timeout=0.5)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, OSError):
                await asyncio.sleep(0.2)
                continue
            for msg in msgs:
                offer = decode_outbound(msg.data)
                assert isinstance(offer, ReferralOffered)
                self.offers.append(offer)
                decision = "accept" if self.random.random() < self.accept else "decline"
                reply = answer(offer, decision, None if decision == "accept" else "full")
                headers = {"Nats-Msg-Id": str(reply.message_id)}
                try:
                    await self.js.publish(
                        response_subject(offer.provider_id), encode(reply), headers=headers
                    )
                    await msg.ack()
                    self.answered += 1
                except (nats.errors.Error, OSError, TimeoutError):
                    await msg.nak(delay=0.5)  # answer again later, like a real provider

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


async def send_referrals(js: JetStreamContext, count: int) -> list[ReferralRequested]:
    """Publish ``count`` requests from Almonte as fast as JetStream takes them."""
    requests = [make_request() for _ in range(count)]
    for request in requests:
        await js.publish_async(
            REQUESTED, encode(request), headers={"Nats-Msg-Id": str(request.message_id)}
        )
    await js.publish_async_completed()
    return requests


async def wait_all_terminal(
    database_url: str, referral_ids: Iterable[uuid.UUID], within: float
) -> float:
    """Seconds until every referral is in a terminal state (AssertionError after ``within``)."""
    ids = list(referral_ids)
    started = time.monotonic()
    conn = await asyncpg.connect(database_url)
    try:
        while True:
            done = await conn.fetchval(
                "SELECT count(*) FROM router.referral WHERE id = ANY($1::uuid[])"
                " AND status = ANY($2::text[])",
                ids,
                list(TERMINAL_STATUSES),
            )
            if done == len(ids):
                return time.monotonic() - started
            if time.monotonic() - started >= within:
                stuck = await conn.fetch(
                    "SELECT status, count(*) AS n FROM router.referral"
                    " WHERE id = ANY($1::uuid[]) GROUP BY status",
                    ids,
                )
                states = {row["status"]: row["n"] for row in stuck}
                raise AssertionError(f"{len(ids) - done} not terminal after {within} s: {states}")
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


class Figures(msgspec.Struct):
    """What a fault run printed: the acceptance criteria are lost == 0 and duplicated == 0."""

    test: str
    sent: int
    terminal: int
    lost: int
    duplicated: int
    accepted: int
    unmatched: int
    offers: int
    seconds: float
    note: str = ""

    def line(self) -> str:
        return (
            f"| {self.test} | {self.sent} | {self.terminal} | {self.lost} | {self.duplicated} "
            f"| {self.accepted} | {self.unmatched} | {self.offers} | {self.seconds:.1f} "
            f"| {self.note} |"
        )


HEADER = (
    "| test | sent | terminal | lost | duplicated | accepted | unmatched | offers | s | note |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


async def _stream_messages(js: JetStreamContext, subject: str) -> list[Any]:
    """Every message the stream holds on ``subject``, decoded (an ordered read, no ack)."""
    name = f"audit-{uuid.uuid4().hex[:8]}"
    sub = await js.pull_subscribe(
        subject,
        durable=name,
        stream=STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.NONE),
    )
    found: list[Any] = []
    unavailable = 0
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=2.0)
            except (nats.errors.TimeoutError, TimeoutError):
                # Nothing left. (nats-py raises the bare TimeoutError when its no-wait probe
                # found no messages but answered so late that no time was left to wait.)
                break
            except nats.js.errors.ServiceUnavailableError:
                # On a cluster the new consumer may not have its leader yet: ask again.
                unavailable += 1
                assert unavailable < 50, "the audit consumer never became available"
                await asyncio.sleep(0.2)
                continue
            found.extend(decode_outbound(m.data) for m in msgs)
    finally:
        await js.delete_consumer(STREAM, name)
    return found


async def audit(
    test: str,
    database_url: str,
    js: JetStreamContext,
    requests: list[ReferralRequested],
    seconds: float,
    note: str = "",
) -> Figures:
    """Count outcomes from the database and from the stream itself.

    lost: a referral sent but with no terminal state. duplicated: a referral with more than
    one terminal status event in the stream, an offer (referral, attempt) stored twice, two
    offers open at once, or a site holding more places than its accepted referrals.
    """
    ids = [r.referral_id for r in requests]
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT id, status FROM router.referral WHERE id = ANY($1::uuid[])", ids
        )
        offers = await conn.fetchval(
            "SELECT count(*) FROM router.offer WHERE referral_id = ANY($1::uuid[])", ids
        )
        open_offers = await conn.fetchval("SELECT count(*) FROM router.offer WHERE state = 'open'")
        places = await conn.fetch(
            "SELECT s.id, s.reserved, (SELECT count(*) FROM router.offer o"
            " WHERE o.site_id = s.id AND o.state IN ('accepted', 'open')) AS held"
            " FROM directory.site s"
        )
    finally:
        await conn.close()
    status = {row["id"]: row["status"] for row in rows}
    terminal = [rid for rid in ids if status.get(rid) in TERMINAL_STATUSES]
    lost = len(ids) - len(terminal)

    events = await _stream_messages(js, STATUS)
    offered = await _stream_messages(js, OFFERED_ALL)
    wanted = set(ids)
    finals = collections.Counter(
        e.referral_id
        for e in events
        if isinstance(e, ReferralStatusChanged)
        and e.referral_id in wanted
        and e.status in TERMINAL_STATUSES
    )
    per_attempt = collections.Counter(
        (o.referral_id, o.attempt) for o in offered if isinstance(o, ReferralOffered)
    )
    duplicated = (
        sum(1 for n in finals.values() if n > 1)
        + sum(1 for n in per_attempt.values() if n > 1)
        + sum(1 for p in places if p["reserved"] != p["held"])
    )
    missing_final = sum(1 for rid in terminal if finals[rid] == 0)
    counts = collections.Counter(status.values())
    figures = Figures(
        test=test,
        sent=len(ids),
        terminal=len(terminal),
        lost=lost + missing_final,
        duplicated=duplicated,
        accepted=counts["accepted"],
        unmatched=counts["unmatched"],
        offers=offers,
        seconds=seconds,
        note=note + (f"; {open_offers} offers still open" if open_offers else ""),
    )
    print(f"\n{HEADER}\n{figures.line()}", flush=True)
    return figures
