-- The directory's schema: providers (HSDS organization), sites (HSDS location with its
-- service_at_location rows as a code array), the taxonomy and the catchments.
--
-- Nearest-site search uses the contrib extensions cube + earthdistance: they ship with the
-- embedded PostgreSQL wheel (which has no PostGIS) and with every mainstream PostgreSQL
-- package and managed service, so the same SQL runs everywhere. A GiST index on
-- ll_to_earth(lat, lon) gives a true KNN index scan for ORDER BY ... <-> ...
CREATE EXTENSION IF NOT EXISTS cube;
CREATE EXTENSION IF NOT EXISTS earthdistance;

CREATE SCHEMA IF NOT EXISTS directory;

CREATE TABLE directory.taxonomy_term (
    code     text PRIMARY KEY CHECK (code ~ '^[a-z0-9_]+$'),
    taxonomy text NOT NULL CHECK (taxonomy IN ('eo_service', 'eo_accessibility')),
    name_en  text NOT NULL,
    name_fr  text NOT NULL
);

CREATE TABLE directory.catchment (
    id      text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]*$'),
    name_en text NOT NULL,
    name_fr text NOT NULL
);

CREATE TABLE directory.provider (
    id             text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]*$'),
    name           text NOT NULL,
    alternate_name text,
    description    text,
    email          text,
    website        text,
    phone          text,
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE directory.site (
    id                  text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9-]*$'),
    provider_id         text NOT NULL REFERENCES directory.provider (id),
    name                text NOT NULL,
    address_1           text NOT NULL,
    address_2           text,
    city                text NOT NULL,
    province            text NOT NULL DEFAULT 'ON',
    postal_code         text,
    country             text NOT NULL DEFAULT 'CA',
    lat                 double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon                 double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    coord_precision     text NOT NULL CHECK (coord_precision IN ('street', 'postal_code', 'town')),
    coord_source        text NOT NULL,
    phone               text,
    email               text,
    website             text,
    hours               jsonb NOT NULL DEFAULT '[]',
    services            text[] NOT NULL DEFAULT '{}',
    languages           text[] NOT NULL DEFAULT '{en}',
    accessibility       text[] NOT NULL DEFAULT '{}',
    eligibility         text[] NOT NULL DEFAULT '{}',
    min_age             integer,
    max_age             integer,
    catchment_id        text REFERENCES directory.catchment (id),
    capacity            integer NOT NULL DEFAULT 25 CHECK (capacity >= 0),
    -- Places held by open offers and accepted referrals; only the router's reservation
    -- functions (candidates.py) change it. It may exceed a capacity lowered later.
    reserved            integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    accepting_referrals boolean NOT NULL DEFAULT true,
    active              boolean NOT NULL DEFAULT true,
    last_verified       date,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX site_position_idx ON directory.site USING gist (ll_to_earth(lat, lon));
CREATE INDEX site_provider_idx ON directory.site (provider_id);
