"""What the two schemathesis suites share: an app served by uvicorn in a thread, the
schemathesis CLI run over its OpenAPI document with every check, and a one-line summary."""

import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar

from services.infra.embedded import free_port
from tests.waits import until_sync

#: Test cases per operation and phase (schemathesis's default is 100).
MAX_EXAMPLES = 100
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@contextlib.contextmanager
def serving(app: Litestar, name: str) -> Iterator[str]:
    """``app`` served by uvicorn in a thread (its lifespan included); yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=name, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), f"the {name} stopped while starting"
        return server.started

    until_sync(started, within=30, what=f"the {name} to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def run_schemathesis(
    base_url: str, token: str, workdir: Path, config: Path, *options: str
) -> dict[str, Any]:
    """Run the CLI with ``config``; print its report on failure; return its JSON report."""
    report = workdir / "report.json"
    command = [
        str(SCHEMATHESIS), "--config-file", str(config), "--no-color", "run",
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
