"""HSDS import and export against real PostgreSQL: official examples, dry run, a bad row, and
the round trip export -> import into an empty database -> export, byte for byte."""

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from services.directory.hsds import EXAMPLES
from services.directory.hsds.cli import add_hsds_commands
from services.directory.hsds.tables import read_datapackage
from services.directory.hsds.transfer import export_directory, import_tables, load
from services.directory.schema import MIGRATIONS
from services.infra.embedded import Servers
from services.infra.migrations import apply_migrations
from tests.benchmarks.generate import generate
from tests.conftest import with_database

pytestmark = pytest.mark.integration

COUNTS = "SELECT (SELECT count(*) FROM directory.provider), (SELECT count(*) FROM directory.site)"


@pytest.fixture
async def empty_database_url(servers: Servers) -> AsyncIterator[str]:
    """A database with the directory's tables and nothing in them (no seed)."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(servers.database_url)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        url = with_database(servers.database_url, name)
        conn = await asyncpg.connect(url)
        try:
            await apply_migrations(conn, "directory", MIGRATIONS)
        finally:
            await conn.close()
        yield url
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.json")))
async def test_every_official_json_example_imports(conn, example: str) -> None:
    tables, notes = load(EXAMPLES / example)
    plan = await import_tables(conn, tables, notes=notes)
    for issue in plan.issues:
        assert issue.reason, issue
    if example == "organization_full.json":
        assert plan.counts()["providers"] == 1
        hsds_id = json.loads((EXAMPLES / example).read_text())["id"]
        name = await conn.fetchval(
            "SELECT name FROM directory.provider WHERE id = $1", f"hsds-{hsds_id}"
        )
        assert name


async def test_official_csv_example_imports_with_reasons(conn) -> None:
    tables, _ = load(EXAMPLES / "csv")
    assert sum(len(rows) for rows in tables.values()) == 21
    plan = await import_tables(conn, tables)
    assert plan.counts()["providers"] == 1
    rejected = {(i.table, i.reason) for i in plan.issues if i.action == "rejected"}
    assert ("service", "no EO service code: link it by an attribute to a term of eo_service") in (
        rejected
    )
    # The example's location is at latitude 100: it cannot become a site.
    assert any(table == "location" for table, _ in rejected)
    skipped = {i.table for i in plan.issues if i.action == "skipped"}
    assert {"funding", "program", "cost_option"} <= skipped
    assert await conn.fetchval("SELECT count(*) FROM directory.site") == 3  # the seed's


async def test_round_trip_is_byte_identical(fresh_database_url, empty_database_url, tmp_path):
    await generate(fresh_database_url, 300, quiet=True)
    source = await asyncpg.connect(fresh_database_url)
    target = await asyncpg.connect(empty_database_url)
    try:
        first = await export_directory(source, tmp_path / "first")
        assert first["location"] == 303
        plan = await import_tables(target, read_datapackage(tmp_path / "first"))
        assert [i for i in plan.issues if i.action != "skipped"] == []
        assert plan.counts()["sites"] == 303
        await export_directory(target, tmp_path / "second")
        assert await target.fetchval("SELECT sum(reserved) FROM directory.site") == 0
    finally:
        await source.close()
        await target.close()
    assert snapshot(tmp_path / "first") == snapshot(tmp_path / "second")
    assert len(snapshot(tmp_path / "first")) == 22  # datapackage.json and 21 tables


async def test_reimport_changes_nothing_and_keeps_reserved(conn, tmp_path) -> None:
    await conn.execute("UPDATE directory.site SET reserved = 2, capacity = 7")
    await export_directory(conn, tmp_path / "out")
    await conn.execute("UPDATE directory.site SET capacity = 1, accepting_referrals = false")
    plan = await import_tables(conn, load(tmp_path / "out" / "datapackage.json")[0])
    assert plan.counts()["sites"] == 3
    rows = await conn.fetch("SELECT capacity, reserved, accepting_referrals FROM directory.site")
    assert {tuple(row) for row in rows} == {(7, 2, True)}


async def test_dry_run_changes_nothing(conn, tmp_path) -> None:
    await export_directory(conn, tmp_path / "out")
    before = await conn.fetch("SELECT * FROM directory.site ORDER BY id")
    await conn.execute("DELETE FROM directory.site; DELETE FROM directory.provider")
    plan = await import_tables(conn, read_datapackage(tmp_path / "out"), dry_run=True)
    assert plan.counts()["sites"] == 3
    assert tuple(await conn.fetchrow(COUNTS)) == (0, 0)
    await import_tables(conn, read_datapackage(tmp_path / "out"))
    after = await conn.fetch("SELECT * FROM directory.site ORDER BY id")
    assert [r["id"] for r in after] == [r["id"] for r in before]


async def test_bad_row_is_reported_and_nothing_is_half_imported(conn, tmp_path) -> None:
    await export_directory(conn, tmp_path / "out")
    tables = read_datapackage(tmp_path / "out")
    # One location loses its coordinates: rejected with its reason, the others imported.
    tables["location"][0].pop("latitude")
    await conn.execute("DELETE FROM directory.site; DELETE FROM directory.provider")
    plan = await import_tables(conn, tables)
    rejected = [i for i in plan.issues if i.action == "rejected"]
    assert [(i.table, i.row, i.reason) for i in rejected if i.table == "location"] == [
        ("location", 1, "no coordinates (latitude and longitude)")
    ]
    # Its service_at_location rows are reported too, never stored without their site.
    assert {i.table for i in rejected} == {"location", "service_at_location"}
    assert tuple(await conn.fetchrow(COUNTS)) == (3, 2)
    # A row the database refuses after the providers were written (here a constraint the
    # planner does not know) rolls the whole import back: no provider stays behind.
    await conn.execute(
        "DELETE FROM directory.site; DELETE FROM directory.provider;"
        " ALTER TABLE directory.site ADD CONSTRAINT no_x CHECK (name <> 'X')"
    )
    tables = read_datapackage(tmp_path / "out")
    tables["location"][2]["name"] = "X"
    with pytest.raises(asyncpg.CheckViolationError):
        await import_tables(conn, tables)
    assert tuple(await conn.fetchrow(COUNTS)) == (0, 0)


def test_cli_has_help() -> None:
    import argparse

    root = argparse.ArgumentParser(prog="eo")
    add_hsds_commands(root.add_subparsers(dest="command"))
    for argv in (["hsds", "--help"], ["hsds", "import", "--help"], ["hsds", "export", "--help"]):
        with pytest.raises(SystemExit) as done:
            root.parse_args(argv)
        assert done.value.code == 0
