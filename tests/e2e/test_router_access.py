"""Who may do what over the router's HTTP API (issue 15; DESIGN.md 3d): the HTTP half of the
cross-party matrix. Every endpoint is tried anonymously (401 with its challenge), as staff, as
an admin, as the right and the wrong OW system and as the right and the wrong provider: the
right party is answered; anyone else is refused without learning anything of another party (a
404 body holds no history, a list none of another party's items), and a refused write publishes
nothing (no message on any party's subject, none stored in the stream).
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from contracts.codec import decode_inbound
from contracts.referrals import ReferralRequested
from contracts.subjects import (
    STREAM,
    cancel_subject,
    progress_subject,
    requested_subject,
    response_subject,
)
from services.access.tokens import TokenStore
from tests.conftest import bearer
from tests.e2e.test_router_api import intake_body
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    CES_SITE,
    ONTRAC,
    SYSTEM,
    Observer,
    answer,
    make_request,
    send_request,
    send_response,
)

pytestmark = pytest.mark.e2e

DECLINE_REASON = "no evening intake at Carleton Place"

Issue = Callable[..., Awaitable[str]]


async def get(router: AsyncTestClient, path: str, headers: dict[str, str] | None) -> Any:
    """GET ``path`` with ``headers`` (None: with no Authorization header at all)."""
    if headers is not None:
        return await router.get(path, headers=headers)
    admin = router.headers.pop("Authorization")
    try:
        return await router.get(path)
    finally:
        router.headers["Authorization"] = admin


async def declined_then_accepted(
    observer: Observer, nc: Any, request: ReferralRequested | None = None
) -> uuid.UUID:
    """A referral of ``SYSTEM``: offered to CCA, which declines with a reason, then to CES,
    which accepts."""
    js = nc.jetstream()
    request = request or make_request()
    await send_request(js, request)
    first = await observer.until_offer(request.referral_id, 1)
    assert first.provider_id == CCA
    await send_response(js, CCA, answer(first, "decline", DECLINE_REASON))
    second = await observer.until_offer(request.referral_id, 2)
    assert (second.provider_id, second.site_id) == (CES, CES_SITE)
    await send_response(js, CES, answer(second, "accept"))
    assert (await observer.until_terminal(request.referral_id)).status == "accepted"
    return request.referral_id


async def test_each_party_reads_only_its_own_referrals(
    router: AsyncTestClient, observer: Observer, nc: Any, issue_token: Issue
) -> None:
    rid = await declined_then_accepted(observer, nc)
    path = f"/api/v1/referrals/{rid}"
    staff = bearer(await issue_token("staff"))
    own_system = bearer(await issue_token("ow", system=SYSTEM))
    other_system = bearer(await issue_token("ow", system="ow-elsewhere"))
    cca = bearer(await issue_token("provider", CCA))
    ces = bearer(await issue_token("provider", CES))
    ontrac = bearer(await issue_token("provider", ONTRAC))

    # Anonymous, or a token nobody issued: 401, a problem with its challenge.
    for headers in (None, bearer("tok_000000000000.not-a-token"), {"Authorization": "Basic x"}):
        refused = await get(router, path, headers)
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "history" not in refused.text

    # Another party's referral is not confirmed to exist.
    for headers in (staff, other_system, ontrac):
        assert (await get(router, path, headers)).status_code == 404

    full = (await get(router, path, dict(router.headers))).json()
    assert [h["event"] for h in full["history"]] == [
        "receive",
        "offer",
        "decline",
        "offer",
        "accept",
    ]
    assert (await get(router, path, own_system)).json() == full

    # The declining provider: its own offer and decline; nothing of CES's site or acceptance.
    declined = await get(router, path, cca)
    assert declined.status_code == 200
    seen = declined.json()
    assert [o["provider_id"] for o in seen["offers"]] == [CCA]
    assert "current_offer" not in seen
    assert [h["event"] for h in seen["history"]] == ["receive", "offer", "decline"]
    assert DECLINE_REASON in seen["history"][2]["reason"]
    assert CES not in declined.text
    assert CES_SITE not in declined.text

    # The accepting provider holds it: its own offer, and never CCA's decline or site.
    held = await get(router, path, ces)
    assert held.status_code == 200
    mine = held.json()
    assert mine["status"] == "accepted"
    assert [o["provider_id"] for o in mine["offers"]] == [CES]
    assert mine.get("current_offer") == full.get("current_offer")  # its own, if any
    assert [h["event"] for h in mine["history"]] == ["receive", "offer", "accept"]
    assert DECLINE_REASON not in held.text
    assert CCA not in held.text
    assert CCA_SITE not in held.text


async def test_an_unknown_referral_is_404_for_every_authenticated_caller(
    router: AsyncTestClient, issue_token: Issue
) -> None:
    path = f"/api/v1/referrals/{uuid.uuid4()}"
    callers = [
        router.headers,
        bearer(await issue_token("staff")),
        bearer(await issue_token("ow", system=SYSTEM)),
        bearer(await issue_token("provider", CCA)),
    ]
    for headers in callers:
        missing = await get(router, path, dict(headers))
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert (await get(router, path, None)).status_code == 401


async def test_a_revoked_token_is_refused_from_the_next_request(
    router: AsyncTestClient, issue_token: Issue, router_settings: Any
) -> None:
    text = await issue_token("ow", system=SYSTEM)
    path = f"/api/v1/referrals/{uuid.uuid4()}"
    assert (await get(router, path, bearer(text))).status_code == 404
    conn = await asyncpg.connect(router_settings.database_url)
    try:
        await TokenStore(conn).revoke(text.partition(".")[0])
    finally:
        await conn.close()
    assert (await get(router, path, bearer(text))).status_code == 401


async def test_health_ready_and_the_openapi_document_stay_public(router: AsyncTestClient) -> None:
    for path in ("/health", "/ready", "/schema/openapi.json"):
        assert (await get(router, path, None)).status_code == 200, path
    schema = (await get(router, "/schema/openapi.json", None)).json()
    assert "bearer" in schema["components"]["securitySchemes"]


# The cross-party matrix over every endpoint -------------------------------------------------

#: Everyone who may knock. ``other_ow`` and ``ontrac`` are parties of no referral here.
CALLERS = ("anonymous", "staff", "admin", "ow", "other_ow", "cca", "ces", "ontrac")
OTHER_SYSTEM = "ow-elsewhere"
#: The subjects the parties publish on; the router publishes on the others.
INBOUND = ("referral.requested.", "referral.cancel.", "referral.response.", "referral.progress.")


@dataclass(frozen=True)
class Parties:
    """Three referrals of ``SYSTEM`` and every caller's headers (None: no Authorization).

    ``held``: offered to CCA, which declined, then to CES, which accepted and holds it.
    ``open`` and ``spare``: each offered to CCA, the offers still open.
    """

    held: ReferralRequested
    open: ReferralRequested
    spare: ReferralRequested
    open_offer: uuid.UUID
    spare_offer: uuid.UUID
    headers: dict[str, dict[str, str] | None]

    def secrets(self) -> list[str]:
        """What a refused caller must never see: any party's history, sites, reasons, clients."""
        refs = [r.client.client_ref for r in (self.held, self.open, self.spare)]
        return [DECLINE_REASON, CCA_SITE, CES_SITE, *refs, '"history"', '"offers"', '"items"']


