//! The benchmark's own PostgreSQL work, through Diesel: a fresh database per run (dropped at
//! the end, and leftovers of runs that were killed dropped at the next start), the table the
//! pgbench ceiling inserts into, and the bulk fill of `study_data` for the update at scale.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::error::{fail, Context, Result};

/// Every benchmark database's name starts with this, then a tag of the machine, the id of the
/// process that created it and a random part.
const PREFIX: &str = "justin_bench_";
/// The table pgbench inserts into: `actions`' columns, checks, indexes and foreign keys.
pub const CEILING_TABLE: &str = "bench_ceiling_actions";
/// The first `decision_idx` of the bulk-filled study data, far above any index the load
/// generator reaches, so the fill never collides with uploaded decisions.
const FILL_FIRST_IDX: i64 = 1_000_000_000_000;

/// Opens a connection to `url`.
pub fn connect(url: &str) -> Result<PgConnection> {
    PgConnection::establish(url)
        .context(|| format!("cannot connect to PostgreSQL at {}", mask(url)))
}

/// `url` with its password, if any, replaced by `***`.
pub fn mask(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `url` naming database `name` instead of its own (the query string is kept).
pub fn with_database(url: &str, name: &str) -> Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return fail(format!(
            "{} is not a postgres:// URL; the benchmark needs one (e.g. postgres://postgres@127.0.0.1:5432/postgres)",
            mask(url)
        ));
    };
    if scheme != "postgres" && scheme != "postgresql" {
        return fail(format!("{} is not a postgres:// URL", mask(url)));
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

/// A short tag of this machine, so that stale databases are only ever recognised by the
/// machine that created them.
fn host_tag() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut hasher = DefaultHasher::new();
    host.trim().hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

fn random_part() -> String {
    let mut hasher = DefaultHasher::new();
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
        .hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    format!("{:08x}", hasher.finish() as u32)
}

#[derive(QueryableByName)]
struct Line {
    #[diesel(sql_type = Text)]
    out: String,
}

/// The rows of a query whose one text column is named `out`.
pub fn lines(conn: &mut PgConnection, sql: &str) -> Result<Vec<String>> {
    let rows = diesel::sql_query(sql)
        .load::<Line>(conn)
        .context(|| format!("{sql:?} failed"))?;
    Ok(rows.into_iter().map(|l| l.out).collect())
}

/// The one value of a query whose one row has one text column named `out`.
pub fn value(conn: &mut PgConnection, sql: &str) -> Result<String> {
    match lines(conn, sql)?.into_iter().next() {
        Some(v) => Ok(v),
        None => fail(format!("{sql:?} returned no row")),
    }
}

/// Runs statements that return nothing.
pub fn execute(conn: &mut PgConnection, sql: &str) -> Result<()> {
    conn.batch_execute(sql)
        .context(|| format!("{sql:?} failed"))
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Drops the benchmark databases this machine created whose creating process is gone (a run
/// that was killed before it could clean up). Returns their names.
pub fn drop_stale(admin_url: &str) -> Result<Vec<String>> {
    let mut conn = connect(admin_url)?;
    let ours = format!("{PREFIX}{}_", host_tag());
    let names = lines(
        &mut conn,
        "SELECT datname::text AS out FROM pg_database WHERE datname LIKE 'justin\\_bench\\_%'",
    )?;
    let mut dropped = Vec::new();
    for name in names {
        let Some(rest) = name.strip_prefix(&ours) else {
            continue;
        };
        let Some(pid) = rest.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if process_is_a_bench(pid) {
            continue;
        }
        execute(
            &mut conn,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&name)
            ),
        )?;
        dropped.push(name);
    }
    Ok(dropped)
}

fn process_is_a_bench(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end().starts_with("justin-bench"))
}

/// A database created for one run, dropped when the value is dropped (or by [`Self::drop_now`]).
pub struct BenchDatabase {
    admin_url: String,
    /// The database's name.
    pub name: String,
    /// Its URL, for the service and pgbench.
    pub url: String,
    dropped: bool,
}

