"""Sites near a point, nearest first: the staff search, and the narrow query the router uses.

One SQL statement per combination of filters: the GiST index on ``earth_point`` (the stored
``ll_to_earth(lat, lon)``) drives a KNN scan (``ORDER BY ... <-> ...``), the filters prune rows
as it goes, and LIMIT stops it. A radius also becomes an ``earth_box`` index condition, so a
small radius bounds the scan even when few sites qualify. SQL ranks on earthdistance's sphere;
the returned rows are measured again on the WGS84 ellipsoid (``geodesic_km``, the distance
geopy's ``geodesic`` gives, computed in C), which is what we report and rank by.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from contracts.directory import Provider, Site
from services.directory.store import (
    PROVIDER_COLUMNS,
    SITE_COLUMNS,
    provider_from_row,
    site_from_row,
)
from services.geo import geodesic_km
from services.infra.db import Connection

#: The origin as a point on the earth, computed once per query. A scalar subquery is an
#: InitPlan, evaluated once; a bare ll_to_earth($1, $2) in a prepared statement's generic plan
#: is evaluated again for every row it is compared with (half a small directory's query time).
HERE = "(SELECT ll_to_earth($1, $2))"

#: The sphere and the ellipsoid disagree by well under 1 %; widen the SQL radius by that much
#: and apply the exact radius to the geodesic distance.
_SPHERE_SLACK = 1.01

_SELECT = (
    "SELECT {site}, {provider} FROM directory.site s"
    " JOIN directory.provider p ON p.id = s.provider_id"
).format(
    site=", ".join(f"s.{c.strip()}" for c in SITE_COLUMNS.split(",")),
    provider=", ".join(f"p.{c.strip()} AS p_{c.strip()}" for c in PROVIDER_COLUMNS.split(",")),
)


@dataclass(frozen=True)
class SiteFilter:
    """Which sites qualify. Every field narrows; the defaults admit every active site."""

    #: The site must offer all of these service codes.
    services: Sequence[str] = ()
    language: str | None = None
    #: The site must meet all of these accessibility codes.
    accessibility: Sequence[str] = ()
    #: Only sites accepting referrals with a place left.
    accepting: bool = False
    radius_km: float | None = None
    #: The client's age and eligibility codes, checked against the site's rules.
    age: int | None = None
    eligibility: Sequence[str] | None = None
    exclude_providers: Sequence[str] = ()
    exclude_sites: Sequence[str] = ()
    #: Only this provider's sites (the router's look for a referral's preferred provider).
    provider: str | None = None


@dataclass(frozen=True)
class NearbySite:
    provider: Provider
    site: Site
    distance_km: float


def _conditions(where: SiteFilter, arg: Callable[[Any], str]) -> list[tuple[str, str]]:
    """Each filter of ``where`` as (the suitability rule it enforces, its SQL condition).

    The rule names are ``contracts.referrals.EXCLUSION_RULES``, in the order DESIGN.md section 4
    lists them, so the candidates query and the exclusion counts share one definition.
    Expects (lat, lon) bound as $1, $2.
    """
    here = HERE
    rules = [("inactive", "s.active AND p.active")]
    if where.accepting:
        rules.append(("not_accepting_or_full", "s.accepting_referrals AND s.reserved < s.capacity"))
    if where.services:
        rules.append(("services", f"s.services @> {arg(list(where.services))}::text[]"))
    if where.language is not None:
        rules.append(("language", f"{arg(where.language)} = ANY(s.languages)"))
    if where.accessibility:
        rules.append(
            ("accessibility", f"s.accessibility @> {arg(list(where.accessibility))}::text[]")
        )
    eligibility = []
    if where.age is not None:
        age = arg(where.age)
        eligibility.append(f"(s.min_age IS NULL OR s.min_age <= {age})")
        eligibility.append(f"(s.max_age IS NULL OR s.max_age >= {age})")
    if where.eligibility is not None:
        held = arg(list(where.eligibility))
        eligibility.append(f"(cardinality(s.eligibility) = 0 OR s.eligibility && {held}::text[])")
    if eligibility:
        rules.append(("eligibility", " AND ".join(eligibility)))
    if where.radius_km is not None:
        metres = arg(where.radius_km * 1000 * _SPHERE_SLACK)
        rules.append(
            (
                "distance",
                f"earth_box({here}, {metres}) @> s.earth_point"
                f" AND earth_distance({here}, s.earth_point) <= {metres}",
            )
        )
    if where.exclude_providers:
        rules.append(
            ("excluded_provider", f"NOT s.provider_id = ANY({arg(list(where.exclude_providers))})")
        )
    if where.exclude_sites:
        rules.append(("already_offered", f"NOT s.id = ANY({arg(list(where.exclude_sites))})"))
    if where.provider is not None:
        rules.append(("other_provider", f"s.provider_id = {arg(where.provider)}"))
    return rules


def _binder(args: list[Any]) -> Callable[[Any], str]:
    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    return arg


def nearest_query(lat: float, lon: float, where: SiteFilter, limit: int) -> tuple[str, list[Any]]:
    """The SQL text and arguments for ``where``'s sites nearest to (lat, lon)."""
    args: list[Any] = [lat, lon]
    arg = _binder(args)
    conditions = [condition for _, condition in _conditions(where, arg)]
    sql = (
        f"{_SELECT} WHERE {' AND '.join(conditions)}"
        f" ORDER BY s.earth_point <-> {HERE} LIMIT {arg(limit)}"
    )
    return sql, args


