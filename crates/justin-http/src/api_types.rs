//! The shapes of the API's requests and answers, as the OpenAPI document ([`crate::openapi`])
//! describes them.
//!
//! Handlers build every success answer from the types here, so the document cannot drift from
//! what is sent. Request bodies are read field by field in [`crate::body`], which keeps the
//! template's exact messages and order of checks; the request types here describe what that
//! reading accepts and are not used to parse.
//!
//! Answer fields are declared in alphabetical order: the service has always written JSON keys
//! sorted, and clients may compare answers as text.

use chrono::{DateTime, SecondsFormat, Utc};
use justin_core::{
    Action, Availability, CallbackStatus, Decision, DecisionType, ModelParameters,
    ParticipantStatus, Policy, Probability, State, UpdateStatus, UserId,
};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// `"success"`: the request did what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Success {
    /// The only value.
    Success,
}

/// `"failed"`: the request was refused or could not be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Failed {
    /// The only value.
    Failed,
}

/// `"processing"`: the update was accepted and runs in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Processing {
    /// The only value.
    Processing,
}

/// The error envelope every refusal and failure answers with.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(examples(json!({"message": "user_id is required.", "status": "failed"})))]
pub struct ErrorResponse {
    /// What was wrong, for a person to read. Client errors say which field and why; server
    /// errors (500) say nothing about their cause.
    pub message: String,
    /// Always `failed`.
    pub status: Failed,
}

/// Answers every route under `/api/v1` may give, shared by the operations of the document.
pub mod responses {
    use utoipa::ToResponse;

    use super::ErrorResponse;

    /// `Authorization: Bearer <key>` is missing or names no configured key (only when
    /// `auth.api_keys` is set).
    #[derive(Debug, ToResponse)]
    pub struct Unauthorized(pub ErrorResponse);

    /// The body is larger than `server.max_body_bytes`
    /// (`Request body is larger than 1048576 bytes.`).
    #[derive(Debug, ToResponse)]
    pub struct PayloadTooLarge(pub ErrorResponse);

    /// The body is not declared as JSON (`Content-Type must be application/json.`).
    #[derive(Debug, ToResponse)]
    pub struct UnsupportedMediaType(pub ErrorResponse);

    /// No database connection within `database.connect_timeout_secs`, or a decision outrun
    /// by new parameter versions on every try
    /// (`The database is unavailable. Try again shortly.`); try again.
    #[derive(Debug, ToResponse)]
    pub struct Unavailable(pub ErrorResponse);

    /// Something unexpected failed (`Internal server error.`); the cause is logged, not
    /// answered.
    #[derive(Debug, ToResponse)]
    pub struct InternalError(pub ErrorResponse);
}

// ---- Requests -------------------------------------------------------------------------------

/// What a participant id may hold: no control characters (Unicode category Cc). The request
/// types repeat it as a literal (the derive takes no constants); a test checks they agree.
pub const USER_ID_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]+$";

/// `POST /api/v1/add_user`.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(
    json!({"user_id": "test_user_123"}),
    json!({
        "user_id": "test_user_123",
        "study_start": "2025-01-06T00:00:00+01:00",
        "study_end": "2025-03-03T00:00:00+01:00"
    })
))]
pub struct AddUserRequest {
    /// The participant's id: 1 to 255 bytes of UTF-8 (JSON Schema counts characters, the
    /// service bytes) without control characters. `null` and `""` count as missing.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// When the participant's time in the study starts (inclusive), in the forms
    /// `ActionRequest.timestamp` takes; stored exactly as sent. Absent or `null`: from
    /// registration on. Decisions whose `timestamp` lies before it are stored without a draw
    /// (`unavailable_reason` `not_in_study`).
    #[schema(min_length = 1, max_length = 64)]
    pub study_start: Option<String>,
    /// When it ends (exclusive), later than `study_start`; stored exactly as sent. Absent or
    /// `null`: open-ended. Decisions at or after it are stored without a draw.
    #[schema(min_length = 1, max_length = 64)]
    pub study_end: Option<String>,
}

/// `PATCH /api/v1/users/{user_id}`: a bound sent replaces the stored one, `null` opens it, an
/// absent one is kept. No other field is accepted.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({"study_end": "2025-03-10T00:00:00+01:00"})))]
pub struct ChangeEnrollmentRequest {
    /// The new start (see `AddUserRequest.study_start`); `null` removes it.
    #[schema(min_length = 1, max_length = 64)]
    pub study_start: Option<String>,
    /// The new end (see `AddUserRequest.study_end`); `null` removes it.
    #[schema(min_length = 1, max_length = 64)]
    pub study_end: Option<String>,
}

/// `POST /api/v1/users/{user_id}/withdraw`.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({"reason": "withdrew consent by phone"})))]
pub struct WithdrawRequest {
    /// Why, as the study records it: 1 to 1024 bytes without control characters. Stored with
    /// the withdrawal; keep identifying details out of it.
    #[schema(min_length = 1, max_length = 1024)]
    pub reason: String,
}

/// `POST /api/v1/host_decision`: a decision the study server made itself while the service
/// was unreachable.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({
    "user_id": "test_user_123",
    "timestamp": "2025-01-01T12:00:00Z",
    "decision_idx": 4,
    "context": {"temperature": 23},
    "action": 1,
    "action_prob": 0.5,
    "decided_by": "app-server-bernoulli-0.5"
})))]
pub struct HostDecisionRequest {
    /// A registered participant (see `add_user` for the id rules).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// The study server's time of the decision (see `ActionRequest.timestamp`).
    #[schema(min_length = 1, max_length = 64)]
    pub timestamp: String,
    /// The decision time.
    #[schema(minimum = 0)]
    pub decision_idx: i64,
    /// The decision's type (see `ActionRequest.decision_type`); absent or `null` means
    /// `default`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub decision_type: Option<String>,
    /// Whether the participant could be randomized; absent or `null` means `true`. With
    /// `false`, `action` must be 0 and `action_prob` 0.
    pub available: Option<bool>,
    /// Why the participant was unavailable (see `ActionRequest.unavailable_reason`); only
    /// with `available: false`.
    #[schema(max_length = 1024)]
    pub unavailable_reason: Option<String>,
    /// The context at decision time, stored as sent; it need not suit the algorithm (the
    /// stored state is then empty).
    #[schema(value_type = std::collections::BTreeMap<String, Value>, additional_properties = true)]
    pub context: Value,
    /// The action the study server gave: 0 or 1.
    #[schema(minimum = 0, maximum = 1)]
    pub action: i64,
    /// The probability of action 1 the study server drew with.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub action_prob: f64,
    /// Who decided: the study server's name for its own policy, 1 to 1024 bytes without
    /// control characters.
    #[schema(min_length = 1, max_length = 1024)]
    pub decided_by: String,
}

