"""A synthetic directory for benchmarks: sites at real Ontario places, weighted by population.

Places and populations come from the bundled GeoNames extract (services/geo/data,
CC BY 4.0). Each site sits near a place (a spread that grows with the place's size) and gets a
realistic mix of services, languages, accessibility, eligibility and capacity. Rows go in with
PostgreSQL's COPY, with a progress bar, and the GiST index is rebuilt after loading.

    python -m tests.benchmarks.generate --sites 100000 --database-url postgresql://...
"""

import argparse
import asyncio
import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

PLACES = Path(__file__).parents[2] / "services/geo/data/ontario_places_geonames_cities500.csv"
CORE = ["employment_counselling", "job_search", "resume_writing", "interview_skills"]
OTHER = [
    "job_matching_placement", "work_experience", "job_retention", "skills_training",
    "literacy_basic_skills", "disability_supports", "self_employment", "language_training",
    "youth_job_connection", "better_jobs_ontario", "canada_ontario_job_grant", "apprenticeship",
]  # fmt: skip
ACCESSIBILITY = [
    "wheelchair_access", "accessible_washroom", "asl_interpretation", "lsq_interpretation",
    "large_print", "virtual_service",
]  # fmt: skip
PREFIX = "bench"
CHUNK = 20_000


@dataclass(frozen=True)
class Place:
    name: str
    lat: float
    lon: float
    population: int


def places() -> list[Place]:
    with PLACES.open(newline="") as f:
        return [
            Place(
                row["name"], float(row["latitude"]), float(row["longitude"]), int(row["population"])
            )
            for row in csv.DictReader(f)
            if int(row["population"] or 0) > 0
        ]


#: The columns ``site_rows`` fills, in the order of its tuples. COPY leaves every other column
#: (address_2, province, phone, hours, catchment_id, ...) at its table default, so this is a
#: subset of ``services.directory.store.SITE_WRITABLE``, not a copy of it.
SITE_COLUMNS = [
    "id", "provider_id", "name", "address_1", "city", "postal_code", "lat", "lon",
    "coord_precision", "coord_source", "services", "languages", "accessibility",
    "eligibility", "min_age", "max_age", "capacity", "accepting_referrals", "active",
]  # fmt: skip


def site_rows(count: int, providers: int, seed: int) -> Iterator[tuple[object, ...]]:
    rng = random.Random(seed)
    towns = places()
    weights = [p.population for p in towns]
    picks = rng.choices(towns, weights=weights, k=count)
    for n, town in enumerate(picks):
        # Bigger places spread wider: ~1 km for a village, ~15 km for Toronto.
        spread_km = 0.5 + math.log10(town.population) ** 2 / 3
        lat = town.lat + rng.gauss(0, spread_km / 111)
        lon = town.lon + rng.gauss(0, spread_km / (111 * math.cos(math.radians(town.lat))))
        services = [s for s in CORE if rng.random() < 0.9] + [
            s for s in OTHER if rng.random() < 0.25
        ]
        french = rng.random() < (0.35 if town.lon > -77.5 else 0.1)
        eligibility = rng.choice([[], [], [], [], ["youth"], ["ow_recipient", "odsp_recipient"]])
        young = eligibility == ["youth"]
        yield (
            f"{PREFIX}-site-{n}",
            f"{PREFIX}-provider-{n % providers}",
            f"Employment services {town.name} {n}",
            f"{rng.randint(1, 999)} Main Street",
            town.name,
            None,
            max(-90.0, min(90.0, lat)),
            lon,
            "town",
            "synthetic (GeoNames place + spread)",
            services or [rng.choice(CORE)],
            ["en", "fr"] if french else ["en"],
            [a for a in ACCESSIBILITY if rng.random() < 0.3],
            eligibility,
            15 if young else None,
            30 if young else None,
            rng.randint(5, 60),
            rng.random() < 0.95,
            rng.random() < 0.98,
        )


async def generate(database_url: str, sites: int, *, seed: int = 2026, quiet: bool = False) -> None:
    """Replace the synthetic part of the directory with ``sites`` sites (seed data stays)."""
    providers = max(1, sites // 4)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"DELETE FROM directory.site WHERE id LIKE '{PREFIX}-%';"
            f" DELETE FROM directory.provider WHERE id LIKE '{PREFIX}-%';"
            " DROP INDEX IF EXISTS directory.site_position_idx"
        )
        await conn.copy_records_to_table(
            "provider",
            schema_name="directory",
            columns=["id", "name"],
            records=[(f"{PREFIX}-provider-{n}", f"Provider {n}") for n in range(providers)],
        )
        with Progress(
            TextColumn(f"COPY {sites:,} sites"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            disable=quiet,
        ) as progress:
            task = progress.add_task("sites", total=sites)
            chunk: list[tuple[object, ...]] = []
            for row in site_rows(sites, providers, seed):
                chunk.append(row)
                if len(chunk) == CHUNK:
                    await conn.copy_records_to_table(
                        "site", schema_name="directory", columns=SITE_COLUMNS, records=chunk
                    )
                    progress.advance(task, len(chunk))
                    chunk = []
            if chunk:
                await conn.copy_records_to_table(
                    "site", schema_name="directory", columns=SITE_COLUMNS, records=chunk
                )
                progress.advance(task, len(chunk))
        if not quiet:
            print("building the GiST index on earth_point ...", flush=True)
        await conn.execute(
            "CREATE INDEX site_position_idx ON directory.site USING gist (earth_point);"
            " ANALYZE directory.site; ANALYZE directory.provider"
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    asyncio.run(generate(args.database_url, args.sites, seed=args.seed))


if __name__ == "__main__":
    main()
