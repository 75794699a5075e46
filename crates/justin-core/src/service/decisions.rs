//! The participant-facing use cases: registering a participant, drawing an action exactly
//! once per decision, and storing uploaded study data checked against the logged decision.

use chrono::{DateTime, Utc};

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{DomainError, Service, RL_TARGET};
use crate::algorithm::{ActionChoice, AlgorithmError, Prepared};
use crate::domain::{
    Action, Availability, Decision, DecisionIdx, DecisionType, JsonObject, ModelParameters,
    OutOfStudy, ParticipantFacts, Policy, Probability, State, StudyRecord, UserId,
    MAX_POLICY_NOTE_LEN,
};
use crate::ports::{DecisionGuard, Recorded, StoreError, UploadRecorded};
use crate::rng::{decision_seed, DecisionRng};

/// How often one request reloads the current parameters and decides again when the store
/// refuses its decision's version as behind the newest (or gone). Each reload reads the newest
/// version, so another refusal needs another version published in between: every refusal means
/// an update elsewhere got through. A request loses that race only while updates publish
/// faster than it can decide, and then each try loses it by chance, so the bound is set where
/// losing every try is beyond belief even for updates published back to back; it only keeps a
/// request from chasing an endless stream of them.
const STALE_REFRESHES: u32 = 32;

