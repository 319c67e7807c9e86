-- Which plugin processed a source's upload (name, version, component digest).
ALTER TABLE sources
    ADD COLUMN plugin_name    text,
    ADD COLUMN plugin_version text,
    ADD COLUMN plugin_digest  text;
