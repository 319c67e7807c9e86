-- The ledger of the sources-per-hour quota: one row per created export with how many sources
-- it requested. Kept apart from `exports` so deleting an export does not give its sources back.
-- Rows older than the window are removed by the next create of the same organisation.
CREATE TABLE source_requests (
    org_id       text        NOT NULL,
    requested_at timestamptz NOT NULL DEFAULT now(),
    sources      integer     NOT NULL CHECK (sources > 0)
);
CREATE INDEX source_requests_org_idx ON source_requests (org_id, requested_at);

-- The active-exports quota counts an organisation's unfinished exports.
CREATE INDEX exports_org_active_idx ON exports (org_id) WHERE status IN ('pending', 'running');
