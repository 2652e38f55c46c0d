"""`eo run` (what `make run` starts) as a user sees it: up, seeded, telling the demo's story of
contract v1.1 (accepted then in service then completed, not started, re-routed, withdrawn,
unmatched; the places in use before and after), answering the `eo referral` commands through a
referral's whole life, giving a provider added through the API its NATS login, and stopped by
Ctrl-C.
"""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from services.infra.embedded import free_port
from tests.waits import until_sync

pytestmark = pytest.mark.e2e

EO = Path(sys.executable).parent / "eo"
CES = "community-employment-services"


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


def logs_in(port: int, login_file: Path) -> bool:
    """The login in ``login_file`` (``<user>.json``) connects to the NATS on ``port``."""
    if not login_file.exists():
        return False
    login = json.loads(login_file.read_text())

    async def quiet(_: Exception) -> None:
        pass

    async def attempt() -> bool:
        nc = NatsClient()
        try:
            await nc.connect(
                f"nats://127.0.0.1:{port}",
                user=login["user"],
                password=login["password"],
                inbox_prefix=login["inbox_prefix"],
                allow_reconnect=False,
                connect_timeout=1,
                error_cb=quiet,
            )
        except nats.errors.Error:
            return False
        finally:
            await nc.close()
        return True

    return asyncio.run(attempt())


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

        # A provider added through the API gets its NATS login within a few seconds.
        token = (state / "admin-token").read_text().strip()
        added = httpx.post(
            f"{base}/api/v1/providers",
            json={"id": "lanark-jobs", "name": "Lanark Jobs"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert added.status_code == 201, added.text
        login = state / "credentials" / "provider-lanark-jobs.json"
        until_sync(
            lambda: logs_in(ports["EO_NATS_PORT"], login),
            within=30,
            every=0.2,
            what="the new provider's NATS login to connect",
        )

        client_env = env | {
            "NATS_URL": f"nats://127.0.0.1:{ports['EO_NATS_PORT']}",
            "ROUTER_URL": router,
        }

        def eo(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [str(EO), *args], env=client_env, capture_output=True, text=True, timeout=60
            )

        # A referral's whole life through the `eo referral` commands, each party as itself.
        sent = eo("referral", "send", "--community", "Perth", "--need", "job_search", "--wait")
        assert sent.returncode == 0, sent.stderr
        assert "offered community-employment-services-perth (0.0 km)" in flat(sent.stdout)
        referral_id = sent.stdout.split("sent referral ", 1)[1].split()[0]
        shown = eo("referral", "show", referral_id)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["status"] == "offered"

        def reaches(status: str) -> Callable[[], bool]:
            return lambda: (
                json.loads(eo("referral", "show", referral_id).stdout)["status"] == status
            )

        answered = eo(
            "referral", "respond", "--provider", CES, "--referral", referral_id, "--accept"
        )
        assert answered.returncode == 0, answered.stderr
        until_sync(reaches("accepted"), within=30, every=0.2, what="accepted")
        unfit = eo("referral", "progress", "--provider", CES, "--referral", referral_id,
                   "--status", "completed")  # fmt: skip
        assert unfit.returncode == 1
        assert "needs a code" in unfit.stderr
        started = eo("referral", "progress", "--provider", CES, "--referral", referral_id,
                     "--status", "in_service")  # fmt: skip
        assert started.returncode == 0, started.stderr
        until_sync(reaches("in_service"), within=30, every=0.2, what="in_service")
        withdrawn = eo("referral", "withdraw", referral_id, "--reason", "client found work")
        assert withdrawn.returncode == 0, withdrawn.stderr
        until_sync(reaches("withdrawn"), within=30, every=0.2, what="withdrawn")
        # The sample providers answer after a second per step; once every story has ended, the
        # demo prints the paths.
        until_sync(lambda: demo_summary(printed), within=60, every=0.1, what="the demo's paths")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        output = printed.closed(60)
        shutil.rmtree(state, ignore_errors=True)
    assert process.returncode == 0, output
    assert f"postgresql://postgres@127.0.0.1:{ports['EO_PG_PORT']}/eo" in output
    assert f"nats://127.0.0.1:{ports['EO_NATS_PORT']}" in output
    assert "JetStream enabled" in output
    # The demo's story, as its OW system saw it: every sample reached its end.
    told = flat(output)
    assert "Paths of the sample referrals:" in output, output
    assert "the demo stopped here" not in output, output
    carleton_place = "canadian-career-academy-carleton-place (11.3 km)"
    assert f"accepted {carleton_place}" in told
    assert f"in_service {carleton_place}" in told
    assert f"completed {carleton_place} outcome employed" in told
    assert "declined community-employment-services-perth" in told
    assert "accepted ontrac-employment-resource-services-smiths-falls (19.5 km)" in told
    assert (
        "not_started ontrac-employment-resource-services-smiths-falls (0.6 km) "
        "reason could_not_contact - no answer to three calls"
    ) in told
    assert (
        "withdrawn community-employment-services-perth (0.0 km) - withdrawn by OW: "
        "the client moved out of the region"
    ) in told
    assert f"[provider {CES}] told on referral.notice.{CES}:" in told
    assert "referral_withdrawn" in told
    assert "unmatched - no suitable site: 3 site(s) excluded (language 3)" in told
    # The places: the completed, not started and withdrawn referrals gave theirs back; the
    # re-routed one keeps its place at Ontrac.
    assert "Places in use at the sites near Perth (reserved of capacity), before -> after" in told
    assert "canadian-career-academy-carleton-place 0 -> 0 of 25" in told
    assert "ontrac-employment-resource-services-smiths-falls 0 -> 1 of 25" in told
    for port in ports.values():
        assert not port_open(port)
