-- Each participant's number of decisions (rows of actions) and uploads (rows of study_data),
-- kept on their users row by the triggers below, so that reading a participant costs the same
-- however many rows they have. Every statement that inserts, deletes or moves such rows (the
-- service, a restore's COPY, an erasure, a seed or a hand edit) keeps them true. Derived data:
-- backups leave the two columns out and a restore counts the rows again as it loads them.
ALTER TABLE users
    ADD COLUMN decisions bigint NOT NULL DEFAULT 0,
    ADD COLUMN uploads bigint NOT NULL DEFAULT 0;

UPDATE users SET decisions = c.n
    FROM (SELECT user_id, count(*) AS n FROM actions GROUP BY user_id) AS c
    WHERE users.user_id = c.user_id;
UPDATE users SET uploads = c.n
    FROM (SELECT user_id, count(*) AS n FROM study_data GROUP BY user_id) AS c
    WHERE users.user_id = c.user_id;

-- After each statement on actions or study_data (TG_ARGV[0]), the change of each participant's
-- count, from the statement's transition tables. The users rows are updated one at a time in
-- user_id order, so two statements that touch several participants at once take their row
-- locks in the same order and cannot deadlock on them. An update that leaves every user_id
-- as it was changes no count and touches no users row.
CREATE FUNCTION justin_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    c record;
BEGIN
    IF TG_OP = 'INSERT' THEN
        FOR c IN SELECT user_id, count(*) AS n FROM new_rows GROUP BY user_id ORDER BY user_id
        LOOP
            IF TG_ARGV[0] = 'actions' THEN
                UPDATE users SET decisions = decisions + c.n WHERE user_id = c.user_id;
            ELSE
                UPDATE users SET uploads = uploads + c.n WHERE user_id = c.user_id;
            END IF;
        END LOOP;
    ELSIF TG_OP = 'DELETE' THEN
        FOR c IN SELECT user_id, count(*) AS n FROM old_rows GROUP BY user_id ORDER BY user_id
        LOOP
            IF TG_ARGV[0] = 'actions' THEN
                UPDATE users SET decisions = decisions - c.n WHERE user_id = c.user_id;
            ELSE
                UPDATE users SET uploads = uploads - c.n WHERE user_id = c.user_id;
            END IF;
        END LOOP;
    ELSE
        FOR c IN
            SELECT user_id, sum(n) AS n
            FROM (SELECT user_id, 1 AS n FROM new_rows
                  UNION ALL SELECT user_id, -1 FROM old_rows) AS moved
            GROUP BY user_id HAVING sum(n) <> 0 ORDER BY user_id
        LOOP
            IF TG_ARGV[0] = 'actions' THEN
                UPDATE users SET decisions = decisions + c.n WHERE user_id = c.user_id;
            ELSE
                UPDATE users SET uploads = uploads + c.n WHERE user_id = c.user_id;
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER actions_count_insert AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('actions');
CREATE TRIGGER actions_count_delete AFTER DELETE ON actions
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('actions');
CREATE TRIGGER actions_count_update AFTER UPDATE ON actions
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('actions');
CREATE TRIGGER study_data_count_insert AFTER INSERT ON study_data
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('study_data');
CREATE TRIGGER study_data_count_delete AFTER DELETE ON study_data
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('study_data');
CREATE TRIGGER study_data_count_update AFTER UPDATE ON study_data
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION justin_count_rows('study_data');

-- A renamed participant (an erasure gives them their pseudonym) starts from no rows under the
-- new id: their rows follow the rename through the foreign keys (ON UPDATE CASCADE), and the
-- triggers above add them to the new id as they move.
CREATE FUNCTION justin_count_renamed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.decisions := 0;
    NEW.uploads := 0;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_count_renamed BEFORE UPDATE OF user_id ON users
    FOR EACH ROW WHEN (OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION justin_count_renamed();
