//! The ports: what the core needs from the outside world, as traits with written contracts.
//!
//! Adapters implement them (`justin-store` and `justin-store-sqlite` for [`Store`],
//! `justin-http` for [`Clock`] and [`CallbackNotifier`]; `crate::testing`, feature `testing`,
//! holds in-memory ones for tests). Every storage adapter passes the conformance suite in
//! `crate::conformance` (feature `conformance`), which checks the `MUST`s written here.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{
    Action, CallbackDelivery, CompletedUpdate, CorrectionRecorded, Decision, DecisionHistory,
    DecisionIdx, DecisionType, Enrollment, Erasure, ExportLine, ExportRow, Imputation,
    ModelParameters, Participant, ParticipantFacts, Probability, Provenance, StudyRecord,
    UpdateInclusion, UpdateRecord, UpdateRequest, UserId,
};

/// A boxed error from an adapter, kept as the `source` of a domain error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a storage adapter can report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The participant id is registered already.
    #[error("user already exists")]
    UserExists,
    /// The participant id is not registered.
    #[error("user not found")]
    UnknownUser,
    /// Study data was already uploaded for this (user, decision type, decision index).
    #[error("study data already uploaded for this decision")]
    StudyDataExists,
    /// A correction names a (user, decision type, decision index) with no upload to correct.
    #[error("no study data uploaded for this decision to correct")]
    NothingToCorrect,
    /// No update request has this id.
    #[error("update request not found")]
    UnknownUpdate,
    /// An upload's action or probability differs from the decision logged for it.
    #[error("the upload differs from the logged decision (action {logged_action:?}, action_prob {})", logged_prob.get())]
    UploadMismatch {
        /// The action the service drew.
        logged_action: Action,
        /// The probability of action 1 it drew with.
        logged_prob: Probability,
    },
    /// A backup file is not a complete backup of this service's tables; nothing was changed.
    #[error("not a complete backup: {0}")]
    InvalidBackup(String),
    /// The decision names a parameter version that is not stored (for instance after a reset
    /// by another process), or one older than the newest stored version (another process
    /// stored a newer one): either way the caller's view of the current parameters is stale.
    #[error("parameter version not found or not the newest")]
    UnknownParameterVersion,
    /// The database cannot be reached or gave no connection in time.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// The participant has withdrawn already (a second withdrawal changes nothing).
    #[error("user already withdrawn")]
    AlreadyWithdrawn,
    /// A decision for the key is stored with other values than a host decision sent for it
    /// (the stored one is returned).
    #[error("a different decision is stored for this key")]
    DecisionDiffers(Box<Decision>),
    /// Anything else; the source says what.
    #[error("storage failed")]
    Other(#[source] BoxError),
}

/// What [`Store::record_decision`] checks before it stores a decision drawn by the algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionGuard {
    /// Store the decision as given (its availability, policy and probability are final).
    None,
    /// Store the decision as given only if, in the same statement, the participant's window
    /// contains the decision's `requested_at`, they have not withdrawn, (when
    /// `warmup_first_decisions` is `Some(n)`) at least `n` decisions of the same participant
    /// and type with a smaller index are stored that were available and drawn by the service
    /// (policy algorithm, warm-up or fallback), and (when `warmup_until_participants` is
    /// `Some(k)`) at least `k` registered participants had started at the decision's
    /// `requested_at`. Otherwise store nothing and return [`Recorded::Ineligible`] with the
    /// facts, so the caller can decide again. Each count stops at its limit.
    InStudy {
        /// The warm-up's per-participant count, when it applies.
        warmup_first_decisions: Option<u32>,
        /// The warm-up's cohort size, when it applies.
        warmup_until_participants: Option<u32>,
    },
}

/// The outcome of recording a decision.
// Returned once per call and never collected, so the size of `Existing` costs nothing a box
// would save.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The decision was new and is now stored.
    Inserted,
    /// A decision for this (user, decision type, decision index) was stored before; here it
    /// is, unchanged.
    Existing(Decision),
    /// Nothing was stored: the guard did not hold. The participant's facts, read after the
    /// guarded insert stored nothing.
    Ineligible(ParticipantFacts),
}

/// How an update request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// A new parameter version was stored.
    Completed {
        /// The version produced.
        parameter_version: i64,
    },
    /// No new parameters; the reason.
    Failed {
        /// What went wrong, for operators.
        error: String,
    },
    /// The process was stopping: the update was put back, uncounted, for the next start.
    Requeued,
}

