"""The SQL behind the router's HTTP reads for people (DESIGN.md section 3d): an OW system's
referrals, a provider's open offers and caseload, and what the write endpoints check before
they publish (whose offer, whose referral, in what state).

Read-only, on one connection; site and provider names come through the directory's door
(``candidates``). Who may see what is decided by the callers (``visibility``, ``actions``):
every query here takes the party to filter by, or None for all (an admin).
"""

import datetime
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from contracts.referrals import Source
from contracts.router import CaseloadEntry, OpenOffer, ReferralSummary
from services.directory import candidates
from services.infra.db import Connection
from services.router.actions import HeldReferral, OfferOwner, ReferralOwner

_source = msgspec.json.Decoder(Source)


@dataclass(frozen=True)
class ReferralFilter:
    """Which referrals a list shows: ``system`` None is every system (an admin's)."""

    system: str | None
    statuses: Sequence[str] = ()
    office: str | None = None
    created_from: datetime.datetime | None = None
    created_before: datetime.datetime | None = None
    #: Keyset: rows strictly older than (created_at, id).
    after: tuple[datetime.datetime, uuid.UUID] | None = None
    limit: int = 50


def _source_of(raw: str | None) -> Source | None:
    return None if raw is None else _source.decode(raw)


#: The client's facts out of the stored request (omitted defaults read as empty lists).
_REQUEST_FACTS = """
    r.request -> 'client' ->> 'client_ref' AS client_ref,
    r.request -> 'client' ->> 'language' AS language,
    coalesce(r.request -> 'needs', '[]') ::text AS needs,
    coalesce(r.request -> 'client' -> 'accessibility_needs', '[]') ::text AS accessibility,
    (r.request -> 'source') ::text AS source"""

_codes = msgspec.json.Decoder(list[str])


