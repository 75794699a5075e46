//! Rows as Diesel reads and writes them, the text formats SQLite stores times and JSON in, and
//! the conversions to and from the core's types.
//!
//! Reading goes through `TryFrom`: the database's checks mirror the core's invariants, but a
//! row edited by hand or restored from an older backup could still break them, and such a row
//! must surface as a [`StoreError::Other`] rather than a panic or a silently wrong value.

use chrono::{DateTime, SecondsFormat, Utc};
use diesel::prelude::*;
use justin_core::{
    Action, ActionChoice, Availability, CallbackDelivery, CallbackStatus, Decision, DecisionIdx,
    DecisionType, Enrollment, Erasure, ExportLine, ExportRow, ExportedUpload, ImputedReward,
    ImputedRewards, InvalidValue, JsonObject, ModelParameters, OutOfStudy, Policy, Probability,
    Provenance, SentTime, State, StoreError, StudyRecord, UpdateRequest, UpdateStatus, UserId,
};

use crate::error::other;
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    update_provenance, users,
};

/// A time as stored: RFC 3339 in UTC with exactly six fractional digits. The fixed width makes
/// text order time order, which `ORDER BY created_at` relies on.
pub(crate) fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Reads a time as this adapter stores it, or as PostgreSQL's `COPY` writes a `timestamptz`
/// (`2025-01-01 12:00:00.123456+00`, any offset), which restore meets in backups taken there.
pub(crate) fn parse_time(raw: &str) -> Result<DateTime<Utc>, InvalidValue> {
    DateTime::parse_from_rfc3339(raw)
        .or_else(|_| DateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| InvalidValue(format!("{raw:?} is not a time: {e}")))
}

fn parse_optional_time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, InvalidValue> {
    raw.map(parse_time).transpose()
}

/// Says which table and row held an invalid value.
pub(crate) fn invalid(
    table: &str,
    id: impl std::fmt::Display,
    e: impl std::fmt::Display,
) -> StoreError {
    other(format!("invalid row {id} in {table}: {e}"))
}

fn json(raw: &str) -> Result<serde_json::Value, InvalidValue> {
    serde_json::from_str(raw).map_err(|e| InvalidValue(format!("invalid JSON: {e}")))
}

pub(crate) fn json_object(raw: &str) -> Result<JsonObject, InvalidValue> {
    match json(raw)? {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(InvalidValue(format!(
            "expected a JSON object, found {other}"
        ))),
    }
}

pub(crate) fn state(raw: &str) -> Result<State, InvalidValue> {
    let values: Vec<f64> = serde_json::from_str(raw)
        .map_err(|e| InvalidValue(format!("state is not a list of numbers: {e}")))?;
    State::new(values)
}

/// JSON as stored: compact text.
pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(other)
}

/// A row of `users`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = users, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct UserRow {
    pub id: i64,
    pub user_id: String,
    pub created_at: String,
    pub study_start: Option<String>,
    pub study_start_sent: Option<String>,
    pub study_end: Option<String>,
    pub study_end_sent: Option<String>,
    pub withdrawn_at: Option<String>,
    pub withdrawal_reason: Option<String>,
    pub erased_at: Option<String>,
}

/// A window bound from its two columns (the instant and the text as sent), both or neither.
fn sent_time(at: Option<&str>, sent: Option<String>) -> Result<Option<SentTime>, InvalidValue> {
    match (at, sent) {
        (None, None) => Ok(None),
        (Some(at), Some(sent)) => Ok(Some(SentTime {
            at: parse_time(at)?,
            sent,
        })),
        _ => Err(InvalidValue(
            "a window bound has only one of its instant and its text as sent".into(),
        )),
    }
}

/// A window from its four columns.
pub(crate) fn enrollment(
    start: Option<&str>,
    start_sent: Option<String>,
    end: Option<&str>,
    end_sent: Option<String>,
) -> Result<Enrollment, InvalidValue> {
    Enrollment::new(sent_time(start, start_sent)?, sent_time(end, end_sent)?)
}

