-- Where each click came from (issue 13, point 3): country and region from the
-- client IP, looked up by the forwarder (forwarder.geoip) when it records the click.

-- Nullable without a default: PostgreSQL adds these without rewriting clicks.
-- country is ISO 3166-1 alpha-2; region the subdivision's name, where the data has it.
-- Clicks recorded before this release, and by a forwarder of the previous release
-- during a rolling upgrade, have neither.
ALTER TABLE clicks
    ADD COLUMN country text,
    ADD COLUMN region  text;
-- NOT VALID: checked for every row written from now on, without reading the rows
-- already there (all null). A CHECK in ADD COLUMN would scan all of clicks under the
-- ACCESS EXCLUSIVE lock, holding the forwarders and the API's reads for as long.
ALTER TABLE clicks ADD CONSTRAINT clicks_country_check CHECK (country ~ '^[A-Z]{2}$') NOT VALID;

-- Clicks by people per campaign and country: one more dimension of the
-- pre-aggregated campaign_breakdown, counted in the transaction that records the
-- clicks, so by_country reads a few rows and never scans clicks. A click with no
-- country (a private address, an address the data does not place) counts as 'unknown'.
ALTER TABLE campaign_breakdown DROP CONSTRAINT campaign_breakdown_dimension_check;
ALTER TABLE campaign_breakdown ADD CONSTRAINT campaign_breakdown_dimension_check
    CHECK (dimension IN ('browser', 'os', 'device_type', 'country'));

-- The clicks already counted have no country: they are 'unknown', so a campaign's
-- by_country adds up to its clicks by people like its other breakdowns. Read from
-- the browser breakdown (one row per campaign and browser), not from clicks.
INSERT INTO campaign_breakdown (account_id, campaign, dimension, value, clicks)
SELECT account_id, campaign, 'country', 'unknown', sum(clicks)
FROM campaign_breakdown
WHERE dimension = 'browser'
GROUP BY account_id, campaign;
