-- Conversions (seed 000) and a callback URL per message (seed 001).

-- A conversion: a recipient's response to a message. The first human tap of a
-- link records one itself (event 'link_click', positive), in the forwarder's
-- transaction that records the first click; the enterprise posts the others
-- (POST /v1/conversions). The primary key leads with the link, so a link's
-- conversions are one index range and each insert touches one index (the
-- recorder makes one row per first tap). conversion_id is `id`, unique alone.
CREATE TABLE conversions (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    link_id     bigint      NOT NULL,
    event       text        NOT NULL CHECK (length(event) BETWEEN 1 AND 64),
    disposition text        NOT NULL CHECK (disposition IN ('positive', 'negative')),
    value       numeric     CHECK (value >= 0),
    currency    text        CHECK (currency ~ '^[A-Z]{3}$'),
    occurred_at timestamptz NOT NULL,
    metadata    json,       -- as posted (json, not jsonb: any JSON the API accepted, kept as sent)
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (link_id, id),
    CHECK ((value IS NULL) = (currency IS NULL))
);
-- The links tapped before this release got their link_click conversion too.
INSERT INTO conversions (link_id, event, disposition, occurred_at)
SELECT link_id, 'link_click', 'positive', clicked_at FROM first_clicks;
INSERT INTO conversions (link_id, event, disposition, occurred_at)
SELECT l.id, 'link_click', 'positive', l.first_clicked_at FROM links l
WHERE l.first_clicked_at IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM first_clicks f WHERE f.link_id = l.id);

-- Links with at least one positive conversion posted by the enterprise: the
-- primary key makes exactly one conversion count the link as converted.
CREATE TABLE converted_links (
    link_id      bigint      PRIMARY KEY,
    converted_at timestamptz NOT NULL
);

-- Pre-aggregated enterprise conversions per campaign, event and currency ('' when
-- the conversion has no value): the statistics read these, never conversions.
-- value sums the values of positive conversions.
CREATE TABLE campaign_conversions (
    account_id bigint  NOT NULL,
    campaign   text    NOT NULL,
    event      text    NOT NULL,
    currency   text    NOT NULL,
    positive   bigint  NOT NULL DEFAULT 0,
    negative   bigint  NOT NULL DEFAULT 0,
    value      numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, campaign, event, currency)
);
ALTER TABLE campaign_stats ADD COLUMN converted_links bigint NOT NULL DEFAULT 0;

-- An endpoint can ask for conversions, sent as message state events (CONVERTED).
ALTER TABLE endpoints ADD COLUMN conversions boolean NOT NULL DEFAULT false;

-- A callback URL named by a links or messages request is a destination of its
-- own: an endpoints row, so the same leases, pauses, retries and dead letters
-- serve it, and a dead callback only ever holds up itself. One row per account
-- and distinct URL. Its owner is callback_account_id and its account_id is NULL:
-- every statement that reads an account's endpoint by account_id (this
-- release's and the previous one's, during a rolling upgrade) never takes a
-- callback for the account's endpoint. Callbacks carry no secret: deliveries
-- are signed with the account endpoint's secret, read at each lease.
ALTER TABLE endpoints
    ALTER COLUMN account_id DROP NOT NULL,
    ADD COLUMN callback_account_id bigint REFERENCES accounts (id),
    ADD CONSTRAINT endpoints_one_owner CHECK ((account_id IS NULL) <> (callback_account_id IS NULL));
-- md5: a URL of 2,048 characters may be too long for a btree entry.
CREATE UNIQUE INDEX endpoints_callback ON endpoints (callback_account_id, md5(url))
    WHERE callback_account_id IS NOT NULL;

-- The callback of each link, if its request named one. No foreign key: it would
-- run a trigger per inserted link (see 0004); callbacks are never deleted.
ALTER TABLE links ADD COLUMN callback_id bigint;
