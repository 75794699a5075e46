//! Each study table as backups see it: its columns, a row as CSV fields, a row from CSV fields
//! (checked and normalised), and how to read all rows and insert one.
//!
//! Fields are written as PostgreSQL's `COPY` writes the same columns, and read whether
//! PostgreSQL or this adapter wrote them, so one backup file serves both adapters: times as
//! RFC 3339 (PostgreSQL's `2025-01-01 12:00:00.123456+00` is read too, and stored in this
//! adapter's form), JSON as its text, booleans as `t`/`f`, NULL as an empty unquoted field.

use diesel::prelude::*;

use crate::corrections::CorrectionRow;
use crate::models::{
    fmt_time, parse_time, ActionRow, ErasureRow, EventRow, ParametersRow, ProvenanceRow, StudyRow,
    UpdateRow, UserRow,
};
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    study_data_corrections, update_provenance, users,
};
use justin_backup::csv::{bool_text, float_text, Field};

/// One study table's rows, as backups write and restore reads them.
pub(crate) trait TableRow: Sized {
    /// The table's name.
    const NAME: &'static str;
    /// Its columns, in table order.
    const COLUMNS: &'static [&'static str];

    /// The row as CSV fields, in column order.
    fn fields(&self) -> Vec<Field>;

    /// A row from CSV fields in column order; the error names the column.
    fn parse(fields: Vec<Field>) -> Result<Self, String>;

    /// Calls `each` with every row, by primary key, without loading the table.
    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E>;

    /// Inserts the row as it is, primary key included.
    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize>;
}

/// Walks a query's rows one at a time (SQLite steps its cursor; nothing is collected).
macro_rules! each_row {
    ($conn:expr, $query:expr, $row:ty, $each:expr) => {{
        let mut each = $each;
        let rows = $query
            .select(<$row>::as_select())
            .load_iter::<$row, diesel::connection::DefaultLoadingMode>($conn)?;
        for row in rows {
            each(row?)?;
        }
        Ok(())
    }};
}

/// Reads the fields of one record in order.
struct Fields {
    fields: std::vec::IntoIter<Field>,
    columns: std::slice::Iter<'static, &'static str>,
}

impl Fields {
    fn new(fields: Vec<Field>, columns: &'static [&'static str]) -> Result<Self, String> {
        if fields.len() != columns.len() {
            return Err(format!(
                "{} fields where {} columns were expected",
                fields.len(),
                columns.len()
            ));
        }
        Ok(Self {
            fields: fields.into_iter(),
            columns: columns.iter(),
        })
    }

    fn optional(&mut self) -> (Field, &'static str) {
        (
            self.fields.next().flatten(),
            self.columns.next().copied().unwrap_or("?"),
        )
    }

    fn text(&mut self) -> Result<String, String> {
        match self.optional() {
            (Some(v), _) => Ok(v),
            (None, column) => Err(format!("{column} is NULL")),
        }
    }

    fn opt_text(&mut self) -> Option<String> {
        self.optional().0
    }

    fn parsed<T: std::str::FromStr>(
        (value, column): (Field, &'static str),
        what: &str,
    ) -> Result<Option<T>, String> {
        value
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| format!("{column}: {v:?} is not {what}"))
            })
            .transpose()
    }

    fn required<T>(
        &mut self,
        read: impl FnOnce((Field, &'static str)) -> Result<Option<T>, String>,
    ) -> Result<T, String> {
        let (value, column) = self.optional();
        read((value, column))?.ok_or_else(|| format!("{column} is NULL"))
    }

    fn int<T: std::str::FromStr>(&mut self) -> Result<T, String> {
        self.required(|f| Self::parsed(f, "an integer"))
    }

    fn opt_int(&mut self) -> Result<Option<i64>, String> {
        Self::parsed(self.optional(), "an integer")
    }

    fn float(&mut self) -> Result<f64, String> {
        self.required(|f| Self::parsed(f, "a number"))
    }

    fn opt_float(&mut self) -> Result<Option<f64>, String> {
        Self::parsed(self.optional(), "a number")
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.required(|(value, column)| {
            value
                .map(|v| match v.as_str() {
                    "t" | "true" | "1" => Ok(true),
                    "f" | "false" | "0" => Ok(false),
                    _ => Err(format!("{column}: {v:?} is not a boolean")),
                })
                .transpose()
        })
    }

    fn time_of((value, column): (Field, &'static str)) -> Result<Option<String>, String> {
        value
            .map(|v| {
                parse_time(&v)
                    .map(fmt_time)
                    .map_err(|e| format!("{column}: {e}"))
            })
            .transpose()
    }

    fn time(&mut self) -> Result<String, String> {
        self.required(Self::time_of)
    }

    fn opt_time(&mut self) -> Result<Option<String>, String> {
        Self::time_of(self.optional())
    }

    fn json(&mut self) -> Result<String, String> {
        self.required(|(value, column)| {
            value
                .map(|v| {
                    serde_json::from_str::<serde::de::IgnoredAny>(&v)
                        .map(|_| v)
                        .map_err(|e| format!("{column}: not JSON: {e}"))
                })
                .transpose()
        })
    }

    fn uuid(&mut self) -> Result<String, String> {
        self.required(|(value, column)| {
            value
                .map(|v| {
                    uuid::Uuid::parse_str(&v)
                        .map(crate::models::uuid_text)
                        .map_err(|e| format!("{column}: {v:?} is not a UUID: {e}"))
                })
                .transpose()
        })
    }
}

fn int(v: impl ToString) -> Field {
    Some(v.to_string())
}

impl TableRow for UserRow {
    const NAME: &'static str = "users";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "created_at",
        "study_start",
        "study_start_sent",
        "study_end",
        "study_end_sent",
        "withdrawn_at",
        "withdrawal_reason",
        "erased_at",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.id),
            Some(self.user_id.clone()),
            Some(self.created_at.clone()),
            self.study_start.clone(),
            self.study_start_sent.clone(),
            self.study_end.clone(),
            self.study_end_sent.clone(),
            self.withdrawn_at.clone(),
            self.withdrawal_reason.clone(),
            self.erased_at.clone(),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.int()?,
            user_id: f.text()?,
            created_at: f.time()?,
            study_start: f.opt_time()?,
            study_start_sent: f.opt_text(),
            study_end: f.opt_time()?,
            study_end_sent: f.opt_text(),
            withdrawn_at: f.opt_time()?,
            withdrawal_reason: f.opt_text(),
            erased_at: f.opt_time()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(conn, users::table.order(users::id), UserRow, each)
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(users::table).values(self).execute(conn)
    }
}