/// A backup written to disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Rows written, per table.
    pub row_counts: Vec<(String, u64)>,
}

/// Study data, streamed. Errors end the stream.
pub type StudyDataStream = Box<dyn Iterator<Item = Result<StudyRecord, StoreError>> + Send>;

/// What an update read, streamed: uploads, then imputed records. Errors end the stream.
pub type UpdateRecordStream = Box<dyn Iterator<Item = Result<UpdateRecord, StoreError>> + Send>;

/// Stored decisions, streamed. Errors end the stream.
pub type DecisionStream = Box<dyn Iterator<Item = Result<Decision, StoreError>> + Send>;

/// Rows of the analysis export, streamed. Errors end the stream.
pub type ExportStream = Box<dyn Iterator<Item = Result<ExportRow, StoreError>> + Send>;

/// Rows of the analysis export with their JSON as text, streamed. Errors end the stream.
pub type ExportLineStream = Box<dyn Iterator<Item = Result<ExportLine, StoreError>> + Send>;

/// How an upload related to the logged decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRecorded {
    /// Whether a decision was logged for the upload's (user, decision type, decision index);
    /// when it was, the upload's action and probability matched it.
    pub action_logged: bool,
}

/// A restore that finished.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RestoreReport {
    /// Rows put back, per table.
    pub row_counts: Vec<(String, u64)>,
}

/// An update request claimed by one worker.
///
/// While a job exists, no other worker of any process sharing the database can claim an
/// update. Its reads and [`UpdateJob::complete`] happen in one database transaction: the new
/// parameters and the request's completion are stored together or not at all. A job dropped
/// without `complete` or `fail` (or whose process dies) changes nothing but its attempt
/// count, and can be claimed again.
pub trait UpdateJob {
    /// The request being run, as claimed (`attempts` already counts this attempt).
    fn request(&self) -> &UpdateRequest;

    /// The newest parameter version, read inside the job's transaction.
    ///
    /// # Errors
    /// On storage failure, or [`StoreError::Other`] when no version exists.
    fn current_parameters(&mut self) -> Result<ModelParameters, StoreError>;

