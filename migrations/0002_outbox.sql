-- The transactional outbox: one row per source of a new export, written in the same transaction
-- as the export, published to Kafka by the relay of any replica.

CREATE TABLE outbox (
    -- The CloudEvent id: stable, so a redelivery carries the same id.
    id           uuid        PRIMARY KEY,
    -- Insertion order: events are published in the order they were written.
    seq          bigint      GENERATED ALWAYS AS IDENTITY,
    export_id    uuid        NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    source_id    uuid        NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    -- Message headers.
    application  text        NOT NULL,
    identity     text        NOT NULL,
    -- The CloudEvent, serialised once at creation.
    payload      text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Not claimable before this time: a lease while a relay publishes it, or a retry backoff.
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    sent_at      timestamptz
);

-- The relay's claim query and the backlog gauge read only unsent rows.
CREATE INDEX outbox_unsent_idx ON outbox (available_at, seq) WHERE sent_at IS NULL;
-- Purging of old sent rows.
CREATE INDEX outbox_sent_idx ON outbox (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX outbox_export_idx ON outbox (export_id);
CREATE INDEX outbox_source_idx ON outbox (source_id);
