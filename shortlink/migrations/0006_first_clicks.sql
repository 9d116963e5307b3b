-- The first human click of each link, as a narrow row of its own.

-- Recording a first click used to set links.first_clicked_at. When most links of a
-- campaign are tapped (one link per recipient), the new row versions outgrow the
-- room fillfactor leaves on each page, and the update becomes a full one: a new
-- tuple and an entry in each of the five indexes of links, for every first tap (it
-- was half of PostgreSQL's work per click). An insert here is one small heap row and
-- one index entry; its primary key still lets exactly one event win.
CREATE TABLE first_clicks (
    link_id    bigint      PRIMARY KEY,
    clicked_at timestamptz NOT NULL
);
INSERT INTO first_clicks (link_id, clicked_at)
SELECT id, first_clicked_at FROM links WHERE first_clicked_at IS NOT NULL;
-- links.first_clicked_at is no longer written. Readers take
-- coalesce(first_clicks.clicked_at, links.first_clicked_at) for one release, so a
-- forwarder of the previous release running during a rolling upgrade is still seen
-- (and its first clicks are never made a second time: see forwarder/recorder.py).
COMMENT ON COLUMN links.first_clicked_at IS
    'written by releases before migration 0006 only; see first_clicks';
