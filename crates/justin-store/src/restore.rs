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
//!
//! Backups taken before the newest migrations are restored too, so the backups of a study taken
//! before an upgrade stay usable after it:
//!
//! * a backup that lacks only migrations that left every table's columns as they were (2025-04-01,
//!   exact numbers, changed the JSON columns of client values from jsonb to json, and the text
//!   jsonb wrote is valid json; 2025-04-03 adds functions only) loads as it is;
//! * a backup taken before 2026-12-03 (the outcome window), 2025-05-01 (the life of a trial),
//!   2025-04-02 (timestamps as sent) or 2025-03-01 (decision types):
//!   inside the restore's transaction the emptied tables are taken back to the schema the backup
//!   was written with (the `down.sql` of every migration since, newest first), loaded, and
//!   migrated forward again (their `up.sql`), exactly as an upgrade migrates a live database: the
//!   fill-in of the new columns exists once, in the migrations. Tables a bridged migration
//!   created are not in such a backup (see `justin_backup::manifest::ADDED_TABLES`): they are
//!   created again, empty. PostgreSQL changes schemas transactionally, so a failure anywhere
//!   leaves the database as it was.
//!
//! A backup taken before 2026-12-04 (corrections) is bridged the same way: it has no
//! `study_data_corrections` (the table comes back empty) and `update_provenance` without
//! `last_correction_id` (NULL after the bridge: those updates read no correction).
//!
//! Backups from before earlier migrations are refused.

use std::cell::RefCell;
use std::io;
use std::path::Path;

use diesel::connection::SimpleConnection;
use diesel::pg::{CopyFormat, CopyHeader, CopyTarget};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_migrations::MigrationHarness;
use justin_backup::manifest::layout_migrations;
use justin_backup::read::{measure_csv, verify, CheckedBackup, CheckedTable};
use justin_core::tables::TABLES;
use justin_core::{RestoreReport, StoreError};

use crate::backup::{applied_migrations, from_format, table_columns, Failure, USERS_BACKED_UP};
use crate::error::other;
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    study_data_corrections, update_provenance, users,
};
use crate::setup::{quote_identifier, MIGRATIONS, MIGRATION_LOCK_KEY};

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
    let Plan { layout, bridged } = check_database(conn, &backup)?;

    let row_counts = conn
        .transaction::<_, Failure, _>(|conn| {
            if !bridged.is_empty() {
                // No `justin migrate` may run while this one changes the schema.
                diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK_KEY)
                    .execute(conn)?;
            }
            // The dashboard's rollup is derived from the rows replaced here.
            conn.batch_execute(&format!(
                "TRUNCATE {}, {} RESTART IDENTITY CASCADE",
                TABLES.join(", "),
                crate::dashboard::TABLES.join(", ")
            ))?;
            revert(conn, &bridged)?;
            let mut counts = Vec::with_capacity(backup.tables.len());
            for checked in &backup.tables {
                let name = checked.table.name.as_str();
                let import = layout.import(name).map_err(Failure::Store)?;
                let copied = import(conn, &CsvSource { file, checked })?;
                let table = &checked.table;
                if copied != table.rows {
                    return Err(Failure::Store(invalid(format!(
                        "{}: {copied} rows were read but the manifest says {} (did the file \
                         change during the restore?)",
                        table.file, table.rows
                    ))));
                }
                counts.push((name.to_owned(), copied));
            }
            reapply(conn, &bridged)?;
            continue_sequences(conn)?;
            Ok(counts)
        })
        .map_err(StoreError::from)?;
    Ok(RestoreReport { row_counts })
}

/// The version of migration 2025-03-01-000000_decision_types, as Diesel records it.
const DECISION_TYPES: &str = "20250301000000";

/// The version of migration 2025-04-01-000000_exact_numbers, which changed column types only:
/// a backup taken before it loads into the columns it left.
const EXACT_NUMBERS: &str = "20250401000000";