@pytest.fixture
async def parties(
    router: AsyncTestClient, observer: Observer, nc: Any, issue_token: Issue
) -> Parties:
    held = make_request()
    await declined_then_accepted(observer, nc, held)
    open_, spare = make_request(), make_request()
    offers = []
    for request in (open_, spare):
        await send_request(nc.jetstream(), request)
        offer = await observer.until_offer(request.referral_id, 1)
        assert offer.provider_id == CCA
        offers.append(offer.offer_id)
    headers: dict[str, dict[str, str] | None] = {
        "anonymous": None,
        "staff": bearer(await issue_token("staff")),
        "admin": dict(router.headers),
        "ow": bearer(await issue_token("ow", system=SYSTEM)),
        "other_ow": bearer(await issue_token("ow", system=OTHER_SYSTEM)),
        "cca": bearer(await issue_token("provider", CCA)),
        "ces": bearer(await issue_token("provider", CES)),
        "ontrac": bearer(await issue_token("provider", ONTRAC)),
    }
    return Parties(held, open_, spare, offers[0], offers[1], headers)


async def ask(
    router: AsyncTestClient,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    body: Any = None,
) -> Any:
    """``method path`` with ``headers`` (None: with no Authorization header at all)."""
    if headers is not None:
        return await router.request(method, path, headers=headers, json=body)
    admin = router.headers.pop("Authorization")
    try:
        return await router.request(method, path, json=body)
    finally:
        router.headers["Authorization"] = admin


def refused_as_expected(reply: Any, parties: Parties) -> list[str]:
    """What is wrong with a refusal: not a problem document, no challenge on a 401, or
    something of a party in its body."""
    wrong = []
    if not reply.headers.get("content-type", "").startswith("application/problem+json"):
        wrong.append(f"content-type {reply.headers.get('content-type')}")
    if reply.status_code == 401 and not reply.headers.get("www-authenticate", "").startswith(
        "Bearer"
    ):
        wrong.append("401 without WWW-Authenticate: Bearer")
    wrong.extend(f"leaks {secret}" for secret in parties.secrets() if secret in reply.text)
    return wrong