/// A window as its four columns: start, start as sent, end, end as sent.
pub(crate) type WindowColumns = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// A window as stored.
pub(crate) fn window_columns(e: &Enrollment) -> WindowColumns {
    (
        e.start.as_ref().map(|s| fmt_time(s.at)),
        e.start.as_ref().map(|s| s.sent.clone()),
        e.end.as_ref().map(|s| fmt_time(s.at)),
        e.end.as_ref().map(|s| s.sent.clone()),
    )
}

impl UserRow {
    /// The participant's window and withdrawal, as the core has them.
    pub(crate) fn participant(
        self,
        decisions: i64,
        uploads: i64,
    ) -> Result<justin_core::Participant, StoreError> {
        let id = self.id;
        let bad = |e: InvalidValue| invalid("users", id, e);
        // The schema allows a withdrawal without its reason (an erasure drops the reason), though
        // a registered participant's withdrawal always has one.
        let withdrawal = match self.withdrawn_at.as_deref() {
            Some(at) => Some(justin_core::Withdrawal {
                at: parse_time(at).map_err(bad)?,
                reason: self.withdrawal_reason.unwrap_or_default(),
            }),
            None => None,
        };
        let count =
            |n: i64| u64::try_from(n).map_err(|_| bad(InvalidValue(format!("negative count {n}"))));
        Ok(justin_core::Participant {
            user_id: UserId::parse(self.user_id).map_err(bad)?,
            created_at: parse_time(&self.created_at).map_err(bad)?,
            enrollment: enrollment(
                self.study_start.as_deref(),
                self.study_start_sent,
                self.study_end.as_deref(),
                self.study_end_sent,
            )
            .map_err(bad)?,
            withdrawal,
            decisions: count(decisions)?,
            uploads: count(uploads)?,
        })
    }
}

/// A row of `participant_events`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = participant_events, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct EventRow {
    pub id: i64,
    pub user_id: String,
    pub kind: String,
    pub recorded_at: String,
    pub study_start: Option<String>,
    pub study_start_sent: Option<String>,
    pub study_end: Option<String>,
    pub study_end_sent: Option<String>,
    pub reason: Option<String>,
}

/// A row of `participant_events` to insert (its id is the table's next).
#[derive(Debug, Insertable)]
#[diesel(table_name = participant_events, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct NewEvent<'a> {
    pub user_id: &'a str,
    pub kind: &'a str,
    pub recorded_at: String,
    pub study_start: Option<String>,
    pub study_start_sent: Option<String>,
    pub study_end: Option<String>,
    pub study_end_sent: Option<String>,
    pub reason: Option<&'a str>,
}

impl<'a> NewEvent<'a> {
    /// The event `kind` of `user` at `at`, with the window after it.
    pub(crate) fn new(
        user_id: &'a str,
        kind: &'a str,
        at: DateTime<Utc>,
        (study_start, study_start_sent, study_end, study_end_sent): WindowColumns,
        reason: Option<&'a str>,
    ) -> Self {
        Self {
            user_id,
            kind,
            recorded_at: fmt_time(at),
            study_start,
            study_start_sent,
            study_end,
            study_end_sent,
            reason,
        }
    }
}

/// A row of `erasures`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = erasures, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct ErasureRow {
    pub id: String,
    pub erased_at: String,
    pub participant_number: i64,
    pub pseudonym: String,
    pub row_counts: String,
    pub backup_file: String,
}

impl ErasureRow {
    /// The row that stores `e`.
    pub(crate) fn new(e: &Erasure) -> Result<Self, StoreError> {
        Ok(Self {
            id: uuid_text(e.id),
            erased_at: fmt_time(e.erased_at),
            participant_number: e.participant_number,
            pseudonym: e.pseudonym.clone(),
            row_counts: json_text(&e.row_counts)?,
            backup_file: e.backup_file.clone(),
        })
    }
}

