"""The referral messages (contract v1.1): what decodes, what is rejected (and where), and
deterministic ids."""

import base64
import datetime
import json
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from contracts import (
    PROGRESS_CODES,
    ROUTING_OUTCOMES,
    TERMINAL_STATUSES,
    Client,
    ClientLocation,
    DeadLetter,
    Explanation,
    Message,
    ProgressStatus,
    ProviderNotice,
    ReferralCancel,
    ReferralOffered,
    ReferralProgress,
    ReferralRequested,
    ReferralResponse,
    ReferralStatus,
    ReferralStatusChanged,
    Source,
)
from contracts.codec import (
    decode_inbound,
    decode_outbound,
    derive_message_id,
    encode,
    peek_referral_id,
)
from contracts.subjects import requested_subject, response_subject

# The DESIGN.md section 3 example, byte for byte: a captured v1 payload that must always decode.
V1_REQUEST = (Path(__file__).parents[1] / "fixtures" / "referral_requested_v1.json").read_bytes()

REFERRAL_ID = uuid.UUID("0b8e2f4a-6c1d-4f3e-8a7b-9d2c1e0f5a64")
OFFER_ID = uuid.UUID("9a3c7e1f-0b2d-4c5e-8f6a-1b2c3d4e5f60")
AT = datetime.datetime(2026, 11, 21, 15, 4, 5, tzinfo=datetime.UTC)

Edit = Callable[[dict[str, Any]], None]


def v1_request(edit: Edit) -> bytes:
    """The v1 example with ``edit`` applied to its parsed JSON."""
    doc = json.loads(V1_REQUEST)
    edit(doc)
    return json.dumps(doc).encode()


def set_location(location: dict[str, Any]) -> Edit:
    return lambda doc: doc["client"].update(location=location)


def test_design_example_decodes() -> None:
    msg = decode_inbound(V1_REQUEST)

    assert msg == ReferralRequested(
        message_id=uuid.UUID("5f0b6c1e-2d7a-4d0e-9a51-3c1f2a9e7b10"),
        referral_id=REFERRAL_ID,
        requested_at=AT,
        source=Source(system="ow-lanark", office_id="smiths-falls"),
        client=Client(
            client_ref="c-7d41e9",
            location=ClientLocation(postal_code="K0A 1A0"),
            language="en",
            age=34,
            accessibility_needs=[],
            eligibility=["ow_recipient"],
        ),
        needs=["resume_writing", "interview_skills"],
    )
    assert msg.max_distance_km is None
    assert msg.exclude_provider_ids == []


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ({"lat": 45.2299, "lon": -76.1959}, ClientLocation(lat=45.2299, lon=-76.1959)),
        ({"postal_code": "K0A 1A0"}, ClientLocation(postal_code="K0A 1A0")),
        ({"postal_code": "k0a1a0"}, ClientLocation(postal_code="k0a1a0")),
        ({"community": "Almonte"}, ClientLocation(community="Almonte")),
        # explicit nulls for the forms not used are the same as leaving them out
        ({"community": "Almonte", "lat": None, "lon": None}, ClientLocation(community="Almonte")),
    ],
)
def test_each_location_form_decodes(location: dict[str, Any], expected: ClientLocation) -> None:
    msg = decode_inbound(v1_request(set_location(location)))

    assert isinstance(msg, ReferralRequested)
    assert msg.client.location == expected


