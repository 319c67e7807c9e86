-- The identity type becomes part of an export's owner. The upstream scopes exports by
-- (org, account, name) only, where the name is `user.username`, `service_account.username` or
-- `system.cn` depending on the type: a System whose CN equals a user's username saw, downloaded
-- and could delete that user's exports. From here on the owner is (org, account, type, name).
--
-- Stored spelling: 'User', 'ServiceAccount', 'System' (the upstream's spelling of
-- `identity.type`; the header's type is matched case-insensitively, the column is exact).

-- Every existing row starts as 'User' (a metadata-only change, no rewrite of the table); the
-- exports that can be attributed to another type are corrected below. Why 'User' for the
-- exports whose creating identity is no longer recorded (outbox rows purged, or an export
-- without sources), rather than failing closed with a type nobody matches:
--   * failing closed would make every such export vanish for its real owner at deploy time, and
--     most owners are users: the export service is driven from the console by people; service
--     accounts and systems are the exception;
--   * the leak this migration closes needs a System CN (normally a certificate/consumer UUID)
--     or a service-account name (normally `service-account-<client id>`) to equal a user's
--     username in the same org, so keeping the upstream's reading for old rows exposes close to
--     nothing;
--   * it is bounded: these rows are at least a day old and are deleted when they expire, after
--     which every export has an exactly recorded type.
-- The cost falls on the rare System or ServiceAccount owner of such an old export: it answers
-- 404 to its creator (a user of the same name sees it instead) until it expires.
-- The default stays on the column for the same reason: replicas of the previous version still
-- running during a rolling deploy insert exports without it. The service always writes it.
ALTER TABLE exports
    ADD COLUMN identity_type text NOT NULL DEFAULT 'User',
    ADD CONSTRAINT exports_identity_type_check
        CHECK (identity_type IN ('User', 'ServiceAccount', 'System'));

-- Exact attribution. The outbox keeps the creating request's raw `x-rh-identity` header for
-- every source of an export (sent rows for a day, unsent ones until sent), so every recent
-- export, and every export still waiting for its sources, gets the type its creator really
-- had. The header's name for that type must equal the stored username, or the row is not
-- attributed from it; a header PostgreSQL cannot decode attributes nothing.
CREATE FUNCTION pg_temp.identity_type_0008(header text, username text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    identity json;
BEGIN
    identity := convert_from(decode(header, 'base64'), 'UTF8')::json -> 'identity';
    RETURN CASE lower(identity ->> 'type')
        WHEN 'user' THEN
            CASE WHEN identity -> 'user' ->> 'username' = username THEN 'User' END
        WHEN 'serviceaccount' THEN
            CASE WHEN identity -> 'service_account' ->> 'username' = username
                THEN 'ServiceAccount' END
        WHEN 'system' THEN
            CASE WHEN identity -> 'system' ->> 'cn' = username THEN 'System' END
    END;
EXCEPTION WHEN OTHERS THEN
    RETURN NULL;
END;
$$;

-- One header per export (all of an export's rows carry the same one): the first written. Only
-- rows that are not 'User' are touched.
UPDATE exports e SET identity_type = attributed.identity_type
FROM (
    SELECT first.export_id, pg_temp.identity_type_0008(first.identity, x.username) AS identity_type
    FROM (SELECT DISTINCT ON (export_id) export_id, identity FROM outbox
          ORDER BY export_id, seq) first
    JOIN exports x ON x.id = first.export_id
) attributed
WHERE attributed.export_id = e.id AND attributed.identity_type <> 'User';

DROP FUNCTION pg_temp.identity_type_0008(text, text);

-- The owner indexes gain the type (equality columns first, then the sort key and the id that
-- breaks ties) so the owner-scoped list stays served by an index in every sort order, and
-- find/delete by id stay on the primary key.
DROP INDEX exports_owner_created_idx;
DROP INDEX exports_owner_name_idx;
DROP INDEX exports_owner_expires_idx;
CREATE INDEX exports_owner_created_idx ON exports (org_id, username, identity_type, created_at, id);
CREATE INDEX exports_owner_name_idx    ON exports (org_id, username, identity_type, name, id);
CREATE INDEX exports_owner_expires_idx ON exports (org_id, username, identity_type, expires_at, id);

-- The per-owner counts (0007) are kept per owner, so the type joins their key; recounted from
-- the backfilled exports (the ALTER above holds the table's lock: no export is written meanwhile).
ALTER TABLE export_counts ADD COLUMN identity_type text;
DELETE FROM export_counts;
ALTER TABLE export_counts
    ALTER COLUMN identity_type SET NOT NULL,
    DROP CONSTRAINT export_counts_pkey,
    ADD PRIMARY KEY (org_id, username, identity_type, account_id);

INSERT INTO export_counts (org_id, username, identity_type, account_id, exports)
SELECT org_id, username, identity_type, account_id, count(*) FROM exports
GROUP BY org_id, username, identity_type, account_id;

CREATE OR REPLACE FUNCTION export_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO export_counts (org_id, username, identity_type, account_id, exports)
        SELECT org_id, username, identity_type, account_id, count(*) FROM added
        GROUP BY org_id, username, identity_type, account_id
        ON CONFLICT (org_id, username, identity_type, account_id)
        DO UPDATE SET exports = export_counts.exports + EXCLUDED.exports;
    ELSE
        UPDATE export_counts c SET exports = c.exports - gone.exports
        FROM (SELECT org_id, username, identity_type, account_id, count(*) AS exports
              FROM removed GROUP BY org_id, username, identity_type, account_id) gone
        WHERE c.org_id = gone.org_id AND c.username = gone.username
          AND c.identity_type = gone.identity_type AND c.account_id = gone.account_id;
    END IF;
    RETURN NULL;
END;
$$;
