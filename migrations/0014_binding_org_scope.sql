-- Per-tenant bindings: a binding may name one organisation ('*' = every organisation), and the
-- most specific binding of an upload wins. Every change records what it was (bind, unbind,
-- rollback) so the history reads without guessing. Sources record the scope of the binding
-- that processed their upload, for meta.json.
ALTER TABLE plugin_bindings ADD COLUMN org_id text NOT NULL DEFAULT '*';
ALTER TABLE plugin_bindings ADD COLUMN action text;
UPDATE plugin_bindings
   SET action = CASE WHEN plugin_name IS NULL THEN 'unbind' ELSE 'bind' END;
ALTER TABLE plugin_bindings ALTER COLUMN action SET NOT NULL;
ALTER TABLE plugin_bindings
    ADD CONSTRAINT plugin_bindings_action CHECK (action IN ('bind', 'unbind', 'rollback'));

DROP INDEX plugin_bindings_history;
CREATE INDEX plugin_bindings_history ON plugin_bindings (application, resource, org_id, id DESC);

ALTER TABLE sources ADD COLUMN plugin_scope text;
