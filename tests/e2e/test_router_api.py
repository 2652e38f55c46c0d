"""The router's HTTP API for the parties (issue 15, item 2; DESIGN.md section 3d), against the
real router, PostgreSQL and NATS: every write is the party's own message on its own subject,
handled like any other, and each party reads only its own.
"""

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from contracts.codec import decode_inbound
from contracts.referrals import ReferralEvent
from contracts.subjects import STREAM, cancel_subject, progress_subject, requested_subject
from tests.conftest import bearer
from tests.referrals import (
    CCA,
    CCA_SITE,
    CES,
    CES_SITE,
    SYSTEM,
    Observer,
    make_request,
    send_request,
)

pytestmark = pytest.mark.e2e

Issue = Callable[..., Awaitable[str]]


def intake_body(**changes: Any) -> dict[str, Any]:
    """A ``POST /api/v1/referrals`` body: a referral.requested without message_id and type."""
    request = msgspec.to_builtins(make_request())
    for key in ("type", "message_id", "requested_at"):
        request.pop(key)
    request["source"] = {"office_id": "smiths-falls"}
    request.update(changes)
    return dict(request)


def inbound(observer: Observer, subject: str) -> list[ReferralEvent]:
    """The parties' messages published on ``subject`` (every publish, repeats included)."""
    return [decode_inbound(data) for seen, data in observer.raw if seen == subject]


async def stored(nc: Any, subject: str) -> int:
    """How many messages the stream holds on ``subject`` (JetStream drops a repeated id)."""
    info = await nc.jetstream().stream_info(STREAM, subjects_filter=subject)
    return int((info.state.subjects or {}).get(subject, 0))


async def until_json(
    router: AsyncTestClient, path: str, headers: dict[str, str], found: Callable[[Any], bool]
) -> Any:
    """GET ``path`` until ``found`` holds of its JSON body (the router works asynchronously)."""
    last: list[Any] = []

    async def check() -> bool:
        reply = await router.get(path, headers=headers)
        assert reply.status_code == 200, reply.text
        last[:] = [reply.json()]
        return found(last[0])

    for _ in range(300):  # 15 s
        if await check():
            return last[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"GET {path} never matched; last: {last}")


async def test_intake_accept_progress_complete_over_http(
    router: AsyncTestClient, observer: Observer, nc: Any, issue_token: Issue
) -> None:
    ow = bearer(await issue_token("ow", system=SYSTEM))
    cca = bearer(await issue_token("provider", CCA))
    key = str(uuid.uuid4())

    # Intake: 202 with the message id (the Idempotency-Key) and where to look.
    body = intake_body()
    sent = await router.post("/api/v1/referrals", json=body, headers={**ow, "Idempotency-Key": key})
    assert sent.status_code == 202, sent.text
    rid = uuid.UUID(body["referral_id"])
    assert sent.json() == {
        "message_id": key,
        "referral_id": str(rid),
        "url": f"/api/v1/referrals/{rid}",
    }
    assert sent.headers["location"] == f"/api/v1/referrals/{rid}"
    # A retried POST with the same key is the same message: one request reaches the stream.
    again = await router.post(
        "/api/v1/referrals", json=body, headers={**ow, "Idempotency-Key": key}
    )
    assert again.status_code == 202
    offer = await observer.until_offer(rid, 1)
    assert offer.provider_id == CCA
    requests = inbound(observer, requested_subject(SYSTEM))
    assert {m.message_id for m in requests} == {uuid.UUID(key)}
    assert await stored(nc, requested_subject(SYSTEM)) == 1

    # The provider's inbox lists the offer with what it needs to decide.
    offers = await until_json(router, "/api/v1/offers", cca, lambda b: bool(b["items"]))
    (listed,) = offers["items"]
    assert listed["offer_id"] == str(offer.offer_id)
    assert listed["site_id"] == CCA_SITE
    assert listed["site_name"]
    assert listed["client_ref"] == body["client"]["client_ref"]
    assert listed["needs"] == body["needs"]
    assert listed["language"] == "en"
    assert listed["source"] == {"system": SYSTEM, "office_id": "smiths-falls"}

    accepted = await router.post(f"/api/v1/offers/{offer.offer_id}/accept", headers=cca)
    assert accepted.status_code == 202, accepted.text
    assert (await observer.until_terminal(rid)).status == "accepted"
    caseload = await until_json(router, "/api/v1/caseload", cca, lambda b: bool(b["items"]))
    assert [(c["referral_id"], c["status"]) for c in caseload["items"]] == [(str(rid), "accepted")]
    # The offer is no longer open: answering it again is refused, and says why.
    late = await router.post(
        f"/api/v1/offers/{offer.offer_id}/decline", json={"reason": "full"}, headers=cca
    )
    assert late.status_code == 409
    assert "accepted" in late.json()["detail"]

    started = await router.post(
        f"/api/v1/referrals/{rid}/progress", json={"status": "in_service"}, headers=cca
    )
    assert started.status_code == 202, started.text
    await observer.until_status(rid, "in_service")
    done = await router.post(
        f"/api/v1/referrals/{rid}/progress",
        json={"status": "completed", "code": "employed", "note": "full-time job"},
        headers=cca,
    )
    assert done.status_code == 202, done.text
    final = await observer.until_status(rid, "completed")
    assert final.code == "employed"
    reports = inbound(observer, progress_subject(CCA))
    assert [m.status for m in reports] == ["in_service", "completed"]  # type: ignore[union-attr]
    assert (await router.get("/api/v1/caseload", headers=cca)).json() == {"items": []}

    # The OW system's list shows it completed, and its filters narrow it.
    page = (await router.get("/api/v1/referrals", headers=ow)).json()
    assert [(r["referral_id"], r["status"]) for r in page["items"]] == [(str(rid), "completed")]
    assert page["next"] is None
    for query, expected in [
        ("?status=completed", 1),
        ("?status=accepted&status=offered", 0),
        ("?office=smiths-falls", 1),
        ("?office=perth", 0),
    ]:
        listed_now = (await router.get(f"/api/v1/referrals{query}", headers=ow)).json()
        assert len(listed_now["items"]) == expected, query