impl BenchDatabase {
    /// Creates a fresh, empty database on the server of `admin_url` (the service migrates it
    /// when it starts).
    pub fn create(admin_url: &str) -> Result<Self> {
        let name = format!(
            "{PREFIX}{}_{}_{}",
            host_tag(),
            std::process::id(),
            random_part()
        );
        let url = with_database(admin_url, &name)?;
        let mut conn = connect(admin_url)?;
        execute(
            &mut conn,
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        )?;
        Ok(Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
            dropped: false,
        })
    }

    /// Drops the database now, reporting a failure.
    pub fn drop_now(mut self) -> Result<()> {
        self.dropped = true;
        self.drop_inner()
    }

    fn drop_inner(&self) -> Result<()> {
        let mut conn = connect(&self.admin_url)?;
        execute(
            &mut conn,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.name)
            ),
        )
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        if !self.dropped {
            if let Err(e) = self.drop_inner() {
                eprintln!(
                    "justin-bench: could not drop the benchmark database {}: {e}",
                    self.name
                );
            }
        }
    }
}

/// Creates [`CEILING_TABLE`] like `actions` (columns, types, defaults, checks, indexes and the
/// unique `(user_id, decision_type, decision_idx)`), with `actions`' foreign keys too. Run
/// after the service migrated the database.
pub fn create_ceiling_table(conn: &mut PgConnection) -> Result<()> {
    execute(
        conn,
        &format!("CREATE TABLE {CEILING_TABLE} (LIKE actions INCLUDING ALL)"),
    )?;
    let foreign_keys = lines(
        conn,
        "SELECT pg_get_constraintdef(oid) AS out FROM pg_constraint \
         WHERE conrelid = 'actions'::regclass AND contype = 'f' ORDER BY conname",
    )?;
    for definition in foreign_keys {
        execute(
            conn,
            &format!("ALTER TABLE {CEILING_TABLE} ADD {definition}"),
        )?;
    }
    Ok(())
}

/// Rows in `table`.
pub fn count_rows(conn: &mut PgConnection, table: &str) -> Result<u64> {
    let count = value(conn, &format!("SELECT count(*)::text AS out FROM {table}"))?;
    count
        .parse()
        .context(|| format!("cannot read the row count of {table} ({count:?})"))
}

/// The decisions an update with the default reward and a window of 0 would impute now:
/// available, of the algorithm's policy, without an upload (the benchmark withdraws no one).
///
/// # Errors
/// When the query fails.
pub fn count_unrewarded(conn: &mut PgConnection) -> Result<u64> {
    let count = value(
        conn,
        "SELECT count(*)::text AS out FROM actions a WHERE a.available \
         AND a.policy IN ('algorithm', 'warmup') AND NOT EXISTS (SELECT 1 FROM study_data s \
         WHERE s.user_id = a.user_id AND s.decision_type = a.decision_type \
         AND s.decision_idx = a.decision_idx)",
    )?;
    count
        .parse()
        .context(|| format!("cannot read the count of decisions without an upload ({count:?})"))
}

/// Inserts `rows` uploads into `study_data` in one statement, spread over the `users`
/// registered as `{user_prefix}{n}`: contexts `{"temperature": ...}`, states `[temperature]`,
/// outcomes `{"clicks": ...}` with the clicks as reward, of the default decision type and no
/// logged decision (so `action_logged` is false and `available` true), as `/upload_data` stores
/// them. Then vacuums and analyses the table, as autovacuum would have done to rows uploaded
/// over a study's weeks.
pub fn fill_study_data(
    conn: &mut PgConnection,
    rows: u64,
    users: u64,
    user_prefix: &str,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context, \
             action, action_prob, state, outcome, reward, action_logged, decision_type, \
             available, sent_timestamp) \
         SELECT '{user_prefix}' || (g % {users}), {FILL_FIRST_IDX} + g, \
             timestamptz '2025-01-01 00:00:00+00' + g * interval '1 second', now(), \
             ('{{\"temperature\":' || round(t, 1) || '}}')::json, (g % 2)::smallint, 0.5, \
             ('[' || round(t, 1) || ']')::json, ('{{\"clicks\":' || g % 10 || '}}')::json, (g % 10)::float8, false, \
             'default', true, \
             to_char(timestamp '2025-01-01 00:00:00' + g * interval '1 second', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS') \
         FROM generate_series(1, {rows}) AS g, \
             LATERAL (SELECT (150 + g % 200) / 10.0 AS t) AS temperature",
        users = users.max(1),
    );
    execute(conn, &sql)?;
    execute(conn, "VACUUM ANALYZE study_data")
}

