//! Rows as Diesel reads and writes them, and their conversions to and from the core's types.
//!
//! Reading goes through `TryFrom`: the database's checks mirror the core's invariants, but a
//! row edited by hand or written by an older version could still break them, and such a row
//! must surface as a [`StoreError::Other`] rather than a panic or a silently wrong value.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use justin_core::{
    Action, ActionChoice, Availability, CallbackDelivery, CallbackStatus, Decision, DecisionIdx,
    DecisionType, Enrollment, Erasure, ExportLine, ExportRow, ExportedUpload, ImputedReward,
    ImputedRewards, InvalidValue, JsonObject, ModelParameters, OutOfStudy, Participant, Policy,
    Probability, Provenance, SentTime, State, StoreError, StudyRecord, UpdateRequest, UpdateStatus,
    UserId, Withdrawal,
};

use crate::error::other;
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, study_data, update_provenance,
    users,
};

/// A JSON object written as `json` straight from the core's map: no copy into a
/// `serde_json::Value` on the way to the database.
#[derive(Debug, Clone, Copy, diesel::expression::AsExpression)]
#[diesel(sql_type = diesel::sql_types::Json)]
pub(crate) struct JsonObjectText<'a>(pub &'a JsonObject);

impl diesel::serialize::ToSql<diesel::sql_types::Json, diesel::pg::Pg> for JsonObjectText<'_> {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        // `json`'s binary format is the JSON text, which the column keeps as it is.
        serde_json::to_writer(out, self.0)?;
        Ok(diesel::serialize::IsNull::No)
    }
}

/// A `json` column read as the text it holds, unparsed: the export passes it through.
#[derive(Debug, diesel::deserialize::FromSqlRow)]
pub(crate) struct JsonText(pub String);

impl diesel::deserialize::FromSql<diesel::sql_types::Json, diesel::pg::Pg> for JsonText {
    fn from_sql(value: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<Self> {
        // `json`'s binary format is the JSON text, as the column keeps it.
        Ok(Self(std::str::from_utf8(value.as_bytes())?.to_owned()))
    }
}

/// A JSON object from its text.
pub(crate) fn json_object_text(text: &str) -> Result<JsonObject, InvalidValue> {
    json_object(serde_json::from_str(text).map_err(|e| InvalidValue(format!("invalid JSON: {e}")))?)
}

/// A state from its text.
pub(crate) fn state_text(text: &str) -> Result<State, InvalidValue> {
    let values: Vec<f64> = serde_json::from_str(text)
        .map_err(|e| InvalidValue(format!("state is not a list of numbers: {e}")))?;
    State::new(values)
}

/// Says which table and row held an invalid value.
pub(crate) fn invalid(
    table: &str,
    id: impl std::fmt::Display,
    e: impl std::fmt::Display,
) -> StoreError {
    other(format!("invalid row {id} in {table}: {e}"))
}

pub(crate) fn json_object(value: serde_json::Value) -> Result<JsonObject, InvalidValue> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(InvalidValue(format!(
            "expected a JSON object, found {other}"
        ))),
    }
}

pub(crate) fn state(value: serde_json::Value) -> Result<State, InvalidValue> {
    let values: Vec<f64> = serde_json::from_value(value)
        .map_err(|e| InvalidValue(format!("state is not a list of numbers: {e}")))?;
    State::new(values)
}

fn state_json(state: &State) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(state).map_err(other)
}

/// A stored decision's availability, checked against what the schema's constraints promise:
/// only an unavailable decision has a reason, and it has action 0 with probability 0; a
/// decision out of the study is unavailable with the service's word as its reason. A client's
/// reason is returned as stored, not checked again against the rules for new requests.
fn availability(
    available: bool,
    in_study: bool,
    reason: Option<String>,
    action: Action,
    action_prob: Probability,
) -> Result<Availability, InvalidValue> {
    match (available, reason) {
        (true, None) if in_study => Ok(Availability::Available),
        (true, _) if !in_study => Err(InvalidValue(
            "a decision out of the study is available".into(),
        )),
        (true, _) => Err(InvalidValue(
            "an available decision has an unavailable_reason".into(),
        )),
        (false, reason) if action == Action::Zero && action_prob == Probability::ZERO => {
            if in_study {
                Ok(Availability::Unavailable { reason })
            } else {
                let word = reason.ok_or_else(|| {
                    InvalidValue("a decision out of the study has no reason".into())
                })?;
                Ok(Availability::OutOfStudy(OutOfStudy::parse(&word)?))
            }
        }
        (false, _) => Err(InvalidValue(
            "an unavailable decision has an action other than 0 with probability 0".into(),
        )),
    }
}

