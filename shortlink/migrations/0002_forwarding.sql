-- Click recording, statistics counters, customer endpoints and deliveries.

-- Clicks carry the link fields as they were at the click (the forwarder records
-- what the redirect server saw), plus what enrichment found.
ALTER TABLE clicks
    ADD COLUMN target_url        text,
    ADD COLUMN phone_number      text,
    ADD COLUMN client_ref        text,
    ADD COLUMN client_identifier text,
    ADD COLUMN shortened_at      timestamptz;
-- The API lists a campaign's clicks newest first, and a link's clicks (by
-- clicks_link from 0001); a phone number's clicks are found through its links.
-- Every index here costs the forwarder time on each click, so there are only these.
CREATE INDEX clicks_campaign
    ON clicks (account_id, client_identifier, clicked_at DESC, event_id DESC);
-- Links by campaign and phone number, for that lookup.
DROP INDEX links_account_campaign;
CREATE INDEX links_account_campaign_phone ON links (account_id, client_identifier, phone_number);
-- The forwarder inserts clicks joined to their link, so the foreign key would only
-- repeat that check, with a trigger per row. Links are never deleted (only disabled).
ALTER TABLE clicks DROP CONSTRAINT clicks_link_id_fkey;
-- Room in each page, so setting first_clicked_at is a HOT update (no index writes).
ALTER TABLE links SET (fillfactor = 70);

-- Pre-aggregated campaign statistics: the API reads these, never scans clicks.
-- campaign = coalesce(client_identifier, '').
CREATE TABLE campaign_stats (
    account_id    bigint NOT NULL REFERENCES accounts (id),
    campaign      text   NOT NULL,
    links         bigint NOT NULL DEFAULT 0,  -- links created
    total_clicks  bigint NOT NULL DEFAULT 0,  -- clicks by people
    unique_clicks bigint NOT NULL DEFAULT 0,  -- links clicked by a person at least once
    bot_clicks    bigint NOT NULL DEFAULT 0,  -- previews and crawlers, counted apart
    PRIMARY KEY (account_id, campaign)
);
INSERT INTO campaign_stats (account_id, campaign, links)
SELECT account_id, coalesce(client_identifier, ''), count(*) FROM links GROUP BY 1, 2;

-- Clicks by people per browser / os / device_type.
CREATE TABLE campaign_breakdown (
    account_id bigint NOT NULL,
    campaign   text   NOT NULL,
    dimension  text   NOT NULL CHECK (dimension IN ('browser', 'os', 'device_type')),
    value      text   NOT NULL,
    clicks     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, campaign, dimension, value)
);

-- Time from shortening to the first human click, as a histogram with buckets
-- ~5% wide (bucket = round(ln(1 + seconds) / ln(1.05))), for median and p90.
CREATE TABLE campaign_first_click (
    account_id bigint   NOT NULL,
    campaign   text     NOT NULL,
    bucket     smallint NOT NULL,
    links      bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, campaign, bucket)
);

-- Where an account's clicks are forwarded. The signing secret must be usable to
-- sign, so it is stored as given (unlike API keys, which are only hashed).
CREATE TABLE endpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id      bigint      NOT NULL UNIQUE REFERENCES accounts (id),
    url             text        NOT NULL,
    format          text        NOT NULL CHECK (format IN ('json', 'xml', 'clickthru')),
    mode            text        NOT NULL CHECK (mode IN ('every', 'first')),
    secret          text,
    enabled         boolean     NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Which forwarder process sends to this endpoint now (one request in flight).
    lease_owner     text,
    lease_until     timestamptz,
    -- After a failed attempt nothing is sent until then: a down endpoint is not
    -- hammered with every queued batch, and queued batches keep their attempts.
    paused_until    timestamptz
);

-- Clicks recorded for an endpoint and not yet in a delivery (fewer than a batch).
CREATE TABLE outbox (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id bigint      NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    event_id    uuid        NOT NULL,
    detail      bytea       NOT NULL,  -- the click's fields, JSON (forwarder.formats)
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX outbox_endpoint ON outbox (endpoint_id, id);

-- One POST (a batch of 1-100 clicks, or one first-click notification) and its
-- retries. The body is fixed when the delivery is made, so every attempt sends
-- the same RequestIdentifier and the same clicks.
CREATE TABLE deliveries (
    request_identifier uuid        PRIMARY KEY,
    endpoint_id        bigint      NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    format             text        NOT NULL,
    body               bytea       NOT NULL,
    clicks             integer     NOT NULL,
    oldest_click_at    timestamptz NOT NULL,
    status             text        NOT NULL DEFAULT 'pending'
                       CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts           integer     NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    last_error         text,
    last_status        integer,
    created_at         timestamptz NOT NULL DEFAULT now(),
    delivered_at       timestamptz
);
CREATE INDEX deliveries_due ON deliveries (endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX deliveries_by_status ON deliveries (endpoint_id, status, created_at DESC);