/// `POST /api/v1/action`.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({
    "user_id": "test_user_123",
    "timestamp": "2025-01-01T12:00:00Z",
    "decision_idx": 0,
    "context": {"temperature": 23}
})))]
pub struct ActionRequest {
    /// A registered participant (see `add_user` for the id rules).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// The study server's time of the request, in an ISO 8601 form Python's
    /// `datetime.fromisoformat` reads: `2025-01-01T12:00:00Z`, `2025-01-01T14:00:00+02:00`,
    /// `2025-01-01 12:00:00`, `2025-01-01` (midnight), with any number of fractional digits
    /// (kept to the microsecond). Without an offset it is local time in the service's
    /// `server.naive_time_zone` (UTC unless configured); such a time that a clock change skips
    /// or repeats there is refused. It must lie in the years 1 to 9999 in UTC. Stored exactly
    /// as sent, next to the instant it names.
    #[schema(min_length = 1, max_length = 64)]
    pub timestamp: String,
    /// The participant's decision time, from 0. Indexes count separately per
    /// `decision_type`.
    #[schema(minimum = 0)]
    pub decision_idx: i64,
    /// Which kind of decision this is, for studies with several decision points per
    /// participant (`morning`, `evening`): 1 to 64 ASCII letters, digits, `_`, `-` or `.`.
    /// Absent or `null` means `default`. A decision is keyed by
    /// `(user_id, decision_type, decision_idx)`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub decision_type: Option<String>,
    /// Whether the participant can be randomized now; absent or `null` means `true`. With
    /// `false` no action is drawn: the answer is action 0 with probability 0, the context
    /// need not satisfy the algorithm, and the decision's study data never reaches a model
    /// update.
    pub available: Option<bool>,
    /// Why the participant is unavailable (at most 1024 bytes, no control characters); only
    /// with `available: false`.
    #[schema(max_length = 1024)]
    pub unavailable_reason: Option<String>,
    /// The participant's context, stored as sent; the algorithm reads what it needs
    /// (`flat_prob`: a number `temperature`). No string or key may hold U+0000.
    #[schema(value_type = std::collections::BTreeMap<String, Value>, additional_properties = true)]
    pub context: Value,
}

/// `POST /api/v1/upload_data`.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({
    "user_id": "test_user_123",
    "timestamp": "2025-01-01T12:00:00Z",
    "decision_idx": 0,
    "data": {
        "context": {"temperature": 30},
        "action": 1,
        "action_prob": 0.5,
        "state": [30],
        "outcome": {"clicks": 4}
    }
})))]
pub struct UploadDataRequest {
    /// A registered participant (see `add_user` for the id rules).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]+$"
    )]
    pub user_id: String,
    /// The study server's time of the upload (see `ActionRequest.timestamp`).
    #[schema(min_length = 1, max_length = 64)]
    pub timestamp: String,
    /// The decision the data belongs to.
    #[schema(minimum = 0)]
    pub decision_idx: i64,
    /// The decision's type (see `ActionRequest.decision_type`); absent or `null` means
    /// `default`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9_.-]+$")]
    pub decision_type: Option<String>,
    /// What happened at and after the decision.
    pub data: UploadedData,
    /// `true`: this upload corrects the one stored for the decision, which is kept; the
    /// correction is stored beside it and updates from then on learn from it. Its `action` and
    /// `action_prob` must be the original upload's (409 otherwise), and an upload must be
    /// stored for the decision (400 `No upload to correct for this decision index.`).
    /// Absent, `null` or `false`: an upload, refused with 400 `Decision index already
    /// exists.` when one is stored.
    pub correction: Option<bool>,
}

/// The `data` of an upload. When the service logged the decision, `action` and `action_prob`
/// must match it (409 otherwise).
#[derive(Debug, Clone, ToSchema)]
pub struct UploadedData {
    /// The context at decision time, stored as sent.
    #[schema(value_type = std::collections::BTreeMap<String, Value>, additional_properties = true)]
    pub context: Value,
    /// The action the participant got: 0 or 1.
    #[schema(minimum = 0, maximum = 1)]
    pub action: i64,
    /// The probability that the action was 1.
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub action_prob: f64,
    /// The state the algorithm made of the context.
    pub state: Vec<f64>,
    /// What followed, stored as sent; the algorithm derives the reward from it (`flat_prob`:
    /// a number `clicks`).
    #[schema(value_type = std::collections::BTreeMap<String, Value>, additional_properties = true)]
    pub outcome: Value,
}

/// `POST /api/v1/update`.
#[derive(Debug, Clone, ToSchema)]
#[schema(examples(json!({
    "timestamp": "2025-01-01T12:00:00Z",
    "callback_url": "http://example.com/callback"
})))]
pub struct UpdateRequest {
    /// The study server's time of the request (see `ActionRequest.timestamp`).
    #[schema(min_length = 1, max_length = 64)]
    pub timestamp: String,
    /// Where the outcome is POSTed: an absolute `http://` or `https://` URL (lower-case
    /// scheme), on a host in `update.callback_allowed_hosts` when that list is set.
    #[schema(format = "uri")]
    pub callback_url: String,
}

