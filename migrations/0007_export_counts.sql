-- How many exports each owner has, kept by triggers in the same transaction as the rows, so an
-- unfiltered list answers its `count` from one row per account instead of counting every export
-- of the user (the list must not slow down with the number of exports).

CREATE TABLE export_counts (
    org_id     text   NOT NULL,
    username   text   NOT NULL,
    account_id text   NOT NULL,
    exports    bigint NOT NULL CHECK (exports >= 0),
    PRIMARY KEY (org_id, username, account_id)
);

INSERT INTO export_counts (org_id, username, account_id, exports)
SELECT org_id, username, account_id, count(*) FROM exports GROUP BY org_id, username, account_id;

CREATE FUNCTION export_counts_track() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO export_counts (org_id, username, account_id, exports)
        SELECT org_id, username, account_id, count(*) FROM added
        GROUP BY org_id, username, account_id
        ON CONFLICT (org_id, username, account_id)
        DO UPDATE SET exports = export_counts.exports + EXCLUDED.exports;
    ELSE
        UPDATE export_counts c SET exports = c.exports - gone.exports
        FROM (SELECT org_id, username, account_id, count(*) AS exports FROM removed
              GROUP BY org_id, username, account_id) gone
        WHERE c.org_id = gone.org_id AND c.username = gone.username
          AND c.account_id = gone.account_id;
    END IF;
    RETURN NULL;
END;
$$;

-- Statement-level with transition tables: a bulk insert or the cleaner's bulk delete touches
-- each owner's row once. Owners never change on an existing export (no UPDATE trigger needed).
CREATE TRIGGER export_counts_insert AFTER INSERT ON exports
    REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION export_counts_track();
CREATE TRIGGER export_counts_delete AFTER DELETE ON exports
    REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION export_counts_track();
