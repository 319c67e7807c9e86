-- Test cases a plugin version carries (samples and the outcome the service must reach on them):
-- run at push, before a bind or canary, and by every replica before it applies the version.
ALTER TABLE plugin_versions ADD COLUMN test_cases jsonb NOT NULL DEFAULT '[]';
