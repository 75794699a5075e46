-- Back to one UPDATE per participant (migration 2026-12-05's function).
CREATE OR REPLACE FUNCTION justin_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
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
