-- Uploads, packaging jobs and deferred object deletion.

ALTER TABLE sources
    -- Where the uploaded data is, and what it was.
    ADD COLUMN object_key         text,
    ADD COLUMN sha256             text,
    ADD COLUMN bytes              bigint,
    ADD COLUMN rows               bigint,
    ADD COLUMN completed_at       timestamptz,
    -- An upload in progress holds the source until this time (a crashed upload frees it).
    ADD COLUMN upload_lease_until timestamptz;

-- The cleaner's scan for sources that never answered.
CREATE INDEX sources_pending_idx ON sources (export_id) WHERE status = 'pending';

ALTER TABLE exports
    ADD COLUMN archive_bytes  bigint,
    ADD COLUMN archive_sha256 text;

-- One packaging job per export, created when its last source becomes terminal, claimed by one
-- worker at a time (SKIP LOCKED) and re-driven by another when its lease ends.
CREATE TABLE package_jobs (
    export_id    uuid        PRIMARY KEY REFERENCES exports (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    finished_at  timestamptz
);
CREATE INDEX package_jobs_due_idx ON package_jobs (available_at) WHERE finished_at IS NULL;

-- Object prefixes of deleted exports, removed from the store by whoever gets there first
-- (the deleting request, or the cleaner when the store was unavailable).
CREATE TABLE object_deletions (
    prefix       text        PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    available_at timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text
);