def set_field(*path: str, value: Any) -> Edit:
    def edit(doc: dict[str, Any]) -> None:
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        pytest.param(
            set_location({"postal_code": "K0A 1A0", "community": "Almonte"}),
            "$.client.location",
            id="two-location-forms",
        ),
        pytest.param(
            set_location({"lat": 45.2, "lon": -76.1, "community": "Almonte"}),
            "$.client.location",
            id="point-and-community",
        ),
        pytest.param(set_location({}), "$.client.location", id="no-location-form"),
        pytest.param(set_location({"lat": 45.2299}), "$.client.location", id="lat-without-lon"),
        pytest.param(
            set_location({"lat": 91, "lon": -76.1959}), "$.client.location.lat", id="latitude-91"
        ),
        pytest.param(
            set_location({"postal_code": "K0A 1A"}),
            "$.client.location.postal_code",
            id="short-postal-code",
        ),
        pytest.param(set_field("needs", value=[]), "$.needs", id="empty-needs"),
        pytest.param(
            set_field("needs", value=["resume_writing", "basket_weaving"]),
            "$.needs[1]",
            id="unknown-service-code",
        ),
        pytest.param(
            set_field("requested_at", value="2026-11-21T15:04:05"),
            "$.requested_at",
            id="naive-datetime",
        ),
        pytest.param(
            set_field("client", "client_ref", value="c 7d41e9"),
            "$.client.client_ref",
            id="client-ref-with-space",
        ),
        pytest.param(
            set_field("client", "client_ref", value="jane.doe@example.org"),
            "$.client.client_ref",
            id="client-ref-with-at",
        ),
        pytest.param(
            set_field("client", "client_ref", value="c-7d41e9\n"),
            "$.client.client_ref",
            id="client-ref-with-trailing-newline",
        ),
        pytest.param(set_field("client", "age", value=131), "$.client.age", id="age-131"),
        pytest.param(
            set_field("client", "language", value="de"), "$.client.language", id="language-de"
        ),
        pytest.param(
            set_field("max_distance_km", value=0), "$.max_distance_km", id="max-distance-0"
        ),
        pytest.param(
            set_field("exclude_provider_ids", value=["ontrac.employment"]),
            "$.exclude_provider_ids[0]",
            id="provider-id-with-dot",
        ),
        pytest.param(set_field("type", value="referral.requested.v9"), "$.type", id="unknown-tag"),
        pytest.param(
            set_field("type", value="referral.offered.v1"), "$.type", id="outbound-tag-inbound"
        ),
    ],
)
def test_invalid_request_is_rejected_naming_the_path(edit: Edit, path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(f"- at `{path}`")):
        decode_inbound(v1_request(edit))


def test_missing_required_field_is_rejected() -> None:
    def drop_referral_id(doc: dict[str, Any]) -> None:
        del doc["referral_id"]

    with pytest.raises(msgspec.ValidationError, match="missing required field `referral_id`"):
        decode_inbound(v1_request(drop_referral_id))


def test_repeated_need_is_rejected() -> None:
    with pytest.raises(msgspec.ValidationError, match="needs must not repeat"):
        decode_inbound(v1_request(set_field("needs", value=["job_search", "job_search"])))


def test_message_without_type_is_rejected() -> None:
    def drop_type(doc: dict[str, Any]) -> None:
        del doc["type"]

    with pytest.raises(msgspec.ValidationError, match="missing required field `type`"):
        decode_inbound(v1_request(drop_type))


def test_not_json_is_a_decode_error() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_inbound(b"\xff not json")


def test_unknown_fields_are_ignored() -> None:
    def add_unknown(doc: dict[str, Any]) -> None:
        doc["priority"] = "high"
        doc["client"]["preferred_contact"] = {"by": "phone"}
        doc["client"]["location"]["accuracy_m"] = 50
        doc["source"]["worker"] = "w-12"

    assert decode_inbound(v1_request(add_unknown)) == decode_inbound(V1_REQUEST)