impl TableRow for ParametersRow {
    const NAME: &'static str = "model_parameters";
    const COLUMNS: &'static [&'static str] = &["version", "algorithm", "parameters", "created_at"];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.version),
            Some(self.algorithm.clone()),
            Some(self.parameters.clone()),
            Some(self.created_at.clone()),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            version: f.int()?,
            algorithm: f.text()?,
            parameters: f.json()?,
            created_at: f.time()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            model_parameters::table.order(model_parameters::version),
            ParametersRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(model_parameters::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for ActionRow {
    const NAME: &'static str = "actions";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "decision_idx",
        "request_timestamp",
        "created_at",
        "context",
        "state",
        "action",
        "action_prob",
        "parameter_version",
        "rng_seed",
        "decision_type",
        "available",
        "unavailable_reason",
        "sent_timestamp",
        "policy",
        "fallback_reason",
        "decided_by",
        "in_study",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.id),
            Some(self.user_id.clone()),
            int(self.decision_idx),
            Some(self.request_timestamp.clone()),
            Some(self.created_at.clone()),
            Some(self.context.clone()),
            Some(self.state.clone()),
            int(self.action),
            Some(float_text(self.action_prob)),
            int(self.parameter_version),
            int(self.rng_seed),
            Some(self.decision_type.clone()),
            Some(bool_text(self.available)),
            self.unavailable_reason.clone(),
            Some(self.sent_timestamp.clone()),
            Some(self.policy.clone()),
            self.fallback_reason.clone(),
            self.decided_by.clone(),
            Some(bool_text(self.in_study)),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.int()?,
            user_id: f.text()?,
            decision_idx: f.int()?,
            request_timestamp: f.time()?,
            created_at: f.time()?,
            context: f.json()?,
            state: f.json()?,
            action: f.int()?,
            action_prob: f.float()?,
            parameter_version: f.int()?,
            rng_seed: f.int()?,
            decision_type: f.text()?,
            available: f.boolean()?,
            unavailable_reason: f.opt_text(),
            sent_timestamp: f.text()?,
            policy: f.text()?,
            fallback_reason: f.opt_text(),
            decided_by: f.opt_text(),
            in_study: f.boolean()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(conn, actions::table.order(actions::id), ActionRow, each)
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(actions::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for StudyRow {
    const NAME: &'static str = "study_data";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "decision_idx",
        "request_timestamp",
        "created_at",
        "context",
        "action",
        "action_prob",
        "state",
        "outcome",
        "reward",
        "action_logged",
        "decision_type",
        "available",
        "sent_timestamp",
        "policy",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.id),
            Some(self.user_id.clone()),
            int(self.decision_idx),
            Some(self.request_timestamp.clone()),
            Some(self.created_at.clone()),
            Some(self.context.clone()),
            int(self.action),
            Some(float_text(self.action_prob)),
            Some(self.state.clone()),
            Some(self.outcome.clone()),
            Some(float_text(self.reward)),
            Some(bool_text(self.action_logged)),
            Some(self.decision_type.clone()),
            Some(bool_text(self.available)),
            Some(self.sent_timestamp.clone()),
            self.policy.clone(),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.int()?,
            user_id: f.text()?,
            decision_idx: f.int()?,
            request_timestamp: f.time()?,
            created_at: f.time()?,
            context: f.json()?,
            action: f.int()?,
            action_prob: f.float()?,
            state: f.json()?,
            outcome: f.json()?,
            reward: f.float()?,
            action_logged: f.boolean()?,
            decision_type: f.text()?,
            available: f.boolean()?,
            sent_timestamp: f.text()?,
            policy: f.opt_text(),
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            study_data::table.order(study_data::id),
            StudyRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(study_data::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for UpdateRow {
    const NAME: &'static str = "model_update_requests";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "request_timestamp",
        "created_at",
        "callback_url",
        "status",
        "finished_at",
        "error",
        "parameter_version",
        "attempts",
        "started_at",
        "callback_status",
        "callback_attempts",
        "callback_error",
        "callback_finished_at",
        "sent_timestamp",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            Some(self.id.clone()),
            Some(self.request_timestamp.clone()),
            Some(self.created_at.clone()),
            Some(self.callback_url.clone()),
            Some(self.status.clone()),
            self.finished_at.clone(),
            self.error.clone(),
            self.parameter_version.map(|v| v.to_string()),
            int(self.attempts),
            self.started_at.clone(),
            Some(self.callback_status.clone()),
            int(self.callback_attempts),
            self.callback_error.clone(),
            self.callback_finished_at.clone(),
            Some(self.sent_timestamp.clone()),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.uuid()?,
            request_timestamp: f.time()?,
            created_at: f.time()?,
            callback_url: f.text()?,
            status: f.text()?,
            finished_at: f.opt_time()?,
            error: f.opt_text(),
            parameter_version: f.opt_int()?,
            attempts: f.int()?,
            started_at: f.opt_time()?,
            callback_status: f.text()?,
            callback_attempts: f.int()?,
            callback_error: f.opt_text(),
            callback_finished_at: f.opt_time()?,
            sent_timestamp: f.text()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            model_update_requests::table.order(model_update_requests::id),
            UpdateRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(model_update_requests::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for ProvenanceRow {
    const NAME: &'static str = "update_provenance";
    const COLUMNS: &'static [&'static str] = &[
        "update_id",
        "parameter_version",
        "service_version",
        "algorithm",
        "config_hash",
        "rows_read",
        "backup_file",
        "created_at",
        "last_study_data_id",
        "included_policies",
        "last_action_id",
        "imputed_decided_by",
        "default_reward",
        "imputed_rows",
        "last_correction_id",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            Some(self.update_id.clone()),
            int(self.parameter_version),
            Some(self.service_version.clone()),
            Some(self.algorithm.clone()),
            Some(self.config_hash.clone()),
            int(self.rows_read),
            self.backup_file.clone(),
            Some(self.created_at.clone()),
            int(self.last_study_data_id),
            Some(self.included_policies.clone()),
            self.last_action_id.map(|v| v.to_string()),
            self.imputed_decided_by.clone(),
            self.default_reward.map(float_text),
            self.imputed_rows.map(|v| v.to_string()),
            self.last_correction_id.map(|id| id.to_string()),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            update_id: f.uuid()?,
            parameter_version: f.int()?,
            service_version: f.text()?,
            algorithm: f.text()?,
            config_hash: f.text()?,
            rows_read: f.int()?,
            backup_file: f.opt_text(),
            created_at: f.time()?,
            last_study_data_id: f.int()?,
            included_policies: f.text()?,
            last_action_id: f.opt_int()?,
            imputed_decided_by: f.opt_time()?,
            default_reward: f.opt_float()?,
            imputed_rows: f.opt_int()?,
            last_correction_id: f.opt_int()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            update_provenance::table.order(update_provenance::update_id),
            ProvenanceRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(update_provenance::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for EventRow {
    const NAME: &'static str = "participant_events";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "user_id",
        "kind",
        "recorded_at",
        "study_start",
        "study_start_sent",
        "study_end",
        "study_end_sent",
        "reason",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.id),
            Some(self.user_id.clone()),
            Some(self.kind.clone()),
            Some(self.recorded_at.clone()),
            self.study_start.clone(),
            self.study_start_sent.clone(),
            self.study_end.clone(),
            self.study_end_sent.clone(),
            self.reason.clone(),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.int()?,
            user_id: f.text()?,
            kind: f.text()?,
            recorded_at: f.time()?,
            study_start: f.opt_time()?,
            study_start_sent: f.opt_text(),
            study_end: f.opt_time()?,
            study_end_sent: f.opt_text(),
            reason: f.opt_text(),
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            participant_events::table.order(participant_events::id),
            EventRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(participant_events::table)
            .values(self)
            .execute(conn)
    }
}

impl TableRow for ErasureRow {
    const NAME: &'static str = "erasures";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "erased_at",
        "participant_number",
        "pseudonym",
        "row_counts",
        "backup_file",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            Some(self.id.clone()),
            Some(self.erased_at.clone()),
            int(self.participant_number),
            Some(self.pseudonym.clone()),
            Some(self.row_counts.clone()),
            Some(self.backup_file.clone()),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.uuid()?,
            erased_at: f.time()?,
            participant_number: f.int()?,
            pseudonym: f.text()?,
            row_counts: f.json()?,
            backup_file: f.text()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(conn, erasures::table.order(erasures::id), ErasureRow, each)
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(erasures::table)
            .values(self)
            .execute(conn)
    }
}

/// The columns migration 2026-12-03 appended to `table`, in order (empty for other tables),
/// before the one 2026-12-04 appended after them.
pub(crate) fn outcome_window_columns(table: &str) -> &'static [&'static str] {
    let appended = match table {
        ProvenanceRow::NAME => 4,
        _ => 0,
    };
    let known = known_columns(table);
    let end = known.len() - corrections_columns(table).len();
    &known[end - appended..end]
}

/// The columns `table` had before migration 2026-12-03.
fn columns_before_outcome_window(table: &str) -> &'static [&'static str] {
    let known = known_columns(table);
    &known[..known.len() - corrections_columns(table).len() - outcome_window_columns(table).len()]
}

impl TableRow for CorrectionRow {
    const NAME: &'static str = "study_data_corrections";
    const COLUMNS: &'static [&'static str] = &[
        "id",
        "study_data_id",
        "user_id",
        "decision_type",
        "decision_idx",
        "request_timestamp",
        "sent_timestamp",
        "created_at",
        "context",
        "state",
        "outcome",
        "reward",
    ];

    fn fields(&self) -> Vec<Field> {
        vec![
            int(self.id),
            int(self.study_data_id),
            Some(self.user_id.clone()),
            Some(self.decision_type.clone()),
            int(self.decision_idx),
            Some(self.request_timestamp.clone()),
            Some(self.sent_timestamp.clone()),
            Some(self.created_at.clone()),
            Some(self.context.clone()),
            Some(self.state.clone()),
            Some(self.outcome.clone()),
            Some(float_text(self.reward)),
        ]
    }

    fn parse(fields: Vec<Field>) -> Result<Self, String> {
        let mut f = Fields::new(fields, Self::COLUMNS)?;
        Ok(Self {
            id: f.int()?,
            study_data_id: f.int()?,
            user_id: f.text()?,
            decision_type: f.text()?,
            decision_idx: f.int()?,
            request_timestamp: f.time()?,
            sent_timestamp: f.text()?,
            created_at: f.time()?,
            context: f.json()?,
            state: f.json()?,
            outcome: f.json()?,
            reward: f.float()?,
        })
    }

    fn for_each<E: From<diesel::result::Error>>(
        conn: &mut SqliteConnection,
        each: impl FnMut(Self) -> Result<(), E>,
    ) -> Result<(), E> {
        each_row!(
            conn,
            study_data_corrections::table.order(study_data_corrections::id),
            CorrectionRow,
            each
        )
    }

    fn insert(&self, conn: &mut SqliteConnection) -> QueryResult<usize> {
        diesel::insert_into(study_data_corrections::table)
            .values(self)
            .execute(conn)
    }
}

/// The columns migration 2026-12-04 (corrections) appended to `table`, in order (empty for
/// other tables).
pub(crate) fn corrections_columns(table: &str) -> &'static [&'static str] {
    let known = known_columns(table);
    match table {
        ProvenanceRow::NAME => &known[known.len() - 1..],
        _ => &[],
    }
}

