-- How long an account keeps its data, and how much of a click it keeps (issue 23).
-- Constant defaults: PostgreSQL adds these columns without rewriting accounts.

-- A link expires this many days after it is made, unless the request gives its own
-- lifetime; at most 365, so a link's whole life fits the token's period tag
-- (docs/tokens.md).
ALTER TABLE accounts
    ADD COLUMN link_lifetime_days   smallint NOT NULL DEFAULT 90
        CHECK (link_lifetime_days BETWEEN 1 AND 365),
-- Raw clicks older than this are deleted; the per-campaign aggregates stay.
    ADD COLUMN click_retention_days smallint NOT NULL DEFAULT 400
        CHECK (click_retention_days BETWEEN 1 AND 1825),
-- full: the client address as seen; truncated: IPv4 /24, IPv6 /48; none: no address.
    ADD COLUMN ip_storage           text     NOT NULL DEFAULT 'full'
        CHECK (ip_storage IN ('full', 'truncated', 'none')),
-- Where a tap on an expired link of the account goes when the link names no place
-- of its own (null: the 410 page).
    ADD COLUMN expired_url          text
        CHECK (length(expired_url) BETWEEN 1 AND 2048);