/// The version of migration 2025-04-02-000000_sent_timestamps, as Diesel records it.
const SENT_TIMESTAMPS: &str = "20250402000000";

/// The version of migration 2025-05-01-000000_trial_life, as Diesel records it.
const TRIAL_LIFE: &str = "20250501000000";

/// The version of migration 2026-12-03-000000_outcome_window, as Diesel records it.
const OUTCOME_WINDOW: &str = "20261203000000";
/// The version of migration 2026-12-04-000000_corrections, as Diesel records it.
const CORRECTIONS: &str = "20261204000000";

/// The migrations a backup taken before them restores across, oldest first.
const BRIDGEABLE: [&str; 6] = [
    DECISION_TYPES,
    EXACT_NUMBERS,
    SENT_TIMESTAMPS,
    TRIAL_LIFE,
    OUTCOME_WINDOW,
    CORRECTIONS,
];

/// How a backup is restored.
#[derive(Debug)]
struct Plan {
    /// The columns its CSV files have.
    layout: Layout,
    /// The migrations the database has and the backup's lacks which are reverted on the emptied
    /// tables before loading and applied again after, oldest first.
    bridged: Vec<String>,
}

/// The schema a backup was written with, as far as restoring it is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// This database's: every table loads as it is.
    Current,
    /// The one just before migration 2026-12-03 (the outcome window), which appended columns
    /// to `update_provenance`, and so also before 2026-12-04.
    BeforeOutcomeWindow,
    /// The one just before migration 2025-05-01 (the life of a trial), which appended columns
    /// to `users`, `actions`, `study_data` and `update_provenance` and created
    /// `participant_events` and `erasures`.
    BeforeTrialLife,
    /// The one just before migration 2025-04-02 (timestamps as sent), which appended a column
    /// to `actions`, `study_data` and `model_update_requests`, and so also before 2025-05-01.
    BeforeSentTimestamps,
    /// The one just before migration 2025-03-01 (decision types), which appended columns to
    /// `actions`, `study_data` and `update_provenance`, and so also before 2025-04-02 and
    /// 2025-05-01.
    BeforeDecisionTypes,
    /// The one just before migration 2026-12-04 (corrections), which appended a column to
    /// `update_provenance` and created `study_data_corrections`.
    BeforeCorrections,
}

impl Layout {
    /// The layout of a backup that lacks the migrations `newer` (which changed the columns the
    /// oldest of them did and all after it).
    fn lacking(newer: &[String]) -> Self {
        let lacks = |migration: &str| newer.iter().any(|m| m == migration);
        if lacks(DECISION_TYPES) {
            Self::BeforeDecisionTypes
        } else if lacks(SENT_TIMESTAMPS) {
            Self::BeforeSentTimestamps
        } else if lacks(TRIAL_LIFE) {
            Self::BeforeTrialLife
        } else if lacks(OUTCOME_WINDOW) {
            Self::BeforeOutcomeWindow
        } else if lacks(CORRECTIONS) {
            Self::BeforeCorrections
        } else {
            Self::Current
        }
    }

