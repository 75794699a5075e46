//! Restore: puts a backup back, every table and every row, whether this adapter or
//! `justin-store` (PostgreSQL) wrote it; ids continue after the restored ones.
//!
//! As in `justin-store`, the file is checked whole before the database is touched: a first
//! pass over the tar reads the manifest and, for every CSV, its header, byte size and records,
//! and here also parses every record into its row (so a value SQLite could not take is found
//! before anything changes). Only then, in one `BEGIN IMMEDIATE` transaction, are all tables
//! emptied and each CSV read again from its place in the tar and inserted, in foreign-key
//! order. A file that changed between the passes fails the second pass and rolls everything
//! back. Nothing is held in memory or written to disk beyond a read buffer and one row.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use diesel::prelude::*;
use justin_core::{RestoreReport, StoreError};
use serde::Deserialize;

use crate::backup::{Failure, FORMAT_VERSION};
use crate::csv::CsvReader;
use crate::error::{from_diesel, other};
use crate::models::{ActionRow, ParametersRow, ProvenanceRow, StudyRow, UpdateRow, UserRow};
use crate::store::{delete_all, TABLES};
use crate::tables::{applied_migrations, known_columns, live_columns, TableRow};

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
pub(crate) fn check(conn: &mut SqliteConnection, file: &Path) -> Result<RestoreReport, StoreError> {
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
pub(crate) fn restore(
    conn: &mut SqliteConnection,
    file: &Path,
) -> Result<RestoreReport, StoreError> {
    let (manifest, mut csvs) = scan(file)?;
    let tables = check_file(&manifest, &mut csvs)?;
    check_database(conn, &manifest, &tables)?;

    let row_counts = conn
        .immediate_transaction::<_, Failure, _>(|conn| {
            delete_all(conn)?;
            let mut counts = Vec::with_capacity(tables.len());
            for (table, entry) in &tables {
                let source = CsvSource {
                    file,
                    entry,
                    table: &table.name,
                };
                let copied = match table.name.as_str() {
                    UserRow::NAME => import::<UserRow>(conn, &source)?,
                    ParametersRow::NAME => import::<ParametersRow>(conn, &source)?,
                    ActionRow::NAME => import::<ActionRow>(conn, &source)?,
                    StudyRow::NAME => import::<StudyRow>(conn, &source)?,
                    UpdateRow::NAME => import::<UpdateRow>(conn, &source)?,
                    ProvenanceRow::NAME => import::<ProvenanceRow>(conn, &source)?,
                    other_table => {
                        return Err(Failure::Store(other(format!(
                            "no importer for table {other_table}"
                        ))))
                    }
                };
                if copied != table.rows {
                    return Err(Failure::Store(invalid(format!(
                        "{}: {copied} rows were read but the manifest says {} (did the file \
                         change during the restore?)",
                        table.file, table.rows
                    ))));
                }
                counts.push((table.name.clone(), copied));
            }
            Ok(counts)
        })
        .map_err(StoreError::from)?;
    Ok(RestoreReport { row_counts })
}

/// First pass: reads the manifest and measures and parses every CSV, without judging the
/// whole yet.
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
            let (header, records) = measure_csv(&mut entry, table, &name, size)?;
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

/// Parses one record as a row of a known table, keeping only the verdict.
type RecordCheck = fn(Vec<crate::csv::Field>) -> Result<(), String>;

/// Reads a CSV entry through: its header's column names and its number of records, each
/// parsed as a row of `table` when the header has that table's columns (otherwise the
/// column check names the difference).
fn measure_csv(
    entry: &mut impl Read,
    table: &str,
    name: &str,
    size: u64,
) -> Result<(Vec<String>, u64), StoreError> {
    let mut reader = BufReader::new(entry);
    let header = read_header(&mut reader, name)?;
    let parse: Option<RecordCheck> = if header.columns == known_columns(table) {
        match table {
            UserRow::NAME => Some(|f| UserRow::parse(f).map(drop)),
            ParametersRow::NAME => Some(|f| ParametersRow::parse(f).map(drop)),
            ActionRow::NAME => Some(|f| ActionRow::parse(f).map(drop)),
            StudyRow::NAME => Some(|f| StudyRow::parse(f).map(drop)),
            UpdateRow::NAME => Some(|f| UpdateRow::parse(f).map(drop)),
            ProvenanceRow::NAME => Some(|f| ProvenanceRow::parse(f).map(drop)),
            _ => None,
        }
    } else {
        None
    };
    let mut csv = CsvReader::new(reader);
    let mut records = 0u64;
    while let Some(fields) = csv.next_record().map_err(|e| csv_error(name, records, e))? {
        records += 1;
        if let Some(parse) = parse {
            parse(fields).map_err(|e| invalid(format!("{name}, record {records}: {e}")))?;
        }
    }
    let read = header.bytes + csv.bytes;
    if read != size {
        return Err(invalid(format!(
            "{name} is truncated: {read} of {size} bytes present"
        )));
    }
    Ok((header.columns, records))
}

/// A CSV reading error, as a damaged backup when the data is malformed.
fn csv_error(name: &str, records: u64, e: io::Error) -> StoreError {
    if e.kind() == io::ErrorKind::InvalidData {
        invalid(format!("{name}, record {}: {e}", records + 1))
    } else {
        invalid(format!("cannot read {name}: {e}"))
    }
}

struct Header {
    columns: Vec<String>,
    bytes: u64,
}

/// Reads the header line. Column names are plain identifiers, which CSV leaves unquoted, so a
/// header is one line split at commas.
fn read_header(reader: &mut impl BufRead, name: &str) -> Result<Header, StoreError> {
    let mut line = Vec::new();
    reader
        .take(MAX_HEADER_BYTES)
        .read_until(b'\n', &mut line)
        .map_err(|e| invalid(format!("cannot read {name}: {e}")))?;
    if line.last() != Some(&b'\n') {
        return Err(invalid(format!("{name} has no header line")));
    }
    let text = std::str::from_utf8(&line)
        .map_err(|_| invalid(format!("{name}: the header is not UTF-8")))?;
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
    conn: &mut SqliteConnection,
    manifest: &Manifest,
    tables: &[(&ManifestTable, CsvEntry)],
) -> Result<(), StoreError> {
    let applied = applied_migrations(conn).map_err(from_diesel)?;
    if applied != manifest.migrations {
        return Err(invalid(format!(
            "the backup was taken from a database with the migrations {:?}, but this database \
             has {applied:?}; bring the database to the backup's schema version (or use a \
             matching build) before restoring",
            manifest.migrations
        )));
    }
    for (table, _) in tables {
        let live = live_columns(conn, &table.name).map_err(from_diesel)?;
        if live != table.columns {
            return Err(invalid(format!(
                "table {} has the columns {live:?} but the backup has {:?}",
                table.name, table.columns
            )));
        }
        let known = known_columns(&table.name);
        if known != live {
            return Err(other(format!(
                "table {} has the columns {live:?} but this build knows {known:?}; is the \
                 build older or newer than the database schema?",
                table.name
            )));
        }
    }
    Ok(())
}

/// One CSV of the archive, to be read into its table.
struct CsvSource<'a> {
    file: &'a Path,
    entry: &'a CsvEntry,
    table: &'a str,
}

