-- The API: idempotent link creation.

-- A request sent with an Idempotency-Key: the first answer is kept and returned
-- again for a retry of the same request (same key, same body), for 24 hours.
CREATE TABLE idempotency_keys (
    account_id   bigint      NOT NULL REFERENCES accounts (id),
    key          text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash bytea       NOT NULL,
    status       integer     NOT NULL,
    response     bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