async def referral_summaries(conn: Connection, where: ReferralFilter) -> list[ReferralSummary]:
    """Referrals matching ``where``, newest first, at most ``where.limit``; each with the site
    of its open or accepted offer."""
    clauses, args = ["TRUE"], []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.system is not None:
        clauses.append(f"r.source_system = {arg(where.system)}")
    if where.statuses:
        clauses.append(f"r.status = ANY({arg(list(where.statuses))}::text[])")
    if where.office is not None:
        clauses.append(f"r.office_id = {arg(where.office)}")
    if where.created_from is not None:
        clauses.append(f"r.created_at >= {arg(where.created_from)}")
    if where.created_before is not None:
        clauses.append(f"r.created_at < {arg(where.created_before)}")
    if where.after is not None:
        at, rid = where.after
        clauses.append(f"(r.created_at, r.id) < ({arg(at)}, {arg(rid)})")
    rows = await conn.fetch(
        f"""
        SELECT r.id, r.status, r.attempt, r.created_at, r.updated_at, {_REQUEST_FACTS},
               o.provider_id, o.site_id, o.distance_km
        FROM router.referral r
        LEFT JOIN LATERAL (
            SELECT provider_id, site_id, distance_km FROM router.offer
            WHERE referral_id = r.id AND state IN ('open', 'accepted')
            ORDER BY attempt DESC LIMIT 1
        ) o ON TRUE
        WHERE {" AND ".join(clauses)}
        ORDER BY r.created_at DESC, r.id DESC
        LIMIT {arg(where.limit)}
        """,
        *args,
    )
    names = await candidates.site_names(conn, [row["site_id"] for row in rows if row["site_id"]])
    return [
        ReferralSummary(
            referral_id=row["id"],
            status=row["status"],
            attempt=row["attempt"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            source=_source_of(row["source"]),
            client_ref=row["client_ref"],
            needs=_codes.decode(row["needs"]),  # type: ignore[arg-type]
            language=row["language"],
            provider_id=row["provider_id"],
            site_id=row["site_id"],
            site_name=names.get(row["site_id"]),
            distance_km=row["distance_km"],
            url=f"/api/v1/referrals/{row['id']}",
        )
        for row in rows
    ]


def _of_provider(provider_id: str | None) -> str:
    # Two statements rather than "$1 IS NULL OR ...", which a generic plan cannot index.
    return "" if provider_id is None else "AND o.provider_id = $1"


def _provider_arg(provider_id: str | None) -> list[str]:
    return [] if provider_id is None else [provider_id]


async def open_offers(conn: Connection, provider_id: str | None) -> list[OpenOffer]:
    """Open offers of ``provider_id`` (None: every provider's), the soonest deadline first."""
    rows = await conn.fetch(
        f"""
        SELECT o.id, o.referral_id, o.attempt, o.provider_id, o.site_id, o.distance_km,
               o.offered_at, o.expires_at, {_REQUEST_FACTS}
        FROM router.offer o JOIN router.referral r ON r.id = o.referral_id
        WHERE o.state = 'open' {_of_provider(provider_id)}
        ORDER BY o.expires_at, o.id
        """,
        *_provider_arg(provider_id),
    )
    names = await candidates.site_names(conn, [row["site_id"] for row in rows])
    return [
        OpenOffer(
            offer_id=row["id"],
            referral_id=row["referral_id"],
            attempt=row["attempt"],
            provider_id=row["provider_id"],
            site_id=row["site_id"],
            site_name=names.get(row["site_id"]),
            distance_km=row["distance_km"],
            offered_at=row["offered_at"],
            expires_at=row["expires_at"],
            client_ref=row["client_ref"],
            needs=_codes.decode(row["needs"]),  # type: ignore[arg-type]
            language=row["language"],
            accessibility_needs=_codes.decode(row["accessibility"]),  # type: ignore[arg-type]
            source=_source_of(row["source"]),
        )
        for row in rows
    ]


async def caseload(conn: Connection, provider_id: str | None) -> list[CaseloadEntry]:
    """Referrals ``provider_id`` (None: any provider) holds, accepted or in service, the most
    recently changed first."""
    rows = await conn.fetch(
        f"""
        SELECT r.id, o.id AS offer_id, r.status, o.closed_at AS accepted_at, r.updated_at,
               o.provider_id, o.site_id, {_REQUEST_FACTS}
        FROM router.offer o JOIN router.referral r ON r.id = o.referral_id
        WHERE o.state = 'accepted' AND r.status IN ('accepted', 'in_service')
          {_of_provider(provider_id)}
        ORDER BY r.updated_at DESC, r.id
        """,
        *_provider_arg(provider_id),
    )
    names = await candidates.site_names(conn, [row["site_id"] for row in rows])
    return [
        CaseloadEntry(
            referral_id=row["id"],
            offer_id=row["offer_id"],
            status=row["status"],
            accepted_at=row["accepted_at"],
            updated_at=row["updated_at"],
            provider_id=row["provider_id"],
            site_id=row["site_id"],
            site_name=names.get(row["site_id"]),
            client_ref=row["client_ref"],
            needs=_codes.decode(row["needs"]),  # type: ignore[arg-type]
            language=row["language"],
            accessibility_needs=_codes.decode(row["accessibility"]),  # type: ignore[arg-type]
            source=_source_of(row["source"]),
        )
        for row in rows
    ]


async def offer_owner(conn: Connection, offer_id: uuid.UUID) -> OfferOwner | None:
    row = await conn.fetchrow(
        "SELECT referral_id, provider_id, state, expires_at FROM router.offer WHERE id = $1",
        offer_id,
    )
    if row is None:
        return None
    return OfferOwner(
        offer_id=offer_id,
        referral_id=row["referral_id"],
        provider_id=row["provider_id"],
        state=row["state"],
        expires_at=row["expires_at"],
    )


async def referral_owner(conn: Connection, referral_id: uuid.UUID) -> ReferralOwner | None:
    """Who sent the referral, where it stands, and which provider holds it (if one does)."""
    row = await conn.fetchrow(
        """
        SELECT r.source_system, r.status,
               (SELECT provider_id FROM router.offer
                WHERE referral_id = r.id AND state = 'accepted') AS holder,
               (SELECT closed_at FROM router.offer
                WHERE referral_id = r.id AND state = 'accepted') AS accepted_at
        FROM router.referral r WHERE r.id = $1
        """,
        referral_id,
    )
    if row is None:
        return None
    held = (
        None
        if row["holder"] is None
        else HeldReferral(provider_id=row["holder"], accepted_at=row["accepted_at"])
    )
    return ReferralOwner(
        referral_id=referral_id, system=row["source_system"], status=row["status"], held=held
    )
