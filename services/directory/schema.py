"""The directory's schema (``directory`` in PostgreSQL): its migrations, and whether a database
has them all."""

from pathlib import Path

from services.infra.db import Connection
from services.infra.migrations import pending_migrations

MIGRATIONS = Path(__file__).parent / "migrations"


async def missing_schema(conn: Connection) -> list[str]:
    """The directory's migrations not applied on ``conn``'s database (empty: all applied)."""
    return await pending_migrations(conn, "directory", MIGRATIONS)
