-- Contract v1.1 (DESIGN.md section 3c): after acceptance, the provider's progress reports carry
-- an outcome or reason code, kept with the transition it caused.
ALTER TABLE router.history ADD COLUMN code text;
-- The referrals a site holds (accepted or in service) are counted per site by the capacity
-- audit and the funnel: the accepted offer of each.
CREATE INDEX offer_accepted_site_idx ON router.offer (site_id) WHERE state = 'accepted';
