//! Backups: one consistent snapshot of every table, written as a single tar file in the same
//! layout as `justin-store`'s, so either adapter restores the other's backups.
//!
//! The archive holds `manifest.json` (format version, time, database, applied migrations, and
//! per table its row count and columns) and one `<table>.csv` per table with a header line, in
//! PostgreSQL's CSV dialect (see [`justin_backup::csv`] and [`crate::tables`]), which
//! PostgreSQL's `COPY ... FROM ... (FORMAT csv, HEADER true)` reads.
//!
//! Every table is read inside one read transaction, which in WAL mode is a snapshot that does
//! not block writers: the files agree with each other and with the counts. Rows stream into
//! temporary files (a tar entry needs its size up front), then into the archive, so memory use
//! does not grow with the data. The archive is written as `<name>.partial` and renamed when
//! complete; whatever fails, the partial file and the temporary files are removed. The file
//! layout and its writing live in `justin-backup`, shared with the PostgreSQL adapter.

use std::fs::File;
use std::io::{self, BufWriter, Write};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use justin_backup::csv::write_record;
use justin_backup::{FormatError, Manifest, ManifestTable, PendingBackup};
use justin_core::tables::TABLES;
use justin_core::{BackupReport, StoreError};

use crate::error::{from_diesel, other};
use crate::models::{
    ActionRow, ErasureRow, EventRow, ParametersRow, ProvenanceRow, StudyRow, UpdateRow, UserRow,
};
use crate::store::count_rows;
use crate::tables::{applied_migrations, live_columns, TableRow};

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

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
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
    migrations: Vec<String>,
    tables: Vec<ManifestTable>,
}

/// Writes a backup of the database behind `conn` (opened from `url`) into `dir`.
pub(crate) fn write_backup(
    conn: &mut SqliteConnection,
    url: &str,
    dir: &std::path::Path,
    taken_at: DateTime<Utc>,
) -> Result<BackupReport, StoreError> {
    let pending = PendingBackup::create(dir, taken_at).map_err(from_format)?;
    // A deferred transaction that only reads: its first read fixes the snapshot.
    let snapshot = conn
        .transaction(|conn| export_all(conn, &pending))
        .map_err(StoreError::from)?;
    let manifest = Manifest::new(
        concat!("justin-store-sqlite ", env!("CARGO_PKG_VERSION")),
        taken_at,
        url,
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
fn export_all(conn: &mut SqliteConnection, pending: &PendingBackup) -> Result<Snapshot, Failure> {
    let migrations = applied_migrations(conn)?;
    let counts = count_rows(conn).map_err(Failure::Store)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let export = match table {
            UserRow::NAME => export::<UserRow>(conn, pending)?,
            ParametersRow::NAME => export::<ParametersRow>(conn, pending)?,
            ActionRow::NAME => export::<ActionRow>(conn, pending)?,
            StudyRow::NAME => export::<StudyRow>(conn, pending)?,
            UpdateRow::NAME => export::<UpdateRow>(conn, pending)?,
            ProvenanceRow::NAME => export::<ProvenanceRow>(conn, pending)?,
            EventRow::NAME => export::<EventRow>(conn, pending)?,
            ErasureRow::NAME => export::<ErasureRow>(conn, pending)?,
            crate::corrections::CorrectionRow::NAME => {
                export::<crate::corrections::CorrectionRow>(conn, pending)?
            }
            other_table => {
                return Err(Failure::Store(other(format!(
                    "no exporter for table {other_table}"
                ))))
            }
        };
        let name = export.name.as_str();
        let rows = counts
            .iter()
            .find(|(table, _)| table == name)
            .map(|(_, rows)| *rows)
            .ok_or_else(|| Failure::Store(other(format!("no row count for table {name}"))))?;
        if export.rows != rows {
            return Err(Failure::Store(other(format!(
                "table {name} has {rows} rows but its export holds {}",
                export.rows
            ))));
        }
        tables.push(export);
    }
    Ok(Snapshot { migrations, tables })
}

/// Streams table `T` as CSV with a header into its file in the backup's work directory.
fn export<T: TableRow>(
    conn: &mut SqliteConnection,
    pending: &PendingBackup,
) -> Result<ManifestTable, Failure> {
    // The export writes the columns this build knows; refuse a backup that would silently
    // leave out columns a newer migration added.
    let columns = live_columns(conn, T::NAME)?;
    if columns != T::COLUMNS {
        return Err(Failure::Store(other(format!(
            "table {} has columns {columns:?} but the backup would export {:?}; is this build \
             older than the database schema?",
            T::NAME,
            T::COLUMNS
        ))));
    }
    let path = pending.csv_path(T::NAME);
    let failed = |e: io::Error| {
        Failure::Store(io_failure(
            format!("cannot export to {}", path.display()),
            e,
        ))
    };
    let mut out = BufWriter::new(File::create_new(&path).map_err(failed)?);
    out.write_all(T::COLUMNS.join(",").as_bytes())
        .and_then(|()| out.write_all(b"\n"))
        .map_err(failed)?;
    let mut rows = 0u64;
    T::for_each(conn, |row: T| {
        write_record(&mut out, &row.fields()).map_err(failed)?;
        rows += 1;
        Ok::<_, Failure>(())
    })?;
    out.flush().map_err(failed)?;
    Ok(ManifestTable::new(T::NAME, rows, columns))
}
