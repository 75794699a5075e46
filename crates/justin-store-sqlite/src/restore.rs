//! Restore: puts a backup back, every table and every row, whether this adapter or
//! `justin-store` (PostgreSQL) wrote it; ids continue after the restored ones.
//!
//! As in `justin-store`, the file is checked whole before the database is touched: a first
//! pass over the tar reads the manifest and, for every CSV, its header, byte size and records,
//! and here also parses every record into its row (so a value SQLite could not take is found
//! before anything changes). Only then, in one `BEGIN IMMEDIATE` transaction, are all tables
//! emptied and each CSV read again from its place in the tar and inserted, in foreign-key
//! order. A file that changed between the passes fails the second pass and rolls everything
//! back. Nothing is held in memory or written to disk beyond a read buffer and one row. The
//! reading and file-level checks live in `justin-backup`, shared with `justin-store`; this
//! module adds parsing rows, the schema checks and the inserts.

use std::io::{self, BufReader, Read};
use std::path::Path;

use diesel::prelude::*;
use justin_backup::csv::{read_header, CsvReader, Field};
use justin_backup::manifest::layout_migrations;
use justin_backup::read::{check_size, header_error, verify, CheckedBackup, CheckedTable};
use justin_core::tables::TABLES;
use justin_core::{RestoreReport, StoreError};

use crate::backup::{from_format, Failure};
use crate::corrections::CorrectionRow;
use crate::error::{from_diesel, other};
use crate::models::{
    ActionRow, ErasureRow, EventRow, ParametersRow, ProvenanceRow, StudyRow, UpdateRow, UserRow,
};
use crate::store::delete_all;
use crate::tables::{applied_migrations, known_columns, live_columns, Fill, TableRow};

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidBackup(reason.into())
}

/// Reads `file` and checks it whole against its manifest and this schema's tables (less those
/// created by a migration the backup predates), parsing every record on the way.
fn verify_file(file: &Path) -> Result<CheckedBackup, StoreError> {
    verify(file, &TABLES, &mut |entry, table, size| {
        measure_csv(entry, table, &format!("{table}.csv"), size).map_err(to_format)
    })
    .map_err(from_format)
}

/// The port's invalid-backup error back as the format's, for [`verify`]'s measure.
fn to_format(e: StoreError) -> justin_backup::FormatError {
    match e {
        StoreError::InvalidBackup(reason) => justin_backup::FormatError::Invalid(reason),
        other => justin_backup::FormatError::Invalid(other.to_string()),
    }
}

/// Checks `file` as a restore would, changing nothing; see
/// [`justin_core::Store::check_backup`].
pub(crate) fn check(conn: &mut SqliteConnection, file: &Path) -> Result<RestoreReport, StoreError> {
    let backup = verify_file(file)?;
    check_database(conn, &backup)?;
    Ok(RestoreReport {
        row_counts: backup
            .tables
            .iter()
            .map(|t| (t.table.name.clone(), t.table.rows))
            .collect(),
    })
}

