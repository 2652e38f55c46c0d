"""NATS subject names: provider ids are checked before they become part of a subject."""

import pytest

from contracts import subjects


def test_provider_subjects() -> None:
    assert subjects.offered_subject("canadian-career-academy") == (
        "referral.offered.canadian-career-academy"
    )
    assert subjects.response_subject("canadian-career-academy") == (
        "referral.response.canadian-career-academy"
    )


@pytest.mark.parametrize("provider_id", ["a.b", "*", ">", "Upper", "a b", "", "-a", "abc\n"])
def test_a_non_slug_never_becomes_a_subject_token(provider_id: str) -> None:
    with pytest.raises(ValueError, match="is not a provider id"):
        subjects.offered_subject(provider_id)
    with pytest.raises(ValueError, match="is not a provider id"):
        subjects.response_subject(provider_id)


def test_provider_id_is_read_back_from_a_response_subject() -> None:
    subject = subjects.response_subject("ontrac-employment-resource-services")

    assert subjects.provider_id_from_response_subject(subject) == (
        "ontrac-employment-resource-services"
    )


@pytest.mark.parametrize(
    "subject",
    [
        "referral.response",
        "referral.response.",
        "referral.response.a.b",
        "referral.response.*",
        "referral.offered.abc",
        "xreferral.response.abc",
    ],
)
def test_other_subjects_name_no_provider(subject: str) -> None:
    with pytest.raises(ValueError, match="not"):
        subjects.provider_id_from_response_subject(subject)


def test_the_stream_captures_every_subject() -> None:
    (captured,) = subjects.STREAM_SUBJECTS
    prefix = captured.removesuffix(">")
    every = [
        subjects.REQUESTED,
        subjects.CANCEL,
        subjects.STATUS,
        subjects.DEAD,
        subjects.OFFERED_ALL,
        subjects.RESPONSE_ALL,
        subjects.offered_subject("p"),
    ]

    assert all(subject.startswith(prefix) for subject in every)


def test_the_router_consumes_requests_responses_and_cancels() -> None:
    assert set(subjects.ROUTER_FILTER_SUBJECTS) == {
        "referral.requested",
        "referral.response.*",
        "referral.cancel",
    }
