//! The study's vocabulary: participants, decisions, uploaded study data, model parameters and
//! update requests. Values are parsed once, at the edge, into these types; code past that point
//! can rely on their invariants (a `Probability` is in [0, 1], a `DecisionIdx` is not negative).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, Serializer};
use uuid::Uuid;

/// A JSON object as the client sent it (a context or an outcome).
pub type JsonObject = serde_json::Map<String, serde_json::Value>;

/// Longest participant id the service accepts, in bytes.
pub const MAX_USER_ID_LEN: usize = 255;

/// Why a raw value could not become a domain value. The message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

/// A participant's id, as the study server names them: 1 to 255 bytes, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(String);

impl UserId {
    /// Accepts a participant id.
    ///
    /// # Errors
    /// When the id is empty, longer than [`MAX_USER_ID_LEN`] bytes or holds a control character.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        if raw.is_empty() {
            return Err(InvalidValue("user_id is required.".into()));
        }
        if raw.len() > MAX_USER_ID_LEN {
            return Err(InvalidValue(format!(
                "user_id must be at most {MAX_USER_ID_LEN} bytes long."
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(InvalidValue(
                "user_id must not contain control characters.".into(),
            ));
        }
        Ok(Self(raw))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest decision type the service accepts, in bytes.
pub const MAX_DECISION_TYPE_LEN: usize = 64;

/// Which kind of decision this is, for studies with more than one decision point per
/// participant ("morning", "evening", "weekly_game"). Decision indexes count separately per
/// type: the key of a decision is (user, decision type, decision index). Requests that name no
/// type get [`DecisionType::DEFAULT`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DecisionType(String);

impl DecisionType {
    /// The type of every decision whose request names none.
    pub const DEFAULT: &'static str = "default";

    /// Accepts a decision type: 1 to [`MAX_DECISION_TYPE_LEN`] bytes of ASCII letters, digits,
    /// `_`, `-` and `.`, so that it reads the same in every export, file name and log.
    ///
    /// # Errors
    /// When the type is empty, too long or holds another character.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > MAX_DECISION_TYPE_LEN {
            return Err(InvalidValue(format!(
                "decision_type must be 1 to {MAX_DECISION_TYPE_LEN} characters long."
            )));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err(InvalidValue(
                "decision_type may only hold ASCII letters, digits, '_', '-' and '.'.".into(),
            ));
        }
        Ok(Self(raw))
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is [`DecisionType::DEFAULT`].
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for DecisionType {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl std::fmt::Display for DecisionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Longest reason for unavailability the service accepts, in bytes.
pub const MAX_UNAVAILABLE_REASON_LEN: usize = 1024;

/// Whether the participant could be randomized at a decision time. An unavailable decision
/// gets no draw (action 0, probability 0), and its study data never reaches a model update.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Randomized as usual.
    #[default]
    Available,
    /// Not randomized; the study server's reason, if it gave one.
    Unavailable {
        /// Why (driving, phone off, already sent a message today ...), as the client sent it.
        reason: Option<String>,
    },
    /// Not randomized because the participant was not in the study at the decision's time:
    /// the service's reason, not the client's. Stored as unavailable with the reason's word
    /// (`not_in_study`, `withdrawn`) and `in_study` false.
    OutOfStudy(OutOfStudy),
}

/// Why a participant was not in the study at a decision's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfStudy {
    /// The decision's time lies before the participant's start or at or after their end.
    NotInStudy,
    /// The participant had withdrawn when the decision was recorded.
    Withdrawn,
}

impl OutOfStudy {
    /// The word stored as the decision's unavailable reason and shown in answers and exports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotInStudy => "not_in_study",
            Self::Withdrawn => "withdrawn",
        }
    }

    /// Reads a stored word.
    ///
    /// # Errors
    /// For another word.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "not_in_study" => Ok(Self::NotInStudy),
            "withdrawn" => Ok(Self::Withdrawn),
            other => Err(InvalidValue(format!(
                "unknown out-of-study reason {other:?}"
            ))),
        }
    }
}

