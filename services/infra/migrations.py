"""Versioned SQL migrations: applied in order at start, each once, recorded in a table.

A service keeps its migrations as ``migrations/NNNN_name.sql``. Applying takes a transaction-
scoped advisory lock, so several processes starting at once apply each file exactly once, and
either all pending files apply or none do. An applied file that was edited afterwards is an
error: write a new migration instead.
"""

import hashlib
import re
from pathlib import Path

import structlog

from services.infra.db import Connection

log = structlog.get_logger("migrations")

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# Any constant will do; it only has to be the same in every process that migrates.
_LOCK_KEY = 0x454F_4D49


class MigrationError(RuntimeError):
    pass


def migration_files(folder: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _FILE.match(p.name))]
    return sorted(found)


async def apply_migrations(conn: Connection, service: str, folder: Path) -> list[str]:
    """Apply ``folder``'s pending migrations for ``service``; return the names applied."""
    applied_now: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS public.schema_migrations (
                service    text        NOT NULL,
                version    integer     NOT NULL,
                name       text        NOT NULL,
                checksum   text        NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (service, version)
            )
            """
        )
        rows = await conn.fetch(
            "SELECT version, name, checksum FROM public.schema_migrations WHERE service = $1",
            service,
        )
        applied = {row["version"]: row for row in rows}
        for version, path in migration_files(folder):
            sql = path.read_text()
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in applied:
                if applied[version]["checksum"] != checksum:
                    raise MigrationError(
                        f"{service} migration {path.name} changed after it was applied; "
                        "add a new migration instead of editing an applied one"
                    )
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO public.schema_migrations (service, version, name, checksum)"
                " VALUES ($1, $2, $3, $4)",
                service,
                version,
                path.name,
                checksum,
            )
            applied_now.append(path.name)
    log.info("migrations.applied", service=service, applied=applied_now)
    return applied_now


async def pending_migrations(conn: Connection, service: str, folder: Path) -> list[str]:
    """Names of ``folder``'s migrations not yet recorded (for readiness checks)."""
    table = await conn.fetchval("SELECT to_regclass('public.schema_migrations')")
    done: set[int] = set()
    if table is not None:
        rows = await conn.fetch(
            "SELECT version FROM public.schema_migrations WHERE service = $1", service
        )
        done = {row["version"] for row in rows}
    return [path.name for version, path in migration_files(folder) if version not in done]