/// The columns migration 2025-05-01 appended to `table`, in order (empty for other tables).
pub(crate) fn trial_life_columns(table: &str) -> &'static [&'static str] {
    let appended = match table {
        UserRow::NAME => 7,
        ActionRow::NAME => 4,
        StudyRow::NAME | ProvenanceRow::NAME => 1,
        _ => 0,
    };
    let before = columns_before_outcome_window(table);
    &before[before.len() - appended..]
}

/// What a record written before some migrations needs appended to read as a row of this
/// build: the fields those migrations added, filled as the migrations fill them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Fill {
    /// Written before migration 2025-04-02: append [`SENT_TIMESTAMP`].
    pub sent_timestamp: bool,
    /// Written before migration 2025-05-01: append [`trial_life_columns`].
    pub trial_life: bool,
    /// Written before migration 2026-12-03: append [`outcome_window_columns`], all NULL.
    pub outcome_window: bool,
    /// Written before migration 2026-12-04: append [`corrections_columns`] (NULL: an update
    /// stored before corrections read none). Every fill with `trial_life` has it too.
    pub corrections: bool,
}

impl Fill {
    /// The columns `table` had in a backup that needs this fill.
    pub(crate) fn columns(self, table: &str) -> Vec<&'static str> {
        let mut columns = known_columns(table).to_vec();
        if self.corrections {
            columns.truncate(columns.len() - corrections_columns(table).len());
        }
        if self.outcome_window {
            columns.truncate(columns.len() - outcome_window_columns(table).len());
        }
        if self.trial_life {
            columns.truncate(columns.len() - trial_life_columns(table).len());
        }
        if self.sent_timestamp && columns.last() == Some(&SENT_TIMESTAMP) {
            columns.pop();
        }
        columns
    }

    /// The fill that reads a record with the columns `header` as a row of `table`, if one
    /// does.
    pub(crate) fn for_header(table: &str, header: &[String]) -> Option<Self> {
        let both = [false, true];
        both.into_iter()
            .flat_map(|corrections| both.map(move |outcome_window| (corrections, outcome_window)))
            .flat_map(|(corrections, outcome_window)| {
                both.into_iter().flat_map(move |trial_life| {
                    both.map(|sent_timestamp| Self {
                        sent_timestamp,
                        trial_life,
                        outcome_window,
                        corrections,
                    })
                })
            })
            // Migrations apply in order: a backup from before 2025-05-01 is from before
            // 2026-12-03 too, and one from before 2026-12-03 from before 2026-12-04.
            .filter(|fill| {
                (fill.outcome_window || !fill.trial_life)
                    && (fill.corrections || !fill.outcome_window)
            })
            .find(|fill| fill.columns(table) == header)
    }

    /// Appends to a record of `table` the fields this fill stands for.
    pub(crate) fn apply(self, table: &str, fields: &mut Vec<Field>) {
        if self.sent_timestamp && columns_before_sent_timestamps(table).is_some() {
            fill_sent_timestamp(table, fields);
        }
        if self.trial_life {
            fill_trial_life(table, fields);
        }
        // The migration leaves the columns it appends NULL: older updates imputed nothing.
        if self.outcome_window {
            fields.extend(std::iter::repeat_n(
                None,
                outcome_window_columns(table).len(),
            ));
        }
        if self.corrections {
            fields.extend(corrections_columns(table).iter().map(|_| None));
        }
    }
}

