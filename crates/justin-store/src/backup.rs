//! Backups: one consistent snapshot of every table, written as a single tar file.
//!
//! The archive holds `manifest.json` (format version, time, database, applied migrations, and
//! per table its row count and columns) and one `<table>.csv` per table, in PostgreSQL's CSV
//! format with a header line, as `COPY ... FROM ... (FORMAT csv, HEADER true)` reads it back.
//!
//! Every table is exported inside one `REPEATABLE READ, READ ONLY` transaction, so the files
//! agree with each other and with the counts. Tables stream through `COPY TO STDOUT` into
//! temporary files (a tar entry needs its size up front), then into the archive, so memory use
//! does not grow with the data. The archive is written as `<name>.partial` and renamed when
//! complete; whatever fails, the partial file and the temporary files are removed. The file
//! layout and its writing live in `justin-backup`, shared with the SQLite adapter.
//!
//! Rows are in the order PostgreSQL stores them, not sorted by key: Diesel's public `COPY` API
//! exports tables, not queries. A restore does not depend on the order.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyTarget};
use diesel::prelude::*;
use diesel::sql_types::Text;
use justin_backup::csv::{header_columns, RecordCounter};
use justin_backup::manifest::is_derived;
use justin_backup::{FormatError, Manifest, ManifestTable, PendingBackup};
use justin_core::tables::TABLES;
use justin_core::{BackupReport, StoreError};

use crate::error::{from_diesel, other};
use crate::pg::count_rows;
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    study_data_corrections, update_provenance, users,
};

/// What went wrong inside the snapshot transaction. Diesel's transaction needs an error type
/// it can convert its own errors into; the port's error is mapped once, outside.
pub(crate) enum Failure {
    Db(diesel::result::Error),
    Store(StoreError),
}

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Db(e) => from_diesel(e),
            Failure::Store(e) => e,
        }
    }
}

/// A backup format error as the port's: a refused file is an invalid backup, the rest opaque.
pub(crate) fn from_format(e: FormatError) -> StoreError {
    match e {
        FormatError::Invalid(reason) => StoreError::InvalidBackup(reason),
        FormatError::Write(reason) => other(reason),
    }
}

fn io_failure(what: impl std::fmt::Display, e: io::Error) -> StoreError {
    other(format!("{what}: {e}"))
}

/// What the snapshot transaction produced.
struct Snapshot {
    database: String,
    migrations: Vec<String>,
    tables: Vec<ManifestTable>,
}

/// Writes a backup of the database behind `conn` into `dir`.
pub(crate) fn write_backup(
    conn: &mut PgConnection,
    dir: &Path,
    taken_at: DateTime<Utc>,
) -> Result<BackupReport, StoreError> {
    let pending = PendingBackup::create(dir, taken_at).map_err(from_format)?;
    let snapshot = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| export_all(conn, &pending))
        .map_err(StoreError::from)?;
    let manifest = Manifest::new(
        concat!("justin-store ", env!("CARGO_PKG_VERSION")),
        taken_at,
        &snapshot.database,
        snapshot.migrations,
        snapshot.tables,
    );
    let path = pending.finish(&manifest).map_err(from_format)?;
    Ok(BackupReport {
        path,
        row_counts: manifest
            .tables
            .into_iter()
            .map(|t| (t.name, t.rows))
            .collect(),
    })
}

/// Exports every table into the backup's work directory and reads what the manifest needs, all
/// in the caller's transaction.
fn export_all(conn: &mut PgConnection, pending: &PendingBackup) -> Result<Snapshot, Failure> {
    let database = diesel::select(diesel::dsl::sql::<Text>("current_database()"))
        .get_result::<String>(conn)?;
    let migrations = applied_migrations(conn)?;
    let counts = count_rows(conn).map_err(Failure::Store)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for (name, export) in EXPORTS {
        let exported = export(conn, &pending.csv_path(name))?;
        let columns = table_columns(conn, name)?;
        // COPY exports the columns this build knows (schema.rs); refuse a backup that would
        // silently leave out columns a newer migration added.
        if exported.columns != columns {
            return Err(Failure::Store(other(format!(
                "table {name} has columns {columns:?} but the backup would export {:?}; \
                 is this build older than the database schema?",
                exported.columns
            ))));
        }
        let rows = counts
            .iter()
            .find(|(table, _)| table == name)
            .map(|(_, rows)| *rows)
            .ok_or_else(|| Failure::Store(other(format!("no row count for table {name}"))))?;
        // Diesel's COPY reader ends at the end of the data without reading the command's
        // final status, so an error the server reports mid-COPY would look like a short
        // table. Counting what arrived catches that.
        if exported.records != rows {
            return Err(Failure::Store(other(format!(
                "table {name} has {rows} rows but its export holds {}",
                exported.records
            ))));
        }
        tables.push(ManifestTable::new(name, rows, columns));
    }
    Ok(Snapshot {
        database,
        migrations,
        tables,
    })
}