// ---- Answers --------------------------------------------------------------------------------

/// 201 of `POST /api/v1/add_user`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AddUserResponse {
    /// `User added successfully.`
    pub message: String,
    /// Always `success`.
    pub status: Success,
    /// The registered id.
    #[schema(value_type = String)]
    pub user_id: UserId,
}

impl AddUserResponse {
    /// The answer for a participant just registered.
    pub fn new(user_id: UserId) -> Self {
        Self {
            message: "User added successfully.".into(),
            status: Success::Success,
            user_id,
        }
    }
}

/// Where a participant stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantState {
    /// Their `study_start` is still to come.
    NotStarted,
    /// In the study.
    Active,
    /// Their `study_end` has passed.
    Ended,
    /// Withdrawn.
    Withdrawn,
}

impl From<ParticipantStatus> for ParticipantState {
    fn from(s: ParticipantStatus) -> Self {
        match s {
            ParticipantStatus::NotStarted => Self::NotStarted,
            ParticipantStatus::Active => Self::Active,
            ParticipantStatus::Ended => Self::Ended,
            ParticipantStatus::Withdrawn => Self::Withdrawn,
        }
    }
}

/// A participant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ParticipantSummary {
    /// Decisions stored for them, of every type (those without a draw included).
    pub decisions: u64,
    /// When they were registered.
    #[schema(value_type = String, format = DateTime)]
    pub registered_at: DateTime<Utc>,
    /// Where they stand now, by the service's clock.
    pub status: ParticipantState,
    /// Their `study_end` exactly as sent; `null` when open-ended.
    #[schema(required = true)]
    pub study_end: Option<String>,
    /// Their `study_start` exactly as sent; `null` when they are in the study from
    /// registration on.
    #[schema(required = true)]
    pub study_start: Option<String>,
    /// Uploads stored for them.
    pub uploads: u64,
    /// The participant.
    #[schema(value_type = String)]
    pub user_id: UserId,
    /// The reason sent with the withdrawal; `null` unless withdrawn.
    #[schema(required = true)]
    pub withdrawal_reason: Option<String>,
    /// When they were withdrawn; `null` unless withdrawn.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub withdrawn_at: Option<DateTime<Utc>>,
}

impl From<justin_core::ParticipantView> for ParticipantSummary {
    fn from(v: justin_core::ParticipantView) -> Self {
        let p = v.participant;
        Self {
            decisions: p.decisions,
            registered_at: p.created_at,
            status: v.status.into(),
            study_end: p.enrollment.end.map(|t| t.sent),
            study_start: p.enrollment.start.map(|t| t.sent),
            uploads: p.uploads,
            user_id: p.user_id,
            withdrawal_reason: p.withdrawal.as_ref().map(|w| w.reason.clone()),
            withdrawn_at: p.withdrawal.map(|w| w.at),
        }
    }
}

/// 200 of `GET`, `PATCH /api/v1/users/{user_id}` and `POST /api/v1/users/{user_id}/withdraw`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ParticipantResponse {
    /// Always `success`.
    pub status: Success,
    /// The participant, after the request.
    pub user: ParticipantSummary,
}

impl From<justin_core::ParticipantView> for ParticipantResponse {
    fn from(v: justin_core::ParticipantView) -> Self {
        Self {
            status: Success::Success,
            user: v.into(),
        }
    }
}

/// The audit record of an erasure. It holds no participant id.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErasureRecord {
    /// The backup taken just before the erasure, a file name in `backup.dir`: it still holds
    /// the participant's data (see docs/operations.md on erasure and backups).
    pub backup_file: String,
    /// When the erasure happened.
    #[schema(value_type = String, format = DateTime)]
    pub erased_at: DateTime<Utc>,
    /// The erasure's id.
    #[schema(value_type = String, format = "uuid")]
    pub id: Uuid,
    /// The participant's internal row number (the `id` of their `users` row), which finds
    /// their rows in backups taken before the erasure.
    pub participant_number: i64,
    /// The id that replaces the participant's in the decisions kept: `erased-<erasure id>`.
    pub pseudonym: String,
    /// Rows deleted or emptied, per table.
    #[schema(value_type = std::collections::BTreeMap<String, u64>)]
    pub row_counts: std::collections::BTreeMap<String, u64>,
}

impl From<justin_core::Erasure> for ErasureRecord {
    fn from(e: justin_core::Erasure) -> Self {
        Self {
            backup_file: e.backup_file,
            erased_at: e.erased_at,
            id: e.id,
            participant_number: e.participant_number,
            pseudonym: e.pseudonym,
            row_counts: e.row_counts.into_iter().collect(),
        }
    }
}

/// 200 of `POST /api/v1/users/{user_id}/erase`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ErasureResponse {
    /// The audit record, as stored.
    pub erasure: ErasureRecord,
    /// Always `success`.
    pub status: Success,
}

/// 409 of `POST /api/v1/host_decision`: another decision is stored for the key.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DecisionConflict {
    /// The stored decision, as `/action` answers it (without `status`).
    pub decision: StoredDecision,
    /// `A different decision is stored for this decision index.`
    pub message: String,
    /// Always `failed`.
    pub status: Failed,
}

/// A stored decision, as `/action` answers it without its `status`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredDecision {
    /// See `ActionResponse.action`.
    #[schema(value_type = i16, minimum = 0, maximum = 1)]
    pub action: Action,
    /// See `ActionResponse.action_prob`.
    #[schema(value_type = f64, minimum = 0.0, maximum = 1.0)]
    pub action_prob: Probability,
    /// See `ActionResponse.available`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available: Option<bool>,
    /// See `ActionResponse.decided_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub decided_by: Option<String>,
    /// See `ActionResponse.decision_type`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub decision_type: Option<DecisionType>,
    /// See `ActionResponse.in_study`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub in_study: Option<bool>,
    /// See `ActionResponse.policy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PolicyName>, nullable = false)]
    pub policy: Option<&'static str>,
    /// See `ActionResponse.state`.
    #[schema(value_type = Vec<f64>)]
    pub state: State,
    /// See `ActionResponse.timestamp`.
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// See `ActionResponse.unavailable_reason`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub unavailable_reason: Option<String>,
    /// The participant.
    #[schema(value_type = String)]
    pub user_id: UserId,
}

