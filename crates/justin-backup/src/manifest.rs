//! `manifest.json`: what a backup holds (format version, producer, time, database, applied
//! migrations, and per table its file, row count and columns).
//!
//! The JSON is written through [`serde_json::Value`], as it always was, so the keys come out in
//! the same order and existing backups compare byte for byte. Reading requires only what a
//! restore uses (`format_version`, `migrations`, `tables`); the other keys are informational.

use std::io::Read;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::{invalid, FormatError};

/// Version of the archive layout, recorded in the manifest; this build reads this version only.
pub const FORMAT_VERSION: u32 = 1;

/// The manifest's name in the archive.
pub const MANIFEST: &str = "manifest.json";

/// Largest manifest accepted; a real one is a few kilobytes.
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

/// The contents of `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Version of the archive layout, [`FORMAT_VERSION`] when written by this build.
    pub format_version: u32,
    /// The adapter and version that wrote the backup, e.g. `justin-store 0.1.0`.
    #[serde(default)]
    pub producer: String,
    /// When the snapshot was taken, RFC 3339 in UTC with microseconds.
    #[serde(default)]
    pub taken_at: String,
    /// The database the backup was taken from (a name or a URL).
    #[serde(default)]
    pub database: String,
    /// Versions of the migrations applied to that database, oldest first.
    pub migrations: Vec<String>,
    /// How the CSV files are written.
    #[serde(default)]
    pub csv: CsvDialect,
    /// Every table, in the order the adapter exported them.
    pub tables: Vec<ManifestTable>,
}

/// The manifest's description of the CSV files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsvDialect {
    /// Whether each file starts with a header line (always).
    pub header: bool,
    /// How NULL is written (an empty unquoted field).
    pub null: String,
    /// The dialect's name.
    pub dialect: String,
}

impl Default for CsvDialect {
    fn default() -> Self {
        Self {
            header: true,
            null: String::new(),
            dialect: "PostgreSQL COPY, FORMAT csv".to_owned(),
        }
    }
}

/// One table of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestTable {
    /// The table's name.
    pub name: String,
    /// Its CSV's name in the archive, `<name>.csv`.
    pub file: String,
    /// Its number of rows.
    pub rows: u64,
    /// Its columns, in order, as the CSV header lists them.
    pub columns: Vec<String>,
}

impl ManifestTable {
    /// A table as this build writes it: its file is `<name>.csv`.
    pub fn new(name: &str, rows: u64, columns: Vec<String>) -> Self {
        Self {
            name: name.to_owned(),
            file: csv_file_name(name),
            rows,
            columns,
        }
    }
}

/// The archive entry holding `table`.
pub fn csv_file_name(table: &str) -> String {
    format!("{table}.csv")
}

impl Manifest {
    /// The manifest of a backup this build writes.
    pub fn new(
        producer: &str,
        taken_at: DateTime<Utc>,
        database: &str,
        migrations: Vec<String>,
        tables: Vec<ManifestTable>,
    ) -> Self {
        Self {
            format_version: FORMAT_VERSION,
            producer: producer.to_owned(),
            taken_at: taken_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            database: database.to_owned(),
            migrations,
            csv: CsvDialect::default(),
            tables,
        }
    }

    /// The manifest as pretty-printed JSON.
    ///
    /// # Errors
    /// [`FormatError::Write`] if serialization fails (it does not for these types).
    pub fn to_json(&self) -> Result<Vec<u8>, FormatError> {
        // Through a Value, like the json! the adapters used before: same key order.
        serde_json::to_value(self)
            .and_then(|value| serde_json::to_vec_pretty(&value))
            .map_err(|e| FormatError::Write(e.to_string()))
    }

    /// Reads a manifest, refusing a layout other than [`FORMAT_VERSION`] by name.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] when the text is unreadable, too large, not JSON, of another
    /// format version, or lacks what a restore needs.
    pub fn read(entry: &mut impl Read) -> Result<Self, FormatError> {
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
            .map_err(|e| invalid(format!("{MANIFEST} is not JSON ({})", position(&e))))?;
        // Checked before the rest, so a newer layout is named as such rather than as a parse
        // error.
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
        serde_json::from_value(value).map_err(|_| {
            invalid(format!(
                "{MANIFEST} is incomplete: it needs migrations (a list of strings) and tables \
                 (each with name, file, rows and columns)"
            ))
        })
    }
}

/// Where a JSON error is, without serde_json's message, which can quote the text it read.
fn position(e: &serde_json::Error) -> String {
    format!("line {} column {}", e.line(), e.column())
}

