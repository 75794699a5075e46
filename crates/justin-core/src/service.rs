//! The use cases: add a user, request an action, upload data, request an update and run it.
//!
//! [`Service`] is written against the ports only. It keeps the current model parameters in
//! memory, so the hot path (`request_action`) costs one storage call: the insert of the
//! decision. The cache is replaced whenever this process publishes a new version.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::algorithm::{ActionChoice, Algorithm, AlgorithmError};
use crate::domain::{
    Action, Decision, DecisionIdx, JsonObject, ModelParameters, Probability, State, StudyRecord,
    UpdateRequest, UpdateStatus, UserId,
};
use crate::ports::{
    BackupReport, CallbackNotifier, CallbackPayload, Clock, Recorded, Store, StoreError,
    UpdateOutcome,
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
}

/// A request for an action, parsed.
#[derive(Debug, Clone)]
pub struct ActionRequest {
    /// The participant.
    pub user_id: UserId,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The study server's timestamp.
    pub requested_at: DateTime<Utc>,
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
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The study server's timestamp.
    pub requested_at: DateTime<Utc>,
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
        }
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
        let values = self
            .algorithm
            .initial_parameters(priors)
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
        self.store.add_user(user, self.clock.now())?;
        Ok(())
    }

    /// Draws and stores an action, or returns the one stored for this decision before.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context the algorithm cannot use,
    /// [`DomainError::UserNotFound`] for an unknown participant and
    /// [`DomainError::DecisionExists`] when study data was uploaded for the decision.
    pub fn request_action(&self, req: ActionRequest) -> Result<ActionResponse, DomainError> {
        let decided_at = self.clock.now();
        let state = self.algorithm.make_state(&req.context)?;
        let params = self.current_parameters()?;
        let (choice, rng_seed) = self.draw(&req.user_id, &state, req.decision_idx, &params)?;
        let mut decision = Decision {
            user_id: req.user_id,
            decision_idx: req.decision_idx,
            requested_at: req.requested_at,
            decided_at,
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
                let (choice, _) = self.draw(
                    &decision.user_id,
                    &decision.state,
                    decision.decision_idx,
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

    /// Draws an action from `params` with the decision's own generator; returns the choice
    /// and the generator's seed.
    fn draw(
        &self,
        user: &UserId,
        state: &State,
        idx: DecisionIdx,
        params: &ModelParameters,
    ) -> Result<(ActionChoice, u64), DomainError> {
        let mut rng = DecisionRng::for_decision(self.settings.seed, user, idx);
        let choice = self
            .algorithm
            .get_action(user, state, &params.values, idx, &mut rng)?;
        Ok((choice, rng.seed()))
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
    pub fn upload_data(&self, req: UploadRequest) -> Result<(), DomainError> {
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
            decision_idx: req.decision_idx,
            requested_at: req.requested_at,
            received_at,
            context: req.context,
            action: req.action,
            action_prob: req.action_prob,
            state: req.state,
            outcome: req.outcome,
            reward,
        };
        self.store.record_study_data(&record)?;
        Ok(())
    }

    /// Records a model update request; the caller runs it with [`Service::run_update`].
    ///
    /// # Errors
    /// On storage failure.
    pub fn request_update(
        &self,
        requested_at: DateTime<Utc>,
        callback_url: String,
    ) -> Result<UpdateRequest, DomainError> {
        let request = UpdateRequest {
            id: Uuid::new_v4(),
            requested_at,
            received_at: self.clock.now(),
            callback_url,
            status: UpdateStatus::Processing,
            finished_at: None,
            error: None,
            parameter_version: None,
        };
        self.store.create_update_request(&request)?;
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

    /// Runs an update request to its end: backup, new parameters, stored outcome, callback.
    /// Returns the outcome that was stored.
    ///
    /// # Errors
    /// Only when the outcome itself cannot be stored; a failed update is an
    /// [`UpdateOutcome::Failed`], stored and sent to the callback.
    pub fn run_update(&self, request: &UpdateRequest) -> Result<UpdateOutcome, DomainError> {
        let outcome = match self.compute_update() {
            Ok(published) => {
                log::info!(
                    target: RL_TARGET,
                    "update {} stored {} parameters version {}",
                    request.id, published.algorithm, published.version
                );
                let version = published.version;
                self.set_current(published);
                UpdateOutcome::Completed {
                    parameter_version: version,
                }
            }
            Err(e) => {
                let error = error_chain(&e);
                log::error!(target: RL_TARGET, "update {} failed: {error}", request.id);
                UpdateOutcome::Failed { error }
            }
        };
        let finished_at = self.clock.now();
        // The study server is told the outcome even when storing it fails: the parameters it
        // describes are already in force (or unchanged) either way.
        let stored = self
            .store
            .finish_update_request(request.id, &outcome, finished_at);
        let payload = match &outcome {
            UpdateOutcome::Completed { .. } => CallbackPayload::Completed {
                update_id: request.id,
                timestamp: finished_at,
            },
            UpdateOutcome::Failed { .. } => CallbackPayload::Failed {
                update_id: request.id,
                message: "Model update failed.".into(),
            },
        };
        if let Err(e) = self.notifier.notify(&request.callback_url, &payload) {
            log::warn!("callback for update {} was not delivered: {e}", request.id);
        }
        stored?;
        Ok(outcome)
    }

    fn compute_update(&self) -> Result<ModelParameters, DomainError> {
        if let Some(dir) = &self.settings.backup_dir {
            let report = self.backup_to(dir)?;
            log::info!("backup before update written to {}", report.path.display());
        }
        let current = self
            .store
            .current_parameters()?
            .ok_or_else(|| DomainError::Setup("no model parameters are stored".into()))?;
        let mut failure: Option<StoreError> = None;
        let mut records = self.store.study_data()?.map_while(|item| match item {
            Ok(record) => Some(record),
            Err(e) => {
                failure = Some(e);
                None
            }
        });
        let values = self.algorithm.update(&current.values, &mut records);
        drop(records);
        if let Some(e) = failure {
            return Err(e.into());
        }
        let values = values?;
        Ok(self
            .store
            .publish_parameters(self.algorithm.name(), &values, self.clock.now())?)
    }

    /// Writes a backup into `dir`.
    ///
    /// # Errors
    /// On storage or file-system failure.
    pub fn backup_to(&self, dir: &std::path::Path) -> Result<BackupReport, DomainError> {
        Ok(self.store.backup(dir, self.clock.now())?)
    }

    /// Answers when storage does.
    ///
    /// # Errors
    /// [`DomainError::Unavailable`] when it does not.
    pub fn ready(&self) -> Result<(), DomainError> {
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
