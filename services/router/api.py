"""The router's HTTP API for the parties (DESIGN.md section 3d): reads of referrals, offers and
caseload, and the writes that publish a party's message.

Handlers are thin: ``visibility`` and ``actions`` decide (pure), ``reads`` queries, and a write
publishes on JetStream, with its message id as ``Nats-Msg-Id``, the message ``actions`` built:
the same bytes on the same subject as the party's own NATS client would send. The router's
consumer then handles it like any other message, so there is one path that changes state, and
the answer is 202 with the message id and where to look.
"""

import datetime
import uuid
from typing import Annotated, Any, get_args

import nats.errors
import structlog
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import Body, HeaderParameter, PathParameter, QueryParameter

from contracts.codec import derive_message_id, encode
from contracts.common import Slug
from contracts.directory import FieldError, Problem
from contracts.referrals import OpaqueRef, ReferralStatus
from contracts.router import (
    Caller,
    CancelRequest,
    Caseload,
    DeclineRequest,
    OfferList,
    ProgressReport,
    Published,
    ReferralIntake,
    ReferralPage,
    ReferralView,
)
from services.access.principal import Principal
from services.directory import candidates
from services.infra.edge import MAX_BODY_BYTES
from services.infra.http import problem
from services.infra.openapi import BEARER, problem_responses
from services.router import actions, reads
from services.router.actions import Outgoing, Refused
from services.router.store import SqlStore
from services.router.visibility import visible_view

log = structlog.get_logger("router.api")

_WHEN = {
    400: "The body is not JSON",
    401: "No token, or an unknown or revoked one (WWW-Authenticate: Bearer)",
    403: "This token's role never does this (the problem says whose token to use)",
    404: "No such referral or offer of the caller's (another party's is not confirmed to exist)",
    409: "The referral or offer is no longer in a state that allows it (detail says why)",
    413: f"The body is larger than {MAX_BODY_BYTES} bytes",
    422: "A parameter, header or body field is invalid; errors[].field names it",
    503: "NATS did not store the message; retry with the same Idempotency-Key",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return problem_responses(_WHEN, *statuses)


LIST = problems(400, 401, 403, 422)
READ_ONE = problems(400, 401, 404, 422)
WRITE = problems(400, 401, 403, 404, 409, 413, 422, 503)
ANSWER = problems(400, 401, 403, 404, 409, 422, 503)  # an accept has no body
INTAKE = problems(400, 401, 403, 413, 422, 503)

Req = Request[Principal, str, State]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name="Idempotency-Key",
        required=False,
        max_length=100,
        format="uuid",
        description="A UUID: the message id, so a retried POST is one message.",
        # A header is a string or absent, never null (which Litestar would say of `| None`).
        schema_extra={"oneOf": None, "type": "string"},
    ),
]

# Examples: a referral and its first offer (offer ids derive from the referral's, as the router
# makes them), and a body of each write. ``tests/faults/test_router_api_schemathesis.py`` seeds
# these referrals first, so schemathesis's examples reach real rows.
#: An example referral, offered to a provider and still open.
OPEN_REFERRAL = uuid.UUID("3f0e1c52-7a4d-4e8b-9c61-2d5f8a7b6c10")
#: An example referral a provider has accepted.
HELD_REFERRAL = uuid.UUID("6b2d9e41-0c3f-4a57-8e19-5a7c3d2b1f08")
OPEN_OFFER = derive_message_id(OPEN_REFERRAL, "offer", 1)
_REFERRAL_IDS = [
    Example(summary="a referral with an open offer", value=str(OPEN_REFERRAL)),
    Example(summary="a referral a provider accepted", value=str(HELD_REFERRAL)),
]
_OFFER_IDS = [Example(summary="the open offer of the first", value=str(OPEN_OFFER))]
_INTAKE = [
    Example(
        summary="a client in Almonte needing help with a resume",
        value={
            "referral_id": "0d9c8b7a-6f5e-4d3c-8b2a-190f8e7d6c5b",
            "source": {"office_id": "smiths-falls"},
            "client": {
                "client_ref": "c-4f2a91",
                "location": {"community": "Almonte"},
                "language": "en",
                "eligibility": ["ow_recipient"],
            },
            "needs": ["resume_writing", "interview_skills"],
        },
    )
]
_CANCEL = [Example(summary="the client moved", value={"reason": "client moved away"})]
_DECLINE = [Example(summary="no room", value={"reason": "no intake until January"})]
_PROGRESS = [
    Example(summary="the client started", value={"status": "in_service"}),
    Example(summary="completed: employed", value={"status": "completed", "code": "employed"}),
]

