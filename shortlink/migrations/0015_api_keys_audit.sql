-- Named, scoped, expiring API keys; per-key rate limits; the audit log.

-- scopes NULL: a key made before scopes existed, which keeps every scope (also any
-- scope added later). revoked_at in the future: a rotated key that still works until
-- then (the overlap); in the past: revoked. last_used_at is written at most once per
-- rate-limit window (shortlink.apikeys), not on every request.
ALTER TABLE api_keys
    ADD COLUMN name         text CHECK (length(name) BETWEEN 1 AND 100),
    ADD COLUMN scopes       text[],
    ADD COLUMN expires_at   timestamptz,
    ADD COLUMN last_used_at timestamptz;

-- Requests per minute each key of the account may make (NULL: API_RATE_LIMIT_PER_MINUTE).
ALTER TABLE accounts
    ADD COLUMN rate_limit_per_minute integer CHECK (rate_limit_per_minute BETWEEN 1 AND 1000000);

-- The requests of each key in its current fixed one-minute window, shared by every API
-- worker and host on this database. UNLOGGED: no WAL, so counting does not wait for a
-- disk flush (a transaction that wrote only unlogged tables commits asynchronously) and
-- does not reach the replicas; a crash of PostgreSQL empties it, which forgives at most
-- one minute of counts.
CREATE UNLOGGED TABLE api_key_windows (
    key_id       bigint      PRIMARY KEY,
    window_start timestamptz NOT NULL,
    used         integer     NOT NULL
);

-- Every administrative change (shortlink.audit has the action names): never a secret.
CREATE TABLE audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     bigint      NOT NULL REFERENCES accounts (id),
    at             timestamptz NOT NULL DEFAULT now(),
    key_id         bigint,     -- the key that made the change (NULL: the CLI, an operator)
    client_address text        CHECK (length(client_address) <= 64),
    action         text        NOT NULL CHECK (action ~ '^[a-z_]{1,40}\.[a-z_]{1,40}$'),
    summary        jsonb       NOT NULL DEFAULT '{}'
);
-- An account's log, newest first (keyset pagination on id).
CREATE INDEX audit_log_account ON audit_log (account_id, id DESC);
-- The retention purge: the oldest rows first.
CREATE INDEX audit_log_at ON audit_log (at);
