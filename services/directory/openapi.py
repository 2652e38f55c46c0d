"""The directory's OpenAPI document says what the service does: its bearer scheme, every problem
response an operation can give, and that request bodies take no fields beyond their own (the
parts both services share are ``services.infra.openapi``'s).

``tests/faults/test_directory_api_schemathesis.py`` holds the service to this document.
"""

from litestar.openapi import OpenAPIConfig, ResponseSpec
from litestar.openapi.spec import Example

from services.infra.edge import LIMITS, MAX_BODY_BYTES
from services.infra.openapi import (
    BEARER as BEARER,  # the controllers' ``openapi.BEARER``
    bearer_components,
    problem_responses,
)

_WHEN = {
    400: "The body is not JSON",
    401: "No token, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    403: "The token may not make this change (staff tokens read; providers write their own)",
    404: "No record with that id",
    409: "The id is taken, or records still depend on this one",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes",
    422: "A parameter or body field is invalid; errors[].field names it",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """``responses`` of an operation: an RFC 9457 problem document for each status."""
    return problem_responses(_WHEN, *statuses)


# What each kind of operation can answer besides success. Litestar documents its own 400 for
# every operation with parameters; ours is a problem document, so 400 is always listed.
PUBLIC_READ = problems(400, 422)
READ = problems(400, 401, 422)
READ_ONE = problems(400, 401, 404, 422)
CREATE = problems(400, 401, 403, 409, 413, 422)
REPLACE = problems(400, 401, 403, 413, 422)
PATCH = problems(400, 401, 403, 404, 413, 422)
DELETE = problems(400, 401, 403, 404, 409, 422)


# Examples built on the seed data, so a reader (and schemathesis's examples phase) sees
# requests that succeed against a freshly seeded directory.
_PROVIDER = "canadian-career-academy"
_SITE = "canadian-career-academy-carleton-place"
_ADDRESS = {"address_1": "92 Bridge Street", "city": "Carleton Place", "postal_code": "K7C 2V3"}
PROVIDER_ID = [Example(summary="a provider of the seed data", value=_PROVIDER)]
SITE_ID = [Example(summary="a site of the seed data", value=_SITE)]
COMMUNITY = [Example(summary="a town in Lanark County", value="Almonte")]
NEW_PROVIDER = [
    Example(summary="a new provider", value={"id": "lanark-jobs", "name": "Lanark Jobs"})
]
SAME_PROVIDER = [
    Example(summary="the provider in the path", value={"id": _PROVIDER, "name": "CCA"})
]
PROVIDER_CHANGES = [Example(summary="a new phone number", value={"phone": "613-555-0199"})]
NEW_SITE = [
    Example(
        summary="a new site; without lat/lon it is placed from its address",
        value={
            "id": "canadian-career-academy-almonte",
            "provider_id": _PROVIDER,
            "name": "Canadian Career Academy, Almonte",
            "address": {"address_1": "1 Mill Street", "city": "Almonte"},
            "services": ["resume_writing", "job_search"],
        },
    )
]
SAME_SITE = [
    Example(
        summary="the site in the path",
        value={
            "id": _SITE,
            "provider_id": _PROVIDER,
            "name": "CCA, Carleton Place",
            "address": _ADDRESS,
            "services": ["resume_writing"],
            "capacity": 30,
        },
    )
]
SITE_CHANGES = [Example(summary="stop taking referrals", value={"accepting_referrals": False})]


def openapi_config() -> OpenAPIConfig:
    return OpenAPIConfig(
        title="EO provider directory",
        version="1.0.0",
        path="/schema",
        description=(
            "Reads of providers and sites need a bearer token (staff, provider, ow or admin); "
            "writes need an admin token, or a provider token for that provider's own records. "
            "The nearest-site search, the taxonomy, /health and /ready are public. Limits: "
            f"pages up to 100 items; {LIMITS}."
        ),
        components=bearer_components(
            "an API token from `eo token issue` (or the bootstrap admin token)"
        ),
    )