/// What a request gets when the store refused its decision's version after every reload: the
/// parameters kept changing under it, which a retry a moment later gets past (a 503, not a
/// failure of the service).
fn still_behind() -> DomainError {
    DomainError::Unavailable(StoreError::Unavailable(
        format!(
            "a newer parameter version was published before each of {} tries to store the \
             decision",
            STALE_REFRESHES + 1
        )
        .into(),
    ))
}

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
    /// The decision keeps the seed derived for its key (for audits) and the parameter version
    /// in force when it is stored, the newest (as every decision's: no decision is stored
    /// under a version older than the newest stored); its state is what the algorithm makes
    /// of the context, or empty when the context does not suit it (a host decision is stored
    /// as sent whatever its context).
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for an empty or overlong `decided_by`, or an unavailable
    /// decision with an action or probability other than 0; [`DomainError::UserNotFound`],
    /// [`DomainError::DecisionDiffers`] when another decision is stored for the key,
    /// [`DomainError::UploadMismatch`] when study data uploaded for the key differs from it,
    /// [`DomainError::Unavailable`] when a newer parameter version was published before every
    /// one of its 33 tries to store the decision.
    pub fn record_host_decision(
        &self,
        req: HostDecisionRequest,
    ) -> Result<ActionResponse, DomainError> {
        let answered = self.record_host_decision_untracked(req);
        self.track_write(answered)
    }

    fn record_host_decision_untracked(
        &self,
        req: HostDecisionRequest,
    ) -> Result<ActionResponse, DomainError> {
        if req.decided_by.is_empty() || req.decided_by.len() > MAX_POLICY_NOTE_LEN {
            return Err(DomainError::InvalidInput(format!(
                "decided_by must be 1 to {MAX_POLICY_NOTE_LEN} bytes long."
            )));
        }
        if !req.availability.is_available()
            && (req.action != Action::Zero || req.action_prob.get() != 0.0)
        {
            return Err(DomainError::InvalidInput(
                "An unavailable decision has action 0 and action_prob 0.".into(),
            ));
        }
        let decided_at = self.clock.now();
        let params = self.current_parameters()?;
        let state = match self.algorithm.prepare_state(&req.context, &params.values) {
            Ok(Prepared::State(state)) => state,
            _ => State::default(),
        };
        let rng_seed = decision_seed(
            self.settings.seed,
            &req.user_id,
            &req.decision_type,
            req.decision_idx,
        );
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
            action: req.action,
            action_prob: req.action_prob,
            parameter_version: params.version,
            rng_seed,
            policy: Policy::Host {
                decided_by: req.decided_by,
            },
        };
        // The cached version is behind (another process published a newer one) or gone
        // (another process reset the database): reload it and store the decision under the
        // newest version, a bounded number of times.
        let mut refreshes = 0;
        let recorded = loop {
            match self.store.record_decision(&decision, DecisionGuard::None) {
                Err(StoreError::UnknownParameterVersion) if refreshes < STALE_REFRESHES => {
                    refreshes += 1;
                    self.forget_current();
                    decision.parameter_version = self.current_parameters()?.version;
                }
                Err(StoreError::UnknownParameterVersion) => return Err(still_behind()),
                other => break other,
            }
        };
        match recorded {
            Ok(Recorded::Inserted) => Ok(ActionResponse {
                decision,
                created: true,
            }),
            Ok(Recorded::Existing(stored)) if same_decision(&stored, &decision) => {
                Ok(ActionResponse {
                    decision: stored,
                    created: false,
                })
            }
            Ok(Recorded::Existing(stored)) => Err(DomainError::DecisionDiffers(Box::new(stored))),
            Ok(Recorded::Ineligible(_)) => Err(unguarded_refusal()),
            // The upload came first: it is what the host decision must match.
            Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) => Err(DomainError::UploadMismatch {
                uploaded_action: logged_action.as_i16(),
                uploaded_prob: logged_prob.get(),
                logged_action: decision.action.as_i16(),
                logged_prob: decision.action_prob.get(),
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// Draws and stores an action, or returns the one stored for this decision before.
    ///
    /// The probability comes from the warm-up while it holds, from the algorithm after it, and
    /// from the fallback (when configured) when the algorithm fails. A participant outside
    /// their time in the study, or withdrawn, gets a decision without a draw
    /// ([`Availability::OutOfStudy`]). An unavailable decision is stored without a draw:
    /// action 0, probability 0. Its context need not be one the algorithm can use (a
    /// participant who is driving may send little); when it is not, the stored state is empty.
    ///
    /// For an active participant outside the warm-up this costs one storage call: the insert
    /// of the decision, which checks the participant and that the parameter version is the
    /// newest in the same statement. When another process has published a newer version, the
    /// store refuses the decision; the service then reloads the current parameters and decides
    /// again from them, so no decision is stored under a version older than one stored before
    /// it.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context the algorithm cannot use (of an available
    /// decision), [`DomainError::UserNotFound`] for an unknown participant,
    /// [`DomainError::DecisionExists`] when study data was uploaded for the decision, and
    /// [`DomainError::Unavailable`] when a newer version was published before every one of
    /// its 33 tries to store the decision.
    pub fn request_action(&self, req: ActionRequest) -> Result<ActionResponse, DomainError> {
        let answered = self.request_action_untracked(req);
        self.track_write(answered)
    }

    fn request_action_untracked(&self, req: ActionRequest) -> Result<ActionResponse, DomainError> {
        let decided_at = self.clock.now();
        let mut params = self.current_parameters()?;
        let rng_seed = decision_seed(
            self.settings.seed,
            &req.user_id,
            &req.decision_type,
            req.decision_idx,
        );
        let mut decision = Decision {
            user_id: req.user_id,
            decision_type: req.decision_type,
            decision_idx: req.decision_idx,
            requested_at: req.requested_at,
            sent_timestamp: req.sent_timestamp,
            decided_at,
            availability: req.availability,
            context: req.context,
            state: State::default(),
            action: Action::Zero,
            action_prob: Probability::ZERO,
            parameter_version: params.version,
            rng_seed,
            policy: Policy::Algorithm,
        };
        let requested = decision.availability.clone();
        let mut state_failure = self.prepare(&mut decision, &params)?;
        let mut refreshes = 0;
        let recorded = loop {
            let guard = self.draft(&mut decision, state_failure.as_deref(), &params)?;
            match self.record_drafted(&mut decision, guard) {
                // The cached version is behind (another process published a newer one) or
                // gone (another process reset the database): reload the current parameters
                // and decide again from them, a bounded number of times.
                Err(StoreError::UnknownParameterVersion) if refreshes < STALE_REFRESHES => {
                    refreshes += 1;
                    self.forget_current();
                    params = self.current_parameters()?;
                    decision.parameter_version = params.version;
                    decision.availability = requested.clone();
                    state_failure = self.prepare(&mut decision, &params)?;
                }
                Err(StoreError::UnknownParameterVersion) => return Err(still_behind()),
                other => break other?,
            }
        };
        match recorded {
            Recorded::Inserted => Ok(ActionResponse {
                decision,
                created: true,
            }),
            Recorded::Existing(stored) => Ok(ActionResponse {
                decision: stored,
                created: false,
            }),
            Recorded::Ineligible(_) => Err(unguarded_refusal()),
        }
    }

    /// Makes `decision`'s state from its context under `params` (the version it will be drawn
    /// from), following the algorithm's rule for missing values: a decision the algorithm
    /// declares not available becomes unavailable with the algorithm's reason (one the study
    /// server already marked unavailable keeps its own). Returns why no state could be made
    /// when the configured fallback covers it.
    ///
    /// # Errors
    /// The algorithm's [`AlgorithmError::InvalidInput`] for an available decision's context it
    /// refuses, and any other error of the algorithm's when no fallback is configured.
    fn prepare(
        &self,
        decision: &mut Decision,
        params: &ModelParameters,
    ) -> Result<Option<String>, DomainError> {
        let available = decision.availability.is_available();
        decision.state = State::default();
        match self
            .algorithm
            .prepare_state(&decision.context, &params.values)
        {
            Ok(Prepared::State(state)) => decision.state = state,
            Ok(Prepared::NotAvailable(reason)) => {
                if available {
                    decision.availability = Availability::Unavailable {
                        reason: Some(reason),
                    };
                }
            }
            Err(AlgorithmError::InvalidInput(_)) if !available => {}
            Err(e @ AlgorithmError::InvalidInput(_)) => return Err(e.into()),
            Err(e) if self.settings.trial.fallback.is_some() => {
                return Ok(Some(note(format!(
                    "the algorithm could not make a state: {e}"
                ))))
            }
            Err(e) => return Err(e.into()),
        }
        Ok(None)
    }

    /// Stores `decision`, drafted with `guard`: when the store finds the guard does not hold,
    /// decides it again from the facts it gave and stores it without a guard.
    fn record_drafted(
        &self,
        decision: &mut Decision,
        guard: DecisionGuard,
    ) -> Result<Recorded, StoreError> {
        let recorded = match self.store.record_decision(decision, guard)? {
            Recorded::Inserted => {
                if let DecisionGuard::InStudy {
                    warmup_until_participants: Some(_),
                    ..
                } = guard
                {
                    // Stored only because the cohort had started by then.
                    self.note_cohort_reached(decision.requested_at);
                }
                Recorded::Inserted
            }
            Recorded::Ineligible(facts) => {
                self.decide_again(decision, guard, &facts);
                self.store.record_decision(decision, DecisionGuard::None)?
            }
            existing @ Recorded::Existing(_) => existing,
        };
        Ok(recorded)
    }

    /// Chooses `decision`'s action, probability and policy from what the service knows
    /// without asking the store (the warm-up's date and first update, the cohort once it is
    /// known reached), and returns the guard its insert must check for the rest.
    fn draft(
        &self,
        decision: &mut Decision,
        state_failure: Option<&str>,
        params: &Arc<ModelParameters>,
    ) -> Result<DecisionGuard, DomainError> {
        let warmup = self.settings.trial.warmup.as_ref();
        let available = decision.availability.is_available();
        if let Some(w) = warmup.filter(|w| {
            w.until.is_some_and(|until| decision.requested_at < until)
                || (w.until_first_update && params.version == 1)
        }) {
            let choice = if available {
                ActionChoice::draw(
                    w.probability,
                    &mut DecisionRng::from_seed(decision.rng_seed),
                )
            } else {
                UNAVAILABLE_CHOICE
            };
            set_choice(decision, choice, Policy::Warmup);
            return Ok(DecisionGuard::InStudy {
                warmup_first_decisions: None,
                warmup_until_participants: None,
            });
        }
        let guard = DecisionGuard::InStudy {
            warmup_first_decisions: warmup.and_then(|w| w.first_decisions),
            warmup_until_participants: warmup
                .and_then(|w| w.until_participants)
                .filter(|_| !self.cohort_known_reached(decision.requested_at)),
        };
        let (choice, policy) = match (available, state_failure) {
            (false, None) => (UNAVAILABLE_CHOICE, Policy::Algorithm),
            (false, Some(reason)) => (
                UNAVAILABLE_CHOICE,
                Policy::Fallback {
                    reason: reason.to_owned(),
                },
            ),
            (true, Some(reason)) => self.fall_back(decision.rng_seed, reason.to_owned())?,
            (true, None) => match self.algorithm_draw(decision, params) {
                Ok(choice) => (choice, Policy::Algorithm),
                Err(failure) if self.settings.trial.fallback.is_some() => {
                    self.fall_back(decision.rng_seed, failure.reason())?
                }
                Err(AlgorithmFailure::Error(e)) => return Err(e.into()),
                Err(AlgorithmFailure::Panic(panic)) => std::panic::resume_unwind(panic),
            },
        };
        set_choice(decision, choice, policy);
        Ok(guard)
    }

    /// The algorithm's draw for `decision` from `params`, with the decision's own generator,
    /// through the policy it prepared from `params` when it prepares one; a panic inside the
    /// algorithm is caught and returned.
    fn algorithm_draw(
        &self,
        decision: &Decision,
        params: &Arc<ModelParameters>,
    ) -> Result<ActionChoice, AlgorithmFailure> {
        let mut rng = DecisionRng::from_seed(decision.rng_seed);
        let algorithm = &self.algorithm;
        let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match self.prepared_policy(params) {
                Some(policy) => algorithm.get_action_prepared(
                    &decision.user_id,
                    &decision.state,
                    policy.as_ref(),
                    &params.values,
                    decision.decision_idx,
                    &mut rng,
                ),
                None => algorithm.get_action(
                    &decision.user_id,
                    &decision.state,
                    &params.values,
                    decision.decision_idx,
                    &mut rng,
                ),
            }
        }));
        match drawn {
            Ok(Ok(choice)) => Ok(choice),
            Ok(Err(e)) => Err(AlgorithmFailure::Error(e)),
            Err(panic) => Err(AlgorithmFailure::Panic(panic)),
        }
    }

    /// A draw from the configured fallback probability with a fresh generator from `seed`,
    /// logged with its reason (which holds no request value).
    fn fall_back(&self, seed: u64, reason: String) -> Result<(ActionChoice, Policy), DomainError> {
        let Some(p) = self.settings.trial.fallback else {
            return Err(DomainError::Setup(
                "no fallback probability is configured".into(),
            ));
        };
        log::warn!(target: RL_TARGET, "decision drawn from the fallback probability: {reason}");
        let choice = ActionChoice::draw(p, &mut DecisionRng::from_seed(seed));
        Ok((choice, Policy::Fallback { reason }))
    }

    /// Decides `decision` again from the facts the store gave when its guard did not hold:
    /// without a draw when the participant is out of the study, with a warm-up draw when the
    /// warm-up's counts hold; otherwise it stays as drawn.
    fn decide_again(
        &self,
        decision: &mut Decision,
        guard: DecisionGuard,
        facts: &ParticipantFacts,
    ) {
        let DecisionGuard::InStudy {
            warmup_first_decisions,
            warmup_until_participants,
        } = guard
        else {
            return;
        };
        if warmup_until_participants.is_some_and(|k| facts.started_participants >= u64::from(k)) {
            self.note_cohort_reached(decision.requested_at);
        }
        let out = if facts.withdrawn {
            Some(OutOfStudy::Withdrawn)
        } else if !facts.enrollment.contains(decision.requested_at) {
            Some(OutOfStudy::NotInStudy)
        } else {
            None
        };
        if let Some(why) = out {
            decision.availability = Availability::OutOfStudy(why);
            set_choice(decision, UNAVAILABLE_CHOICE, Policy::Algorithm);
            return;
        }
        let in_warmup = warmup_first_decisions
            .is_some_and(|n| facts.earlier_in_study < u64::from(n))
            || warmup_until_participants.is_some_and(|k| facts.started_participants < u64::from(k));
        if let (true, Some(w)) = (in_warmup, self.settings.trial.warmup.as_ref()) {
            let choice = if decision.availability.is_available() {
                ActionChoice::draw(
                    w.probability,
                    &mut DecisionRng::from_seed(decision.rng_seed),
                )
            } else {
                UNAVAILABLE_CHOICE
            };
            set_choice(decision, choice, Policy::Warmup);
        }
    }

    /// Whether the store has shown the warm-up's cohort reached at or before `at`.
    fn cohort_known_reached(&self, at: DateTime<Utc>) -> bool {
        at.timestamp_micros() >= self.cohort_reached_at.load(Ordering::Relaxed)
    }

    fn note_cohort_reached(&self, at: DateTime<Utc>) {
        self.cohort_reached_at
            .fetch_min(at.timestamp_micros(), Ordering::Relaxed);
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
        let record = self.study_record(req)?;
        let received_at = record.received_at;
        match self.store.record_study_data(&record) {
            Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) => {
                self.note_refused_upload(&crate::monitor::RefusedUpload {
                    decision_type: record.decision_type.as_str().to_owned(),
                    refused_at: received_at,
                });
                Err(DomainError::UploadMismatch {
                    uploaded_action: record.action.as_i16(),
                    uploaded_prob: record.action_prob.get(),
                    logged_action: logged_action.as_i16(),
                    logged_prob: logged_prob.get(),
                })
            }
            other => Ok(other?),
        }
    }

    /// The record an upload (or a correction) stores, received now: its context checked as a
    /// decision's would be, its reward derived from its outcome.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context or outcome the algorithm cannot use.
    pub(super) fn study_record(&self, req: UploadRequest) -> Result<StudyRecord, DomainError> {
        let received_at = self.clock.now();
        // The context must be one a decision could have been made from: any missing value
        // follows the algorithm's rule (refused, imputed, or a decision not available). Only
        // the client's fault refuses the upload; the update reads the uploaded state.
        let params = self.current_parameters()?;
        if let Err(e @ AlgorithmError::InvalidInput(_)) =
            self.algorithm.prepare_state(&req.context, &params.values)
        {
            return Err(e.into());
        }
        let reward =
            self.algorithm
                .make_reward(&req.user_id, &req.state, req.action, &req.outcome)?;
        if !reward.is_finite() {
            return Err(DomainError::InvalidInput(
                "The outcome gives a reward that is not a finite number.".into(),
            ));
        }
        Ok(StudyRecord {
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
        })
    }
}

