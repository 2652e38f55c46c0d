"""The router's HTTP writes and list scopes, decided without servers (services/router/actions)."""

import datetime
import uuid
from typing import Any

import msgspec
import pytest

from contracts.referrals import ReferralProgress, ReferralRequested, ReferralResponse
from contracts.router import CancelRequest, ProgressReport, ReferralIntake
from services.access.principal import Principal
from services.router import actions
from services.router.actions import HeldReferral, OfferOwner, ReferralOwner, Refused
from tests.referrals import make_request

NOW = datetime.datetime(2026, 11, 27, 15, 0, tzinfo=datetime.UTC)
ACCEPTED = NOW - datetime.timedelta(days=1)
ADMIN = Principal(token_id="a", role="admin")
STAFF = Principal(token_id="s", role="staff")
OW = Principal(token_id="o", role="ow", system="ow-lanark")
OTHER_OW = Principal(token_id="o2", role="ow", system="ow-ottawa")
CCA = Principal(token_id="p", role="provider", provider_id="cca")
CES = Principal(token_id="p2", role="provider", provider_id="ces")
MID = uuid.uuid4()
RID = uuid.uuid4()


def intake(**changes: Any) -> ReferralIntake:
    raw = msgspec.to_builtins(make_request())
    for key in ("type", "message_id", "requested_at"):
        raw.pop(key)
    raw["source"] = {"office_id": "perth"}
    return msgspec.convert({**raw, **changes}, ReferralIntake)


def refused(call: Any, *args: Any) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args)
    return caught.value


def test_intake_is_the_systems_own_request_on_its_own_subject() -> None:
    out = actions.intake(intake(), OW, MID, NOW)
    assert out.subject == "referral.requested.ow-lanark"
    assert isinstance(out.message, ReferralRequested)
    assert out.message.message_id == MID
    assert out.message.source.system == "ow-lanark"
    assert out.message.source.office_id == "perth"
    assert out.message.requested_at == NOW
    # The same system named in the body is fine; another is the field at fault.
    assert actions.intake(intake(source={"office_id": "p", "system": "ow-lanark"}), OW, MID, NOW)
    wrong = refused(
        actions.intake, intake(source={"office_id": "p", "system": "ow-x"}), OW, MID, NOW
    )
    assert (wrong.status, wrong.field) == (422, "$.source.system")


@pytest.mark.parametrize("caller", [ADMIN, STAFF, CCA])
def test_only_an_ow_system_refers_or_cancels(caller: Principal) -> None:
    assert refused(actions.intake, intake(), caller, MID, NOW).status == 403
    owner = ReferralOwner(referral_id=RID, system="ow-lanark", status="offered", held=None)
    assert refused(actions.cancel, owner, CancelRequest(reason="x"), caller, MID).status == 403


def test_cancel_is_the_referring_systems_and_only_while_open() -> None:
    owner = ReferralOwner(referral_id=RID, system="ow-lanark", status="accepted", held=None)
    out = actions.cancel(owner, CancelRequest(reason="moved"), OW, MID)
    assert out.subject == "referral.cancel.ow-lanark"
    assert out.referral_id == RID
    assert refused(actions.cancel, owner, CancelRequest(reason="x"), OTHER_OW, MID).status == 404
    assert refused(actions.cancel, None, CancelRequest(reason="x"), OW, MID).status == 404
    closed = ReferralOwner(referral_id=RID, system="ow-lanark", status="completed", held=None)
    conflict = refused(actions.cancel, closed, CancelRequest(reason="x"), OW, MID)
    assert conflict.status == 409
    assert "completed" in conflict.detail


def test_answers_go_to_the_providers_own_open_offer() -> None:
    offer = OfferOwner(
        offer_id=uuid.uuid4(), referral_id=RID, provider_id="cca", state="open", expires_at=NOW
    )
    out = actions.respond(offer, "decline", "full", CCA, MID)
    assert out.subject == "referral.response.cca"
    assert isinstance(out.message, ReferralResponse)
    assert (out.message.decision, out.message.reason, out.message.offer_id) == (
        "decline",
        "full",
        offer.offer_id,
    )
    assert refused(actions.respond, offer, "accept", None, CES, MID).status == 404
    assert refused(actions.respond, None, "accept", None, CCA, MID).status == 404
    assert refused(actions.respond, offer, "accept", None, ADMIN, MID).status == 403
    assert refused(actions.respond, offer, "accept", None, OW, MID).status == 403
    gone = OfferOwner(
        offer_id=offer.offer_id, referral_id=RID, provider_id="cca", state="expired", expires_at=NOW
    )
    assert "expired" in refused(actions.respond, gone, "accept", None, CCA, MID).detail


def held(status: str = "accepted", by: str = "cca") -> ReferralOwner:
    return ReferralOwner(
        referral_id=RID,
        system="ow-lanark",
        status=status,
        held=HeldReferral(provider_id=by, accepted_at=ACCEPTED),
    )


