//! Backups: one consistent snapshot of every table, written as a single tar file in the same
//! layout as `justin-store`'s, so either adapter restores the other's backups.
//!
//! The archive holds `manifest.json` (format version, time, database, applied migrations, and
//! per table its row count and columns) and one `<table>.csv` per table with a header line, in
//! PostgreSQL's CSV dialect (see [`crate::csv`] and [`crate::tables`]), which PostgreSQL's
//! `COPY ... FROM ... (FORMAT csv, HEADER true)` reads.
//!
//! Every table is read inside one read transaction, which in WAL mode is a snapshot that does
//! not block writers: the files agree with each other and with the counts. Rows stream into
//! temporary files (a tar entry needs its size up front), then into the archive, so memory use
//! does not grow with the data. The archive is written as `<name>.partial` and renamed when
//! complete; whatever fails, the partial file and the temporary files are removed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use justin_core::{BackupReport, StoreError};

use crate::csv::write_record;
use crate::error::{from_diesel, other};
use crate::models::{ActionRow, ParametersRow, ProvenanceRow, StudyRow, UpdateRow, UserRow};
use crate::store::{count_rows, TABLES};
use crate::tables::{applied_migrations, live_columns, TableRow};

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

/// Writes a backup of the database behind `conn` (opened from `url`) into `dir`.
pub(crate) fn write_backup(
    conn: &mut SqliteConnection,
    url: &str,
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

    // A deferred transaction that only reads: its first read fixes the snapshot.
    let snapshot = conn
        .transaction(|conn| export_all(conn, &cleanup.work_dir))
        .map_err(StoreError::from)?;

    write_archive(&partial, url, &snapshot, taken_at)?;
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
fn export_all(conn: &mut SqliteConnection, work_dir: &Path) -> Result<Snapshot, Failure> {
    let migrations = applied_migrations(conn)?;
    let counts = count_rows(conn).map_err(Failure::Store)?;
    let exports = [
        export::<UserRow>(conn, work_dir)?,
        export::<ParametersRow>(conn, work_dir)?,
        export::<ActionRow>(conn, work_dir)?,
        export::<StudyRow>(conn, work_dir)?,
        export::<UpdateRow>(conn, work_dir)?,
        export::<ProvenanceRow>(conn, work_dir)?,
    ];
    let mut tables = Vec::with_capacity(TABLES.len());
    for export in exports {
        let name = export.name;
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

/// Streams table `T` as CSV with a header into a new file in `work_dir`.
fn export<T: TableRow>(
    conn: &mut SqliteConnection,
    work_dir: &Path,
) -> Result<TableExport, Failure> {
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
    let path = work_dir.join(format!("{}.csv", T::NAME));
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
    Ok(TableExport {
        name: T::NAME,
        rows,
        columns,
        file: path.clone(),
    })
}

fn manifest(snapshot: &Snapshot, url: &str, taken_at: DateTime<Utc>) -> serde_json::Value {
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
        "producer": concat!("justin-store-sqlite ", env!("CARGO_PKG_VERSION")),
        "taken_at": taken_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "database": url,
        "migrations": snapshot.migrations,
        "csv": { "header": true, "null": "", "dialect": "PostgreSQL COPY, FORMAT csv" },
        "tables": tables,
    })
}

fn write_archive(
    partial: &Path,
    url: &str,
    snapshot: &Snapshot,
    taken_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let failed = |e: io::Error| io_failure(format!("cannot write {}", partial.display()), e);
    let mtime = u64::try_from(taken_at.timestamp()).unwrap_or(0);
    let mut archive = tar::Builder::new(BufWriter::new(
        create_private_file(partial).map_err(failed)?,
    ));

    let manifest = serde_json::to_vec_pretty(&manifest(snapshot, url, taken_at)).map_err(other)?;
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
