//! Restore: puts a backup written by [`crate::backup`] back, every table and every row, and
//! sets the identity sequences so new rows continue after the restored ones.
//!
//! The file is checked whole before the database is touched, in a first pass over the tar that
//! reads the manifest and, for every CSV, its header, byte size and record count (quoted fields
//! may hold newlines, so records are counted outside quotes). Only then, in one transaction,
//! are all tables truncated and each CSV streamed from its place in the tar into `COPY FROM`,
//! in foreign-key order. A file that changed between the passes is caught by the header and the
//! row count `COPY` reports, and rolls the transaction back. Nothing is held in memory or
//! written to disk beyond a read buffer.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyHeader, CopyTarget};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use justin_core::{RestoreReport, StoreError};
use serde::Deserialize;

use crate::backup::{applied_migrations, table_columns, Failure, RecordCounter, FORMAT_VERSION};
use crate::error::other;
use crate::pg::TABLES;
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance, users,
};
use crate::setup::quote_identifier;

/// The manifest's name in the archive.
const MANIFEST: &str = "manifest.json";

/// Largest manifest accepted; a real one is a few kilobytes.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// Longest CSV header line accepted.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidBackup(reason.into())
}

/// What restore needs from `manifest.json`.
#[derive(Debug, Deserialize)]
struct Manifest {
    migrations: Vec<String>,
    tables: Vec<ManifestTable>,
}

#[derive(Debug, Deserialize)]
struct ManifestTable {
    name: String,
    file: String,
    rows: u64,
    columns: Vec<String>,
}

/// Where a CSV lies in the tar, and what the first pass found in it.
#[derive(Debug)]
struct CsvEntry {
    /// Offset of its data in the file.
    offset: u64,
    /// Bytes of data.
    size: u64,
    header: Vec<String>,
    records: u64,
}

/// Checks `file` as a restore would, changing nothing; see
/// [`justin_core::Store::check_backup`].
pub(crate) fn check(conn: &mut PgConnection, file: &Path) -> Result<RestoreReport, StoreError> {
    let (manifest, mut csvs) = scan(file)?;
    let tables = check_file(&manifest, &mut csvs)?;
    check_database(conn, &manifest, &tables)?;
    Ok(RestoreReport {
        row_counts: tables
            .iter()
            .map(|(table, _)| (table.name.clone(), table.rows))
            .collect(),
    })
}

/// Restores `file` through `conn`; see [`justin_core::Store::restore`].
pub(crate) fn restore(conn: &mut PgConnection, file: &Path) -> Result<RestoreReport, StoreError> {
    let (manifest, mut csvs) = scan(file)?;
    let tables = check_file(&manifest, &mut csvs)?;
    check_database(conn, &manifest, &tables)?;

    let row_counts = conn
        .transaction::<_, Failure, _>(|conn| {
            conn.batch_execute(&format!(
                "TRUNCATE {} RESTART IDENTITY CASCADE",
                TABLES.join(", ")
            ))?;
            let mut counts = Vec::with_capacity(IMPORTS.len());
            for ((name, import), (table, entry)) in IMPORTS.iter().zip(&tables) {
                debug_assert_eq!(name, &table.name);
                let source = CsvSource {
                    file,
                    entry,
                    table: name,
                };
                let copied = import(conn, &source)?;
                if copied != table.rows {
                    return Err(Failure::Store(invalid(format!(
                        "{}: {copied} rows were read but the manifest says {} (did the file \
                         change during the restore?)",
                        table.file, table.rows
                    ))));
                }
                counts.push(((*name).to_owned(), copied));
            }
            continue_sequences(conn)?;
            Ok(counts)
        })
        .map_err(StoreError::from)?;
    Ok(RestoreReport { row_counts })
}

/// First pass: reads the manifest and measures every CSV, without judging them yet.
fn scan(path: &Path) -> Result<(Manifest, BTreeMap<String, CsvEntry>), StoreError> {
    let unreadable = |e: io::Error| invalid(format!("cannot read {}: {e}", path.display()));
    let file = File::open(path).map_err(unreadable)?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut manifest = None;
    let mut csvs = BTreeMap::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let name = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(invalid(format!("{name} is not a regular file")));
        }
        let seen_before = if name == MANIFEST {
            manifest.replace(read_manifest(&mut entry)?).is_some()
        } else if let Some(table) = name.strip_suffix(".csv") {
            let offset = entry.raw_file_position();
            let size = entry.size();
            let (header, records) = measure_csv(&mut entry, &name, size)?;
            csvs.insert(
                table.to_owned(),
                CsvEntry {
                    offset,
                    size,
                    header,
                    records,
                },
            )
            .is_some()
        } else {
            return Err(invalid(format!("unexpected entry {name}")));
        };
        if seen_before {
            return Err(invalid(format!("{name} appears twice")));
        }
    }
    let manifest = manifest.ok_or_else(|| invalid(format!("{MANIFEST} is missing")))?;
    Ok((manifest, csvs))
}

