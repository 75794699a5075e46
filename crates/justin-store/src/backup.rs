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
//! complete; whatever fails, the partial file and the temporary files are removed.
//!
//! Rows are in the order PostgreSQL stores them, not sorted by key: Diesel's public `COPY` API
//! exports tables, not queries. A restore does not depend on the order.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyTarget};
use diesel::prelude::*;
use diesel::sql_types::Text;
use justin_core::{BackupReport, StoreError};

use crate::error::{from_diesel, other};
use crate::pg::{count_rows, TABLES};
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance, users,
};

/// Version of the archive layout, recorded in the manifest; restore reads this version only.
pub(crate) const FORMAT_VERSION: u32 = 1;

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

fn io_failure(what: impl std::fmt::Display, e: io::Error) -> StoreError {
    other(format!("{what}: {e}"))
}

/// One exported table.
struct TableExport {
    name: &'static str,
    rows: u64,
    columns: Vec<String>,
    file: PathBuf,
}

/// What the snapshot transaction produced.
struct Snapshot {
    database: String,
    migrations: Vec<String>,
    tables: Vec<TableExport>,
}

/// Removes the temporary directory and the partial archive when dropped, so every way out of
/// [`write_backup`] cleans up; after the final rename there is no partial file left.
struct Cleanup {
    partial: PathBuf,
    work_dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // After a successful rename the partial file is gone; NotFound is expected then.
        let _ = fs::remove_file(&self.partial);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// Writes a backup of the database behind `conn` into `dir`.
pub(crate) fn write_backup(
    conn: &mut PgConnection,
    dir: &Path,
    taken_at: DateTime<Utc>,
) -> Result<BackupReport, StoreError> {
    fs::create_dir_all(dir)
        .map_err(|e| io_failure(format!("cannot create {}", dir.display()), e))?;
    let name = format!(
        "justin-backup-{}.tar",
        taken_at.format("%Y%m%dT%H%M%S%.6fZ")
    );
    let path = dir.join(&name);
    if path.exists() {
        return Err(other(format!("{} exists already", path.display())));
    }
    let partial = dir.join(format!("{name}.partial"));
    let work_dir = dir.join(format!(".{name}.tmp"));
    // Creating (not reusing) the directory also keeps two backups of one instant apart.
    create_private_dir(&work_dir)
        .map_err(|e| io_failure(format!("cannot create {}", work_dir.display()), e))?;
    let cleanup = Cleanup {
        partial: partial.clone(),
        work_dir,
    };

    let snapshot = conn
        .build_transaction()
        .repeatable_read()
        .read_only()
        .run(|conn| export_all(conn, &cleanup.work_dir))
        .map_err(StoreError::from)?;

    write_archive(&partial, &snapshot, taken_at)?;
    fs::rename(&partial, &path).map_err(|e| {
        io_failure(
            format!("cannot rename {} to {}", partial.display(), path.display()),
            e,
        )
    })?;
    // Makes the rename itself durable; the data was synced before it.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        log::debug!("syncing {} after a backup failed: {e}", dir.display());
    }
    drop(cleanup);

    Ok(BackupReport {
        path,
        row_counts: snapshot
            .tables
            .iter()
            .map(|t| (t.name.to_owned(), t.rows))
            .collect(),
    })
}

/// Exports every table into `work_dir` and reads what the manifest needs, all in the caller's
/// transaction.
fn export_all(conn: &mut PgConnection, work_dir: &Path) -> Result<Snapshot, Failure> {
    let database = diesel::select(diesel::dsl::sql::<Text>("current_database()"))
        .get_result::<String>(conn)?;
    let migrations = applied_migrations(conn)?;
    let counts = count_rows(conn).map_err(Failure::Store)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for (name, export) in EXPORTS {
        let file = work_dir.join(format!("{name}.csv"));
        let exported = export(conn, &file)?;
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
        tables.push(TableExport {
            name,
            rows,
            columns,
            file,
        });
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
const EXPORTS: [(&str, Exporter); 6] = [
    ("users", |c, p| copy_table(c, users::table, p)),
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
];

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
        columns: header
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(str::to_owned)
            .collect(),
        records,
    })
}

/// Passes CSV through and counts its records: line ends outside quoted fields. PostgreSQL
/// quotes with `"` and escapes a quote by doubling it, so toggling on every `"` tracks
/// whether a newline is inside a field.
pub(crate) struct RecordCounter<W> {
    inner: W,
    in_quotes: bool,
    /// Records ended by a newline so far.
    pub(crate) records: u64,
    /// Whether bytes follow the last record's newline (a last record without one).
    partial: bool,
    /// Bytes passed through.
    pub(crate) bytes: u64,
}

impl<W: Write> RecordCounter<W> {
    pub(crate) fn new(inner: W) -> Self {
        Self {
            inner,
            in_quotes: false,
            records: 0,
            partial: false,
            bytes: 0,
        }
    }

