"""Every provider of the directory gets a user on the embedded NATS, not only the seed's
(DESIGN.md section 7): a provider added through the API can read its offers.

The directory says which providers there are (``DirectoryStore.provider_ids``); infra gives the
running nats-server users (``EmbeddedNats.add_users``). The process that started the server
(``eo run``, ``eo router``) runs ``keep_provider_users``: it looks every few seconds
(EO_NATS_USER_SYNC_S) and adds a user for each new provider. With NATS_URL the operator manages
the users instead (``eo nats-config --from-database``).
"""

import asyncio

import asyncpg
import structlog

from services.directory.store import DirectoryStore
from services.infra.db import Connection
from services.infra.embedded import EmbeddedNats
from services.infra.nats_auth import provider_user

log = structlog.get_logger("nats_users")

#: A query or connection attempt that takes longer fails, and the next round tries again.
DATABASE_TIMEOUT_S = 10.0


async def add_provider_users(nats: EmbeddedNats, conn: Connection) -> list[str]:
    """A user on ``nats`` for each provider of the directory that has none; their ids."""
    provider_ids = await DirectoryStore(conn).provider_ids()
    added = await nats.add_users([provider_user(provider_id) for provider_id in provider_ids])
    return [user.provider_id for user in added if user.provider_id is not None]


async def keep_provider_users(nats: EmbeddedNats, database_url: str, *, every_s: float) -> None:
    """``add_provider_users`` now and then every ``every_s`` s, until cancelled. A failure (the
    database or nats-server unreachable, a reload refused) is logged and tried again next time:
    it never stops the services."""
    conn: asyncpg.Connection[asyncpg.Record] | None = None
    try:
        while True:
            try:
                if conn is None or conn.is_closed():
                    conn = await asyncpg.connect(
                        database_url, timeout=DATABASE_TIMEOUT_S, command_timeout=DATABASE_TIMEOUT_S
                    )
                await add_provider_users(nats, conn)
            except Exception as exc:  # logged and retried: users are added a few seconds later
                log.warning("nats.users_sync_failed", error=repr(exc), retry_in_s=every_s)
                if conn is not None:
                    conn.terminate()
                    conn = None
            await asyncio.sleep(every_s)
    finally:
        if conn is not None:
            await conn.close()
