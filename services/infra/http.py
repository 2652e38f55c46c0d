"""HTTP conventions both services share: RFC 9457 problem documents for every error."""

import re
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from contracts.directory import FieldError, Problem

PROBLEM_JSON = "application/problem+json"
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(.*)`", re.DOTALL)
_MISSING_FIELD = re.compile(r"^Object missing required field `(.*)`", re.DOTALL)


def problem(
    status: int,
    title: str,
    detail: str | None,
    errors: list[FieldError],
    headers: Mapping[str, str] | None = None,
) -> Response[Problem]:
    body = Problem(title=title, status=status, detail=detail, errors=errors)
    return Response(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def on_validation_error(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Problem]:
    # Litestar lists each failure as {"message", "key", "source"}: for a query parameter the
    # key is its name; for the body it is a path inside it ("services[0]"), or "data" for the
    # body as a whole. Body fields are reported as JSON paths ("$.services[0]", "$"), and a
    # field the body may not carry, or lacks, by its own path ("$.reserved", "$.address.name").
    errors = []
    for item in exc.extra if isinstance(exc.extra, list) else []:
        key = str(item.get("key") or "")
        message = str(item.get("message", ""))
        if item.get("source") == "body":
            key = "$" if key in ("", "data") else f"$.{key}"
            if named := _UNKNOWN_FIELD.match(message) or _MISSING_FIELD.match(message):
                key = f"{key}.{named.group(1)}"
        errors.append(FieldError(field=key or "$", message=message))
    return problem(422, "Invalid input", exc.detail, errors)


def on_http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Problem]:
    errors = []
    if exc.status_code == 400 and exc.detail.startswith("JSON is malformed"):
        # Litestar reports a body that is not JSON as a plain 400; the field is the body.
        errors.append(FieldError(field="$", message=exc.detail))
    # Headers the status requires travel with it (Allow on a 405).
    return problem(exc.status_code, exc.detail, None, errors, headers=exc.headers)


def unexpected_error_handler(
    service: str,
) -> Callable[[Request[Any, Any, Any], Exception], Response[Problem]]:
    """A handler for anything unforeseen: logged with its traceback, answered as a 500."""
    log = structlog.get_logger(service)

    def on_unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Problem]:
        log.exception(f"{service}.unhandled_error", path=request.url.path, error=repr(exc))
        status = HTTP_500_INTERNAL_SERVER_ERROR
        return problem(status, "Internal server error", "the error was logged", [])

    return on_unexpected_error
