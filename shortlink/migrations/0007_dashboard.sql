-- The dashboard: when each campaign began, and its taps per minute.

-- A campaign's row is made with its first links (shortlink.links), so the
-- default is the time its first link was created; existing rows are backfilled.
ALTER TABLE campaign_stats ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
UPDATE campaign_stats s SET created_at = l.first_link_at
FROM (SELECT account_id, coalesce(client_identifier, '') AS campaign,
             min(created_at) AS first_link_at
      FROM links GROUP BY 1, 2) AS l
WHERE s.account_id = l.account_id AND s.campaign = l.campaign;
-- The campaigns of an account, newest first (keyset pagination).
CREATE INDEX campaign_stats_newest ON campaign_stats (account_id, created_at DESC, campaign DESC);

-- Taps per campaign per minute (UTC), updated by the forwarder in the transaction
-- that records the clicks: the dashboard's time series read this, never clicks.
-- campaign = coalesce(client_identifier, ''), as in campaign_stats.
CREATE TABLE campaign_minutes (
    account_id bigint      NOT NULL,
    campaign   text        NOT NULL,
    minute     timestamptz NOT NULL,            -- start of the minute
    taps       bigint      NOT NULL DEFAULT 0,  -- clicks by people
    first_taps bigint      NOT NULL DEFAULT 0,  -- links a person tapped for the first time
    bot_taps   bigint      NOT NULL DEFAULT 0,  -- previews and crawlers
    first_at   timestamptz NOT NULL,            -- earliest and latest tap (any) in the minute
    last_at    timestamptz NOT NULL,
    PRIMARY KEY (account_id, campaign, minute)
);

-- Backfill from what is already recorded, so old campaigns have a series.
INSERT INTO campaign_minutes (account_id, campaign, minute, taps, first_taps, bot_taps,
                              first_at, last_at)
SELECT account_id, campaign, minute, sum(taps), sum(first_taps), sum(bot_taps),
       min(first_at), max(last_at)
FROM (
    SELECT account_id, coalesce(client_identifier, '') AS campaign,
           to_timestamp(floor(extract(epoch FROM clicked_at) / 60) * 60) AS minute,
           count(*) FILTER (WHERE NOT is_bot) AS taps, 0 AS first_taps,
           count(*) FILTER (WHERE is_bot) AS bot_taps,
           min(clicked_at) AS first_at, max(clicked_at) AS last_at
    FROM clicks GROUP BY 1, 2, 3
    UNION ALL
    SELECT l.account_id, coalesce(l.client_identifier, ''),
           to_timestamp(floor(extract(epoch FROM f.clicked_at) / 60) * 60),
           0, count(*), 0, min(f.clicked_at), max(f.clicked_at)
    FROM first_clicks f JOIN links l ON l.id = f.link_id GROUP BY 1, 2, 3
) AS m
GROUP BY 1, 2, 3;
