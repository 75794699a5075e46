//! The use cases: add a user, request an action, upload data, request an update and run it.
//!
//! [`Service`] is written against the ports only. It keeps the current model parameters in
//! memory, so the hot path (`request_action`) costs one storage call: the insert of the
//! decision. The cache is replaced whenever this process publishes a new version.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::algorithm::{ActionChoice, Algorithm, AlgorithmError};
use crate::domain::{
    Action, Availability, CallbackStatus, Decision, DecisionIdx, DecisionType, JsonObject,
    ModelParameters, Probability, Provenance, State, StudyRecord, UpdateRequest, UpdateStatus,
    UserId,
};
use crate::ports::{
    BackupReport, CallbackNotifier, CallbackPayload, Clock, ExportStream, Recorded, Store,
    StoreError, UpdateJob, UpdateOutcome, UploadRecorded,
};
use crate::rng::DecisionRng;

/// The log target of records about the algorithm (routed to `rl.log`).
pub const RL_TARGET: &str = "justin::rl";

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The participant id is registered already.
    #[error("User already exists.")]
    UserExists,
    /// The participant id is not registered.
    #[error("User not found.")]
    UserNotFound,
    /// Study data exists for this decision already.
    #[error("Decision index already exists.")]
    DecisionExists,
    /// An upload's action or probability differs from the logged decision.
    #[error("The uploaded action ({uploaded_action}) and action_prob ({uploaded_prob}) must match the logged decision (action {logged_action}, action_prob {logged_prob}).")]
    UploadMismatch {
        /// The uploaded action.
        uploaded_action: i16,
        /// The uploaded probability.
        uploaded_prob: f64,
        /// The logged action.
        logged_action: i16,
        /// The logged probability.
        logged_prob: f64,
    },
    /// A file given to restore is not a complete backup; nothing was changed.
    #[error("{0}")]
    InvalidBackup(String),
    /// No update request has this id.
    #[error("Update not found.")]
    UpdateNotFound,
    /// No parameter version has this number.
    #[error("Parameter version not found.")]
    ParametersNotFound,
    /// The client's context or outcome is unusable; the message says why.
    #[error("{0}")]
    InvalidInput(String),
    /// The database cannot be reached.
    #[error(transparent)]
    Unavailable(StoreError),
    /// The service is misconfigured or its stored state is inconsistent.
    #[error("{0}")]
    Setup(String),
    /// The algorithm failed on input that was not the client's fault.
    #[error("algorithm failed")]
    Algorithm(#[source] AlgorithmError),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserExists => Self::UserExists,
            StoreError::UnknownUser => Self::UserNotFound,
            StoreError::StudyDataExists => Self::DecisionExists,
            StoreError::UnknownUpdate => Self::UpdateNotFound,
            StoreError::InvalidBackup(why) => {
                Self::InvalidBackup(format!("not a complete backup: {why}"))
            }
            // Only upload_data can meet this, and it maps it with the uploaded values itself.
            e @ StoreError::UploadMismatch { .. } => Self::Store(e),
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            e @ (StoreError::Other(_) | StoreError::UnknownParameterVersion) => Self::Store(e),
        }
    }
}

impl From<AlgorithmError> for DomainError {
    fn from(e: AlgorithmError) -> Self {
        match e {
            AlgorithmError::InvalidInput(msg) => Self::InvalidInput(msg),
            other => Self::Algorithm(other),
        }
    }
}

/// Settings the use cases need, read once at start-up.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The study seed (`algorithm.seed`).
    pub seed: u64,
    /// Where backups go before each update; `None` when backups are off.
    pub backup_dir: Option<PathBuf>,
    /// How many times an update may be started before it is abandoned as failed (an update
    /// is started again after its process died).
    pub update_attempts: u32,
    /// How callbacks are retried.
    pub callbacks: CallbackPolicy,
    /// The service's version, for provenance.
    pub service_version: String,
    /// SHA-256 of the effective configuration, hex, for provenance.
    pub config_hash: String,
}

/// How callback delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// POSTs at most (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each one after.
    pub first_backoff: Duration,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
}

