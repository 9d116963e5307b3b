-- Links and clicks partitioned by time (issue 23), so that old data goes by dropping
-- whole partitions, never by deleting rows (shortlink/partitions.py, docs/operations.md).
--
-- links: by creation week (`period`, weeks since 1970-01-01 UTC). A link's id carries
-- its period (id = period << 40 | a sequence number) and so does its token (its first
-- character; docs/tokens.md), so a lookup by either names the partition to probe.
-- The links made before this migration keep their ids and tokens: they are period 0,
-- the partition `links_legacy`, looked up second, until the last of them has expired
-- and it is dropped like any other.
--
-- clicks: by month of clicked_at. The clicks recorded before this migration are the
-- partition `clicks_legacy`, which ends where the first monthly partition starts.
--
-- The previous release cannot write to the converted tables (its ON CONFLICT targets
-- are gone): stop the API and the forwarders for it, and replace the redirect servers
-- right after it (docs/operations.md).
--
-- Done in place, under the migration's locks: renames and catalog changes, four
-- checks' scans (two a table), three unique index builds and one BRIN index build.
-- Each of those is skipped when it is there already, so on a large live database
-- they are made beforehand, online (docs/operations.md), and this takes seconds.

-- Clicks outlive their links (kept click_retention_days against the links' lifetime):
-- a click keeps its own copy of what it needs of its link (migration 0009 onwards).
ALTER TABLE clicks DROP CONSTRAINT IF EXISTS clicks_link_id_fkey;

-- links ----------------------------------------------------------------------------

ALTER TABLE links RENAME TO links_legacy;
ALTER INDEX links_pkey RENAME TO links_legacy_pkey;
ALTER INDEX links_token_key RENAME TO links_legacy_token_key;
ALTER INDEX links_account_campaign_phone RENAME TO links_legacy_account_campaign_phone;
ALTER INDEX links_account_client_ref RENAME TO links_legacy_account_client_ref;
ALTER INDEX links_updated RENAME TO links_legacy_updated;
ALTER TABLE links_legacy ALTER COLUMN id DROP IDENTITY IF EXISTS;
-- A constant default: added without rewriting the table.
ALTER TABLE links_legacy ADD COLUMN IF NOT EXISTS period integer NOT NULL DEFAULT 0;
ALTER TABLE links_legacy ALTER COLUMN period DROP DEFAULT;

-- Unique indexes and checks the partitioned table adopts when it is attached.
CREATE UNIQUE INDEX IF NOT EXISTS links_legacy_id_period ON links_legacy (id, period);
CREATE UNIQUE INDEX IF NOT EXISTS links_legacy_token_period ON links_legacy (token, period);
CREATE INDEX IF NOT EXISTS links_legacy_expires ON links_legacy USING brin (expires_at);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'links_legacy_period'
                   AND conrelid = 'links_legacy'::regclass) THEN
        ALTER TABLE links_legacy ADD CONSTRAINT links_legacy_period CHECK (period = 0);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'links_id_period_check'
                   AND conrelid = 'links_legacy'::regclass) THEN
        ALTER TABLE links_legacy ADD CONSTRAINT links_id_period_check CHECK (id >> 40 = period);
    END IF;
END $$;
ALTER TABLE links_legacy VALIDATE CONSTRAINT links_legacy_period;
ALTER TABLE links_legacy VALIDATE CONSTRAINT links_id_period_check;

CREATE TABLE links (
    LIKE links_legacy INCLUDING DEFAULTS,
    CONSTRAINT links_token_check CHECK (token ~ '^[0-9A-Za-z]{6,8}$'),
    CONSTRAINT links_id_period_check CHECK (id >> 40 = period)
) PARTITION BY RANGE (period);
-- New partitions keep the default fillfactor: links are rarely updated since first
-- clicks have a table of their own (0006), and 70 cost 30 % more heap per link.
-- Made by the writer (shortlink.links.create_links): period << 40 | nextval.
CREATE SEQUENCE links_sequence AS bigint MAXVALUE 1099511627775;  -- 2^40 - 1
SELECT setval('links_sequence', coalesce((SELECT max(id) FROM links_legacy), 0) + 1, false);

