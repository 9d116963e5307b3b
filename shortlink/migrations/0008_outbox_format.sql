-- Clicks waiting in the outbox keep the format they were enqueued for. An endpoint
-- switched to another format (json to xml, or to clickthru, which carries one
-- click per event) still receives them as the batches they were chosen for, and
-- no batch is ever rendered in a format that cannot hold it.

ALTER TABLE outbox ADD COLUMN format text;
-- Rows already waiting were enqueued in their endpoint's format, which is known
-- unless the endpoint has since switched to clickthru: those go as json.
UPDATE outbox o SET format = CASE WHEN e.format = 'xml' THEN 'xml' ELSE 'json' END
FROM endpoints e WHERE e.id = o.endpoint_id;
ALTER TABLE outbox
    ALTER COLUMN format SET NOT NULL,
    ADD CONSTRAINT outbox_format_batches CHECK (format IN ('json', 'xml'));