def test_progress_is_the_holders_along_the_lifecycle() -> None:
    out = actions.report(held(), ProgressReport(status="in_service"), CCA, MID, NOW)
    assert out.subject == "referral.progress.cca"
    assert isinstance(out.message, ReferralProgress)
    assert out.message.occurred_at == NOW
    assert (
        refused(actions.report, held(), ProgressReport(status="in_service"), CES, MID, NOW).status
        == 404
    )
    assert (
        refused(
            actions.report, held(by="ces"), ProgressReport(status="in_service"), CCA, MID, NOW
        ).status
        == 404
    )
    assert (
        refused(
            actions.report, held("completed"), ProgressReport(status="in_service"), CCA, MID, NOW
        ).status
        == 409
    )
    no_code = refused(actions.report, held(), ProgressReport(status="completed"), CCA, MID, NOW)
    assert (no_code.status, no_code.field) == (422, "$.code")
    future = ProgressReport(status="in_service", occurred_at=NOW + datetime.timedelta(hours=1))
    assert refused(actions.report, held(), future, CCA, MID, NOW).field == "$.occurred_at"
    early = ProgressReport(status="in_service", occurred_at=ACCEPTED - datetime.timedelta(hours=1))
    assert (
        "before the referral was accepted"
        in refused(actions.report, held(), early, CCA, MID, NOW).detail
    )


def test_the_idempotency_key_is_the_message_id() -> None:
    key = uuid.uuid4()
    assert actions.message_id(str(key)) == key
    assert actions.message_id(None) != actions.message_id(None)
    assert refused(actions.message_id, "retry-1").field == "Idempotency-Key"


def test_cursors_round_trip_and_foreign_ones_are_refused() -> None:
    cursor = actions.encode_cursor(NOW, RID)
    assert actions.decode_cursor(cursor) == (NOW, RID)
    for bad in ["", "bm90IGEgY3Vyc29y", "!!!", actions.encode_cursor(NOW, RID)[:-3]]:
        assert refused(actions.decode_cursor, bad).field == "cursor"


def test_days_are_ontario_days_and_to_is_inclusive() -> None:
    start, end = actions.day_bounds(datetime.date(2026, 11, 2), datetime.date(2026, 11, 2))
    assert start is not None
    assert end is not None
    assert start.isoformat() == "2026-11-02T00:00:00-05:00"
    assert end - start == datetime.timedelta(days=1)
    assert actions.day_bounds(None, None) == (None, None)
    backwards = refused(actions.day_bounds, datetime.date(2026, 11, 3), datetime.date(2026, 11, 2))
    assert backwards.field == "to"


def test_list_scopes_follow_the_party() -> None:
    assert actions.list_scope(OW, lists="x") == "ow-lanark"
    assert actions.list_scope(ADMIN, lists="x") is None
    assert actions.list_scope(ADMIN, lists="x", system="ow-lanark") == "ow-lanark"
    assert refused(lambda: actions.list_scope(OW, lists="x", system="ow-ottawa")).status == 403
    for caller in (CCA, STAFF):
        assert refused(lambda c=caller: actions.list_scope(c, lists="x")).status == 403
    assert actions.provider_scope(CCA, lists="x") == "cca"
    assert actions.provider_scope(ADMIN, lists="x", provider_id="ces") == "ces"
    assert refused(lambda: actions.provider_scope(CCA, lists="x", provider_id="ces")).status == 403
    for caller in (OW, STAFF):
        assert refused(lambda c=caller: actions.provider_scope(c, lists="x")).status == 403


def test_a_service_code_given_twice_is_refused_naming_needs() -> None:
    # ReferralIntake decodes it; the request it becomes refuses it (not a 500).
    twice = intake(needs=["job_search", "job_search"])
    wrong = refused(actions.intake, twice, OW, MID, NOW)
    assert (wrong.status, wrong.field) == (422, "$.needs")


def test_a_nul_character_is_refused_naming_the_field() -> None:
    # Valid JSON, but the router dead-letters it: refused before anything is published.
    location = {"community": "Alm\x00onte"}
    client = {**msgspec.to_builtins(make_request().client), "location": location}
    wrong = refused(actions.intake, intake(client=client), OW, MID, NOW)
    assert (wrong.status, wrong.field) == (422, "$.client.location.community")
    owner = ReferralOwner(referral_id=RID, system="ow-lanark", status="offered", held=None)
    wrong = refused(actions.cancel, owner, CancelRequest(reason="moved\x00"), OW, MID)
    assert (wrong.status, wrong.field) == (422, "$.reason")


def test_the_ends_of_the_calendar_are_no_server_error() -> None:
    # The day after 9999-12-31 does not exist: `to` that day bounds nothing.
    start, end = actions.day_bounds(datetime.date(9999, 12, 31), datetime.date.max)
    assert start is not None
    assert end is None
    # A crafted cursor whose time is before the first UTC day is refused as any foreign one.
    early = datetime.datetime(1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=14)))
    assert refused(actions.decode_cursor, actions.encode_cursor(early, RID)).field == "cursor"
