"""Request limits of the directory API: over a limit is a 413 or 422 problem, never a crash.

- a request body larger than ``MAX_BODY_BYTES`` is refused with 413 before it is read on;
- a page (``limit``) holds at most 100 items (controllers.py), otherwise 422;
- the query string has at most ``MAX_QUERY_PARAMETERS`` names, each at most
  ``MAX_QUERY_VALUES`` times (the repeatable ``service`` and ``accessibility``), each value at
  most ``MAX_QUERY_CHARS`` characters, otherwise 422 naming the parameter. Declared parameters
  carry tighter bounds of their own in the OpenAPI document; these catch everything else.
"""

from typing import Any

from litestar import Request

from services.directory.errors import InvalidInput

#: Far above any real body: a site with every text field at its longest and two opening
#: periods a day is under 4 KB.
MAX_BODY_BYTES = 64 * 1024
MAX_QUERY_PARAMETERS = 16
MAX_QUERY_VALUES = 16
MAX_QUERY_CHARS = 200


def check_query(request: Request[Any, Any, Any]) -> None:
    """``before_request`` hook: ``InvalidInput`` for a query string over the limits."""
    params = request.query_params
    names = list(dict.fromkeys(params))  # a repeated name is one parameter
    if len(names) > MAX_QUERY_PARAMETERS:
        raise InvalidInput(
            f"at most {MAX_QUERY_PARAMETERS} different query parameters",
            field=names[MAX_QUERY_PARAMETERS][:MAX_QUERY_CHARS],
        )
    for name in names:
        if len(name) > MAX_QUERY_CHARS:
            raise InvalidInput(
                f"a query parameter name has at most {MAX_QUERY_CHARS} characters",
                field=name[:MAX_QUERY_CHARS],
            )
        values = params.getall(name)
        if len(values) > MAX_QUERY_VALUES:
            raise InvalidInput(f"{name} may be given at most {MAX_QUERY_VALUES} times", field=name)
        if any(len(value) > MAX_QUERY_CHARS for value in values):
            raise InvalidInput(
                f"a value of {name} has at most {MAX_QUERY_CHARS} characters", field=name
            )