impl Availability {
    /// An unavailable decision with the client's reason, checked.
    ///
    /// # Errors
    /// When the reason is longer than [`MAX_UNAVAILABLE_REASON_LEN`] bytes or holds a control
    /// character.
    pub fn unavailable(reason: Option<String>) -> Result<Self, InvalidValue> {
        if let Some(r) = &reason {
            if r.len() > MAX_UNAVAILABLE_REASON_LEN {
                return Err(InvalidValue(format!(
                    "unavailable_reason must be at most {MAX_UNAVAILABLE_REASON_LEN} bytes long."
                )));
            }
            if r.chars().any(char::is_control) {
                return Err(InvalidValue(
                    "unavailable_reason must not contain control characters.".into(),
                ));
            }
        }
        Ok(Self::Unavailable { reason })
    }

    /// Whether the participant was randomized.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available)
    }

    /// The reason given for unavailability, if any: the client's, or the service's word for
    /// a participant out of the study.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Available => None,
            Self::Unavailable { reason } => reason.as_deref(),
            Self::OutOfStudy(why) => Some(why.as_str()),
        }
    }

    /// Whether the participant was in the study at the decision's time (false only for
    /// [`Availability::OutOfStudy`]).
    pub fn in_study(&self) -> bool {
        !matches!(self, Self::OutOfStudy(_))
    }
}

/// Longest `decided_by` or fallback reason the service stores, in bytes.
pub const MAX_POLICY_NOTE_LEN: usize = 1024;

/// Which policy gave a decision its probability.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum Policy {
    /// The configured algorithm, from the parameter version stored with the decision.
    #[default]
    Algorithm,
    /// The warm-up phase's fixed probability (`[algorithm.warmup]`), drawn from the decision's
    /// own generator.
    Warmup,
    /// The fallback probability (`[algorithm.fallback]`), drawn from the decision's own
    /// generator because the algorithm failed for this request.
    Fallback {
        /// The algorithm's failure, for operators (never the request's values).
        reason: String,
    },
    /// The study server decided itself (while the service was unreachable) and sent the
    /// decision afterwards with its action and probability.
    Host {
        /// Who decided, as the study server named it.
        decided_by: String,
    },
}

impl Policy {
    /// The word stored and exported for this policy.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Algorithm => "algorithm",
            Self::Warmup => "warmup",
            Self::Fallback { .. } => "fallback",
            Self::Host { .. } => "host",
        }
    }

    /// The failure a fallback decision records.
    pub fn fallback_reason(&self) -> Option<&str> {
        match self {
            Self::Fallback { reason } => Some(reason),
            _ => None,
        }
    }

    /// Who decided a host decision.
    pub fn decided_by(&self) -> Option<&str> {
        match self {
            Self::Host { decided_by } => Some(decided_by),
            _ => None,
        }
    }

    /// Builds a policy from its stored columns.
    ///
    /// # Errors
    /// For an unknown word, or a fallback without a reason or host decision without
    /// `decided_by`.
    pub fn from_stored(
        word: &str,
        fallback_reason: Option<String>,
        decided_by: Option<String>,
    ) -> Result<Self, InvalidValue> {
        match (word, fallback_reason, decided_by) {
            ("algorithm", None, None) => Ok(Self::Algorithm),
            ("warmup", None, None) => Ok(Self::Warmup),
            ("fallback", Some(reason), None) => Ok(Self::Fallback { reason }),
            ("host", None, Some(decided_by)) => Ok(Self::Host { decided_by }),
            (other, _, _) => Err(InvalidValue(format!(
                "stored policy {other:?} does not match its columns"
            ))),
        }
    }
}

/// Which kinds of decision an update learns from, besides those of the algorithm (always).
/// Unavailable decisions and withdrawn participants never reach an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateInclusion {
    /// Warm-up decisions (default true: their probabilities are known).
    pub warmup: bool,
    /// Fallback decisions (default false).
    pub fallback: bool,
    /// Decisions the study server made itself (default false).
    pub host: bool,
}

impl Default for UpdateInclusion {
    fn default() -> Self {
        Self {
            warmup: true,
            fallback: false,
            host: false,
        }
    }
}

impl UpdateInclusion {
    /// Whether a decision of `policy` (by its word) reaches updates; an upload with no logged
    /// decision (`None`) does, as it always has.
    pub fn includes(&self, policy: Option<&str>) -> bool {
        match policy {
            None | Some("algorithm") => true,
            Some("warmup") => self.warmup,
            Some("fallback") => self.fallback,
            Some("host") => self.host,
            Some(_) => false,
        }
    }

