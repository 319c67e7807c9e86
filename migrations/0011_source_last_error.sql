-- A refused upload that leaves its source pending (too large, too slow, unreadable, or the
-- service not ready for it) is remembered on the source, so the tenant sees why it is still
-- waiting. Cleared when the source settles.
ALTER TABLE sources
    ADD COLUMN last_error_code    integer,
    ADD COLUMN last_error_message text,
    ADD COLUMN last_error_at      timestamptz;
