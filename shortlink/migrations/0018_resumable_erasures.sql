-- Erasures run as resumable jobs (issue 23, shortlink.erasures): a receipt row is made
-- first and walks through the steps, one transaction per batch, so an erasure of a very
-- large account's number never needs one long statement or one long request; whoever
-- holds the lease (the request, then the API's erasure job) carries it on after a
-- restart.

-- The receipts made before were finished at once: state 'done'.
ALTER TABLE erasures
    ADD COLUMN state        text     NOT NULL DEFAULT 'done'
                            CHECK (state IN ('running', 'done')),
    ADD COLUMN step         smallint NOT NULL DEFAULT 0,
    -- Where the step has got to (a batch's position), so a resumed step goes on from it.
    ADD COLUMN cursor       jsonb,
    -- The number in clear and the links it had, only while the erasure runs: needed to
    -- find its data after a restart; cleared in the transaction that finishes it.
    ADD COLUMN phone_number text     CHECK (length(phone_number) <= 40),
    ADD COLUMN link_ids     bigint[],
    ADD COLUMN lease_owner  uuid,
    ADD COLUMN lease_until  timestamptz,
    ADD CONSTRAINT erasures_number_only_while_running
        CHECK (state = 'running' OR (phone_number IS NULL AND link_ids IS NULL));
ALTER TABLE erasures ALTER COLUMN finished_at DROP NOT NULL, ALTER COLUMN finished_at DROP DEFAULT;
CREATE INDEX erasures_running ON erasures (id) WHERE state = 'running';

-- An erasure reads an endpoint's deliveries a page at a time in the order they were
-- made, which no status change reorders (deliveries_by_status would: a pending delivery
-- that turns dead between two pages would be skipped). Deliveries are bounded (purge).
CREATE INDEX deliveries_endpoint_created ON deliveries (endpoint_id, created_at, request_identifier);