    /// Reads what [`UpdateInclusion::as_stored`] wrote (a word it does not know includes
    /// nothing more; the algorithm's decisions are always included).
    pub fn from_stored(stored: &str) -> Self {
        let has = |word: &str| stored.split(',').any(|w| w.trim() == word);
        Self {
            warmup: has("warmup"),
            fallback: has("fallback"),
            host: has("host"),
        }
    }

    /// The policy words included, comma-separated, as stored with an update's provenance.
    pub fn as_stored(&self) -> String {
        let mut words = vec!["algorithm"];
        if self.warmup {
            words.push("warmup");
        }
        if self.fallback {
            words.push("fallback");
        }
        if self.host {
            words.push("host");
        }
        words.join(",")
    }
}

/// A time the study server sent: the instant it names and the text exactly as sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentTime {
    /// The instant, in UTC.
    pub at: DateTime<Utc>,
    /// The text as the study server sent it.
    pub sent: String,
}

/// A participant's time in the study: from `start` (inclusive) to `end` (exclusive); a missing
/// bound is open. Decisions whose `requested_at` lies outside it are stored without a draw.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Enrollment {
    /// When the participant's time in the study starts; `None`: from registration on.
    pub start: Option<SentTime>,
    /// When it ends; `None`: open-ended.
    pub end: Option<SentTime>,
}

impl Enrollment {
    /// A window, checked.
    ///
    /// # Errors
    /// When the end is not after the start.
    pub fn new(start: Option<SentTime>, end: Option<SentTime>) -> Result<Self, InvalidValue> {
        if let (Some(s), Some(e)) = (&start, &end) {
            if e.at <= s.at {
                return Err(InvalidValue(
                    "study_end must be later than study_start.".into(),
                ));
            }
        }
        Ok(Self { start, end })
    }

    /// Whether `at` lies inside the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start.as_ref().is_none_or(|s| s.at <= at)
            && self.end.as_ref().is_none_or(|e| at < e.at)
    }
}

/// Longest withdrawal reason the service accepts, in bytes.
pub const MAX_WITHDRAWAL_REASON_LEN: usize = 1024;

/// A participant's withdrawal from the study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdrawal {
    /// When the service recorded it.
    pub at: DateTime<Utc>,
    /// The study server's reason, as sent.
    pub reason: String,
}

/// Where a participant stands at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// Their time in the study has not started.
    NotStarted,
    /// In the study.
    Active,
    /// Their time in the study has ended.
    Ended,
    /// Withdrawn.
    Withdrawn,
}

/// A registered participant, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participant {
    /// The participant.
    pub user_id: UserId,
    /// When they were registered.
    pub created_at: DateTime<Utc>,
    /// Their time in the study.
    pub enrollment: Enrollment,
    /// Their withdrawal, if they withdrew.
    pub withdrawal: Option<Withdrawal>,
    /// Decisions stored for them (of every type, including those without a draw).
    pub decisions: u64,
    /// Uploads stored for them.
    pub uploads: u64,
}

impl Participant {
    /// Where the participant stands at `at`.
    pub fn status_at(&self, at: DateTime<Utc>) -> ParticipantStatus {
        if self.withdrawal.is_some() {
            ParticipantStatus::Withdrawn
        } else if self.enrollment.start.as_ref().is_some_and(|s| at < s.at) {
            ParticipantStatus::NotStarted
        } else if self.enrollment.end.as_ref().is_some_and(|e| e.at <= at) {
            ParticipantStatus::Ended
        } else {
            ParticipantStatus::Active
        }
    }
}

/// What the store knows about a participant when a guarded decision could not be stored as
/// drawn (see [`crate::ports::DecisionGuard`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantFacts {
    /// Their time in the study.
    pub enrollment: Enrollment,
    /// Whether they have withdrawn.
    pub withdrawn: bool,
    /// Decisions of the same participant and type with a smaller index that were available (so
    /// in the study) and drawn by the service (policy algorithm, warm-up or fallback), counted
    /// up to the guard's
    /// `warmup_first_decisions` at most (0 when the guard had none).
    pub earlier_in_study: u64,
    /// Registered participants whose time in the study had started at the decision's
    /// `requested_at` (their start, or their registration when they have none), counted up to
    /// the guard's `warmup_until_participants` at most (0 when the guard had none).
    pub started_participants: u64,
}