/// Migrations that change no table a backup holds (2025-04-03 adds PostgreSQL functions only,
/// and exists only for PostgreSQL; 2026-12-01 creates the watchdog's tables, which hold the
/// running service's state rather than the study's and are not backed up; 2026-12-02 adds the
/// dashboard's rollup, derived data that backups leave out and restores empty; 2026-12-05 adds
/// the participants' counts, [`DERIVED_COLUMNS`]; 2026-12-07 replaces the function that keeps
/// them, and exists only for PostgreSQL). Backups taken before and after one have the same
/// layout, on either adapter, so restores compare the migrations of a backup and of a database
/// without them.
pub const SAME_LAYOUT_MIGRATIONS: [&str; 5] = [
    "20250403000000",
    "20261201000000",
    "20261202000000",
    "20261205000000",
    "20261207000000",
];

/// Columns the database derives from other tables, as (table, column): each participant's
/// number of decisions and uploads, which migration 2026-12-05's triggers keep on their `users`
/// row. Backups leave them out; a restore loads the rows they count, and the triggers count
/// them again.
pub const DERIVED_COLUMNS: [(&str, &str); 2] = [("users", "decisions"), ("users", "uploads")];

/// Whether `table.column` is one of the [`DERIVED_COLUMNS`].
#[must_use]
pub fn is_derived(table: &str, column: &str) -> bool {
    DERIVED_COLUMNS.contains(&(table, column))
}

/// Tables a migration created, with its version: a backup taken before the migration does not
/// hold them (2025-05-01, the life of a trial, created `participant_events` and `erasures`;
/// 2026-12-04, corrections, `study_data_corrections`).
pub const ADDED_TABLES: [(&str, &str); 3] = [
    ("participant_events", "20250501000000"),
    ("erasures", "20250501000000"),
    ("study_data_corrections", "20261204000000"),
];

/// Whether a backup taken from a database with `migrations` holds `table`: every table does,
/// except one of [`ADDED_TABLES`] whose migration it lacks.
#[must_use]
pub fn holds_table(migrations: &[String], table: &str) -> bool {
    ADDED_TABLES
        .iter()
        .filter(|(added, _)| *added == table)
        .all(|(_, migration)| migrations.iter().any(|m| m == migration))
}

/// `migrations` without the [`SAME_LAYOUT_MIGRATIONS`]: what decides a backup's layout.
#[must_use]
pub fn layout_migrations(migrations: &[String]) -> Vec<String> {
    migrations
        .iter()
        .filter(|m| !SAME_LAYOUT_MIGRATIONS.contains(&m.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sample() -> Manifest {
        let at = Utc.with_ymd_and_hms(2025, 3, 4, 5, 6, 7).unwrap();
        Manifest::new(
            "justin-store 0.1.0",
            at,
            "justin",
            vec!["20250101000000".into()],
            vec![ManifestTable::new(
                "users",
                2,
                vec!["id".into(), "user_id".into()],
            )],
        )
    }

    #[test]
    fn the_json_is_the_layout_existing_backups_have() {
        let json = String::from_utf8(sample().to_json().unwrap()).unwrap();
        let expected = serde_json::json!({
            "format_version": 1,
            "producer": "justin-store 0.1.0",
            "taken_at": "2025-03-04T05:06:07.000000Z",
            "database": "justin",
            "migrations": ["20250101000000"],
            "csv": { "header": true, "null": "", "dialect": "PostgreSQL COPY, FORMAT csv" },
            "tables": [{ "name": "users", "file": "users.csv", "rows": 2, "columns": ["id", "user_id"] }],
        });
        assert_eq!(json, serde_json::to_string_pretty(&expected).unwrap());
    }

    #[test]
    fn a_manifest_reads_back_and_needs_only_what_restore_uses() {
        let json = sample().to_json().unwrap();
        let read = Manifest::read(&mut json.as_slice()).unwrap();
        assert_eq!(read.tables, sample().tables);
        let minimal = br#"{"format_version":1,"migrations":[],"tables":[]}"#;
        assert!(Manifest::read(&mut &minimal[..]).is_ok());
    }

    #[test]
    fn other_versions_and_incomplete_or_broken_manifests_are_refused() {
        let cases: [(&[u8], &str); 4] = [
            (
                br#"{"format_version":2}"#,
                "format_version 2 is not supported",
            ),
            (br#"{"tables":[]}"#, "has no format_version"),
            (br#"{"format_version":1,"tables":[]}"#, "is incomplete"),
            (b"not json", "is not JSON"),
        ];
        for (text, reason) in cases {
            match Manifest::read(&mut &text[..]) {
                Err(FormatError::Invalid(r)) => assert!(r.contains(reason), "{r}"),
                other => panic!("expected {reason:?}, got {other:?}"),
            }
        }
    }
}