    /// The number of records in everything written, counting a last record that lacks its
    /// newline (COPY accepts one); an error when the data ends inside a quoted field.
    pub(crate) fn total(&self) -> Result<u64, &'static str> {
        if self.in_quotes {
            Err("the data ends inside a quoted field")
        } else {
            Ok(self.records + u64::from(self.partial))
        }
    }
}

impl<W: Write> Write for RecordCounter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        for &byte in &buf[..written] {
            match byte {
                b'"' => {
                    self.in_quotes = !self.in_quotes;
                    self.partial = true;
                }
                b'\n' if !self.in_quotes => {
                    self.records += 1;
                    self.partial = false;
                }
                _ => self.partial = true,
            }
        }
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The table's columns in table order, as the database has them now.
pub(crate) fn table_columns(conn: &mut PgConnection, table: &str) -> Result<Vec<String>, Failure> {
    let names = diesel::sql_query(
        "SELECT attname::text AS name FROM pg_attribute \
         WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .bind::<Text, _>(table)
    .load::<Name>(conn)?;
    Ok(names.into_iter().map(|n| n.name).collect())
}

/// Versions of the migrations applied to the database, oldest first.
pub(crate) fn applied_migrations(conn: &mut PgConnection) -> Result<Vec<String>, Failure> {
    let versions = diesel::sql_query(
        "SELECT version::text AS name FROM __diesel_schema_migrations ORDER BY version",
    )
    .load::<Name>(conn)?;
    Ok(versions.into_iter().map(|v| v.name).collect())
}

fn manifest(snapshot: &Snapshot, taken_at: DateTime<Utc>) -> serde_json::Value {
    let tables: Vec<_> = snapshot
        .tables
        .iter()
        .map(|t| {
            serde_json::json!({
                "name": t.name,
                "file": format!("{}.csv", t.name),
                "rows": t.rows,
                "columns": t.columns,
            })
        })
        .collect();
    serde_json::json!({
        "format_version": FORMAT_VERSION,
        "producer": concat!("justin-store ", env!("CARGO_PKG_VERSION")),
        "taken_at": taken_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "database": snapshot.database,
        "migrations": snapshot.migrations,
        "csv": { "header": true, "null": "", "dialect": "PostgreSQL COPY, FORMAT csv" },
        "tables": tables,
    })
}

fn write_archive(
    partial: &Path,
    snapshot: &Snapshot,
    taken_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let failed = |e: io::Error| io_failure(format!("cannot write {}", partial.display()), e);
    let mtime = u64::try_from(taken_at.timestamp()).unwrap_or(0);
    let mut archive = tar::Builder::new(BufWriter::new(
        create_private_file(partial).map_err(failed)?,
    ));

    let manifest = serde_json::to_vec_pretty(&manifest(snapshot, taken_at)).map_err(other)?;
    let mut header = entry_header(manifest.len() as u64, mtime);
    archive
        .append_data(&mut header, "manifest.json", manifest.as_slice())
        .map_err(failed)?;

    for table in &snapshot.tables {
        let file = File::open(&table.file).map_err(failed)?;
        let size = file.metadata().map_err(failed)?.len();
        let mut header = entry_header(size, mtime);
        archive
            .append_data(&mut header, format!("{}.csv", table.name), file)
            .map_err(failed)?;
    }

    let file = archive
        .into_inner()
        .map_err(failed)?
        .into_inner()
        .map_err(|e| failed(e.into_error()))?;
    file.sync_all().map_err(failed)
}

/// A tar header with fixed ownership and permissions, so archives do not carry the server's
/// user names and read the same wherever they are unpacked.
fn entry_header(size: u64, mtime: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o600);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

/// Backups hold participants' data: readable by the service's user only.
fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

fn create_private_dir(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_an_exporter() {
        assert_eq!(EXPORTS.map(|(name, _)| name), TABLES);
    }

    #[test]
    fn record_counter_ignores_newlines_inside_quotes() {
        let csv = b"1,plain\n2,\"two\nlines\"\n3,\"say \"\"hi\"\"\n\"\n";
        let mut out = Vec::new();
        let mut counter = RecordCounter::new(&mut out);
        // Written in small pieces, as io::copy may.
        for chunk in csv.chunks(3) {
            counter.write_all(chunk).unwrap();
        }
        assert_eq!(counter.records, 3);
        assert_eq!(counter.total(), Ok(3));
        assert_eq!(counter.bytes, csv.len() as u64);
        assert_eq!(out, csv);
    }

    #[test]
    fn record_counter_counts_a_last_record_without_newline_and_refuses_open_quotes() {
        let mut counter = RecordCounter::new(io::sink());
        counter.write_all(b"1,a\n2,b").unwrap();
        assert_eq!(counter.total(), Ok(2));
        let mut open = RecordCounter::new(io::sink());
        open.write_all(b"1,\"a\n").unwrap();
        assert!(open.total().is_err());
    }
}