/// The audit record of one erasure. It holds no participant id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// The erasure's id, given to the caller.
    pub id: Uuid,
    /// When it happened.
    pub erased_at: DateTime<Utc>,
    /// The participant's internal row number (the `id` of their `users` row), which finds
    /// their rows in backups taken before the erasure.
    pub participant_number: i64,
    /// The id that replaces the participant's in the decisions kept: `erased-<erasure id>`.
    pub pseudonym: String,
    /// Rows deleted or emptied, per table.
    pub row_counts: Vec<(String, u64)>,
    /// The backup taken just before.
    pub backup_file: String,
}

/// The index of a decision time for one participant (0, 1, 2, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DecisionIdx(i64);

impl DecisionIdx {
    /// Accepts a decision index.
    ///
    /// # Errors
    /// When the index is negative.
    pub fn new(raw: i64) -> Result<Self, InvalidValue> {
        if raw < 0 {
            return Err(InvalidValue(
                "decision_idx must be a non-negative integer.".into(),
            ));
        }
        Ok(Self(raw))
    }

    /// The index as a number.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// A probability: a finite number in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Probability(f64);

impl Probability {
    /// Probability 0: what an unavailable decision gets.
    pub const ZERO: Self = Self(0.0);

    /// Accepts a probability.
    ///
    /// # Errors
    /// When the value is not finite or lies outside [0, 1].
    pub fn new(raw: f64) -> Result<Self, InvalidValue> {
        if raw.is_finite() && (0.0..=1.0).contains(&raw) {
            Ok(Self(raw))
        } else {
            Err(InvalidValue(format!(
                "probability must lie in [0, 1], got {raw}."
            )))
        }
    }

    /// The probability as a number.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// A binary treatment decision: 0 (do nothing) or 1 (intervene).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Action 0: no intervention.
    Zero,
    /// Action 1: intervene (send the message, show the prompt).
    One,
}

impl Action {
    /// Accepts 0 or 1.
    ///
    /// # Errors
    /// For any other number.
    pub fn from_i64(raw: i64) -> Result<Self, InvalidValue> {
        match raw {
            0 => Ok(Self::Zero),
            1 => Ok(Self::One),
            _ => Err(InvalidValue("action must be 0 or 1.".into())),
        }
    }

    /// 0 or 1.
    pub fn as_i16(self) -> i16 {
        match self {
            Self::Zero => 0,
            Self::One => 1,
        }
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i16(self.as_i16())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = i64::deserialize(d)?;
        Self::from_i64(raw).map_err(serde::de::Error::custom)
    }
}

/// What an algorithm made of a context: a vector of finite numbers.
///
/// Whole numbers are written to JSON without a fractional part (`[23]`, not `[23.0]`), so a
/// state reads back as the client wrote the context; `-0.0` stays `-0.0` (an integer has no
/// negative zero). Every other number is written in the shortest form that reads back as the
/// same double.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct State(Vec<f64>);

impl State {
    /// Accepts a state vector.
    ///
    /// # Errors
    /// When any element is not finite.
    pub fn new(values: Vec<f64>) -> Result<Self, InvalidValue> {
        if values.iter().all(|v| v.is_finite()) {
            Ok(Self(values))
        } else {
            Err(InvalidValue(
                "state must be a list of finite numbers.".into(),
            ))
        }
    }

    /// The state's elements.
    pub fn values(&self) -> &[f64] {
        &self.0
    }
}

/// Largest magnitude at which every integer is exactly representable as an `f64`.
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for v in &self.0 {
            if v.fract() == 0.0 && v.abs() < EXACT_INT_LIMIT && !is_negative_zero(*v) {
                // Exact: the guard above keeps the value within i64 and integral.
                #[allow(clippy::cast_possible_truncation)]
                seq.serialize_element(&(*v as i64))?;
            } else {
                seq.serialize_element(v)?;
            }
        }
        seq.end()
    }
}

fn is_negative_zero(v: f64) -> bool {
    v == 0.0 && v.is_sign_negative()
}

