"""The router's HTTP API under schemathesis, every check, against its own OpenAPI document.

The router runs for real (uvicorn on a free loopback port, its own fresh database, the session's
NATS, its consumer handling what the API publishes), seeded first with the two referrals its
document's examples name: one offered to Canadian Career Academy and still open, one CCA
accepted. The schemathesis CLI then runs every phase (examples, coverage, fuzzing, stateful)
with every check, once per role over every operation: the provider (CCA, whose offer and
caseload these are), the OW system that sent them, and an admin (who reads everything and may
write nothing). Accepted writes publish real messages, which the router handles.
``router_schemathesis.toml`` lists the few places where input valid by the document may still
be refused, and why. Meanwhile every access-log line is captured: none may carry a token or a
query string.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs

from services.router.api import HELD_REFERRAL, OPEN_OFFER, OPEN_REFERRAL
from services.router.app import create_app
from services.router.settings import RouterSettings
from tests.conftest import ADMIN_TOKEN
from tests.faults.schemathesis_runs import run_schemathesis, serving, summary
from tests.referrals import CCA, SYSTEM, Observer, answer, make_request, send_request, send_response

pytestmark = pytest.mark.faults

CONFIG = Path(__file__).with_name("router_schemathesis.toml")


async def seed(nc: NatsClient, observer: Observer) -> None:
    """The referrals the document's examples name: one with CCA's open offer, one CCA holds."""
    js = nc.jetstream()
    await send_request(js, make_request(referral_id=HELD_REFERRAL))
    held = await observer.until_offer(HELD_REFERRAL, 1)
    assert held.provider_id == CCA
    await send_response(js, CCA, answer(held, "accept"))
    await observer.until_status(HELD_REFERRAL, "accepted")
    await send_request(js, make_request(referral_id=OPEN_REFERRAL))
    offered = await observer.until_offer(OPEN_REFERRAL, 1)
    assert (offered.provider_id, offered.offer_id) == (CCA, OPEN_OFFER)


async def test_router_api_conforms_to_its_openapi(
    router_settings: RouterSettings,
    observer: Observer,
    nc: NatsClient,
    roomy_sites: str,
    issue_token: Any,
    tmp_path: Path,
) -> None:
    provider = await issue_token("provider", CCA, name="schemathesis provider")
    ow = await issue_token("ow", system=SYSTEM, name="schemathesis ow")
    # The provider first, while its offer is open; then the OW system, which may withdraw them.
    runs = [
        (f"provider {CCA}", provider),
        (f"ow system {SYSTEM}", ow),
        ("admin", ADMIN_TOKEN),
    ]
    outcomes: list[dict[str, Any]] = []
    with capture_logs() as logs, serving(create_app(router_settings), "router") as base_url:
        await seed(nc, observer)
        for label, token in runs:
            workdir = tmp_path / str(len(outcomes))
            workdir.mkdir()
            outcome = await asyncio.to_thread(run_schemathesis, base_url, token, workdir, CONFIG)
            print(summary(label, outcome))
            outcomes.append(outcome)
    cases = sum(outcome["test_cases"]["generated"] for outcome in outcomes)
    failures = sum(outcome["test_cases"]["unique_failures"] for outcome in outcomes)
    published = sum(1 for line in logs if line["event"] == "api.published")
    access = [line for line in logs if line["event"] == "http.request"]
    print(
        f"schemathesis router API: {len(outcomes)} runs, {cases} test cases, {failures} "
        f"failures; {published} writes published, {len(access)} requests logged"
    )
    for outcome in outcomes:
        assert outcome["returncode"] == 0
        assert outcome["test_cases"]["unique_failures"] == 0
        assert outcome["errors"] == []
    # Writes reached real rows, and the requests left access lines without their secrets.
    assert published > 0
    reached = {line["path"].split("/")[3] for line in access if line["path"].startswith("/api/")}
    assert reached == {"me", "referrals", "offers", "caseload"}
    secrets = [token.partition(".")[2] for token in (provider, ow)] + [ADMIN_TOKEN]
    for line in access:
        assert "?" not in line["path"], line
        assert not any(secret in repr(line) for secret in secrets), line