/// A row of `actions` (read by name from the cursor of decisions an update imputes rewards
/// for).
#[derive(Debug, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = actions, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ActionRow {
    pub id: i64,
    pub user_id: String,
    pub decision_idx: i64,
    pub request_timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub context: serde_json::Value,
    pub state: serde_json::Value,
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

impl TryFrom<ActionRow> for Decision {
    type Error = StoreError;

    fn try_from(row: ActionRow) -> Result<Self, StoreError> {
        let id = row.id;
        let bad = |e: InvalidValue| invalid("actions", id, e);
        let action = Action::from_i64(row.action.into()).map_err(bad)?;
        let action_prob = Probability::new(row.action_prob).map_err(bad)?;
        Ok(Decision {
            user_id: UserId::parse(row.user_id).map_err(bad)?,
            decision_type: DecisionType::parse(row.decision_type).map_err(bad)?,
            decision_idx: DecisionIdx::new(row.decision_idx).map_err(bad)?,
            requested_at: row.request_timestamp,
            sent_timestamp: row.sent_timestamp,
            decided_at: row.created_at,
            availability: availability(
                row.available,
                row.in_study,
                row.unavailable_reason,
                action,
                action_prob,
            )
            .map_err(bad)?,
            context: json_object(row.context).map_err(bad)?,
            state: state(row.state).map_err(bad)?,
            action,
            action_prob,
            parameter_version: row.parameter_version,
            // Stored bit for bit in a BIGINT; see `DecisionValues::new`.
            rng_seed: row.rng_seed.cast_unsigned(),
            policy: Policy::from_stored(&row.policy, row.fallback_reason, row.decided_by)
                .map_err(bad)?,
        })
    }
}

/// The values `record_decision` binds, converted once.
pub(crate) struct DecisionValues<'a> {
    pub user_id: &'a str,
    pub decision_type: &'a str,
    pub decision_idx: i64,
    pub requested_at: DateTime<Utc>,
    pub sent_timestamp: &'a str,
    pub decided_at: DateTime<Utc>,
    pub context: JsonObjectText<'a>,
    pub state: serde_json::Value,
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

impl<'a> DecisionValues<'a> {
    pub(crate) fn new(d: &'a Decision) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: d.user_id.as_str(),
            decision_type: d.decision_type.as_str(),
            decision_idx: d.decision_idx.get(),
            requested_at: d.requested_at,
            sent_timestamp: &d.sent_timestamp,
            decided_at: d.decided_at,
            context: JsonObjectText(&d.context),
            state: state_json(&d.state)?,
            action: d.action.as_i16(),
            action_prob: d.action_prob.get(),
            parameter_version: d.parameter_version,
            // PostgreSQL has no unsigned BIGINT; the seed keeps its 64 bits, read back the
            // same way.
            rng_seed: d.rng_seed.cast_signed(),
            available: d.availability.is_available(),
            unavailable_reason: d.availability.reason(),
            policy: d.policy.as_str(),
            fallback_reason: d.policy.fallback_reason(),
            decided_by: d.policy.decided_by(),
            in_study: d.availability.in_study(),
        })
    }
}

/// A row of `study_data`.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = study_data, check_for_backend(diesel::pg::Pg))]
pub(crate) struct StudyRow {
    pub id: i64,
    pub user_id: String,
    pub decision_idx: i64,
    pub request_timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub context: serde_json::Value,
    pub action: i16,
    pub action_prob: f64,
    pub state: serde_json::Value,
    pub outcome: serde_json::Value,
    pub reward: f64,
    pub decision_type: String,
    pub available: bool,
    pub sent_timestamp: String,
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
            requested_at: row.request_timestamp,
            sent_timestamp: row.sent_timestamp,
            received_at: row.created_at,
            context: json_object(row.context).map_err(bad)?,
            action: Action::from_i64(row.action.into()).map_err(bad)?,
            action_prob: Probability::new(row.action_prob).map_err(bad)?,
            state: state(row.state).map_err(bad)?,
            outcome: json_object(row.outcome).map_err(bad)?,
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
    pub requested_at: DateTime<Utc>,
    pub sent_timestamp: &'a str,
    pub received_at: DateTime<Utc>,
    pub context: serde_json::Value,
    pub action: i16,
    pub action_prob: f64,
    pub state: serde_json::Value,
    pub outcome: serde_json::Value,
    pub reward: f64,
}