/// One randomized decision, with everything needed to audit and replay it.
///
/// `C` and `S` hold the context and the state: parsed (the defaults), or as the JSON text the
/// store keeps for them in an [`ExportLine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision<C = JsonObject, S = State> {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision; indexes count separately per type.
    #[serde(default)]
    pub decision_type: DecisionType,
    /// The participant's decision time.
    pub decision_idx: DecisionIdx,
    /// The time the study server gave in its request.
    pub requested_at: DateTime<Utc>,
    /// The request's `timestamp` exactly as the study server sent it (`requested_at` is the
    /// instant it names).
    pub sent_timestamp: String,
    /// The time the service received the request.
    pub decided_at: DateTime<Utc>,
    /// Whether the participant was randomized; an unavailable decision has action 0 and
    /// probability 0, drawn from nothing.
    #[serde(default)]
    pub availability: Availability,
    /// The context as the client sent it.
    pub context: C,
    /// What the algorithm made of the context (empty for an unavailable decision whose
    /// context the algorithm cannot use).
    pub state: S,
    /// The action drawn.
    pub action: Action,
    /// The probability that the action is 1 under the parameters used.
    pub action_prob: Probability,
    /// The version of the model parameters in force (the one the draw used).
    pub parameter_version: i64,
    /// The seed of this decision's random generator (see [`crate::rng`]).
    pub rng_seed: u64,
    /// Which policy gave the probability.
    #[serde(default)]
    pub policy: Policy,
}

/// Study data uploaded for one decision: what happened after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyRecord {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    #[serde(default)]
    pub decision_type: DecisionType,
    /// The participant's decision time.
    pub decision_idx: DecisionIdx,
    /// The time the study server gave in its upload.
    pub requested_at: DateTime<Utc>,
    /// The upload's `timestamp` exactly as the study server sent it (`requested_at` is the
    /// instant it names).
    pub sent_timestamp: String,
    /// The time the service received the upload.
    pub received_at: DateTime<Utc>,
    /// The context at decision time, as uploaded.
    pub context: JsonObject,
    /// The action the participant got, as uploaded.
    pub action: Action,
    /// The probability of action 1, as uploaded.
    pub action_prob: Probability,
    /// The state, as uploaded.
    pub state: State,
    /// The outcome, as uploaded.
    pub outcome: JsonObject,
    /// The reward the algorithm derived from the outcome.
    pub reward: f64,
    /// Whether the decision was available for randomization. Storage takes it from the logged
    /// decision (true when none was logged), whatever the value given when recording; records
    /// of unavailable decisions are never streamed to a model update.
    #[serde(default = "available_by_default")]
    pub available: bool,
}

fn available_by_default() -> bool {
    true
}

impl StudyRecord {
    /// The record an update learns from for `decision` when its outcome never came within the
    /// study's outcome window: the decision's context, state, action and probability, an empty
    /// outcome and `reward`, the study's default. Its times are the decision's (`received_at`
    /// is when the service decided).
    pub fn imputed(decision: Decision, reward: f64) -> Self {
        Self {
            user_id: decision.user_id,
            decision_type: decision.decision_type,
            decision_idx: decision.decision_idx,
            requested_at: decision.requested_at,
            sent_timestamp: decision.sent_timestamp,
            received_at: decision.decided_at,
            context: decision.context,
            action: decision.action,
            action_prob: decision.action_prob,
            state: decision.state,
            outcome: JsonObject::new(),
            reward,
            available: decision.availability.is_available(),
        }
    }
}

/// One record an update learns from.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateRecord {
    /// Study data the study server uploaded.
    Uploaded(StudyRecord),
    /// A decision whose outcome never came within the outcome window, with the default reward
    /// ([`StudyRecord::imputed`]).
    Imputed(StudyRecord),
}

impl UpdateRecord {
    /// The record, uploaded or imputed.
    pub fn record(&self) -> &StudyRecord {
        match self {
            Self::Uploaded(r) | Self::Imputed(r) => r,
        }
    }

    /// The record, uploaded or imputed.
    pub fn into_record(self) -> StudyRecord {
        match self {
            Self::Uploaded(r) | Self::Imputed(r) => r,
        }
    }

    /// Whether the reward is the default one rather than uploaded.
    pub fn is_imputed(&self) -> bool {
        matches!(self, Self::Imputed(_))
    }
}

/// Which decisions an update learns from with a default reward because their outcome never
/// came (`[update] missing_outcomes = "default_reward"`): those decided at or before
/// `decided_by` (the update's start less the outcome window) without an upload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Imputation {
    /// Decisions the service made at or before this instant are past the outcome window.
    pub decided_by: DateTime<Utc>,
    /// The reward they are learned from with.
    pub reward: f64,
}

/// What an update learned with the default reward, stored in its provenance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImputedRewards {
    /// Decisions made at or before this instant without an upload were imputed.
    pub decided_by: DateTime<Utc>,
    /// The reward they were given.
    pub default_reward: f64,
    /// How many of the records the update read were imputed.
    pub rows: u64,
}