    /// How each table of a backup in this layout is loaded, in [`TABLES`] order (the tables
    /// it holds).
    fn imports(self) -> &'static [(&'static str, Importer)] {
        match self {
            Self::Current => &IMPORTS,
            Self::BeforeOutcomeWindow => &IMPORTS_BEFORE_OUTCOME_WINDOW,
            Self::BeforeTrialLife => &IMPORTS_BEFORE_TRIAL_LIFE,
            Self::BeforeSentTimestamps => &IMPORTS_BEFORE_SENT_TIMESTAMPS,
            Self::BeforeDecisionTypes => &IMPORTS_BEFORE_DECISION_TYPES,
            Self::BeforeCorrections => &IMPORTS_BEFORE_CORRECTIONS,
        }
    }

    /// How `table` of a backup in this layout is loaded.
    fn import(self, table: &str) -> Result<Importer, StoreError> {
        self.imports()
            .iter()
            .find(|(name, _)| *name == table)
            .map(|(_, import)| *import)
            .ok_or_else(|| invalid(format!("a backup of its migrations has no table {table}")))
    }

    /// The columns a backup in this layout has for `table`, in order.
    fn columns(self, table: &str) -> Vec<&'static str> {
        match (self, table) {
            (
                Self::BeforeTrialLife | Self::BeforeSentTimestamps | Self::BeforeDecisionTypes,
                "users",
            ) => column_names(USERS_BEFORE_TRIAL_LIFE),
            (Self::BeforeTrialLife, "actions") => column_names(ACTIONS_BEFORE_TRIAL_LIFE),
            (Self::BeforeTrialLife, "study_data") => column_names(STUDY_DATA_BEFORE_TRIAL_LIFE),
            (Self::BeforeTrialLife | Self::BeforeSentTimestamps, "update_provenance") => {
                column_names(UPDATE_PROVENANCE_BEFORE_TRIAL_LIFE)
            }
            (Self::BeforeDecisionTypes, "actions") => column_names(ACTIONS_BEFORE_DECISION_TYPES),
            (Self::BeforeDecisionTypes, "study_data") => {
                column_names(STUDY_DATA_BEFORE_DECISION_TYPES)
            }
            (Self::BeforeDecisionTypes, "update_provenance") => {
                column_names(UPDATE_PROVENANCE_BEFORE_DECISION_TYPES)
            }
            (Self::BeforeOutcomeWindow, "update_provenance") => {
                column_names(UPDATE_PROVENANCE_BEFORE_OUTCOME_WINDOW)
            }
            (Self::BeforeSentTimestamps, "actions") => column_names(ACTIONS_BEFORE_SENT_TIMESTAMPS),
            (Self::BeforeSentTimestamps, "study_data") => {
                column_names(STUDY_DATA_BEFORE_SENT_TIMESTAMPS)
            }
            (Self::BeforeSentTimestamps | Self::BeforeDecisionTypes, "model_update_requests") => {
                column_names(UPDATE_REQUESTS_BEFORE_SENT_TIMESTAMPS)
            }
            (Self::BeforeCorrections, "update_provenance") => {
                column_names(UPDATE_PROVENANCE_BEFORE_CORRECTIONS)
            }
            _ => import_columns(table),
        }
    }
}

/// Checks that the database has the schema the backup was taken from, or the schema later
/// migrations that a restore bridges made of it, and says how to load it.
fn check_database(conn: &mut PgConnection, backup: &CheckedBackup) -> Result<Plan, StoreError> {
    let applied = applied_migrations(conn).map_err(StoreError::from)?;
    // Migrations that change no table are left out on both sides: PostgreSQL has one that
    // SQLite never has, wherever it falls among the others.
    let newer = layout_migrations(&applied)
        .strip_prefix(layout_migrations(&backup.migrations).as_slice())
        .filter(|newer| newer.iter().all(|m| BRIDGEABLE.contains(&m.as_str())))
        .map(<[String]>::to_vec)
        .ok_or_else(|| {
            invalid(format!(
                "the backup was taken from a database with the migrations {:?}, but this \
                 database has {applied:?}; bring the database to the backup's schema version \
                 (or use a matching build) before restoring",
                backup.migrations
            ))
        })?;
    let layout = Layout::lacking(&newer);
    let plan = Plan {
        layout,
        // Migrations that changed no column need no bridge. Otherwise every migration from the
        // oldest the backup lacks on is reverted and applied again, as migrations go back in
        // order.
        bridged: match newer.first() {
            Some(oldest) if layout != Layout::Current => applied
                .iter()
                .position(|m| m == oldest)
                .map(|at| applied[at..].to_vec())
                .unwrap_or_default(),
            _ => Vec::new(),
        },
    };
    for CheckedTable { table, .. } in &backup.tables {
        let name = table.name.as_str();
        let expected = layout.columns(name);
        if expected != table.columns {
            return Err(invalid(format!(
                "table {name} has the columns {expected:?} in the schema of the backup's \
                 migrations, but the backup has {:?}",
                table.columns
            )));
        }
    }
    for name in TABLES {
        // COPY lists the columns this build knows; they must be the live ones too, or the
        // restore would fail half-way (or leave a column at its default).
        let live = table_columns(conn, name).map_err(StoreError::from)?;
        let known = import_columns(name);
        if known != live {
            return Err(other(format!(
                "table {name} has the columns {live:?} but this build knows {known:?}; is the \
                 build older or newer than the database schema?"
            )));
        }
    }
    Ok(plan)
}

