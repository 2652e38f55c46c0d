"""All SQL of the router schema: referrals, offers, history, the outbox and handled message ids.

A ``SqlStore`` wraps one connection and implements ``ports.Store``; the unit of work opens the
transaction around a handler, so everything a handler writes through it commits together (or
not at all). It also answers the HTTP API's view of a referral.
"""

import datetime
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from contracts.codec import decode_inbound, encode
from contracts.directory import Origin
from contracts.referrals import Explanation, ReferralRequested
from contracts.router import HistoryEntry, OfferView, ReferralView
from services.infra.db import Connection
from services.router.model import OfferEnd, OfferRow, OutboxRow, ReferralRow
from services.router.ports import Claim, History, NewReferral, Outbound, Outcomes, Statuses

_explanation = msgspec.json.Decoder(Explanation)


def _request(value: str | None) -> ReferralRequested | None:
    if value is None:
        return None
    message = decode_inbound(value.encode())
    assert isinstance(message, ReferralRequested)  # only requests are stored here
    return message


def _referral(row: Any) -> ReferralRow:
    return ReferralRow(
        id=row["id"],
        status=row["status"],
        attempt=row["attempt"],
        request=_request(row["request"]),
        lat=row["lat"],
        lon=row["lon"],
        system=row["source_system"],
    )


_OFFER_COLUMNS = (
    "id, referral_id, attempt, provider_id, site_id, distance_km, offered_at, expires_at"
)


