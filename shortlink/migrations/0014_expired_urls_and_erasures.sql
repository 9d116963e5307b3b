-- Where a tap on an expired link goes, per link, and the receipts of erasures by phone
-- number (issue 23).

-- A link's own place for taps after it expires (null: the account's expired_url, else
-- the 410 page). A column without a default: adding it rewrites nothing.
ALTER TABLE links ADD COLUMN expired_url text
    CHECK (length(expired_url) BETWEEN 1 AND 2048);

-- One row per POST /v1/erasures: what it changed, and the number it erased as a salted
-- scrypt hash (shortlink.erasures), never in clear: the operator can prove an erasure
-- of a number it is given, nobody can read the numbers back.
CREATE TABLE erasures (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id   bigint      NOT NULL,
    phone_salt   bytea       NOT NULL CHECK (length(phone_salt) = 16),
    phone_hash   bytea       NOT NULL CHECK (length(phone_hash) = 32),
    links        bigint      NOT NULL CHECK (links >= 0),
    clicks       bigint      NOT NULL CHECK (clicks >= 0),
    conversions  bigint      NOT NULL CHECK (conversions >= 0),
    deliveries   bigint      NOT NULL CHECK (deliveries >= 0),
    requested_at timestamptz NOT NULL,
    finished_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX erasures_account ON erasures (account_id, id);