/// Restores `file` through `conn`; see [`justin_core::Store::restore`].
pub(crate) fn restore(
    conn: &mut SqliteConnection,
    file: &Path,
) -> Result<RestoreReport, StoreError> {
    let backup = verify_file(file)?;
    let layout = check_database(conn, &backup)?;

    let row_counts = conn
        .immediate_transaction::<_, Failure, _>(|conn| {
            delete_all(conn)?;
            let mut counts = Vec::with_capacity(backup.tables.len());
            for checked in &backup.tables {
                let source = CsvSource {
                    file,
                    checked,
                    fill: layout,
                };
                let table = &checked.table;
                let copied = match table.name.as_str() {
                    UserRow::NAME => import::<UserRow>(conn, &source)?,
                    ParametersRow::NAME => import::<ParametersRow>(conn, &source)?,
                    ActionRow::NAME => import::<ActionRow>(conn, &source)?,
                    StudyRow::NAME => import::<StudyRow>(conn, &source)?,
                    UpdateRow::NAME => import::<UpdateRow>(conn, &source)?,
                    ProvenanceRow::NAME => import::<ProvenanceRow>(conn, &source)?,
                    EventRow::NAME => import::<EventRow>(conn, &source)?,
                    ErasureRow::NAME => import::<ErasureRow>(conn, &source)?,
                    CorrectionRow::NAME => import::<CorrectionRow>(conn, &source)?,
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

/// Parses one record as a row of a known table, keeping only the verdict.
type RecordCheck = fn(Vec<Field>) -> Result<(), String>;

/// The record check of `table`, if it is a known one.
fn record_check(table: &str) -> Option<RecordCheck> {
    match table {
        UserRow::NAME => Some(|f| UserRow::parse(f).map(drop)),
        ParametersRow::NAME => Some(|f| ParametersRow::parse(f).map(drop)),
        ActionRow::NAME => Some(|f| ActionRow::parse(f).map(drop)),
        StudyRow::NAME => Some(|f| StudyRow::parse(f).map(drop)),
        UpdateRow::NAME => Some(|f| UpdateRow::parse(f).map(drop)),
        ProvenanceRow::NAME => Some(|f| ProvenanceRow::parse(f).map(drop)),
        EventRow::NAME => Some(|f| EventRow::parse(f).map(drop)),
        ErasureRow::NAME => Some(|f| ErasureRow::parse(f).map(drop)),
        CorrectionRow::NAME => Some(|f| CorrectionRow::parse(f).map(drop)),
        _ => None,
    }
}

/// Reads a CSV entry through: its header's column names and its number of records, each
/// parsed as a row of `table` when the header has that table's columns (otherwise the
/// column check names the difference).
fn measure_csv(
    entry: &mut dyn Read,
    table: &str,
    name: &str,
    size: u64,
) -> Result<(Vec<String>, u64), StoreError> {
    let mut reader = BufReader::new(entry);
    let header = read_header(&mut reader, name).map_err(|e| from_format(header_error(name, e)))?;
    // Records written before migrations 2025-04-02 or 2025-05-01 are checked as the restore
    // will insert them.
    let fill = Fill::for_header(table, &header.columns);
    let parse = fill.and_then(|_| record_check(table));
    let mut csv = CsvReader::new(reader);
    let mut records = 0u64;
    while let Some(fields) = csv.next_record().map_err(|e| csv_error(name, records, e))? {
        records += 1;
        if let Some(parse) = parse {
            let mut fields = fields;
            fill.unwrap_or_default().apply(table, &mut fields);
            parse(fields).map_err(|e| invalid(format!("{name}, record {records}: {e}")))?;
        }
    }
    check_size(name, header.bytes + csv.bytes, size).map_err(from_format)?;
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

/// The migration that keyed decisions by type, added availability and recorded what each
/// update read.
const DECISION_TYPES_MIGRATION: &str = "20250301000000";

/// The migration that made PostgreSQL keep JSON as text; it changed no table here.
const EXACT_NUMBERS_MIGRATION: &str = "20250401000000";

/// The migration that appended the timestamps as sent.
const SENT_TIMESTAMPS_MIGRATION: &str = "20250402000000";

/// The migration that added participants' windows, withdrawals and erasures, decisions'
/// policies, and the tables of histories and erasures.
const TRIAL_LIFE_MIGRATION: &str = "20250501000000";

/// The migration that recorded what each update learned with the default reward.
const OUTCOME_WINDOW_MIGRATION: &str = "20261203000000";
/// The migration that added corrections: their table, and the correction watermark of
/// `update_provenance`.
const CORRECTIONS_MIGRATION: &str = "20261204000000";

/// Checks that the database has the schema the backup was taken from, or the schema
/// migrations 2025-04-01, 2025-04-02, 2025-05-01 and 2026-12-03 made of it, and says how to complete its
/// records: as those migrations complete the rows they find (a table the backup predates
/// stays empty).
fn check_database(conn: &mut SqliteConnection, backup: &CheckedBackup) -> Result<Fill, StoreError> {
    let applied = applied_migrations(conn).map_err(from_diesel)?;
    let has_decision_types = |migrations: &[String]| {
        migrations
            .iter()
            .any(|m| m.as_str() == DECISION_TYPES_MIGRATION)
    };
    // Restoring it would need the columns the migration added filled in as the migration
    // fills them; the way that is certain to agree is the migration itself.
    if has_decision_types(&applied) && !has_decision_types(&backup.migrations) {
        return Err(invalid(format!(
            "the backup predates migration 2025-03-01 (decision types), which changed the \
             actions, study_data and update_provenance tables, so this version cannot restore \
             it; restore it into a new database with the JustIn version that wrote it (its \
             migrations are {:?}), then run `justin migrate` of this version on that database",
            backup.migrations
        )));
    }
    // Migrations since the backup's that a restore spans: 2025-04-01 changed nothing here (a
    // backup taken before it holds the same columns, with JSON text valid as it is), 2025-04-02
    // appended the timestamps as sent, 2025-05-01 the trial's life and 2026-12-03 what updates
    // imputed, which rows from before them get as the migrations fill them.
    // Migrations that change no table (PostgreSQL's own functions) are left out on both sides.
    let applied = layout_migrations(&applied);
    let newer = applied
        .strip_prefix(layout_migrations(&backup.migrations).as_slice())
        .filter(|newer| {
            newer.iter().all(|m| {
                m == EXACT_NUMBERS_MIGRATION
                    || m == SENT_TIMESTAMPS_MIGRATION
                    || m == TRIAL_LIFE_MIGRATION
                    || m == OUTCOME_WINDOW_MIGRATION
                    || m == CORRECTIONS_MIGRATION
            })
        })
        .ok_or_else(|| {
            invalid(format!(
                "the backup was taken from a database with the migrations {:?}, but this database \
                 has {applied:?}; bring the database to the backup's schema version (or use a \
                 matching build) before restoring",
                backup.migrations
            ))
        })?;
    let fill = Fill {
        sent_timestamp: newer.iter().any(|m| m == SENT_TIMESTAMPS_MIGRATION),
        trial_life: newer.iter().any(|m| m == TRIAL_LIFE_MIGRATION),
        outcome_window: newer.iter().any(|m| m == OUTCOME_WINDOW_MIGRATION),
        // Migrations apply in order: a backup from before an earlier one is from before this.
        corrections: newer.iter().any(|m| m == CORRECTIONS_MIGRATION),
    };
    for CheckedTable { table, .. } in &backup.tables {
        let live = live_columns(conn, &table.name).map_err(from_diesel)?;
        let expected: Vec<&str> = if fill == Fill::default() {
            live.iter().map(String::as_str).collect()
        } else {
            fill.columns(&table.name)
        };
        if expected != table.columns {
            return Err(invalid(format!(
                "table {} has the columns {expected:?} in the schema of the backup's \
                 migrations, but the backup has {:?}",
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
    Ok(fill)
}

/// One CSV of the archive, to be read into its table.
struct CsvSource<'a> {
    file: &'a Path,
    checked: &'a CheckedTable,
    /// What its records need appended, written before migrations that appended columns.
    fill: Fill,
}

/// Inserts every record of `source` as a row of `T`, after checking its header again (the file
/// could have changed since the first pass); returns the rows inserted.
fn import<T: TableRow>(
    conn: &mut SqliteConnection,
    source: &CsvSource<'_>,
) -> Result<u64, Failure> {
    let name = &source.checked.table.file;
    let reader = source
        .checked
        .reopen(source.file)
        .map_err(|e| Failure::Store(from_format(e)))?;
    let mut csv = CsvReader::new(reader);
    let mut rows = 0u64;
    while let Some(fields) = csv
        .next_record()
        .map_err(|e| Failure::Store(csv_error(name, rows, e)))?
    {
        rows += 1;
        let mut fields = fields;
        source.fill.apply(T::NAME, &mut fields);
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
