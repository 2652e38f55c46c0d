"""The progress codes' bilingual names: exactly the codes of the contract, each with both names."""

import pytest

from contracts.directory import ProgressTerm
from contracts.referrals import (
    PROGRESS_CODES,
    EndedEarlyReason,
    NotStartedReason,
    OutcomeCode,
)
from contracts.vocabulary import (
    ENDED_EARLY_REASONS,
    NOT_STARTED_REASONS,
    OUTCOMES,
    PROGRESS_TERMS,
)


@pytest.mark.parametrize(
    ("terms", "codes"),
    [
        (OUTCOMES, OutcomeCode.__args__),  # type: ignore[attr-defined]
        (NOT_STARTED_REASONS, NotStartedReason.__args__),  # type: ignore[attr-defined]
        (ENDED_EARLY_REASONS, EndedEarlyReason.__args__),  # type: ignore[attr-defined]
    ],
    ids=["outcomes", "not_started", "ended_early"],
)
def test_each_table_names_exactly_the_codes_of_its_literal_in_order(
    terms: tuple[ProgressTerm, ...], codes: tuple[str, ...]
) -> None:
    assert tuple(term.code for term in terms) == codes


def test_the_tables_follow_the_progress_statuses() -> None:
    assert {status: tuple(t.code for t in terms) for status, terms in PROGRESS_TERMS.items()} == (
        PROGRESS_CODES
    )


@pytest.mark.parametrize(
    "term", [*OUTCOMES, *NOT_STARTED_REASONS, *ENDED_EARLY_REASONS], ids=lambda t: t.code
)
def test_every_code_has_an_english_and_a_french_name(term: ProgressTerm) -> None:
    assert term.name_en.strip() == term.name_en != ""
    assert term.name_fr.strip() == term.name_fr != ""
    assert term.name_fr != term.name_en


def test_a_code_in_two_tables_has_one_name() -> None:
    by_code: dict[str, set[tuple[str, str]]] = {}
    for term in (*NOT_STARTED_REASONS, *ENDED_EARLY_REASONS):
        by_code.setdefault(term.code, set()).add((term.name_en, term.name_fr))

    assert all(len(names) == 1 for names in by_code.values())