/// Takes the emptied tables back to the schema before the `bridged` migrations with their
/// `down.sql`, newest first, in the caller's transaction.
fn revert(conn: &mut PgConnection, bridged: &[String]) -> Result<(), Failure> {
    for expected in bridged.iter().rev() {
        let reverted = conn
            .revert_last_migration(MIGRATIONS)
            .map_err(|e| Failure::Store(other(format!("cannot revert {expected}: {e}"))))?;
        if reverted.to_string() != *expected {
            return Err(Failure::Store(other(format!(
                "reverted migration {reverted} instead of {expected}"
            ))));
        }
    }
    Ok(())
}

/// Applies the `bridged` migrations again to the loaded rows, in the caller's transaction.
fn reapply(conn: &mut PgConnection, bridged: &[String]) -> Result<(), Failure> {
    if bridged.is_empty() {
        return Ok(());
    }
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| Failure::Store(other(format!("cannot apply {bridged:?}: {e}"))))?;
    let applied: Vec<String> = applied.iter().map(ToString::to_string).collect();
    if applied != bridged {
        return Err(Failure::Store(other(format!(
            "applied the migrations {applied:?} instead of {bridged:?}"
        ))));
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
const IMPORTS: [(&str, Importer); 9] = [
    ("users", |c, s| {
        copy_columns_into(c, users::table, USERS_BACKED_UP, s)
    }),
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
    ("participant_events", |c, s| {
        copy_into(c, participant_events::table, s)
    }),
    ("erasures", |c, s| copy_into(c, erasures::table, s)),
    ("study_data_corrections", |c, s| {
        copy_into(c, study_data_corrections::table, s)
    }),
];

/// Declares the columns of `table` a layout of the past had, as a tuple COPY can list.
macro_rules! columns_of_the_past {
    ($(#[$doc:meta])* $name:ident = $table:ident ($($column:ident),+ $(,)?)) => {
        $(#[$doc])*
        const $name: ($($table::$column,)+) = ($($table::$column,)+);
    };
}

columns_of_the_past!(
    /// `users` before migration 2025-05-01 appended its columns.
    USERS_BEFORE_TRIAL_LIFE = users(id, user_id, created_at)
);

columns_of_the_past!(
    /// `actions` before migration 2025-05-01 appended its columns.
    ACTIONS_BEFORE_TRIAL_LIFE = actions(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        state,
        action,
        action_prob,
        parameter_version,
        rng_seed,
        decision_type,
        available,
        unavailable_reason,
        sent_timestamp,
    )
);

columns_of_the_past!(
    /// `study_data` before migration 2025-05-01 appended its column.
    STUDY_DATA_BEFORE_TRIAL_LIFE = study_data(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        action,
        action_prob,
        state,
        outcome,
        reward,
        action_logged,
        decision_type,
        available,
        sent_timestamp,
    )
);

columns_of_the_past!(
    /// `update_provenance` before migration 2025-05-01 appended its column.
    UPDATE_PROVENANCE_BEFORE_TRIAL_LIFE = update_provenance(
        update_id,
        parameter_version,
        service_version,
        algorithm,
        config_hash,
        rows_read,
        backup_file,
        created_at,
        last_study_data_id,
    )
);

columns_of_the_past!(
    /// `actions` before migration 2025-03-01 appended its columns.
    ACTIONS_BEFORE_DECISION_TYPES = actions(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        state,
        action,
        action_prob,
        parameter_version,
        rng_seed,
    )
);

columns_of_the_past!(
    /// `study_data` before migration 2025-03-01 appended its columns.
    STUDY_DATA_BEFORE_DECISION_TYPES = study_data(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        action,
        action_prob,
        state,
        outcome,
        reward,
        action_logged,
    )
);

columns_of_the_past!(
    /// `update_provenance` before migration 2025-03-01 appended its column.
    UPDATE_PROVENANCE_BEFORE_DECISION_TYPES = update_provenance(
        update_id,
        parameter_version,
        service_version,
        algorithm,
        config_hash,
        rows_read,
        backup_file,
        created_at,
    )
);

columns_of_the_past!(
    /// `actions` before migration 2025-04-02 appended `sent_timestamp`.
    ACTIONS_BEFORE_SENT_TIMESTAMPS = actions(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        state,
        action,
        action_prob,
        parameter_version,
        rng_seed,
        decision_type,
        available,
        unavailable_reason,
    )
);

columns_of_the_past!(
    /// `study_data` before migration 2025-04-02 appended `sent_timestamp`.
    STUDY_DATA_BEFORE_SENT_TIMESTAMPS = study_data(
        id,
        user_id,
        decision_idx,
        request_timestamp,
        created_at,
        context,
        action,
        action_prob,
        state,
        outcome,
        reward,
        action_logged,
        decision_type,
        available,
    )
);

columns_of_the_past!(
    /// `model_update_requests` before migration 2025-04-02 appended `sent_timestamp`.
    UPDATE_REQUESTS_BEFORE_SENT_TIMESTAMPS = model_update_requests(
        id,
        request_timestamp,
        created_at,
        callback_url,
        status,
        finished_at,
        error,
        parameter_version,
        attempts,
        started_at,
        callback_status,
        callback_attempts,
        callback_error,
        callback_finished_at,
    )
);

columns_of_the_past!(
    /// `update_provenance` before migration 2026-12-03 appended its columns.
    UPDATE_PROVENANCE_BEFORE_OUTCOME_WINDOW = update_provenance(
        update_id,
        parameter_version,
        service_version,
        algorithm,
        config_hash,
        rows_read,
        backup_file,
        created_at,
        last_study_data_id,
        included_policies,
    )
);

/// Like [`IMPORTS`], for a backup taken before migration 2026-12-03: `update_provenance`
/// without the columns it appended.
const IMPORTS_BEFORE_OUTCOME_WINDOW: [(&str, Importer); 8] = [
    IMPORTS[0],
    IMPORTS[1],
    IMPORTS[2],
    IMPORTS[3],
    IMPORTS[4],
    ("update_provenance", |c, s| {
        copy_columns_into(
            c,
            update_provenance::table,
            UPDATE_PROVENANCE_BEFORE_OUTCOME_WINDOW,
            s,
        )
    }),
    IMPORTS[6],
    IMPORTS[7],
];

/// Like [`IMPORTS`], for a backup taken before migration 2025-05-01: `users`, `actions`,
/// `study_data` and `update_provenance` without the columns it appended, and without the
/// tables it created.
const IMPORTS_BEFORE_TRIAL_LIFE: [(&str, Importer); 6] = [
    ("users", |c, s| {
        copy_columns_into(c, users::table, USERS_BEFORE_TRIAL_LIFE, s)
    }),
    IMPORTS[1],
    ("actions", |c, s| {
        copy_columns_into(c, actions::table, ACTIONS_BEFORE_TRIAL_LIFE, s)
    }),
    ("study_data", |c, s| {
        copy_columns_into(c, study_data::table, STUDY_DATA_BEFORE_TRIAL_LIFE, s)
    }),
    IMPORTS[4],
    ("update_provenance", |c, s| {
        copy_columns_into(
            c,
            update_provenance::table,
            UPDATE_PROVENANCE_BEFORE_TRIAL_LIFE,
            s,
        )
    }),
];

/// Like [`IMPORTS_BEFORE_TRIAL_LIFE`], for a backup taken before migration 2025-04-02:
/// `actions`, `study_data` and `model_update_requests` without the column it appended.
const IMPORTS_BEFORE_SENT_TIMESTAMPS: [(&str, Importer); 6] = [
    IMPORTS_BEFORE_TRIAL_LIFE[0],
    IMPORTS[1],
    ("actions", |c, s| {
        copy_columns_into(c, actions::table, ACTIONS_BEFORE_SENT_TIMESTAMPS, s)
    }),
    ("study_data", |c, s| {
        copy_columns_into(c, study_data::table, STUDY_DATA_BEFORE_SENT_TIMESTAMPS, s)
    }),
    ("model_update_requests", |c, s| {
        copy_columns_into(
            c,
            model_update_requests::table,
            UPDATE_REQUESTS_BEFORE_SENT_TIMESTAMPS,
            s,
        )
    }),
    IMPORTS_BEFORE_TRIAL_LIFE[5],
];

/// Like [`IMPORTS`], for a backup taken before migration 2025-03-01: `actions`, `study_data`
/// and `update_provenance` without the columns it appended, and `model_update_requests`
/// without the one 2025-04-02 appended.
const IMPORTS_BEFORE_DECISION_TYPES: [(&str, Importer); 6] = [
    IMPORTS_BEFORE_TRIAL_LIFE[0],
    IMPORTS[1],
    ("actions", |c, s| {
        copy_columns_into(c, actions::table, ACTIONS_BEFORE_DECISION_TYPES, s)
    }),
    ("study_data", |c, s| {
        copy_columns_into(c, study_data::table, STUDY_DATA_BEFORE_DECISION_TYPES, s)
    }),
    IMPORTS_BEFORE_SENT_TIMESTAMPS[4],
    ("update_provenance", |c, s| {
        copy_columns_into(
            c,
            update_provenance::table,
            UPDATE_PROVENANCE_BEFORE_DECISION_TYPES,
            s,
        )
    }),
];

columns_of_the_past!(
    /// `update_provenance` before migration 2026-12-04 appended `last_correction_id`.
    UPDATE_PROVENANCE_BEFORE_CORRECTIONS = update_provenance(
        update_id,
        parameter_version,
        service_version,
        algorithm,
        config_hash,
        rows_read,
        backup_file,
        created_at,
        last_study_data_id,
        included_policies,
        last_action_id,
        imputed_decided_by,
        default_reward,
        imputed_rows,
    )
);

/// Like [`IMPORTS`], for a backup taken before migration 2026-12-04: `update_provenance`
/// without the column it appended, and without the table it created.
const IMPORTS_BEFORE_CORRECTIONS: [(&str, Importer); 8] = [
    IMPORTS[0],
    IMPORTS[1],
    IMPORTS[2],
    IMPORTS[3],
    IMPORTS[4],
    ("update_provenance", |c, s| {
        copy_columns_into(
            c,
            update_provenance::table,
            UPDATE_PROVENANCE_BEFORE_CORRECTIONS,
            s,
        )
    }),
    IMPORTS[6],
    IMPORTS[7],
];

/// The columns this build's COPY lists for `table`, in order: those a backup holds.
fn import_columns(table: &str) -> Vec<&'static str> {
    match table {
        "users" => column_names(USERS_BACKED_UP),
        "model_parameters" => column_names(model_parameters::all_columns),
        "actions" => column_names(actions::all_columns),
        "study_data" => column_names(study_data::all_columns),
        "model_update_requests" => column_names(model_update_requests::all_columns),
        "update_provenance" => column_names(update_provenance::all_columns),
        "participant_events" => column_names(participant_events::all_columns),
        "erasures" => column_names(erasures::all_columns),
        "study_data_corrections" => column_names(study_data_corrections::all_columns),
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

column_names_for_tuples!(
    C1 C2 C3 C4 C5 C6 C7 C8 C9 C10 C11 C12 C13 C14 C15 C16 C17 C18 C19 C20 C21 C22 C23 C24
);

/// Why streaming a CSV into COPY stopped. Diesel's COPY needs an error type it can convert its
/// own errors into.
#[derive(Debug, thiserror::Error)]
enum CopyError {
    #[error(transparent)]
    Db(#[from] diesel::result::Error),
    #[error("reading the backup failed: {0}")]
    Io(#[from] io::Error),
}

/// Streams the CSV at `source` into every column of `table` with `COPY FROM`; see
/// [`copy_columns_into`].
fn copy_into<T>(conn: &mut PgConnection, table: T, source: &CsvSource<'_>) -> Result<u64, Failure>
where
    T: diesel::Table + CopyTarget<Table = T> + Copy,
{
    copy_columns_into(conn, table, table, source)
}

/// Streams the CSV at `source` into `columns` of `table` with `COPY FROM`, after checking its
/// header again (the file could have changed since the first pass).
fn copy_columns_into<T, C>(
    conn: &mut PgConnection,
    table: T,
    columns: C,
    source: &CsvSource<'_>,
) -> Result<u64, Failure>
where
    T: diesel::Table,
    C: CopyTarget<Table = T>,
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
        .from_raw_data(columns, |sink: &mut dyn io::Write| {
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

    const TRIAL_LIFE_USERS: &[&str] = &[
        "study_start",
        "study_start_sent",
        "study_end",
        "study_end_sent",
        "withdrawn_at",
        "withdrawal_reason",
        "erased_at",
    ];
    const TRIAL_LIFE_ACTIONS: &[&str] = &["policy", "fallback_reason", "decided_by", "in_study"];

    #[test]
    fn every_table_has_an_importer_in_foreign_key_order() {
        assert_eq!(IMPORTS.map(|(name, _)| name), TABLES);
        for name in TABLES {
            assert!(!import_columns(name).is_empty(), "{name}");
        }
        assert_eq!(
            import_columns("users")[..3],
            ["id", "user_id", "created_at"]
        );
        let before_trial_life = &TABLES[..6];
        assert_eq!(
            IMPORTS_BEFORE_TRIAL_LIFE.map(|(name, _)| name),
            before_trial_life
        );
        assert_eq!(
            IMPORTS_BEFORE_DECISION_TYPES.map(|(name, _)| name),
            before_trial_life
        );
        assert_eq!(
            IMPORTS_BEFORE_SENT_TIMESTAMPS.map(|(name, _)| name),
            before_trial_life
        );
        for name in ["participant_events", "erasures"] {
            assert!(!justin_backup::manifest::holds_table(
                &[DECISION_TYPES.to_owned(), SENT_TIMESTAMPS.to_owned()],
                name
            ));
            assert!(Layout::BeforeTrialLife.import(name).is_err());
        }
    }

    /// Each layout of the past lacks exactly the columns the migrations since appended (the
    /// tables they created are not in its backups at all).
    fn check_appended(layout: Layout, appended: &[(&str, &[&str])]) {
        for name in layout.imports().iter().map(|(name, _)| *name) {
            let mut expected = import_columns(name);
            let lacking: Vec<&str> = appended
                .iter()
                .filter(|(table, _)| *table == name)
                .flat_map(|(_, columns)| columns.iter().copied())
                .collect();
            let kept = expected.len() - lacking.len();
            assert_eq!(expected[kept..], lacking[..], "{name}");
            expected.truncate(kept);
            assert_eq!(layout.columns(name), expected, "{layout:?} {name}");
        }
    }

    /// The columns migration 2026-12-03 appended to `update_provenance`.
    const OUTCOME_WINDOW_PROVENANCE: &[&str] = &[
        "last_action_id",
        "imputed_decided_by",
        "default_reward",
        "imputed_rows",
    ];

    #[test]
    fn the_layout_before_the_outcome_window_lacks_only_its_provenance_columns() {
        check_appended(
            Layout::BeforeOutcomeWindow,
            &[
                ("update_provenance", OUTCOME_WINDOW_PROVENANCE),
                ("update_provenance", &["last_correction_id"]),
            ],
        );
        let lacking = |newer: &[&str]| {
            Layout::lacking(&newer.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(lacking(&[OUTCOME_WINDOW]), Layout::BeforeOutcomeWindow);
        assert_eq!(
            lacking(&[TRIAL_LIFE, OUTCOME_WINDOW]),
            Layout::BeforeTrialLife
        );
    }

    #[test]
    fn the_layout_before_trial_life_lacks_only_what_it_added() {
        check_appended(
            Layout::BeforeTrialLife,
            &[
                ("users", TRIAL_LIFE_USERS),
                ("actions", TRIAL_LIFE_ACTIONS),
                ("study_data", &["policy"]),
                ("update_provenance", &["included_policies"]),
                ("update_provenance", OUTCOME_WINDOW_PROVENANCE),
                ("update_provenance", &["last_correction_id"]),
            ],
        );
        let lacking = |newer: &[&str]| {
            Layout::lacking(&newer.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(lacking(&[TRIAL_LIFE]), Layout::BeforeTrialLife);
        assert_eq!(
            lacking(&["20250403000000", TRIAL_LIFE]),
            Layout::BeforeTrialLife
        );
    }

    #[test]
    fn the_layout_before_sent_timestamps_lacks_only_the_columns_appended_since() {
        check_appended(
            Layout::BeforeSentTimestamps,
            &[
                ("users", TRIAL_LIFE_USERS),
                ("actions", &["sent_timestamp"]),
                ("actions", TRIAL_LIFE_ACTIONS),
                ("study_data", &["sent_timestamp", "policy"]),
                ("model_update_requests", &["sent_timestamp"]),
                ("update_provenance", &["included_policies"]),
                ("update_provenance", OUTCOME_WINDOW_PROVENANCE),
                ("update_provenance", &["last_correction_id"]),
            ],
        );
        let lacking = |newer: &[&str]| {
            Layout::lacking(&newer.iter().map(|m| (*m).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            lacking(&[SENT_TIMESTAMPS, TRIAL_LIFE]),
            Layout::BeforeSentTimestamps
        );
        assert_eq!(
            lacking(&[EXACT_NUMBERS, SENT_TIMESTAMPS, TRIAL_LIFE]),
            Layout::BeforeSentTimestamps
        );
        assert_eq!(lacking(&[EXACT_NUMBERS]), Layout::Current);
        assert_eq!(lacking(&[]), Layout::Current);
    }

    #[test]
    fn the_layout_before_decision_types_lacks_the_columns_appended_since() {
        check_appended(
            Layout::BeforeDecisionTypes,
            &[
                ("users", TRIAL_LIFE_USERS),
                (
                    "actions",
                    &[
                        "decision_type",
                        "available",
                        "unavailable_reason",
                        "sent_timestamp",
                    ],
                ),
                ("actions", TRIAL_LIFE_ACTIONS),
                (
                    "study_data",
                    &["decision_type", "available", "sent_timestamp", "policy"],
                ),
                ("model_update_requests", &["sent_timestamp"]),
                (
                    "update_provenance",
                    &["last_study_data_id", "included_policies"],
                ),
                ("update_provenance", OUTCOME_WINDOW_PROVENANCE),
                ("update_provenance", &["last_correction_id"]),
            ],
        );
        check_appended(
            Layout::BeforeCorrections,
            &[("update_provenance", &["last_correction_id"])],
        );
        assert_eq!(
            Layout::lacking(&[CORRECTIONS.to_owned()]),
            Layout::BeforeCorrections
        );
        assert_eq!(
            Layout::lacking(&BRIDGEABLE.map(str::to_owned)),
            Layout::BeforeDecisionTypes
        );
        check_appended(Layout::Current, &[]);
    }
}