impl From<Decision> for StoredDecision {
    fn from(d: Decision) -> Self {
        let a = ActionResponse::from(d);
        Self {
            action: a.action,
            action_prob: a.action_prob,
            available: a.available,
            decided_by: a.decided_by,
            decision_type: a.decision_type,
            in_study: a.in_study,
            policy: a.policy,
            state: a.state,
            timestamp: a.timestamp,
            unavailable_reason: a.unavailable_reason,
            user_id: a.user_id,
        }
    }
}

/// 201 (a new decision) or 200 (the stored one) of `POST /api/v1/action`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ActionResponse {
    /// The action: 0 or 1.
    #[schema(value_type = i16, minimum = 0, maximum = 1)]
    pub action: Action,
    /// The probability that the action is 1 under the parameters used, whatever was drawn
    /// (0 for an unavailable decision).
    #[schema(value_type = f64, minimum = 0.0, maximum = 1.0)]
    pub action_prob: Probability,
    /// `false` for a decision stored as unavailable; absent otherwise, so answers to requests
    /// that use none of the newer fields read as they always have.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub available: Option<bool>,
    /// Who decided a decision the study server made itself (`policy` `host`); absent
    /// otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub decided_by: Option<String>,
    /// The decision's type; absent for `default`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false)]
    pub decision_type: Option<DecisionType>,
    /// `false` when the participant was not in the study at the decision's time (before their
    /// `study_start`, at or after their `study_end`, or withdrawn): no action was drawn, and
    /// `unavailable_reason` says which (`not_in_study`, `withdrawn`). Absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub in_study: Option<bool>,
    /// Which policy gave the probability when it was not the algorithm: `warmup` (the
    /// warm-up phase's fixed probability), `fallback` (the fallback probability, because the
    /// algorithm failed for this request) or `host` (the study server decided). Absent for
    /// the algorithm.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<PolicyName>, nullable = false)]
    pub policy: Option<&'static str>,
    /// What the algorithm made of the context (`flat_prob`: `[temperature]`); empty for an
    /// unavailable decision whose context the algorithm cannot use.
    #[schema(value_type = Vec<f64>)]
    pub state: State,
    /// Always `success`.
    pub status: Success,
    /// When the service received the request that made the decision (RFC 3339, UTC,
    /// microseconds).
    #[schema(format = DateTime)]
    pub timestamp: String,
    /// The reason given for an unavailable decision; absent when none was given. The
    /// service's own reasons: `not_in_study` and `withdrawn` (with `in_study` false), and
    /// `missing_context` when a context value the algorithm needs is missing and its rule for
    /// that value is to record the decision as not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub unavailable_reason: Option<String>,
    /// The participant.
    #[schema(value_type = String)]
    pub user_id: UserId,
}

/// A policy other than the algorithm, as answers name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    /// The warm-up phase's fixed probability.
    Warmup,
    /// The fallback probability.
    Fallback,
    /// The study server decided.
    Host,
}

impl From<Decision> for ActionResponse {
    fn from(d: Decision) -> Self {
        let (available, unavailable_reason, in_study) = match d.availability {
            Availability::Available => (None, None, None),
            Availability::Unavailable { reason } => (Some(false), reason, None),
            Availability::OutOfStudy(why) => {
                (Some(false), Some(why.as_str().to_owned()), Some(false))
            }
        };
        let policy = match d.policy {
            Policy::Algorithm => None,
            ref other => Some(other.as_str()),
        };
        Self {
            action: d.action,
            action_prob: d.action_prob,
            available,
            decided_by: d.policy.decided_by().map(str::to_owned),
            decision_type: (!d.decision_type.is_default()).then_some(d.decision_type),
            in_study,
            policy,
            state: d.state,
            status: Success::Success,
            timestamp: d.decided_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            unavailable_reason,
            user_id: d.user_id,
        }
    }
}

/// 201 of `POST /api/v1/upload_data`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UploadDataResponse {
    /// Only for a correction: its place among the decision's corrections (1 for the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, nullable = false)]
    pub correction: Option<u32>,
    /// `Data uploaded successfully.`
    pub message: String,
    /// Always `success`.
    pub status: Success,
}

impl Default for UploadDataResponse {
    fn default() -> Self {
        Self {
            correction: None,
            message: "Data uploaded successfully.".into(),
            status: Success::Success,
        }
    }
}

/// An upload or a correction of it, as `GET /api/v1/users/{user_id}/decisions/{decision_idx}`
/// shows it: every value as it was sent, with when it was received.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UploadEntry {
    /// The uploaded action; absent for a correction (it is the original's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<i16>, minimum = 0, maximum = 1, nullable = false)]
    pub action: Option<Action>,
    /// The uploaded probability of action 1; absent for a correction (it is the original's).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>, minimum = 0.0, maximum = 1.0, nullable = false)]
    pub action_prob: Option<Probability>,
    /// The context, as sent.
    #[schema(value_type = Object)]
    pub context: justin_core::JsonObject,
    /// For a correction, its place among the decision's corrections (1 for the first);
    /// absent for the original upload.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, nullable = false)]
    pub correction: Option<u32>,
    /// The outcome, as sent.
    #[schema(value_type = Object)]
    pub outcome: justin_core::JsonObject,
    /// When the service received it (RFC 3339, UTC, microseconds).
    #[schema(format = DateTime)]
    pub received_at: String,
    /// The reward the algorithm derived from the outcome.
    pub reward: f64,
    /// The state, as sent.
    #[schema(value_type = Vec<f64>)]
    pub state: State,
    /// The `timestamp` exactly as the study server sent it.
    pub timestamp: String,
}

