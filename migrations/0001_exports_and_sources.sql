-- Exports requested by tenants, and the resources (sources) each one asks for.

CREATE TABLE exports (
    id           uuid        PRIMARY KEY,
    org_id       text        NOT NULL,
    account_id   text        NOT NULL DEFAULT '',
    username     text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    format       text        NOT NULL CHECK (format IN ('csv', 'json')),
    status       text        NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'running', 'partial', 'complete', 'failed')),
    request_id   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at   timestamptz NOT NULL,
    -- Object-store key of the packaged archive, set when packaging completes.
    archive_key  text
);

-- Owner-scoped lookups and the list's sort orders (id breaks ties so pages are stable).
CREATE INDEX exports_owner_created_idx ON exports (org_id, username, created_at, id);
CREATE INDEX exports_owner_name_idx    ON exports (org_id, username, name, id);
CREATE INDEX exports_owner_expires_idx ON exports (org_id, username, expires_at, id);
-- The cleaner's scan for expired exports.
CREATE INDEX exports_expires_idx       ON exports (expires_at);

CREATE TABLE sources (
    id          uuid        PRIMARY KEY,
    export_id   uuid        NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    -- Position in the create request, so sources always come back in request order.
    position    integer     NOT NULL,
    application text        NOT NULL,
    resource    text        NOT NULL,
    -- `json`, not `jsonb`: the tenant's filters are kept verbatim, key order included.
    filters     json,
    status      text        NOT NULL DEFAULT 'pending'
                            CHECK (status IN ('pending', 'complete', 'failed', 'success')),
    code        integer,
    message     text,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (export_id, position)
);

-- `UNIQUE (export_id, position)` already serves "sources of an export, in order".
-- Sources by application/resource: list filters and the internal API's lookups.
CREATE INDEX sources_application_resource_idx ON sources (application, resource, export_id);
CREATE INDEX sources_resource_idx ON sources (resource, export_id);
