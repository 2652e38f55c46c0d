"""The cross-party matrix over NATS (issue 4, Security; DESIGN.md sections 3 and 7, contract
v1.1).

Provider A's credentials are tried on provider B's subjects (offers, notices, responses,
progress) and consumer, on the stream and consumer management API and on the OW subjects; OW
system A's on OW system B's subjects (status, requests, cancels) and consumer ``ow-<B>``, and
on the providers' subjects; OW system B's on A's. nats-server must refuse each attempt (a
permissions violation), and the router must never see what was refused: the stream holds no
such message, the router recorded nothing, the referral is still where it was. What NATS lets
through on a party's own subject about another party's referral (A answering or reporting on
B's, OW2 cancelling OW's) the router refuses itself, and says why. Every user's own operations
are tried too (the positive controls), so a configuration that refuses everything fails this
test as surely as one that allows too much. The table of attempts and outcomes is printed
(``make test-faults`` runs pytest with ``-s``). Real nats-server and PostgreSQL processes,
loopback only.
"""

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import asyncpg
import msgspec
import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, ConsumerInfo

from contracts.codec import decode_outbound, encode
from contracts.common import ClientLocation
from contracts.referrals import (
    ProviderNotice,
    ReferralOffered,
    ReferralRequested,
    ReferralStatusChanged,
    Source,
)
from contracts.subjects import (
    DEAD,
    NOTICE_PREFIX,
    OFFERED_PREFIX,
    PROGRESS_PREFIX,
    RESPONSE_PREFIX,
    STATUS_PREFIX,
    STREAM,
    all_of,
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
from services.infra.embedded import Servers
from services.infra.nats_auth import OPERATOR_USER, provider_user_name
from services.router.settings import RouterSettings
from tests.referrals import CCA, CES, Observer, answer, cancel, make_request, progress
from tests.waits import until

pytestmark = pytest.mark.faults

A, B = CCA, CES  # provider A (canadian-career-academy) tries provider B's things
OW, OW2 = "ow-lanark", "eo-cli"  # OW system A tries OW system B's things, and B A's
#: How long a JetStream request waits: a refused one never gets an answer.
JS_TIMEOUT = 0.5

Expect = Literal["refused", "allowed"]


@dataclass
class Party:
    """One NATS user's connection, with the errors the server sent it."""

    label: str
    user: str
    nc: NatsClient
    errors: list[str] = field(default_factory=list)

    @property
    def js(self) -> Any:
        return self.nc.jetstream(timeout=JS_TIMEOUT)


@dataclass
class Row:
    who: str
    attempt: str
    expected: Expect
    outcome: str

    @property
    def ok(self) -> bool:
        if self.expected == "refused":
            return self.outcome.startswith("refused")
        return self.outcome.startswith("allowed")


@dataclass
class Matrix:
    rows: list[Row] = field(default_factory=list)

    async def attempt(
        self,
        party: Party,
        attempt: str,
        operation: Callable[[], Awaitable[object]],
        *,
        expect: Expect,
        subject: str,
    ) -> object:
        """Run ``operation`` as ``party``: refused when the server reports a permissions
        violation on ``subject``; allowed when it worked without one."""
        seen = len(party.errors)
        result: object = None
        failure: BaseException | None = None
        try:
            result = await operation()
        except (nats.errors.Error, TimeoutError) as exc:
            failure = exc
        # nats-py writes a flush's PING straight to the socket, possibly before commands still
        # in its buffer: the second PING goes out after them, so its PONG comes after the
        # server's answer to everything this attempt sent.
        await party.nc.flush(timeout=5)
        await party.nc.flush(timeout=5)

        def violations() -> list[str]:
            return [
                error
                for error in party.errors[seen:]
                if "permissions violation" in error.lower() and subject.lower() in error.lower()
            ]

        for _ in range(100 if expect == "refused" else 10):  # belt and braces: 2 s / 0.2 s
            if violations():
                break
            await asyncio.sleep(0.02)
        if found := violations():
            violation = found[0].removeprefix("nats: ")
            outcome = "refused: " + violation.replace("permissions violation for ", "violation, ")
        elif failure is not None:
            outcome = f"failed: {failure!r}"
        else:
            outcome = "allowed"
        self.rows.append(Row(party.label, attempt, expect, outcome))
        return result

    def note(self, who: str, attempt: str, expected: Expect, ok: bool, outcome: str) -> None:
        """A row checked by other means (the router's records, the stream's content)."""
        prefix = expected if ok else ("allowed" if expected == "refused" else "refused")
        self.rows.append(Row(who, attempt, expected, f"{prefix}: {outcome}"))

    def table(self) -> str:
        lines = [
            "",
            f"NATS cross-party matrix: A = {provider_user_name(A)}, B = {provider_user_name(B)}, "
            f"OW = {OW}, OW2 = {OW2} (nats-py lower-cases the server's errors)",
            "| # | who | attempt | expected | outcome | ok |",
            "|---|---|---|---|---|---|",
        ]
        for number, row in enumerate(self.rows, 1):
            outcome = row.outcome if len(row.outcome) <= 110 else row.outcome[:107] + "..."
            mark = "yes" if row.ok else "NO"
            lines.append(
                f"| {number} | {row.who} | {row.attempt} | {row.expected} | {outcome} | {mark} |"
            )
        refused = sum(row.expected == "refused" for row in self.rows)
        lines.append(
            f"{len(self.rows)} attempts: {refused} expected refused, "
            f"{len(self.rows) - refused} expected allowed; "
            f"{sum(not row.ok for row in self.rows)} wrong"
        )
        return "\n".join(lines)


async def stored_for(js: Any, durable: str, count: int) -> Any:
    """The consumer's info once ``count`` messages wait in it. A core subscription sees a
    message when it is published; JetStream stores an atomic batch when its last message
    arrives, a moment later."""

    async def holding() -> Any:
        info = await js.consumer_info(STREAM, durable)
        return info if info.num_pending >= count else None

    return await until(holding, within=5, what=f"{count} messages pending in {durable}")


@pytest.fixture
async def parties(servers: Servers) -> AsyncIterator[dict[str, Party]]:
    users = {"A": provider_user_name(A), "B": provider_user_name(B), "OW": OW, "OW2": OW2}
    opened: dict[str, Party] = {}
    try:
        for key, user in users.items():
            party = Party(key, user, NatsClient())

            async def on_error(exc: Exception, party: Party = party) -> None:
                party.errors.append(str(exc))

            await party.nc.connect(
                **servers.nats_connect_options(user), error_cb=on_error, name=f"matrix {user}"
            )
            opened[key] = party
        yield opened
    finally:
        for party in opened.values():
            await party.nc.close()


class Inbox:
    """Messages a core subscription received."""

    def __init__(self) -> None:
        self.messages: list[Msg] = []

    async def receive(self, msg: Msg) -> None:
        self.messages.append(msg)

    def offers(self) -> list[ReferralOffered]:
        decoded = [decode_outbound(m.data) for m in self.messages]
        return [m for m in decoded if isinstance(m, ReferralOffered)]

    def notices(self) -> list[ProviderNotice]:
        decoded = [decode_outbound(m.data) for m in self.messages]
        return [m for m in decoded if isinstance(m, ProviderNotice)]

    def statuses(self, referral_id: uuid.UUID) -> list[str]:
        decoded = [decode_outbound(m.data) for m in self.messages]
        return [
            m.status
            for m in decoded
            if isinstance(m, ReferralStatusChanged) and m.referral_id == referral_id
        ]


def from_system(request: ReferralRequested, system: str) -> ReferralRequested:
    """``request`` as OW system ``system`` sends it (its ``source.system`` is the subject's)."""
    return msgspec.structs.replace(request, source=Source(system=system, office_id="lanark"))


def filters(info: ConsumerInfo) -> list[str]:
    """A consumer's filter subjects (nats-server keeps a list of one as ``filter_subject``)."""
    config = info.config
    return list(
        config.filter_subjects or ([config.filter_subject] if config.filter_subject else [])
    )


async def test_cross_party_matrix_over_nats(
    servers: Servers,
    router: Any,
    observer: Observer,
    nc: NatsClient,
    router_settings: RouterSettings,
    parties: dict[str, Party],
) -> None:
    started = time.perf_counter()
    matrix = Matrix()
    a, b, ow, ow2 = parties["A"], parties["B"], parties["OW"], parties["OW2"]
    operator_js = nc.jetstream()
    db = await asyncpg.connect(router_settings.database_url)

    async def processed(message_id: uuid.UUID) -> Any:
        return await db.fetchrow(
            "SELECT subject, outcome, reason FROM router.processed WHERE message_id = $1",
            message_id,
        )

    async def in_stream(subject: str) -> bool:
        try:
            await operator_js.get_last_msg(STREAM, subject)
        except nats.js.errors.NotFoundError:
            return False
        return True

    try:
        # -- nothing sent yet: the router has made no party consumer ---------------------------
        names = [c.name for c in await operator_js.consumers_info(STREAM)]
        matrix.note(
            "router",
            "no provider or OW consumer before the first message it would hold",
            "allowed",
            not any(n.startswith(("provider-", "ow-")) for n in names),
            f"consumers {sorted(names)}",
        )

        # -- logins --------------------------------------------------------------------------
        address = servers.nats_connect_options(OPERATOR_USER)["servers"]
        b_login = servers.nats_connect_options(provider_user_name(B))
        a_login = servers.nats_connect_options(provider_user_name(A))
        for who, options in [
            ("anonymous", {"servers": address}),
            (
                "B's user, A's password",
                {"servers": address, "user": b_login["user"], "password": a_login["password"]},
            ),
        ]:
            stranger = NatsClient()

            async def quiet(_: Exception) -> None:
                pass

            try:
                await stranger.connect(
                    **options, allow_reconnect=False, connect_timeout=2, error_cb=quiet
                )
                outcome = "allowed: connected"
            except nats.errors.Error as exc:
                outcome = f"refused: {exc}".replace("nats: ", "")
            finally:
                await stranger.close()
            matrix.rows.append(Row(who, "connect", "refused", outcome))

        # -- subscriptions: own subjects work, others' are refused ---------------------------
        a_own, b_own, ow_status, ow2_status = Inbox(), Inbox(), Inbox(), Inbox()
        stolen = Inbox()
        subscriptions: list[tuple[Party, str, Inbox, Expect]] = [
            (a, offered_subject(A), a_own, "allowed"),
            (a, notice_subject(A), a_own, "allowed"),
            (b, offered_subject(B), b_own, "allowed"),
            (b, notice_subject(B), b_own, "allowed"),
            (ow, status_subject(OW), ow_status, "allowed"),
            (ow2, status_subject(OW2), ow2_status, "allowed"),
            (a, offered_subject(B), stolen, "refused"),
            (a, notice_subject(B), stolen, "refused"),
            (a, all_of(OFFERED_PREFIX), stolen, "refused"),
            (a, all_of(NOTICE_PREFIX), stolen, "refused"),
            (a, "referral.>", stolen, "refused"),
            (a, all_of(RESPONSE_PREFIX), stolen, "refused"),
            (a, all_of(PROGRESS_PREFIX), stolen, "refused"),
            (a, status_subject(OW), stolen, "refused"),
            (a, "_INBOX.>", stolen, "refused"),
            (a, f"_INBOX_{provider_user_name(B)}.>", stolen, "refused"),
            (a, "$JS.EVENT.ADVISORY.>", stolen, "refused"),
            (ow, status_subject(OW2), stolen, "refused"),
            (ow, all_of(STATUS_PREFIX), stolen, "refused"),
            (ow, requested_subject(OW2), stolen, "refused"),
            (ow, cancel_subject(OW2), stolen, "refused"),
            (ow, f"_INBOX_{OW2}.>", stolen, "refused"),
            (ow, all_of(OFFERED_PREFIX), stolen, "refused"),
            (ow, offered_subject(A), stolen, "refused"),
            (ow, notice_subject(A), stolen, "refused"),
            (ow, all_of(RESPONSE_PREFIX), stolen, "refused"),
            (ow, DEAD, stolen, "refused"),
            (ow2, status_subject(OW), stolen, "refused"),
        ]
        for party, subject, inbox, expect in subscriptions:
            await matrix.attempt(
                party,
                f"subscribe {subject}",
                functools.partial(party.nc.subscribe, subject, cb=inbox.receive),
                expect=expect,
                subject=subject,
            )

        # -- OW sends a referral that goes to B -------------------------------------------------
        to_b = from_system(
            make_request(location=ClientLocation(community="Perth"), needs=["job_search"]), OW
        )
        await matrix.attempt(
            ow,
            f"JetStream publish {requested_subject(OW)} (PubAck on its own inbox)",
            lambda: ow.js.publish(requested_subject(OW), encode(to_b), timeout=5),
            expect="allowed",
            subject=requested_subject(OW),
        )
        offer = await observer.until_offer(to_b.referral_id, 1)
        assert offer.provider_id == B
        await until(lambda: bool(b_own.offers()))
        await until(lambda: len(ow_status.statuses(to_b.referral_id)) >= 2)
        matrix.note("B", f"receives its offer on {offered_subject(B)}", "allowed", True, "1 offer")
        matrix.note(
            "OW",
            f"receives its referral's events on {status_subject(OW)}",
            "allowed",
            True,
            ", ".join(ow_status.statuses(to_b.referral_id)),
        )
        info_b = await stored_for(operator_js, provider_durable(B), 1)
        matrix.note(
            "router",
            f"created consumer {provider_durable(B)} before B's first offer",
            "allowed",
            filters(info_b) == [offered_subject(B), notice_subject(B)] and info_b.num_pending == 1,
            f"filters {filters(info_b)}, {info_b.num_pending} pending",
        )
        pending_b = info_b.num_pending
        info_ow = await stored_for(operator_js, ow_durable(OW), len(ow_status.messages))
        matrix.note(
            "router",
            f"created consumer {ow_durable(OW)} before OW's first status event",
            "allowed",
            filters(info_ow) == [status_subject(OW)]
            and info_ow.num_pending == len(ow_status.messages),
            f"filters {filters(info_ow)}, {info_ow.num_pending} pending",
        )
        pending_ow = info_ow.num_pending

        # -- A tries B's subjects, consumer and the stream; each OW system the other's ----------
        stolen_answer = answer(offer, "accept")
        stolen_report = progress(to_b.referral_id, "in_service")
        attempts: list[tuple[Party, str, Callable[[], Awaitable[object]], str]] = [
            (
                a,
                f"JetStream publish {response_subject(B)} (accept B's offer)",
                lambda: a.js.publish(response_subject(B), encode(stolen_answer)),
                response_subject(B),
            ),
            (
                a,
                f"core publish {response_subject(B)}",
                lambda: a.nc.publish(response_subject(B), encode(stolen_answer)),
                response_subject(B),
            ),
            (
                a,
                f"JetStream publish {progress_subject(B)} (report on B's referral)",
                lambda: a.js.publish(progress_subject(B), encode(stolen_report)),
                progress_subject(B),
            ),
            (
                a,
                f"fetch from consumer {provider_durable(B)}",
                lambda: _fetch(a, provider_durable(B)),
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{provider_durable(B)}",
            ),
            (
                a,
                f"consumer info {provider_durable(B)}",
                lambda: a.js.consumer_info(STREAM, provider_durable(B)),
                f"$JS.API.CONSUMER.INFO.{STREAM}.{provider_durable(B)}",
            ),
            (
                a,
                f"ack B's message ($JS.ACK.{STREAM}.{provider_durable(B)}...)",
                lambda: a.nc.publish(f"$JS.ACK.{STREAM}.{provider_durable(B)}.1.1.1.0.0", b""),
                f"$JS.ACK.{STREAM}.{provider_durable(B)}",
            ),
            (
                a,
                f"redefine own consumer to read {all_of(OFFERED_PREFIX)}",
                lambda: a.js.add_consumer(
                    STREAM,
                    ConsumerConfig(
                        name=provider_durable(A),
                        durable_name=provider_durable(A),
                        filter_subject=all_of(OFFERED_PREFIX),
                    ),
                ),
                f"$JS.API.CONSUMER.CREATE.{STREAM}",
            ),
            (
                a,
                f"create a consumer on {notice_subject(B)}",
                lambda: a.js.add_consumer(
                    STREAM,
                    ConsumerConfig(name="snoop", filter_subject=notice_subject(B)),
                ),
                f"$JS.API.CONSUMER.CREATE.{STREAM}",
            ),
            (
                a,
                f"delete consumer {provider_durable(B)}",
                lambda: a.js.delete_consumer(STREAM, provider_durable(B)),
                f"$JS.API.CONSUMER.DELETE.{STREAM}",
            ),
            (
                a,
                f"read the stream directly (last {offered_subject(B)})",
                lambda: a.js.get_last_msg(STREAM, offered_subject(B)),
                f"$JS.API.STREAM.MSG.GET.{STREAM}",
            ),
            (
                a,
                f"stream info {STREAM}",
                lambda: a.js.stream_info(STREAM),
                f"$JS.API.STREAM.INFO.{STREAM}",
            ),
            (
                a,
                f"delete stream {STREAM}",
                lambda: a.js.delete_stream(STREAM),
                f"$JS.API.STREAM.DELETE.{STREAM}",
            ),
            (
                a,
                "create a stream",
                lambda: a.js.add_stream(name="SNOOP", subjects=["snoop.>"]),
                "$JS.API.STREAM.CREATE.SNOOP",
            ),
            (
                a,
                f"publish {requested_subject(OW)} (as an OW system)",
                lambda: a.nc.publish(
                    requested_subject(OW), encode(from_system(make_request(), OW))
                ),
                requested_subject(OW),
            ),
            (
                a,
                f"publish {cancel_subject(OW)} (OW's referral)",
                lambda: a.nc.publish(cancel_subject(OW), encode(cancel(to_b.referral_id))),
                cancel_subject(OW),
            ),
            (
                a,
                f"publish {status_subject(OW)} (a forged status event)",
                lambda: a.nc.publish(status_subject(OW), b"{}"),
                status_subject(OW),
            ),
            (
                a,
                f"publish {offered_subject(B)} (a forged offer to B)",
                lambda: a.nc.publish(offered_subject(B), b"{}"),
                offered_subject(B),
            ),
            (
                a,
                f"publish {notice_subject(B)} (a forged notice to B)",
                lambda: a.nc.publish(notice_subject(B), b"{}"),
                notice_subject(B),
            ),
            (
                ow,
                f"publish {response_subject(B)} (accept B's offer)",
                lambda: ow.nc.publish(response_subject(B), encode(answer(offer, "accept"))),
                response_subject(B),
            ),
            (
                ow,
                f"publish {progress_subject(B)} (report on its own referral)",
                lambda: ow.nc.publish(progress_subject(B), encode(stolen_report)),
                progress_subject(B),
            ),
            (
                ow,
                f"publish {offered_subject(A)} (a forged offer)",
                lambda: ow.nc.publish(offered_subject(A), b"{}"),
                offered_subject(A),
            ),
            (
                ow,
                f"publish {notice_subject(A)} (a forged notice)",
                lambda: ow.nc.publish(notice_subject(A), b"{}"),
                notice_subject(A),
            ),
            (
                ow,
                f"publish {status_subject(OW)} (a forged event, even of its own)",
                lambda: ow.nc.publish(status_subject(OW), b"{}"),
                status_subject(OW),
            ),
            (
                ow,
                f"JetStream publish {requested_subject(OW2)} (as another OW system)",
                lambda: ow.js.publish(
                    requested_subject(OW2), encode(from_system(make_request(), OW2))
                ),
                requested_subject(OW2),
            ),
            (
                ow,
                f"publish {cancel_subject(OW2)} (another system's subject)",
                lambda: ow.nc.publish(cancel_subject(OW2), encode(cancel(to_b.referral_id))),
                cancel_subject(OW2),
            ),
            (
                ow,
                f"fetch from consumer {ow_durable(OW2)}",
                lambda: _fetch(ow, ow_durable(OW2)),
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{ow_durable(OW2)}",
            ),
            (
                ow,
                f"consumer info {ow_durable(OW2)}",
                lambda: ow.js.consumer_info(STREAM, ow_durable(OW2)),
                f"$JS.API.CONSUMER.INFO.{STREAM}.{ow_durable(OW2)}",
            ),
            (
                ow,
                f"fetch from consumer {provider_durable(B)}",
                lambda: _fetch(ow, provider_durable(B)),
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{provider_durable(B)}",
            ),
            (
                ow,
                f"stream info {STREAM}",
                lambda: ow.js.stream_info(STREAM),
                f"$JS.API.STREAM.INFO.{STREAM}",
            ),
            (
                ow2,
                f"fetch from consumer {ow_durable(OW)} (OW's status events)",
                lambda: _fetch(ow2, ow_durable(OW)),
                f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{ow_durable(OW)}",
            ),
            (
                ow2,
                f"consumer info {ow_durable(OW)}",
                lambda: ow2.js.consumer_info(STREAM, ow_durable(OW)),
                f"$JS.API.CONSUMER.INFO.{STREAM}.{ow_durable(OW)}",
            ),
            (
                ow2,
                f"ack OW's message ($JS.ACK.{STREAM}.{ow_durable(OW)}...)",
                lambda: ow2.nc.publish(f"$JS.ACK.{STREAM}.{ow_durable(OW)}.1.1.1.0.0", b""),
                f"$JS.ACK.{STREAM}.{ow_durable(OW)}",
            ),
            (
                ow2,
                f"JetStream publish {cancel_subject(OW)} (cancel OW's referral)",
                lambda: ow2.js.publish(cancel_subject(OW), encode(cancel(to_b.referral_id))),
                cancel_subject(OW),
            ),
            (
                ow2,
                f"publish {requested_subject(OW)} (as OW)",
                lambda: ow2.nc.publish(
                    requested_subject(OW), encode(from_system(make_request(), OW))
                ),
                requested_subject(OW),
            ),
        ]
        for party, attempt, operation, subject in attempts:
            await matrix.attempt(party, attempt, operation, expect="refused", subject=subject)

        # -- the router never saw what was refused --------------------------------------------
        await asyncio.sleep(1.0)  # what would have reached the router has been handled by now
        status = observer.last_status(to_b.referral_id)
        matrix.note(
            "router",
            f"never received the refused {response_subject(B)}, {progress_subject(B)}, "
            f"{cancel_subject(OW)}",
            "refused",
            not await in_stream(response_subject(B))
            and not await in_stream(progress_subject(B))
            and not await in_stream(cancel_subject(OW))
            and await processed(stolen_answer.message_id) is None
            and await processed(stolen_report.message_id) is None
            and status is not None
            and status.status == "offered",
            f"not in the stream, not in router.processed; referral still "
            f"{status.status if status else '?'}",
        )
        consumer_b = await operator_js.consumer_info(STREAM, provider_durable(B))
        matrix.note(
            "router",
            f"consumer {provider_durable(B)} untouched by A",
            "refused",
            consumer_b.num_pending == pending_b == 1 and consumer_b.delivered.consumer_seq == 0,
            f"still {consumer_b.num_pending} pending, none delivered",
        )
        consumer_ow = await operator_js.consumer_info(STREAM, ow_durable(OW))
        matrix.note(
            "router",
            f"consumer {ow_durable(OW)} untouched by OW2",
            "refused",
            consumer_ow.num_pending == pending_ow and consumer_ow.delivered.consumer_seq == 0,
            f"still {consumer_ow.num_pending} pending, none delivered",
        )
        matrix.note(
            "A, OW, OW2",
            "got nothing of another party's from their refused subscriptions",
            "refused",
            not stolen.messages and not ow2_status.messages,
            f"{len(stolen.messages)} + {len(ow2_status.messages)} messages",
        )

        # -- the router's own checks: a party's own subject, another party's referral -----------
        own_subject_answer = answer(offer, "accept")
        await matrix.attempt(
            a,
            f"JetStream publish {response_subject(A)} answering B's offer",
            lambda: a.js.publish(response_subject(A), encode(own_subject_answer), timeout=5),
            expect="allowed",
            subject=response_subject(A),
        )
        row = await until(lambda: processed(own_subject_answer.message_id))
        matrix.note(
            "router",
            f"re-checks {response_subject(A)} against the offer's provider",
            "refused",
            row["outcome"] == "refused" and f"provider {A} does not hold" in row["reason"],
            f"router.processed: {row['outcome']}, {row['reason']}",
        )
        foreign_cancel = cancel(to_b.referral_id)
        await matrix.attempt(
            ow2,
            f"JetStream publish {cancel_subject(OW2)} cancelling OW's referral",
            lambda: ow2.js.publish(cancel_subject(OW2), encode(foreign_cancel), timeout=5),
            expect="allowed",
            subject=cancel_subject(OW2),
        )
        row = await until(lambda: processed(foreign_cancel.message_id))
        status = observer.last_status(to_b.referral_id)
        matrix.note(
            "router",
            f"re-checks {cancel_subject(OW2)} against the referral's system",
            "refused",
            row["outcome"] == "refused"
            and status is not None
            and status.status == "offered"
            and not ow2_status.messages,
            f"router.processed: {row['outcome']}, {row['reason']}; referral still "
            f"{status.status if status else '?'}",
        )

        # -- B answers through its own consumer: fetch, ack, respond -----------------------------
        fetched = await matrix.attempt(
            b,
            f"fetch from its own consumer {provider_durable(B)}",
            lambda: _fetch(b, provider_durable(B), wait=5),
            expect="allowed",
            subject=f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{provider_durable(B)}",
        )
        assert isinstance(fetched, list)
        assert len(fetched) == 1
        assert decode_outbound(fetched[0].data) == offer
        await matrix.attempt(
            b,
            "ack what it fetched",
            lambda: fetched[0].ack_sync(timeout=5),
            expect="allowed",
            subject=f"$JS.ACK.{STREAM}.{provider_durable(B)}",
        )
        info = await matrix.attempt(
            b,
            f"consumer info {provider_durable(B)}",
            lambda: b.js.consumer_info(STREAM, provider_durable(B)),
            expect="allowed",
            subject=f"$JS.API.CONSUMER.INFO.{STREAM}.{provider_durable(B)}",
        )
        assert isinstance(info, ConsumerInfo)
        assert info.num_ack_pending == 0
        assert info.num_pending == 0
        own_answer = answer(offer, "accept")
        await matrix.attempt(
            b,
            f"JetStream publish {response_subject(B)} (accept its offer)",
            lambda: b.js.publish(response_subject(B), encode(own_answer), timeout=5),
            expect="allowed",
            subject=response_subject(B),
        )
        accepted = await observer.until_status(to_b.referral_id, "accepted")
        matrix.note(
            "router",
            f"received B's own {response_subject(B)}",
            "allowed",
            accepted.provider_id == B and await in_stream(response_subject(B)),
            f"referral {accepted.status}; the stream holds it (so the check above could fail)",
        )

        # -- after acceptance: A may not report on B's referral; B reports on its own -----------
        foreign_report = progress(to_b.referral_id, "in_service")
        await matrix.attempt(
            a,
            f"JetStream publish {progress_subject(A)} reporting on B's referral",
            lambda: a.js.publish(progress_subject(A), encode(foreign_report), timeout=5),
            expect="allowed",
            subject=progress_subject(A),
        )
        row = await until(lambda: processed(foreign_report.message_id))
        told = await until(
            lambda: [n for n in a_own.notices() if n.kind == "progress_refused"] or None
        )
        matrix.note(
            "router",
            f"re-checks {progress_subject(A)} against the referral's provider",
            "refused",
            row["outcome"] == "refused" and f"provider {A} does not hold" in row["reason"],
            f"router.processed: {row['outcome']}, {row['reason']}",
        )
        matrix.note(
            "A",
            f"is told why on its own {notice_subject(A)}",
            "allowed",
            told[0].referral_id == to_b.referral_id,
            f"{told[0].kind}: {told[0].reason}",
        )
        own_report = progress(to_b.referral_id, "in_service")
        await matrix.attempt(
            b,
            f"JetStream publish {progress_subject(B)} (its client started)",
            lambda: b.js.publish(progress_subject(B), encode(own_report), timeout=5),
            expect="allowed",
            subject=progress_subject(B),
        )
        await observer.until_status(to_b.referral_id, "in_service")
        await until(lambda: "in_service" in ow_status.statuses(to_b.referral_id))
        matrix.note(
            "OW",
            f"receives in_service on {status_subject(OW)}",
            "allowed",
            not ow2_status.messages,
            ", ".join(ow_status.statuses(to_b.referral_id)) + "; OW2 nothing",
        )

        # -- OW reads its own consumer: fetch, ack, info ------------------------------------------
        fetched_ow = await matrix.attempt(
            ow,
            f"fetch from its own consumer {ow_durable(OW)}",
            lambda: _fetch(ow, ow_durable(OW), wait=5),
            expect="allowed",
            subject=f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{ow_durable(OW)}",
        )
        assert isinstance(fetched_ow, list)
        first = decode_outbound(fetched_ow[0].data)
        assert isinstance(first, ReferralStatusChanged)
        assert first.referral_id == to_b.referral_id
        await matrix.attempt(
            ow,
            "ack what it fetched",
            lambda: fetched_ow[0].ack_sync(timeout=5),
            expect="allowed",
            subject=f"$JS.ACK.{STREAM}.{ow_durable(OW)}",
        )
        info_ow = await matrix.attempt(
            ow,
            f"consumer info {ow_durable(OW)}",
            lambda: ow.js.consumer_info(STREAM, ow_durable(OW)),
            expect="allowed",
            subject=f"$JS.API.CONSUMER.INFO.{STREAM}.{ow_durable(OW)}",
        )
        assert isinstance(info_ow, ConsumerInfo)
        assert info_ow.num_ack_pending == 0
        assert info_ow.num_pending == len(ow_status.messages) - 1

        # -- A's own offer: live and through its consumer; OW cancels one of its referrals ------
        to_a = from_system(make_request(), OW)  # Almonte: canadian-career-academy
        await ow.js.publish(requested_subject(OW), encode(to_a), timeout=5)
        offer_a = await observer.until_offer(to_a.referral_id, 1)
        assert offer_a.provider_id == A
        await until(lambda: any(o.referral_id == to_a.referral_id for o in a_own.offers()))
        matrix.note("A", f"receives its offer on {offered_subject(A)}", "allowed", True, "1 offer")
        # Its consumer holds its notices (the refused answer and report above) and this offer.
        held = len(a_own.notices()) + 1
        fetched_a = await matrix.attempt(
            a,
            f"fetch from its own consumer {provider_durable(A)}",
            lambda: _fetch(a, provider_durable(A), wait=5, count=held),
            expect="allowed",
            subject=f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.{provider_durable(A)}",
        )
        assert isinstance(fetched_a, list)
        got = [decode_outbound(m.data) for m in fetched_a]
        assert offer_a in got
        assert sorted(n.kind for n in got if isinstance(n, ProviderNotice)) == sorted(
            n.kind for n in a_own.notices()
        )

        async def ack_all() -> None:
            for message in fetched_a:
                await message.ack_sync(timeout=5)

        await matrix.attempt(
            a,
            "ack what it fetched",
            ack_all,
            expect="allowed",
            subject=f"$JS.ACK.{STREAM}.{provider_durable(A)}",
        )
        await matrix.attempt(
            a,
            f"JetStream publish {response_subject(A)} (decline its offer)",
            lambda: a.js.publish(
                response_subject(A), encode(answer(offer_a, "decline", "full")), timeout=5
            ),
            expect="allowed",
            subject=response_subject(A),
        )
        await observer.until_offer(to_a.referral_id, 2)
        await matrix.attempt(
            ow,
            f"JetStream publish {cancel_subject(OW)}",
            lambda: ow.js.publish(cancel_subject(OW), encode(cancel(to_a.referral_id)), timeout=5),
            expect="allowed",
            subject=cancel_subject(OW),
        )
        cancelled = await observer.until_status(to_a.referral_id, "cancelled")
        matrix.note(
            "router",
            "handled A's decline and OW's cancel",
            "allowed",
            cancelled.status == "cancelled",
            f"re-offered, then {cancelled.status}",
        )
    finally:
        await db.close()
        print(matrix.table())
        print(f"matrix run in {time.perf_counter() - started:.1f} s")

    wrong = [row for row in matrix.rows if not row.ok]
    assert not wrong, wrong
    assert sum(row.expected == "refused" for row in matrix.rows) >= 60


async def _fetch(party: Party, durable: str, wait: float = JS_TIMEOUT, count: int = 1) -> list[Msg]:
    """``count`` messages from ``durable`` (fewer when ``wait`` runs out first)."""
    sub = await party.js.pull_subscribe_bind(durable=durable, stream=STREAM)
    messages: list[Msg] = []
    try:
        deadline = time.monotonic() + wait
        while len(messages) < count:
            left = deadline - time.monotonic()
            if left <= 0 and messages:
                break
            try:
                messages += await sub.fetch(count - len(messages), timeout=max(left, 0.1))
            except TimeoutError:
                if messages:
                    break
                raise
        return messages
    finally:
        await sub.unsubscribe()