/// How the algorithm failed to draw.
enum AlgorithmFailure {
    Error(AlgorithmError),
    Panic(Box<dyn std::any::Any + Send>),
}

impl AlgorithmFailure {
    /// The failure as a fallback decision records it: the algorithm's error (which speaks of
    /// parameters, not of the request), or only that it panicked (a panic's message may quote
    /// anything, request values included).
    fn reason(&self) -> String {
        match self {
            Self::Error(AlgorithmError::InvalidInput(_)) => {
                "the algorithm could not draw from the request's state".to_owned()
            }
            Self::Error(e) => note(format!("the algorithm failed: {e}")),
            Self::Panic(_) => "the algorithm panicked".to_owned(),
        }
    }
}

/// `text` cut to at most [`MAX_POLICY_NOTE_LEN`] bytes, at a character boundary.
fn note(mut text: String) -> String {
    if text.len() > MAX_POLICY_NOTE_LEN {
        let mut end = MAX_POLICY_NOTE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

fn set_choice(decision: &mut Decision, choice: ActionChoice, policy: Policy) {
    decision.action = choice.action;
    decision.action_prob = choice.action_prob;
    decision.policy = policy;
}

/// Whether a stored decision is the one a host decision sends again: the same action,
/// probability, availability and context.
fn same_decision(stored: &Decision, sent: &Decision) -> bool {
    stored.action == sent.action
        && stored.action_prob.agrees_with(sent.action_prob)
        && stored.availability == sent.availability
        && stored.context == sent.context
}

/// A store that answers an unguarded insert with `Ineligible` breaks the port's contract.
fn unguarded_refusal() -> DomainError {
    DomainError::Store(StoreError::Other(
        "the store refused a decision recorded without a guard as ineligible".into(),
    ))
}