EXPLANATION = Explanation(
    rule="nearest",
    text="Nearest suitable site, 12.3 km away.",
    distance_km=12.3,
    excluded={"language": 2, "services": 5},
)
INBOUND: list[Message] = [
    decode_inbound(V1_REQUEST),
    ReferralRequested(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        requested_at=AT,
        source=Source(system="ow-lanark", office_id="smiths-falls"),
        client=Client(
            client_ref="c-7d41e9",
            location=ClientLocation(lat=45.2299, lon=-76.1959),
            language="fr",
            accessibility_needs=["wheelchair_access", "large_print"],
        ),
        needs=["job_search"],
        max_distance_km=40.0,
        preferred_provider_id="canadian-career-academy",
        exclude_provider_ids=["community-employment-services"],
        action_plan_ref="ap-2026-0042",
        consent_ref="consent:7781",
    ),
    ReferralCancel(message_id=uuid.uuid4(), referral_id=REFERRAL_ID, reason="client moved"),
    ReferralResponse(
        message_id=uuid.uuid4(), referral_id=REFERRAL_ID, offer_id=OFFER_ID, decision="accept"
    ),
    ReferralResponse(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        offer_id=OFFER_ID,
        decision="decline",
        reason="no intake until March",
    ),
    ReferralProgress(
        message_id=uuid.uuid4(), referral_id=REFERRAL_ID, status="in_service", occurred_at=AT
    ),
    ReferralProgress(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="completed",
        code="employed",
        note="Full-time, 12 weeks after intake.",
        occurred_at=AT,
    ),
    ReferralProgress(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="not_started",
        code="could_not_contact",
        occurred_at=AT,
    ),
    ReferralProgress(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="ended_early",
        code="moved",
        occurred_at=AT,
    ),
]
OUTBOUND: list[Message] = [
    ReferralOffered(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        offer_id=OFFER_ID,
        provider_id="ontrac-employment-resource-services",
        site_id="ontrac-smiths-falls",
        attempt=1,
        expires_at=AT + datetime.timedelta(hours=48),
        distance_km=12.3,
        needs=["resume_writing", "interview_skills"],
        language="en",
        accessibility_needs=[],
        client_ref="c-7d41e9",
    ),
    ReferralStatusChanged(
        message_id=uuid.uuid4(), referral_id=REFERRAL_ID, status="received", at=AT, attempt=0
    ),
    ReferralStatusChanged(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="offered",
        at=AT,
        attempt=1,
        provider_id="ontrac-employment-resource-services",
        site_id="ontrac-smiths-falls",
        distance_km=12.3,
        explanation=EXPLANATION,
    ),
    ReferralStatusChanged(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="unmatched",
        at=AT,
        attempt=3,
        reason="no suitable site left",
        explanation=Explanation(
            rule="no_suitable_site", text="No site is left.", excluded={"already_offered": 3}
        ),
    ),
    DeadLetter(
        message_id=uuid.uuid4(),
        subject=requested_subject("ow-lanark"),
        received_at=AT,
        error="Expected `array` of length >= 1 - at `$.needs`",
        payload=b'{"needs": []}\xff',
        referral_id=REFERRAL_ID,
    ),
    DeadLetter(
        message_id=uuid.uuid4(),
        subject=response_subject("canadian-career-academy"),
        received_at=AT,
        error="malformed JSON",
        payload=b"\x00\x01",
    ),
    # v1.1 additions
    ReferralOffered(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        offer_id=OFFER_ID,
        provider_id="ontrac-employment-resource-services",
        site_id="ontrac-smiths-falls",
        attempt=2,
        expires_at=AT + datetime.timedelta(days=2),
        distance_km=12.3,
        needs=["job_search"],
        language="fr",
        client_ref="c-7d41e9",
        source=Source(system="ow-lanark", office_id="smiths-falls"),
    ),
    ReferralStatusChanged(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="completed",
        at=AT,
        attempt=1,
        provider_id="ontrac-employment-resource-services",
        site_id="ontrac-smiths-falls",
        code="employed",
    ),
    ReferralStatusChanged(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        status="withdrawn",
        at=AT,
        attempt=1,
        reason="client moved out of the province",
    ),
    ProviderNotice(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        offer_id=OFFER_ID,
        kind="offer_cancelled",
        reason="cancelled by the referring OW office",
        at=AT,
    ),
    ProviderNotice(
        message_id=uuid.uuid4(),
        referral_id=REFERRAL_ID,
        kind="progress_refused",
        reason="completed needs an accepted or in-service referral",
        at=AT,
    ),
]


def _ids(messages: list[Message]) -> list[str]:
    return [f"{type(msg).__name__}-{i}" for i, msg in enumerate(messages)]


@pytest.mark.parametrize("msg", INBOUND, ids=_ids(INBOUND))
def test_inbound_round_trip(msg: Message) -> None:
    data = encode(msg)

    assert json.loads(data)["type"] == type(msg).__struct_config__.tag
    assert decode_inbound(data) == msg


@pytest.mark.parametrize("msg", OUTBOUND, ids=_ids(OUTBOUND))
def test_outbound_round_trip(msg: Message) -> None:
    data = encode(msg)

    assert json.loads(data)["type"] == type(msg).__struct_config__.tag
    assert decode_outbound(data) == msg


@pytest.mark.parametrize("msg", OUTBOUND, ids=_ids(OUTBOUND))
def test_inbound_decoder_refuses_outbound_messages(msg: Message) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape("- at `$.type`")):
        decode_inbound(encode(msg))


