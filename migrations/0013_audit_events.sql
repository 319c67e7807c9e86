-- The audit trail: every tenant action on exports, every authentication failure and every
-- operator action on plugins. Append-only; the cleaner removes rows past AUDIT_RETENTION.
CREATE TABLE audit_events (
    id                bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at                timestamptz NOT NULL DEFAULT now(),
    request_id        text        NOT NULL DEFAULT '',
    security_event    boolean     NOT NULL,
    action            text        NOT NULL,
    resource_type     text        NOT NULL,
    resource_id       text        NOT NULL DEFAULT '',
    outcome           text        NOT NULL CHECK (outcome IN ('success', 'denied', 'failure')),
    principal_user_id text        NOT NULL DEFAULT '',
    principal_org_id  text        NOT NULL DEFAULT '',
    principal_type    text        NOT NULL,
    reason            text        NOT NULL DEFAULT ''
);

-- The query's filters, newest first; retention's scan by age.
CREATE INDEX audit_events_org_idx      ON audit_events (principal_org_id, id);
CREATE INDEX audit_events_resource_idx ON audit_events (resource_id, id);
CREATE INDEX audit_events_at_idx       ON audit_events (at);
