"""NATS subject names (contract v1.1): every subject names its party, whose id is checked before
it becomes a token, and an inbound subject is read back to the party that sent it."""

from collections.abc import Callable

import pytest

from contracts import subjects

SYSTEM_SUBJECTS: list[Callable[[str], str]] = [
    subjects.requested_subject,
    subjects.cancel_subject,
    subjects.status_subject,
    subjects.ow_durable,
]
PROVIDER_SUBJECTS: list[Callable[[str], str]] = [
    subjects.offered_subject,
    subjects.notice_subject,
    subjects.response_subject,
    subjects.progress_subject,
    subjects.provider_durable,
]
NOT_SLUGS = ["a.b", "*", ">", "Upper", "a b", "", "-a", "abc\n", "a\nb"]


def test_ow_system_subjects() -> None:
    assert subjects.requested_subject("ow-lanark") == "referral.requested.ow-lanark"
    assert subjects.cancel_subject("ow-lanark") == "referral.cancel.ow-lanark"
    assert subjects.status_subject("ow-lanark") == "referral.status.ow-lanark"
    assert subjects.ow_durable("ow-lanark") == "ow-ow-lanark"


def test_provider_subjects() -> None:
    provider = "canadian-career-academy"

    assert subjects.offered_subject(provider) == "referral.offered.canadian-career-academy"
    assert subjects.notice_subject(provider) == "referral.notice.canadian-career-academy"
    assert subjects.response_subject(provider) == "referral.response.canadian-career-academy"
    assert subjects.progress_subject(provider) == "referral.progress.canadian-career-academy"
    assert subjects.provider_durable(provider) == "provider-canadian-career-academy"


@pytest.mark.parametrize("token", NOT_SLUGS)
@pytest.mark.parametrize("subject_of", SYSTEM_SUBJECTS, ids=lambda f: f.__name__)
def test_a_non_slug_never_becomes_a_system_token(
    subject_of: Callable[[str], str], token: str
) -> None:
    with pytest.raises(ValueError, match="is not a system id"):
        subject_of(token)


@pytest.mark.parametrize("token", NOT_SLUGS)
@pytest.mark.parametrize("subject_of", PROVIDER_SUBJECTS, ids=lambda f: f.__name__)
def test_a_non_slug_never_becomes_a_provider_token(
    subject_of: Callable[[str], str], token: str
) -> None:
    with pytest.raises(ValueError, match="is not a provider id"):
        subject_of(token)


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (subjects.requested_subject("ow-lanark"), ("requested", "ow-lanark")),
        (subjects.cancel_subject("ow-lanark"), ("cancel", "ow-lanark")),
        (
            subjects.response_subject("ontrac-employment-resource-services"),
            ("response", "ontrac-employment-resource-services"),
        ),
        (
            subjects.progress_subject("ontrac-employment-resource-services"),
            ("progress", "ontrac-employment-resource-services"),
        ),
    ],
)
def test_inbound_party_reads_back_what_the_subject_carries_and_whose(
    subject: str, expected: tuple[str, str]
) -> None:
    assert subjects.inbound_party(subject) == expected


@pytest.mark.parametrize(
    "subject",
    [
        # the shared subjects of v1, gone in v1.1
        "referral.requested",
        "referral.cancel",
        # no token, an empty one, more than one, wildcards, a non-slug
        "referral.response",
        "referral.response.",
        "referral.response.a.b",
        "referral.response.*",
        "referral.progress.>",
        "referral.requested.OW-Lanark",
        "referral.cancel.ow-lanark\n",
        # outbound subjects are never inbound
        "referral.offered.abc",
        "referral.notice.abc",
        "referral.status.ow-lanark",
        "referral.dead",
        "xreferral.response.abc",
        "",
    ],
)
def test_anything_else_is_not_an_inbound_subject(subject: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        subjects.inbound_party(subject)


def test_all_of_is_every_party_under_a_prefix() -> None:
    assert subjects.all_of(subjects.STATUS_PREFIX) == "referral.status.*"


def test_the_stream_captures_every_subject() -> None:
    (captured,) = subjects.STREAM_SUBJECTS
    prefix = captured.removesuffix(">")
    every = [
        *(subject_of("p") for subject_of in SYSTEM_SUBJECTS[:-1]),
        *(subject_of("p") for subject_of in PROVIDER_SUBJECTS[:-1]),
        subjects.DEAD,
    ]

    assert all(subject.startswith(prefix) for subject in every)


def test_the_router_consumes_every_inbound_subject_of_every_party() -> None:
    assert set(subjects.ROUTER_FILTER_SUBJECTS) == {
        "referral.requested.*",
        "referral.cancel.*",
        "referral.response.*",
        "referral.progress.*",
    }
    read_back = {
        subjects.inbound_party(subject.replace("*", "party-1"))
        for subject in subjects.ROUTER_FILTER_SUBJECTS
    }
    assert read_back == {(kind, "party-1") for kind in subjects.InboundKind.__args__}  # type: ignore[attr-defined]
