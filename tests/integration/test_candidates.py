"""The router's door into the directory (candidates query, reservations) against real
PostgreSQL with the seed data (DESIGN.md section 4)."""

import asyncio

import asyncpg
import pytest

from services.directory.candidates import (
    Criteria,
    release_place,
    reserve_place,
    suitable_sites,
)
from services.directory.search import search_query
from services.directory.site_query import SiteFilter

pytestmark = pytest.mark.integration

ALMONTE = (45.2299, -76.1959)
CORE = ["resume_writing", "interview_skills"]
CCA_SITE = "canadian-career-academy-carleton-place"
CES_SITE = "community-employment-services-perth"
ONTRAC_SITE = "ontrac-employment-resource-services-smiths-falls"


async def site_ids(conn: asyncpg.Connection, **rules) -> list[str]:
    rules.setdefault("needs", CORE)
    rules.setdefault("language", "en")
    return [hit.site_id for hit in await suitable_sites(conn, *ALMONTE, Criteria(**rules), 20)]


async def test_all_suitable_sites_nearest_first(conn) -> None:
    hits = await suitable_sites(conn, *ALMONTE, Criteria(needs=CORE, language="en"), 20)
    assert [h.site_id for h in hits] == [CCA_SITE, CES_SITE, ONTRAC_SITE]
    assert hits[0].provider_id == "canadian-career-academy"
    assert (hits[0].reserved, hits[0].capacity) == (0, 25)
    assert hits[0].distance_km == pytest.approx(11.33, abs=0.01)
    assert hits[1].distance_km == pytest.approx(36.90, abs=0.01)


async def test_rule_services(conn) -> None:
    assert await site_ids(conn, needs=["resume_writing", "skills_training"]) == []


async def test_rule_language(conn) -> None:
    assert await site_ids(conn, language="fr") == []
    await conn.execute("UPDATE directory.site SET languages = '{en,fr}' WHERE id = $1", ONTRAC_SITE)
    assert await site_ids(conn, language="fr") == [ONTRAC_SITE]


async def test_rule_accessibility(conn) -> None:
    await conn.execute(
        "UPDATE directory.site SET accessibility = '{wheelchair_access}' WHERE id = $1", CES_SITE
    )
    assert await site_ids(conn, accessibility=["wheelchair_access"]) == [CES_SITE]


async def test_rule_capacity_and_accepting(conn) -> None:
    await conn.execute("UPDATE directory.site SET reserved = capacity WHERE id = $1", CCA_SITE)
    await conn.execute(
        "UPDATE directory.site SET accepting_referrals = false WHERE id = $1", CES_SITE
    )
    assert await site_ids(conn) == [ONTRAC_SITE]


async def test_rule_active(conn) -> None:
    await conn.execute(
        "UPDATE directory.provider SET active = false WHERE id = 'canadian-career-academy'"
    )
    await conn.execute("UPDATE directory.site SET active = false WHERE id = $1", CES_SITE)
    assert await site_ids(conn) == [ONTRAC_SITE]


async def test_rule_eligibility_and_age(conn) -> None:
    await conn.execute(
        "UPDATE directory.site SET eligibility = '{youth}', min_age = 15, max_age = 29"
        " WHERE id = $1",
        CCA_SITE,
    )
    assert await site_ids(conn, age=34, eligibility=["ow_recipient"]) == [CES_SITE, ONTRAC_SITE]
    assert await site_ids(conn, age=34, eligibility=["youth"]) == [CES_SITE, ONTRAC_SITE]
    assert await site_ids(conn, age=20, eligibility=["youth"]) == [CCA_SITE, CES_SITE, ONTRAC_SITE]
    assert await site_ids(conn, age=20, eligibility=[]) == [CES_SITE, ONTRAC_SITE]


async def test_rule_distance_exclusions_and_already_offered(conn) -> None:
    assert await site_ids(conn, max_distance_km=30) == [CCA_SITE]
    assert await site_ids(conn, max_distance_km=5) == []
    assert await site_ids(conn, exclude_providers=["canadian-career-academy"]) == [
        CES_SITE,
        ONTRAC_SITE,
    ]
    assert await site_ids(conn, exclude_sites=[CCA_SITE, CES_SITE]) == [ONTRAC_SITE]


async def test_the_query_is_a_knn_index_scan(conn) -> None:
    # Enough rows that the planner prefers the index, as it will at scale.
    await conn.execute("INSERT INTO directory.provider (id, name) VALUES ('bulk', 'Bulk')")
    await conn.execute(
        """
        INSERT INTO directory.site (id, provider_id, name, address_1, city, lat, lon,
                                    coord_precision, coord_source, services)
        SELECT 'bulk-' || i, 'bulk', 'Bulk ' || i, '1 Main St', 'Nowhere',
               42 + (i % 100) * 0.05, -80 + (i / 100) * 0.05, 'town', 'test',
               '{resume_writing,interview_skills}'
        FROM generate_series(1, 5000) AS i
        """
    )
    await conn.execute("ANALYZE directory.site")
    where = SiteFilter(services=CORE, language="en", accepting=True)
    sql, args = search_query(*ALMONTE, where, 5)
    plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN {sql}", *args))
    assert "Index Scan using site_position_idx" in plan
    assert "Order By" in plan


async def test_reservations_never_over_commit_a_site(fresh_database_url, conn) -> None:
    await conn.execute("UPDATE directory.site SET capacity = 1 WHERE id = $1", CCA_SITE)
    racers = [await asyncpg.connect(fresh_database_url) for _ in range(8)]
    try:

        async def reserve(racer: asyncpg.Connection) -> bool:
            async with racer.transaction():
                return await reserve_place(racer, CCA_SITE)

        won = await asyncio.gather(*(reserve(r) for r in racers))
    finally:
        for racer in racers:
            await racer.close()
    assert sum(won) == 1
    assert await conn.fetchval("SELECT reserved FROM directory.site WHERE id = $1", CCA_SITE) == 1
    assert await site_ids(conn) == [CES_SITE, ONTRAC_SITE]

    await release_place(conn, CCA_SITE)
    assert await reserve_place(conn, CCA_SITE) is True
    await release_place(conn, CCA_SITE)
    await release_place(conn, CCA_SITE)
    assert await conn.fetchval("SELECT reserved FROM directory.site WHERE id = $1", CCA_SITE) == 0


async def test_a_closed_site_cannot_be_reserved(conn) -> None:
    await conn.execute(
        "UPDATE directory.site SET accepting_referrals = false WHERE id = $1", CES_SITE
    )
    assert await reserve_place(conn, CES_SITE) is False