/// A row of `actions`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = actions, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct ActionRow {
    pub id: i64,
    pub user_id: String,
    pub decision_idx: i64,
    pub request_timestamp: String,
    pub created_at: String,
    pub context: String,
    pub state: String,
    pub action: i16,
    pub action_prob: f64,
    pub parameter_version: i64,
    pub rng_seed: i64,
    pub decision_type: String,
    pub available: bool,
    pub unavailable_reason: Option<String>,
    pub sent_timestamp: String,
    pub policy: String,
    pub fallback_reason: Option<String>,
    pub decided_by: Option<String>,
    pub in_study: bool,
}

/// A decision's availability from its three columns, refusing a reason on an available
/// decision and an out-of-study decision without the service's word (the database's checks
/// forbid the first, but a hand-edited row could hold either).
fn availability(
    available: bool,
    reason: Option<String>,
    in_study: bool,
) -> Result<Availability, InvalidValue> {
    match (available, reason, in_study) {
        (true, None, true) => Ok(Availability::Available),
        (true, Some(_), _) => Err(InvalidValue(
            "an available decision has an unavailable_reason".into(),
        )),
        (true, None, false) => Err(InvalidValue(
            "an available decision is marked out of the study".into(),
        )),
        (false, reason, true) => Availability::unavailable(reason),
        (false, Some(reason), false) => OutOfStudy::parse(&reason).map(Availability::OutOfStudy),
        (false, None, false) => Err(InvalidValue(
            "a decision out of the study has no reason".into(),
        )),
    }
}

impl TryFrom<ActionRow> for Decision {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> Result<Self, StoreError> {
        row.into_decision(|text| json_object(&text), |text| state(&text))
    }
}

impl ActionRow {
    /// The decision, its context and state made by `context` and `state` from their text.
    pub(crate) fn into_decision<C, S>(
        self,
        context: impl FnOnce(String) -> Result<C, InvalidValue>,
        state: impl FnOnce(String) -> Result<S, InvalidValue>,
    ) -> Result<Decision<C, S>, StoreError> {
        let row = self;
        let id = row.id;
        let bad = |e: InvalidValue| invalid("actions", id, e);
        let decision = Decision {
            user_id: UserId::parse(row.user_id).map_err(bad)?,
            decision_type: DecisionType::parse(row.decision_type).map_err(bad)?,
            decision_idx: DecisionIdx::new(row.decision_idx).map_err(bad)?,
            requested_at: parse_time(&row.request_timestamp).map_err(bad)?,
            sent_timestamp: row.sent_timestamp,
            decided_at: parse_time(&row.created_at).map_err(bad)?,
            availability: availability(row.available, row.unavailable_reason, row.in_study)
                .map_err(bad)?,
            context: context(row.context).map_err(bad)?,
            state: state(row.state).map_err(bad)?,
            action: Action::from_i64(row.action.into()).map_err(bad)?,
            action_prob: Probability::new(row.action_prob).map_err(bad)?,
            parameter_version: row.parameter_version,
            // Stored bit for bit in a signed INTEGER; see `DecisionValues::new`.
            rng_seed: row.rng_seed.cast_unsigned(),
            policy: Policy::from_stored(&row.policy, row.fallback_reason, row.decided_by)
                .map_err(bad)?,
        };
        let drawn = decision.action != Action::Zero || decision.action_prob.get() != 0.0;
        if !decision.availability.is_available() && drawn {
            return Err(bad(InvalidValue(
                "an unavailable decision has an action or probability other than 0".into(),
            )));
        }
        Ok(decision)
    }
}

/// The values `record_decision` binds, converted once.
pub(crate) struct DecisionValues<'a> {
    pub user_id: &'a str,
    pub decision_type: &'a str,
    pub decision_idx: i64,
    pub requested_at: String,
    pub sent_timestamp: &'a str,
    pub decided_at: String,
    pub context: String,
    pub state: String,
    pub action: i16,
    pub action_prob: f64,
    pub parameter_version: i64,
    pub rng_seed: i64,
    pub available: bool,
    pub unavailable_reason: Option<&'a str>,
    pub policy: &'static str,
    pub fallback_reason: Option<&'a str>,
    pub decided_by: Option<&'a str>,
    pub in_study: bool,
}

