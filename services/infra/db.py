"""The connection type our SQL functions accept: a plain asyncpg connection or a pooled one."""

from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A string: asyncpg's classes are generic only in its type stubs, not at run time.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"