fn read_manifest(entry: &mut impl Read) -> Result<Manifest, StoreError> {
    let mut text = Vec::new();
    entry
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| invalid(format!("cannot read {MANIFEST}: {e}")))?;
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(invalid(format!(
            "{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes"
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&text)
        .map_err(|e| invalid(format!("{MANIFEST} is not JSON: {e}")))?;
    // Checked before the rest, so a newer layout is named as such rather than as a parse error.
    match value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
    {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(invalid(format!(
                "format_version {v} is not supported (this build reads {FORMAT_VERSION})"
            )))
        }
        None => return Err(invalid(format!("{MANIFEST} has no format_version"))),
    }
    serde_json::from_value(value).map_err(|e| invalid(format!("{MANIFEST} is incomplete: {e}")))
}

/// Reads a CSV entry through: its header's column names and its number of data records.
fn measure_csv(
    entry: &mut impl Read,
    name: &str,
    size: u64,
) -> Result<(Vec<String>, u64), StoreError> {
    let unreadable = |e: io::Error| invalid(format!("cannot read {name}: {e}"));
    let mut reader = BufReader::new(entry);
    let header = read_header(&mut reader, name).map_err(|e| match e {
        HeaderError::Io(e) => unreadable(e),
        HeaderError::Invalid(reason) => invalid(reason),
    })?;
    let mut counter = RecordCounter::new(io::sink());
    io::copy(&mut reader, &mut counter).map_err(unreadable)?;
    let read = header.bytes + counter.bytes;
    if read != size {
        return Err(invalid(format!(
            "{name} is truncated: {read} of {size} bytes present"
        )));
    }
    let records = counter
        .total()
        .map_err(|reason| invalid(format!("{name}: {reason}")))?;
    Ok((header.columns, records))
}

struct Header {
    columns: Vec<String>,
    bytes: u64,
}

enum HeaderError {
    Io(io::Error),
    Invalid(String),
}

/// Reads the header line. Column names are plain identifiers, which CSV leaves unquoted, so a
/// header is one line split at commas.
fn read_header(reader: &mut impl BufRead, name: &str) -> Result<Header, HeaderError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(HeaderError::Io)?;
    if line.last() != Some(&b'\n') {
        return Err(HeaderError::Invalid(format!("{name} has no header line")));
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| HeaderError::Invalid(format!("{name}: the header is not UTF-8")))?;
    Ok(Header {
        columns: text
            .trim_end_matches(['\r', '\n'])
            .split(',')
            .map(str::to_owned)
            .collect(),
        bytes: line.len() as u64,
    })
}

/// Checks the archive against its own manifest and this schema's tables; returns the tables
/// in [`TABLES`] (foreign-key) order with their CSVs.
fn check_file<'m>(
    manifest: &'m Manifest,
    csvs: &mut BTreeMap<String, CsvEntry>,
) -> Result<Vec<(&'m ManifestTable, CsvEntry)>, StoreError> {
    let listed: BTreeSet<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
    if listed.len() != manifest.tables.len() {
        return Err(invalid("the manifest lists a table twice"));
    }
    let expected: BTreeSet<&str> = TABLES.into_iter().collect();
    if listed != expected {
        return Err(invalid(format!(
            "the manifest lists the tables {listed:?}, but this schema has {expected:?}"
        )));
    }
    let mut tables = Vec::with_capacity(TABLES.len());
    for name in TABLES {
        let Some(table) = manifest.tables.iter().find(|t| t.name == name) else {
            return Err(invalid(format!("the manifest does not list table {name}")));
        };
        let file = format!("{name}.csv");
        if table.file != file {
            return Err(invalid(format!(
                "the manifest names {:?} for table {name}, expected {file}",
                table.file
            )));
        }
        let entry = csvs
            .remove(name)
            .ok_or_else(|| invalid(format!("{file} is missing")))?;
        if entry.header != table.columns {
            return Err(invalid(format!(
                "{file} has the columns {:?} but the manifest says {:?}",
                entry.header, table.columns
            )));
        }
        if entry.records != table.rows {
            return Err(invalid(format!(
                "{file} holds {} rows but the manifest says {}",
                entry.records, table.rows
            )));
        }
        tables.push((table, entry));
    }
    if let Some(extra) = csvs.keys().next() {
        return Err(invalid(format!(
            "{extra}.csv is not a table the manifest lists"
        )));
    }
    Ok(tables)
}

