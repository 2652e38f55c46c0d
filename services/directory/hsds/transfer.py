"""Import and export of whole HSDS files: the edges where files and the database meet.

An import is one transaction: everything the plan accepted is written, or nothing is (any
database error rolls it all back; ``dry_run`` always rolls back, after the writes were tried,
so a dry run also proves the database accepts them).
"""

import csv
import io
import json
from pathlib import Path

import msgspec

from services.directory.hsds import db, mapping
from services.directory.hsds.importer import Issue, Plan, plan
from services.directory.hsds.tables import (
    Tables,
    flatten_json,
    flatten_objects,
    read_datapackage,
    write_datapackage,
)
from services.infra.db import Connection


class HsdsInputError(Exception):
    """The path is not an HSDS JSON file or datapackage; the message says why."""


class _DryRun(Exception):
    """Raised inside the transaction to roll a dry run back."""


def load(path: Path) -> tuple[Tables, list[str]]:
    """Tables of a ``.json`` file, a datapackage folder or its ``datapackage.json``."""
    if path.is_dir():
        return read_datapackage(path), []
    if path.name == "datapackage.json":
        return read_datapackage(path.parent), []
    if not path.is_file():
        raise HsdsInputError(f"{path}: no such file or folder")
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HsdsInputError(f"{path}: not JSON ({exc})") from exc
    return flatten_json(document)


async def import_tables(
    conn: Connection,
    tables: Tables,
    *,
    dry_run: bool = False,
    notes: list[str] | None = None,
    progress: db.Progress | None = None,
) -> Plan:
    """Plan the import of ``tables`` against the database, then apply it in one transaction."""
    try:
        async with conn.transaction():
            decided = plan(tables, await db.known(conn), notes or [])
            await db.write_plan(conn, decided, progress)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return decided


async def export_directory(conn: Connection, folder: Path) -> dict[str, int]:
    """Write the whole directory to ``folder`` as an HSDS datapackage; rows per table."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        providers, sites, vocabulary = await db.read_directory(conn)
    tables = flatten_objects(mapping.directory_objects(providers, sites, vocabulary))
    write_datapackage(tables, folder)
    return {table: len(rows) for table, rows in tables.items() if rows}


def report_csv(issues: list[Issue]) -> str:
    """The row-level report: table, row (1-based within its table), id, action, reason."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["table", "row", "id", "action", "reason"])
    for issue in issues:
        writer.writerow([issue.table, issue.row, issue.id, issue.action, issue.reason])
    return out.getvalue()


def report_json(issues: list[Issue]) -> bytes:
    return msgspec.json.encode(issues)
