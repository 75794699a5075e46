-- Exact numbers: the columns holding what clients sent (context, outcome) and the state the
-- service answered with become json instead of jsonb. jsonb keeps a number as a numeric, which
-- has no negative zero: a client's -0.0 came back as 0. json keeps the text the service wrote,
-- the shortest one that reads back as the same double, so every finite double comes back bit
-- for bit. Nothing queries into these columns (no jsonb operator, index or comparison uses
-- them); the service reads them whole.
--
-- Existing rows keep the text jsonb gives them: each number as its numeric prints it, which
-- reads back as the same double (1e300 as 301 digits, 5e-324 as 0.000...5), key order and
-- spacing as jsonb normalised them. A -0.0 stored before this migration is 0 already; nothing
-- can bring its sign back.
--
-- Changing a column's type rewrites the table (under an exclusive lock, so with the service
-- stopped): time and temporary disk space grow with the size of actions and study_data.

ALTER TABLE actions
    ALTER COLUMN context TYPE json USING context::json,
    ALTER COLUMN state TYPE json USING state::json;

ALTER TABLE study_data
    ALTER COLUMN context TYPE json USING context::json,
    ALTER COLUMN state TYPE json USING state::json,
    ALTER COLUMN outcome TYPE json USING outcome::json;
