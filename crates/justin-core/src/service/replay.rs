//! Replay: every stored decision is drawn again from its stored state, parameter version and
//! seed, as its policy drew it, and each that does not come out as stored is reported;
//! decisions of erased participants are reported as unverifiable instead.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::decisions::UNAVAILABLE_CHOICE;
use super::{DomainError, Service};
use crate::algorithm::{ActionChoice, Prepared};
use crate::domain::{
    Action, Decision, DecisionIdx, DecisionType, ModelParameters, Policy, Probability, UserId,
};
use crate::rng::DecisionRng;

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

/// A decision that can no longer be checked: its participant was erased, so its state is gone.
#[derive(Debug, Clone, PartialEq)]
pub struct Unverifiable {
    /// The pseudonym that replaced the participant's id.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// Why it cannot be checked.
    pub reason: String,
}

/// What a replay checked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Decisions replayed.
    pub checked: u64,
    /// Decisions that did not come out as stored.
    pub mismatches: u64,
    /// Decisions of erased participants, which cannot be checked (not counted in `checked`).
    pub unverifiable: u64,
    /// Decisions the study server made itself: stored as sent, nothing to draw again (not
    /// counted in `checked`).
    pub host_decided: u64,
}

impl Service {
    /// Re-derives every stored decision from its stored state, parameter version and seed,
    /// and calls `on_mismatch` for each that does not come out as stored. Decisions of erased
    /// participants cannot be checked (their state is gone): `on_unverifiable` is called for
    /// each instead. Decisions the study server made itself are counted, not drawn again.
    ///
    /// Each decision is drawn as its policy drew it: from the algorithm and its parameter
    /// version, from the configured warm-up or fallback probability, or not at all (an
    /// unavailable decision, or one out of the study).
    ///
    /// # Errors
    /// On storage failure (a decision whose parameter version is missing is a mismatch).
    pub fn replay(
        &self,
        on_mismatch: &mut dyn FnMut(&ReplayMismatch),
        on_unverifiable: &mut dyn FnMut(&Unverifiable),
    ) -> Result<ReplaySummary, DomainError> {
        let erased: HashSet<String> = self.store.erased_pseudonyms()?.into_iter().collect();
        let mut versions: HashMap<i64, Option<ModelParameters>> = HashMap::new();
        let mut summary = ReplaySummary::default();
        for item in self.store.decisions()? {
            let d = item?;
            if erased.contains(d.user_id.as_str()) {
                summary.unverifiable += 1;
                on_unverifiable(&Unverifiable {
                    user_id: d.user_id.clone(),
                    decision_type: d.decision_type.clone(),
                    decision_idx: d.decision_idx,
                    reason: "the participant was erased; the decision's state is gone".into(),
                });
                continue;
            }
            if matches!(d.policy, Policy::Host { .. }) {
                summary.host_decided += 1;
                continue;
            }
            summary.checked += 1;
            let params = match versions.entry(d.parameter_version) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(self.store.parameters(d.parameter_version)?),
            };
            let replayed = match params.as_ref() {
                None => Err(format!(
                    "parameter version {} is not stored",
                    d.parameter_version
                )),
                Some(p) => self.draw_again(&d, p),
            };
            let reason = match &replayed {
                Err(reason) => Some(reason.clone()),
                Ok(choice) => params
                    .as_ref()
                    .and_then(|p| self.state_difference(&d, p))
                    .or_else(|| self.difference(&d, choice)),
            };
            if let Some(reason) = reason {
                summary.mismatches += 1;
                let choice = replayed.ok();
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

    /// Draws `d` again as its policy drew it, from its stored seed; `Err` says why it cannot.
    fn draw_again(&self, d: &Decision, params: &ModelParameters) -> Result<ActionChoice, String> {
        if !d.availability.is_available() {
            return Ok(UNAVAILABLE_CHOICE);
        }
        let mut rng = DecisionRng::from_seed(d.rng_seed);
        match &d.policy {
            Policy::Warmup => match &self.settings.trial.warmup {
                Some(w) => Ok(ActionChoice::draw(w.probability, &mut rng)),
                None => Err("warm-up is not configured".into()),
            },
            Policy::Fallback { .. } => match self.settings.trial.fallback {
                Some(p) => Ok(ActionChoice::draw(p, &mut rng)),
                None => Err("the fallback is not configured".into()),
            },
            Policy::Algorithm | Policy::Host { .. } => {
                let algorithm = &self.algorithm;
                let drawn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    algorithm.get_action(
                        &d.user_id,
                        &d.state,
                        &params.values,
                        d.decision_idx,
                        &mut rng,
                    )
                }));
                match drawn {
                    Ok(Ok(choice)) => Ok(choice),
                    Ok(Err(e)) => Err(format!("the algorithm cannot replay it: {e}")),
                    Err(_) => Err("the algorithm panicked replaying it".into()),
                }
            }
        }
    }

    /// For a decision the algorithm drew: how the state it makes of the stored context under
    /// the decision's parameter version differs from the stored state, if it does. This is
    /// what repeats an imputation.
    fn state_difference(&self, d: &Decision, params: &ModelParameters) -> Option<String> {
        if !(matches!(d.policy, Policy::Algorithm) && d.availability.is_available()) {
            return None;
        }
        let algorithm = &self.algorithm;
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            algorithm.prepare_state(&d.context, &params.values)
        }));
        match made {
            Ok(Ok(Prepared::State(state))) if state == d.state => None,
            Ok(Ok(Prepared::State(_))) => {
                Some("the state made from the stored context differs from the stored state".into())
            }
            Ok(Ok(Prepared::NotAvailable(reason))) => Some(format!(
                "the algorithm now declares the stored context not available ({reason})"
            )),
            Ok(Err(e)) => Some(format!("the algorithm cannot make the state again: {e}")),
            Err(_) => Some("the algorithm panicked making the state again".into()),
        }
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
        } else if !replayed.action_prob.agrees_with(d.action_prob) {
            Some("the probability differs".into())
        } else {
            None
        }
    }
}