def exclusions_query(
    lat: float, lon: float, where: SiteFilter, *, within_km: float | None, scan: int
) -> tuple[str, list[Any]]:
    """SQL counting, among the ``scan`` sites nearest to (lat, lon) and nearer than
    ``within_km``, how many each rule excluded (each site counts under its first failed rule).
    """
    args: list[Any] = [lat, lon]
    arg = _binder(args)
    rules = _conditions(where, arg)
    first_failed = " ".join(f"WHEN NOT ({condition}) THEN '{rule}'" for rule, condition in rules)
    nearer = ""
    if within_km is not None:
        # Sphere versus ellipsoid: count only sites clearly nearer than the chosen one. (An
        # earth_box index condition here made the planner sort every site in the box: 140 ms
        # in downtown Toronto at 1,000,000 sites; the KNN scan below stops at its LIMIT.)
        metres = arg(within_km * 1000 / _SPHERE_SLACK)
        nearer = f" WHERE earth_distance({HERE}, s.earth_point) < {metres}"
    sql = (
        f"SELECT rule, count(*) AS n FROM ("
        f" SELECT CASE {first_failed} END AS rule FROM ("
        f"  SELECT s.* FROM directory.site s"
        f"  ORDER BY s.earth_point <-> {HERE} LIMIT {arg(scan)}"
        f" ) s JOIN directory.provider p ON p.id = s.provider_id{nearer}"
        f") ranked WHERE rule IS NOT NULL GROUP BY rule"
    )
    return sql, args


async def nearest_sites(
    conn: Connection, lat: float, lon: float, where: SiteFilter, limit: int
) -> list[NearbySite]:
    """Up to ``limit`` qualifying sites, nearest first by geodesic distance (ties by site id)."""
    sql, args = nearest_query(lat, lon, where, limit)
    found = []
    for row in await conn.fetch(sql, *args):
        distance = geodesic_km(lat, lon, row["lat"], row["lon"])
        if where.radius_km is None or distance <= where.radius_km:
            found.append(NearbySite(provider_from_row(row, "p_"), site_from_row(row), distance))
    found.sort(key=lambda hit: (hit.distance_km, hit.site.id))
    return found


def referral_filter(
    *,
    needs: Sequence[str],
    language: str,
    accessibility: Sequence[str] = (),
    age: int | None = None,
    eligibility: Sequence[str] = (),
    max_distance_km: float | None = None,
    exclude_providers: Sequence[str] = (),
    already_offered: Sequence[str] = (),
) -> SiteFilter:
    """Every rule of DESIGN.md section 4 that the data decides, for one referral."""
    return SiteFilter(
        services=needs,
        language=language,
        accessibility=accessibility,
        accepting=True,
        radius_km=max_distance_km,
        age=age,
        eligibility=eligibility,
        exclude_providers=exclude_providers,
        exclude_sites=already_offered,
    )


async def candidates(
    conn: Connection,
    lat: float,
    lon: float,
    *,
    needs: Sequence[str],
    language: str,
    accessibility: Sequence[str] = (),
    age: int | None = None,
    eligibility: Sequence[str] = (),
    max_distance_km: float | None = None,
    exclude_providers: Sequence[str] = (),
    already_offered: Sequence[str] = (),
    limit: int = 20,
) -> list[NearbySite]:
    """The router's view of the directory: sites suitable for a referral, nearest first.

    Applies every rule of DESIGN.md section 4 that the data decides (active, accepting with a
    place left, services, language, accessibility, eligibility, distance, exclusions, sites
    already offered this referral); the router ranks the result and explains its choice.
    """
    where = referral_filter(
        needs=needs,
        language=language,
        accessibility=accessibility,
        age=age,
        eligibility=eligibility,
        max_distance_km=max_distance_km,
        exclude_providers=exclude_providers,
        already_offered=already_offered,
    )
    return await nearest_sites(conn, lat, lon, where, limit)


#: How many of the nearest sites the exclusion counts look at: bounded, so explaining a choice
#: costs the same in a directory of 500 sites or of 1,000,000. When a site was chosen only the
#: sites nearer than it count, and a few hundred nearest cover them in all but the densest spots.
EXCLUSION_SCAN = 1000
EXCLUSION_SCAN_CHOSEN = 200


async def exclusions(
    conn: Connection,
    lat: float,
    lon: float,
    where: SiteFilter,
    *,
    within_km: float | None = None,
    scan: int | None = None,
) -> dict[str, int]:
    """How many sites each rule excluded: among the ``scan`` nearest sites, those nearer than
    ``within_km`` (the chosen site's distance; None when no site was suitable).
    """
    if scan is None:
        scan = EXCLUSION_SCAN if within_km is None else EXCLUSION_SCAN_CHOSEN
    sql, args = exclusions_query(lat, lon, where, within_km=within_km, scan=scan)
    return {row["rule"]: row["n"] for row in await conn.fetch(sql, *args)}


async def reserve_place(conn: Connection, site_id: str) -> bool:
    """Take one of the site's places for a referral; False when it has none left.

    One conditional UPDATE: PostgreSQL's row lock makes concurrent reservers (several router
    replicas) wait for each other, so a site is never over-committed. Call it inside the
    transaction that records the offer, so both commit or neither does.
    """
    taken = await conn.fetchval(
        "UPDATE directory.site SET reserved = reserved + 1"
        " WHERE id = $1 AND active AND accepting_referrals AND reserved < capacity"
        " RETURNING reserved",
        site_id,
    )
    return taken is not None


async def release_place(conn: Connection, site_id: str) -> None:
    """Give back a place taken by ``reserve_place`` (declined, expired or cancelled offer)."""
    await conn.execute(
        "UPDATE directory.site SET reserved = greatest(reserved - 1, 0) WHERE id = $1", site_id
    )