impl CallbackPolicy {
    /// The longest a delivery can take from first attempt to last: after this, a callback
    /// still pending was left behind by a process that stopped.
    pub fn longest_delivery(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut backoff = self.first_backoff;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                total = total.saturating_add(backoff);
                backoff = backoff.saturating_mul(2);
            }
            total = total.saturating_add(self.attempt_timeout);
        }
        total
    }
}

/// What an unavailable decision gets, without a draw.
const UNAVAILABLE_CHOICE: ActionChoice = ActionChoice {
    action: Action::Zero,
    action_prob: Probability::ZERO,
};

/// The largest difference between two probabilities that still counts as equal, for uploads
/// and replay (JSON round trips of a float are exact, so this only absorbs foreign rounding).
pub const PROBABILITY_TOLERANCE: f64 = Probability::TOLERANCE;

/// A decision that did not replay as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayMismatch {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The stored action.
    pub stored_action: Action,
    /// The stored probability of action 1.
    pub stored_prob: Probability,
    /// What the replay drew, when it could draw.
    pub replayed_action: Option<Action>,
    /// The replay's probability of action 1, when it could draw.
    pub replayed_prob: Option<Probability>,
    /// What differs.
    pub reason: String,
}

/// What a replay checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Decisions replayed.
    pub checked: u64,
    /// Decisions that did not come out as stored.
    pub mismatches: u64,
}

/// Refuses parameters holding null anywhere: serde_json turns NaN and infinities into null,
/// so a null is how a non-finite number shows.
fn check_finite(values: &serde_json::Value) -> Result<(), DomainError> {
    fn has_null(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Array(items) => items.iter().any(has_null),
            serde_json::Value::Object(map) => map.values().any(has_null),
            _ => false,
        }
    }
    if has_null(values) {
        return Err(DomainError::Algorithm(AlgorithmError::InvalidParameters(
            "the new parameters hold a null or non-finite number".into(),
        )));
    }
    Ok(())
}

/// A request for an action, parsed.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The study server's timestamp.
    pub requested_at: DateTime<Utc>,
    /// The timestamp exactly as the study server sent it.
    pub sent_timestamp: String,
    /// Whether the participant can be randomized now.
    pub availability: Availability,
    /// The context.
    pub context: JsonObject,
}

/// The answer to an action request.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionResponse {
    /// The decision, new or stored before.
    pub decision: Decision,
    /// Whether this request created it (false: a repeat returned the stored one).
    pub created: bool,
}

/// An upload, parsed.
#[derive(Debug, Clone)]
pub struct UploadRequest {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The study server's timestamp.
    pub requested_at: DateTime<Utc>,
    /// The timestamp exactly as the study server sent it.
    pub sent_timestamp: String,
    /// The context at decision time.
    pub context: JsonObject,
    /// The action the participant got.
    pub action: Action,
    /// The probability of action 1.
    pub action_prob: Probability,
    /// The state.
    pub state: State,
    /// What happened.
    pub outcome: JsonObject,
}

/// The decision service: the use cases over the ports.
pub struct Service {
    store: Arc<dyn Store>,
    algorithm: Arc<dyn Algorithm>,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn CallbackNotifier>,
    settings: ServiceSettings,
    current: RwLock<Option<Arc<ModelParameters>>>,
    /// Set when the process is stopping: no update starts, and the one under way is put back.
    stopping: AtomicBool,
    /// When the most recent write failed because the database's disk is full, unless a write
    /// has succeeded since: readiness answers 503 meanwhile (see [`Service::ready`]).
    disk_full_since: std::sync::Mutex<Option<DateTime<Utc>>>,
    /// Whether `disk_full_since` holds a time: every successful write reads this, and only
    /// one that has a mark to clear takes the lock, so decisions do not queue on it.
    disk_full_marked: AtomicBool,
}

/// How long after a write failed for want of disk space readiness stays 503 when no write
/// succeeds meanwhile. Behind a load balancer that stops sending requests to an instance that
/// is not ready, no write would clear it; after this long the instance is offered traffic
/// again, and the next failed write holds it off for as long again.
pub const DISK_FULL_HOLD: chrono::Duration = chrono::Duration::seconds(30);