class SqlStore:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- handled messages ------------------------------------------------------------------

    async def claim_message(
        self,
        message_id: uuid.UUID,
        referral_id: uuid.UUID | None,
        subject: str,
        now: datetime.datetime,
    ) -> bool:
        """Record an inbound message as handled; False when it was handled before.

        A second transaction claiming the same id waits for the first to commit, then sees it.
        """
        claimed = await self.conn.fetchval(
            "INSERT INTO router.processed (message_id, referral_id, subject, outcome, at)"
            " VALUES ($1, $2, $3, 'handling', $4) ON CONFLICT DO NOTHING RETURNING true",
            message_id,
            referral_id,
            subject,
            now,
        )
        return bool(claimed)

    # -- referrals ---------------------------------------------------------------------------

    async def create_referral(
        self,
        request: ReferralRequested,
        *,
        origin: Origin,
        now: datetime.datetime,
    ) -> bool:
        """Store a new referral as ``received``; False when its id is already known."""
        created = await self.conn.fetchval(
            "INSERT INTO router.referral (id, status, request, lat, lon, precision,"
            " resolved_from, source_system, created_at, updated_at)"
            " VALUES ($1, 'received', $2, $3, $4, $5, $6, $7, $8, $8)"
            " ON CONFLICT (id) DO NOTHING RETURNING true",
            request.referral_id,
            encode(request).decode(),
            origin.lat,
            origin.lon,
            origin.precision,
            origin.resolved_from,
            request.source.system,
            now,
        )
        return bool(created)

    async def create_rejected(
        self, referral_id: uuid.UUID, system: str, now: datetime.datetime
    ) -> bool:
        """Store a referral whose request was invalid as ``rejected``; False when known."""
        created = await self.conn.fetchval(
            "INSERT INTO router.referral (id, status, source_system, created_at, updated_at)"
            " VALUES ($1, 'rejected', $2, $3, $3) ON CONFLICT (id) DO NOTHING RETURNING true",
            referral_id,
            system,
            now,
        )
        return bool(created)

    async def lock_referral(self, referral_id: uuid.UUID) -> ReferralRow | None:
        """The referral, locked until the transaction ends (one handler per referral at a time)."""
        row = await self.conn.fetchrow(
            "SELECT id, status, attempt, request::text AS request, lat, lon, source_system"
            " FROM router.referral WHERE id = $1 FOR UPDATE",
            referral_id,
        )
        return None if row is None else _referral(row)

    async def lock_expired(self, now: datetime.datetime, limit: int) -> list[uuid.UUID]:
        """Referrals whose open offer is past its deadline, locked; rows another replica holds
        are skipped, so several routers share the work without waiting on each other.
        """
        rows = await self.conn.fetch(
            "SELECT r.id FROM router.referral r"
            " JOIN router.offer o ON o.referral_id = r.id AND o.state = 'open'"
            " WHERE o.expires_at <= $1 ORDER BY o.expires_at LIMIT $2"
            " FOR UPDATE OF r SKIP LOCKED",
            now,
            limit,
        )
        return [row["id"] for row in rows]

    # -- offers ------------------------------------------------------------------------------

    async def offered_sites(self, referral_id: uuid.UUID) -> list[str]:
        rows = await self.conn.fetch(
            "SELECT site_id FROM router.offer WHERE referral_id = $1", referral_id
        )
        return [row["site_id"] for row in rows]

    async def current_offer(self, referral_id: uuid.UUID) -> OfferRow | None:
        """The referral's open offer, or the accepted one it is held under (never both)."""
        row = await self.conn.fetchrow(
            f"SELECT {_OFFER_COLUMNS}, state, closed_at FROM router.offer"
            " WHERE referral_id = $1 AND state IN ('open', 'accepted')",
            referral_id,
        )
        return None if row is None else OfferRow(**dict(row))

    async def insert_offer(self, offer: OfferRow) -> None:
        await self.conn.execute(
            f"INSERT INTO router.offer ({_OFFER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            offer.id,
            offer.referral_id,
            offer.attempt,
            offer.provider_id,
            offer.site_id,
            offer.distance_km,
            offer.offered_at,
            offer.expires_at,
        )

    async def close_offer(
        self, offer_id: uuid.UUID, state: OfferEnd, now: datetime.datetime
    ) -> None:
        await self.conn.execute(
            "UPDATE router.offer SET state = $2, closed_at = $3 WHERE id = $1 AND state = 'open'",
            offer_id,
            state,
            now,
        )

    # -- history and outbox ------------------------------------------------------------------

    async def write_behind(
        self,
        history: History,
        statuses: Statuses,
        finished: Outcomes,
        outbox: Outbound,
    ) -> list[OutboxRow]:
        """What a transaction's handlers queued, written in one statement (one round trip
        instead of one per row): history entries and outbox rows in the order given, each
        referral's latest status, each handled message's outcome. The outbox rows stored: a
        message id queued before is skipped.
        """
        payloads = [encode(message) for _, message in outbox]
        rows = await self.conn.fetch(
            _WRITE_BEHIND,
            [h[0] for h in history],
            [h[2] for h in history],
            [h[1].event for h in history],
            [h[1].status for h in history],
            [h[1].refused for h in history],
            [h[1].attempt for h in history],
            [h[1].provider_id for h in history],
            [h[1].site_id for h in history],
            [h[1].distance_km for h in history],
            [h[1].reason for h in history],
            [None if h[1].explanation is None else encode_json(h[1].explanation) for h in history],
            [h[1].message_id for h in history],
            [h[1].code for h in history],
            [s[0] for s in statuses],
            [s[1] for s in statuses],
            [s[2] for s in statuses],
            [s[3] for s in statuses],
            [f[0] for f in finished],
            [f[1] for f in finished],
            [f[2] for f in finished],
            [message.message_id for _, message in outbox],
            [subject for subject, _ in outbox],
            payloads,
        )
        stored = {row["message_id"]: row["id"] for row in rows}
        return [
            OutboxRow(stored[message.message_id], message.message_id, subject, payload)
            for (subject, message), payload in zip(outbox, payloads, strict=True)
            if message.message_id in stored
        ]

    async def lock_unsent(self, *, older_than: datetime.datetime, limit: int) -> list[OutboxRow]:
        """Outbox rows nobody has published, oldest first, locked against other relays."""
        rows = await self.conn.fetch(
            "SELECT id, message_id, subject, payload FROM router.outbox"
            " WHERE sent_at IS NULL AND created_at <= $1 ORDER BY id LIMIT $2"
            " FOR UPDATE SKIP LOCKED",
            older_than,
            limit,
        )
        return [OutboxRow(**dict(row)) for row in rows]

    async def mark_sent(self, ids: Sequence[int], now: datetime.datetime) -> None:
        await self.conn.execute(
            "UPDATE router.outbox SET sent_at = $2 WHERE id = ANY($1::bigint[])", list(ids), now
        )

    # -- a batch's set-based reads and writes (``batch.StoreRows``) ---------------------------

    async def handled_already(self, message_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = await self.conn.fetch(
            "SELECT message_id FROM router.processed WHERE message_id = ANY($1::uuid[])",
            list(message_ids),
        )
        return {row["message_id"] for row in rows}

    async def lock_referrals(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ReferralRow]:
        """These referrals, locked in id order (two batches cannot deadlock on them)."""
        rows = await self.conn.fetch(
            "SELECT id, status, attempt, request::text AS request, lat, lon, source_system"
            " FROM router.referral WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
            list(ids),
        )
        return {row["id"]: _referral(row) for row in rows}

    async def offers_of(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[OfferRow]]:
        """Every offer of these referrals, oldest first."""
        found: dict[uuid.UUID, list[OfferRow]] = {}
        if not ids:
            return found
        for row in await self.conn.fetch(
            f"SELECT {_OFFER_COLUMNS}, state, closed_at FROM router.offer"
            " WHERE referral_id = ANY($1::uuid[]) ORDER BY referral_id, attempt",
            list(ids),
        ):
            found.setdefault(row["referral_id"], []).append(OfferRow(**dict(row)))
        return found

    async def known_referrals(self, ids: Sequence[uuid.UUID]) -> int:
        found: int = await self.conn.fetchval(
            "SELECT count(*) FROM router.referral WHERE id = ANY($1::uuid[])", list(ids)
        )
        return found

    async def claim_messages(self, claims: Sequence[Claim]) -> int:
        """``claim_message`` for many, each stored with its outcome; how many were claimed
        (the others were handled before)."""
        if not claims:
            return 0
        rows = await self.conn.fetch(
            "INSERT INTO router.processed (message_id, referral_id, subject, at, outcome, reason)"
            " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[],"
            " $5::text[], $6::text[]) ON CONFLICT DO NOTHING RETURNING true",
            *(list(column) for column in zip(*claims, strict=True)),
        )
        return len(rows)

    async def create_referrals(self, referrals: Sequence[NewReferral]) -> int:
        """``create_referral`` for many, each stored at its latest status; how many were
        created (the others were known)."""
        if not referrals:
            return 0
        rows = await self.conn.fetch(
            "INSERT INTO router.referral (id, request, lat, lon, precision, resolved_from,"
            " source_system, created_at, status, attempt, updated_at)"
            " SELECT id, request::jsonb, lat, lon, precision, resolved_from, source_system,"
            " created_at, status, attempt, updated_at FROM unnest($1::uuid[], $2::text[],"
            " $3::float8[], $4::float8[], $5::text[], $6::text[], $7::text[],"
            " $8::timestamptz[], $9::text[], $10::integer[], $11::timestamptz[])"
            " AS t(id, request, lat, lon, precision, resolved_from, source_system, created_at,"
            " status, attempt, updated_at)"
            " ON CONFLICT (id) DO NOTHING RETURNING true",
            [request.referral_id for request, *_ in referrals],
            [encode(request).decode() for request, *_ in referrals],
            [origin.lat for _, origin, *_ in referrals],
            [origin.lon for _, origin, *_ in referrals],
            [origin.precision for _, origin, *_ in referrals],
            [origin.resolved_from for _, origin, *_ in referrals],
            [request.source.system for request, *_ in referrals],
            *(list(column) for column in list(zip(*referrals, strict=True))[2:]),
        )
        return len(rows)

    async def close_offers(
        self, closed: Sequence[tuple[uuid.UUID, OfferEnd, datetime.datetime]]
    ) -> None:
        if closed:
            await self.conn.execute(
                "UPDATE router.offer o SET state = t.state, closed_at = t.at"
                " FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS t(id, state, at)"
                " WHERE o.id = t.id AND o.state = 'open'",
                *(list(column) for column in zip(*closed, strict=True)),
            )

    async def insert_offers(self, offers: Sequence[OfferRow]) -> None:
        if offers:
            await self.conn.execute(
                f"INSERT INTO router.offer ({_OFFER_COLUMNS})"
                " SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::integer[], $4::text[],"
                " $5::text[], $6::float8[], $7::timestamptz[], $8::timestamptz[])",
                [o.id for o in offers],
                [o.referral_id for o in offers],
                [o.attempt for o in offers],
                [o.provider_id for o in offers],
                [o.site_id for o in offers],
                [o.distance_km for o in offers],
                [o.offered_at for o in offers],
                [o.expires_at for o in offers],
            )

    # -- the HTTP view -----------------------------------------------------------------------

    async def referral_view(self, referral_id: uuid.UUID) -> ReferralView | None:
        row = await self.conn.fetchrow(
            "SELECT id, status, attempt, created_at, updated_at, source_system"
            " FROM router.referral WHERE id = $1",
            referral_id,
        )
        if row is None:
            return None
        offers = [
            OfferView(
                offer_id=o["id"],
                attempt=o["attempt"],
                provider_id=o["provider_id"],
                site_id=o["site_id"],
                distance_km=o["distance_km"],
                offered_at=o["offered_at"],
                expires_at=o["expires_at"],
                state=o["state"],
                closed_at=o["closed_at"],
            )
            for o in await self.conn.fetch(
                f"SELECT {_OFFER_COLUMNS}, state, closed_at FROM router.offer"
                " WHERE referral_id = $1 ORDER BY attempt",
                referral_id,
            )
        ]
        history = [
            HistoryEntry(
                at=h["at"],
                event=h["event"],
                status=h["status"],
                refused=h["refused"],
                attempt=h["attempt"],
                provider_id=h["provider_id"],
                site_id=h["site_id"],
                distance_km=h["distance_km"],
                reason=h["reason"],
                explanation=None
                if h["explanation"] is None
                else _explanation.decode(h["explanation"]),
                code=h["code"],
            )
            for h in await self.conn.fetch(
                "SELECT at, event, status, refused, attempt, provider_id, site_id, distance_km,"
                " reason, explanation::text AS explanation, code FROM router.history"
                " WHERE referral_id = $1 ORDER BY id",
                referral_id,
            )
        ]
        return ReferralView(
            referral_id=row["id"],
            status=row["status"],
            attempt=row["attempt"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            source_system=row["source_system"],
            current_offer=next((o for o in offers if o.state == "open"), None),
            offers=offers,
            history=history,
        )


#: ``SqlStore.write_behind``: four data-modifying CTEs over unnest()ed arrays, one statement.
_WRITE_BEHIND = """
WITH history AS (
    INSERT INTO router.history (referral_id, at, event, status, refused, attempt, provider_id,
                                site_id, distance_km, reason, explanation, message_id, code)
    SELECT referral_id, at, event, status, refused, attempt, provider_id, site_id, distance_km,
           reason, explanation::jsonb, message_id, code
    FROM unnest($1::uuid[], $2::timestamptz[], $3::text[], $4::text[], $5::boolean[],
                $6::integer[], $7::text[], $8::text[], $9::double precision[], $10::text[],
                $11::text[], $12::uuid[], $13::text[]) WITH ORDINALITY
         AS t(referral_id, at, event, status, refused, attempt, provider_id, site_id,
              distance_km, reason, explanation, message_id, code, n)
    ORDER BY n
), status AS (
    UPDATE router.referral r SET status = t.status, attempt = t.attempt, updated_at = t.at
    FROM unnest($14::uuid[], $15::text[], $16::integer[], $17::timestamptz[])
         AS t(id, status, attempt, at)
    WHERE r.id = t.id
), finished AS (
    UPDATE router.processed p SET outcome = t.outcome, reason = t.reason
    FROM unnest($18::uuid[], $19::text[], $20::text[]) AS t(message_id, outcome, reason)
    WHERE p.message_id = t.message_id
), outbox AS (
    INSERT INTO router.outbox (message_id, subject, payload)
    SELECT message_id, subject, payload
    FROM unnest($21::uuid[], $22::text[], $23::bytea[]) WITH ORDINALITY
         AS t(message_id, subject, payload, n)
    ORDER BY n
    ON CONFLICT (message_id) DO NOTHING
    RETURNING id, message_id
)
SELECT id, message_id FROM outbox
"""


def encode_json(value: msgspec.Struct) -> str:
    return msgspec.json.encode(value).decode()