/// The columns of a decision's row that take work to write out: its times and its JSON. The
/// store makes them on the caller's thread, so the writer's one thread only runs statements.
#[derive(Debug)]
pub(crate) struct DecisionText {
    requested_at: String,
    decided_at: String,
    context: String,
    state: String,
}

impl DecisionText {
    pub(crate) fn new(d: &Decision) -> Result<Self, StoreError> {
        Ok(Self {
            requested_at: fmt_time(d.requested_at),
            decided_at: fmt_time(d.decided_at),
            context: json_text(&d.context)?,
            state: json_text(&d.state)?,
        })
    }
}

impl<'a> DecisionValues<'a> {
    #[cfg(test)]
    pub(crate) fn new(d: &'a Decision) -> Result<Self, StoreError> {
        Ok(Self::with_text(d, DecisionText::new(d)?))
    }

    /// The values of `d`, with `text` made from it by [`DecisionText::new`].
    pub(crate) fn with_text(d: &'a Decision, text: DecisionText) -> Self {
        Self {
            user_id: d.user_id.as_str(),
            decision_type: d.decision_type.as_str(),
            decision_idx: d.decision_idx.get(),
            requested_at: text.requested_at,
            sent_timestamp: &d.sent_timestamp,
            decided_at: text.decided_at,
            context: text.context,
            state: text.state,
            action: d.action.as_i16(),
            action_prob: d.action_prob.get(),
            parameter_version: d.parameter_version,
            // SQLite integers are signed 64-bit; the seed keeps its 64 bits, read back the
            // same way (and PostgreSQL's BIGINT column holds the same value).
            rng_seed: d.rng_seed.cast_signed(),
            available: d.availability.is_available(),
            unavailable_reason: d.availability.reason(),
            policy: d.policy.as_str(),
            fallback_reason: d.policy.fallback_reason(),
            decided_by: d.policy.decided_by(),
            in_study: d.availability.in_study(),
        }
    }
}

/// A row of `study_data`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = study_data, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct StudyRow {
    pub id: i64,
    pub user_id: String,
    pub decision_idx: i64,
    pub request_timestamp: String,
    pub created_at: String,
    pub context: String,
    pub action: i16,
    pub action_prob: f64,
    pub state: String,
    pub outcome: String,
    pub reward: f64,
    pub action_logged: bool,
    pub decision_type: String,
    pub available: bool,
    pub sent_timestamp: String,
    pub policy: Option<String>,
}

impl TryFrom<StudyRow> for StudyRecord {
    type Error = StoreError;

    fn try_from(row: StudyRow) -> Result<Self, StoreError> {
        let id = row.id;
        let bad = |e: InvalidValue| invalid("study_data", id, e);
        Ok(StudyRecord {
            user_id: UserId::parse(row.user_id).map_err(bad)?,
            decision_type: DecisionType::parse(row.decision_type).map_err(bad)?,
            decision_idx: DecisionIdx::new(row.decision_idx).map_err(bad)?,
            requested_at: parse_time(&row.request_timestamp).map_err(bad)?,
            sent_timestamp: row.sent_timestamp,
            received_at: parse_time(&row.created_at).map_err(bad)?,
            context: json_object(&row.context).map_err(bad)?,
            action: Action::from_i64(row.action.into()).map_err(bad)?,
            action_prob: Probability::new(row.action_prob).map_err(bad)?,
            state: state(&row.state).map_err(bad)?,
            outcome: json_object(&row.outcome).map_err(bad)?,
            reward: row.reward,
            available: row.available,
        })
    }
}

/// The values `record_study_data` binds, converted once.
pub(crate) struct StudyValues<'a> {
    pub user_id: &'a str,
    pub decision_type: &'a str,
    pub decision_idx: i64,
    pub requested_at: String,
    pub sent_timestamp: &'a str,
    pub received_at: String,
    pub context: String,
    pub action: i16,
    pub action_prob: f64,
    pub state: String,
    pub outcome: String,
    pub reward: f64,
}