ALTER TABLE links ADD PRIMARY KEY (id, period);
ALTER TABLE links ADD CONSTRAINT links_token_key UNIQUE (token, period);
CREATE INDEX links_account_campaign_phone ON links (account_id, client_identifier, phone_number);
CREATE INDEX links_account_client_ref ON links (account_id, client_ref) WHERE client_ref IS NOT NULL;
CREATE INDEX links_updated ON links (updated_at) WHERE updated_at IS NOT NULL;
-- Whether a partition still holds a live link, without reading its rows (purge).
CREATE INDEX links_expires ON links USING brin (expires_at);

ALTER TABLE links_legacy DROP CONSTRAINT links_legacy_pkey;
ALTER TABLE links_legacy DROP CONSTRAINT links_legacy_token_key;
ALTER TABLE links_legacy ADD CONSTRAINT links_legacy_pkey PRIMARY KEY USING INDEX links_legacy_id_period;
ALTER TABLE links_legacy ADD CONSTRAINT links_legacy_token_key UNIQUE USING INDEX links_legacy_token_period;
ALTER TABLE links ATTACH PARTITION links_legacy FOR VALUES FROM (0) TO (1);
-- Implied by its bound now.
ALTER TABLE links_legacy DROP CONSTRAINT links_legacy_period;

-- clicks ---------------------------------------------------------------------------

ALTER TABLE clicks RENAME TO clicks_legacy;
ALTER INDEX clicks_pkey RENAME TO clicks_legacy_pkey;
ALTER INDEX clicks_campaign RENAME TO clicks_legacy_campaign;
ALTER INDEX clicks_link RENAME TO clicks_legacy_link;
-- A partitioned table takes only valid checks (a no-op when validated beforehand).
ALTER TABLE clicks_legacy VALIDATE CONSTRAINT clicks_country_check;
CREATE UNIQUE INDEX IF NOT EXISTS clicks_legacy_event_clicked ON clicks_legacy (event_id, clicked_at);

CREATE TABLE clicks (
    LIKE clicks_legacy INCLUDING DEFAULTS,
    CONSTRAINT clicks_country_check CHECK (country ~ '^[A-Z]{2}$')
) PARTITION BY RANGE (clicked_at);
-- A replayed event has its clicked_at, so it meets its first copy in one partition.
ALTER TABLE clicks ADD PRIMARY KEY (event_id, clicked_at);
CREATE INDEX clicks_campaign ON clicks (account_id, client_identifier, clicked_at DESC, event_id DESC);
CREATE INDEX clicks_link ON clicks (link_id, clicked_at);

ALTER TABLE clicks_legacy DROP CONSTRAINT clicks_legacy_pkey;
ALTER TABLE clicks_legacy ADD CONSTRAINT clicks_legacy_pkey PRIMARY KEY USING INDEX clicks_legacy_event_clicked;

-- The legacy clicks end at the start of next month, or of the month after the latest
-- click if a clock ahead dated one later; a check made beforehand names its own bound.
DO $$
DECLARE
    bound timestamptz;
BEGIN
    SELECT substring(pg_get_constraintdef(oid) FROM '''([^'']+)''')::timestamptz INTO bound
    FROM pg_constraint WHERE conname = 'clicks_legacy_bound' AND conrelid = 'clicks_legacy'::regclass;
    IF bound IS NULL THEN
        SELECT greatest(
                   date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month',
                   date_trunc('month', max(clicked_at) AT TIME ZONE 'UTC') + interval '1 month'
               ) AT TIME ZONE 'UTC'
        INTO bound FROM clicks_legacy;
        EXECUTE format(
            'ALTER TABLE clicks_legacy ADD CONSTRAINT clicks_legacy_bound CHECK (clicked_at < %L)',
            bound);
    END IF;
    ALTER TABLE clicks_legacy VALIDATE CONSTRAINT clicks_legacy_bound;
    EXECUTE format(
        'ALTER TABLE clicks ATTACH PARTITION clicks_legacy FOR VALUES FROM (MINVALUE) TO (%L)',
        bound);
END $$;
ALTER TABLE clicks_legacy DROP CONSTRAINT clicks_legacy_bound;
