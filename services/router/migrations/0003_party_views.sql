-- The router's HTTP API for people (issue 15; DESIGN.md section 3d): an OW system lists its
-- referrals (by office and dates, newest first), a provider its open offers and its caseload.
-- The office is read out of the stored request once, here, so it can be filtered and indexed.
ALTER TABLE router.referral
    ADD COLUMN office_id text GENERATED ALWAYS AS (request -> 'source' ->> 'office_id') STORED;
CREATE INDEX referral_system_created_idx
    ON router.referral (source_system, created_at DESC, id DESC);
CREATE INDEX offer_open_provider_idx ON router.offer (provider_id, expires_at) WHERE state = 'open';
CREATE INDEX offer_accepted_provider_idx ON router.offer (provider_id) WHERE state = 'accepted';