    /// Every study record of an available decision visible to the job's transaction, in
    /// upload order, streamed, each with the value in force when the job started: its newest
    /// correction committed before the job's start (context, state, outcome, reward), else the
    /// original. Records of unavailable decisions MUST NOT appear, nor those of
    /// participants withdrawn (in the snapshot) at or before the job's `started_at`, nor those
    /// whose logged decision's policy
    /// `include` leaves out (an upload without a logged decision is included).
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn study_data(
        &mut self,
        include: UpdateInclusion,
    ) -> Result<Box<dyn Iterator<Item = Result<StudyRecord, StoreError>> + '_>, StoreError> {
        let records = self.update_data(include, None)?;
        Ok(Box::new(records.filter_map(|item| match item {
            Ok(UpdateRecord::Uploaded(record)) => Some(Ok(record)),
            Ok(UpdateRecord::Imputed(_)) => None,
            Err(e) => Some(Err(e)),
        })))
    }

    /// What the update learns from, streamed: every record [`UpdateJob::study_data`] streams,
    /// as [`UpdateRecord::Uploaded`], and then, with an `imputation`, one
    /// [`UpdateRecord::Imputed`] ([`StudyRecord::imputed`] with its reward) for each decision
    /// in decision order that is available, of a policy `include` takes, of a participant not
    /// withdrawn at or before the job's `started_at`, made (`decided_at`) at or before
    /// `imputation.decided_by`, visible to the job, and without an upload among those
    /// `study_data` streams (withdrawal and policy aside). Decisions stored after the job's
    /// snapshot MUST NOT appear; [`UpdateJob::complete`] records the newest decision it could
    /// read, so that [`Store::update_rows`] and [`Store::export`] find the same decisions again
    /// later, whatever was uploaded since.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn update_data(
        &mut self,
        include: UpdateInclusion,
        imputation: Option<Imputation>,
    ) -> Result<Box<dyn Iterator<Item = Result<UpdateRecord, StoreError>> + '_>, StoreError>;

    /// Stores `values` as the next parameter version, marks the request completed with the
    /// provenance, records which study records [`UpdateJob::study_data`] could stream (so that
    /// [`Store::export`] shows, for each upload, the first update that read it) and, when the
    /// provenance has [`imputed`](Provenance::imputed) rewards, which decisions
    /// [`UpdateJob::update_data`] could impute (so that the export shows, for each decision, the
    /// first update that imputed its reward), and commits. Versions MUST increase by one with
    /// no gaps; records and decisions stored after the job's snapshot MUST NOT count as read
    /// by it.
    ///
    /// # Errors
    /// On storage failure, in which case nothing is stored.
    fn complete(
        self: Box<Self>,
        algorithm: &str,
        values: &serde_json::Value,
        provenance: &Provenance,
        finished_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError>;

    /// Discards the job's transaction and marks the request failed with `error`.
    ///
    /// # Errors
    /// On storage failure.
    fn fail(self: Box<Self>, error: &str, finished_at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Discards the job's transaction and puts the request back as if this attempt had never
    /// started, for a process that is stopping: the request MUST stay `processing`, its
    /// `attempts` MUST go back down by one and its `started_at` MUST be cleared, and the next
    /// claim MUST get it. A request that is no longer `processing` (reset or restored since
    /// the claim) is left as it is.
    ///
    /// # Errors
    /// On storage failure; the request then keeps this attempt counted, as after a crash.
    fn requeue(self: Box<Self>) -> Result<(), StoreError>;
}

/// Durable storage of a study.
///
/// Every method is one unit of work: it either happens whole or not at all.
pub trait Store: Send + Sync {
    /// Registers a participant with their time in the study (both bounds may be open), and
    /// records the enrollment in the participant's history.
    ///
    /// # Errors
    /// MUST return [`StoreError::UserExists`] when the id is registered already.
    fn add_user(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// A participant with their decision and upload counts, if registered (an erased
    /// participant is not: their id is gone).
    ///
    /// # Errors
    /// Only on storage failure.
    fn participant(&self, user: &UserId) -> Result<Option<Participant>, StoreError>;

    /// Replaces a participant's time in the study and records the change (old and new bounds,
    /// when) in their history, in one transaction. Decisions stored before keep what they got.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] when the participant is not registered.
    fn change_enrollment(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        changed_at: DateTime<Utc>,
    ) -> Result<Participant, StoreError>;

    /// Withdraws a participant with a reason and records it in their history, in one
    /// transaction. From then on [`DecisionGuard::InStudy`] fails for them, and none of their
    /// study data reaches an update (a job streams none of a participant withdrawn when it
    /// started; the rule [`Store::update_rows`] and [`Store::export`] apply too).
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] for an unregistered participant and
    /// [`StoreError::AlreadyWithdrawn`] (changing nothing) for one withdrawn already.
    fn withdraw(
        &self,
        user: &UserId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Participant, StoreError>;

    /// Erases a participant in one transaction: their uploads and history are deleted, their
    /// decisions are kept without context, state or unavailable reason under the pseudonym
    /// `erased-<id>` (so the trial's randomization record stays whole), their `users` row
    /// keeps only the pseudonym, and the audit record `erasure` (without `row_counts`, which
    /// this fills in) is stored. Afterwards no row of any table holds the participant's id,
    /// contexts, states or outcomes. Parameter versions are not touched.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] for an unregistered participant, changing
    /// nothing.
    fn erase_participant(&self, user: &UserId, erasure: &Erasure) -> Result<Erasure, StoreError>;

    /// The pseudonyms of erased participants, for replay to tell their decisions apart.
    ///
    /// # Errors
    /// Only on storage failure.
    fn erased_pseudonyms(&self) -> Result<Vec<String>, StoreError>;

    /// Stores a decision exactly once per (user, decision type, decision index), with its
    /// availability and reason, policy and whether the participant was in the study, after
    /// checking `guard` in the same statement (one round trip when it holds).
    ///
    /// MUST return [`Recorded::Existing`] with the stored decision, and store nothing, when a
    /// decision for the key exists; concurrent calls for one key MUST store exactly one.
    /// Decisions that differ only in type are different decisions. A call concurrent with
    /// [`Store::record_study_data`] for the same key MUST end as if the two had run one after
    /// the other, in some order.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] when the participant is not registered,
    /// [`StoreError::StudyDataExists`] when study data was uploaded for the key already, and
    /// [`StoreError::UnknownParameterVersion`] (storing nothing) when the decision's parameter
    /// version is not stored or is older than the newest stored version, whatever the guard
    /// says: the version check is part of the insert's one statement, so that a decision is
    /// never stored under a version older than one another process has published, and a
    /// participant's versions never decrease. A decision stored for the key before is still
    /// returned as [`Recorded::Existing`] whatever the version. A host decision ([`crate::domain::Policy::Host`]) is the exception to the
    /// study-data rule: when study data is uploaded for its key with the same action and a
    /// probability within [`Probability::TOLERANCE`], it is stored and the upload counts as
    /// logged from then on (its `action_logged` becomes true, its policy the decision's);
    /// otherwise [`StoreError::UploadMismatch`].
    fn record_decision(
        &self,
        decision: &Decision,
        guard: DecisionGuard,
    ) -> Result<Recorded, StoreError>;

    /// Stores uploaded study data, once per (user, decision type, decision index), and says
    /// whether a decision was logged for it. The record's `available` MUST be stored as the
    /// logged decision's availability, or true when none is logged, whatever `record` says.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] when the participant is not registered,
    /// [`StoreError::StudyDataExists`] when data for the key was uploaded already, and
    /// [`StoreError::UploadMismatch`] (storing nothing) when a decision was logged for the key
    /// with another action, or a probability more than 1e-9 away from the uploaded one. A
    /// decision of the key recorded concurrently counts as logged exactly when it is recorded
    /// first in the order the two calls appear to run.
    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError>;

    /// Stores `record` as a correction of the upload stored for its (user, decision type,
    /// decision index): its context, state, outcome, reward, timestamps (the sent text as it
    /// is) and the link to the original, which MUST NOT change. Corrections of one upload are
    /// numbered 1, 2, ... in the order stored; concurrent corrections of one upload MUST get
    /// different numbers. Updates that start after it commits read the newest correction of
    /// each upload in place of the original ([`UpdateJob::study_data`]).
    ///
    /// # Errors
    /// MUST return [`StoreError::NothingToCorrect`] when no upload is stored for the key (an
    /// unregistered or erased participant included), and [`StoreError::UploadMismatch`] with
    /// the original's action and probability (storing nothing) when the record's action
    /// differs from the original's or its probability is more than
    /// [`Probability::TOLERANCE`] away: a correction cannot change the decision's draw.
    fn record_correction(&self, record: &StudyRecord) -> Result<CorrectionRecorded, StoreError>;

    /// Everything stored for one decision key: the logged decision, the original upload and
    /// its corrections, oldest first; `None` when neither a decision nor an upload is stored
    /// for the key.
    ///
    /// # Errors
    /// Only on storage failure.
    fn decision_history(
        &self,
        user: &UserId,
        decision_type: &DecisionType,
        decision_idx: DecisionIdx,
    ) -> Result<Option<DecisionHistory>, StoreError>;

    /// Every stored decision, in the order they were stored, without loading them all into
    /// memory.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn decisions(&self) -> Result<DecisionStream, StoreError>;

    /// One row per stored decision, in the order they were stored, each with the study data
    /// uploaded for its key (if any; its outcome and reward the value in force now, with the
    /// number of corrections), the first update that used that data, and the first update that
    /// learned from the decision with its default reward ([`UpdateJob::update_data`]; the one
    /// of smallest version); without loading
    /// them all into memory. Decisions stored after the call starts MUST NOT appear.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn export(&self) -> Result<ExportStream, StoreError>;

    /// The rows of [`Store::export`] with the context, the state and the outcome as JSON text,
    /// each row equal to [`ExportRow::to_line`] of the row `export` gives. The default
    /// serialises `export`'s rows; a store keeping the compact text the service wrote passes
    /// it through without parsing it.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn export_lines(&self) -> Result<ExportLineStream, StoreError> {
        let rows = self.export()?;
        Ok(Box::new(rows.map(|row| {
            row?.to_line().map_err(|e| StoreError::Other(Box::new(e)))
        })))
    }

    /// The same rows as [`Store::export`], ordered by participant (by `user_id`, as bytes)
    /// and, within a participant, in the order they were stored; without loading them all into
    /// memory, from one snapshot.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn export_by_participant(&self) -> Result<ExportStream, StoreError>;

    /// Every completed update, by parameter version (oldest first).
    ///
    /// # Errors
    /// Only on storage failure.
    fn completed_updates(&self) -> Result<Vec<CompletedUpdate>, StoreError>;

    /// The records that the update which produced `version` read, in the order it read them,
    /// streamed from one snapshot: exactly those its job's [`UpdateJob::update_data`] streamed
    /// (uploads below its watermark, available, of a policy it included, of a participant not
    /// withdrawn when it started, each with the value that was in force for that update: the
    /// newest correction at or below the update's correction watermark, none for an update
    /// stored before corrections existed; then, when its provenance has
    /// [`imputed`](crate::Provenance::imputed) rewards, the decisions it imputed, with the
    /// reward stored there), as they are stored now. Records deleted since (an erasure) are
    /// missing; records changed since appear as they are now; an upload that came after the
    /// update for a decision it imputed leaves the decision imputed. An unknown version, or
    /// the initial one, streams nothing.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn update_rows(&self, version: i64) -> Result<UpdateRecordStream, StoreError>;

    /// The newest parameter version, or `None` before any was stored.
    ///
    /// # Errors
    /// Only on storage failure.
    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError>;

    /// Parameter version `version`, if it exists.
    ///
    /// # Errors
    /// Only on storage failure.
    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError>;

    /// Stores parameters as version 1 when no version exists yet, and returns the current
    /// version either way. Concurrent calls MUST leave exactly one version 1.
    ///
    /// # Errors
    /// Only on storage failure.
    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError>;

    /// Stores a new update request (status `processing`).
    ///
    /// # Errors
    /// Only on storage failure.
    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError>;

    /// Claims the oldest unfinished update request (by `received_at`), counting the attempt
    /// durably, and returns it as a job. MUST return `None` when another job is claimed
    /// anywhere on this database (at most one update runs at a time) or when no request is
    /// unfinished. A request whose earlier job was dropped or whose process died MUST be
    /// claimable again. The claim's `started_at` MUST be the later of `started_at` and the
    /// request's `received_at`: a worker reads its clock before it claims, and a request
    /// received in between has not started before it was received.
    ///
    /// # Errors
    /// Only on storage failure.
    fn claim_update(
        &self,
        started_at: DateTime<Utc>,
    ) -> Result<Option<Box<dyn UpdateJob + '_>>, StoreError>;

    /// Records the delivery of an update's callback.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUpdate`] when no request has this id.
    fn record_callback(&self, id: Uuid, delivery: &CallbackDelivery) -> Result<(), StoreError>;

    /// Finished update requests whose callback is still pending (the process stopped before
    /// delivering it), oldest first.
    ///
    /// # Errors
    /// Only on storage failure.
    fn undelivered_callbacks(&self) -> Result<Vec<UpdateRequest>, StoreError>;

    /// An update request, if it exists.
    ///
    /// # Errors
    /// Only on storage failure.
    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError>;

    /// Writes one consistent snapshot of every table into a new file in `dir` (created when
    /// missing) and returns where. A failed backup MUST leave no partial file under the final
    /// name.
    ///
    /// # Errors
    /// On storage or file-system failure.
    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError>;

    /// Replaces every row of every table with the backup's, and sets the identity sequences so
    /// new rows continue after the restored ones. The file MUST be checked whole (manifest,
    /// tables, columns, row counts) before anything is changed, and the replacement MUST
    /// happen in one transaction.
    ///
    /// # Errors
    /// [`StoreError::InvalidBackup`] for a file that is not a complete backup.
    fn restore(&self, file: &Path) -> Result<RestoreReport, StoreError>;

    /// Checks a backup file exactly as [`Store::restore`] would, changing nothing, and returns
    /// the rows it holds per table.
    ///
    /// # Errors
    /// [`StoreError::InvalidBackup`] for a file that is not a complete backup.
    fn check_backup(&self, file: &Path) -> Result<RestoreReport, StoreError>;

    /// Rows per table, for reports such as what a reset would delete.
    ///
    /// # Errors
    /// Only on storage failure.
    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Deletes every row of every table and restarts the identity sequences.
    ///
    /// # Errors
    /// Only on storage failure.
    fn reset(&self) -> Result<(), StoreError>;

    /// Answers when the database does.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    fn ping(&self) -> Result<(), StoreError>;

    // ---- The watchdog (`crate::monitor`): its reads and the state the instances share. ----

    /// What one watchdog check needs, in aggregate (never the study in memory): the active
    /// participants at `query.now` (registered, not withdrawn, not erased, their start at or
    /// before it or none, their end after it or none) with, per decision type of
    /// `query.decision_types` they have decisions of, the `request_timestamp` of the one with
    /// the highest `decision_idx`, by id, and none at all when `query.decision_types` is empty
    /// (without a schedule nothing judges them, and a large study's list is tens of MiB per
    /// check); per participant not withdrawn nor erased, their available
    /// in-study decisions with `request_timestamp` in `[outcome_lookback_from,
    /// outcome_due_before)` that have no upload (count and oldest), by id, only those with
    /// some; the updates and callbacks of [`crate::monitor::UpdateFacts`]; and the window's
    /// counts of [`crate::monitor::WindowFacts`] (decisions by `created_at`, uploads by
    /// `created_at`, refusals by their time, all at or after `window_from`).
    ///
    /// # Errors
    /// Only on storage failure.
    fn monitor_facts(
        &self,
        query: &crate::monitor::MonitorQuery,
    ) -> Result<crate::monitor::MonitorFacts, StoreError>;

    /// Keeps a refused upload (its decision type and time, nothing else) so that every instance
    /// counts it; [`Store::monitor_facts`] MUST count it in `window.refused`.
    ///
    /// # Errors
    /// Only on storage failure.
    fn record_refused_upload(
        &self,
        refusal: &crate::monitor::RefusedUpload,
    ) -> Result<(), StoreError>;

    /// Compares the shared verdict with `change.state` and sets it, in one transaction: when
    /// the stored state differs (or none is stored yet), it MUST be replaced and, when
    /// `change.alert` is given (and a state was stored before, or the new one is not green),
    /// an alert queued (the payload with its `previous` key set to the stored state's word,
    /// null for none), held by this caller until
    /// `change.lease_until`, and returned. Of concurrent callers moving the state
    /// to the same value, exactly one MUST see `changed` (and get the alert).
    ///
    /// # Errors
    /// Only on storage failure.
    fn advance_monitor_state(
        &self,
        change: &crate::monitor::StateChange,
    ) -> Result<crate::monitor::StateAdvance, StoreError>;

    /// Takes the oldest queued alert not delivered, not given up, and not held (its hold
    /// ended before `now`), holding it until `lease_until`; concurrent callers MUST NOT get
    /// the same alert while it is held. `None` when there is none.
    ///
    /// # Errors
    /// Only on storage failure.
    fn claim_alert(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<crate::monitor::Alert>, StoreError>;

    /// Records how an alert's delivery ended; a delivered or given-up alert is never claimed
    /// again.
    ///
    /// # Errors
    /// Only on storage failure (an unknown id changes nothing).
    fn record_alert(
        &self,
        id: i64,
        delivery: &crate::monitor::AlertDelivery,
    ) -> Result<(), StoreError>;

    // ---- The dashboard: its aggregate reads. ----

    /// The per-day figures of the whole study (decisions per day, decision type and parameter
    /// version with the quartiles of P(action = 1) and the counts at `settings.clip_bounds`;
    /// uploads and reward sums per day and decision type), days in `settings.zone` by each
    /// row's decision time (`request_timestamp`). Every decision and upload stored when the
    /// call starts MUST be counted exactly once, whatever order their ids were committed in;
    /// a database adapter reads a rollup brought up to date first
    /// ([`crate::dashboard::refresh_step`]), never every row. Sorted by day, type, version.
    ///
    /// # Errors
    /// Only on storage failure.
    fn dashboard_days(
        &self,
        settings: &crate::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<crate::dashboard::DashboardDays, StoreError>;

    /// Every registered participant, erased ones under their pseudonym, by id (as bytes), with
    /// the decision time of their latest decision and when their latest upload was received
    /// (as of the same refresh as [`Store::dashboard_days`]).
    ///
    /// # Errors
    /// Only on storage failure.
    fn dashboard_participants(
        &self,
        settings: &crate::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<crate::dashboard::ParticipantActivity>, StoreError>;

    /// How many participants are registered, erased ones included, and how many of them are
    /// erased: one count, without the rollup's refresh.
    ///
    /// # Errors
    /// Only on storage failure.
    fn dashboard_participant_counts(&self) -> Result<(u64, u64), StoreError>;

    /// Every update request with its provenance and callback delivery, newest received first.
    ///
    /// # Errors
    /// Only on storage failure.
    fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, StoreError>;

    /// The latest `limit` available decisions drawn under parameter version `version`, newest
    /// first (by id).
    ///
    /// # Errors
    /// Only on storage failure.
    fn dashboard_recent_decisions(
        &self,
        version: i64,
        limit: u32,
    ) -> Result<Vec<Decision>, StoreError>;
}

/// The storage methods only tests call: publishing a parameter version outside an update, to
/// arrange a store, and streaming every study record, to read one back. The service never
/// calls them, so they live behind the `testing` feature; every storage adapter implements
/// this under its own `testing` feature, and the conformance suite checks their contracts.
#[cfg(feature = "testing")]
pub trait TestingStore: Store {
    /// Stores parameters as the next version (the newest plus one) and returns it. Versions
    /// MUST increase by one with no gaps.
    ///
    /// # Errors
    /// Only on storage failure.
    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError>;

    /// Every study record stored when the call starts, in upload order, without loading them
    /// all into memory. Records stored after the call starts MUST NOT appear.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn study_data(&self) -> Result<StudyDataStream, StoreError>;
}

/// The time, as the service sees it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Waits (between callback attempts).
    fn sleep(&self, duration: std::time::Duration);
}

/// What a callback receiver is told when an update ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CallbackPayload {
    /// The update stored a new parameter version.
    Completed {
        /// The update's id.
        update_id: Uuid,
        /// When it finished.
        timestamp: DateTime<Utc>,
    },
    /// The update failed; the parameters are unchanged.
    Failed {
        /// The update's id.
        update_id: Uuid,
        /// Always "Model update failed."; the reason is stored, not sent.
        message: String,
    },
}

/// Delivers callbacks to the study server.
pub trait CallbackNotifier: Send + Sync {
    /// POSTs `payload` as JSON to `url`.
    ///
    /// # Errors
    /// MUST return an error when the receiver cannot be reached or answers with a non-2xx
    /// status.
    fn notify(&self, url: &str, payload: &CallbackPayload) -> Result<(), BoxError>;

    /// POSTs the watchdog's alert `payload` (JSON) to `url`. A notifier that delivers no
    /// alerts keeps this default, which fails every attempt.
    ///
    /// # Errors
    /// MUST return an error when the receiver cannot be reached or answers with a non-2xx
    /// status.
    fn notify_alert(&self, url: &str, payload: &serde_json::Value) -> Result<(), BoxError> {
        let _ = payload;
        Err(format!("this notifier cannot deliver alerts to {url}").into())
    }
}

/// How an update run by [`crate::Service::run_next_update`] ended, as [`Telemetry`] hears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateEnd {
    /// A new parameter version was stored.
    Completed,
    /// The update failed (and was stored as failed).
    Failed,
    /// The process was stopping: the update was put back for the next start.
    Requeued,
    /// The database was lost during the update: it stays unfinished for a later claim.
    Interrupted,
}

impl UpdateEnd {
    /// The word metrics label it with.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Requeued => "requeued",
            Self::Interrupted => "interrupted",
        }
    }
}