impl From<justin_core::StudyRecord> for UploadEntry {
    fn from(r: justin_core::StudyRecord) -> Self {
        Self {
            action: Some(r.action),
            action_prob: Some(r.action_prob),
            context: r.context,
            correction: None,
            outcome: r.outcome,
            received_at: r.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            reward: r.reward,
            state: r.state,
            timestamp: r.sent_timestamp,
        }
    }
}

impl From<justin_core::Correction> for UploadEntry {
    fn from(c: justin_core::Correction) -> Self {
        Self {
            action: None,
            action_prob: None,
            context: c.context,
            correction: Some(c.number),
            outcome: c.outcome,
            received_at: c.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
            reward: c.reward,
            state: c.state,
            timestamp: c.sent_timestamp,
        }
    }
}

/// 200 of `GET /api/v1/users/{user_id}/decisions/{decision_idx}`: everything stored for one
/// decision.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct DecisionHistoryResponse {
    /// The corrections of the upload, oldest first; the newest is the value in force (the
    /// upload's when there is none).
    pub corrections: Vec<UploadEntry>,
    /// The decision as `/action` answered it; `null` when no decision was logged for the key.
    #[schema(required = true)]
    pub decision: Option<StoredDecision>,
    /// The decision's index.
    pub decision_idx: i64,
    /// The decision's type.
    #[schema(value_type = String)]
    pub decision_type: DecisionType,
    /// Always `success`.
    pub status: Success,
    /// The original upload; `null` before one is stored.
    #[schema(required = true)]
    pub upload: Option<UploadEntry>,
    /// The participant.
    #[schema(value_type = String)]
    pub user_id: UserId,
}

impl DecisionHistoryResponse {
    /// The answer for the key (`user_id`, `decision_type`, `decision_idx`) and what is stored
    /// for it.
    pub fn new(
        user_id: UserId,
        decision_type: DecisionType,
        decision_idx: justin_core::DecisionIdx,
        history: justin_core::DecisionHistory,
    ) -> Self {
        Self {
            corrections: history.corrections.into_iter().map(Into::into).collect(),
            decision: history.decision.map(Into::into),
            decision_idx: decision_idx.get(),
            decision_type,
            status: Success::Success,
            upload: history.upload.map(Into::into),
            user_id,
        }
    }
}

/// 202 of `POST /api/v1/update`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UpdateAccepted {
    /// Always `processing`.
    pub status: Processing,
    /// The request's id, for `GET /api/v1/update/{update_id}` and the callback.
    #[schema(value_type = String, format = "uuid")]
    pub update_id: Uuid,
}

/// Where an update request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateState {
    /// Waiting or running (also a job that will run again after its process died).
    Processing,
    /// Finished; a new parameter version was stored.
    Completed,
    /// Finished without a new parameter version; `error` says why.
    Failed,
}

impl From<UpdateStatus> for UpdateState {
    fn from(s: UpdateStatus) -> Self {
        match s {
            UpdateStatus::Processing => Self::Processing,
            UpdateStatus::Completed => Self::Completed,
            UpdateStatus::Failed => Self::Failed,
        }
    }
}

/// Where the delivery of an update's callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Not delivered yet.
    Pending,
    /// A POST got a 2xx answer.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl From<CallbackStatus> for DeliveryState {
    fn from(s: CallbackStatus) -> Self {
        match s {
            CallbackStatus::Pending => Self::Pending,
            CallbackStatus::Delivered => Self::Delivered,
            CallbackStatus::Failed => Self::Failed,
        }
    }
}

/// The delivery of an update's callback.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallbackDelivery {
    /// POSTs tried so far.
    pub attempts: u32,
    /// When delivery ended, delivered or given up; `null` while pending.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The last failed attempt's error; `null` once delivered or before any attempt failed.
    #[schema(required = true)]
    pub last_error: Option<String>,
    /// Where delivery stands.
    pub status: DeliveryState,
    /// The request's `callback_url`.
    pub url: String,
}

/// What a completed update's parameters were computed from.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Provenance {
    /// The algorithm that computed the parameters.
    pub algorithm: String,
    /// The backup taken before the update, a file name in `backup.dir`; `null` when backups
    /// are off.
    #[schema(required = true)]
    pub backup_file: Option<String>,
    /// SHA-256 (hex) of the effective configuration.
    pub config_hash: String,
    /// Records the update read: uploads, and the decisions it imputed rewards for.
    pub rows_read: u64,
    /// The version of the `justin` binary that ran the update.
    pub service_version: String,
    /// What the update learned with the default reward (`[update] missing_outcomes =
    /// "default_reward"`); absent when missing outcomes were left out.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub imputed: Option<ImputedRewards>,
}

/// Decisions an update learned from with the default reward because no outcome came within the
/// outcome window.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ImputedRewards {
    /// Decisions made at or before this instant without an upload were imputed (the update's
    /// start less the outcome window), RFC 3339 in UTC.
    pub decided_by: String,
    /// The reward they were learned from with.
    pub default_reward: f64,
    /// How many of the records the update read were imputed.
    pub rows: u64,
}

impl From<justin_core::Provenance> for Provenance {
    fn from(p: justin_core::Provenance) -> Self {
        Self {
            algorithm: p.algorithm,
            backup_file: p.backup_file,
            config_hash: p.config_hash,
            rows_read: p.rows_read,
            service_version: p.service_version,
            imputed: p.imputed.map(|i| ImputedRewards {
                decided_by: i
                    .decided_by
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                default_reward: i.default_reward,
                rows: i.rows,
            }),
        }
    }
}

