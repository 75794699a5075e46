//! Restore: puts a backup written by [`crate::backup`] back, every table and every row, and
//! sets the identity sequences so new rows continue after the restored ones.
//!
//! The file is checked whole before the database is touched, in a first pass over the tar that
//! reads the manifest and, for every CSV, its header, byte size and record count (quoted fields
//! may hold newlines, so records are counted outside quotes). Only then, in one transaction,
//! are all tables truncated and each CSV streamed from its place in the tar into `COPY FROM`,
//! in foreign-key order. A file that changed between the passes is caught by the header and the
//! row count `COPY` reports, and rolls the transaction back. Nothing is held in memory or
//! written to disk beyond a read buffer. The reading and file-level checks live in
//! `justin-backup`, shared with the SQLite adapter; this module adds the schema checks and COPY.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyHeader, CopyTarget};
use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use justin_backup::read::{measure_csv, verify, CheckedBackup, CheckedTable};
use justin_core::{RestoreReport, StoreError};

use crate::backup::{applied_migrations, from_format, table_columns, Failure};
use crate::error::other;
use crate::pg::TABLES;
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance, users,
};
use crate::setup::quote_identifier;

fn invalid(reason: impl Into<String>) -> StoreError {
    StoreError::InvalidBackup(reason.into())
}

/// Reads `file` and checks it whole against its manifest and this schema's tables.
fn verify_file(file: &Path) -> Result<CheckedBackup, StoreError> {
    verify(file, &TABLES, &mut measure_csv).map_err(from_format)
}

/// Checks `file` as a restore would, changing nothing; see
/// [`justin_core::Store::check_backup`].
pub(crate) fn check(conn: &mut PgConnection, file: &Path) -> Result<RestoreReport, StoreError> {
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
pub(crate) fn restore(conn: &mut PgConnection, file: &Path) -> Result<RestoreReport, StoreError> {
    let backup = verify_file(file)?;
    check_database(conn, &backup)?;

    let row_counts = conn
        .transaction::<_, Failure, _>(|conn| {
            conn.batch_execute(&format!(
                "TRUNCATE {} RESTART IDENTITY CASCADE",
                TABLES.join(", ")
            ))?;
            let mut counts = Vec::with_capacity(IMPORTS.len());
            for ((name, import), checked) in IMPORTS.iter().zip(&backup.tables) {
                debug_assert_eq!(name, &checked.table.name);
                let copied = import(conn, &CsvSource { file, checked })?;
                let table = &checked.table;
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

/// Checks that the database has the schema the backup was taken from.
fn check_database(conn: &mut PgConnection, backup: &CheckedBackup) -> Result<(), StoreError> {
    let applied = applied_migrations(conn).map_err(StoreError::from)?;
    if applied != backup.migrations {
        return Err(invalid(format!(
            "the backup was taken from a database with the migrations {:?}, but this database \
             has {applied:?}; bring the database to the backup's schema version (or use a \
             matching build) before restoring",
            backup.migrations
        )));
    }
    for ((name, _), CheckedTable { table, .. }) in IMPORTS.iter().zip(&backup.tables) {
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
    checked: &'a CheckedTable,
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
    let file_name = &source.checked.table.file;
    let unreadable =
        |e: io::Error| Failure::Store(invalid(format!("cannot read {file_name}: {e}")));
    let reader = source
        .checked
        .reopen(source.file)
        .map_err(|e| Failure::Store(from_format(e)))?;
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
}