impl<'a> StudyValues<'a> {
    pub(crate) fn new(r: &'a StudyRecord) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: r.user_id.as_str(),
            decision_type: r.decision_type.as_str(),
            decision_idx: r.decision_idx.get(),
            requested_at: r.requested_at,
            sent_timestamp: &r.sent_timestamp,
            received_at: r.received_at,
            context: serde_json::Value::Object(r.context.clone()),
            action: r.action.as_i16(),
            action_prob: r.action_prob.get(),
            state: state_json(&r.state)?,
            outcome: serde_json::Value::Object(r.outcome.clone()),
            reward: r.reward,
        })
    }
}

/// What the analysis export shows of an upload: the columns of `study_data` that the decision
/// it belongs to does not already hold.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = study_data, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ExportedUploadRow {
    pub id: i64,
    pub request_timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub outcome: JsonText,
    pub reward: f64,
    pub sent_timestamp: String,
    /// Whether its decision was available, and its policy: which updates read it.
    pub available: bool,
    pub policy: Option<String>,
}

/// A row of `actions` as the export reads it: the context and the state as their stored text.
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = actions, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ExportedActionRow {
    pub id: i64,
    pub user_id: String,
    pub decision_idx: i64,
    pub request_timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub context: JsonText,
    pub state: JsonText,
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

impl ExportedActionRow {
    /// The decision, its context and state made by `context` and `state` from their text.
    fn into_decision<C, S>(
        self,
        context: impl FnOnce(String) -> Result<C, InvalidValue>,
        state: impl FnOnce(String) -> Result<S, InvalidValue>,
    ) -> Result<Decision<C, S>, StoreError> {
        let id = self.id;
        let bad = |e: InvalidValue| invalid("actions", id, e);
        let action = Action::from_i64(self.action.into()).map_err(bad)?;
        let action_prob = Probability::new(self.action_prob).map_err(bad)?;
        Ok(Decision {
            user_id: UserId::parse(self.user_id).map_err(bad)?,
            decision_type: DecisionType::parse(self.decision_type).map_err(bad)?,
            decision_idx: DecisionIdx::new(self.decision_idx).map_err(bad)?,
            requested_at: self.request_timestamp,
            sent_timestamp: self.sent_timestamp,
            decided_at: self.created_at,
            availability: availability(
                self.available,
                self.in_study,
                self.unavailable_reason,
                action,
                action_prob,
            )
            .map_err(bad)?,
            context: context(self.context.0).map_err(bad)?,
            state: state(self.state.0).map_err(bad)?,
            action,
            action_prob,
            parameter_version: self.parameter_version,
            // Stored bit for bit in a BIGINT; see `DecisionValues::new`.
            rng_seed: self.rng_seed.cast_unsigned(),
            policy: Policy::from_stored(&self.policy, self.fallback_reason, self.decided_by)
                .map_err(bad)?,
        })
    }
}

/// A decision with its upload, if any: one row of the analysis export.
#[derive(Debug)]
pub(crate) struct ExportDbRow {
    pub decision: ExportedActionRow,
    pub upload: Option<ExportedUploadRow>,
    /// The version of the first update that read the upload, worked out from the updates'
    /// watermarks; `None` when none has, or there is no upload.
    pub used_in_version: Option<i64>,
    /// The version of the first update that learned from the decision with its default reward,
    /// and that reward; `None` when none has.
    pub imputed_in_version: Option<i64>,
    pub imputed_reward: Option<f64>,
    /// The upload's newest correction and how many it has, when it has any.
    pub correction: Option<(crate::corrections::CorrectionRow, u32)>,
}

impl ExportDbRow {
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
            Some(u) => {
                let id = u.id;
                let mut exported = ExportedUpload {
                    requested_at: u.request_timestamp,
                    sent_timestamp: u.sent_timestamp,
                    received_at: u.created_at,
                    outcome: object(u.outcome.0).map_err(|e| invalid("study_data", id, e))?,
                    reward: u.reward,
                    used_in_version,
                    corrections: 0,
                };
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

impl TryFrom<ExportDbRow> for ExportRow {
    type Error = StoreError;

    fn try_from(row: ExportDbRow) -> Result<Self, StoreError> {
        row.into_row(|text| json_object_text(&text), |text| state_text(&text), Ok)
    }
}

/// The row with the stored text of its context, state and outcome passed through unparsed:
/// the compact text the service wrote, which is what [`ExportRow::to_line`] gives of the
/// parsed row. A correction's outcome is serialised the same way.
impl TryFrom<ExportDbRow> for ExportLine {
    type Error = StoreError;

    fn try_from(row: ExportDbRow) -> Result<Self, StoreError> {
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
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = model_parameters, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ParametersRow {
    pub version: i64,
    pub algorithm: String,
    pub parameters: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl From<ParametersRow> for ModelParameters {
    fn from(row: ParametersRow) -> Self {
        ModelParameters {
            version: row.version,
            algorithm: row.algorithm,
            values: row.parameters,
            created_at: row.created_at,
        }
    }
}

/// A row of `model_update_requests`.
#[derive(Debug, Queryable, QueryableByName, Selectable, Insertable)]
#[diesel(table_name = model_update_requests, check_for_backend(diesel::pg::Pg))]
pub(crate) struct UpdateRow {
    pub id: uuid::Uuid,
    pub request_timestamp: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub callback_url: String,
    pub status: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub parameter_version: Option<i64>,
    pub attempts: i32,
    pub started_at: Option<DateTime<Utc>>,
    pub callback_status: String,
    pub callback_attempts: i32,
    pub callback_error: Option<String>,
    pub callback_finished_at: Option<DateTime<Utc>>,
    pub sent_timestamp: String,
}

/// A count kept as `u32` in the core and `INTEGER` here.
pub(crate) fn count_column(n: u32, what: &str) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| other(format!("{what} {n} does not fit the database column")))
}

impl TryFrom<&UpdateRequest> for UpdateRow {
    type Error = StoreError;

    fn try_from(r: &UpdateRequest) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            request_timestamp: r.requested_at,
            created_at: r.received_at,
            callback_url: r.callback_url.clone(),
            status: r.status.as_str().to_owned(),
            finished_at: r.finished_at,
            error: r.error.clone(),
            parameter_version: r.parameter_version,
            attempts: count_column(r.attempts, "attempts")?,
            started_at: r.started_at,
            callback_status: r.callback.status.as_str().to_owned(),
            callback_attempts: count_column(r.callback.attempts, "callback attempts")?,
            callback_error: r.callback.last_error.clone(),
            callback_finished_at: r.callback.finished_at,
            sent_timestamp: r.sent_timestamp.clone(),
        })
    }
}

/// A row of `update_provenance`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = update_provenance, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ProvenanceRow {
    pub update_id: uuid::Uuid,
    pub parameter_version: i64,
    pub service_version: String,
    pub algorithm: String,
    pub config_hash: String,
    pub rows_read: i64,
    pub backup_file: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_study_data_id: i64,
    pub included_policies: String,
    pub last_action_id: Option<i64>,
    pub imputed_decided_by: Option<DateTime<Utc>>,
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
            imputed_decided_by: imputed.map(|i| i.decided_by),
            default_reward: imputed.map(|i| i.default_reward),
            imputed_rows: imputed
                .map(|i| i64::try_from(i.rows))
                .transpose()
                .map_err(other)?,
            update_id,
            parameter_version,
            service_version: p.service_version.clone(),
            algorithm: p.algorithm.clone(),
            config_hash: p.config_hash.clone(),
            rows_read: i64::try_from(p.rows_read).map_err(other)?,
            backup_file: p.backup_file.clone(),
            created_at,
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
    let id = row.id;
    let bad = |e: InvalidValue| invalid("model_update_requests", id, e);
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
                        decided_by,
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
        requested_at: row.request_timestamp,
        sent_timestamp: row.sent_timestamp,
        received_at: row.created_at,
        callback_url: row.callback_url,
        status: UpdateStatus::parse(&row.status).map_err(bad)?,
        finished_at: row.finished_at,
        error: row.error,
        parameter_version: row.parameter_version,
        attempts: count(row.attempts, "attempts")?,
        started_at: row.started_at,
        callback: CallbackDelivery {
            status: CallbackStatus::parse(&row.callback_status).map_err(bad)?,
            attempts: count(row.callback_attempts, "callback_attempts")?,
            last_error: row.callback_error,
            finished_at: row.callback_finished_at,
        },
        provenance,
    })
}