/// Whether `e` says the database could not write for want of disk space: SQLite's
/// `SQLITE_FULL` ("database or disk is full") and PostgreSQL's `disk_full` errors and the
/// operating system's `ENOSPC` ("No space left on device"), as their messages say.
pub fn is_disk_full(e: &dyn std::error::Error) -> bool {
    let text = error_chain(e);
    [
        "database or disk is full",
        "No space left on device",
        "could not extend file",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("algorithm", &self.algorithm.name())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Wires the use cases to their ports.
    pub fn new(
        store: Arc<dyn Store>,
        algorithm: Arc<dyn Algorithm>,
        clock: Arc<dyn Clock>,
        notifier: Arc<dyn CallbackNotifier>,
        settings: ServiceSettings,
    ) -> Self {
        Self {
            store,
            algorithm,
            clock,
            notifier,
            settings,
            current: RwLock::new(None),
            stopping: AtomicBool::new(false),
            disk_full_since: std::sync::Mutex::new(None),
            disk_full_marked: AtomicBool::new(false),
        }
    }

    /// Notes how a write request ended for readiness: a failure for want of disk space marks
    /// the database as full, a success clears the mark; other failures change nothing.
    fn track_write<T>(&self, result: Result<T, DomainError>) -> Result<T, DomainError> {
        let full = match &result {
            Ok(_) => Some(false),
            Err(e) if is_disk_full(e) => Some(true),
            Err(_) => None,
        };
        // The common case, a write that succeeds while nothing is marked, takes no lock.
        if let Some(full) =
            full.filter(|&full| full || self.disk_full_marked.load(Ordering::Acquire))
        {
            let mut since = self
                .disk_full_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *since = full.then(|| self.clock.now());
            self.disk_full_marked.store(full, Ordering::Release);
        }
        result
    }

    /// Tells the update under way that the process is stopping. If it is still reading study
    /// data (or taking its backup), it stops there and its request is put back, uncounted,
    /// for the next start ([`UpdateOutcome::Requeued`]); if its algorithm has finished, it is
    /// stored as usual. From now on [`Service::run_next_update`] starts nothing.
    pub fn stop_updates(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> &dyn Algorithm {
        self.algorithm.as_ref()
    }

    /// Makes sure a parameter version exists: when the store has none, the priors become
    /// version 1. Loads the current version into memory.
    ///
    /// # Errors
    /// [`DomainError::Setup`] when the priors are invalid or the stored parameters belong to
    /// another algorithm than the configured one.
    pub fn initialise(&self, priors: &JsonObject) -> Result<ModelParameters, DomainError> {
        // The priors become a published policy too: the same checks apply.
        let values = self
            .algorithm
            .initial_parameters(priors)
            .and_then(|values| {
                self.algorithm.validate_parameters(&values)?;
                Ok(values)
            })
            .map_err(|e| DomainError::Setup(e.to_string()))?;
        let current =
            self.store
                .seed_parameters(self.algorithm.name(), &values, self.clock.now())?;
        if current.algorithm != self.algorithm.name() {
            return Err(DomainError::Setup(format!(
                "the database holds parameters of algorithm {:?} (version {}), but the configured algorithm is {:?}",
                current.algorithm,
                current.version,
                self.algorithm.name()
            )));
        }
        // Decisions are drawn from the stored version, so it must suit the algorithm as
        // configured now (its options may have changed since it was stored).
        self.algorithm
            .validate_parameters(&current.values)
            .map_err(|e| {
                DomainError::Setup(format!(
                    "the stored parameters (version {}) do not suit the configured algorithm: {e}",
                    current.version
                ))
            })?;
        log::info!(target: RL_TARGET, "{} parameters at version {}", current.algorithm, current.version);
        self.set_current(current.clone());
        Ok(current)
    }

    fn set_current(&self, params: ModelParameters) {
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::new(params));
    }

    /// The parameters decisions are drawn from now.
    ///
    /// # Errors
    /// On storage failure, or [`DomainError::Setup`] when no version exists.
    pub fn current_parameters(&self) -> Result<Arc<ModelParameters>, DomainError> {
        if let Some(p) = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Arc::clone(p));
        }
        let loaded = self.store.current_parameters()?.ok_or_else(|| {
            DomainError::Setup(
                "no model parameters are stored; start the service once to install the priors"
                    .into(),
            )
        })?;
        self.set_current(loaded.clone());
        Ok(Arc::new(loaded))
    }

    /// Parameter version `version`.
    ///
    /// # Errors
    /// [`DomainError::ParametersNotFound`] when it does not exist.
    pub fn parameters(&self, version: i64) -> Result<ModelParameters, DomainError> {
        self.store
            .parameters(version)?
            .ok_or(DomainError::ParametersNotFound)
    }

    /// Registers a participant.
    ///
    /// # Errors
    /// [`DomainError::UserExists`] for an id registered already.
    pub fn add_user(&self, user: &UserId) -> Result<(), DomainError> {
        let added = self.store.add_user(user, self.clock.now());
        self.track_write(added.map_err(DomainError::from))
    }

    /// Draws and stores an action, or returns the one stored for this decision before.
    ///
    /// An unavailable decision is stored without a draw: action 0, probability 0. Its context
    /// need not be one the algorithm can use (a participant who is driving may send little);
    /// when it is not, the stored state is empty.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context the algorithm cannot use (of an available
    /// decision), [`DomainError::UserNotFound`] for an unknown participant and
    /// [`DomainError::DecisionExists`] when study data was uploaded for the decision.
    pub fn request_action(&self, req: ActionRequest) -> Result<ActionResponse, DomainError> {
        let answered = self.request_action_untracked(req);
        self.track_write(answered)
    }

    fn request_action_untracked(&self, req: ActionRequest) -> Result<ActionResponse, DomainError> {
        let decided_at = self.clock.now();
        let available = req.availability.is_available();
        let state = match self.algorithm.make_state(&req.context) {
            Ok(state) => state,
            Err(AlgorithmError::InvalidInput(_)) if !available => State::default(),
            Err(e) => return Err(e.into()),
        };
        let params = self.current_parameters()?;
        let (choice, rng_seed) = self.choose(
            &req.user_id,
            &req.decision_type,
            req.decision_idx,
            &req.availability,
            &state,
            &params,
        )?;
        let mut decision = Decision {
            user_id: req.user_id,
            decision_type: req.decision_type,
            decision_idx: req.decision_idx,
            requested_at: req.requested_at,
            sent_timestamp: req.sent_timestamp,
            decided_at,
            availability: req.availability,
            context: req.context,
            state,
            action: choice.action,
            action_prob: choice.action_prob,
            parameter_version: params.version,
            rng_seed,
        };
        let recorded = match self.store.record_decision(&decision) {
            // The cached version is gone (another process reset the database): reload the
            // current parameters and draw again from them.
            Err(StoreError::UnknownParameterVersion) => {
                self.forget_current();
                let params = self.current_parameters()?;
                let (choice, _) = self.choose(
                    &decision.user_id,
                    &decision.decision_type,
                    decision.decision_idx,
                    &decision.availability,
                    &decision.state,
                    &params,
                )?;
                decision.action = choice.action;
                decision.action_prob = choice.action_prob;
                decision.parameter_version = params.version;
                self.store.record_decision(&decision)?
            }
            other => other?,
        };
        Ok(match recorded {
            Recorded::Inserted => ActionResponse {
                decision,
                created: true,
            },
            Recorded::Existing(stored) => ActionResponse {
                decision: stored,
                created: false,
            },
        })
    }

    /// Draws an action from `params` with the decision's own generator, or gives action 0
    /// with probability 0 without a draw for an unavailable decision; returns the choice and
    /// the generator's seed (stored either way, so every decision's seed can be checked).
    fn choose(
        &self,
        user: &UserId,
        decision_type: &DecisionType,
        idx: DecisionIdx,
        availability: &Availability,
        state: &State,
        params: &ModelParameters,
    ) -> Result<(ActionChoice, u64), DomainError> {
        let mut rng = DecisionRng::for_decision(self.settings.seed, user, decision_type, idx);
        let choice = if availability.is_available() {
            self.algorithm
                .get_action(user, state, &params.values, idx, &mut rng)?
        } else {
            UNAVAILABLE_CHOICE
        };
        Ok((choice, rng.seed()))
    }

    /// Reloads the current parameters from storage, so that a version published by another
    /// process is used here too. Returns the version now in force.
    ///
    /// # Errors
    /// On storage failure.
    pub fn refresh_parameters(&self) -> Result<i64, DomainError> {
        self.forget_current();
        Ok(self.current_parameters()?.version)
    }

    fn forget_current(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Stores uploaded study data with the reward the algorithm derives from its outcome.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context or outcome the algorithm cannot use,
    /// [`DomainError::UserNotFound`] for an unknown participant and
    /// [`DomainError::DecisionExists`] for a second upload of one decision.
    pub fn upload_data(&self, req: UploadRequest) -> Result<UploadRecorded, DomainError> {
        let recorded = self.upload_data_untracked(req);
        self.track_write(recorded)
    }

    fn upload_data_untracked(&self, req: UploadRequest) -> Result<UploadRecorded, DomainError> {
        let received_at = self.clock.now();
        self.algorithm.make_state(&req.context)?;
        let reward =
            self.algorithm
                .make_reward(&req.user_id, &req.state, req.action, &req.outcome)?;
        if !reward.is_finite() {
            return Err(DomainError::InvalidInput(
                "The outcome gives a reward that is not a finite number.".into(),
            ));
        }
        let record = StudyRecord {
            user_id: req.user_id,
            decision_type: req.decision_type,
            decision_idx: req.decision_idx,
            requested_at: req.requested_at,
            sent_timestamp: req.sent_timestamp,
            received_at,
            context: req.context,
            action: req.action,
            action_prob: req.action_prob,
            state: req.state,
            outcome: req.outcome,
            reward,
            // Storage takes it from the logged decision.
            available: true,
        };
        match self.store.record_study_data(&record) {
            Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) => Err(DomainError::UploadMismatch {
                uploaded_action: record.action.as_i16(),
                uploaded_prob: record.action_prob.get(),
                logged_action: logged_action.as_i16(),
                logged_prob: logged_prob.get(),
            }),
            other => Ok(other?),
        }
    }

    /// Records a model update request. A worker runs it later with
    /// [`Service::run_next_update`], in this process or another sharing the database.
    ///
    /// # Errors
    /// On storage failure.
    pub fn request_update(
        &self,
        requested_at: DateTime<Utc>,
        sent_timestamp: String,
        callback_url: String,
    ) -> Result<UpdateRequest, DomainError> {
        let request = UpdateRequest::new(
            Uuid::new_v4(),
            requested_at,
            sent_timestamp,
            self.clock.now(),
            callback_url,
        );
        let created = self.store.create_update_request(&request);
        self.track_write(created.map_err(DomainError::from))?;
        Ok(request)
    }

    /// An update request and what became of it.
    ///
    /// # Errors
    /// [`DomainError::UpdateNotFound`] for an unknown id.
    pub fn update_request(&self, id: Uuid) -> Result<UpdateRequest, DomainError> {
        self.store
            .update_request(id)?
            .ok_or(DomainError::UpdateNotFound)
    }

    /// Claims the oldest unfinished update request and runs it to its end: backup, new
    /// parameters checked and published together with the request's completion, callback.
    /// Returns the request and how it ended, or `None` when there was nothing to run (or
    /// another worker holds the update lock, or the service is stopping).
    ///
    /// # Errors
    /// When the outcome itself cannot be stored, and [`DomainError::Unavailable`] when the
    /// database was lost during the update: the request then stays unfinished, this attempt
    /// counted, for a later call to claim again (see `update.attempts`). A failed update is an
    /// [`UpdateOutcome::Failed`], stored and sent to the callback.
    pub fn run_next_update(&self) -> Result<Option<(UpdateRequest, UpdateOutcome)>, DomainError> {
        if self.is_stopping() {
            return Ok(None);
        }
        let Some(mut job) = self.store.claim_update(self.clock.now())? else {
            return Ok(None);
        };
        let request = job.request().clone();
        let outcome = if request.attempts > self.settings.update_attempts {
            let error = format!(
                "abandoned after {} interrupted attempts",
                request.attempts - 1
            );
            job.fail(&error, self.clock.now())?;
            UpdateOutcome::Failed { error }
        } else {
            match self.compute_update(job.as_mut()) {
                Ok(None) => {
                    job.requeue()?;
                    log::info!(
                        target: RL_TARGET,
                        "update {} put back for the next start: the service is stopping; \
                         nothing it computed was stored",
                        request.id
                    );
                    return Ok(Some((
                        self.update_request(request.id)?,
                        UpdateOutcome::Requeued,
                    )));
                }
                Ok(Some((values, provenance, change))) => {
                    let published = job.complete(
                        self.algorithm.name(),
                        &values,
                        &provenance,
                        self.clock.now(),
                    )?;
                    // Only now, once stored, is the policy's change reported.
                    let change = if change.is_empty() {
                        String::new()
                    } else {
                        format!(": {change}")
                    };
                    log::info!(
                        target: RL_TARGET,
                        "update {} stored {} parameters version {} from {} records{change}",
                        request.id, published.algorithm, published.version, provenance.rows_read
                    );
                    let version = published.version;
                    self.set_current(published);
                    UpdateOutcome::Completed {
                        parameter_version: version,
                    }
                }
                // The database was lost (a restart, an outage): nothing says the update itself
                // is bad. Dropping the job rolls its transaction back and leaves the request
                // `processing` with this attempt counted, so a later poll claims it again
                // while `update.attempts` allows; no callback goes out.
                Err(e @ DomainError::Unavailable(_)) => {
                    drop(job);
                    log::warn!(
                        target: RL_TARGET,
                        "update {} interrupted (attempt {} of {}), to be claimed again: {}",
                        request.id,
                        request.attempts,
                        self.settings.update_attempts,
                        error_chain(&e)
                    );
                    return Err(e);
                }
                Err(e) => {
                    let error = error_chain(&e);
                    log::error!(target: RL_TARGET, "update {} failed: {error}", request.id);
                    job.fail(&error, self.clock.now())?;
                    UpdateOutcome::Failed { error }
                }
            }
        };
        let finished = self.update_request(request.id)?;
        self.deliver_callback(&finished)?;
        Ok(Some((finished, outcome)))
    }

    /// Delivers the callbacks of finished updates that a stopped process did not deliver.
    ///
    /// # Errors
    /// On storage failure.
    pub fn deliver_pending_callbacks(&self) -> Result<usize, DomainError> {
        // A callback pending for less than the longest delivery may still be under way in the
        // process that ran the update; only older ones were left behind.
        let grace = chrono::Duration::from_std(self.settings.callbacks.longest_delivery())
            .unwrap_or(chrono::Duration::MAX)
            .checked_add(&chrono::Duration::seconds(5))
            .unwrap_or(chrono::Duration::MAX);
        let now = self.clock.now();
        let cutoff = now
            .checked_sub_signed(grace)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut delivered = 0;
        for request in self.store.undelivered_callbacks()? {
            if request.finished_at.is_some_and(|at| at < cutoff) {
                self.deliver_callback(&request)?;
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// POSTs a finished update's outcome to its callback URL, retrying with exponential
    /// backoff, and records how delivery ended.
    fn deliver_callback(&self, request: &UpdateRequest) -> Result<(), DomainError> {
        let payload = match request.status {
            UpdateStatus::Completed => CallbackPayload::Completed {
                update_id: request.id,
                timestamp: request.finished_at.unwrap_or_else(|| self.clock.now()),
            },
            UpdateStatus::Failed => CallbackPayload::Failed {
                update_id: request.id,
                message: "Model update failed.".into(),
            },
            UpdateStatus::Processing => return Ok(()),
        };
        let policy = &self.settings.callbacks;
        let mut delivery = request.callback.clone();
        let mut backoff = policy.first_backoff;
        for attempt in 1..=policy.attempts {
            if attempt > 1 {
                if self.is_stopping() {
                    // Left pending, not failed: a later poll, of the next process if need be,
                    // delivers it.
                    log::info!(
                        "callback for update {} left pending: the service is stopping",
                        request.id
                    );
                    delivery.status = CallbackStatus::Pending;
                    self.store.record_callback(request.id, &delivery)?;
                    return Ok(());
                }
                self.clock.sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
            delivery.attempts += 1;
            match self.notifier.notify(&request.callback_url, &payload) {
                Ok(()) => {
                    delivery.status = CallbackStatus::Delivered;
                    delivery.last_error = None;
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "callback for update {} failed (attempt {attempt} of {}): {e}",
                        request.id,
                        policy.attempts
                    );
                    delivery.status = CallbackStatus::Failed;
                    delivery.last_error = Some(e.to_string());
                }
            }
        }
        delivery.finished_at = Some(self.clock.now());
        self.store.record_callback(request.id, &delivery)?;
        Ok(())
    }

    /// Computes and checks new parameters inside the job, with the algorithm's description of
    /// the change for the log once stored; nothing is stored or logged about them here.
    fn compute_update(
        &self,
        job: &mut dyn UpdateJob,
    ) -> Result<Option<(serde_json::Value, Provenance, String)>, DomainError> {
        let backup_file = match &self.settings.backup_dir {
            Some(dir) => {
                let report = self.backup_to(dir)?;
                log::info!("backup before update written to {}", report.path.display());
                let name = report.path.file_name().unwrap_or(report.path.as_os_str());
                Some(name.to_string_lossy().into_owned())
            }
            None => None,
        };
        if self.is_stopping() {
            return Ok(None);
        }
        let current = job.current_parameters()?;
        let mut failure: Option<StoreError> = None;
        let mut interrupted = false;
        let mut rows_read: u64 = 0;
        let values = {
            let mut records = job.study_data()?.map_while(|item| match item {
                // The algorithm sees the end of the data early; what it computes is dropped.
                Ok(_) if self.is_stopping() => {
                    interrupted = true;
                    None
                }
                Ok(record) => {
                    rows_read += 1;
                    Some(record)
                }
                Err(e) => {
                    failure = Some(e);
                    None
                }
            });
            // A panicking algorithm fails this update like any other error, instead of
            // taking the worker thread (and every later update of this process) with it.
            let algorithm = &self.algorithm;
            let current_values = &current.values;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                algorithm.update(current_values, &mut records)
            }))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                Err(AlgorithmError::UpdateFailed(format!(
                    "the algorithm panicked: {message}"
                )))
            })
        };
        if let Some(e) = failure {
            return Err(e.into());
        }
        if interrupted {
            return Ok(None);
        }
        let values = values?;
        check_finite(&values)?;
        self.algorithm
            .validate_parameters(&values)
            .map_err(DomainError::Algorithm)?;
        let change = self.algorithm.describe_change(&current.values, &values);
        Ok(Some((
            values,
            Provenance {
                service_version: self.settings.service_version.clone(),
                algorithm: self.algorithm.name().to_owned(),
                config_hash: self.settings.config_hash.clone(),
                rows_read,
                backup_file,
            },
            change,
        )))
    }

    /// Re-derives every stored decision from its stored state, parameter version and seed,
    /// and calls `on_mismatch` for each that does not come out as stored.
    ///
    /// # Errors
    /// On storage failure (a decision whose parameter version is missing is a mismatch).
    pub fn replay(
        &self,
        on_mismatch: &mut dyn FnMut(&ReplayMismatch),
    ) -> Result<ReplaySummary, DomainError> {
        let mut versions: HashMap<i64, Option<ModelParameters>> = HashMap::new();
        let mut summary = ReplaySummary::default();
        for item in self.store.decisions()? {
            let d = item?;
            summary.checked += 1;
            let params = match versions.entry(d.parameter_version) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.store.parameters(d.parameter_version)?),
            };
            let replayed = params.as_ref().map(|p| {
                if !d.availability.is_available() {
                    return Ok(UNAVAILABLE_CHOICE);
                }
                let mut rng = DecisionRng::from_seed(d.rng_seed);
                self.algorithm
                    .get_action(&d.user_id, &d.state, &p.values, d.decision_idx, &mut rng)
            });
            let reason = match &replayed {
                None => Some(format!(
                    "parameter version {} is not stored",
                    d.parameter_version
                )),
                Some(Err(e)) => Some(format!("the algorithm cannot replay it: {e}")),
                Some(Ok(choice)) => self.difference(&d, choice),
            };
            if let Some(reason) = reason {
                summary.mismatches += 1;
                let choice = replayed.and_then(Result::ok);
                on_mismatch(&ReplayMismatch {
                    user_id: d.user_id.clone(),
                    decision_type: d.decision_type.clone(),
                    decision_idx: d.decision_idx,
                    stored_action: d.action,
                    stored_prob: d.action_prob,
                    replayed_action: choice.map(|c| c.action),
                    replayed_prob: choice.map(|c| c.action_prob),
                    reason,
                });
            }
        }
        Ok(summary)
    }

    /// How a stored decision differs from its replay, if it does.
    fn difference(&self, d: &Decision, replayed: &ActionChoice) -> Option<String> {
        let derived = crate::rng::decision_seed(
            self.settings.seed,
            &d.user_id,
            &d.decision_type,
            d.decision_idx,
        );
        if derived != d.rng_seed {
            Some(
                "the stored seed is not the one derived from algorithm.seed, user, decision type and index"
                    .into(),
            )
        } else if replayed.action != d.action {
            Some("the action differs".into())
        } else if (replayed.action_prob.get() - d.action_prob.get()).abs() > PROBABILITY_TOLERANCE {
            Some("the probability differs".into())
        } else {
            None
        }
    }

    /// One row per stored decision with its uploaded data, for analysis, streamed.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    pub fn export(&self) -> Result<ExportStream, DomainError> {
        Ok(self.store.export()?)
    }

    /// Writes a backup into `dir`.
    ///
    /// # Errors
    /// On storage or file-system failure.
    pub fn backup_to(&self, dir: &std::path::Path) -> Result<BackupReport, DomainError> {
        Ok(self.store.backup(dir, self.clock.now())?)
    }

    /// Answers when storage does and can write: not while the most recent write request
    /// failed because the database's disk is full (see [`is_disk_full`]) and no write has
    /// succeeded since, for at most [`DISK_FULL_HOLD`] after that failure.
    ///
    /// # Errors
    /// [`DomainError::Unavailable`] when storage does not answer or its disk is full.
    pub fn ready(&self) -> Result<(), DomainError> {
        let since = *self
            .disk_full_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = since {
            if self.clock.now() - at < DISK_FULL_HOLD {
                return Err(DomainError::Unavailable(StoreError::Unavailable(
                    "the database cannot write: its disk is full (the most recent write failed \
                     for want of space)"
                        .into(),
                )));
            }
        }
        Ok(self.store.ping()?)
    }
}

/// An error and its sources, joined with ": ", for stored and logged failure reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_delivery_adds_timeouts_and_doubling_backoffs() {
        let policy = CallbackPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(1),
        };
        // 3 attempts of 1 s, waits of 100 ms and 200 ms between them.
        assert_eq!(policy.longest_delivery(), Duration::from_millis(3_300));
    }

    #[test]
    fn parameters_with_null_are_refused() {
        assert!(check_finite(&serde_json::json!({"p": 0.5, "v": [1, 2]})).is_ok());
        // serde_json writes NaN as null.
        let nan = serde_json::json!({"p": f64::NAN});
        assert!(check_finite(&nan).is_err());
        assert!(check_finite(&serde_json::json!({"deep": [{"x": null}]})).is_err());
    }
}
