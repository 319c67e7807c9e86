-- Canary rollouts: a plugin version bound to a share of tenants (or a list) beside the stable
-- binding of an application or resource, with the outcomes replicas count for both, until it
-- is promoted, aborted or rolled back automatically. At most one runs per application and
-- resource.
CREATE TABLE plugin_canaries (
    id                bigserial   PRIMARY KEY,
    application       text        NOT NULL,
    resource          text        NOT NULL DEFAULT '*',
    plugin_name       text        NOT NULL,
    plugin_version    text        NOT NULL,
    config            jsonb,
    share_percent     smallint    NOT NULL CHECK (share_percent BETWEEN 0 AND 100),
    org_ids           text[]      NOT NULL DEFAULT '{}',
    max_failure_rate  double precision NOT NULL CHECK (max_failure_rate BETWEEN 0 AND 1),
    min_uploads       bigint      NOT NULL CHECK (min_uploads >= 1),
    canary_uploads    bigint      NOT NULL DEFAULT 0,
    canary_failures   bigint      NOT NULL DEFAULT 0,
    stable_uploads    bigint      NOT NULL DEFAULT 0,
    stable_failures   bigint      NOT NULL DEFAULT 0,
    state             text        NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'promoted', 'aborted', 'rolled-back')),
    reason            text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    created_by        text        NOT NULL,
    ended_at          timestamptz,
    ended_by          text
);

CREATE UNIQUE INDEX plugin_canaries_running ON plugin_canaries (application, resource)
    WHERE state = 'running';

-- Canary events are kept in the binding history beside the binding changes; only bind, unbind,
-- rollback and promote decide which binding is in force.
ALTER TABLE plugin_bindings DROP CONSTRAINT plugin_bindings_action;
ALTER TABLE plugin_bindings ADD CONSTRAINT plugin_bindings_action CHECK (
    action IN ('bind', 'unbind', 'rollback', 'promote', 'canary', 'abort', 'auto-rollback'));

-- Why a change was made when the service made it (an automatic rollback's figures).
ALTER TABLE plugin_bindings ADD COLUMN reason text;