/// Checks that the database has the schema the backup was taken from.
fn check_database(
    conn: &mut PgConnection,
    manifest: &Manifest,
    tables: &[(&ManifestTable, CsvEntry)],
) -> Result<(), StoreError> {
    let applied = applied_migrations(conn).map_err(StoreError::from)?;
    if applied != manifest.migrations {
        return Err(invalid(format!(
            "the backup was taken from a database with the migrations {:?}, but this database \
             has {applied:?}; bring the database to the backup's schema version (or use a \
             matching build) before restoring",
            manifest.migrations
        )));
    }
    for ((name, _), (table, _)) in IMPORTS.iter().zip(tables) {
        let live = table_columns(conn, name).map_err(StoreError::from)?;
        if live != table.columns {
            return Err(invalid(format!(
                "table {name} has the columns {live:?} but the backup has {:?}",
                table.columns
            )));
        }
        // COPY lists the columns this build knows; they must be the live ones too, or the
        // restore would fail half-way (or leave a column at its default).
        let known = import_columns(name);
        if known != live {
            return Err(other(format!(
                "table {name} has the columns {live:?} but this build knows {known:?}; is the \
                 build older or newer than the database schema?"
            )));
        }
    }
    Ok(())
}

/// One CSV of the archive, to be streamed into its table.
struct CsvSource<'a> {
    file: &'a Path,
    entry: &'a CsvEntry,
    table: &'a str,
}

/// Imports one table from its CSV and returns the rows copied; see [`copy_into`].
type Importer = fn(&mut PgConnection, &CsvSource<'_>) -> Result<u64, Failure>;

/// Every table with its importer, in [`TABLES`] order, which is the order foreign keys allow.
/// COPY needs the table's Diesel type, hence one entry per table.
const IMPORTS: [(&str, Importer); 6] = [
    ("users", |c, s| copy_into(c, users::table, s)),
    ("model_parameters", |c, s| {
        copy_into(c, model_parameters::table, s)
    }),
    ("actions", |c, s| copy_into(c, actions::table, s)),
    ("study_data", |c, s| copy_into(c, study_data::table, s)),
    ("model_update_requests", |c, s| {
        copy_into(c, model_update_requests::table, s)
    }),
    ("update_provenance", |c, s| {
        copy_into(c, update_provenance::table, s)
    }),
];

/// The columns this build's COPY lists for `table`, in order.
fn import_columns(table: &str) -> Vec<&'static str> {
    match table {
        "users" => column_names(users::all_columns),
        "model_parameters" => column_names(model_parameters::all_columns),
        "actions" => column_names(actions::all_columns),
        "study_data" => column_names(study_data::all_columns),
        "model_update_requests" => column_names(model_update_requests::all_columns),
        "update_provenance" => column_names(update_provenance::all_columns),
        _ => Vec::new(),
    }
}

fn column_names<C: ColumnNames>(_: C) -> Vec<&'static str> {
    C::names()
}

/// The names of a tuple of Diesel columns.
trait ColumnNames {
    fn names() -> Vec<&'static str>;
}

macro_rules! column_names_for_tuples {
    ($($c:ident)+) => {
        column_names_for_tuples!(@impl $($c)+);
        column_names_for_tuples!(@peel $($c)+);
    };
    (@peel $first:ident $($rest:ident)+) => {
        column_names_for_tuples!($($rest)+);
    };
    (@peel $last:ident) => {};
    (@impl $($c:ident)+) => {
        impl<$($c: diesel::Column),+> ColumnNames for ($($c,)+) {
            fn names() -> Vec<&'static str> {
                vec![$($c::NAME),+]
            }
        }
    };
}

column_names_for_tuples!(C1 C2 C3 C4 C5 C6 C7 C8 C9 C10 C11 C12 C13 C14 C15 C16);