/// Exports one table into a file; see [`copy_table`].
type Exporter = fn(&mut PgConnection, &Path) -> Result<Exported, Failure>;

/// Every table with its exporter, in [`TABLES`] order. COPY needs the table's Diesel type,
/// hence one entry per table rather than a loop over names.
const EXPORTS: [(&str, Exporter); 9] = [
    ("users", |c, p| copy_table(c, USERS_BACKED_UP, p)),
    ("model_parameters", |c, p| {
        copy_table(c, model_parameters::table, p)
    }),
    ("actions", |c, p| copy_table(c, actions::table, p)),
    ("study_data", |c, p| copy_table(c, study_data::table, p)),
    ("model_update_requests", |c, p| {
        copy_table(c, model_update_requests::table, p)
    }),
    ("update_provenance", |c, p| {
        copy_table(c, update_provenance::table, p)
    }),
    ("participant_events", |c, p| {
        copy_table(c, participant_events::table, p)
    }),
    ("erasures", |c, p| copy_table(c, erasures::table, p)),
    ("study_data_corrections", |c, p| {
        copy_table(c, study_data_corrections::table, p)
    }),
];

/// The columns of `users` a backup holds: all but the [`justin_backup::manifest::DERIVED_COLUMNS`],
/// which the database counts again from the restored rows.
pub(crate) const USERS_BACKED_UP: (
    users::id,
    users::user_id,
    users::created_at,
    users::study_start,
    users::study_start_sent,
    users::study_end,
    users::study_end_sent,
    users::withdrawn_at,
    users::withdrawal_reason,
    users::erased_at,
) = (
    users::id,
    users::user_id,
    users::created_at,
    users::study_start,
    users::study_start_sent,
    users::study_end,
    users::study_end_sent,
    users::withdrawn_at,
    users::withdrawal_reason,
    users::erased_at,
);

/// What [`copy_table`] wrote.
struct Exported {
    /// The column names of the CSV header.
    columns: Vec<String>,
    /// The data records after the header.
    records: u64,
}

/// Streams `table` as CSV with a header into a new file at `path`.
fn copy_table<T: CopyTarget>(
    conn: &mut PgConnection,
    table: T,
    path: &Path,
) -> Result<Exported, Failure> {
    let failed = |e: io::Error| {
        Failure::Store(io_failure(
            format!("cannot export to {}", path.display()),
            e,
        ))
    };
    let mut out = BufWriter::new(File::create_new(path).map_err(failed)?);
    let mut header = String::new();
    let records = {
        let mut rows = diesel::copy_to(table)
            .with_format(CopyFormat::Csv)
            .with_header(true)
            .load_raw(conn)?;
        rows.read_line(&mut header).map_err(failed)?;
        out.write_all(header.as_bytes()).map_err(failed)?;
        let mut counter = RecordCounter::new(&mut out);
        io::copy(&mut rows, &mut counter).map_err(failed)?;
        counter.records
    };
    out.flush().map_err(failed)?;
    // The COPY's final result is still pending in libpq, which makes Diesel's next prepared
    // statement fail with "another command is already in progress". A simple query collects
    // and discards it.
    conn.batch_execute("SELECT 1")?;
    Ok(Exported {
        // The identifiers are plain lower-case words, which CSV leaves unquoted.
        columns: header_columns(&header),
        records,
    })
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The table's columns a backup holds in table order, as the database has them now: all but
/// the [`justin_backup::manifest::DERIVED_COLUMNS`].
pub(crate) fn table_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<String>, Failure> {
    let names = diesel::sql_query(
        "SELECT attname::text AS name FROM pg_attribute \
         WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .bind::<Text, _>(table)
    .load::<Name>(conn)?;
    Ok(names
        .into_iter()
        .map(|n| n.name)
        .filter(|column| !is_derived(table, column))
        .collect())
}

/// Versions of the migrations applied to the database, oldest first.
pub(crate) fn applied_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Failure> {
    let versions = diesel::sql_query(
        "SELECT version::text AS name FROM __diesel_schema_migrations ORDER BY version",
    )
    .load::<Name>(conn)?;
    Ok(versions.into_iter().map(|v| v.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_an_exporter() {
        assert_eq!(EXPORTS.map(|(name, _)| name), TABLES);
    }
}
