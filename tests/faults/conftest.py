"""Fixtures of the fault-injection suite: a fresh database and an empty stream per test."""

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient

from tests.referrals import delete_stream


@pytest.fixture
def log_dir() -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="eo-faults-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def empty_stream(nc: NatsClient) -> AsyncIterator[None]:
    await delete_stream(nc)
    yield
    await delete_stream(nc)


@pytest.fixture
async def roomy_sites(fresh_database_url: str) -> str:
    """The seed's three sites with room for every referral of a run."""
    conn = await asyncpg.connect(fresh_database_url)
    try:
        await conn.execute("UPDATE directory.site SET capacity = 1000000")
    finally:
        await conn.close()
    return fresh_database_url
