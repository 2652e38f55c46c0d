"""Migrations and the embedded servers' lifecycle, against real PostgreSQL and NATS."""

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
import nats
import pytest

from services.directory.schema import MIGRATIONS
from services.directory.seed import seed_provider_ids
from services.infra.embedded import free_port, running_servers
from services.infra.migrations import MigrationError, apply_migrations, pending_migrations
from services.infra.nats_auth import OPERATOR_USER
from services.infra.settings import InfraSettings

pytestmark = pytest.mark.integration


async def test_migrations_apply_once_and_are_recorded(fresh_database_url: str) -> None:
    conn = await asyncpg.connect(fresh_database_url)
    try:
        # The template was migrated already: running again applies nothing.
        assert await apply_migrations(conn, "directory", MIGRATIONS) == []
        assert await apply_migrations(conn, "directory", MIGRATIONS) == []
        assert await pending_migrations(conn, "directory", MIGRATIONS) == []
        recorded = await conn.fetch(
            "SELECT version, name FROM public.schema_migrations WHERE service = 'directory'"
        )
        assert [(r["version"], r["name"]) for r in recorded] == [
            (1, "0001_directory.sql"),
            (2, "0002_tokens.sql"),
            (3, "0003_earth_point.sql"),
            (4, "0004_ow_tokens.sql"),
        ]
    finally:
        await conn.close()


async def test_concurrent_starts_apply_each_migration_once(servers, tmp_path: Path) -> None:
    admin = await asyncpg.connect(servers.database_url)
    await admin.execute("CREATE DATABASE migrate_race")
    url = servers.database_url.rsplit("/", 1)[0] + "/migrate_race"
    try:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        results = await asyncio.gather(
            *(apply_migrations(c, "directory", MIGRATIONS) for c in conns)
        )
        assert sorted(len(r) for r in results) == [0, 0, 4]  # one applies every file
        for c in conns:
            await c.close()
    finally:
        await admin.execute("DROP DATABASE migrate_race WITH (FORCE)")
        await admin.close()


async def test_an_edited_migration_is_refused(conn: asyncpg.Connection, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_first.sql").write_text("CREATE TABLE public.edited (id int);")
    assert await apply_migrations(conn, "scratch", folder) == ["0001_first.sql"]
    (folder / "0001_first.sql").write_text("CREATE TABLE public.edited (id bigint);")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await apply_migrations(conn, "scratch", folder)


async def test_a_failing_migration_applies_nothing(conn: asyncpg.Connection, tmp_path) -> None:
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "0001_good.sql").write_text("CREATE TABLE public.half (id int);")
    (folder / "0002_bad.sql").write_text("CREATE TABLE public.half (id int);")
    with pytest.raises(asyncpg.DuplicateTableError):
        await apply_migrations(conn, "halfway", folder)
    assert await conn.fetchval("SELECT to_regclass('public.half')") is None
    assert await pending_migrations(conn, "halfway", folder) == ["0001_good.sql", "0002_bad.sql"]


def test_restart_keeps_the_data() -> None:
    """Stop both embedded servers and start them again on the same state folder."""
    state = Path(tempfile.mkdtemp(prefix="eo-test-restart-"))
    settings = InfraSettings(state_dir=state, pg_port=free_port(), nats_port=free_port())

    async def write(database_url: str, nats_options: dict[str, Any]) -> None:
        conn = await asyncpg.connect(database_url)
        await apply_migrations(conn, "directory", MIGRATIONS)
        await conn.execute(
            "INSERT INTO directory.provider (id, name) VALUES ('kept-provider', 'Kept')"
        )
        await conn.close()
        nc = await nats.connect(**nats_options)  # the operator: any subject, any stream
        js = nc.jetstream()
        await js.add_stream(name="KEPT", subjects=["kept.>"])
        await js.publish("kept.one", b"still here")
        await nc.close()

    async def read(database_url: str, nats_options: dict[str, Any]) -> tuple[str, bytes]:
        conn = await asyncpg.connect(database_url)
        name = await conn.fetchval("SELECT name FROM directory.provider WHERE id = 'kept-provider'")
        pending = await pending_migrations(conn, "directory", MIGRATIONS)
        await conn.close()
        assert pending == []
        nc = await nats.connect(**nats_options)
        message = await nc.jetstream().get_last_msg("KEPT", "kept.one")
        await nc.close()
        return name, message.data or b""

    try:
        with running_servers(settings, provider_ids=seed_provider_ids()) as first:
            asyncio.run(write(first.database_url, first.nats_connect_options(OPERATOR_USER)))
        with running_servers(settings, provider_ids=seed_provider_ids()) as second:
            assert second.started == ("postgres", "nats")
            operator = second.nats_connect_options(OPERATOR_USER)
            assert asyncio.run(read(second.database_url, operator)) == (
                "Kept",
                b"still here",
            )
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_configured_servers_are_used_and_not_started(servers) -> None:
    settings = InfraSettings(database_url=servers.database_url, nats_url=servers.nats_url)
    with running_servers(settings, provider_ids=seed_provider_ids()) as used:
        assert used.started == ()
        assert used.database_url == servers.database_url
        assert used.nats_url == servers.nats_url
