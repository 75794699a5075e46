-- The participants' counts (migration 2026-12-05) kept by one UPDATE per statement instead of
-- one per participant. Every UPDATE of users checks the table's CHECK constraints, which
-- PostgreSQL prepares afresh for each statement: a batch of decisions for 32 participants ran
-- 32 UPDATEs and spent most of its trigger's time preparing them. Now a statement that
-- touches one participant updates that row directly, and one that touches several locks their
-- rows in user_id order (so two such statements cannot deadlock on them) and then updates
-- them all at once. Each lock and each row is found by the users table's unique index on
-- user_id, whatever the planner knows of the table. Same counts, same columns: backups and
-- restores are unchanged.
CREATE OR REPLACE FUNCTION justin_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_id text;
    last_id text;
    delta bigint;
    ids text[];
    deltas bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        SELECT min(user_id), max(user_id), count(*) INTO first_id, last_id, delta FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT min(user_id), max(user_id), -count(*) INTO first_id, last_id, delta FROM old_rows;
    END IF;
    IF TG_OP <> 'UPDATE' AND first_id IS NOT DISTINCT FROM last_id THEN
        -- One participant, or no row at all.
        IF first_id IS NOT NULL THEN
            IF TG_ARGV[0] = 'actions' THEN
                UPDATE users SET decisions = decisions + delta WHERE user_id = first_id;
            ELSE
                UPDATE users SET uploads = uploads + delta WHERE user_id = first_id;
            END IF;
        END IF;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(g.user_id ORDER BY g.user_id), array_agg(g.c ORDER BY g.user_id)
            INTO ids, deltas
            FROM (SELECT r.user_id, count(*) AS c FROM new_rows r GROUP BY r.user_id) AS g;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(g.user_id ORDER BY g.user_id), array_agg(-g.c ORDER BY g.user_id)
            INTO ids, deltas
            FROM (SELECT r.user_id, count(*) AS c FROM old_rows r GROUP BY r.user_id) AS g;
    ELSE
        -- An update that leaves every user_id as it was changes no count.
        SELECT array_agg(g.user_id ORDER BY g.user_id), array_agg(g.c ORDER BY g.user_id)
            INTO ids, deltas
            FROM (SELECT m.user_id, sum(m.c) AS c
                  FROM (SELECT r.user_id, 1 AS c FROM new_rows r
                        UNION ALL SELECT r.user_id, -1 FROM old_rows r) AS m
                  GROUP BY m.user_id HAVING sum(m.c) <> 0) AS g;
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM unnest(ids) AS i(user_id)
        CROSS JOIN LATERAL (SELECT 1 FROM users u WHERE u.user_id = i.user_id
                            FOR NO KEY UPDATE) AS locked;
    IF TG_ARGV[0] = 'actions' THEN
        UPDATE users SET decisions = decisions + d.c
            FROM unnest(ids, deltas) AS d(user_id, c) WHERE users.user_id = d.user_id;
    ELSE
        UPDATE users SET uploads = uploads + d.c
            FROM unnest(ids, deltas) AS d(user_id, c) WHERE users.user_id = d.user_id;
    END IF;
    RETURN NULL;
END
$$;
