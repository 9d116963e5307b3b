-- Link changes the redirect workers can catch up on after missing notifications.

-- Set by every change of a link (target, expiry, unsafe flag, disabled), never by
-- recording a click: a worker that lost its LISTEN connection, and every worker
-- every few seconds, reads the tokens changed since it last knew. Only changed
-- links are in the index (it is partial), so creating links costs nothing more
-- and recording clicks does not touch it.
ALTER TABLE links ADD COLUMN updated_at timestamptz;
CREATE INDEX links_updated ON links (updated_at) WHERE updated_at IS NOT NULL;

-- Messages from the click topic that the forwarder could not record: not valid
-- click events, or events whose data PostgreSQL refuses. They are kept here with
-- the reason instead of being dropped, and the consumer moves on.
CREATE TABLE dead_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    value       bytea,
    error       text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