/// What was uploaded for one decision, as the analysis export shows it; `O` holds the outcome,
/// parsed (the default) or as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedUpload<O = JsonObject> {
    /// The time the study server gave in its upload.
    pub requested_at: DateTime<Utc>,
    /// The upload's `timestamp` exactly as the study server sent it (`requested_at` is the
    /// instant it names).
    pub sent_timestamp: String,
    /// The time the service received the upload.
    pub received_at: DateTime<Utc>,
    /// The outcome, as uploaded.
    pub outcome: O,
    /// The reward the algorithm derived from the outcome.
    pub reward: f64,
    /// The parameter version of the first completed update that read this upload; `None`
    /// while no update has (and always for an unavailable decision).
    pub used_in_version: Option<i64>,
    /// How many corrections the upload has had; `outcome` and `reward` are the newest
    /// correction's when it has any (the value in force).
    #[serde(default)]
    pub corrections: u32,
}

/// A correction of an upload, as stored: the values it sent in place of the original's, and
/// when. The original upload is kept as it was; the newest correction is the value in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Correction {
    /// Its place among the decision's corrections: 1 for the first.
    pub number: u32,
    /// The time the study server gave in the correction.
    pub requested_at: DateTime<Utc>,
    /// The correction's `timestamp` exactly as the study server sent it.
    pub sent_timestamp: String,
    /// The time the service received it.
    pub received_at: DateTime<Utc>,
    /// The corrected context.
    pub context: JsonObject,
    /// The corrected state.
    pub state: State,
    /// The corrected outcome.
    pub outcome: JsonObject,
    /// The reward the algorithm derived from the corrected outcome.
    pub reward: f64,
}

/// How a correction was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorrectionRecorded {
    /// Its place among the decision's corrections: 1 for the first.
    pub number: u32,
}

/// Everything stored for one decision key: the decision (if one was logged), the original
/// upload (if any) and every correction of it, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionHistory {
    /// The logged decision.
    pub decision: Option<Decision>,
    /// The original upload, as it was received.
    pub upload: Option<StudyRecord>,
    /// Its corrections, oldest first.
    pub corrections: Vec<Correction>,
}

/// One row of the analysis export: a decision and what was uploaded for it. `C` holds the
/// context and the outcome, `S` the state: parsed (the defaults), or as JSON text in an
/// [`ExportLine`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRow<C = JsonObject, S = State> {
    /// The decision as stored.
    pub decision: Decision<C, S>,
    /// Its study data, when uploaded.
    pub upload: Option<ExportedUpload<C>>,
    /// The first completed update that learned from it with the default reward because no
    /// outcome had come within the outcome window, if one did.
    pub imputed: Option<ImputedReward>,
}

/// A row of the analysis export with the context, the state and the outcome as JSON text: the
/// compact text the service wrote when it stored them, which is also what serialising the
/// parsed values gives ([`ExportRow::to_line`]), so the CSV can carry the stored text without
/// parsing it.
pub type ExportLine = ExportRow<String, String>;

impl ExportRow {
    /// The same row with its JSON values serialised as compact text, as the store holds them.
    ///
    /// # Errors
    /// Only if a value cannot be serialised (serde_json's own failure).
    pub fn to_line(&self) -> Result<ExportLine, serde_json::Error> {
        let d = &self.decision;
        Ok(ExportRow {
            decision: Decision {
                user_id: d.user_id.clone(),
                decision_type: d.decision_type.clone(),
                decision_idx: d.decision_idx,
                requested_at: d.requested_at,
                sent_timestamp: d.sent_timestamp.clone(),
                decided_at: d.decided_at,
                availability: d.availability.clone(),
                context: serde_json::to_string(&d.context)?,
                state: serde_json::to_string(&d.state)?,
                action: d.action,
                action_prob: d.action_prob,
                parameter_version: d.parameter_version,
                rng_seed: d.rng_seed,
                policy: d.policy.clone(),
            },
            upload: self
                .upload
                .as_ref()
                .map(|u| {
                    Ok::<_, serde_json::Error>(ExportedUpload {
                        requested_at: u.requested_at,
                        sent_timestamp: u.sent_timestamp.clone(),
                        received_at: u.received_at,
                        outcome: serde_json::to_string(&u.outcome)?,
                        reward: u.reward,
                        used_in_version: u.used_in_version,
                        corrections: u.corrections,
                    })
                })
                .transpose()?,
            imputed: self.imputed,
        })
    }
}