/// Completes a record of `table` written before migration 2025-05-01 as the migration
/// completes a row: participants without a window, withdrawal or erasure; decisions drawn by
/// the algorithm for a participant in the study; uploads whose logged decision (if any) the
/// algorithm drew; updates that learned from the algorithm's decisions.
fn fill_trial_life(table: &str, fields: &mut Vec<Field>) {
    match table {
        UserRow::NAME => fields.extend(std::iter::repeat_n(None, 7)),
        ActionRow::NAME => fields.extend([Some("algorithm".into()), None, None, Some("t".into())]),
        StudyRow::NAME => {
            let logged = StudyRow::COLUMNS
                .iter()
                .position(|c| *c == "action_logged")
                .and_then(|i| fields.get(i).cloned().flatten());
            let logged = matches!(logged.as_deref(), Some("t" | "true" | "1"));
            fields.push(logged.then(|| "algorithm".to_owned()));
        }
        ProvenanceRow::NAME => fields.push(Some("algorithm".into())),
        _ => {}
    }
}

/// The column migration 2025-04-02 appended to `actions`, `study_data` and
/// `model_update_requests`.
pub(crate) const SENT_TIMESTAMP: &str = "sent_timestamp";

/// The columns `table` had before migration 2025-04-02 appended [`SENT_TIMESTAMP`], when it
/// appended it to `table` (the columns migration 2025-05-01 appended after it left out).
pub(crate) fn columns_before_sent_timestamps(table: &str) -> Option<&'static [&'static str]> {
    let before = columns_before_outcome_window(table);
    before[..before.len() - trial_life_columns(table).len()]
        .split_last()
        .filter(|(last, _)| **last == SENT_TIMESTAMP)
        .map(|(_, before)| before)
}

