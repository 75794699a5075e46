-- Each participant's number of decisions (rows of actions) and uploads (rows of study_data),
-- kept on their users row by the triggers below, so that reading a participant costs the same
-- however many rows they have. Every statement that inserts, deletes or moves such rows (the
-- service, a restore, an erasure, a seed or a hand edit) keeps them true. Derived data:
-- backups leave the two columns out and a restore counts the rows again as it loads them.
ALTER TABLE users ADD COLUMN decisions INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN uploads INTEGER NOT NULL DEFAULT 0;

UPDATE users SET decisions = c.n
    FROM (SELECT user_id, count(*) AS n FROM actions GROUP BY user_id) AS c
    WHERE users.user_id = c.user_id;
UPDATE users SET uploads = c.n
    FROM (SELECT user_id, count(*) AS n FROM study_data GROUP BY user_id) AS c
    WHERE users.user_id = c.user_id;

CREATE TRIGGER actions_count_insert AFTER INSERT ON actions BEGIN
    UPDATE users SET decisions = decisions + 1 WHERE user_id = NEW.user_id;
END;
CREATE TRIGGER actions_count_delete AFTER DELETE ON actions BEGIN
    UPDATE users SET decisions = decisions - 1 WHERE user_id = OLD.user_id;
END;
CREATE TRIGGER actions_count_moved AFTER UPDATE OF user_id ON actions
    WHEN OLD.user_id IS NOT NEW.user_id BEGIN
    UPDATE users SET decisions = decisions - 1 WHERE user_id = OLD.user_id;
    UPDATE users SET decisions = decisions + 1 WHERE user_id = NEW.user_id;
END;
CREATE TRIGGER study_data_count_insert AFTER INSERT ON study_data BEGIN
    UPDATE users SET uploads = uploads + 1 WHERE user_id = NEW.user_id;
END;
CREATE TRIGGER study_data_count_delete AFTER DELETE ON study_data BEGIN
    UPDATE users SET uploads = uploads - 1 WHERE user_id = OLD.user_id;
END;
CREATE TRIGGER study_data_count_moved AFTER UPDATE OF user_id ON study_data
    WHEN OLD.user_id IS NOT NEW.user_id BEGIN
    UPDATE users SET uploads = uploads - 1 WHERE user_id = OLD.user_id;
    UPDATE users SET uploads = uploads + 1 WHERE user_id = NEW.user_id;
END;

-- A renamed participant (an erasure gives them their pseudonym) is counted again under the new
-- id. Their rows are renamed by statements of their own (no foreign key here cascades), before
-- the users row (as an erasure does: those rows were added to no row, the new id having none
-- yet) or after it (the triggers above then move them).
CREATE TRIGGER users_count_renamed AFTER UPDATE OF user_id ON users
    WHEN OLD.user_id IS NOT NEW.user_id BEGIN
    UPDATE users SET
        decisions = (SELECT count(*) FROM actions WHERE user_id = NEW.user_id),
        uploads = (SELECT count(*) FROM study_data WHERE user_id = NEW.user_id)
    WHERE id = NEW.id;
END;
