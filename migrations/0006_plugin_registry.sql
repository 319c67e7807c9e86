-- The plugin registry: immutable plugin versions (bytes in the object store, keyed by digest)
-- and the history of bindings (the newest row per application and resource is the active one).
CREATE TABLE plugin_versions (
    name        text        NOT NULL,
    version     text        NOT NULL,
    digest      text        NOT NULL,
    size_bytes  bigint      NOT NULL,
    info        jsonb       NOT NULL,
    object_key  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL,
    PRIMARY KEY (name, version)
);

CREATE TABLE plugin_bindings (
    id              bigserial   PRIMARY KEY,
    application     text        NOT NULL,
    -- '*' binds every resource of the application; a named resource overrides it.
    resource        text        NOT NULL DEFAULT '*',
    -- NULL plugin: the binding was removed.
    plugin_name     text,
    plugin_version  text,
    config          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      text        NOT NULL,
    CHECK ((plugin_name IS NULL) = (plugin_version IS NULL))
);

CREATE INDEX plugin_bindings_history ON plugin_bindings (application, resource, id DESC);
CREATE INDEX plugin_bindings_version ON plugin_bindings (plugin_name, plugin_version);
