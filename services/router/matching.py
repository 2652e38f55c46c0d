"""Choosing the site for a referral among suitable candidates (DESIGN.md section 4). Pure.

The directory's candidates query has already applied every suitability rule; this module
picks one: ``preferred_provider_id`` when that provider has a candidate, else the smallest
geodesic distance, ties broken by lower current load and then by site id, so the choice is
deterministic. The explanation says which rule decided and how many sites each rule excluded.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.referrals import DecidingRule, Explanation

#: Distances closer than this (km) count as a tie: GPS-level noise must not decide.
TIE_KM = 0.001


@dataclass(frozen=True)
class Candidate:
    site_id: str
    provider_id: str
    distance_km: float
    #: Referrals the site holds now (its reserved places).
    load: int


@dataclass(frozen=True)
class Choice:
    candidate: Candidate | None
    explanation: Explanation


def _key(candidate: Candidate) -> tuple[float, int, str]:
    return (round(candidate.distance_km / TIE_KM), candidate.load, candidate.site_id)


def _rule(chosen: Candidate, others: Sequence[Candidate]) -> DecidingRule:
    level = [c for c in others if round(c.distance_km / TIE_KM) == _key(chosen)[0]]
    if not level:
        return "nearest"
    if all(c.load > chosen.load for c in level):
        return "tie_lower_load"
    return "tie_site_id"


def choose(
    candidates: Sequence[Candidate],
    *,
    excluded: Mapping[str, int],
    preferred_provider_id: str | None = None,
) -> Choice:
    """The site to offer next, or none, with the explanation for the caseworker."""
    counts = {rule: n for rule, n in excluded.items() if n > 0}
    if not candidates:
        total = sum(counts.values())
        detail = ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items())) or "none"
        text = f"no suitable site: {total} site(s) excluded ({detail})"
        return Choice(None, Explanation(rule="no_suitable_site", text=text, excluded=counts))
    preferred = [c for c in candidates if c.provider_id == preferred_provider_id]
    pool = preferred or list(candidates)
    chosen = min(pool, key=_key)
    rule: DecidingRule = (
        "preferred_provider" if preferred else _rule(chosen, [c for c in pool if c != chosen])
    )
    text = {
        "preferred_provider": "the preferred provider has a suitable site",
        "nearest": "the nearest suitable site",
        "tie_lower_load": "tied for nearest; chosen for its lower current load",
        "tie_site_id": "tied for nearest and load; chosen by site id",
    }[rule]
    return Choice(
        chosen,
        Explanation(
            rule=rule,
            text=f"{text} ({chosen.distance_km:.1f} km)",
            distance_km=round(chosen.distance_km, 3),
            excluded=counts,
        ),
    )
