-- When a callback destination was last named by a request that made links (issue 23):
-- one unused for longer than a link can live has no live link left, and is purged
-- (shortlink.purge). A default evaluated once: PostgreSQL adds it without a rewrite.
ALTER TABLE endpoints ADD COLUMN used_at timestamptz NOT NULL DEFAULT now();
