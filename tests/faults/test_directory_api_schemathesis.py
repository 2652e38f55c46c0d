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
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from services.directory.app import create_app
from services.directory.settings import DirectorySettings
from services.infra.embedded import free_port
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.faults

#: Test cases per operation and phase (schemathesis's default is 100).
MAX_EXAMPLES = 100
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = Path(__file__).with_name("directory_schemathesis.toml")
#: The provider whose token fuzzes every operation: writes to others' records must be 403.
PROVIDER = "canadian-career-academy"


@contextlib.contextmanager
def serving(settings: DirectorySettings) -> Iterator[str]:
    """The directory served by uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="directory", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "the directory stopped while starting"
        assert time.monotonic() < deadline, "the directory did not start in 30 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run_schemathesis(base_url: str, token: str, workdir: Path, *options: str) -> dict[str, Any]:
    """Run the CLI; print its report on failure; return its JSON report."""
    report = workdir / "report.json"
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "--no-color", "run",
        f"{base_url}/schema/openapi.json",
        "--checks", "all",
        "--max-examples", str(MAX_EXAMPLES),
        "--header", f"Authorization: Bearer {token}",
        # One worker: on CPython 3.11 two threads parsing sources at once (Hypothesis does
        # that to describe strategies) can fail with "AST constructor recursion depth mismatch".
        "--workers", "1",
        "--report", "json", "--report-json-path", str(report),
        *options,
    ]  # fmt: skip
    # Its working folder: schemathesis keeps a cache there.
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        print(result.stdout, result.stderr, sep="\n")
    assert report.exists(), result.stderr
    outcome: dict[str, Any] = json.loads(report.read_text())
    outcome["returncode"] = result.returncode
    return outcome


def summary(label: str, outcome: dict[str, Any]) -> str:
    cases = outcome["test_cases"]
    operations = outcome["operations"]
    phases = " ".join(f"{name}={phase['status']}" for name, phase in outcome["phases"].items())
    return (
        f"schemathesis {label}: {operations['tested']}/{operations['selected']} operations, "
        f"{cases['generated']} test cases, "
        f"{cases['unique_failures']} failures, {len(outcome['errors'])} errors; {phases}; "
        f"{outcome['running_time']:.0f} s, seed {outcome['seed']}"
    )


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
    with serving(directory_settings) as base_url:
        for label, token, options in runs:
            workdir = tmp_path / str(len(outcomes))
            workdir.mkdir()
            outcome = await asyncio.to_thread(run_schemathesis, base_url, token, workdir, *options)
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
