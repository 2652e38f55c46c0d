"""The embedded nats-server runs with the users and permissions of nats_auth, takes new users
while it runs, and so does the deploy configuration (deploy/nats/), against real nats-server
processes on loopback.
"""

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import nats.errors
import pytest
from nats.aio.client import Client as NatsClient
from structlog.testing import capture_logs

from contracts.subjects import offered_subject, response_subject
from services.directory.seed import seed_provider_ids
from services.infra.embedded import EmbeddedNats, NatsReloadError, free_port, running_servers
from services.infra.nats_auth import (
    DEPLOY_OW_SYSTEMS,
    OPERATOR_USER,
    ROUTER_USER,
    MissingCredentials,
    NatsLogin,
    default_users,
    load_login,
    login_options,
    password_variable,
    provider_user,
    with_login,
    write_accounts,
)
from services.infra.settings import InfraSettings
from services.nats_users import keep_provider_users

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).parents[2] / "deploy" / "nats"
CCA = "canadian-career-academy"
CES = "community-employment-services"
NATS_SERVER = Path(sys.executable).parent / "nats-server"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def state() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="eo-test-nats-users-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


async def refused(**options: Any) -> bool:
    """The server refuses the login (the client is closed either way: no leaked socket)."""

    async def quiet(_: Exception) -> None:
        pass

    nc = NatsClient()
    try:
        await nc.connect(**options, allow_reconnect=False, connect_timeout=2, error_cb=quiet)
    except nats.errors.Error as exc:
        return "authorization" in str(exc).lower()
    finally:
        await nc.close()
    return False


async def stream_publish(options: dict[str, Any], subject: str) -> int:
    nc = await nats.connect(**options)
    try:
        ack = await nc.jetstream().publish(subject, b"{}", timeout=5)
        return ack.seq
    finally:
        await nc.close()