@pytest.mark.parametrize("msg", INBOUND, ids=_ids(INBOUND))
def test_outbound_decoder_refuses_inbound_messages(msg: Message) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape("- at `$.type`")):
        decode_outbound(encode(msg))


def test_message_tags_are_the_contracts() -> None:
    tags = {
        cls.__name__: cls.__struct_config__.tag
        for cls in (
            ReferralRequested,
            ReferralCancel,
            ReferralOffered,
            ReferralResponse,
            ReferralStatusChanged,
            ReferralProgress,
            ProviderNotice,
            DeadLetter,
        )
    }

    assert tags == {
        "ReferralRequested": "referral.requested.v1",
        "ReferralCancel": "referral.cancel.v1",
        "ReferralOffered": "referral.offered.v1",
        "ReferralResponse": "referral.response.v1",
        "ReferralStatusChanged": "referral.status.v1",
        "ReferralProgress": "referral.progress.v1",
        "ProviderNotice": "referral.notice.v1",
        "DeadLetter": "referral.dead.v1",
    }


def test_times_are_sent_as_utc_z() -> None:
    assert b'"at":"2026-11-21T15:04:05Z"' in encode(OUTBOUND[1])


def test_dead_letter_payload_is_base64_of_the_original_bytes() -> None:
    dead = OUTBOUND[4]
    assert isinstance(dead, DeadLetter)

    sent = json.loads(encode(dead))

    assert base64.b64decode(sent["payload"]) == b'{"needs": []}\xff'


def test_explanation_counts_cannot_be_negative() -> None:
    data = encode(OUTBOUND[2]).replace(b'"language":2', b'"language":-1')

    with pytest.raises(msgspec.ValidationError, match=re.escape("$.explanation.excluded")):
        decode_outbound(data)


def test_terminal_statuses_are_states() -> None:
    assert set(ReferralStatus.__args__) >= TERMINAL_STATUSES  # type: ignore[attr-defined]


def test_acceptance_ends_routing_but_not_the_referral() -> None:
    assert set(ReferralStatus.__args__) >= ROUTING_OUTCOMES  # type: ignore[attr-defined]
    assert "accepted" in ROUTING_OUTCOMES
    assert "accepted" not in TERMINAL_STATUSES
    assert {"completed", "not_started", "ended_early", "withdrawn"} <= TERMINAL_STATUSES


def test_every_progress_status_has_its_codes() -> None:
    assert set(PROGRESS_CODES) == set(ProgressStatus.__args__)  # type: ignore[attr-defined]
    assert set(ProgressStatus.__args__) <= set(ReferralStatus.__args__)  # type: ignore[attr-defined]


def progress(**fields: Any) -> bytes:
    doc = {
        "type": "referral.progress.v1",
        "message_id": str(uuid.uuid4()),
        "referral_id": str(REFERRAL_ID),
        "occurred_at": "2026-11-21T15:04:05Z",
        **fields,
    }
    return json.dumps({key: value for key, value in doc.items() if value is not None}).encode()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("in_service", None),
        *(("completed", code) for code in PROGRESS_CODES["completed"]),
        *(("not_started", code) for code in PROGRESS_CODES["not_started"]),
        *(("ended_early", code) for code in PROGRESS_CODES["ended_early"]),
    ],
)
def test_each_progress_status_decodes_with_its_codes(status: str, code: str | None) -> None:
    msg = decode_inbound(progress(status=status, code=code))

    assert isinstance(msg, ReferralProgress)
    assert (msg.status, msg.code) == (status, code)