ReferralIdPath = Annotated[
    uuid.UUID, PathParameter(description="The referral id OW chose.", examples=_REFERRAL_IDS)
]
OfferIdPath = Annotated[
    uuid.UUID, PathParameter(description="The offer id of the offer.", examples=_OFFER_IDS)
]
# The contracts' constraints of an office or system id and a provider id, so a query value that
# cannot be one (a NUL character, say, which PostgreSQL refuses) is a 422, not a lookup.
# (Litestar reads a parameter's constraints from its QueryParameter, not from msgspec.Meta.)
_REF = {k: getattr(get_args(OpaqueRef)[1], k) for k in ("min_length", "max_length", "pattern")}
_SLUG = {k: getattr(get_args(Slug)[1], k) for k in ("max_length", "pattern")}


def on_refused(_: Request[Any, Any, Any], exc: Refused) -> Response[Problem]:
    errors = [] if exc.field is None else [FieldError(field=exc.field, message=exc.detail)]
    titles = {403: "Forbidden", 404: "Not found", 409: "Conflict", 422: "Invalid input"}
    return problem(exc.status, titles.get(exc.status, "Refused"), exc.detail, errors)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


async def _publish(state: State, out: Outgoing, caller: Principal) -> Response[Published]:
    """Publish ``out`` as its party would, and answer 202 once JetStream has stored it."""
    mid = out.message.message_id
    try:
        await state.nc.jetstream().publish(
            out.subject, encode(out.message), headers={"Nats-Msg-Id": str(mid)}, timeout=5
        )
    except (nats.errors.Error, TimeoutError) as exc:
        log.warning("api.publish_failed", subject=out.subject, error=repr(exc))
        return problem(  # type: ignore[return-value]
            503,
            "Service unavailable",
            "NATS did not store the message; retry with the same Idempotency-Key",
            [],
            headers={"Retry-After": "2"},
        )
    url = f"/api/v1/referrals/{out.referral_id}"
    log.info(
        "api.published",
        subject=out.subject,
        message_id=str(mid),
        referral_id=str(out.referral_id),
        role=caller.role,
    )
    return Response(
        Published(message_id=mid, referral_id=out.referral_id, url=url),
        status_code=202,
        headers={"Location": url},
    )


# -- reads --------------------------------------------------------------------------------------


@get("/api/v1/me", tags=["session"], security=BEARER, responses=problems(401))
async def me(state: State, request: Req) -> Caller:
    """Who the token stands for (the pages' sign-in checks it)."""
    caller = request.user
    name = None
    if caller.provider_id is not None:
        async with state.pool.acquire() as conn:
            name = await candidates.provider_name(conn, caller.provider_id)
    return Caller(
        role=caller.role, provider_id=caller.provider_id, provider_name=name, system=caller.system
    )


@get("/api/v1/referrals", tags=["referrals"], security=BEARER, responses=LIST)
async def list_referrals(
    state: State,
    request: Req,
    status: Annotated[
        list[ReferralStatus] | None, QueryParameter(description="Any of these (repeatable).")
    ] = None,
    office: Annotated[
        str | None, QueryParameter(**_REF, description="The referring office's id.")
    ] = None,
    from_: Annotated[
        datetime.date | None,
        QueryParameter(name="from", description="Referred on or after this Ontario day."),
    ] = None,
    to: Annotated[
        datetime.date | None, QueryParameter(description="Referred on or before this day.")
    ] = None,
    system: Annotated[
        str | None, QueryParameter(**_REF, description="Admin: one OW system's.")
    ] = None,
    limit: Annotated[int, QueryParameter(ge=1, le=200, description="Page size.")] = 50,
    cursor: Annotated[
        str | None, QueryParameter(max_length=200, description="`next` of the previous page.")
    ] = None,
) -> ReferralPage:
    """An OW system's referrals (an admin's: every system's), newest first, filtered by
    status, office and the days they were referred; paged by ``next``."""
    scope = actions.list_scope(request.user, lists="referral lists", system=system)
    created_from, created_before = actions.day_bounds(from_, to)
    where = reads.ReferralFilter(
        system=scope,
        statuses=status or (),
        office=office,
        created_from=created_from,
        created_before=created_before,
        after=None if cursor is None else actions.decode_cursor(cursor),
        limit=limit + 1,
    )
    async with state.pool.acquire() as conn:
        rows = await reads.referral_summaries(conn, where)
    more = len(rows) > limit
    items = rows[:limit]
    last = items[-1] if more else None
    return ReferralPage(
        items=items,
        next=None if last is None else actions.encode_cursor(last.created_at, last.referral_id),
    )


@get("/api/v1/referrals/{referral_id:uuid}", tags=["referrals"], security=BEARER,
     responses=READ_ONE)  # fmt: skip
async def get_referral(state: State, request: Req, referral_id: ReferralIdPath) -> ReferralView:
    """A referral's state, its current offer, every offer and its full history with reasons.

    An admin sees all of it; an OW system its own referrals; a provider a referral it has or
    had an offer of, with only its own offers and history. Any other referral is a 404.
    """
    async with state.pool.acquire() as conn:
        view = await SqlStore(conn).referral_view(referral_id)
    visible = None if view is None else visible_view(view, request.user)
    if visible is None:
        raise NotFoundException(f"no referral {referral_id}")
    return visible