/// The first update that learned from a decision with the default reward, as the export shows
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImputedReward {
    /// The parameter version that update produced.
    pub version: i64,
    /// The reward it gave the decision.
    pub reward: f64,
}

/// One version of the algorithm's model parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelParameters {
    /// 1 for the priors, then one more for every completed update.
    pub version: i64,
    /// The algorithm these parameters belong to.
    pub algorithm: String,
    /// The parameters, in the algorithm's own JSON shape.
    pub values: serde_json::Value,
    /// When this version was stored.
    pub created_at: DateTime<Utc>,
}

/// Where a model update request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpdateStatus {
    /// Accepted and not finished yet.
    Processing,
    /// Finished; a new parameter version was stored.
    Completed,
    /// Finished without a new parameter version; `error` says why.
    Failed,
}

impl UpdateStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Reads a stored status.
    ///
    /// # Errors
    /// For a word that is not a status.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "processing" => Ok(Self::Processing),
            "completed" => Ok(Self::Completed),
            "failed" => Ok(Self::Failed),
            other => Err(InvalidValue(format!("unknown update status {other:?}"))),
        }
    }
}

/// A request to update the model, and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateRequest {
    /// The id returned to the client and sent in the callback.
    pub id: Uuid,
    /// The time the study server gave in its request.
    pub requested_at: DateTime<Utc>,
    /// The request's `timestamp` exactly as the study server sent it (`requested_at` is the
    /// instant it names).
    pub sent_timestamp: String,
    /// The time the service received the request.
    pub received_at: DateTime<Utc>,
    /// Where the outcome is POSTed.
    pub callback_url: String,
    /// Where the update stands.
    pub status: UpdateStatus,
    /// When it finished, if it has.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The parameter version it produced, if it completed.
    pub parameter_version: Option<i64>,
    /// How many times a worker has started it (more than one after an interruption).
    pub attempts: u32,
    /// When a worker last started it.
    pub started_at: Option<DateTime<Utc>>,
    /// Whether the study server was told the outcome.
    pub callback: CallbackDelivery,
    /// Where a completed update's parameters came from.
    pub provenance: Option<Provenance>,
}

impl UpdateRequest {
    /// A request just received: processing, never started, nothing delivered.
    pub fn new(
        id: Uuid,
        requested_at: DateTime<Utc>,
        sent_timestamp: String,
        received_at: DateTime<Utc>,
        callback_url: String,
    ) -> Self {
        Self {
            id,
            requested_at,
            sent_timestamp,
            received_at,
            callback_url,
            status: UpdateStatus::Processing,
            finished_at: None,
            error: None,
            parameter_version: None,
            attempts: 0,
            started_at: None,
            callback: CallbackDelivery::default(),
            provenance: None,
        }
    }
}

/// Where the delivery of an update's callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallbackStatus {
    /// Not delivered yet (the update runs, or delivery has not finished).
    #[default]
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed.
    Failed,
}

impl CallbackStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    /// Reads a stored status.
    ///
    /// # Errors
    /// For a word that is not a status.
    pub fn parse(raw: &str) -> Result<Self, InvalidValue> {
        match raw {
            "pending" => Ok(Self::Pending),
            "delivered" => Ok(Self::Delivered),
            "failed" => Ok(Self::Failed),
            other => Err(InvalidValue(format!("unknown callback status {other:?}"))),
        }
    }
}

/// The delivery of one update's callback.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CallbackDelivery {
    /// Where it stands.
    pub status: CallbackStatus,
    /// POSTs tried so far.
    pub attempts: u32,
    /// The last attempt's error, if it failed.
    pub last_error: Option<String>,
    /// When delivery ended (delivered or given up).
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a completed update was computed from, stored with it for audits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The service's version (`CARGO_PKG_VERSION` of the binary).
    pub service_version: String,
    /// The algorithm that computed the parameters.
    pub algorithm: String,
    /// SHA-256 of the effective configuration, hex.
    pub config_hash: String,
    /// Study records the update read.
    pub rows_read: u64,
    /// The backup taken before the update, if backups are on.
    pub backup_file: Option<String>,
    /// The kinds of decision the update learned from, as [`UpdateInclusion::as_stored`] writes
    /// them (`algorithm` for updates stored before decisions had kinds).
    pub included_policies: String,
    /// What it learned with the default reward; `None` when missing outcomes were left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imputed: Option<ImputedRewards>,
}

