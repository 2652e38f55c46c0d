-- Tokens of OW systems (issue 15): the router's HTTP API serves an OW system its own referrals,
-- so a token may now stand for one (role 'ow', `eo token issue --role ow --system ...`). The
-- table stays the directory's; services/access reads it for both services.
--
-- An ow token names its system, no other token does: as a provider token names its provider
-- (0002's unnamed table CHECK, api_token_check, which stays). No foreign key: the directory
-- keeps no registry of OW systems (their NATS users are configuration, EO_OW_SYSTEMS).
ALTER TABLE directory.api_token
    ADD COLUMN system text CONSTRAINT api_token_system_check
        CHECK (system ~ '^[a-z0-9][a-z0-9-]*$'),
    DROP CONSTRAINT api_token_role_check,
    ADD CONSTRAINT api_token_role_check CHECK (role IN ('admin', 'staff', 'provider', 'ow')),
    ADD CONSTRAINT api_token_ow_system_check CHECK ((role = 'ow') = (system IS NOT NULL));
