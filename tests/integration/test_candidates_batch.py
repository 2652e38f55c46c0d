"""The batch path's set-based statements (issue 16) answer as the per-referral ones do: the
candidates and the exclusion counts of many referrals in one statement each, and places taken
and given back at many sites at once, against real PostgreSQL on a generated directory."""

import random

import asyncpg
import pytest

from services.directory.candidates import (
    Criteria,
    adjust_places,
    exclusions,
    exclusions_many,
    suitable_sites,
    suitable_sites_many,
)
from services.directory.site_query import _BATCH_CONDITIONS, SiteFilter, _conditions, sphere_m
from tests.benchmarks.generate import ACCESSIBILITY, CORE, OTHER, PREFIX, generate, places

pytestmark = pytest.mark.integration

CCA_SITE = "canadian-career-academy-carleton-place"


def test_the_batch_conditions_are_the_same_rules_in_the_same_order() -> None:
    every = SiteFilter(
        services=["x"],
        language="en",
        accessibility=["y"],
        accepting=True,
        age=30,
        eligibility=[],
        exclude_providers=["p"],
        exclude_sites=["s"],
        provider="q",
    )
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    alone = [rule for rule, _ in _conditions(every, arg)]
    assert alone == [rule for rule, _ in _BATCH_CONDITIONS]


async def random_asks(
    conn: asyncpg.Connection, count: int, seed: int
) -> list[tuple[float, float, Criteria]]:
    """Referrals from towns all over Ontario with every rule in play, some excluding the
    providers and sites nearest to them."""
    rng = random.Random(seed)
    towns = places()
    asks = []
    for _ in range(count):
        town = rng.choice(towns)
        near = await conn.fetch(
            "SELECT id, provider_id FROM directory.site"
            " ORDER BY earth_point <-> ll_to_earth($1, $2) LIMIT 6",
            town.lat,
            town.lon,
        )
        criteria = Criteria(
            needs=rng.sample(CORE + OTHER, rng.choice([1, 1, 2, 3])),
            language=rng.choice(["en", "en", "fr"]),
            accessibility=rng.choice([[], [], [rng.choice(ACCESSIBILITY)]]),
            age=rng.choice([None, 19, 45]),
            eligibility=rng.choice([[], ["ow_recipient"], ["youth"]]),
            exclude_providers=rng.choice([[], [near[0]["provider_id"]]]),
            exclude_sites=rng.choice([[], [r["id"] for r in near[1:4]]]),
            only_provider=rng.choice([None, None, None, near[-1]["provider_id"]]),
        )
        asks.append((town.lat, town.lon, criteria))
    return asks


async def test_many_referrals_candidates_and_exclusions_in_one_statement_each(
    fresh_database_url: str, conn: asyncpg.Connection
) -> None:
    await generate(fresh_database_url, 3000, quiet=True)
    # Some sites full, some with places in use (a stable pick: the ids' hash).
    await conn.execute(
        "UPDATE directory.site SET reserved = CASE WHEN abs(hashtext(id)) % 7 = 0 THEN capacity"
        " ELSE abs(hashtext(id)) % 3 END WHERE id LIKE $1",
        f"{PREFIX}-%",
    )
    asks = await random_asks(conn, 80, seed=16)
    transaction = conn.transaction()  # as in the router's batch
    await transaction.start()
    together, seen = await suitable_sites_many(conn, asks, 5)
    assert seen is None  # no transaction asked about
    assert len(together) == len(asks)
    nearest: list[float | None] = []
    for (lat, lon, criteria), found in zip(asks, together, strict=True):
        alone = await suitable_sites(conn, lat, lon, criteria, 5)
        # The same sites (the batch keeps the database's order; ``suitable_sites`` re-sorts).
        assert {s.site_id for s in found} == {s.site_id for s in alone}
        assert sorted(found, key=lambda s: (s.distance_km, s.site_id)) == alone
        nearest.append(alone[0].distance_km if alone else None)
    assert sum(1 for found in together if found) > 40, "most referrals found a site"
    assert any(not found for found in together), "and some found none (rules excluded all)"

    counted, _ = await exclusions_many(
        conn, [(lat, lon, c, within) for (lat, lon, c), within in zip(asks, nearest, strict=True)]
    )
    for (lat, lon, criteria), within, counts in zip(asks, nearest, counted, strict=True):
        assert counts == await exclusions(conn, lat, lon, criteria, within_km=within)
    assert sum(sum(c.values()) for c in counted) > 0
    await transaction.rollback()

    # The batch path measures a site as earthdistance does (to count sites filled by the batch
    # itself), to within a millimetre.
    for (lat, lon, _), found in zip(asks, together, strict=True):
        for site in found:
            measured = await conn.fetchval(
                "SELECT earth_distance(ll_to_earth($1, $2), ll_to_earth($3, $4))",
                lat,
                lon,
                site.lat,
                site.lon,
            )
            assert sphere_m(lat, lon, site.lat, site.lon) == pytest.approx(measured, abs=1e-3)


async def test_places_taken_and_given_back_at_many_sites_never_over_commit(
    conn: asyncpg.Connection,
) -> None:
    ces, ontrac = (
        "community-employment-services-perth",
        "ontrac-employment-resource-services-smiths-falls",
    )
    await conn.execute(
        "UPDATE directory.site SET capacity = 2, reserved = 1 WHERE id = ANY($1::text[])",
        [CCA_SITE, ces, ontrac],
    )
    # One more fits at CCA; two do not fit at Perth (nothing changes there); Smiths Falls
    # gives one back.
    refused = await adjust_places(conn, {CCA_SITE: 1, ces: 2, ontrac: -1, "no-such-site": -1})
    assert refused == {ces}
    rows = await conn.fetch(
        "SELECT id, reserved FROM directory.site WHERE id = ANY($1::text[])",
        [CCA_SITE, ces, ontrac],
    )
    assert {r["id"]: r["reserved"] for r in rows} == {CCA_SITE: 2, ces: 1, ontrac: 0}
    # Giving back never goes below zero.
    assert await adjust_places(conn, {ontrac: -3}) == set()
    assert await conn.fetchval("SELECT reserved FROM directory.site WHERE id = $1", ontrac) == 0


async def test_the_batch_reads_say_whether_another_transactions_commit_is_in_them(
    fresh_database_url: str, conn: asyncpg.Connection
) -> None:
    """The router reads a batch while the previous one may be committing: the reads tell
    whether that transaction's places are in what they read."""
    other = await asyncpg.connect(fresh_database_url)
    try:
        transaction = other.transaction()
        await transaction.start()
        xid = int(await other.fetchval("SELECT pg_current_xact_id()::text"))
        await other.execute("UPDATE directory.site SET reserved = 3 WHERE id = $1", CCA_SITE)
        ask = [(45.2299, -76.1959, Criteria(needs=["resume_writing"], language="en"))]

        async def read() -> tuple[int, bool | None, bool | None]:
            found, seen = await suitable_sites_many(conn, ask, 5, xid=xid)
            french = Criteria(needs=["resume_writing"], language="fr")  # every site excluded
            _, counted_seen = await exclusions_many(
                conn, [(45.2299, -76.1959, french, None)], xid=xid
            )
            reserved = next(s.reserved for s in found[0] if s.site_id == CCA_SITE)
            return reserved, seen, counted_seen

        assert await read() == (0, False, False)
        await transaction.commit()
        assert await read() == (3, True, True)
    finally:
        await other.close()