impl<'a> StudyValues<'a> {
    pub(crate) fn new(r: &'a StudyRecord) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: r.user_id.as_str(),
            decision_type: r.decision_type.as_str(),
            decision_idx: r.decision_idx.get(),
            requested_at: fmt_time(r.requested_at),
            sent_timestamp: &r.sent_timestamp,
            received_at: fmt_time(r.received_at),
            context: json_text(&r.context)?,
            action: r.action.as_i16(),
            action_prob: r.action_prob.get(),
            state: json_text(&r.state)?,
            outcome: json_text(&r.outcome)?,
            reward: r.reward,
        })
    }
}

/// What the analysis export shows of an upload: the columns of `study_data` that are not the
/// decision's own.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = study_data, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct UploadColumns {
    pub id: i64,
    pub request_timestamp: String,
    pub created_at: String,
    pub outcome: String,
    pub reward: f64,
    pub sent_timestamp: String,
}

impl UploadColumns {
    /// The upload as exported, with the version of the first update that used it, its outcome
    /// made by `outcome` from its text.
    fn exported<O>(
        self,
        used_in_version: Option<i64>,
        outcome: impl FnOnce(String) -> Result<O, InvalidValue>,
    ) -> Result<ExportedUpload<O>, StoreError> {
        let bad = |e: InvalidValue| invalid("study_data", self.id, e);
        Ok(ExportedUpload {
            requested_at: parse_time(&self.request_timestamp).map_err(bad)?,
            sent_timestamp: self.sent_timestamp,
            received_at: parse_time(&self.created_at).map_err(bad)?,
            outcome: outcome(self.outcome).map_err(bad)?,
            reward: self.reward,
            used_in_version,
            corrections: 0,
        })
    }
}

/// A decision with its upload, if any, as the export reads them.
#[derive(Debug)]
pub(crate) struct ExportRecord {
    pub decision: ActionRow,
    pub upload: Option<UploadColumns>,
    /// The parameter version of the first update that used the upload (none without one).
    pub used_in_version: Option<i64>,
    /// The parameter version of the first update that learned from the decision with its
    /// default reward, and that reward (none when no update did).
    pub imputed_in_version: Option<i64>,
    pub imputed_reward: Option<f64>,
    /// The upload's newest correction and how many it has, when it has any.
    pub correction: Option<(crate::corrections::CorrectionRow, u32)>,
}

impl ExportRecord {
    /// The row, its context, state and outcome made by `object` and `state` from their text.
    /// An upload's newest correction is the value in force: its outcome is serialised by
    /// `corrected` from the parsed correction.
    fn into_row<C, S>(
        self,
        object: impl Fn(String) -> Result<C, InvalidValue>,
        state: impl FnOnce(String) -> Result<S, InvalidValue>,
        corrected: impl FnOnce(JsonObject) -> Result<C, StoreError>,
    ) -> Result<ExportRow<C, S>, StoreError> {
        let used_in_version = self.used_in_version;
        let correction = self.correction;
        let upload = match self.upload {
            Some(upload) => {
                let mut exported = upload.exported(used_in_version, &object)?;
                // The value in force: the newest correction's.
                if let Some((newest, count)) = correction {
                    let newest = newest.into_correction(count)?;
                    exported.outcome = corrected(newest.outcome)?;
                    exported.reward = newest.reward;
                    exported.corrections = count;
                }
                Some(exported)
            }
            None => None,
        };
        Ok(ExportRow {
            decision: self.decision.into_decision(&object, state)?,
            upload,
            imputed: match (self.imputed_in_version, self.imputed_reward) {
                (Some(version), Some(reward)) => Some(ImputedReward { version, reward }),
                _ => None,
            },
        })
    }
}

impl TryFrom<ExportRecord> for ExportRow {
    type Error = StoreError;

    fn try_from(row: ExportRecord) -> Result<Self, StoreError> {
        row.into_row(|text| json_object(&text), |text| state(&text), Ok)
    }
}