async def refused_publish(options: dict[str, Any], subject: str) -> bool:
    """nats-server refuses this user a publish on ``subject`` (a permissions violation)."""
    errors: list[str] = []

    async def collect(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(**options, error_cb=collect)
    try:
        await nc.publish(subject, b"{}")
        await nc.flush(timeout=5)
        for _ in range(100):
            if any("permissions violation" in e and subject in e for e in errors):
                return True
            await asyncio.sleep(0.02)
        return False
    finally:
        await nc.close()


def test_embedded_nats_generates_private_logins_and_keeps_them(state: Path) -> None:
    users = default_users(provider_ids=seed_provider_ids())
    broker = EmbeddedNats(state / "nats", port=free_port(), durable=False, users=users)
    broker.start()
    try:
        credentials = state / "credentials"
        expected = {u.name for u in users}
        assert {f.stem for f in credentials.glob("*.json")} == expected
        assert {"router", "operator", "ow-lanark", "eo-cli", "eo-demo"} <= expected
        assert {f"provider-{p}" for p in seed_provider_ids()} <= expected
        assert mode(credentials) == 0o700
        assert all(mode(f) == 0o600 for f in credentials.iterdir())
        assert mode(broker.config_file) == 0o600
        config = broker.config_file.read_text()
        assert all(broker.login(u).password in config for u in expected)
        router_url = broker.url
        assert router_url.startswith("nats://router:")

        async def check() -> None:
            assert await refused(servers=broker.address)  # no anonymous access
            assert await refused(servers=broker.address, user="router", password="wrong")
            nc = await nats.connect(router_url)
            js = nc.jetstream()
            await js.add_stream(name="REFERRALS", subjects=["referral.>"])
            await nc.close()
            ow = login_options(
                "ow-lanark", url=broker.address, credentials_dir=credentials, required=True
            )
            assert await stream_publish(ow, "referral.requested.ow-lanark") == 1
            assert await refused_publish(ow, "referral.requested.eo-cli")  # another system's

        asyncio.run(check())
    finally:
        broker.stop()

    # A new start (a new process, the same state folder): the same logins work.
    again = EmbeddedNats(state / "nats", port=broker.port, durable=False, users=users)
    again.start()
    try:
        assert again.url == router_url
        operator = login_options(
            OPERATOR_USER, url=again.address, credentials_dir=credentials, required=True
        )
        assert asyncio.run(stream_publish(operator, "referral.status.ow-lanark")) == 2
    finally:
        again.stop()


async def test_a_running_server_takes_a_new_providers_user_and_keeps_the_others(
    state: Path,
) -> None:
    """EmbeddedNats.add_users, as the sync of the directory's providers calls it: the new
    provider's user logs in after a reload and may use its own subjects only; every user the
    server had keeps its login, and connections stay up through the reload."""
    new = "lanark-jobs"
    # NATS only: with a DATABASE_URL given no PostgreSQL is started (none is used here).
    settings = InfraSettings(
        state_dir=state, nats_port=free_port(), database_url="postgresql://unused@127.0.0.1:1/x"
    )
    with running_servers(settings, provider_ids=[CCA], durable=False) as servers:
        broker = servers.embedded_nats
        assert broker is not None
        credentials = state / "credentials"
        before = {path.name: path.read_bytes() for path in credentials.iterdir()}
        with pytest.raises(MissingCredentials):
            servers.nats_connect_options(f"provider-{new}")

        router = await nats.connect(servers.nats_url)
        await router.jetstream().add_stream(name="REFERRALS", subjects=["referral.>"])
        cca = await nats.connect(**servers.nats_connect_options(f"provider-{CCA}"))
        cca_offers = await cca.subscribe(offered_subject(CCA))
        try:
            added = await broker.add_users([provider_user(CCA), provider_user(new)])
            assert added == [provider_user(new)]
            assert mode(credentials / f"provider-{new}.json") == 0o600
            # The others' logins are the ones they had.
            assert {p.name: p.read_bytes() for p in credentials.iterdir() if p.name in before} == (
                before
            )
            # Idempotent: nothing new, no reload.
            config = broker.config_file.read_bytes()
            assert await broker.add_users([provider_user(CCA), provider_user(new)]) == []
            assert broker.config_file.read_bytes() == config
            assert broker.log_file.read_text().count("Reloaded server configuration") == 1

            # The new provider: its offers, its responses (JetStream acks to its own inbox),
            # and not another provider's subject.
            as_new = servers.nats_connect_options(f"provider-{new}")
            assert as_new["inbox_prefix"] == f"_INBOX_provider-{new}"
            newcomer = await nats.connect(**as_new)
            try:
                offers = await newcomer.subscribe(offered_subject(new))
                await newcomer.flush()
                await router.jetstream().publish(offered_subject(new), b"{}")
                assert (await offers.next_msg(timeout=5)).subject == offered_subject(new)
            finally:
                await newcomer.close()
            assert await stream_publish(as_new, response_subject(new)) == 2
            assert await refused_publish(as_new, response_subject(CCA))
            assert await refused(**as_new | {"password": "wrong"})

            # The users it had: connections still up, logins still good.
            assert router.is_connected
            assert cca.is_connected
            await router.jetstream().publish(offered_subject(CCA), b"{}")
            assert (await cca_offers.next_msg(timeout=5)).subject == offered_subject(CCA)
            for user in (OPERATOR_USER, "ow-lanark", f"provider-{CCA}"):
                nc = await nats.connect(**servers.nats_connect_options(user))
                await nc.close()
        finally:
            await cca.close()
            await router.close()
    with pytest.raises(NatsReloadError, match="no nats-server running"):
        await broker.add_users([provider_user("perth-works")])


async def test_the_user_sync_logs_a_failure_and_tries_again(state: Path) -> None:
    """keep_provider_users never stops on an error (here: no database): it logs and retries."""
    broker = EmbeddedNats(state / "nats", port=free_port(), durable=False, users=[])
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/eo"
    with capture_logs() as logs:
        sync = asyncio.create_task(keep_provider_users(broker, nowhere, every_s=0.05))
        for _ in range(200):
            if sum(log["event"] == "nats.users_sync_failed" for log in logs) >= 3:
                break
            await asyncio.sleep(0.02)
        assert not sync.done()
        sync.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sync
    failures = [log for log in logs if log["event"] == "nats.users_sync_failed"]
    assert len(failures) >= 3, logs
    assert failures[0]["log_level"] == "warning"


def run_server(config: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [str(NATS_SERVER), "-c", str(config), "-a", "127.0.0.1", "-p", str(port)]
    command += ["-l", str(config.parent / "nats-server.log")]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)


def wait_until_up(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None, log.read_text() if log.exists() else "no log"
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, "nats-server did not come up"
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["generated", "template"])
def test_the_deploy_configuration_runs(state: Path, kind: str) -> None:
    """deploy/nats/nats-server.conf with accounts.conf generated, or the template + env."""
    config = (DEPLOY / "nats-server.conf").read_text()
    (state / "nats-server.conf").write_text(config.replace("/data/jetstream", str(state / "js")))
    users = default_users(ow_systems=DEPLOY_OW_SYSTEMS, provider_ids=seed_provider_ids())
    credentials = state / "credentials"
    env = {"PATH": os.environ.get("PATH", "")}
    if kind == "generated":
        write_accounts(state, users)
        assert mode(state / "accounts.conf") == 0o600
    else:
        shutil.copy(DEPLOY / "accounts.template.conf", state / "accounts.conf")
        env |= {password_variable(u.name): f"pw-{u.name}-from-env" for u in users}
        # The logins an operator would hand out, with the same passwords.
        credentials.mkdir()
        for user in users:
            login = NatsLogin(
                user=user.name, password=f"pw-{user.name}-from-env", inbox_prefix=user.inbox_prefix
            )
            (credentials / f"{user.name}.json").write_bytes(msgspec.json.encode(login))
    port = free_port()
    url = f"nats://127.0.0.1:{port}"
    process = run_server(state / "nats-server.conf", port, env)

    def as_user(user: str) -> dict[str, Any]:
        return login_options(user, url=url, credentials_dir=credentials, required=True)

    async def check() -> None:
        assert await refused(servers=url)  # no anonymous access
        nc = await nats.connect(with_login(url, load_login(credentials, ROUTER_USER)))
        await nc.jetstream().add_stream(name="REFERRALS", subjects=["referral.>"])
        await nc.close()
        assert await stream_publish(as_user("ow-lanark"), "referral.requested.ow-lanark") == 1
        assert await stream_publish(as_user(OPERATOR_USER), "referral.status.ow-lanark") == 2
        provider = as_user(f"provider-{CCA}")
        assert await stream_publish(provider, f"referral.progress.{CCA}") == 3
        assert await refused_publish(provider, f"referral.progress.{CES}")
        assert await refused_publish(as_user("ow-lanark"), "referral.cancel.ow-ottawa")

    try:
        wait_until_up(port, process, state / "nats-server.log")
        asyncio.run(check())
    finally:
        process.terminate()
        process.wait(timeout=10)
