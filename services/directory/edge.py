"""What every request to the directory goes through before its handler (``before_request``).

- the query-string limits (``limits.check_query``);
- a JSON body is decoded strictly, as the OpenAPI document types it: Litestar converts bodies
  leniently (msgspec ``strict=False``, which query strings need), so ``"active": 0`` would
  pass as ``false`` and ``"capacity": "25"`` as 25;
- OPTIONS is answered here, with every method of the path in ``Allow``: Litestar 2.25's own
  answer lists only the methods of the first handler registered on a path.
"""

import re
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import ValidationException

from services.directory.limits import check_query

_AT = re.compile(r"^(?P<message>.*) - at `\$\.?(?P<path>.*)`$", re.DOTALL)


async def before_request(request: Request[Any, Any, Any]) -> Response[None] | None:
    check_query(request)
    if request.method == "OPTIONS":
        return allowed_methods(request)
    await check_body(request)
    return None


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