/// The row with the stored text of its context, state and outcome passed through unparsed:
/// the compact text the service wrote, which is what [`ExportRow::to_line`] gives of the
/// parsed row. A correction's outcome is serialised the same way.
impl TryFrom<ExportRecord> for ExportLine {
    type Error = StoreError;

    fn try_from(row: ExportRecord) -> Result<Self, StoreError> {
        row.into_row(Ok, Ok, |outcome| {
            serde_json::to_string(&outcome).map_err(other)
        })
    }
}

/// The draw a logged decision holds, read without the rest of its row: what an upload for its
/// key is compared with.
impl TryFrom<ActionRow> for ActionChoice {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> Result<Self, StoreError> {
        let bad = |e: InvalidValue| invalid("actions", row.id, e);
        Ok(ActionChoice {
            action: Action::from_i64(row.action.into()).map_err(bad)?,
            action_prob: Probability::new(row.action_prob).map_err(bad)?,
        })
    }
}

/// A row of `model_parameters`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = model_parameters, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct ParametersRow {
    pub version: i64,
    pub algorithm: String,
    pub parameters: String,
    pub created_at: String,
}

impl ParametersRow {
    /// The row that stores `values` as `version`.
    pub(crate) fn new(
        version: i64,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            version,
            algorithm: algorithm.to_owned(),
            parameters: json_text(values)?,
            created_at: fmt_time(created_at),
        })
    }
}

impl TryFrom<ParametersRow> for ModelParameters {
    type Error = StoreError;

    fn try_from(row: ParametersRow) -> Result<Self, StoreError> {
        let version = row.version;
        let bad = |e: InvalidValue| invalid("model_parameters", version, e);
        Ok(ModelParameters {
            version,
            algorithm: row.algorithm,
            values: json(&row.parameters).map_err(bad)?,
            created_at: parse_time(&row.created_at).map_err(bad)?,
        })
    }
}

/// A row of `model_update_requests`.
#[derive(Debug, Clone, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = model_update_requests, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct UpdateRow {
    pub id: String,
    pub request_timestamp: String,
    pub created_at: String,
    pub callback_url: String,
    pub status: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub parameter_version: Option<i64>,
    pub attempts: i32,
    pub started_at: Option<String>,
    pub callback_status: String,
    pub callback_attempts: i32,
    pub callback_error: Option<String>,
    pub callback_finished_at: Option<String>,
    pub sent_timestamp: String,
}

/// A count kept as `u32` in the core and a 32-bit integer here (as in PostgreSQL).
pub(crate) fn count_column(n: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| other(format!("{what} {n} does not fit the database column")))
}

/// A UUID as stored: lower-case and hyphenated, as PostgreSQL writes it.
pub(crate) fn uuid_text(id: uuid::Uuid) -> String {
    id.as_hyphenated().to_string()
}

impl TryFrom<&UpdateRequest> for UpdateRow {
    type Error = StoreError;

    fn try_from(r: &UpdateRequest) -> Result<Self, StoreError> {
        Ok(Self {
            id: uuid_text(r.id),
            request_timestamp: fmt_time(r.requested_at),
            created_at: fmt_time(r.received_at),
            callback_url: r.callback_url.clone(),
            status: r.status.as_str().to_owned(),
            finished_at: r.finished_at.map(fmt_time),
            error: r.error.clone(),
            parameter_version: r.parameter_version,
            attempts: count_column(r.attempts, "attempts")?,
            started_at: r.started_at.map(fmt_time),
            callback_status: r.callback.status.as_str().to_owned(),
            callback_attempts: count_column(r.callback.attempts, "callback attempts")?,
            callback_error: r.callback.last_error.clone(),
            callback_finished_at: r.callback.finished_at.map(fmt_time),
            sent_timestamp: r.sent_timestamp.clone(),
        })
    }
}

