"""deploy/postgres/roles.sql on the real PostgreSQL: the migration role builds the schema, and
each service's role can do its own work and nothing more.

The roles are cluster-wide, so the test creates its own database and role names (a suffix),
rewriting only those names and the psql variables of the file.
"""

import datetime
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.access.tokens import TokenStore
from services.directory.candidates import reserve_place
from services.directory.schema import MIGRATIONS
from services.directory.seed import load_seed
from services.geo import default_gazetteer
from services.infra.embedded import Servers
from services.infra.migrations import apply_migrations
from services.router.app import MIGRATIONS as ROUTER_MIGRATIONS
from services.router.directory import SqlDirectory
from services.router.handlers import on_requested
from services.router.store import SqlStore
from services.router.unit_of_work import UnitOfWork
from tests.conftest import with_database
from tests.referrals import CCA_SITE, make_request

pytestmark = pytest.mark.integration

ROLES_SQL = Path(__file__).parents[2] / "deploy" / "postgres" / "roles.sql"
ROLES = ("eo_migrate", "eo_directory", "eo_router")


@pytest.fixture
async def roles_database(servers: Servers) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """A new database set up by roles.sql (as a superuser would run it): its URL and the
    test's names for the three roles."""
    suffix = uuid.uuid4().hex[:8]
    database = f"roles_{suffix}"
    names = {role: f"{role}_{suffix}" for role in ROLES}
    sql = ROLES_SQL.read_text().replace("DATABASE eo ", f"DATABASE {database} ")
    for role, name in names.items():
        sql = sql.replace(role, name)
    for variable in ("migrate_password", "directory_password", "router_password"):
        sql = sql.replace(f":'{variable}'", "'not-used-here'")
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute(f"CREATE DATABASE {database}")
    url = with_database(servers.database_url, database)
    try:
        superuser = await asyncpg.connect(url)
        try:
            await superuser.execute(sql)
        finally:
            await superuser.close()
        yield url, names
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        for name in names.values():
            await admin.execute(f"DROP OWNED BY {name} CASCADE")  # in the default database
            await admin.execute(f"DROP ROLE IF EXISTS {name}")
        await admin.close()


async def as_role(url: str, role: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(url)
    await conn.execute(f"SET ROLE {role}")
    return conn


async def test_each_service_role_does_its_own_work_and_nothing_more(roles_database) -> None:
    url, names = roles_database
    # eo_migrate: `eo migrate --seed`, as the deploy Job runs it.
    migrate = await as_role(url, names["eo_migrate"])
    try:
        assert await apply_migrations(migrate, "directory", MIGRATIONS)
        assert await apply_migrations(migrate, "router", ROUTER_MIGRATIONS)
        assert (await load_seed(migrate))["sites"] == 3
    finally:
        await migrate.close()

    # eo_directory: reads and writes its own schema (providers, sites, tokens), reads the
    # migrations ledger; the router's schema is not its to touch.
    directory = await as_role(url, names["eo_directory"])
    try:
        await directory.execute(
            "INSERT INTO directory.provider (id, name) VALUES ('roles-test', 'Roles Test')"
        )
        await directory.execute(
            "UPDATE directory.site SET phone = '613-555-0199' WHERE id = $1", CCA_SITE
        )
        assert await directory.fetchval("SELECT count(*) FROM public.schema_migrations") >= 4
        assert await directory.fetchval("SELECT count(*) FROM directory.api_token") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await directory.fetch("SELECT * FROM router.referral")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await directory.execute("DROP TABLE directory.site")
    finally:
        await directory.close()

    # eo_router: a whole referral routed by the real handler (candidates query, exclusion
    # counts, reserving a place in directory.site, its own tables), in one transaction.
    router = await as_role(url, names["eo_router"])
    try:
        ctx = UnitOfWork(
            store=SqlStore(router),
            directory=SqlDirectory(router),
            now=datetime.datetime.now(datetime.UTC),
            deadline=lambda now: now + datetime.timedelta(days=2),
        )
        async with router.transaction():
            handled = await on_requested(
                make_request(), "ow-test", uow=ctx, locate=default_gazetteer().resolve
            )
            await ctx.flush()
        assert handled.outcome == "offered", handled
        assert await reserve_place(router, CCA_SITE)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await router.execute(
                "INSERT INTO directory.provider (id, name) VALUES ('router-made', 'No')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await router.execute("DELETE FROM directory.site")
        # Its HTTP API checks bearer tokens in the directory's table (services.access).
        assert await TokenStore(router).find_active("tok_000000000000.unknown") is None
    finally:
        await router.close()
