-- Delivery bodies (a batch of up to 100 ClickDetails, ~50 kB of JSON) are compressed
-- with lz4 where the server was built with it (PostgreSQL's packages and images are),
-- instead of pglz: pglz cost the recorder's transaction ~2 us of server CPU per click
-- (docs/benchmarks.md, "Recording CPU per click"); lz4 stores 100 clicks in 5.4 kB
-- where pglz took 4.2 kB.
-- Only new values are compressed so; the ones stored stay as they are and read the same.
-- A server built without lz4 (the embedded one) keeps pglz. The ALTER only changes the
-- catalog, but needs an ACCESS EXCLUSIVE lock on deliveries, and while it waits for one
-- the recorder's inserts wait behind it: it gives up after 5 s (`shortlink migrate`
-- then exits 1 with PostgreSQL's message, and can simply be run again); on a live
-- database, run it when no long transaction holds the table.
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_settings
               WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
        ALTER TABLE deliveries ALTER COLUMN body SET COMPRESSION lz4;
    END IF;
END
$$;