/// A row of `users` of a registered participant (an erased one's row is not read back).
#[derive(Debug, Queryable, Selectable)]
#[diesel(table_name = users, check_for_backend(diesel::pg::Pg))]
pub(crate) struct UserRow {
    pub id: i64,
    pub user_id: String,
    pub created_at: DateTime<Utc>,
    pub study_start: Option<DateTime<Utc>>,
    pub study_start_sent: Option<String>,
    pub study_end: Option<DateTime<Utc>>,
    pub study_end_sent: Option<String>,
    pub withdrawn_at: Option<DateTime<Utc>>,
    pub withdrawal_reason: Option<String>,
}

/// A bound of a window from its two columns, which the schema keeps both set or both NULL.
fn sent_time(
    at: Option<DateTime<Utc>>,
    sent: Option<String>,
    name: &str,
) -> Result<Option<SentTime>, InvalidValue> {
    match (at, sent) {
        (Some(at), Some(sent)) => Ok(Some(SentTime { at, sent })),
        (None, None) => Ok(None),
        _ => Err(InvalidValue(format!(
            "{name} and {name}_sent are not both set or both empty"
        ))),
    }
}

impl UserRow {
    /// The participant's window.
    pub(crate) fn enrollment(&self) -> Result<Enrollment, StoreError> {
        let bad = |e: InvalidValue| invalid("users", self.id, e);
        Ok(Enrollment {
            start: sent_time(
                self.study_start,
                self.study_start_sent.clone(),
                "study_start",
            )
            .map_err(bad)?,
            end: sent_time(self.study_end, self.study_end_sent.clone(), "study_end")
                .map_err(bad)?,
        })
    }

