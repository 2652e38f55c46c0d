-- The router's state (DESIGN.md sections 2, 3 and 6): referrals, their offers, the append-only
-- history of transitions, the transactional outbox, and the ids of messages already handled.
-- Unique keys on referral id, offer id and message id make every redelivery a no-op.

CREATE SCHEMA IF NOT EXISTS router;

CREATE TABLE router.referral (
    id            uuid        PRIMARY KEY,
    status        text        NOT NULL,
    -- Offers made so far (0 before the first one).
    attempt       integer     NOT NULL DEFAULT 0,
    -- The request as received (msgspec JSON), for re-routing; NULL for a rejected request
    -- that could not be decoded.
    request       jsonb,
    -- The client's resolved point, how precise it is and what it was resolved from.
    lat           double precision,
    lon           double precision,
    precision     text,
    resolved_from text,
    source_system text,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);
CREATE INDEX referral_status_idx ON router.referral (status);

CREATE TABLE router.offer (
    id          uuid        PRIMARY KEY,
    referral_id uuid        NOT NULL REFERENCES router.referral (id),
    attempt     integer     NOT NULL,
    provider_id text        NOT NULL,
    site_id     text        NOT NULL,
    distance_km double precision NOT NULL,
    offered_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    -- open -> accepted | declined | expired | withdrawn
    state       text        NOT NULL DEFAULT 'open'
                CHECK (state IN ('open', 'accepted', 'declined', 'expired', 'withdrawn')),
    closed_at   timestamptz,
    UNIQUE (referral_id, attempt)
);
-- At most one open offer per referral.
CREATE UNIQUE INDEX offer_one_open_idx ON router.offer (referral_id) WHERE state = 'open';
-- The deadline sweeper's scan.
CREATE INDEX offer_deadline_idx ON router.offer (expires_at) WHERE state = 'open';

CREATE TABLE router.history (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    referral_id uuid        NOT NULL REFERENCES router.referral (id),
    at          timestamptz NOT NULL,
    event       text        NOT NULL,
    -- The state after the event; for a refused event, the unchanged state.
    status      text        NOT NULL,
    refused     boolean     NOT NULL DEFAULT false,
    attempt     integer     NOT NULL,
    provider_id text,
    site_id     text,
    distance_km double precision,
    reason      text,
    explanation jsonb,
    -- The inbound message that caused it (NULL for deadlines).
    message_id  uuid
);
CREATE INDEX history_referral_idx ON router.history (referral_id, id);

CREATE TABLE router.outbox (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Sent as Nats-Msg-Id; derived from the referral and the transition, so it never repeats.
    message_id uuid        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
CREATE INDEX outbox_unsent_idx ON router.outbox (id) WHERE sent_at IS NULL;

CREATE TABLE router.processed (
    message_id  uuid        PRIMARY KEY,
    referral_id uuid,
    subject     text        NOT NULL,
    outcome     text        NOT NULL,
    reason      text,
    at          timestamptz NOT NULL
);
