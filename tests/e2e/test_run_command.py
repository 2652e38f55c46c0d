"""`eo run` (what `make run` starts) as a user sees it: up, seeded, telling the demo's story of
contract v1.1 (accepted then in service then completed, not started, re-routed, withdrawn,
unmatched; the places in use before and after), answering the `eo referral` commands through a
referral's whole life, giving a provider added through the API its NATS login, printing the
provider inbox and OW tracker with a token for each, leaving two offers to a person, and stopped
by Ctrl-C.
"""

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient

from services.access.tokens import TokenStore
from services.cli import SAMPLE_LOGINS, sample_tokens
from services.demo import DEMO_SYSTEM, PERSON_PROVIDER, THINK_S
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


def left_to_a_person(printed: Printed) -> list[str] | None:
    """The ids of the referrals the demo left to a person, once it has said where they wait."""
    text = printed.text()
    start = text.find("Waiting for you:")
    end = text.find("Sign in with the tokens", max(start, 0))
    if not 0 <= start < end:
        return None
    return re.findall(r"^  ([0-9a-f-]{36})  from ", text[start:end], flags=re.MULTILINE)


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
        paths = until_sync(
            lambda: demo_summary(printed), within=60, every=0.1, what="the demo's paths"
        )

        # The pages, and a token to sign in to each: the sample provider and the demo's OW
        # system, kept in the state folder.
        banner = printed.text().split("Places in use", 1)[0]
        assert f"provider inbox  {router}/inbox" in banner
        assert f"OW tracker      {router}/tracker" in banner
        provider_token = (state / "sample-provider-token").read_text().strip()
        ow_token = (state / "sample-ow-token").read_text().strip()
        for sample in SAMPLE_LOGINS:
            assert (state / sample.file).stat().st_mode & 0o077 == 0
        assert f"sign in as provider {PERSON_PROVIDER}: {provider_token}" in flat(banner)
        assert f"sign in as OW system {DEMO_SYSTEM}: {ow_token}" in flat(banner)

        def read(referral: str, token: str) -> dict[str, Any]:
            got = httpx.get(
                f"{router}/api/v1/referrals/{referral}",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            return body

        # The OW token reads the demo's referrals; the provider token those offered to it.
        almonte = paths.split("Paths of the sample referrals:")[1].split()[0]
        assert read(almonte, ow_token)["status"] == "completed"
        assert read(almonte, provider_token)["status"] == "completed"
        # ... and not the referral the test sent as eo-cli to another provider.
        assert (
            httpx.get(
                f"{router}/api/v1/referrals/{referral_id}",
                headers={"Authorization": f"Bearer {ow_token}"},
            ).status_code
            == 404
        )

        # Two referrals are left to a person: offered to the sample provider, and nobody here
        # answers them (the sample providers take THINK_S to answer).
        waiting = until_sync(
            lambda: left_to_a_person(printed), within=30, every=0.1, what="the offers left"
        )
        assert len(waiting) == 2, printed.text()
        assert f"Waiting for you: 2 new offers in {PERSON_PROVIDER}'s inbox, {router}/inbox" in (
            flat(printed.text())
        )
        time.sleep(THINK_S + 1)
        for referral in waiting:
            for token in (ow_token, provider_token):
                view = read(referral, token)
                assert view["status"] == "offered", view
                assert view["current_offer"]["provider_id"] == PERSON_PROVIDER
                assert view["current_offer"]["state"] == "open"

        # A person answers one by hand, through the API the inbox page uses: the provider's
        # open offers are the two, and accepting one shows to eo-demo as accepted.
        as_provider = {"Authorization": f"Bearer {provider_token}"}
        listed = httpx.get(f"{router}/api/v1/offers", headers=as_provider)
        assert listed.status_code == 200, listed.text
        offers = {item["referral_id"]: item["offer_id"] for item in listed.json()["items"]}
        assert sorted(offers) == sorted(waiting)
        accepted, still_open = waiting
        by_hand = httpx.post(
            f"{router}/api/v1/offers/{offers[accepted]}/accept", headers=as_provider
        )
        assert by_hand.status_code == 202, by_hand.text
        until_sync(
            lambda: read(accepted, ow_token)["status"] == "accepted", within=15, what="accepted"
        )
        live = f"[stream] referral {accepted[:8]} accepted {PERSON_PROVIDER}-carleton-place"
        until_sync(lambda: live in flat(printed.text()), within=15, what="the live view")
        assert read(still_open, ow_token)["status"] == "offered"
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
    for referral in waiting:  # nobody but a person answers them
        assert f"accepts referral {referral[:8]}" not in told
        assert f"declines referral {referral[:8]}" not in told


async def test_the_sample_tokens_are_kept_and_reused_while_active(
    fresh_database_url: str, tmp_path: Path
) -> None:
    kept = await sample_tokens(fresh_database_url, tmp_path, seed=True)
    assert set(kept) == {"inbox", "tracker"}
    files = {login.page: tmp_path / login.file for login in SAMPLE_LOGINS}
    for page, path in files.items():
        assert path.read_text() == kept[page]
        assert path.stat().st_mode & 0o777 == 0o600
    conn = await asyncpg.connect(fresh_database_url)
    try:
        tokens = TokenStore(conn)
        provider = await tokens.find_active(kept["inbox"])
        ow = await tokens.find_active(kept["tracker"])
        assert provider is not None
        assert (provider.role, provider.provider_id) == ("provider", PERSON_PROVIDER)
        assert ow is not None
        assert (ow.role, ow.system) == ("ow", DEMO_SYSTEM)

        # Reused on a later run while active; re-issued once revoked, or unknown to the
        # database (a new one).
        assert await sample_tokens(fresh_database_url, tmp_path, seed=False) == kept
        await tokens.revoke(provider.id)
        files["tracker"].write_text("tok_000000000000.from-an-older-database")
        again = await sample_tokens(fresh_database_url, tmp_path, seed=False)
    finally:
        await conn.close()
    assert again["inbox"] != kept["inbox"]
    assert again["tracker"] != kept["tracker"]
    assert again["inbox"].startswith("tok_")
    assert again["tracker"].startswith("tok_")
    for page, path in files.items():
        assert path.read_text() == again[page]
        assert path.stat().st_mode & 0o777 == 0o600