    /// The participant with their decision and upload counts.
    pub(crate) fn participant(
        self,
        decisions: i64,
        uploads: i64,
    ) -> Result<Participant, StoreError> {
        let id = self.id;
        let bad = |e: InvalidValue| invalid("users", id, e);
        let enrollment = self.enrollment()?;
        let count = |n: i64, what: &str| {
            u64::try_from(n).map_err(|_| bad(InvalidValue(format!("negative {what} {n}"))))
        };
        Ok(Participant {
            user_id: UserId::parse(self.user_id).map_err(bad)?,
            created_at: self.created_at,
            enrollment,
            withdrawal: self.withdrawn_at.map(|at| Withdrawal {
                at,
                // An erased participant's reason is gone; only a registered one is read here.
                reason: self.withdrawal_reason.unwrap_or_default(),
            }),
            decisions: count(decisions, "decisions")?,
            uploads: count(uploads, "uploads")?,
        })
    }
}

/// A window's four columns, as written to `users` and `participant_events`.
pub(crate) struct WindowValues<'a> {
    pub study_start: Option<DateTime<Utc>>,
    pub study_start_sent: Option<&'a str>,
    pub study_end: Option<DateTime<Utc>>,
    pub study_end_sent: Option<&'a str>,
}

impl<'a> WindowValues<'a> {
    pub(crate) fn new(e: &'a Enrollment) -> Self {
        Self {
            study_start: e.start.as_ref().map(|s| s.at),
            study_start_sent: e.start.as_ref().map(|s| s.sent.as_str()),
            study_end: e.end.as_ref().map(|s| s.at),
            study_end_sent: e.end.as_ref().map(|s| s.sent.as_str()),
        }
    }
}

/// A row of `erasures`.
#[derive(Debug, Queryable, Selectable, Insertable)]
#[diesel(table_name = erasures, check_for_backend(diesel::pg::Pg))]
pub(crate) struct ErasureRow {
    pub id: uuid::Uuid,
    pub erased_at: DateTime<Utc>,
    pub participant_number: i64,
    pub pseudonym: String,
    pub row_counts: serde_json::Value,
    pub backup_file: String,
}

