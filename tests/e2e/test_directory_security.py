"""Who may read and write the directory over HTTP, what a body may not set, and the limits."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from litestar.testing import AsyncTestClient

from services.access.tokens import TokenStore
from tests.conftest import bearer

pytestmark = pytest.mark.e2e

EO = Path(sys.executable).parent / "eo"
A = "canadian-career-academy"
A_SITE = "canadian-career-academy-carleton-place"
B = "community-employment-services"
B_SITE = "community-employment-services-perth"
PROBLEM = "application/problem+json"


def site_body(site_id: str, provider_id: str, **changes: Any) -> dict[str, Any]:
    site = {
        "id": site_id,
        "provider_id": provider_id,
        "name": "Test office",
        "address": {"address_1": "1 Mill Street", "city": "Almonte"},
        "lat": 45.2299,
        "lon": -76.1959,
        "services": ["resume_writing"],
    }
    return site | changes


def error_fields(response: Any) -> list[str]:
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == response.status_code
    return [error["field"] for error in body.get("errors", [])]


# authentication --------------------------------------------------------------------------

READS = ["/api/v1/providers", f"/api/v1/providers/{B}", "/api/v1/sites", f"/api/v1/sites/{B_SITE}"]


@pytest.mark.parametrize("path", READS)
async def test_reads_need_a_token(client: AsyncTestClient, path: str) -> None:
    missing = await client.get(path)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert missing.headers["content-type"].startswith(PROBLEM)
    for header in (
        "Bearer not-a-token",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer ",
        "Bearer " + "x" * 5000,
    ):
        refused = await client.get(path, headers={"Authorization": header})
        assert refused.status_code == 401, header
        assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


@pytest.mark.parametrize("path", READS)
async def test_every_role_reads(
    client: AsyncTestClient, admin, staff, provider_token, path: str
) -> None:
    for headers in (admin, staff, await provider_token(A)):
        assert (await client.get(path, headers=headers)).status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sites/nearest?community=Almonte&service=resume_writing",
        "/api/v1/taxonomy",
        "/health",
        "/ready",
        "/schema/openapi.json",
    ],
)
async def test_search_taxonomy_and_operations_are_public(
    client: AsyncTestClient, path: str
) -> None:
    assert (await client.get(path)).status_code == 200


async def test_writes_need_a_token(client: AsyncTestClient) -> None:
    body = {"id": "new-provider", "name": "New Provider"}
    assert (await client.post("/api/v1/providers", json=body)).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/api/v1/providers", json=body, headers=wrong)).status_code == 401
    assert (await client.delete(f"/api/v1/providers/{A}")).status_code == 401
    assert (await client.patch(f"/api/v1/sites/{A_SITE}", json={"name": "x"})).status_code == 401


async def test_a_revoked_token_is_refused_at_once(
    client: AsyncTestClient, issue_token, conn: asyncpg.Connection
) -> None:
    token = await issue_token("staff", name="caseworker laptop")
    assert (await client.get("/api/v1/providers", headers=bearer(token))).status_code == 200
    await TokenStore(conn).revoke(token.split(".", 1)[0])
    refused = await client.get("/api/v1/providers", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_tokens_are_stored_as_digests_only(issue_token, conn: asyncpg.Connection) -> None:
    token = await issue_token("provider", A, name="Ontrac intake")
    token_id, secret = token.split(".", 1)
    rows = await conn.fetch("SELECT * FROM directory.api_token")
    stored = " ".join(f"{value!r} {value.hex() if isinstance(value, bytes) else ''}"
                      for row in rows for value in row.values())  # fmt: skip
    assert secret not in stored
    assert token not in stored
    assert [row["digest"] for row in rows] == [hashlib.sha256(token.encode()).digest()]
    assert rows[0]["id"] == token_id
    assert (rows[0]["role"], rows[0]["provider_id"], rows[0]["revoked_at"]) == ("provider", A, None)


# authorization: staff read, providers write their own records only ----------------------


async def test_staff_tokens_read_but_never_write(client: AsyncTestClient, staff) -> None:
    attempts = [
        ("POST", "/api/v1/providers", {"id": "staff-made", "name": "Staff"}),
        ("PATCH", f"/api/v1/providers/{A}", {"name": "Renamed"}),
        ("DELETE", f"/api/v1/sites/{A_SITE}", None),
        ("POST", "/api/v1/sites", site_body("staff-site", A)),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, json=body, headers=staff)
        assert response.status_code == 403, (method, path)
        assert response.headers["content-type"].startswith(PROBLEM)


#: Provider A's token on B's records, and on A's own records moved towards B.
CROSS_PROVIDER = [
    ("PUT", f"/api/v1/providers/{B}", {"id": B, "name": "Taken over"}, "provider_id"),
    ("PATCH", f"/api/v1/providers/{B}", {"name": "Taken over"}, "provider_id"),
    ("DELETE", f"/api/v1/providers/{B}", None, "provider_id"),
    ("POST", "/api/v1/providers", {"id": "a-second-provider", "name": "Another"}, "$.id"),
    ("POST", "/api/v1/sites", site_body("b-new-site", B), "$.provider_id"),
    ("PUT", f"/api/v1/sites/{B_SITE}", site_body(B_SITE, B), "site_id"),
    ("PUT", f"/api/v1/sites/{B_SITE}", site_body(B_SITE, A), "site_id"),
    ("PATCH", f"/api/v1/sites/{B_SITE}", {"name": "Taken over"}, "site_id"),
    ("PATCH", f"/api/v1/sites/{B_SITE}", {"provider_id": A}, "site_id"),
    ("DELETE", f"/api/v1/sites/{B_SITE}", None, "site_id"),
    ("PATCH", f"/api/v1/sites/{A_SITE}", {"provider_id": B}, "$.provider_id"),
    ("PUT", f"/api/v1/sites/{A_SITE}", site_body(A_SITE, B), "$.provider_id"),
    ("PUT", "/api/v1/sites/b-new-site", site_body("b-new-site", B), "$.provider_id"),
]


@pytest.mark.parametrize(("method", "path", "body", "field"), CROSS_PROVIDER)
async def test_a_provider_cannot_touch_another_providers_records(
    client: AsyncTestClient,
    admin,
    provider_token,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    field: str,
) -> None:
    before = await snapshot(client, admin)
    response = await client.request(method, path, json=body, headers=await provider_token(A))
    assert response.status_code == 403, response.text
    assert error_fields(response) == [field]
    assert await snapshot(client, admin) == before


async def snapshot(client: AsyncTestClient, headers: dict[str, str]) -> list[Any]:
    providers = (await client.get("/api/v1/providers", headers=headers)).json()["items"]
    sites = (await client.get("/api/v1/sites", headers=headers)).json()["items"]
    return [providers, sites]


async def test_a_provider_reads_everything_and_writes_its_own(
    client: AsyncTestClient, admin, provider_token
) -> None:
    mine = await provider_token(A)
    assert (await client.get(f"/api/v1/providers/{B}", headers=mine)).status_code == 200
    assert (await client.get(f"/api/v1/sites/{B_SITE}", headers=mine)).status_code == 200
    assert (await client.get("/api/v1/sites", params={"provider_id": B}, headers=mine)).is_success

    own = [
        ("PATCH", f"/api/v1/providers/{A}", {"phone": "613-555-0100"}, 200),
        ("PUT", f"/api/v1/providers/{A}", {"id": A, "name": "Canadian Career Academy"}, 200),
        ("POST", "/api/v1/sites", site_body("a-new-site", A), 201),
        ("PUT", "/api/v1/sites/a-put-site", site_body("a-put-site", A), 200),
        ("PUT", f"/api/v1/sites/{A_SITE}", site_body(A_SITE, A, name="Carleton Place"), 200),
        ("PATCH", f"/api/v1/sites/{A_SITE}", {"capacity": 3}, 200),
        ("DELETE", "/api/v1/sites/a-new-site", None, 204),
    ]
    for method, path, body, status in own:
        response = await client.request(method, path, json=body, headers=mine)
        assert response.status_code == status, (method, path, response.text)

    # Its own provider record too, once nothing depends on it.
    body = {"id": "lanark-jobs", "name": "Lanark Jobs"}
    assert (await client.post("/api/v1/providers", json=body, headers=admin)).status_code == 201
    lanark = await provider_token("lanark-jobs")
    assert (await client.delete(f"/api/v1/providers/{A}", headers=lanark)).status_code == 403
    assert (await client.delete("/api/v1/providers/lanark-jobs", headers=lanark)).status_code == 204


# server-owned fields ---------------------------------------------------------------------

SERVER_OWNED = [
    ("POST", "/api/v1/providers", {"id": "new-one", "name": "New"}, "created_at"),
    ("POST", "/api/v1/providers", {"id": "new-one", "name": "New"}, "updated_at"),
    ("POST", "/api/v1/providers", {"id": "new-one", "name": "New"}, "owner"),
    ("PUT", f"/api/v1/providers/{A}", {"id": A, "name": "A"}, "created_at"),
    ("PATCH", f"/api/v1/providers/{A}", {}, "id"),
    ("PATCH", f"/api/v1/providers/{A}", {}, "created_at"),
    ("PATCH", f"/api/v1/providers/{A}", {}, "updated_at"),
    ("PATCH", f"/api/v1/providers/{A}", {}, "owner"),
    *[
        ("POST", "/api/v1/sites", site_body("new-site", A), field)
        for field in ("reserved", "last_verified", "created_at", "updated_at", "owner")
    ],
    *[
        ("PUT", f"/api/v1/sites/{A_SITE}", site_body(A_SITE, A), field)
        for field in ("reserved", "last_verified", "created_at", "updated_at")
    ],
    *[
        ("PATCH", f"/api/v1/sites/{A_SITE}", {}, field)
        for field in ("id", "reserved", "last_verified", "created_at", "updated_at", "owner")
    ],
]


@pytest.mark.parametrize(("method", "path", "body", "field"), SERVER_OWNED)
async def test_server_owned_fields_cannot_be_set(
    client: AsyncTestClient,
    admin,
    method: str,
    path: str,
    body: dict[str, Any],
    field: str,
) -> None:
    before = await snapshot(client, admin)
    value: Any = 99 if field == "reserved" else "2020-01-01T00:00:00Z"
    response = await client.request(method, path, json=body | {field: value}, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [f"$.{field}"]
    assert field in response.json()["errors"][0]["message"]
    assert await snapshot(client, admin) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (f"/api/v1/providers/{A}", {"active": 0}, "$.active"),
        (f"/api/v1/providers/{A}", {"active": "false"}, "$.active"),
        (f"/api/v1/sites/{A_SITE}", {"capacity": "25"}, "$.capacity"),
        (f"/api/v1/sites/{A_SITE}", {"address": {"address_1": "1 Main", "city": 7}},
         "$.address.city"),
    ],
)  # fmt: skip
async def test_bodies_are_typed_strictly(
    client: AsyncTestClient, admin, path: str, body: dict[str, Any], field: str
) -> None:
    before = await snapshot(client, admin)
    response = await client.patch(path, json=body, headers=admin)
    assert response.status_code == 422, response.text
    assert error_fields(response) == [field]
    assert await snapshot(client, admin) == before


async def test_the_id_of_a_put_is_the_path(client: AsyncTestClient, admin) -> None:
    body = site_body("another-id", A)
    response = await client.put(f"/api/v1/sites/{A_SITE}", json=body, headers=admin)
    assert response.status_code == 422
    assert error_fields(response) == ["$.id"]
    provider = {"id": B, "name": "B"}
    response = await client.put(f"/api/v1/providers/{A}", json=provider, headers=admin)
    assert (response.status_code, error_fields(response)) == (422, ["$.id"])


# limits ----------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_413(client: AsyncTestClient, admin) -> None:
    big = {"id": "big", "name": "Big", "description": "x" * 70_000}
    response = await client.post("/api/v1/providers", json=big, headers=admin)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith(PROBLEM)


async def test_a_streamed_body_over_the_limit_is_413(client: AsyncTestClient, admin) -> None:
    # No Content-Length: the body is counted as it arrives. (The test client always sends
    # one, so this speaks ASGI to the app directly.)
    chunks = [b" " * 1024] * 80
    incoming = [{"type": "http.request", "body": c, "more_body": True} for c in chunks]
    incoming.append({"type": "http.request", "body": b"", "more_body": False})
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = admin | {"content-type": "application/json", "transfer-encoding": "chunked"}
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/api/v1/providers", "raw_path": b"/api/v1/providers",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000), "state": {},
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    await client.app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert (b"content-type", PROBLEM.encode()) in start["headers"]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/providers", {"limit": 101}, "limit"),
        ("/api/v1/sites", {"limit": 0}, "limit"),
        ("/api/v1/sites", {"offset": 10**7}, "offset"),
        ("/api/v1/sites", {"provider_id": "a\x00b"}, "provider_id"),
        (
            "/api/v1/sites/nearest",
            {"community": "Almonte", "service": ["job_search"] * 50},
            "service",
        ),
        (
            "/api/v1/sites/nearest",
            {"community": "Almonte", "service": ["job_search"] * 17},
            "service",
        ),
        ("/api/v1/sites/nearest", {"community": "x" * 10_000}, "community"),
        ("/api/v1/sites/nearest", {"community": "Almonte", "note": "x" * 10_000}, "note"),
        ("/api/v1/sites/nearest", {"community": "Almonte", "note": ["x"] * 17}, "note"),
        ("/api/v1/sites/nearest", {f"p{i}": "1" for i in range(17)}, "p16"),
        (
            "/api/v1/sites/nearest",
            {"accessibility": ["large_print"] * 7, "lat": 45, "lon": -76},
            "accessibility",
        ),
    ],
)
async def test_query_limits_are_422_naming_the_parameter(
    client: AsyncTestClient, staff, path: str, params: dict[str, Any], field: str
) -> None:
    response = await client.get(path, params=params, headers=staff)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)


@pytest.mark.parametrize("site_id", ["a%00b", "Not-A-Slug", "x" * 101])
async def test_ids_that_cannot_exist_are_422_not_a_crash(
    client: AsyncTestClient, admin, site_id: str
) -> None:
    for method in ("GET", "DELETE"):
        response = await client.request(method, f"/api/v1/sites/{site_id}", headers=admin)
        assert response.status_code == 422, response.text
        assert error_fields(response) == ["site_id"]


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/api/v1/providers", "GET, OPTIONS, POST"),
        (f"/api/v1/sites/{A_SITE}", "DELETE, GET, OPTIONS, PATCH, PUT"),
        ("/health", "GET, OPTIONS"),
    ],
)
async def test_options_lists_every_method_of_the_path(
    client: AsyncTestClient, path: str, allowed: str
) -> None:
    response = await client.options(path)
    assert (response.status_code, response.headers["allow"]) == (204, allowed)


async def test_an_undeclared_method_is_405_with_allow(client: AsyncTestClient) -> None:
    response = await client.request("TRACE", "/health")
    assert response.status_code == 405
    assert "GET" in response.headers["allow"]
    assert response.headers["content-type"].startswith(PROBLEM)


# the OpenAPI document says all this -----------------------------------------------------


async def test_openapi_declares_the_bearer_scheme_and_problem_responses(
    client: AsyncTestClient,
) -> None:
    schema = (await client.get("/schema/openapi.json")).json()
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    public = {("get", "/api/v1/sites/nearest"), ("get", "/api/v1/communities"),
              ("get", "/api/v1/taxonomy"), ("get", "/health"), ("get", "/ready")}  # fmt: skip
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if (method, path) in public:
                assert "security" not in operation, (method, path)
                continue
            assert operation["security"] == [{"bearer": []}], (method, path)
            expected = {"401", "422"} | (
                {"403", "413"} if method in ("post", "put", "patch") else set()
            )
            assert expected <= operation["responses"].keys(), (method, path)
            for status in expected:
                assert PROBLEM in operation["responses"][status]["content"], (method, path, status)
    for name in ("ProviderCreate", "ProviderPatch", "SiteCreate", "SitePatch", "Address"):
        assert schema["components"]["schemas"][name]["additionalProperties"] is False, name


# eo token --------------------------------------------------------------------------------


def eo_token(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": database_url, "EO_LOG_LEVEL": "warning"}
    return subprocess.run(
        [str(EO), "token", *args], env=env, capture_output=True, text=True, timeout=60
    )


async def test_eo_token_issues_lists_and_revokes(
    client: AsyncTestClient, fresh_database_url: str
) -> None:
    issued = eo_token(fresh_database_url, "issue", "--role", "provider", "--provider", A,
                      "--name", "Academy front desk")  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.split("token: ", 1)[1].split()[0]
    token_id = token.split(".", 1)[0]
    assert f"issued {token_id}: provider of {A}" in issued.stdout
    mine = bearer(token)
    patched = await client.patch(f"/api/v1/sites/{A_SITE}", json={"capacity": 5}, headers=mine)
    assert patched.status_code == 200
    assert (await client.patch(f"/api/v1/sites/{B_SITE}", json={}, headers=mine)).status_code == 403

    listed = eo_token(fresh_database_url, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if line.startswith(token_id))
    assert line.split()[:3] == [token_id, "provider", A]
    assert line.endswith("Academy front desk")
    assert token.split(".", 1)[1] not in listed.stdout

    revoked = eo_token(fresh_database_url, "revoke", token_id)
    assert revoked.returncode == 0, revoked.stderr
    assert (await client.get("/api/v1/sites", headers=mine)).status_code == 401
    listed = eo_token(fresh_database_url, "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(token_id))
    assert line.count(" UTC") == 2  # created, and now revoked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["issue", "--role", "provider", "--name", "x"], "names its provider"),
        (["issue", "--role", "staff", "--provider", A, "--name", "x"], "names its provider"),
        (["issue", "--role", "provider", "--provider", "nobody", "--name", "x"], "no provider"),
        (["revoke", "tok_000000000000"], "no token"),
        (["issue", "--role", "ow", "--name", "x"], "names its OW system"),
        (["issue", "--role", "admin", "--system", "ow-lanark", "--name", "x"], "names its OW"),
        (["issue", "--role", "ow", "--system", "OW Lanark", "--name", "x"], "is not an id"),
    ],
)
def test_eo_token_explains_what_it_refuses(
    fresh_database_url: str, args: list[str], message: str
) -> None:
    result = eo_token(fresh_database_url, *args)
    assert result.returncode == 1
    assert message in result.stderr


async def test_eo_token_issues_ow_tokens_that_read_but_never_write(
    client: AsyncTestClient, fresh_database_url: str, conn: asyncpg.Connection
) -> None:
    issued = eo_token(fresh_database_url, "issue", "--role", "ow", "--system", "ow-lanark",
                      "--name", "Lanark referral desk")  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.split("token: ", 1)[1].split()[0]
    token_id = token.split(".", 1)[0]
    assert f"issued {token_id}: ow of ow-lanark" in issued.stdout
    listed = eo_token(fresh_database_url, "list")
    line = next(line for line in listed.stdout.splitlines() if line.startswith(token_id))
    assert line.split()[:3] == [token_id, "ow", "ow-lanark"]

    ow = bearer(token)
    assert (await client.get("/api/v1/sites", headers=ow)).status_code == 200
    assert (await client.patch(f"/api/v1/sites/{A_SITE}", json={}, headers=ow)).status_code == 403

    # The table holds the rule too: an ow token names its system, and no other token does.
    for role, system in (("ow", None), ("staff", "ow-lanark"), ("provider", "ow-lanark")):
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO directory.api_token (id, digest, role, provider_id, system, name)"
                " VALUES ('tok_0123456789ab', $1, $2, $3, $4, 'x')",
                bytes(32),
                role,
                A if role == "provider" else None,
                system,
            )
