"""Shared fixtures: one embedded PostgreSQL and NATS per test session, on free loopback ports.

Tests never use servers the machine may already run. Tests that need the seed data alone get
a fresh database cloned from a migrated, seeded template (``fresh_database_url``), so one
test's writes cannot change another's ranking.
"""

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from litestar.testing import AsyncTestClient
from nats.aio.client import Client as NatsClient

from services.access.principal import Role
from services.access.tokens import TokenStore
from services.directory.app import create_app
from services.directory.schema import MIGRATIONS
from services.directory.seed import load_seed, seed_provider_ids
from services.directory.settings import DirectorySettings
from services.infra.embedded import Servers, free_port, running_servers
from services.infra.migrations import apply_migrations
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings
from services.router.app import MIGRATIONS as ROUTER_MIGRATIONS, create_app as create_router_app
from services.router.settings import RouterSettings
from tests.referrals import Observer, delete_stream

ADMIN_TOKEN = "test-admin-token"
TEMPLATE = "eo_template"


@pytest.fixture(scope="session")
def infra_settings() -> Iterator[InfraSettings]:
    # Not under pytest's tmp_path: pytest re-locks /tmp/pytest-of-<user> to 0700 whenever a
    # session starts, and as root PostgreSQL runs as another user who must reach its folder.
    state_dir = Path(tempfile.mkdtemp(prefix="eo-test-state-"))
    yield InfraSettings(state_dir=state_dir, pg_port=free_port(), nats_port=free_port())
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def servers(infra_settings: InfraSettings) -> Iterator[Servers]:
    with running_servers(
        infra_settings, provider_ids=seed_provider_ids(), durable=False
    ) as running:
        yield running


def with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="session")
async def template_url(servers: Servers) -> str:
    """A database with both services migrated and the seed loaded, used as a template."""
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await admin.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await admin.close()
    url = with_database(servers.database_url, TEMPLATE)
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn, "directory", MIGRATIONS)
        await apply_migrations(conn, "router", ROUTER_MIGRATIONS)
        await load_seed(conn)
    finally:
        await conn.close()
    return url


@pytest.fixture
async def fresh_database_url(servers: Servers, template_url: str) -> AsyncIterator[str]:
    """A new database holding exactly the migrated seed data; dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        yield with_database(servers.database_url, name)
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def conn(fresh_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(fresh_database_url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def directory_settings(fresh_database_url: str) -> DirectorySettings:
    return DirectorySettings(database_url=fresh_database_url, admin_token=ADMIN_TOKEN)


@pytest.fixture
async def client(directory_settings: DirectorySettings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(app=create_app(directory_settings)) as test_client:
        yield test_client


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def issue_token(fresh_database_url: str) -> Callable[..., Awaitable[str]]:
    """Issues a token in the test's database, as ``eo token issue`` does; returns its text."""

    async def issue(
        role: Role, provider_id: str | None = None, name: str = "test", system: str | None = None
    ) -> str:
        conn = await asyncpg.connect(fresh_database_url)
        try:
            _, text = await TokenStore(conn).issue(
                role=role, name=name, provider_id=provider_id, system=system
            )
        finally:
            await conn.close()
        return text

    return issue


@pytest.fixture
async def staff(issue_token: Callable[..., Awaitable[str]]) -> dict[str, str]:
    """Headers of a staff token: may read providers and sites, not write."""
    return bearer(await issue_token("staff"))


@pytest.fixture
def provider_token(
    issue_token: Callable[..., Awaitable[str]],
) -> Callable[[str], Awaitable[dict[str, str]]]:
    """Headers of a new token for a provider: ``await provider_token("ontrac-...")``."""

    async def headers(provider_id: str) -> dict[str, str]:
        return bearer(await issue_token("provider", provider_id))

    return headers


@pytest.fixture
async def nc(servers: Servers) -> AsyncIterator[NatsClient]:
    """NATS as the operator user: everything in the account (advisories too, which the
    router's user, ``servers.nats_url``, may not read)."""
    connection = await nats.connect(**servers.nats_connect_options(OPERATOR_USER))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def router_settings(servers: Servers, fresh_database_url: str) -> RouterSettings:
    """Deadlines and loops in fractions of a second, so timeouts are testable."""
    return RouterSettings(
        database_url=fresh_database_url,
        nats_url=servers.nats_url,
        admin_token=ADMIN_TOKEN,
        offer_timeout_s=600,
        sweep_interval_s=0.2,
        relay_grace_s=0.5,
        fetch_timeout_s=0.2,
        backoff_s=(1.0, 2.0, 4.0),
        pool_min_size=1,
        pool_max_size=4,
        # The batch path (issue 16, the default); ROUTER_TRANSACTION=message runs this suite on
        # the per-message path (the fault suite's router processes read it from the environment).
        transaction="message" if os.environ.get("ROUTER_TRANSACTION") == "message" else "batch",
    )


@pytest.fixture
async def observer(nc: NatsClient) -> Observer:
    """Sees everything published on referral.> from now on; the stream starts empty."""
    await delete_stream(nc)
    watching = Observer()
    await watching.start(nc)
    return watching


@pytest.fixture
async def router(
    router_settings: RouterSettings, observer: Observer
) -> AsyncIterator[AsyncTestClient]:
    """The router running in-process (its lifespan: stream, consumer, loops), with its HTTP API,
    asked as the admin unless a request says otherwise (``headers=``)."""
    async with router_client(router_settings) as test_client:
        yield test_client


@contextlib.asynccontextmanager
async def router_client(settings: RouterSettings) -> AsyncIterator[AsyncTestClient]:
    """A router app running in-process, its client sending the admin token by default."""
    async with AsyncTestClient(app=create_router_app(settings)) as test_client:
        test_client.headers.update(bearer(ADMIN_TOKEN))
        yield test_client