/// Inserts every record of `source` as a row of `T`, after checking its header again (the file
/// could have changed since the first pass); returns the rows inserted.
fn import<T: TableRow>(
    conn: &mut SqliteConnection,
    source: &CsvSource<'_>,
) -> Result<u64, Failure> {
    let name = format!("{}.csv", source.table);
    let changed = |what: &str| {
        Failure::Store(invalid(format!(
            "{name} changed during the restore ({what})"
        )))
    };
    let unreadable = |e: io::Error| Failure::Store(invalid(format!("cannot read {name}: {e}")));
    let mut file = File::open(source.file).map_err(unreadable)?;
    file.seek(SeekFrom::Start(source.entry.offset))
        .map_err(unreadable)?;
    let mut reader = BufReader::new(file.take(source.entry.size));
    let header = read_header(&mut reader, &name).map_err(Failure::Store)?;
    if header.columns != source.entry.header {
        return Err(changed("its header differs"));
    }
    let mut csv = CsvReader::new(reader);
    let mut rows = 0u64;
    while let Some(fields) = csv
        .next_record()
        .map_err(|e| Failure::Store(csv_error(&name, rows, e)))?
    {
        rows += 1;
        let row = T::parse(fields)
            .map_err(|e| Failure::Store(invalid(format!("{name}, record {rows}: {e}"))))?;
        row.insert(conn)?;
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_is_measured_by_records_not_lines() {
        let csv = b"a,b\n1,\"two\nlines\"\n2,x\n";
        let (header, records) = measure_csv(&mut &csv[..], "t", "t.csv", csv.len() as u64).unwrap();
        assert_eq!(header, vec!["a", "b"]);
        assert_eq!(records, 2);
    }

    #[test]
    fn short_headless_or_unparsable_csv_is_invalid() {
        let csv = b"a,b\n1,2\n";
        let short = measure_csv(&mut &csv[..], "t", "t.csv", 100);
        assert!(
            matches!(short, Err(StoreError::InvalidBackup(_))),
            "{short:?}"
        );
        let headless = measure_csv(&mut &b""[..], "t", "t.csv", 0);
        assert!(matches!(headless, Err(StoreError::InvalidBackup(_))));
        let users = b"id,user_id,created_at\n1,alice,not a time\n";
        let bad = measure_csv(&mut &users[..], "users", "users.csv", users.len() as u64);
        match bad {
            Err(StoreError::InvalidBackup(reason)) => {
                assert!(reason.contains("users.csv, record 1"), "{reason}")
            }
            other => panic!("expected InvalidBackup, got {other:?}"),
        }
    }
}
