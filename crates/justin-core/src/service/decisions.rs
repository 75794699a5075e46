//! The participant-facing use cases: registering a participant, drawing an action exactly
//! once per decision, and storing uploaded study data checked against the logged decision.

use chrono::{DateTime, Utc};

use super::{DomainError, Service};
use crate::algorithm::{ActionChoice, AlgorithmError};
use crate::domain::{
    Action, Availability, Decision, DecisionIdx, DecisionType, JsonObject, ModelParameters,
    Probability, State, StudyRecord, UserId,
};
use crate::ports::{DecisionGuard, Recorded, StoreError, UploadRecorded};
use crate::rng::DecisionRng;

/// What an unavailable decision gets, without a draw.
pub(super) const UNAVAILABLE_CHOICE: ActionChoice = ActionChoice {
    action: Action::Zero,
    action_prob: Probability::ZERO,
};

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

/// A decision the study server made itself while the service was unreachable, sent
/// afterwards.
#[derive(Debug, Clone)]
pub struct HostDecisionRequest {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// The study server's timestamp of the decision.
    pub requested_at: DateTime<Utc>,
    /// The timestamp exactly as the study server sent it.
    pub sent_timestamp: String,
    /// Whether the participant could be randomized.
    pub availability: Availability,
    /// The context at decision time.
    pub context: JsonObject,
    /// The action the study server gave.
    pub action: Action,
    /// The probability of action 1 it drew with.
    pub action_prob: Probability,
    /// Who decided (the study server's name for its own policy).
    pub decided_by: String,
}

impl Service {
    /// Stores a decision the study server made itself, as sent, marked as decided by the host.
    /// A repeat of the same decision returns the stored one (`created` false).
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`], [`DomainError::DecisionDiffers`] when another decision
    /// is stored for the key, [`DomainError::UploadMismatch`] when study data uploaded for the
    /// key differs from it.
    pub fn record_host_decision(
        &self,
        req: HostDecisionRequest,
    ) -> Result<ActionResponse, DomainError> {
        let _ = req;
        todo!("issue 15 core")
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
            policy: crate::domain::Policy::Algorithm,
        };
        let recorded = match self.store.record_decision(&decision, DecisionGuard::None) {
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
                self.store.record_decision(&decision, DecisionGuard::None)?
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
            Recorded::Ineligible(_) => todo!("issue 15 core"),
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
}
