-- Bearer tokens of the directory API (DESIGN.md section 7): who may read, and who may write what.
--
-- A token is `<id>.<secret>` with 256 random bits of secret. Only its SHA-256 digest is kept:
-- a slow password hash buys nothing for a secret that cannot be guessed, and the digest is
-- what a request is looked up by. The id is the visible part, for listing and revoking.
-- provider_id has no foreign key, so deleting a provider keeps the record of its tokens
-- (revoke them too); `eo token issue` checks that the provider exists.
CREATE TABLE directory.api_token (
    id          text PRIMARY KEY CHECK (id ~ '^tok_[0-9a-f]{12}$'),
    digest      bytea NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    role        text NOT NULL CHECK (role IN ('admin', 'staff', 'provider')),
    provider_id text CHECK (provider_id ~ '^[a-z0-9][a-z0-9-]*$'),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    -- A provider token names its provider; no other token does.
    CHECK ((role = 'provider') = (provider_id IS NOT NULL))
);
