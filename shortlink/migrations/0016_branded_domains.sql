-- Branded short domains (issue 25): an account's own short host names, and the
-- domain of each link (NULL: SHORT_DOMAIN). shortlink.domains owns this table.
CREATE TABLE domains (
    -- Normalised (IDNA, lower case, no trailing dot): shortlink.domains.normalise.
    name            text        PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 253),
    account_id      bigint      NOT NULL REFERENCES accounts (id),
    verified        boolean     NOT NULL DEFAULT false,
    is_default      boolean     NOT NULL DEFAULT false,
    -- The value the TXT record _shortlink-challenge.<name> must hold.
    verification    text        NOT NULL CHECK (length(verification) BETWEEN 16 AND 100),
    not_found_url   text        CHECK (length(not_found_url) <= 2048),
    expired_url     text        CHECK (length(expired_url) <= 2048),
    apple_app_site_association jsonb CHECK (
        jsonb_typeof(apple_app_site_association) IN ('object', 'array')
        AND octet_length(apple_app_site_association::text) <= 65536),
    assetlinks      jsonb       CHECK (
        jsonb_typeof(assetlinks) IN ('object', 'array')
        AND octet_length(assetlinks::text) <= 65536),
    created_at      timestamptz NOT NULL DEFAULT now(),
    verified_at     timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX domains_account ON domains (account_id);
-- An account has at most one default domain.
CREATE UNIQUE INDEX domains_one_default ON domains (account_id) WHERE is_default;

-- Reaches every partition of links (shortlink.partitions); no default, so no rewrite.
ALTER TABLE links ADD COLUMN domain text;
