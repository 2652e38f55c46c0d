"""What every request to either service goes through before its handler (``before_request``).

- the query-string limits below: over one is a 422 problem naming the parameter;
- a JSON body is decoded strictly, as the OpenAPI document types it: Litestar converts bodies
  leniently (msgspec ``strict=False``, which query strings need), so ``"active": 0`` would
  pass as ``false`` and ``"capacity": "25"`` as 25;
- OPTIONS is answered here, with every method of the path in ``Allow``: Litestar 2.25's own
  answer lists only the methods of the first handler registered on a path.

A body larger than ``MAX_BODY_BYTES`` is refused with 413 by Litestar itself
(``request_max_body_size``) before it is read on. Declared parameters carry tighter bounds of
their own in the OpenAPI document; these limits catch everything else.
"""

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException

#: Far above any real body: a site with every text field at its longest and two opening
#: periods a day is under 4 KB, a referral under 2 KB.
MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_PARAMETERS = 16
MAX_QUERY_VALUES = 16
MAX_QUERY_CHARS = 200

#: The limits, as the OpenAPI documents' descriptions state them.
LIMITS = (
    f"bodies up to {MAX_BODY_BYTES} bytes (413 above); at most {MAX_QUERY_PARAMETERS} query "
    f"parameters, each given at most {MAX_QUERY_VALUES} times, values up to {MAX_QUERY_CHARS} "
    "characters (422 above)"
)

_AT = re.compile(r"^(?P<message>.*) - at `\$\.?(?P<path>.*)`$", re.DOTALL)


async def before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    check_query(request)
    if request.method == "OPTIONS":
        return allowed_methods(request)
    await check_body(request)
    return None


def _invalid_query(message: str, field: str) -> ValidationException:
    # ``on_validation_error`` answers it: a 422 problem whose errors[].field is ``field``.
    return ValidationException(
        detail=message, extra=[{"message": message, "key": field, "source": "query"}]
    )


def check_query(request: Request[Any, Any, Any]) -> None:
    """``ValidationException`` (422) for a query string over the limits."""
    params = request.query_params
    names = list(dict.fromkeys(params))  # a repeated name is one parameter
    if len(names) > MAX_QUERY_PARAMETERS:
        raise _invalid_query(
            f"at most {MAX_QUERY_PARAMETERS} different query parameters",
            names[MAX_QUERY_PARAMETERS][:MAX_QUERY_CHARS],
        )
    for name in names:
        if len(name) > MAX_QUERY_CHARS:
            raise _invalid_query(
                f"a query parameter name has at most {MAX_QUERY_CHARS} characters",
                name[:MAX_QUERY_CHARS],
            )
        values = params.getall(name)
        if len(values) > MAX_QUERY_VALUES:
            raise _invalid_query(f"{name} may be given at most {MAX_QUERY_VALUES} times", name)
        if any(len(value) > MAX_QUERY_CHARS for value in values):
            raise _invalid_query(
                f"a value of {name} has at most {MAX_QUERY_CHARS} characters", name
            )


async def check_body(request: Request[Any, Any, Any]) -> None:
    """``ValidationException`` (422) when the body does not decode strictly to its type."""
    data = request.route_handler.parsed_fn_signature.parameters.get("data")
    if data is None:
        return
    try:
        msgspec.json.decode(await request.body(), type=data.annotation)
    except msgspec.ValidationError as exc:
        found = _AT.match(str(exc))
        message, path = (found["message"], found["path"]) if found else (str(exc), "")
        raise ValidationException(
            detail=f"Validation failed for {request.method} {request.url.path}",
            extra=[{"message": message, "key": path, "source": "body"}],
        ) from exc
    except msgspec.DecodeError:  # (ValidationError's base) not JSON: Litestar answers 400
        return


def allowed_methods(request: Request[Any, Any, Any]) -> Response[None]:
    paths = request.route_handler.paths
    methods = {m for route in request.app.routes if route.path in paths for m in route.methods}
    return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(methods))})