/// Why streaming a CSV into COPY stopped. Diesel's COPY needs an error type it can convert its
/// own errors into.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("reading the backup failed: {0}")]
    Io(#[from] io::Error),
}

/// Streams the CSV at `source` into `table` with `COPY FROM`, after checking its header
/// again (the file could have changed since the first pass).
fn copy_into<T>(conn: &mut PgConnection, table: T, source: &CsvSource<'_>) -> Result<u64, Failure>
where
    T: diesel::Table + CopyTarget<Table = T> + Copy,
    T::AllColumns: ColumnNames,
{
    let file_name = format!("{}.csv", source.table);
    let changed = |what: &str| {
        Failure::Store(invalid(format!(
            "{file_name} changed during the restore ({what})"
        )))
    };
    let unreadable =
        |e: io::Error| Failure::Store(invalid(format!("cannot read {file_name}: {e}")));
    let mut file = File::open(source.file).map_err(unreadable)?;
    file.seek(SeekFrom::Start(source.entry.offset))
        .map_err(unreadable)?;
    let mut reader = BufReader::new(file.take(source.entry.size));
    let header = read_header(&mut reader, &file_name).map_err(|e| match e {
        HeaderError::Io(e) => unreadable(e),
        HeaderError::Invalid(reason) => changed(&reason),
    })?;
    if header.columns != source.entry.header {
        return Err(changed("its header differs"));
    }
    // Diesel's COPY callback is `Fn`; the reader moves forward inside it.
    let reader = RefCell::new(reader);
    let copied = diesel::copy_from(table)
        .from_raw_data(table, |sink: &mut dyn io::Write| {
            io::copy(&mut *reader.borrow_mut(), sink)?;
            Ok::<_, CopyError>(())
        })
        .with_format(CopyFormat::Csv)
        .with_header(CopyHeader::Set(false))
        .execute(conn)
        .map_err(|e| match e {
            CopyError::Db(e) => Failure::Db(e),
            CopyError::Io(e) => unreadable(e),
        })?;
    u64::try_from(copied).map_err(|e| Failure::Store(other(e)))
}

#[derive(QueryableByName)]
struct IdentityColumn {
    #[diesel(sql_type = Text)]
    table_name: String,
    #[diesel(sql_type = Text)]
    column_name: String,
}

/// Sets every identity sequence of the study's tables so that the next row gets the restored
/// maximum plus one (or 1 for an empty table). COPY wrote the ids as they were, without
/// drawing from the sequences.
fn continue_sequences(conn: &mut PgConnection) -> Result<(), Failure> {
    let columns = diesel::sql_query(
        "SELECT c.relname::text AS table_name, a.attname::text AS column_name \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         WHERE c.oid = ANY ($1::text[]::regclass[]) AND a.attidentity <> '' \
           AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind::<Array<Text>, _>(TABLES.map(str::to_owned).to_vec())
    .load::<IdentityColumn>(conn)?;
    for c in columns {
        let table = quote_identifier(&c.table_name);
        let column = quote_identifier(&c.column_name);
        // The sequence name is looked up by the server; the literals are quoted for it.
        conn.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{}', '{}'), COALESCE(max({column}), 1), \
             max({column}) IS NOT NULL) FROM {table}",
            table.replace('\'', "''"),
            c.column_name.replace('\'', "''"),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_has_an_importer_in_foreign_key_order() {
        assert_eq!(IMPORTS.map(|(name, _)| name), TABLES);
        for name in TABLES {
            assert!(!import_columns(name).is_empty(), "{name}");
        }
        assert_eq!(import_columns("users"), vec!["id", "user_id", "created_at"]);
    }

    #[test]
    fn csv_is_measured_by_records_not_lines() {
        let csv = b"a,b\n1,\"two\nlines\"\n2,x\n";
        let (header, records) = measure_csv(&mut &csv[..], "t.csv", csv.len() as u64).unwrap();
        assert_eq!(header, vec!["a", "b"]);
        assert_eq!(records, 2);
    }

    #[test]
    fn short_or_headless_csv_is_invalid() {
        let csv = b"a,b\n1,2\n";
        let short = measure_csv(&mut &csv[..], "t.csv", 100);
        assert!(
            matches!(short, Err(StoreError::InvalidBackup(_))),
            "{short:?}"
        );
        let headless = measure_csv(&mut &b""[..], "t.csv", 0);
        assert!(matches!(headless, Err(StoreError::InvalidBackup(_))));
    }
}
