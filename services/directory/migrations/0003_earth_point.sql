-- Each site's point on the earth, stored once instead of computed per row and per query.
--
-- ll_to_earth() is an SQL function (three cube constructors and six trigonometric calls). The
-- KNN scans, the sort of a small directory's plan and the exclusion counts computed it again
-- for every row they touched: profiling the router (issue 5) put PostgreSQL at ~5 ms of CPU
-- per routed referral at 500 sites, most of it there. Stored, and indexed in its place.
ALTER TABLE directory.site
    ADD COLUMN earth_point earth GENERATED ALWAYS AS (ll_to_earth(lat, lon)) STORED;

DROP INDEX directory.site_position_idx;
CREATE INDEX site_position_idx ON directory.site USING gist (earth_point);