/// An observer of what happens inside the core's loops and the stores' pools, for metrics.
/// Every method has a no-op default, so an observer implements only what it counts; the
/// service holds [`NoTelemetry`] unless [`crate::Service::with_telemetry`] gives it another.
///
/// Methods are called on the request and worker threads, while work is under way: an
/// implementation MUST return quickly and MUST NOT block (count into atomics, never do IO).
/// Nothing passed to it identifies a participant or holds study data.
pub trait Telemetry: Send + Sync {
    /// An update ended after `duration` (from its claim to its outcome stored), having read
    /// `rows_read` study records (0 when it failed before or while reading them).
    fn update_ended(&self, end: UpdateEnd, duration: std::time::Duration, rows_read: u64) {
        let _ = (end, duration, rows_read);
    }

    /// A callback POST is about to be retried (an attempt after the first).
    fn callback_retried(&self) {}

    /// A callback's delivery ended: `Delivered`, `Failed` after its last attempt, or `Pending`
    /// (left for a later pass because the process is stopping).
    fn callback_ended(&self, status: crate::domain::CallbackStatus) {
        let _ = status;
    }

    /// A store handed out a pooled connection after the caller waited `waited` for it.
    fn pool_checkout(&self, waited: std::time::Duration) {
        let _ = waited;
    }

    /// A caller gave up waiting for a pooled connection (the pool's timeout passed).
    fn pool_timeout(&self) {}
}

/// The observer that counts nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTelemetry;

impl Telemetry for NoTelemetry {}