/// A row of `update_provenance`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = update_provenance, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct ProvenanceRow {
    pub update_id: String,
    pub parameter_version: i64,
    pub service_version: String,
    pub algorithm: String,
    pub config_hash: String,
    pub rows_read: i64,
    pub backup_file: Option<String>,
    pub created_at: String,
    pub last_study_data_id: i64,
    pub included_policies: String,
    pub last_action_id: Option<i64>,
    pub imputed_decided_by: Option<String>,
    pub default_reward: Option<f64>,
    pub imputed_rows: Option<i64>,
    /// The job's correction watermark; `new` leaves it `None` for the job to set.
    pub last_correction_id: Option<i64>,
}

impl ProvenanceRow {
    /// The record stored for update `update_id`, which produced `parameter_version` from the
    /// study data up to id `last_study_data_id` and, when it imputed rewards, the decisions up
    /// to id `last_action_id`.
    pub(crate) fn new(
        update_id: uuid::Uuid,
        parameter_version: i64,
        p: &Provenance,
        created_at: DateTime<Utc>,
        (last_study_data_id, last_action_id): (i64, i64),
    ) -> Result<Self, StoreError> {
        let imputed = p.imputed.as_ref();
        Ok(Self {
            last_action_id: imputed.map(|_| last_action_id),
            imputed_decided_by: imputed.map(|i| fmt_time(i.decided_by)),
            default_reward: imputed.map(|i| i.default_reward),
            imputed_rows: imputed
                .map(|i| i64::try_from(i.rows))
                .transpose()
                .map_err(other)?,
            update_id: uuid_text(update_id),
            parameter_version,
            service_version: p.service_version.clone(),
            algorithm: p.algorithm.clone(),
            config_hash: p.config_hash.clone(),
            rows_read: i64::try_from(p.rows_read).map_err(other)?,
            backup_file: p.backup_file.clone(),
            created_at: fmt_time(created_at),
            last_study_data_id,
            included_policies: p.included_policies.clone(),
            last_correction_id: None,
        })
    }
}