/// Bulk-inserts `rows` decisions of the participants [`fill_study_data`] used, made now, their
/// indexes after the first `after` that function wrote. With `after` 0 there is one decision
/// per filled study record (same indexes and actions), so that the export at scale joins every
/// decision with its upload; after them, the decisions have no upload.
///
/// # Errors
/// When the insert fails.
pub fn fill_actions(
    conn: &mut PgConnection,
    rows: u64,
    after: u64,
    users: u64,
    user_prefix: &str,
) -> Result<()> {
    let sql = format!(
        "INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, \
             state, action, action_prob, parameter_version, rng_seed, decision_type, available, \
             unavailable_reason, sent_timestamp) \
         SELECT '{user_prefix}' || (g % {users}), {FILL_FIRST_IDX} + {after} + g, \
             timestamptz '2025-01-01 00:00:00+00' + g * interval '1 second', now(), \
             ('{{\"temperature\":' || round(t, 1) || '}}')::json, ('[' || round(t, 1) || ']')::json, (g % 2)::smallint, 0.5, \
             1, g, 'default', true, NULL, \
             to_char(timestamp '2025-01-01 00:00:00' + g * interval '1 second', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS') \
         FROM generate_series(1, {rows}) AS g, \
             LATERAL (SELECT (150 + g % 200) / 10.0 AS t) AS temperature",
        users = users.max(1),
    );
    execute(conn, &sql)?;
    execute(conn, "VACUUM ANALYZE actions")
}

/// What the database itself takes to produce the export's rows: the same join, in the same
/// order, written as CSV by `COPY` to psql, which discards it. The export's ceiling.
///
/// # Errors
/// When psql cannot run or the copy fails.
pub fn copy_export_ceiling(database_url: &str) -> Result<std::time::Duration> {
    let query = "SELECT a.user_id, a.decision_type, a.decision_idx, a.request_timestamp, \
             a.created_at, a.available, a.unavailable_reason, a.context, a.state, a.action, \
             a.action_prob, a.parameter_version, s.outcome, s.reward, \
             (SELECT p.parameter_version FROM update_provenance p \
              JOIN model_update_requests r ON r.id = p.update_id \
              WHERE s.available AND p.last_study_data_id >= s.id \
                AND (s.policy IS NULL \
                     OR s.policy = ANY (string_to_array(p.included_policies, ','))) \
                AND NOT EXISTS (SELECT 1 FROM users w WHERE w.user_id = s.user_id \
                                AND w.withdrawn_at <= r.started_at) \
              ORDER BY p.last_study_data_id, p.parameter_version LIMIT 1), \
             s.request_timestamp, s.created_at, a.rng_seed, a.sent_timestamp, \
             s.sent_timestamp, a.policy, a.fallback_reason, a.decided_by, a.in_study \
         FROM actions a LEFT JOIN study_data s ON s.user_id = a.user_id \
             AND s.decision_type = a.decision_type AND s.decision_idx = a.decision_idx \
         ORDER BY a.id";
    let started = std::time::Instant::now();
    let out = std::process::Command::new("psql")
        .args([
            database_url,
            "--no-psqlrc",
            "--quiet",
            "--set=ON_ERROR_STOP=1",
            "--command",
            &format!("\\copy ({query}) TO '/dev/null' WITH (FORMAT csv, HEADER true)"),
        ])
        .output()
        .context(|| "cannot run psql for the export's ceiling".to_owned())?;
    let elapsed = started.elapsed();
    if !out.status.success() {
        return fail(format!(
            "psql \\copy of the export's rows failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "b").unwrap(),
            "postgres://postgres@127.0.0.1:5432/b"
        );
        assert_eq!(
            with_database("postgresql://u:p@h/db?application_name=x", "b").unwrap(),
            "postgresql://u:p@h/b?application_name=x"
        );
        assert_eq!(
            with_database("postgres://h:5432", "b").unwrap(),
            "postgres://h:5432/b"
        );
        assert!(with_database("host=127.0.0.1 dbname=x", "b").is_err());
        assert!(with_database("mysql://h/db", "b").is_err());
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(mask("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn names_are_quoted_as_identifiers() {
        assert_eq!(quote_ident(r#"a"b"#), r#""a""b""#);
    }
}
