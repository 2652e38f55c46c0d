"""The request edge and the access log both services share (``services.infra``), on a small
app of their own: no database, no servers."""

from typing import Any

import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import FromQuery, JSONBody
from litestar.testing import AsyncTestClient
from litestar.types import ASGIApp, Receive, Scope, Send
from structlog.testing import capture_logs

from services.access.principal import Principal
from services.infra.access_log import access_logged
from services.infra.edge import MAX_BODY_BYTES, MAX_QUERY_CHARS, before_request
from services.infra.http import on_http_error, on_validation_error
from services.infra.openapi import ClosedStructSchemaPlugin

SECRET = "tok_0123456789ab.s3cret-part-of-the-token"


class Thing(msgspec.Struct, forbid_unknown_fields=True):
    count: int
    active: bool = True


@get("/things")
async def list_things(q: FromQuery[str | None] = None) -> dict[str, Any]:
    return {"q": q}


@post("/things")
async def add_thing(data: JSONBody[Thing]) -> Thing:
    return data


def as_caller(app: ASGIApp) -> ASGIApp:
    """Stands in for the bearer check: a ``Principal`` in the scope of the route's request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        scope["user"] = Principal(token_id="tok_0123456789ab", role="provider", provider_id="p")
        await app(scope, receive, send)

    return middleware


def make_app() -> Litestar:
    app = Litestar(
        route_handlers=[list_things, add_thing],
        middleware=[as_caller],
        before_request=before_request,
        exception_handlers={
            ValidationException: on_validation_error,
            HTTPException: on_http_error,
        },
        plugins=[ClosedStructSchemaPlugin()],
        request_max_body_size=MAX_BODY_BYTES,
        logging_config=None,
    )
    return access_logged(app, "test")


@pytest.fixture
async def client() -> Any:
    async with AsyncTestClient(app=make_app()) as test_client:
        yield test_client


def fields(reply: Any) -> list[str]:
    return [error["field"] for error in reply.json()["errors"]]


async def test_a_body_is_decoded_strictly_naming_the_field(client: AsyncTestClient) -> None:
    assert (await client.post("/things", json={"count": 2})).status_code == 201
    for body, field in [
        ({"count": "2"}, "$.count"),  # Litestar alone would take "2" as 2
        ({"count": 2, "active": 0}, "$.active"),
        ({"count": 2, "extra": 1}, "$.extra"),
        ({}, "$.count"),
    ]:
        refused = await client.post("/things", json=body)
        assert refused.status_code == 422, body
        assert refused.headers["content-type"].startswith("application/problem+json")
        assert fields(refused) == [field], body
    assert (await client.post("/things", content=b"{not json")).status_code == 400
    too_big = await client.post("/things", content=b" " * (MAX_BODY_BYTES + 1))
    assert too_big.status_code == 413


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({f"p{i}": "1" for i in range(17)}, "p16"),
        ({"q": ["x"] * 17}, "q"),
        ({"q": "x" * (MAX_QUERY_CHARS + 1)}, "q"),
        ({"n" * (MAX_QUERY_CHARS + 1): "1"}, "n" * MAX_QUERY_CHARS),
    ],
)
async def test_query_limits_are_422_naming_the_parameter(
    client: AsyncTestClient, params: dict[str, Any], field: str
) -> None:
    refused = await client.get("/things", params=params)
    assert refused.status_code == 422
    assert fields(refused) == [field]


async def test_options_lists_every_method_of_the_path(client: AsyncTestClient) -> None:
    answer = await client.options("/things")
    assert (answer.status_code, answer.headers["allow"]) == (204, "GET, OPTIONS, POST")


async def test_a_closed_struct_is_closed_in_the_openapi_document(client: AsyncTestClient) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["components"]["schemas"]["Thing"]["additionalProperties"] is False


async def test_each_request_is_one_access_line_without_query_headers_or_body(
    client: AsyncTestClient,
) -> None:
    with capture_logs() as logs:
        await client.get(
            "/things",
            params={"q": "Marie Tremblay"},
            headers={"Authorization": f"Bearer {SECRET}"},
        )
        await client.post("/things", json={"count": "secret body"})
        await client.get("/nowhere?q=1")  # no route: still logged
        await client.delete("/things")  # 405
        await client.get("/things%3Fx/y")  # an encoded "?" is part of the path
    lines = [line for line in logs if line["event"] == "http.request"]
    assert [(line["method"], line["path"], line["status"]) for line in lines] == [
        ("GET", "/things", 200),
        ("POST", "/things", 422),
        ("GET", "/nowhere", 404),
        ("DELETE", "/things", 405),
        ("GET", "/things%3Fx/y", 404),
    ]
    assert [line.get("role") for line in lines] == ["provider", "provider", None, None, None]
    for line in lines:
        assert line["service"] == "test"
        assert isinstance(line["duration_ms"], float)
        assert line["log_level"] == "info"
    text = repr(lines)
    for secret in (SECRET, "Marie", "secret body", "Bearer", "q="):
        assert secret not in text
