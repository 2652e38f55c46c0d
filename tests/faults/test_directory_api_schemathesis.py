"""The directory API under schemathesis, every check, against its own OpenAPI document.

The directory runs for real (uvicorn on a free loopback port, its own fresh database) and the
schemathesis CLI runs every phase (examples, coverage, fuzzing, stateful) with every check:
no server error, no response outside the document (status, content type, schema, headers),
invalid input refused, valid input accepted, and no operation that ignores the bearer
authentication it declares. Once with an admin token and once with a provider's token over
every operation, then with a staff token over the reads. ``directory_schemathesis.toml``
lists the few places where input valid by the document may still be refused, and why.
"""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from services.directory.app import create_app
from services.directory.settings import DirectorySettings
from tests.conftest import ADMIN_TOKEN
from tests.faults.schemathesis_runs import run_schemathesis, serving, summary

pytestmark = pytest.mark.faults

CONFIG = Path(__file__).with_name("directory_schemathesis.toml")
#: The provider whose token fuzzes every operation: writes to others' records must be 403.
PROVIDER = "canadian-career-academy"


async def test_directory_api_conforms_to_its_openapi(
    directory_settings: DirectorySettings, issue_token: Any, tmp_path: Path
) -> None:
    staff = await issue_token("staff", name="schemathesis staff")
    provider = await issue_token("provider", PROVIDER, name="schemathesis provider")
    runs = [
        ("admin, every operation", ADMIN_TOKEN, ()),
        (f"provider {PROVIDER}, every operation", provider, ()),
        ("staff, reads", staff, ("--include-method", "GET")),
    ]
    outcomes: list[dict[str, Any]] = []
    with serving(create_app(directory_settings), "directory") as base_url:
        for label, token, options in runs:
            workdir = tmp_path / str(len(outcomes))
            workdir.mkdir()
            outcome = await asyncio.to_thread(
                run_schemathesis, base_url, token, workdir, CONFIG, *options
            )
            print(summary(label, outcome))
            outcomes.append(outcome)
    cases = sum(outcome["test_cases"]["generated"] for outcome in outcomes)
    failures = sum(outcome["test_cases"]["unique_failures"] for outcome in outcomes)
    print(
        f"schemathesis directory API: {len(outcomes)} runs, {cases} test cases, {failures} failures"
    )
    for outcome in outcomes:
        assert outcome["returncode"] == 0
        assert outcome["test_cases"]["unique_failures"] == 0
        assert outcome["errors"] == []