async def test_decline_reroutes_and_cancel_withdraws_over_http(
    router: AsyncTestClient, observer: Observer, nc: Any, issue_token: Issue
) -> None:
    ow = bearer(await issue_token("ow", system=SYSTEM))
    cca = bearer(await issue_token("provider", CCA))
    ces = bearer(await issue_token("provider", CES))
    request = make_request()
    await send_request(nc.jetstream(), request)
    rid = request.referral_id
    first = await observer.until_offer(rid, 1)
    # A decline needs its reason: 422 naming the field, and nothing is published.
    no_reason = await router.post(f"/api/v1/offers/{first.offer_id}/decline", json={}, headers=cca)
    assert no_reason.status_code == 422
    assert [e["field"] for e in no_reason.json()["errors"]] == ["$.reason"]
    # Another provider's offer is not confirmed to exist.
    assert (
        await router.post(f"/api/v1/offers/{first.offer_id}/accept", headers=ces)
    ).status_code == 404

    declined = await router.post(
        f"/api/v1/offers/{first.offer_id}/decline",
        json={"reason": "no intake until January"},
        headers=cca,
    )
    assert declined.status_code == 202
    second = await observer.until_offer(rid, 2)
    assert (second.provider_id, second.site_id) == (CES, CES_SITE)
    await until_json(router, "/api/v1/offers", ces, lambda b: len(b["items"]) == 1)
    assert (
        await router.post(f"/api/v1/offers/{second.offer_id}/accept", headers=ces)
    ).status_code == 202
    await observer.until_status(rid, "accepted")

    withdrawn = await router.post(
        f"/api/v1/referrals/{rid}/cancel", json={"reason": "client moved away"}, headers=ow
    )
    assert withdrawn.status_code == 202, withdrawn.text
    assert (await observer.until_status(rid, "withdrawn")).reason
    assert [m.referral_id for m in inbound(observer, cancel_subject(SYSTEM))] == [rid]
    again = await router.post(
        f"/api/v1/referrals/{rid}/cancel", json={"reason": "again"}, headers=ow
    )
    assert again.status_code == 409


async def test_invalid_writes_are_refused_naming_the_field(
    router: AsyncTestClient, observer: Observer, issue_token: Issue
) -> None:
    ow = bearer(await issue_token("ow", system=SYSTEM))
    cases = [
        (intake_body(name="Marie Tremblay"), "$.name"),
        (intake_body(needs=[]), "$.needs"),
        (intake_body(source={"office_id": "x", "system": "ow-other"}), "$.source.system"),
    ]
    for body, field in cases:
        refused = await router.post("/api/v1/referrals", json=body, headers=ow)
        assert refused.status_code == 422, (field, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert field in [e["field"] for e in refused.json()["errors"]], refused.text
    bad_key = await router.post(
        "/api/v1/referrals", json=intake_body(), headers={**ow, "Idempotency-Key": "again"}
    )
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["field"] == "Idempotency-Key"
    await asyncio.sleep(0.3)
    assert inbound(observer, requested_subject(SYSTEM)) == []
