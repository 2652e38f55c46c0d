"""The seed data: vocabulary, catchments and the Lanark County offices, loaded idempotently.

Vocabulary and catchments are upserted (the file is their source of truth). Providers and
sites are inserted only when missing, so a restart never undoes an admin's later edits.
"""

import datetime
from pathlib import Path
from typing import Literal

import msgspec
import structlog

from contracts.directory import Catchment, ProviderCreate, SiteCreate, TaxonomyTerm
from services.directory.errors import Conflict
from services.directory.store import DirectoryStore
from services.infra.db import Connection

log = structlog.get_logger("seed")

SEED_FILE = Path(__file__).parent / "seed" / "seed.json"


class TermSeed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: str
    name_en: str
    name_fr: str


class SeedFile(msgspec.Struct, frozen=True):
    services: list[TermSeed]
    accessibility: list[TermSeed]
    catchments: list[Catchment]
    verified: datetime.date
    providers: list[ProviderCreate]
    sites: list[SiteCreate]


def read_seed(path: Path = SEED_FILE) -> SeedFile:
    return msgspec.json.decode(path.read_bytes(), type=SeedFile)


def seed_provider_ids(path: Path = SEED_FILE) -> list[str]:
    """The ids of the seed's providers (the embedded default gives each a NATS user)."""
    return [provider.id for provider in read_seed(path).providers]


async def load_seed(conn: Connection, path: Path = SEED_FILE) -> dict[str, int]:
    """Load ``path`` in one transaction; return how many providers and sites were new."""
    seed = read_seed(path)
    store = DirectoryStore(conn)
    added = {"providers": 0, "sites": 0}
    async with conn.transaction():
        vocabularies: list[tuple[Literal["eo_service", "eo_accessibility"], list[TermSeed]]] = [
            ("eo_service", seed.services),
            ("eo_accessibility", seed.accessibility),
        ]
        for taxonomy, terms in vocabularies:
            for term in terms:
                await store.upsert_term(
                    TaxonomyTerm(taxonomy=taxonomy, **msgspec.structs.asdict(term))
                )
        for catchment in seed.catchments:
            await store.upsert_catchment(catchment)
        for provider in seed.providers:
            try:
                await store.upsert_provider(provider, create_only=True)
                added["providers"] += 1
            except Conflict:
                pass
        for site in seed.sites:
            try:
                await store.upsert_site(site, verified=seed.verified, create_only=True)
                added["sites"] += 1
            except Conflict:
                pass
    log.info("seed.loaded", **added)
    return added
