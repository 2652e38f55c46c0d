"""The names, in English and French, of the codes a provider reports after acceptance.

DESIGN.md section 3c: ``ReferralProgress.code`` comes from a closed, bilingual vocabulary
served like the service codes, so the directory returns these tables in ``GET /api/v1/taxonomy``.
The codes themselves are the ``Literal`` s of ``contracts.referrals`` (a unit test holds the two
equal, in order); the tables live here, not in the database, because a code is part of the wire
contract and changes only with it.
"""

from contracts.directory import ProgressTerm

__all__ = ["ENDED_EARLY_REASONS", "NOT_STARTED_REASONS", "OUTCOMES", "PROGRESS_TERMS"]

#: Outcomes of ``completed`` (``OutcomeCode``).
OUTCOMES: tuple[ProgressTerm, ...] = (
    ProgressTerm(code="employed", name_en="Employed", name_fr="En emploi"),
    ProgressTerm(code="in_training", name_en="In training", name_fr="En formation"),
    ProgressTerm(code="in_education", name_en="In education", name_fr="Aux études"),
    ProgressTerm(
        code="plan_completed", name_en="Action plan completed", name_fr="Plan d'action terminé"
    ),
    ProgressTerm(code="other", name_en="Other outcome", name_fr="Autre résultat"),
)
#: Reasons for ``not_started`` (``NotStartedReason``).
NOT_STARTED_REASONS: tuple[ProgressTerm, ...] = (
    ProgressTerm(
        code="could_not_contact",
        name_en="Could not contact the client",
        name_fr="Impossible de joindre la personne",
    ),
    ProgressTerm(
        code="no_show",
        name_en="Client did not attend",
        name_fr="La personne ne s'est pas présentée",
    ),
    ProgressTerm(
        code="client_declined",
        name_en="Client declined the service",
        name_fr="La personne a refusé le service",
    ),
    ProgressTerm(
        code="not_eligible",
        name_en="Client not eligible",
        name_fr="La personne n'est pas admissible",
    ),
    ProgressTerm(code="other", name_en="Other reason", name_fr="Autre motif"),
)
#: Reasons for ``ended_early`` (``EndedEarlyReason``).
ENDED_EARLY_REASONS: tuple[ProgressTerm, ...] = (
    ProgressTerm(
        code="client_withdrew",
        name_en="Client withdrew",
        name_fr="La personne s'est retirée",
    ),
    ProgressTerm(code="moved", name_en="Client moved away", name_fr="La personne a déménagé"),
    ProgressTerm(
        code="could_not_contact",
        name_en="Could not contact the client",
        name_fr="Impossible de joindre la personne",
    ),
    ProgressTerm(code="other", name_en="Other reason", name_fr="Autre motif"),
)
#: The terms each progress status takes, like ``contracts.referrals.PROGRESS_CODES``.
PROGRESS_TERMS: dict[str, tuple[ProgressTerm, ...]] = {
    "in_service": (),
    "completed": OUTCOMES,
    "not_started": NOT_STARTED_REASONS,
    "ended_early": ENDED_EARLY_REASONS,
}