/// A completed update as an audit reads it back: which version it produced, when its job
/// started, and its provenance. [`crate::Store::update_rows`] streams the rows it read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletedUpdate {
    /// The update request's id.
    pub update_id: Uuid,
    /// The parameter version it produced.
    pub parameter_version: i64,
    /// When its job last started (`None` for updates stored before starts were recorded).
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where its parameters came from.
    pub provenance: Provenance,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_inclusion_reads_back_what_it_stores() {
        for warmup in [false, true] {
            for fallback in [false, true] {
                for host in [false, true] {
                    let include = UpdateInclusion {
                        warmup,
                        fallback,
                        host,
                    };
                    assert_eq!(UpdateInclusion::from_stored(&include.as_stored()), include);
                }
            }
        }
    }

    #[test]
    fn user_id_rules() {
        assert!(UserId::parse("test_user_123").is_ok());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("a".repeat(MAX_USER_ID_LEN)).is_ok());
        assert!(UserId::parse("a".repeat(MAX_USER_ID_LEN + 1)).is_err());
        assert!(UserId::parse("line\nbreak").is_err());
    }

    #[test]
    fn decision_type_rules() {
        assert_eq!(DecisionType::default().as_str(), "default");
        assert!(DecisionType::default().is_default());
        assert!(DecisionType::parse("morning").is_ok());
        assert!(DecisionType::parse("weekly-game.v2_b").is_ok());
        assert!(DecisionType::parse("").is_err());
        assert!(DecisionType::parse("a".repeat(MAX_DECISION_TYPE_LEN)).is_ok());
        assert!(DecisionType::parse("a".repeat(MAX_DECISION_TYPE_LEN + 1)).is_err());
        assert!(DecisionType::parse("two words").is_err());
        assert!(DecisionType::parse("matin\u{e9}e").is_err());
        assert!(DecisionType::parse("a/b").is_err());
    }

    #[test]
    fn unavailability_reason_rules() {
        assert!(Availability::default().is_available());
        let off = Availability::unavailable(Some("driving".into())).unwrap();
        assert!(!off.is_available());
        assert_eq!(off.reason(), Some("driving"));
        assert_eq!(Availability::unavailable(None).unwrap().reason(), None);
        assert!(Availability::unavailable(Some("a".repeat(MAX_UNAVAILABLE_REASON_LEN))).is_ok());
        assert!(
            Availability::unavailable(Some("a".repeat(MAX_UNAVAILABLE_REASON_LEN + 1))).is_err()
        );
        assert!(Availability::unavailable(Some("tab\there".into())).is_err());
    }

    #[test]
    fn decision_idx_refuses_negative() {
        assert_eq!(DecisionIdx::new(0).map(DecisionIdx::get), Ok(0));
        assert!(DecisionIdx::new(-1).is_err());
    }

    #[test]
    fn probability_refuses_outside_unit_interval() {
        assert!(Probability::new(0.0).is_ok());
        assert!(Probability::new(1.0).is_ok());
        assert!(Probability::new(-0.01).is_err());
        assert!(Probability::new(1.01).is_err());
        assert!(Probability::new(f64::NAN).is_err());
    }

    #[test]
    fn action_is_binary() {
        assert_eq!(Action::from_i64(1), Ok(Action::One));
        assert_eq!(Action::from_i64(0), Ok(Action::Zero));
        assert!(Action::from_i64(2).is_err());
    }

    #[test]
    fn state_writes_whole_numbers_without_fraction() {
        let state = State::new(vec![23.0, 1.5, -4.0]).unwrap();
        assert_eq!(serde_json::to_string(&state).unwrap(), "[23,1.5,-4]");
        assert!(State::new(vec![f64::INFINITY]).is_err());
    }

    #[test]
    fn state_keeps_the_sign_of_zero_and_every_bit() {
        let values = vec![
            -0.0,
            0.0,
            5e-324,
            f64::MAX,
            -f64::MAX,
            f64::MIN_POSITIVE,
            1e-300,
            9_007_199_254_740_992.0,
            13.306_201_483_010_007,
        ];
        let text = serde_json::to_string(&State::new(values.clone()).unwrap()).unwrap();
        assert!(text.starts_with("[-0.0,0,5e-324,"), "{text}");
        let read: State = serde_json::from_str(&text).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(read.values()), bits(&values), "{text}");
    }
}
