"""The SQL of "sites near a point": one statement per combination of filters, shared by the
staff search (``search.py``) and the router's candidates query (``candidates.py``).

The GiST index on ``earth_point`` (the stored ``ll_to_earth(lat, lon)``) drives a KNN scan
(``ORDER BY ... <-> ...``), the filters prune rows as it goes, and LIMIT stops it. A radius also
becomes an ``earth_box`` index condition, so a small radius bounds the scan even when few sites
qualify. SQL ranks on earthdistance's sphere; callers measure the rows again on the WGS84
ellipsoid (``services.geo.geodesic_km``), which is what we report and rank by.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

#: The origin as a point on the earth, computed once per query. A scalar subquery is an
#: InitPlan, evaluated once; a bare ll_to_earth($1, $2) in a prepared statement's generic plan
#: is evaluated again for every row it is compared with (half a small directory's query time).
HERE = "(SELECT ll_to_earth($1, $2))"

#: The sphere and the ellipsoid disagree by well under 1 %; widen the SQL radius by that much
#: and apply the exact radius to the geodesic distance.
_SPHERE_SLACK = 1.01
#: earthdistance's ``earth()``: the sphere's radius, in metres.
_EARTH_M = 6378168.0


def nearer_than_m(within_km: float) -> float:
    """The sphere distance (metres) under which the exclusion counts take a site to be nearer
    than a chosen site ``within_km`` away (geodesic): clearly nearer, sphere versus ellipsoid."""
    return within_km * 1000 / _SPHERE_SLACK


def sphere_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """``earth_distance(ll_to_earth(lat1, lon1), ll_to_earth(lat2, lon2))`` computed as
    PostgreSQL computes it (the chord between the two points on the sphere, as an arc)."""

    def xyz(lat: float, lon: float) -> tuple[float, float, float]:
        lat, lon = math.radians(lat), math.radians(lon)
        return (
            _EARTH_M * math.cos(lat) * math.cos(lon),
            _EARTH_M * math.cos(lat) * math.sin(lon),
            _EARTH_M * math.sin(lat),
        )

    chord = math.dist(xyz(lat1, lon1), xyz(lat2, lon2))
    return 2 * _EARTH_M * math.asin(min(chord / (2 * _EARTH_M), 1.0))


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


def nearest_query(
    select: str, lat: float, lon: float, where: SiteFilter, limit: int
) -> tuple[str, list[Any]]:
    """SQL and arguments: ``select`` (a ``SELECT ... FROM directory.site s JOIN
    directory.provider p ...``) for ``where``'s sites nearest to (lat, lon), nearest first."""
    args: list[Any] = [lat, lon]
    arg = _binder(args)
    conditions = [condition for _, condition in _conditions(where, arg)]
    sql = (
        f"{select} WHERE {' AND '.join(conditions)}"
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
        metres = arg(nearer_than_m(within_km))
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


# -- the same rules for many origins at once (the router's batch path) --------------------------

#: A batch's criteria, one JSON object per origin ($1, a jsonb array; see ``batch_criteria``),
#: unpacked once per origin in a materialized CTE (inlined, ``ll_to_earth`` would run again
#: for every site compared). Arrays of arrays must be rectangular, so lists travel as JSON.
_ORIGINS = """
WITH r AS MATERIALIZED (
    SELECT ord,
           ll_to_earth((c->>'lat')::float8, (c->>'lon')::float8) AS here,
           ARRAY(SELECT jsonb_array_elements_text(c->'services')) AS services,
           c->>'language' AS language,
           ARRAY(SELECT jsonb_array_elements_text(c->'accessibility')) AS accessibility,
           (c->>'age')::integer AS age,
           ARRAY(SELECT jsonb_array_elements_text(c->'eligibility')) AS eligibility,
           ARRAY(SELECT jsonb_array_elements_text(c->'exclude_providers')) AS exclude_providers,
           ARRAY(SELECT jsonb_array_elements_text(c->'exclude_sites')) AS exclude_sites,
           c->>'provider' AS provider,
           (c->>'within_m')::float8 AS within_m,
           (c->>'scan')::integer AS scan
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS t(c, ord)
)"""

#: ``_conditions`` with every filter given per origin (columns of ``r``) instead of bound: the
#: same rules in the same order, an empty list or a NULL admitting every site. The provider is
#: looked up by its key for the sites that reach that test rather than joined: joined, the
#: planner hashed or scanned every provider for each origin at 500 sites (twice the time). No
#: radius: an origin with one is not batched (its KNN scan needs the radius as an index
#: condition).
_BATCH_CONDITIONS: list[tuple[str, str]] = [
    (
        "inactive",
        "s.active AND (SELECT p.active FROM directory.provider p WHERE p.id = s.provider_id)",
    ),
    ("not_accepting_or_full", "s.accepting_referrals AND s.reserved < s.capacity"),
    ("services", "s.services @> r.services"),
    ("language", "(r.language IS NULL OR r.language = ANY(s.languages))"),
    ("accessibility", "s.accessibility @> r.accessibility"),
    (
        "eligibility",
        "(r.age IS NULL OR ((s.min_age IS NULL OR s.min_age <= r.age)"
        " AND (s.max_age IS NULL OR s.max_age >= r.age)))"
        " AND (cardinality(s.eligibility) = 0 OR s.eligibility && r.eligibility)",
    ),
    ("excluded_provider", "NOT s.provider_id = ANY(r.exclude_providers)"),
    ("already_offered", "NOT s.id = ANY(r.exclude_sites)"),
    ("other_provider", "(r.provider IS NULL OR s.provider_id = r.provider)"),
]


#: The columns the batch queries read of a site (``s.*`` carried its name, address and hours
#: through the scan and the sort: twice the time at 500 sites).
_SITE_RULE_COLUMNS = (
    "s.id, s.provider_id, s.lat, s.lon, s.reserved, s.capacity, s.active,"
    " s.accepting_referrals, s.services, s.languages, s.accessibility, s.eligibility,"
    " s.min_age, s.max_age, s.earth_point"
)


def batch_criteria(
    lat: float, lon: float, where: SiteFilter, *, within_km: float | None = None, scan: int = 0
) -> dict[str, Any]:
    """One origin of a batch query: ``where``'s filters as the JSON ``_ORIGINS`` unpacks."""
    if where.radius_km is not None:
        raise ValueError("a batch query takes no radius: query that origin alone")
    return {
        "lat": lat,
        "lon": lon,
        "services": list(where.services),
        "language": where.language,
        "accessibility": list(where.accessibility),
        "age": where.age,
        "eligibility": list(where.eligibility or ()),
        "exclude_providers": list(where.exclude_providers),
        "exclude_sites": list(where.exclude_sites),
        "provider": where.provider,
        "within_m": None if within_km is None else nearer_than_m(within_km),
        "scan": scan,
    }


def batch_nearest_query(columns: str) -> str:
    """SQL: for each origin of $1 (``batch_criteria`` objects), ``columns`` (of ``s``) of its
    $2 nearest suitable sites, as rows (ord, ..., seen) nearest first; ``seen``: whether the
    transaction $3 (an xid8, or NULL) had committed when the rows were read.

    The KNN scan sits in a subquery the planner may not flatten (OFFSET 0), so the filters
    apply to its stream and LIMIT stops it. Beside the filters, the planner guessed one row
    (arrays it cannot see) and chose a sequential scan and a sort per origin (5 s for 100
    origins at 100,000 sites); with ties ordered by site id, it sorted every suitable site."""
    conditions = " AND ".join(condition for _, condition in _BATCH_CONDITIONS)
    return f"""{_ORIGINS}
SELECT r.ord, c.*, pg_visible_in_snapshot($3::xid8, pg_current_snapshot()) AS seen FROM r
JOIN LATERAL (
    SELECT {columns}, s.d FROM (
        SELECT {_SITE_RULE_COLUMNS}, s.earth_point <-> r.here AS d FROM directory.site s
        ORDER BY s.earth_point <-> r.here OFFSET 0
    ) s
    WHERE {conditions}
    ORDER BY s.d LIMIT $2
) c ON true
ORDER BY r.ord, c.d"""


#: A radius that holds the whole earth (metres).
_EVERYWHERE_M = 100_000_000


def batch_exclusions_query() -> str:
    """SQL: for each origin of $1, ``exclusions_query``'s counts (rows ord, rule, n) among its
    ``scan`` nearest sites nearer than ``within_m`` metres on the sphere (all when NULL), and
    whether the transaction $2 (an xid8, or NULL) had committed when they were counted."""
    first_failed = " ".join(
        f"WHEN NOT ({condition}) THEN '{rule}'" for rule, condition in _BATCH_CONDITIONS
    )
    return f"""{_ORIGINS}
SELECT r.ord, x.rule, x.n, pg_visible_in_snapshot($2::xid8, pg_current_snapshot()) AS seen
FROM r
JOIN LATERAL (
    SELECT rule, count(*) AS n FROM (
        SELECT CASE {first_failed} END AS rule FROM (
            SELECT {_SITE_RULE_COLUMNS} FROM directory.site s
            WHERE earth_box(r.here, coalesce(r.within_m, {_EVERYWHERE_M})) @> s.earth_point
            ORDER BY s.earth_point <-> r.here LIMIT r.scan
        ) s
        WHERE r.within_m IS NULL OR earth_distance(r.here, s.earth_point) < r.within_m
    ) ranked WHERE rule IS NOT NULL GROUP BY rule
) x ON true
ORDER BY r.ord, x.rule"""
