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
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs

from services.infra.embedded import free_port
from services.router.api import HELD_REFERRAL, OPEN_OFFER, OPEN_REFERRAL
from services.router.app import create_app
from services.router.settings import RouterSettings
from tests.conftest import ADMIN_TOKEN
from tests.faults.test_directory_api_schemathesis import SCHEMATHESIS, summary
from tests.referrals import CCA, SYSTEM, Observer, answer, make_request, send_request, send_response

pytestmark = pytest.mark.faults

#: Test cases per operation and phase (schemathesis's default is 100).
MAX_EXAMPLES = 100
CONFIG = Path(__file__).with_name("router_schemathesis.toml")


@contextlib.contextmanager
def serving(app: Litestar) -> Iterator[str]:
    """``app`` served by uvicorn in a thread (its lifespan included); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="router", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the router stopped while starting"
        assert time.monotonic() < deadline, "the router did not start in 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run_schemathesis(base_url: str, token: str, workdir: Path) -> dict[str, Any]:
    """Run the CLI over every operation; print its report on failure; return its JSON report."""
    report = workdir / "report.json"
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run",
        f"{base_url}/schema/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--header", f"Authorization: Bearer {token}",
        # One worker: see the directory's suite (CPython 3.11 and Hypothesis's parsing).
        "--workers", "1",
        "--report", "json", "--report-json-path", str(report),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        print(result.stdout, result.stderr, sep="\n")
    assert report.exists(), result.stderr
    outcome: dict[str, Any] = json.loads(report.read_text())
    outcome["returncode"] = result.returncode
    return outcome


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
    with capture_logs() as logs, serving(create_app(router_settings)) as base_url:
        await seed(nc, observer)
        for label, token in runs:
            workdir = tmp_path / str(len(outcomes))
            workdir.mkdir()
            outcome = await asyncio.to_thread(run_schemathesis, base_url, token, workdir)
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