impl ErasureRow {
    /// The record stored for `erasure`, with the participant's row number and the counts.
    pub(crate) fn new(
        erasure: &Erasure,
        participant_number: i64,
        row_counts: &[(String, u64)],
    ) -> Self {
        Self {
            id: erasure.id,
            erased_at: erasure.erased_at,
            participant_number,
            pseudonym: erasure.pseudonym.clone(),
            row_counts: serde_json::Value::Array(
                row_counts
                    .iter()
                    .map(|(table, rows)| serde_json::json!([table, rows]))
                    .collect(),
            ),
            backup_file: erasure.backup_file.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action_row(rng_seed: i64, state: serde_json::Value) -> ActionRow {
        ActionRow {
            id: 7,
            user_id: "u".into(),
            decision_idx: 3,
            request_timestamp: DateTime::UNIX_EPOCH,
            created_at: DateTime::UNIX_EPOCH,
            context: serde_json::json!({"x": 1}),
            state,
            action: 1,
            action_prob: 0.25,
            parameter_version: 1,
            rng_seed,
            decision_type: "default".into(),
            available: true,
            unavailable_reason: None,
            sent_timestamp: "1970-01-01T00:00:00Z".into(),
            policy: "algorithm".into(),
            fallback_reason: None,
            decided_by: None,
            in_study: true,
        }
    }

    #[test]
    fn availability_is_read_with_its_reason() {
        let row = ActionRow {
            action: 0,
            action_prob: 0.0,
            available: false,
            unavailable_reason: Some("driving".into()),
            decision_type: "morning".into(),
            ..action_row(0, serde_json::json!([]))
        };
        let decision = Decision::try_from(row).unwrap();
        assert_eq!(decision.decision_type.as_str(), "morning");
        assert_eq!(
            decision.availability,
            Availability::Unavailable {
                reason: Some("driving".into())
            }
        );
        let values = DecisionValues::new(&decision).unwrap();
        assert!(!values.available);
        assert_eq!(values.unavailable_reason, Some("driving"));
        assert_eq!(values.decision_type, "morning");
    }

    #[test]
    fn availability_that_breaks_the_schema_rules_is_an_error() {
        let drawn_but_unavailable = ActionRow {
            available: false,
            ..action_row(0, serde_json::json!([]))
        };
        let available_with_reason = ActionRow {
            unavailable_reason: Some("why".into()),
            ..action_row(0, serde_json::json!([]))
        };
        let bad_type = ActionRow {
            decision_type: "two words".into(),
            ..action_row(0, serde_json::json!([]))
        };
        for row in [drawn_but_unavailable, available_with_reason, bad_type] {
            assert!(matches!(Decision::try_from(row), Err(StoreError::Other(_))));
        }
    }

    #[test]
    fn rng_seed_round_trips_all_64_bits() {
        let decision = Decision::try_from(action_row(-1, serde_json::json!([1, 2.5]))).unwrap();
        assert_eq!(decision.rng_seed, u64::MAX);
        let values = DecisionValues::new(&decision).unwrap();
        assert_eq!(values.rng_seed, -1);
        assert_eq!(values.state, serde_json::json!([1, 2.5]));
    }

    #[test]
    fn invalid_stored_state_is_an_error_naming_the_row() {
        let err =
            Decision::try_from(action_row(0, serde_json::json!({"not": "a list"}))).unwrap_err();
        assert!(matches!(err, StoreError::Other(_)));
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("row 7 in actions"), "{source}");
    }

    #[test]
    fn unknown_stored_status_is_an_error() {
        let request = UpdateRequest::new(
            uuid::Uuid::nil(),
            DateTime::UNIX_EPOCH,
            "2025-01-01T12:00:00+02:00".into(),
            DateTime::UNIX_EPOCH,
            "http://x".into(),
        );
        let row = |f: fn(&mut UpdateRow)| {
            let mut row = UpdateRow::try_from(&request).unwrap();
            f(&mut row);
            row
        };
        assert_eq!(update_request(row(|_| {}), None).unwrap(), request);
        for broken in [
            row(|r| r.status = "paused".into()),
            row(|r| r.callback_status = "lost".into()),
            row(|r| r.attempts = -1),
        ] {
            assert!(matches!(
                update_request(broken, None),
                Err(StoreError::Other(_))
            ));
        }
    }
}
