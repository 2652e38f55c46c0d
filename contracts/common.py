"""Building blocks shared by every contract: the message base, ids, coordinates and vocabularies."""

import re
import uuid
from typing import Annotated, Literal

import msgspec

__all__ = [
    "ACCESSIBILITY_CODES",
    "ELIGIBILITY_CODES",
    "POSTAL_CODE_PATTERN",
    "SERVICE_CODES",
    "AccessibilityCode",
    "ClientLocation",
    "Community",
    "EligibilityCode",
    "Language",
    "Latitude",
    "Longitude",
    "Message",
    "PostalCode",
    "PostalCodeText",
    "ServiceCode",
    "Slug",
    "normalize_postal_code",
]

# Every pattern ends in `$(?!\n)`: Python's `$` alone also matches before a final newline.

#: Provider and site ids: safe inside a NATS subject (no dots, no wildcards).
Slug = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9-]*$(?!\n)", max_length=100)]
Latitude = Annotated[float, msgspec.Meta(ge=-90, le=90)]
Longitude = Annotated[float, msgspec.Meta(ge=-180, le=180)]
Language = Literal["en", "fr"]

#: Canada Post format: letter digit letter, optional space, digit letter digit; D F I O Q U are
#: never used, and W Z never as the first letter.
POSTAL_CODE_PATTERN = (
    r"^[ABCEGHJ-NPRSTVXY][0-9][ABCEGHJ-NPRSTV-Z] ?[0-9][ABCEGHJ-NPRSTV-Z][0-9]$(?!\n)"
)
_POSTAL_CODE = re.compile(POSTAL_CODE_PATTERN)
#: As accepted on the wire: any case, with or without the space.
PostalCodeText = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Za-z][0-9][A-Za-z] ?[0-9][A-Za-z][0-9]$(?!\n)", max_length=7)
]
PostalCode = Annotated[str, msgspec.Meta(pattern=POSTAL_CODE_PATTERN)]
Community = Annotated[str, msgspec.Meta(min_length=1, max_length=100)]

# Section 5 of DESIGN.md. Adding a code is an additive change; never rename or remove one.
ServiceCode = Literal[
    "employment_counselling",
    "resume_writing",
    "interview_skills",
    "job_search",
    "job_matching_placement",
    "work_experience",
    "job_retention",
    "skills_training",
    "literacy_basic_skills",
    "disability_supports",
    "self_employment",
    "language_training",
    "youth_job_connection",
    "better_jobs_ontario",
    "canada_ontario_job_grant",
    "apprenticeship",
]
AccessibilityCode = Literal[
    "wheelchair_access",
    "accessible_washroom",
    "asl_interpretation",
    "lsq_interpretation",
    "large_print",
    "virtual_service",
]
EligibilityCode = Literal["ow_recipient", "odsp_recipient", "laid_off", "youth", "newcomer"]

SERVICE_CODES: tuple[str, ...] = ServiceCode.__args__  # type: ignore[attr-defined]
ACCESSIBILITY_CODES: tuple[str, ...] = AccessibilityCode.__args__  # type: ignore[attr-defined]
ELIGIBILITY_CODES: tuple[str, ...] = EligibilityCode.__args__  # type: ignore[attr-defined]


def normalize_postal_code(text: str) -> str:
    """Return ``text`` as ``A1A 1A1`` (upper case, one space); ValueError when it is not one."""
    compact = re.sub(r"\s+", "", text).upper()
    candidate = f"{compact[:3]} {compact[3:]}"
    if not _POSTAL_CODE.match(candidate):
        raise ValueError(f"{text!r} is not a Canadian postal code (expected A1A 1A1)")
    return candidate


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every NATS message: tagged by ``type``, identified by ``message_id``.

    Unknown fields are ignored on decode, so producers may add fields without breaking us.
    """

    message_id: uuid.UUID


class ClientLocation(msgspec.Struct, frozen=True, omit_defaults=True):
    """Where the client is: exactly one of {lat, lon} · {postal_code} · {community}."""

    # msgspec cannot decode an untagged union of objects, so the rule lives in __post_init__,
    # which turns a violation into a ValidationError on decode.

    lat: Latitude | None = None
    lon: Longitude | None = None
    postal_code: PostalCodeText | None = None
    community: Community | None = None

    def __post_init__(self) -> None:
        has_point = self.lat is not None or self.lon is not None
        if has_point and (self.lat is None or self.lon is None):
            raise ValueError("lat and lon must be given together")
        given = [has_point, self.postal_code is not None, self.community is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of {lat, lon}, {postal_code} or {community}")
