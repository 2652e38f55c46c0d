"""Choosing among suitable sites: each rule, ties, determinism and the explanation."""

import itertools

from services.router.matching import Candidate, choose

CCA = Candidate("cca-carleton-place", "canadian-career-academy", 11.332, load=3)
CES = Candidate("ces-perth", "community-employment-services", 36.896, load=0)
ONTRAC = Candidate("ontrac-smiths-falls", "ontrac-employment-resource-services", 38.632, load=0)


def test_nearest_wins() -> None:
    choice = choose([ONTRAC, CES, CCA], excluded={"language": 2})
    assert choice.candidate == CCA
    assert choice.explanation.rule == "nearest"
    assert choice.explanation.distance_km == 11.332
    assert choice.explanation.excluded == {"language": 2}
    assert "11.3 km" in choice.explanation.text


def test_preferred_provider_wins_when_it_has_a_suitable_site() -> None:
    choice = choose([CCA, CES], excluded={}, preferred_provider_id=CES.provider_id)
    assert choice.candidate == CES
    assert choice.explanation.rule == "preferred_provider"


def test_preferred_provider_without_a_suitable_site_falls_back_to_nearest() -> None:
    choice = choose([CCA, CES], excluded={}, preferred_provider_id="somebody-else")
    assert (choice.candidate, choice.explanation.rule) == (CCA, "nearest")


def test_tie_on_distance_goes_to_the_lower_load() -> None:
    busy = Candidate("a-site", "p1", 20.0, load=5)
    quiet = Candidate("b-site", "p2", 20.0004, load=1)
    choice = choose([busy, quiet], excluded={})
    assert (choice.candidate, choice.explanation.rule) == (quiet, "tie_lower_load")


def test_tie_on_distance_and_load_goes_to_the_lower_site_id() -> None:
    first = Candidate("a-site", "p1", 20.0, load=1)
    second = Candidate("b-site", "p2", 20.0, load=1)
    choice = choose([second, first], excluded={})
    assert (choice.candidate, choice.explanation.rule) == (first, "tie_site_id")


def test_the_choice_does_not_depend_on_input_order() -> None:
    sites = [
        CCA,
        CES,
        ONTRAC,
        Candidate("x", "p", 11.332, load=3),
        Candidate("y", "q", 11.332, load=2),
    ]
    chosen = {choose(list(order), excluded={}).candidate for order in itertools.permutations(sites)}
    assert chosen == {Candidate("y", "q", 11.332, load=2)}


def test_no_candidate_is_unmatched_with_the_count_per_rule() -> None:
    choice = choose([], excluded={"services": 2, "distance": 1, "language": 0})
    assert choice.candidate is None
    assert choice.explanation.rule == "no_suitable_site"
    assert choice.explanation.excluded == {"services": 2, "distance": 1}
    assert "3 site(s) excluded" in choice.explanation.text
    assert "distance 1" in choice.explanation.text