/// 200 of `GET /api/v1/update/{update_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct UpdateStatusResponse {
    /// How many times a worker has started the update.
    pub attempts: u32,
    /// How the callback was delivered.
    pub callback: CallbackDelivery,
    /// Why the update failed; `null` unless `failed`.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When the update ended; `null` while processing.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub finished_at: Option<DateTime<Utc>>,
    /// The parameter version it stored; `null` unless `completed`.
    #[schema(required = true)]
    pub parameter_version: Option<i64>,
    /// What the parameters were computed from; `null` unless `completed`.
    #[schema(required = true)]
    pub provenance: Option<Provenance>,
    /// When the service received the request.
    #[schema(value_type = String, format = DateTime)]
    pub received_at: DateTime<Utc>,
    /// The instant the request's `timestamp` names, in UTC.
    #[schema(value_type = String, format = DateTime)]
    pub requested_at: DateTime<Utc>,
    /// When a worker last started it; `null` until one has.
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub started_at: Option<DateTime<Utc>>,
    /// Always `success`.
    pub status: Success,
    /// The request's `timestamp` exactly as the study server sent it.
    pub timestamp: String,
    /// The request's id.
    #[schema(value_type = String, format = "uuid")]
    pub update_id: Uuid,
    /// Where the update stands.
    pub update_status: UpdateState,
}

impl From<justin_core::UpdateRequest> for UpdateStatusResponse {
    fn from(u: justin_core::UpdateRequest) -> Self {
        Self {
            attempts: u.attempts,
            callback: CallbackDelivery {
                attempts: u.callback.attempts,
                finished_at: u.callback.finished_at,
                last_error: u.callback.last_error,
                status: u.callback.status.into(),
                url: u.callback_url,
            },
            error: u.error,
            finished_at: u.finished_at,
            parameter_version: u.parameter_version,
            provenance: u.provenance.map(Provenance::from),
            received_at: u.received_at,
            requested_at: u.requested_at,
            started_at: u.started_at,
            status: Success::Success,
            timestamp: u.sent_timestamp,
            update_id: u.id,
            update_status: u.status.into(),
        }
    }
}

// ---- The update callback ---------------------------------------------------------------------

/// `"completed"`: the update stored a new parameter version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Completed {
    /// The only value.
    Completed,
}

/// The callback of an update that stored a new parameter version.
// Its fields are in the order the template sent them, not sorted: a callback is not an answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(examples(json!({
    "status": "completed",
    "update_id": "e999a61c-fb5c-4f01-9942-cb7dbe501013",
    "timestamp": "2025-01-01T12:00:03.123456Z"
})))]
pub struct UpdateCompleted {
    /// Always `completed`.
    pub status: Completed,
    /// The update's id, as `POST /api/v1/update` answered it.
    #[schema(value_type = String, format = "uuid")]
    pub update_id: Uuid,
    /// When the update finished (RFC 3339, UTC).
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
}

/// The callback of an update that failed; the parameters are unchanged. The reason is stored
/// (`error` of `GET /api/v1/update/{update_id}`), not sent.
// Its fields are in the order the template sent them, not sorted: a callback is not an answer.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(examples(json!({
    "status": "failed",
    "update_id": "e999a61c-fb5c-4f01-9942-cb7dbe501013",
    "message": "Model update failed."
})))]
pub struct UpdateFailed {
    /// Always `failed`.
    pub status: Failed,
    /// The update's id, as `POST /api/v1/update` answered it.
    #[schema(value_type = String, format = "uuid")]
    pub update_id: Uuid,
    /// Always `Model update failed.`
    pub message: String,
}

/// What the service POSTs as JSON to an update's `callback_url` when the update ends: one of
/// two shapes, told apart by `status`.
// `crate::callbacks::HttpNotifier` sends this type, so the document cannot drift from what is
// sent; a test checks that its bytes are the core payload's.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(untagged)]
#[schema(discriminator(property_name = "status", mapping(
    ("completed" = "#/components/schemas/UpdateCompleted"),
    ("failed" = "#/components/schemas/UpdateFailed"),
)))]
pub enum UpdateCallback {
    /// The update stored a new parameter version.
    Completed(UpdateCompleted),
    /// The update failed.
    Failed(UpdateFailed),
}

impl From<&justin_core::CallbackPayload> for UpdateCallback {
    fn from(p: &justin_core::CallbackPayload) -> Self {
        match p {
            justin_core::CallbackPayload::Completed {
                update_id,
                timestamp,
            } => Self::Completed(UpdateCompleted {
                status: Completed::Completed,
                update_id: *update_id,
                timestamp: *timestamp,
            }),
            justin_core::CallbackPayload::Failed { update_id, message } => {
                Self::Failed(UpdateFailed {
                    status: Failed::Failed,
                    update_id: *update_id,
                    message: message.clone(),
                })
            }
        }
    }
}

/// 200 of `GET /api/v1/parameters` and `GET /api/v1/parameters/{version}`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ParametersResponse {
    /// The algorithm the parameters belong to.
    pub algorithm: String,
    /// When this version was stored.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// The parameters, in the algorithm's own JSON shape (`flat_prob`:
    /// `{"probability_of_action": 0.5}`).
    #[schema(value_type = std::collections::BTreeMap<String, Value>, additional_properties = true)]
    pub parameters: Value,
    /// Always `success`.
    pub status: Success,
    /// 1 for the priors, then one more for every completed update.
    pub version: i64,
}

impl From<&ModelParameters> for ParametersResponse {
    fn from(p: &ModelParameters) -> Self {
        Self {
            algorithm: p.algorithm.clone(),
            created_at: p.created_at,
            parameters: p.values.clone(),
            status: Success::Success,
            version: p.version,
        }
    }
}

/// `"ok"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Live {
    /// The only value.
    Ok,
}

/// `"ready"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    /// The only value.
    Ready,
}

/// 200 of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: Live,
}

