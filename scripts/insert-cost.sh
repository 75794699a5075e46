#!/usr/bin/env bash
# What storing a decision costs PostgreSQL, part by part: pgbench inserts rows shaped like
# decisions into a throwaway database migrated by `justin migrate`, one row per statement (a
# decision alone, as at one connection) and 32 rows per statement (a batch of group commit),
# with the schema as it is and with parts of it taken away in turn:
#   all            the schema as migrated
#   no-counts      without the participant counts' trigger on actions (migration 2026-12-05)
#   no-fks         without the two foreign keys of actions (users, model_parameters)
#   neither        without both
#   narrow-counts  the counts kept in a narrow table of their own (no CHECK, fillfactor 50)
#                  by the same trigger logic, instead of on the users row
# The modes alternate, ROUNDS times (default 3), RUN_SECS seconds each (default 5), with
# synchronous_commit off for pgbench's sessions so that the WAL flush does not hide the CPU
# spent. Prints each run's mean latency per statement in ms. The database is dropped at the end.
#
# Usage: scripts/insert-cost.sh [path to justin] (default target/release/justin)
# PostgreSQL from JUSTIN_BENCH_PG (default postgres://postgres@127.0.0.1:5432), superuser.
set -euo pipefail

bin="$(realpath "${1:-target/release/justin}")"
base="${JUSTIN_BENCH_PG:-postgres://postgres@127.0.0.1:5432}"
rounds="${ROUNDS:-3}"
secs="${RUN_SECS:-5}"
db="justin_insert_cost_$$"
work="$(mktemp -d)"

cleanup() {
    psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

sql() { PGOPTIONS="-c client_min_messages=warning" psql "$base/$db" -q -v ON_ERROR_STOP=1 -c "$1" >/dev/null; }

psql "$base/postgres" -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db"
# Run where no config.toml is, so that only the database URL is taken from outside.
(cd "$work" && DATABASE_URL="$base/$db" "$bin" migrate >/dev/null)

psql "$base/$db" -q -v ON_ERROR_STOP=1 >/dev/null <<'SQL'
INSERT INTO model_parameters VALUES (1, 'flat_prob', '{}', now());
INSERT INTO users (user_id, created_at) SELECT 'u' || g, now() FROM generate_series(1, 1000) g;
CREATE TABLE narrow_counts (
    user_id text PRIMARY KEY,
    decisions bigint NOT NULL DEFAULT 0
) WITH (fillfactor = 50);
INSERT INTO narrow_counts (user_id) SELECT user_id FROM users;
CREATE FUNCTION narrow_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    first_id text;
    last_id text;
    delta bigint;
    ids text[];
    deltas bigint[];
BEGIN
    SELECT min(user_id), max(user_id), count(*) INTO first_id, last_id, delta FROM new_rows;
    IF first_id IS NOT DISTINCT FROM last_id THEN
        IF first_id IS NOT NULL THEN
            UPDATE narrow_counts SET decisions = decisions + delta WHERE user_id = first_id;
        END IF;
        RETURN NULL;
    END IF;
    SELECT array_agg(g.user_id ORDER BY g.user_id), array_agg(g.c ORDER BY g.user_id)
        INTO ids, deltas
        FROM (SELECT r.user_id, count(*) AS c FROM new_rows r GROUP BY r.user_id) AS g;
    PERFORM 1 FROM unnest(ids) AS i(user_id)
        CROSS JOIN LATERAL (SELECT 1 FROM narrow_counts n WHERE n.user_id = i.user_id
                            FOR NO KEY UPDATE) AS locked;
    UPDATE narrow_counts SET decisions = decisions + d.c
        FROM unnest(ids, deltas) AS d(user_id, c) WHERE narrow_counts.user_id = d.user_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER narrow_count_insert AFTER INSERT ON actions
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION narrow_count_rows();
ALTER TABLE actions DISABLE TRIGGER narrow_count_insert;
VACUUM ANALYZE users;
VACUUM ANALYZE narrow_counts;
SQL

columns="user_id, decision_idx, request_timestamp, created_at, context, state, action, \
action_prob, parameter_version, rng_seed, sent_timestamp"
cat >"$work/one.sql" <<SQL
\set u random(1, 1000)
\set d random(1, 1000000000000)
INSERT INTO actions ($columns) VALUES ('u' || :u, :d, now(), now(), '{"a":1}', '{}', 1, 0.5, 1, 1, 'x') ON CONFLICT DO NOTHING;
SQL
cat >"$work/batch.sql" <<SQL
\set d random(1, 1000000000000)
INSERT INTO actions ($columns) SELECT 'u' || (1 + (random() * 999)::int), :d::bigint + g, now(), now(), '{"a":1}', '{}', 1, 0.5, 1, 1, 'x' FROM generate_series(1, 32) g ON CONFLICT DO NOTHING;
SQL

fks_off="ALTER TABLE actions DROP CONSTRAINT IF EXISTS actions_parameter_version_fkey; \
ALTER TABLE actions DROP CONSTRAINT IF EXISTS actions_user_id_fkey;"
fks_on="$fks_off \
ALTER TABLE actions ADD CONSTRAINT actions_parameter_version_fkey \
    FOREIGN KEY (parameter_version) REFERENCES model_parameters (version); \
ALTER TABLE actions ADD CONSTRAINT actions_user_id_fkey \
    FOREIGN KEY (user_id) REFERENCES users (user_id) ON UPDATE CASCADE;"
counts() { sql "ALTER TABLE actions $1 TRIGGER actions_count_insert; ALTER TABLE actions $2 TRIGGER narrow_count_insert;"; }

mode() {
    case "$1" in
        all) sql "$fks_on"; counts ENABLE DISABLE ;;
        no-counts) sql "$fks_on"; counts DISABLE DISABLE ;;
        no-fks) sql "$fks_off"; counts ENABLE DISABLE ;;
        neither) sql "$fks_off"; counts DISABLE DISABLE ;;
        narrow-counts) sql "$fks_on"; counts DISABLE ENABLE ;;
    esac
}

printf '%-6s %-14s %12s %12s\n' round mode "one row ms" "32 rows ms"
for round in $(seq 1 "$rounds"); do
    for m in all no-counts no-fks neither narrow-counts; do
        mode "$m"
        line=()
        for script in one batch; do
            ms="$(PGOPTIONS='-c synchronous_commit=off' pgbench -n -M prepared -c 1 -T "$secs" \
                -f "$work/$script.sql" "$base/$db" 2>&1 | awk '/latency average/ {print $4}')"
            line+=("${ms:-failed}")
        done
        printf '%-6s %-14s %12s %12s\n' "$round" "$m" "${line[0]}" "${line[1]}"
    done
done