@pytest.mark.parametrize(
    ("status", "code", "error"),
    [
        pytest.param(
            "in_service", "employed", "status in_service takes no code", id="code-in-service"
        ),
        pytest.param("completed", None, "status completed needs a code", id="completed-no-code"),
        pytest.param(
            "completed", "no_show", "status completed needs a code", id="completed-reason-code"
        ),
        pytest.param(
            "not_started", "employed", "status not_started needs a code", id="not-started-outcome"
        ),
        pytest.param(
            "not_started", "moved", "status not_started needs a code", id="not-started-ended-reason"
        ),
        pytest.param(
            "ended_early", "no_show", "status ended_early needs a code", id="ended-early-no-show"
        ),
        pytest.param("ended_early", None, "status ended_early needs a code", id="ended-no-code"),
    ],
)
def test_a_progress_code_must_fit_its_status(status: str, code: str | None, error: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=error):
        decode_inbound(progress(status=status, code=code))


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        pytest.param({"status": "accepted"}, "$.status", id="status-not-reported-by-providers"),
        pytest.param({"status": "completed", "code": "hired"}, "$.code", id="unknown-code"),
        pytest.param(
            {"status": "in_service", "note": "x" * 201}, "$.note", id="note-over-200-characters"
        ),
        pytest.param({"status": "in_service", "note": ""}, "$.note", id="empty-note"),
        pytest.param(
            {"status": "in_service", "occurred_at": "2026-11-21T15:04:05"},
            "$.occurred_at",
            id="naive-occurred-at",
        ),
    ],
)
def test_invalid_progress_is_rejected_naming_the_path(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=re.escape(f"- at `{path}`")):
        decode_inbound(progress(**fields))


def test_a_progress_note_may_be_200_characters() -> None:
    msg = decode_inbound(progress(status="in_service", note="x" * 200))

    assert isinstance(msg, ReferralProgress)
    assert msg.note == "x" * 200


def test_v1_0_outbound_payloads_still_decode_without_the_v1_1_fields() -> None:
    offered = json.loads(encode(OUTBOUND[0]))
    status = json.loads(encode(OUTBOUND[2]))
    assert "source" not in offered
    assert "code" not in status

    assert decode_outbound(json.dumps(offered).encode()) == OUTBOUND[0]
    assert decode_outbound(json.dumps(status).encode()) == OUTBOUND[2]


def test_peek_referral_id_reads_the_id_of_an_invalid_request() -> None:
    invalid = v1_request(set_field("needs", value=[]))

    assert peek_referral_id(invalid) == REFERRAL_ID


@pytest.mark.parametrize(
    "data", [b"\xff not json", b"[1, 2]", b'{"referral_id": "not-a-uuid"}', b"{}"]
)
def test_peek_referral_id_is_none_when_unreadable(data: bytes) -> None:
    assert peek_referral_id(data) is None


def test_derive_message_id_is_deterministic() -> None:
    first = derive_message_id(REFERRAL_ID, "offered", 1)

    assert derive_message_id(REFERRAL_ID, "offered", 1) == first
    # an int part and its decimal string name the same message, however a caller spells it
    assert derive_message_id(REFERRAL_ID, "offered", "1") == first
    assert first.version == 5


Parts = tuple[uuid.UUID, tuple[str | int, ...]]


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((REFERRAL_ID, ("offered", 1)), (REFERRAL_ID, ("offered", 2))),
        ((REFERRAL_ID, ("offered", 1)), (REFERRAL_ID, ("status", "offered", 1))),
        ((REFERRAL_ID, ("offered", 1)), (OFFER_ID, ("offered", 1))),
        ((REFERRAL_ID, ("a", "b")), (REFERRAL_ID, ("b", "a"))),
        ((REFERRAL_ID, ("a/b",)), (REFERRAL_ID, ("a", "b"))),
        ((REFERRAL_ID, ()), (REFERRAL_ID, ("",))),
    ],
)
def test_derive_message_id_differs_by_part(a: Parts, b: Parts) -> None:
    assert derive_message_id(a[0], *a[1]) != derive_message_id(b[0], *b[1])


@pytest.mark.parametrize(
    ("website", "ok"),
    [
        ("https://www.canadiancareeracademy.ca/", True),
        ("http://example.org/jobs?lang=fr#top", True),
        ("http://[", False),  # urllib: "Invalid IPv6 URL"; a fuzzer's read crawler crashed on it
        ("https://example.org/a[1]", False),
        ("https://exa mple.org", False),
        ("ftp://example.org", False),
    ],
)
def test_a_website_is_an_http_url_urllib_can_split(website: str, ok: bool) -> None:
    import urllib.parse

    from contracts.directory import Url

    if ok:
        assert msgspec.convert(website, Url) == website
        assert urllib.parse.urlsplit(website).scheme in ("http", "https")
    else:
        with pytest.raises(msgspec.ValidationError):
            msgspec.convert(website, Url)