/// 200 of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ReadyResponse {
    /// Always `ready`.
    pub status: Ready,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use justin_core::{CallbackDelivery as CoreDelivery, DecisionIdx};
    use serde_json::json;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_735_732_800 + secs, 123_456_000)
            .single()
            .unwrap()
    }

    /// The service wrote every answer through `serde_json::Value`, whose keys are sorted; the
    /// typed answers must keep that text byte for byte.
    fn assert_keys_sorted<T: Serialize>(answer: &T) {
        let direct = serde_json::to_string(answer).unwrap();
        let sorted = serde_json::to_value(answer).unwrap().to_string();
        assert_eq!(direct, sorted, "fields out of alphabetical order");
    }

    #[test]
    fn answers_keep_their_keys_in_alphabetical_order() {
        let decision = Decision {
            user_id: UserId::parse("u1").unwrap(),
            decision_type: DecisionType::default(),
            decision_idx: DecisionIdx::new(0).unwrap(),
            requested_at: at(0),
            sent_timestamp: "2025-01-01T12:00:00Z".into(),
            decided_at: at(1),
            availability: Availability::Available,
            context: serde_json::Map::new(),
            state: State::new(vec![23.0, 1.5]).unwrap(),
            action: Action::One,
            action_prob: Probability::new(0.5).unwrap(),
            parameter_version: 1,
            rng_seed: 7,
            policy: Policy::Algorithm,
        };
        let mut update = justin_core::UpdateRequest::new(
            Uuid::nil(),
            at(0),
            "2025-01-01T12:00:00+02:00".into(),
            at(1),
            "http://example.com/cb".into(),
        );
        update.callback = CoreDelivery {
            status: CallbackStatus::Failed,
            attempts: 2,
            last_error: Some("refused".into()),
            finished_at: Some(at(3)),
        };
        update.provenance = Some(justin_core::Provenance {
            service_version: "0.1.0".into(),
            algorithm: "flat_prob".into(),
            config_hash: "ab".into(),
            rows_read: 3,
            backup_file: None,
            included_policies: "algorithm,warmup".into(),
            imputed: None,
        });
        let parameters = ModelParameters {
            version: 2,
            algorithm: "flat_prob".into(),
            values: json!({"probability_of_action": 0.5}),
            created_at: at(2),
        };
        assert_keys_sorted(&AddUserResponse::new(UserId::parse("u1").unwrap()));
        assert_keys_sorted(&ActionResponse::from(decision.clone()));
        assert_keys_sorted(&ActionResponse::from(Decision {
            decision_type: DecisionType::parse("morning").unwrap(),
            availability: Availability::unavailable(Some("driving".into())).unwrap(),
            ..decision.clone()
        }));
        assert_keys_sorted(&ActionResponse::from(Decision {
            availability: Availability::OutOfStudy(justin_core::OutOfStudy::NotInStudy),
            policy: Policy::Host {
                decided_by: "app".into(),
            },
            ..decision.clone()
        }));
        assert_keys_sorted(&DecisionConflict {
            decision: StoredDecision::from(Decision {
                policy: Policy::Warmup,
                ..decision.clone()
            }),
            message: "m".into(),
            status: Failed::Failed,
        });
        assert_keys_sorted(&ParticipantResponse::from(participant()));
        assert_keys_sorted(&ErasureResponse {
            erasure: ErasureRecord::from(justin_core::Erasure {
                id: Uuid::nil(),
                erased_at: at(4),
                participant_number: 3,
                pseudonym: "erased-x".into(),
                row_counts: vec![("users".into(), 1), ("actions".into(), 2)],
                backup_file: "b.tar".into(),
            }),
            status: Success::Success,
        });
        assert_keys_sorted(&UploadDataResponse::default());
        assert_keys_sorted(&UpdateAccepted {
            status: Processing::Processing,
            update_id: Uuid::nil(),
        });
        assert_keys_sorted(&UpdateStatusResponse::from(update));
        assert_keys_sorted(&ParametersResponse::from(&parameters));
        assert_keys_sorted(&HealthResponse { status: Live::Ok });
        assert_keys_sorted(&ReadyResponse {
            status: Ready::Ready,
        });
        assert_keys_sorted(&ErrorResponse {
            message: "m".into(),
            status: Failed::Failed,
        });
    }

    fn participant() -> justin_core::ParticipantView {
        justin_core::ParticipantView {
            participant: justin_core::Participant {
                user_id: UserId::parse("u1").unwrap(),
                created_at: at(0),
                enrollment: justin_core::Enrollment {
                    start: Some(justin_core::SentTime {
                        at: at(10),
                        sent: "2025-01-01 13:00:10.123456+01:00".into(),
                    }),
                    end: None,
                },
                withdrawal: Some(justin_core::Withdrawal {
                    at: at(20),
                    reason: "moved away".into(),
                }),
                decisions: 4,
                uploads: 2,
            },
            status: justin_core::ParticipantStatus::Withdrawn,
        }
    }

    #[test]
    fn the_callback_is_what_the_core_sends_byte_for_byte() {
        let id = Uuid::parse_str("e999a61c-fb5c-4f01-9942-cb7dbe501013").unwrap();
        for payload in [
            justin_core::CallbackPayload::Completed {
                update_id: id,
                timestamp: at(3),
            },
            justin_core::CallbackPayload::Failed {
                update_id: id,
                message: "Model update failed.".into(),
            },
        ] {
            let core = serde_json::to_string(&payload).unwrap();
            let sent = serde_json::to_string(&UpdateCallback::from(&payload)).unwrap();

            assert_eq!(sent, core);
        }
        let completed = serde_json::to_string(&UpdateCallback::from(
            &justin_core::CallbackPayload::Completed {
                update_id: id,
                timestamp: at(3),
            },
        ))
        .unwrap();
        assert_eq!(
            completed,
            r#"{"status":"completed","update_id":"e999a61c-fb5c-4f01-9942-cb7dbe501013","timestamp":"2025-01-01T12:00:03.123456Z"}"#
        );
    }

    #[test]
    fn the_participant_answer_shows_the_window_as_sent() {
        let text = serde_json::to_string(&ParticipantResponse::from(participant())).unwrap();

        assert_eq!(
            text,
            r#"{"status":"success","user":{"decisions":4,"registered_at":"2025-01-01T12:00:00.123456Z","status":"withdrawn","study_end":null,"study_start":"2025-01-01 13:00:10.123456+01:00","uploads":2,"user_id":"u1","withdrawal_reason":"moved away","withdrawn_at":"2025-01-01T12:00:20.123456Z"}}"#
        );
    }

    #[test]
    fn the_erasure_answer_lists_row_counts_by_table() {
        let record = ErasureRecord::from(justin_core::Erasure {
            id: Uuid::nil(),
            erased_at: at(4),
            participant_number: 3,
            pseudonym: "erased-00000000-0000-0000-0000-000000000000".into(),
            row_counts: vec![
                ("actions".into(), 2),
                ("study_data".into(), 1),
                ("participant_events".into(), 3),
                ("users".into(), 1),
            ],
            backup_file: "justin-backup-x.tar".into(),
        });

        assert_eq!(
            serde_json::to_value(record).unwrap(),
            json!({
                "backup_file": "justin-backup-x.tar",
                "erased_at": "2025-01-01T12:00:04.123456Z",
                "id": "00000000-0000-0000-0000-000000000000",
                "participant_number": 3,
                "pseudonym": "erased-00000000-0000-0000-0000-000000000000",
                "row_counts": {"actions": 2, "participant_events": 3, "study_data": 1, "users": 1},
            })
        );
    }

    #[test]
    fn an_action_answer_names_the_policy_and_the_study_only_when_they_are_not_the_usual() {
        let decision = Decision {
            user_id: UserId::parse("u").unwrap(),
            decision_type: DecisionType::default(),
            decision_idx: DecisionIdx::new(2).unwrap(),
            requested_at: at(0),
            sent_timestamp: "2025-01-01T12:00:00Z".into(),
            decided_at: at(1),
            availability: Availability::OutOfStudy(justin_core::OutOfStudy::Withdrawn),
            context: serde_json::Map::new(),
            state: State::default(),
            action: Action::Zero,
            action_prob: Probability::ZERO,
            parameter_version: 1,
            rng_seed: 7,
            policy: Policy::Algorithm,
        };

        let text = serde_json::to_string(&ActionResponse::from(decision.clone())).unwrap();
        assert_eq!(
            text,
            r#"{"action":0,"action_prob":0.0,"available":false,"in_study":false,"state":[],"status":"success","timestamp":"2025-01-01T12:00:01.123456Z","unavailable_reason":"withdrawn","user_id":"u"}"#
        );

        let warmup = ActionResponse::from(Decision {
            availability: Availability::Available,
            action: Action::One,
            action_prob: Probability::new(0.5).unwrap(),
            policy: Policy::Warmup,
            ..decision.clone()
        });
        let fallback = ActionResponse::from(Decision {
            availability: Availability::Available,
            policy: Policy::Fallback {
                reason: "algorithm failed: secret detail".into(),
            },
            ..decision.clone()
        });
        let host = ActionResponse::from(Decision {
            availability: Availability::Available,
            policy: Policy::Host {
                decided_by: "app".into(),
            },
            ..decision
        });
        assert_eq!(warmup.policy, Some("warmup"));
        assert_eq!((warmup.in_study, warmup.available), (None, None));
        assert_eq!(fallback.policy, Some("fallback"));
        assert!(!serde_json::to_string(&fallback).unwrap().contains("secret"));
        assert_eq!(host.policy, Some("host"));
        assert_eq!(host.decided_by.as_deref(), Some("app"));
    }

    #[test]
    fn the_user_id_pattern_refuses_exactly_the_control_characters_user_id_refuses() {
        // The pattern's class: U+0000-U+001F and U+007F-U+009F.
        let in_class = |c: char| matches!(c as u32, 0x00..=0x1F | 0x7F..=0x9F);

        let differ: Vec<char> = (0..=0x10FFFF)
            .filter_map(char::from_u32)
            .filter(|c| in_class(*c) != c.is_control())
            .collect();

        assert_eq!(USER_ID_PATTERN, r"^[^\u0000-\u001F\u007F-\u009F]+$");
        assert!(differ.is_empty(), "{differ:?}");
        assert!(UserId::parse("a\u{85}b").is_err());
    }

    #[test]
    fn the_action_answer_is_what_the_template_sent() {
        let decision = Decision {
            user_id: UserId::parse("test_user_123").unwrap(),
            decision_type: DecisionType::default(),
            decision_idx: DecisionIdx::new(0).unwrap(),
            requested_at: at(0),
            sent_timestamp: "2025-01-01T12:00:00Z".into(),
            decided_at: at(1),
            availability: Availability::Available,
            context: serde_json::Map::new(),
            state: State::new(vec![23.0]).unwrap(),
            action: Action::One,
            action_prob: Probability::new(0.5).unwrap(),
            parameter_version: 1,
            rng_seed: 7,
            policy: Policy::Algorithm,
        };

        let text = serde_json::to_string(&ActionResponse::from(decision)).unwrap();

        assert_eq!(
            text,
            r#"{"action":1,"action_prob":0.5,"state":[23],"status":"success","timestamp":"2025-01-01T12:00:01.123456Z","user_id":"test_user_123"}"#
        );
    }

    #[test]
    fn the_action_answer_names_a_type_and_an_unavailability_only_when_there_is_one() {
        let decision = Decision {
            user_id: UserId::parse("u").unwrap(),
            decision_type: DecisionType::parse("evening").unwrap(),
            decision_idx: DecisionIdx::new(2).unwrap(),
            requested_at: at(0),
            sent_timestamp: "2025-01-01T12:00:00Z".into(),
            decided_at: at(1),
            availability: Availability::unavailable(Some("asleep".into())).unwrap(),
            context: serde_json::Map::new(),
            state: State::default(),
            action: Action::Zero,
            action_prob: Probability::ZERO,
            parameter_version: 1,
            rng_seed: 7,
            policy: Policy::Algorithm,
        };

        let text = serde_json::to_string(&ActionResponse::from(decision)).unwrap();

        assert_eq!(
            text,
            r#"{"action":0,"action_prob":0.0,"available":false,"decision_type":"evening","state":[],"status":"success","timestamp":"2025-01-01T12:00:01.123456Z","unavailable_reason":"asleep","user_id":"u"}"#
        );
    }
}