/// Reads a stored request and, for a completed one, its provenance.
pub(crate) fn update_request(
    row: UpdateRow,
    provenance: Option<ProvenanceRow>,
) -> Result<UpdateRequest, StoreError> {
    let bad = |e: InvalidValue| invalid("model_update_requests", &row.id, e);
    let id = uuid::Uuid::parse_str(&row.id)
        .map_err(|e| bad(InvalidValue(format!("not a UUID: {e}"))))?;
    let count = |n: i32, what: &str| {
        u32::try_from(n).map_err(|_| bad(InvalidValue(format!("negative {what} {n}"))))
    };
    let provenance = provenance
        .map(|p| {
            Ok::<_, StoreError>(Provenance {
                service_version: p.service_version,
                algorithm: p.algorithm,
                config_hash: p.config_hash,
                rows_read: u64::try_from(p.rows_read).map_err(|_| {
                    invalid(
                        "update_provenance",
                        id,
                        format!("negative rows_read {}", p.rows_read),
                    )
                })?,
                backup_file: p.backup_file,
                included_policies: p.included_policies,
                imputed: match (p.imputed_decided_by, p.default_reward, p.imputed_rows) {
                    (Some(decided_by), Some(default_reward), Some(rows)) => Some(ImputedRewards {
                        decided_by: parse_time(&decided_by)
                            .map_err(|e| invalid("update_provenance", id, e))?,
                        default_reward,
                        rows: u64::try_from(rows).map_err(|_| {
                            invalid(
                                "update_provenance",
                                id,
                                format!("negative imputed_rows {rows}"),
                            )
                        })?,
                    }),
                    _ => None,
                },
            })
        })
        .transpose()?;
    Ok(UpdateRequest {
        id,
        requested_at: parse_time(&row.request_timestamp).map_err(bad)?,
        sent_timestamp: row.sent_timestamp.clone(),
        received_at: parse_time(&row.created_at).map_err(bad)?,
        status: UpdateStatus::parse(&row.status).map_err(bad)?,
        finished_at: parse_optional_time(row.finished_at.as_deref()).map_err(bad)?,
        parameter_version: row.parameter_version,
        attempts: count(row.attempts, "attempts")?,
        started_at: parse_optional_time(row.started_at.as_deref()).map_err(bad)?,
        callback: CallbackDelivery {
            status: CallbackStatus::parse(&row.callback_status).map_err(bad)?,
            attempts: count(row.callback_attempts, "callback_attempts")?,
            last_error: row.callback_error.clone(),
            finished_at: parse_optional_time(row.callback_finished_at.as_deref()).map_err(bad)?,
        },
        callback_url: row.callback_url.clone(),
        error: row.error.clone(),
        provenance,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_stored_with_six_digits_in_utc_and_read_from_postgres_too() {
        let t = DateTime::from_timestamp(1_735_732_800, 123_000).unwrap();
        assert_eq!(fmt_time(t), "2025-01-01T12:00:00.000123Z");
        assert_eq!(parse_time(&fmt_time(t)).unwrap(), t);
        let pg = parse_time("2025-01-01 12:00:00.000123+00").unwrap();
        assert_eq!(pg, t);
        let shifted = parse_time("2025-01-01 14:00:00.000123+02").unwrap();
        assert_eq!(shifted, t);
        let whole = parse_time("2025-01-01 12:00:00+00:00").unwrap();
        assert_eq!(whole, DateTime::from_timestamp(1_735_732_800, 0).unwrap());
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn text_order_is_time_order() {
        let early = DateTime::from_timestamp(1_000, 999_999_000).unwrap();
        let late = DateTime::from_timestamp(1_001, 0).unwrap();
        assert!(fmt_time(early) < fmt_time(late));
    }

    fn action_row() -> ActionRow {
        ActionRow {
            id: 7,
            user_id: "u".into(),
            decision_idx: 3,
            request_timestamp: "2025-01-01T00:00:00.000000Z".into(),
            created_at: "2025-01-01T00:00:00.000000Z".into(),
            context: r#"{"x":1}"#.into(),
            state: "[1,2.5]".into(),
            action: 1,
            action_prob: 0.25,
            parameter_version: 1,
            rng_seed: -1,
            decision_type: "default".into(),
            available: true,
            unavailable_reason: None,
            sent_timestamp: "2025-01-01T00:00:00Z".into(),
            policy: "algorithm".into(),
            fallback_reason: None,
            decided_by: None,
            in_study: true,
        }
    }

    #[test]
    fn rng_seed_round_trips_all_64_bits() {
        let decision = Decision::try_from(action_row()).unwrap();
        assert_eq!(decision.rng_seed, u64::MAX);
        let values = DecisionValues::new(&decision).unwrap();
        assert_eq!(values.rng_seed, -1);
        assert_eq!(values.state, "[1,2.5]");
    }

    #[test]
    fn availability_round_trips_and_inconsistent_rows_are_errors() {
        let off = ActionRow {
            decision_type: "evening".into(),
            available: false,
            unavailable_reason: Some("asleep".into()),
            action: 0,
            action_prob: 0.0,
            ..action_row()
        };
        let decision = Decision::try_from(off).unwrap();
        assert_eq!(decision.decision_type.as_str(), "evening");
        assert_eq!(decision.availability.reason(), Some("asleep"));
        let values = DecisionValues::new(&decision).unwrap();
        assert!(!values.available);
        assert_eq!(values.unavailable_reason, Some("asleep"));
        assert_eq!(values.decision_type, "evening");

        let refused = [
            // A reason on an available decision.
            ActionRow {
                unavailable_reason: Some("asleep".into()),
                ..action_row()
            },
            // An unavailable decision with a draw.
            ActionRow {
                available: false,
                ..action_row()
            },
            // A type the service would not accept.
            ActionRow {
                decision_type: "two words".into(),
                ..action_row()
            },
        ];
        for row in refused {
            match Decision::try_from(row) {
                Err(StoreError::Other(e)) => {
                    assert!(e.to_string().contains("invalid row 7 in actions"), "{e}");
                }
                other => panic!("expected an error naming the row, got {other:?}"),
            }
        }
    }
}
