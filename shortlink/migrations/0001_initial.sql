-- Accounts, API keys, links and clicks.

CREATE TABLE accounts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- UserId in click forwards
    name        text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz
);

-- API keys are random 256-bit secrets; only their SHA-256 is stored.
CREATE TABLE api_keys (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id  bigint      NOT NULL REFERENCES accounts (id),
    key_hash    bytea       NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    key_prefix  text        NOT NULL,  -- the first characters, to tell keys apart in listings
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_account ON api_keys (account_id);

CREATE TABLE links (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- TrackingUrlId
    token             text COLLATE "C" NOT NULL UNIQUE
                      CHECK (token ~ '^[0-9A-Za-z]{6,8}$'),
    account_id        bigint      NOT NULL REFERENCES accounts (id),
    target_url        text        NOT NULL,
    phone_number      text,       -- international digits, no '+'
    client_ref        text,       -- the message id
    client_identifier text,       -- the campaign
    created_at        timestamptz NOT NULL DEFAULT now(),  -- ShortenDate
    expires_at        timestamptz NOT NULL DEFAULT now() + interval '90 days',
    unsafe            boolean     NOT NULL DEFAULT false,  -- show the warning page first
    disabled_at       timestamptz,
    first_clicked_at  timestamptz
);
-- The hot path reads by token (the UNIQUE index); the API by message and by campaign.
CREATE INDEX links_account_client_ref ON links (account_id, client_ref) WHERE client_ref IS NOT NULL;
CREATE INDEX links_account_campaign ON links (account_id, client_identifier, id);

-- One row per click event, recorded by the forwarder. event_id makes recording idempotent.
CREATE TABLE clicks (
    event_id            uuid        PRIMARY KEY,
    link_id             bigint      NOT NULL REFERENCES links (id),
    account_id          bigint      NOT NULL,
    clicked_at          timestamptz NOT NULL,
    method              text        NOT NULL,
    user_agent          text,
    client_ip           inet,
    referer             text,
    warning_page_served boolean     NOT NULL DEFAULT false,
    browser             text,
    os                  text,
    device_type         text,       -- mobile, tablet, desktop, bot, unknown
    device_name         text,
    device_manufacturer text,
    is_bot              boolean     NOT NULL DEFAULT false
);
CREATE INDEX clicks_link ON clicks (link_id, clicked_at);
