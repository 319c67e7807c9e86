-- Idempotent creates: an `Idempotency-Key` sent with `POST /exports` is remembered per owner
-- for a day with the fingerprint of the request body and the answer it got, so a retry gets
-- that answer instead of a second export (and a second set of Kafka events). The row is
-- written in the transaction that creates the export: a key exists exactly when its export
-- was created. No foreign key: deleting the export does not make the key create another.
CREATE TABLE idempotency_keys (
    org_id        text        NOT NULL,
    username      text        NOT NULL,
    identity_type text        NOT NULL,
    account_id    text        NOT NULL,
    key           text        NOT NULL,
    fingerprint   text        NOT NULL,
    export_id     uuid        NOT NULL,
    response      text        NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (org_id, username, identity_type, account_id, key)
);

-- The cleaner forgets keys past their lifetime, oldest first.
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
