"""`eo run` (what `make run` starts) as a user sees it: up, seeded, routing the demo referrals,
answering the `eo referral` commands, and stopped by Ctrl-C.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from services.infra.embedded import free_port
from tests.waits import until_sync

pytestmark = pytest.mark.e2e

EO = Path(sys.executable).parent / "eo"


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def flat(text: str) -> str:
    return " ".join(text.split())


def wait_ready(process: subprocess.Popen[Any], url: str, seconds: float = 90) -> None:
    """Until ``url`` answers 200; fails at once if ``eo run`` exits meanwhile."""

    def ready() -> bool:
        assert process.poll() is None, "eo run exited early"
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    until_sync(ready, within=seconds, every=0.2, what=f"{url} to answer 200")


class Printed:
    """What a process prints on a pipe, read by a thread as it comes."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._stream = stream
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line)

    def text(self) -> str:
        return "".join(self.lines)

    def closed(self, seconds: float) -> str:
        """Everything printed, once the pipe has closed."""
        self._reader.join(seconds)
        assert not self._reader.is_alive(), f"the pipe is still open after {seconds} s"
        self._stream.close()
        return self.text()


def demo_summary(printed: Printed) -> str | None:
    """The demo's paths of its sample referrals, once it has printed them (all are final)."""
    text = printed.text()
    start = text.find("Paths of the sample referrals:")
    end = text.find("Full history:", max(start, 0))
    return text[start:end] if 0 <= start < end else None


def eo_run_environment(prefix: str) -> tuple[Path, dict[str, int], dict[str, str]]:
    """A state folder, free ports and the environment for an `eo run` of a test's own."""
    state = Path(tempfile.mkdtemp(prefix=prefix))
    ports = {
        "EO_PG_PORT": free_port(),
        "EO_NATS_PORT": free_port(),
        "DIRECTORY_PORT": free_port(),
        "ROUTER_PORT": free_port(),
    }
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NATS_URL")}
    env |= {k: str(v) for k, v in ports.items()} | {"EO_STATE_DIR": str(state)}
    return state, ports, env


def test_eo_run_routes_the_demo_and_cli_referrals_until_ctrl_c() -> None:
    state, ports, env = eo_run_environment("eo-test-run-")
    process = subprocess.Popen(
        [str(EO), "run"],
        env=env | {"PYTHONUNBUFFERED": "1"},  # each line as it is printed, not when it exits
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    printed = Printed(process.stdout)
    base = f"http://127.0.0.1:{ports['DIRECTORY_PORT']}"
    router = f"http://127.0.0.1:{ports['ROUTER_PORT']}"
    try:
        wait_ready(process, f"{base}/ready")
        wait_ready(process, f"{router}/ready")
        response = httpx.get(
            f"{base}/api/v1/sites/nearest",
            params={"community": "Almonte", "service": "resume_writing"},
        )
        assert response.status_code == 200
        first = response.json()["results"][0]
        assert first["provider"]["name"] == "Canadian Career Academy"
        assert (state / "admin-token").stat().st_mode & 0o077 == 0

        client_env = env | {"NATS_URL": f"nats://127.0.0.1:{ports['EO_NATS_PORT']}"}
        send = ["referral", "send", "--community", "Perth", "--need", "job_search", "--wait"]
        sent = subprocess.run(
            [str(EO), *send],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert sent.returncode == 0, sent.stderr
        assert "offered community-employment-services-perth (0.0 km)" in flat(sent.stdout)
        referral_id = sent.stdout.split("sent referral ", 1)[1].split()[0]
        shown = subprocess.run(
            [str(EO), "referral", "show", referral_id],
            env=client_env | {"ROUTER_URL": router},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert '"status": "offered"' in shown.stdout
        # The demo's sample provider answers after a second per step; once all its referrals
        # are final, the demo prints their paths.
        until_sync(lambda: demo_summary(printed), within=30, every=0.1, what="the demo's paths")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        output = printed.closed(60)
        shutil.rmtree(state, ignore_errors=True)
    assert process.returncode == 0, output
    assert f"postgresql://postgres@127.0.0.1:{ports['EO_PG_PORT']}/eo" in output
    assert f"nats://127.0.0.1:{ports['EO_NATS_PORT']}" in output
    assert "JetStream enabled" in output
    # The demo's paths: an accept, a decline re-routed, and an unmatched French referral.
    assert "Paths of the sample referrals:" in output, output
    assert "declined community-employment-services-perth" in flat(output)
    assert "accepted ontrac-employment-resource-services-smiths-falls (19.5 km)" in flat(output)
    assert "unmatched - no suitable site: 3 site(s) excluded (language 3)" in flat(output)
    for port in ports.values():
        assert not port_open(port)