def expect(right: dict[str, int], otherwise: dict[str, int]) -> dict[str, int]:
    """The status each caller gets: ``right`` for those named, 401 anonymously, else 403, then
    ``otherwise`` for the wrong parties (404: another party's is not confirmed to exist)."""
    return {caller: 403 for caller in CALLERS} | {"anonymous": 401} | otherwise | right


def ids(body: Any, key: str) -> set[str]:
    return {item[key] for item in body["items"]}


async def test_every_read_answers_only_the_party_it_belongs_to(
    router: AsyncTestClient, parties: Parties
) -> None:
    held, open_ = str(parties.held.referral_id), str(parties.open.referral_id)
    mine = {held, open_, str(parties.spare.referral_id)}
    cca_offers = {str(parties.open_offer), str(parties.spare_offer)}
    anyone = {caller: 200 for caller in CALLERS if caller != "anonymous"}
    not_yours = {"staff": 404, "other_ow": 404, "ontrac": 404}
    table: list[tuple[str, dict[str, int], Callable[[str, Any], Any]]] = [
        ("/api/v1/me", expect(anyone, {}), lambda who, body: body["role"]),
        (
            "/api/v1/referrals",
            expect({"admin": 200, "ow": 200, "other_ow": 200}, {}),
            lambda who, body: ids(body, "referral_id"),
        ),
        (
            f"/api/v1/referrals?system={SYSTEM}",  # another system's, by name
            expect({"admin": 200, "ow": 200}, {}),
            lambda who, body: ids(body, "referral_id"),
        ),
        (
            f"/api/v1/referrals/{held}",
            expect({"admin": 200, "ow": 200, "cca": 200, "ces": 200}, not_yours),
            lambda who, body: [o["provider_id"] for o in body["offers"]],
        ),
        (
            f"/api/v1/referrals/{open_}",
            expect({"admin": 200, "ow": 200, "cca": 200}, not_yours | {"ces": 404}),
            lambda who, body: [o["provider_id"] for o in body["offers"]],
        ),
        (
            "/api/v1/offers",
            expect({"admin": 200, "cca": 200, "ces": 200, "ontrac": 200}, {}),
            lambda who, body: ids(body, "offer_id"),
        ),
        (
            f"/api/v1/offers?provider_id={CCA}",  # another provider's, by name
            expect({"admin": 200, "cca": 200}, {}),
            lambda who, body: ids(body, "offer_id"),
        ),
        (
            "/api/v1/caseload",
            expect({"admin": 200, "cca": 200, "ces": 200, "ontrac": 200}, {}),
            lambda who, body: ids(body, "referral_id"),
        ),
    ]
    # What each caller answered sees (admin: at least this; everyone else: exactly this).
    sees: dict[tuple[str, str], Any] = {
        ("/api/v1/me", "staff"): "staff",
        ("/api/v1/me", "admin"): "admin",
        ("/api/v1/me", "ow"): "ow",
        ("/api/v1/me", "other_ow"): "ow",
        ("/api/v1/me", "cca"): "provider",
        ("/api/v1/me", "ces"): "provider",
        ("/api/v1/me", "ontrac"): "provider",
        ("/api/v1/referrals", "admin"): mine,
        ("/api/v1/referrals", "ow"): mine,
        ("/api/v1/referrals", "other_ow"): set(),
        (f"/api/v1/referrals?system={SYSTEM}", "admin"): mine,
        (f"/api/v1/referrals?system={SYSTEM}", "ow"): mine,
        (f"/api/v1/referrals/{held}", "admin"): [CCA, CES],
        (f"/api/v1/referrals/{held}", "ow"): [CCA, CES],
        (f"/api/v1/referrals/{held}", "cca"): [CCA],
        (f"/api/v1/referrals/{held}", "ces"): [CES],
        (f"/api/v1/referrals/{open_}", "admin"): [CCA],
        (f"/api/v1/referrals/{open_}", "ow"): [CCA],
        (f"/api/v1/referrals/{open_}", "cca"): [CCA],
        ("/api/v1/offers", "admin"): cca_offers,
        ("/api/v1/offers", "cca"): cca_offers,
        ("/api/v1/offers", "ces"): set(),
        ("/api/v1/offers", "ontrac"): set(),
        (f"/api/v1/offers?provider_id={CCA}", "admin"): cca_offers,
        (f"/api/v1/offers?provider_id={CCA}", "cca"): cca_offers,
        ("/api/v1/caseload", "admin"): {held},
        ("/api/v1/caseload", "ces"): {held},
        ("/api/v1/caseload", "cca"): set(),
        ("/api/v1/caseload", "ontrac"): set(),
    }
    wrong: list[str] = []
    answered = 0
    for path, statuses, seen in table:
        for caller in CALLERS:
            reply = await ask(router, "GET", path, parties.headers[caller])
            where = f"GET {path} as {caller}"
            if reply.status_code != statuses[caller]:
                wrong.append(f"{where}: {reply.status_code}, not {statuses[caller]}")
            elif reply.status_code >= 400:
                wrong.extend(f"{where}: {w}" for w in refused_as_expected(reply, parties))
            else:
                answered += 1
                got, want = seen(caller, reply.json()), sees[(path, caller)]
                # The seed is not the admin's only data; the parties' lists are exactly theirs.
                ok = got >= want if caller == "admin" and isinstance(want, set) else got == want
                if not ok:
                    wrong.append(f"{where}: sees {got}, not {want}")
    assert wrong == []
    assert answered == len(sees)


