//! SQL on a test database of either backend, for checks the API cannot make and for changes
//! it cannot cause (rows in bulk, a column dropped). The tests write statements both dialects
//! accept; a statement that fails fails the test with the statement and the error.

use std::collections::BTreeMap;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

pub use justin_core::tables::TABLES;

/// A connection of the test's own, to the database at a URL of either backend.
pub enum TestConnection {
    /// To PostgreSQL.
    Postgres(PgConnection),
    /// To a SQLite file, waiting for the service's locks rather than failing on them.
    Sqlite(SqliteConnection),
}

/// Opens a connection to `url` (`sqlite://<path>` or a PostgreSQL URL).
///
/// # Panics
/// When the database cannot be opened.
pub fn connect(url: &str) -> TestConnection {
    match url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut conn = SqliteConnection::establish(path)
                .unwrap_or_else(|e| panic!("cannot open the test database {url}: {e}"));
            // The service writes to the same file; wait for its locks as it waits for ours.
            conn.batch_execute("PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;")
                .expect("the test database takes its pragmas");
            TestConnection::Sqlite(conn)
        }
        None => TestConnection::Postgres(
            PgConnection::establish(url)
                .unwrap_or_else(|e| panic!("cannot connect to the test database {url}: {e}")),
        ),
    }
}

impl TestConnection {
    /// Runs `sql` (one or more statements, no results).
    ///
    /// # Panics
    /// When a statement fails.
    pub fn execute(&mut self, sql: &str) {
        match self {
            Self::Postgres(conn) => conn.batch_execute(sql),
            Self::Sqlite(conn) => conn.batch_execute(sql),
        }
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"));
    }

    /// Runs a query whose rows are one text column named `out`; the rows' values in order.
    ///
    /// # Panics
    /// When the query fails.
    pub fn lines(&mut self, sql: &str) -> Vec<String> {
        #[derive(QueryableByName)]
        struct Line {
            #[diesel(sql_type = Text)]
            out: String,
        }
        match self {
            Self::Postgres(conn) => diesel::sql_query(sql).load::<Line>(conn),
            Self::Sqlite(conn) => diesel::sql_query(sql).load::<Line>(conn),
        }
        .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"))
        .into_iter()
        .map(|line| line.out)
        .collect()
    }

    /// Rows per table of [`TABLES`].
    ///
    /// # Panics
    /// When a table cannot be counted.
    pub fn row_counts(&mut self) -> BTreeMap<&'static str, i64> {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            rows: i64,
        }
        TABLES
            .iter()
            .map(|&table| {
                let sql = format!("SELECT count(*) AS rows FROM {table}");
                let count = match self {
                    Self::Postgres(conn) => diesel::sql_query(&sql).get_result::<Count>(conn),
                    Self::Sqlite(conn) => diesel::sql_query(&sql).get_result::<Count>(conn),
                }
                .unwrap_or_else(|e| panic!("cannot count the rows of {table}: {e}"));
                (table, count.rows)
            })
            .collect()
    }
}

/// Runs `sql` (statements both dialects accept, no results) on the database at `url`.
///
/// # Panics
/// When the database cannot be opened or a statement fails.
pub fn execute(url: &str, sql: &str) {
    connect(url).execute(sql);
}

/// Runs a query whose rows are one text column named `out` (in SQL both dialects accept) on
/// the database at `url`; the rows' values in order.
///
/// # Panics
/// When the database cannot be opened or the query fails.
pub fn sql_lines(url: &str, sql: &str) -> Vec<String> {
    connect(url).lines(sql)
}

/// Rows per table of [`TABLES`] in the database at `url`.
///
/// # Panics
/// When the database cannot be opened or a table cannot be counted.
pub fn row_counts(url: &str) -> BTreeMap<&'static str, i64> {
    connect(url).row_counts()
}