@get("/api/v1/offers", tags=["offers"], security=BEARER, responses=LIST)
async def list_offers(
    state: State,
    request: Req,
    provider_id: Annotated[
        str | None, QueryParameter(**_SLUG, description="Admin: one provider's.")
    ] = None,
) -> OfferList:
    """A provider's open offers (an admin's: every provider's), the soonest deadline first,
    with what the provider needs to decide."""
    scope = actions.provider_scope(request.user, lists="open offers", provider_id=provider_id)
    async with state.pool.acquire() as conn:
        return OfferList(items=await reads.open_offers(conn, scope))


@get("/api/v1/caseload", tags=["offers"], security=BEARER, responses=LIST)
async def list_caseload(
    state: State,
    request: Req,
    provider_id: Annotated[
        str | None, QueryParameter(**_SLUG, description="Admin: one provider's.")
    ] = None,
) -> Caseload:
    """The referrals a provider holds, accepted or in service, to report progress on."""
    scope = actions.provider_scope(request.user, lists="caseloads", provider_id=provider_id)
    async with state.pool.acquire() as conn:
        return Caseload(items=await reads.caseload(conn, scope))


# -- writes -------------------------------------------------------------------------------------


@post("/api/v1/referrals", tags=["referrals"], security=BEARER, responses=INTAKE,
      status_code=202)  # fmt: skip
async def refer(
    state: State,
    request: Req,
    data: Annotated[ReferralIntake, Body(examples=_INTAKE)],
    idempotency_key: IdempotencyKey = None,
) -> Response[Published]:
    """Intake for an OW system that cannot speak NATS: published as its
    ``referral.requested.<system>``."""
    out = actions.intake(data, request.user, actions.message_id(idempotency_key), _now())
    return await _publish(state, out, request.user)


@post("/api/v1/referrals/{referral_id:uuid}/cancel", tags=["referrals"], security=BEARER,
      responses=WRITE, status_code=202)  # fmt: skip
async def cancel_referral(
    state: State,
    request: Req,
    referral_id: ReferralIdPath,
    data: Annotated[CancelRequest, Body(examples=_CANCEL)],
    idempotency_key: IdempotencyKey = None,
) -> Response[Published]:
    """The referring OW system calls its referral off: cancelled before acceptance, withdrawn
    after (the provider is told the reason)."""
    mid = actions.message_id(idempotency_key)
    async with state.pool.acquire() as conn:
        owner = await reads.referral_owner(conn, referral_id)
    return await _publish(state, actions.cancel(owner, data, request.user, mid), request.user)


@post("/api/v1/offers/{offer_id:uuid}/accept", tags=["offers"], security=BEARER,
      responses=ANSWER, status_code=202)  # fmt: skip
async def accept_offer(
    state: State, request: Req, offer_id: OfferIdPath, idempotency_key: IdempotencyKey = None
) -> Response[Published]:
    """The provider accepts its open offer."""
    return await _respond(state, request, offer_id, "accept", None, idempotency_key)


@post("/api/v1/offers/{offer_id:uuid}/decline", tags=["offers"], security=BEARER,
      responses=WRITE, status_code=202)  # fmt: skip
async def decline_offer(
    state: State,
    request: Req,
    offer_id: OfferIdPath,
    data: Annotated[DeclineRequest, Body(examples=_DECLINE)],
    idempotency_key: IdempotencyKey = None,
) -> Response[Published]:
    """The provider declines its open offer, saying why; the router offers the next site."""
    return await _respond(state, request, offer_id, "decline", data.reason, idempotency_key)


async def _respond(
    state: State,
    request: Req,
    offer_id: uuid.UUID,
    decision: str,
    reason: str | None,
    idempotency_key: str | None,
) -> Response[Published]:
    mid = actions.message_id(idempotency_key)
    async with state.pool.acquire() as conn:
        offer = await reads.offer_owner(conn, offer_id)
    out = actions.respond(offer, decision, reason, request.user, mid)
    return await _publish(state, out, request.user)


@post("/api/v1/referrals/{referral_id:uuid}/progress", tags=["referrals"], security=BEARER,
      responses=WRITE, status_code=202)  # fmt: skip
async def report_progress(
    state: State,
    request: Req,
    referral_id: ReferralIdPath,
    data: Annotated[ProgressReport, Body(examples=_PROGRESS)],
    idempotency_key: IdempotencyKey = None,
) -> Response[Published]:
    """The provider holding the accepted referral reports: started, completed with an
    outcome, not started or ended early with a reason."""
    mid = actions.message_id(idempotency_key)
    async with state.pool.acquire() as conn:
        owner = await reads.referral_owner(conn, referral_id)
    out = actions.report(owner, data, request.user, mid, _now())
    return await _publish(state, out, request.user)


ROUTES = [
    me,
    list_referrals,
    get_referral,
    list_offers,
    list_caseload,
    refer,
    cancel_referral,
    accept_offer,
    decline_offer,
    report_progress,
]
