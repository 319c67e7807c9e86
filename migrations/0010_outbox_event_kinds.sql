-- The outbox carries three kinds of event: the request of one source (as before), the cancel
-- of a pending source whose export was deleted, and the completion of an export. A cancel is
-- written in the transaction that deletes its export, and a completion outlives a later
-- delete, so the outbox no longer cascades from exports and sources: sent rows are purged by
-- age, and a delete removes its export's requests that no relay has touched yet.
ALTER TABLE outbox
    DROP CONSTRAINT outbox_export_id_fkey,
    DROP CONSTRAINT outbox_source_id_fkey,
    ALTER COLUMN source_id DROP NOT NULL,
    ALTER COLUMN application DROP NOT NULL,
    ALTER COLUMN identity DROP NOT NULL,
    ADD COLUMN kind text NOT NULL DEFAULT 'request'
        CHECK (kind IN ('request', 'cancel', 'completion'));

-- An export completes once: a second completion row for it is refused.
CREATE UNIQUE INDEX outbox_completion_once_idx ON outbox (export_id) WHERE kind = 'completion';