async def inbound_stored(nc: Any) -> dict[str, int]:
    """How many messages the stream holds on each party's subject."""
    info = await nc.jetstream().stream_info(STREAM, subjects_filter="referral.>")
    return {s: n for s, n in (info.state.subjects or {}).items() if s.startswith(INBOUND)}


def inbound_seen(observer: Observer) -> list[tuple[str, bytes]]:
    """Every publish on a party's subject seen so far (repeats included)."""
    return [(subject, data) for subject, data in observer.raw if subject.startswith(INBOUND)]


async def test_every_write_is_the_right_partys_alone_and_a_refused_one_publishes_nothing(
    router: AsyncTestClient, observer: Observer, nc: Any, parties: Parties
) -> None:
    held, open_ = parties.held.referral_id, parties.open.referral_id
    for_another_system = intake_body(source={"office_id": "perth", "system": SYSTEM})
    # (path, body, each caller's status, the right party, the subject it publishes on)
    table = [
        (
            f"/api/v1/referrals/{held}/progress",
            {"status": "in_service"},
            expect({"ces": 202}, {"cca": 404, "ontrac": 404}),  # CCA had an offer of it
            "ces",
            progress_subject(CES),
        ),
        (
            f"/api/v1/offers/{parties.open_offer}/accept",
            None,
            expect({"cca": 202}, {"ces": 404, "ontrac": 404}),
            "cca",
            response_subject(CCA),
        ),
        (
            f"/api/v1/offers/{parties.spare_offer}/decline",
            {"reason": "no intake until January"},
            expect({"cca": 202}, {"ces": 404, "ontrac": 404}),
            "cca",
            response_subject(CCA),
        ),
        (
            f"/api/v1/referrals/{open_}/cancel",
            {"reason": "client moved away"},
            expect({"ow": 202}, {"other_ow": 404}),
            "ow",
            cancel_subject(SYSTEM),
        ),
        (
            "/api/v1/referrals",
            intake_body(),
            # Another system may refer its own clients, not in this system's name.
            expect({"ow": 202}, {"other_ow": 422}),
            "ow",
            requested_subject(SYSTEM),
        ),
    ]
    before_seen, before_stored = inbound_seen(observer), await inbound_stored(nc)

    wrong: list[str] = []
    for path, body, statuses, right, _ in table:
        for caller in CALLERS:
            if caller == right:
                continue
            intake = path == "/api/v1/referrals"
            sent = for_another_system if intake and caller == "other_ow" else body
            reply = await ask(router, "POST", path, parties.headers[caller], sent)
            where = f"POST {path} as {caller}"
            if reply.status_code != statuses[caller]:
                wrong.append(f"{where}: {reply.status_code}, not {statuses[caller]}")
            else:
                wrong.extend(f"{where}: {w}" for w in refused_as_expected(reply, parties))
    assert wrong == []
    await asyncio.sleep(0.3)  # time for a stray publish to arrive
    assert inbound_seen(observer) == before_seen
    assert await inbound_stored(nc) == before_stored

    # The right party, in an order its state allows: each write is one message, its own.
    for path, body, statuses, right, subject in table:
        reply = await ask(router, "POST", path, parties.headers[right], body)
        assert reply.status_code == statuses[right] == 202, (path, reply.text)
        message_id = uuid.UUID(reply.json()["message_id"])

        def published(subject: str = subject, message_id: uuid.UUID = message_id) -> list[bytes]:
            return [
                d for s, d in inbound_seen(observer) if s == subject and decode_id(d) == message_id
            ]

        assert len(await observer.wait_for(published, what=f"the message of POST {path}")) == 1
    stored = await inbound_stored(nc)
    added = {s: n - before_stored.get(s, 0) for s, n in stored.items()}
    assert {s: n for s, n in added.items() if n} == {
        progress_subject(CES): 1,
        response_subject(CCA): 2,
        cancel_subject(SYSTEM): 1,
        requested_subject(SYSTEM): 1,
    }
    # And the router handled them as any other: CES's client started, CCA's answers took.
    await observer.until_status(held, "in_service")
    await observer.until_offer(parties.spare.referral_id, 2)


def decode_id(data: bytes) -> uuid.UUID:
    return decode_inbound(data).message_id
