//! Rows as Diesel reads and writes them, and their conversions to and from the core's types.
//!
//! Reading goes through `TryFrom`: the database's checks mirror the core's invariants, but a
//! row edited by hand or written by an older version could still break them, and such a row
//! must surface as a [`StoreError::Other`] rather than a panic or a silently wrong value.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use justin_core::{
    Action, ActionChoice, Availability, CallbackDelivery, CallbackStatus, Decision, DecisionIdx,
    DecisionType, ExportRow, ExportedUpload, InvalidValue, JsonObject, ModelParameters,
    Probability, Provenance, State, StoreError, StudyRecord, UpdateRequest, UpdateStatus, UserId,
};

use crate::error::other;
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance,
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

/// Says which table and row held an invalid value.
fn invalid(table: &str, id: impl std::fmt::Display, e: impl std::fmt::Display) -> StoreError {
    other(format!("invalid row {id} in {table}: {e}"))
}

fn json_object(value: serde_json::Value) -> Result<JsonObject, InvalidValue> {
    match value {
        serde_json::Value::Object(map) => Ok(map),
        other => Err(InvalidValue(format!(
            "expected a JSON object, found {other}"
        ))),
    }
}

fn state(value: serde_json::Value) -> Result<State, InvalidValue> {
    let values: Vec<f64> = serde_json::from_value(value)
        .map_err(|e| InvalidValue(format!("state is not a list of numbers: {e}")))?;
    State::new(values)
}

fn state_json(state: &State) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(state).map_err(other)
}

/// A stored decision's availability, checked against what the schema's constraints promise:
/// only an unavailable decision has a reason, and it has action 0 with probability 0. The
/// reason is returned as stored, not checked again against the rules for new requests.
fn availability(
    available: bool,
    reason: Option<String>,
    action: Action,
    action_prob: Probability,
) -> Result<Availability, InvalidValue> {
    match (available, reason) {
        (true, None) => Ok(Availability::Available),
        (true, Some(_)) => Err(InvalidValue(
            "an available decision has an unavailable_reason".into(),
        )),
        (false, reason) if action == Action::Zero && action_prob == Probability::ZERO => {
            Ok(Availability::Unavailable { reason })
        }
        (false, _) => Err(InvalidValue(
            "an unavailable decision has an action other than 0 with probability 0".into(),
        )),
    }
}

/// A row of `actions`.
#[derive(Debug, Queryable, Selectable)]
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
            availability: availability(row.available, row.unavailable_reason, action, action_prob)
                .map_err(bad)?,
            context: json_object(row.context).map_err(bad)?,
            state: state(row.state).map_err(bad)?,
            action,
            action_prob,
            parameter_version: row.parameter_version,
            // Stored bit for bit in a BIGINT; see `DecisionValues::new`.
            rng_seed: row.rng_seed.cast_unsigned(),
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
    pub outcome: serde_json::Value,
    pub reward: f64,
    pub sent_timestamp: String,
}

/// A decision with its upload, if any: one row of the analysis export.
#[derive(Debug, Queryable)]
pub(crate) struct ExportDbRow {
    pub decision: ActionRow,
    pub upload: Option<ExportedUploadRow>,
    /// The version of the first update that read the upload, worked out from the updates'
    /// watermarks; `None` when none has, or there is no upload.
    pub used_in_version: Option<i64>,
}

impl TryFrom<ExportDbRow> for ExportRow {
    type Error = StoreError;

    fn try_from(row: ExportDbRow) -> Result<Self, StoreError> {
        let used_in_version = row.used_in_version;
        let upload = row
            .upload
            .map(|u| {
                let id = u.id;
                Ok::<_, StoreError>(ExportedUpload {
                    requested_at: u.request_timestamp,
                    sent_timestamp: u.sent_timestamp,
                    received_at: u.created_at,
                    outcome: json_object(u.outcome).map_err(|e| invalid("study_data", id, e))?,
                    reward: u.reward,
                    used_in_version,
                })
            })
            .transpose()?;
        Ok(ExportRow {
            decision: row.decision.try_into()?,
            upload,
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
}

impl ProvenanceRow {
    /// The record stored for update `update_id`, which produced `parameter_version` from the
    /// study data up to id `last_study_data_id`.
    pub(crate) fn new(
        update_id: uuid::Uuid,
        parameter_version: i64,
        p: &Provenance,
        created_at: DateTime<Utc>,
        last_study_data_id: i64,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            update_id,
            parameter_version,
            service_version: p.service_version.clone(),
            algorithm: p.algorithm.clone(),
            config_hash: p.config_hash.clone(),
            rows_read: i64::try_from(p.rows_read).map_err(other)?,
            backup_file: p.backup_file.clone(),
            created_at,
            last_study_data_id,
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