/// Completes a record of `table` written before migration 2025-04-02 as the migration
/// completes a row: the text as sent is the stored time in this adapter's RFC 3339 form (the
/// form migrations/postgres writes too). A time that cannot be read is left for the row's own
/// check to name.
pub(crate) fn fill_sent_timestamp(table: &str, fields: &mut Vec<Field>) {
    let at = known_columns(table)
        .iter()
        .position(|c| *c == "request_timestamp");
    let sent = at
        .and_then(|i| fields.get(i).cloned().flatten())
        .and_then(|raw| parse_time(&raw).ok())
        .map(fmt_time);
    fields.push(sent);
}

/// The columns this build knows for `table`, in order.
pub(crate) fn known_columns(table: &str) -> &'static [&'static str] {
    match table {
        UserRow::NAME => UserRow::COLUMNS,
        ParametersRow::NAME => ParametersRow::COLUMNS,
        ActionRow::NAME => ActionRow::COLUMNS,
        StudyRow::NAME => StudyRow::COLUMNS,
        UpdateRow::NAME => UpdateRow::COLUMNS,
        ProvenanceRow::NAME => ProvenanceRow::COLUMNS,
        EventRow::NAME => EventRow::COLUMNS,
        ErasureRow::NAME => ErasureRow::COLUMNS,
        CorrectionRow::NAME => CorrectionRow::COLUMNS,
        _ => &[],
    }
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// The table's columns a backup holds in table order, as the database has them now: all but
/// the [`justin_backup::manifest::DERIVED_COLUMNS`].
pub(crate) fn live_columns(conn: &mut SqliteConnection, table: &str) -> QueryResult<Vec<String>> {
    let names = diesel::sql_query("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
        .bind::<diesel::sql_types::Text, _>(table)
        .load::<Name>(conn)?;
    Ok(names
        .into_iter()
        .map(|n| n.name)
        .filter(|column| !justin_backup::manifest::is_derived(table, column))
        .collect())
}

/// Versions of the migrations applied to the database, oldest first.
pub(crate) fn applied_migrations(conn: &mut SqliteConnection) -> QueryResult<Vec<String>> {
    let versions = diesel::sql_query(
        "SELECT version AS name FROM __diesel_schema_migrations ORDER BY version",
    )
    .load::<Name>(conn)?;
    Ok(versions.into_iter().map(|v| v.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_from_before_migration_2025_04_02_get_their_time_as_sent() {
        assert_eq!(columns_before_sent_timestamps("users"), None);
        assert_eq!(columns_before_sent_timestamps("update_provenance"), None);
        for table in ["actions", "study_data", "model_update_requests"] {
            let before = columns_before_sent_timestamps(table).unwrap();
            assert_eq!(
                [before, &[SENT_TIMESTAMP], trial_life_columns(table)].concat(),
                known_columns(table)
            );
        }
        let mut fields: Vec<Field> = vec![
            Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
            Some("2025-01-01 13:00:00.5+01".into()),
        ];
        fill_sent_timestamp("model_update_requests", &mut fields);
        assert_eq!(
            fields[2].as_deref(),
            Some("2025-01-01T12:00:00.500000Z"),
            "the form migrations/postgres writes"
        );
    }

    /// Records from before migration 2025-05-01 (and from before 2025-04-02 too) are told
    /// apart by their header and completed as the migrations complete rows.
    #[test]
    fn rows_from_before_migration_2025_05_01_get_the_defaults() {
        let header = |columns: &[&str]| columns.iter().map(|c| (*c).to_owned()).collect();
        for table in ["users", "actions", "study_data", "update_provenance"] {
            let current: Vec<String> = header(known_columns(table));
            assert_eq!(Fill::for_header(table, &current), Some(Fill::default()));
            let before = &known_columns(table)[..current.len()
                - trial_life_columns(table).len()
                - outcome_window_columns(table).len()
                - corrections_columns(table).len()];
            let fill = Fill::for_header(table, &header(before)).unwrap();
            assert!(
                fill.trial_life && fill.outcome_window && fill.corrections && !fill.sent_timestamp,
                "{table}"
            );
        }
        let before_corrections = &ProvenanceRow::COLUMNS[..ProvenanceRow::COLUMNS.len() - 1];
        assert_eq!(
            Fill::for_header("update_provenance", &header(before_corrections)),
            Some(Fill {
                corrections: true,
                ..Fill::default()
            })
        );
        let mut provenance: Vec<Field> = vec![Some("x".into()); before_corrections.len()];
        Fill {
            corrections: true,
            ..Fill::default()
        }
        .apply("update_provenance", &mut provenance);
        assert_eq!(provenance.len(), ProvenanceRow::COLUMNS.len());
        assert_eq!(provenance.last(), Some(&None));
        let before_both = columns_before_sent_timestamps("actions").unwrap();
        assert_eq!(
            Fill::for_header("actions", &header(before_both)),
            Some(Fill {
                sent_timestamp: true,
                trial_life: true,
                outcome_window: true,
                corrections: true,
            })
        );
        assert_eq!(
            Fill::for_header("actions", &header(&["id", "user_id"])),
            None
        );
        assert_eq!(trial_life_columns("model_parameters"), &[] as &[&str]);
        assert_eq!(trial_life_columns("erasures"), &[] as &[&str]);

        let trial_life = Fill {
            sent_timestamp: false,
            trial_life: true,
            outcome_window: true,
            corrections: true,
        };
        let mut user: Vec<Field> = vec![Some("1".into()), Some("u".into()), None];
        trial_life.apply("users", &mut user);
        assert_eq!(user.len(), UserRow::COLUMNS.len());
        assert!(user[3..].iter().all(Option::is_none));

        let mut action: Vec<Field> = vec![None; before_both.len()];
        action[3] = Some("2025-01-01 12:00:00+00".into());
        Fill {
            sent_timestamp: true,
            trial_life: true,
            outcome_window: true,
            corrections: true,
        }
        .apply("actions", &mut action);
        assert_eq!(action.len(), ActionRow::COLUMNS.len());
        let tail: Vec<Option<&str>> = action[before_both.len()..]
            .iter()
            .map(Option::as_deref)
            .collect();
        assert_eq!(
            tail,
            [
                Some("2025-01-01T12:00:00.000000Z"),
                Some("algorithm"),
                None,
                None,
                Some("t")
            ]
        );

        for (logged, policy) in [("t", Some("algorithm")), ("f", None)] {
            let mut study: Vec<Field> = vec![None; StudyRow::COLUMNS.len() - 1];
            study[11] = Some(logged.into());
            trial_life.apply("study_data", &mut study);
            assert_eq!(study.last().cloned().flatten().as_deref(), policy);
        }

        let mut provenance: Vec<Field> = vec![None; ProvenanceRow::COLUMNS.len() - 6];
        trial_life.apply("update_provenance", &mut provenance);
        assert_eq!(provenance.len(), ProvenanceRow::COLUMNS.len());
        let tail: Vec<Option<&str>> = provenance[ProvenanceRow::COLUMNS.len() - 6..]
            .iter()
            .map(Option::as_deref)
            .collect();
        assert_eq!(tail, [Some("algorithm"), None, None, None, None, None]);
    }

    /// Records from before migration 2026-12-03 lack only what updates imputed, which they
    /// get as NULL: those updates imputed nothing.
    #[test]
    fn provenance_from_before_migration_2026_12_03_imputed_nothing() {
        let header =
            |columns: &[&str]| -> Vec<String> { columns.iter().map(|c| (*c).to_owned()).collect() };
        let known = known_columns("update_provenance");
        assert_eq!(
            outcome_window_columns("update_provenance"),
            [
                "last_action_id",
                "imputed_decided_by",
                "default_reward",
                "imputed_rows"
            ]
        );
        // Before 2026-12-03 is before 2026-12-04 too: the last five columns are missing.
        let fill = Fill::for_header("update_provenance", &header(&known[..known.len() - 5]));
        let before_outcome_window = Fill {
            outcome_window: true,
            corrections: true,
            ..Fill::default()
        };
        assert_eq!(fill, Some(before_outcome_window));
        for table in ["users", "actions", "study_data"] {
            assert_eq!(outcome_window_columns(table), &[] as &[&str]);
        }
        let mut row: Vec<Field> = vec![Some("x".into()); known.len() - 5];
        before_outcome_window.apply("update_provenance", &mut row);
        assert_eq!(row.len(), known.len());
        assert!(row[known.len() - 5..].iter().all(Option::is_none));
    }

    #[test]
    fn rows_written_by_postgres_are_read_and_normalised() {
        let fields = |v: &[Option<&str>]| v.iter().map(|f| f.map(str::to_owned)).collect();
        let request = UpdateRow::parse(fields(&[
            Some("0F8FAD5B-D9CB-469F-A165-70867728950E"),
            Some("2025-01-01 12:00:00.5+00"),
            Some("2025-01-01 13:00:00.123456+01"),
            Some("http://x"),
            Some("failed"),
            Some("2025-01-01 12:00:01+00"),
            Some(""),
            None,
            Some("2"),
            None,
            Some("pending"),
            Some("0"),
            None,
            None,
            Some("2025-01-01 14:00:00,5+02"),
        ]))
        .unwrap();
        assert_eq!(request.id, "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert_eq!(request.request_timestamp, "2025-01-01T12:00:00.500000Z");
        assert_eq!(request.created_at, "2025-01-01T12:00:00.123456Z");
        assert_eq!(request.error.as_deref(), Some(""));
        assert_eq!(request.parameter_version, None);
        assert_eq!(request.fields()[6], Some(String::new()));
        // The text as sent is kept as it is, not read as a time.
        assert_eq!(request.sent_timestamp, "2025-01-01 14:00:00,5+02");

        let study = fields(&[
            Some("1"),
            Some("u"),
            Some("0"),
            Some("2025-01-01 12:00:00+00"),
            Some("2025-01-01 12:00:00+00"),
            Some("{\"a\": 1}"),
            Some("1"),
            Some("0.25"),
            Some("[1, 2]"),
            Some("{}"),
            Some("1e-05"),
            Some("t"),
            Some("evening"),
            Some("f"),
            Some("2025-W01-3"),
            Some("warmup"),
        ]);
        let row = StudyRow::parse(study).unwrap();
        assert!(row.action_logged);
        assert!((row.reward - 1e-5).abs() < 1e-20);
        assert_eq!(row.fields()[11].as_deref(), Some("t"));
        assert_eq!(row.decision_type, "evening");
        assert!(!row.available);
        assert_eq!(row.fields()[13].as_deref(), Some("f"));
        assert_eq!(row.fields()[14].as_deref(), Some("2025-W01-3"));
        assert_eq!(row.policy.as_deref(), Some("warmup"));
        assert_eq!(row.fields()[15].as_deref(), Some("warmup"));

        let provenance = ProvenanceRow::parse(fields(&[
            Some("0F8FAD5B-D9CB-469F-A165-70867728950E"),
            Some("2"),
            Some("0.1.0"),
            Some("algo"),
            Some("abc"),
            Some("3"),
            None,
            Some("2025-01-01 12:00:01.5+00"),
            Some("9"),
            Some("algorithm,warmup"),
            None,
            None,
            None,
            None,
            Some("4"),
        ]))
        .unwrap();
        assert_eq!(provenance.last_study_data_id, 9);
        assert_eq!(provenance.last_correction_id, Some(4));
        assert_eq!(provenance.fields()[14].as_deref(), Some("4"));
        assert_eq!(provenance.fields()[8].as_deref(), Some("9"));
        assert_eq!(provenance.fields()[9].as_deref(), Some("algorithm,warmup"));
        let no_watermark = ProvenanceRow::parse(fields(&[
            Some("0F8FAD5B-D9CB-469F-A165-70867728950E"),
            Some("2"),
            Some("0.1.0"),
            Some("algo"),
            Some("abc"),
            Some("3"),
            None,
            Some("2025-01-01 12:00:01.5+00"),
            None,
            Some("algorithm"),
            None,
            None,
            None,
            None,
            None,
        ]));
        assert_eq!(
            no_watermark.err().as_deref(),
            Some("last_study_data_id is NULL")
        );
    }

    #[test]
    fn bad_fields_name_their_column() {
        let user = |id: &str, created_at: Option<&str>, withdrawal_reason: Option<&str>| {
            let mut fields: Vec<Field> = vec![None; UserRow::COLUMNS.len()];
            fields[0] = Some(id.into());
            fields[1] = Some("u".into());
            fields[2] = created_at.map(str::to_owned);
            fields[8] = withdrawal_reason.map(str::to_owned);
            fields
        };
        let err = UserRow::parse(user("x", None, None)).unwrap_err();
        assert!(err.contains("id"), "{err}");
        let err = UserRow::parse(user("1", None, None)).unwrap_err();
        assert!(err.contains("created_at is NULL"), "{err}");
        let mut late = user("1", Some("2025-01-01T00:00:00Z"), None);
        late[3] = Some("soon".into());
        let err = UserRow::parse(late).unwrap_err();
        assert!(err.contains("study_start"), "{err}");
        let row = UserRow::parse(user("1", Some("2025-01-01T00:00:00Z"), Some("moved"))).unwrap();
        assert_eq!(row.withdrawal_reason.as_deref(), Some("moved"));
        let err = UserRow::parse(vec![Some("1".into())]).unwrap_err();
        assert!(err.contains("fields"), "{err}");
    }
}
