"""The connection type our SQL functions accept: a plain asyncpg connection or a pooled one."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A string: asyncpg's classes are generic only in its type stubs, not at run time.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"


async def keep_session(conn: asyncpg.Connection) -> None:
    """A pool's ``reset``: asyncpg still rolls back a transaction left open when a connection
    goes back to the pool; our services set no session state (no SET, LISTEN, cursors outside a
    transaction, session advisory locks), so the default reset query (``RESET ALL; UNLISTEN *;
    ...``, one more round trip per request or routed message) has nothing to undo.
    """
