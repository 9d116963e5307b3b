-- Smart destinations (issue 26): rules by device, place and language; A/B variants;
-- retargeting a sent campaign. shortlink.rules has the rule language.

-- rules: the request's ordered rules as shortlink.rules.canonical writes them (compact
-- JSON, at most 20 rules); NULL: none. variant: the index of the variant this link got
-- at creation (its target_url is that variant's URL); NULL: the request had no variants.
-- links is partitioned: this reaches every partition.
ALTER TABLE links
    ADD COLUMN rules   text CHECK (length(rules) <= 65536),
    ADD COLUMN variant smallint CHECK (variant BETWEEN 0 AND 19);

-- Where each click was sent: NULL destination means the link's target_url (the plain
-- case, whose click event carries nothing more); rule_index NULL: no rule matched;
-- variant_index NULL: the link had no variants.
ALTER TABLE clicks
    ADD COLUMN destination   text,
    ADD COLUMN rule_index    smallint,
    ADD COLUMN variant_index smallint;

-- A campaign's destinations as its requests defined them (variants, for the statistics'
-- by_variant), and its retargeting: the last url and when it was set (url_changed_at),
-- the last rules and when they were set (rules_changed_at; NULL: never), and the last
-- change of either (changed_at). The redirect workers read it when told `=account
-- campaign` (shortlink.changes), and while catching up (changed_at), so one notification
-- changes every link of the campaign; each change reaches only the links made before it.
CREATE TABLE campaign_destinations (
    account_id       bigint      NOT NULL,
    campaign         text        NOT NULL,
    variants         jsonb,
    url              text,
    url_changed_at   timestamptz,
    rules            text,
    rules_changed_at timestamptz,
    changed_at       timestamptz,
    PRIMARY KEY (account_id, campaign)
);
CREATE INDEX campaign_destinations_changed ON campaign_destinations (changed_at)
    WHERE changed_at IS NOT NULL;
