//! `beta_bernoulli`: Thompson sampling for a binary treatment and a binary outcome, a JustIn
//! decision algorithm in a crate of its own.
//!
//! Each action a ∈ {0, 1} has an unknown success probability θa: the chance that the outcome
//! field named by the `reward` option is 1 after that action. Both start from the prior
//! Beta(alpha, beta); after s successes and f failures under action a, θa's posterior is
//! Beta(alpha + s, beta + f). Thompson sampling gives action 1 with the probability that it is
//! the better action, P(θ1 > θ0), here clipped to [min_probability, max_probability] so that
//! every participant keeps a chance of either action.
//!
//! That probability depends on the parameters alone (not on the context), so an update
//! computes it once and stores it in the parameters; a decision reads it and takes one uniform
//! draw, so a replay from the stored seed repeats the decision exactly.

use std::sync::Arc;

use justin_core::{
    names, Action, ActionChoice, Algorithm, AlgorithmError, DecisionIdx, DecisionRng, JsonObject,
    Probability, Registration, State, StudyRecord, UserId,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[cfg(test)]
mod tests;

/// The name `algorithm.name` selects.
pub const NAME: &str = "beta_bernoulli";
/// The outcome field read when the `reward` option is not given.
pub const DEFAULT_REWARD: &str = "reward";
/// The lower clip bound when `min_probability` is not given.
pub const DEFAULT_MIN_PROBABILITY: f64 = 0.1;
/// The upper clip bound when `max_probability` is not given.
pub const DEFAULT_MAX_PROBABILITY: f64 = 0.9;
/// The largest prior `alpha` or `beta`: computing P(θ1 > θ0) takes a step per unit of
/// `alpha + beta` and per record, and a prior worth a million records is beyond any study.
pub const MAX_PRIOR: u64 = 1_000_000;
/// The options `[algorithm.options]` may hold.
const OPTION_KEYS: [&str; 3] = ["reward", "min_probability", "max_probability"];

/// Registers `beta_bernoulli` under [`NAME`]; the log records of this crate go to `rl.log`.
pub fn registration() -> Registration {
    Registration::new(NAME, module_path!(), |options| {
        Ok(Arc::new(BetaBernoulli::from_options(options)?))
    })
}

/// The algorithm, as configured by `[algorithm.options]`.
#[derive(Debug, Clone, PartialEq)]
pub struct BetaBernoulli {
    reward: String,
    min_probability: f64,
    max_probability: f64,
}

impl BetaBernoulli {
    /// Builds the algorithm from `[algorithm.options]`: `reward` (the outcome field, default
    /// `"reward"`), `min_probability` and `max_probability` (the clip bounds, default 0.1 and
    /// 0.9, with 0 ≤ min ≤ max ≤ 1).
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidOptions`] naming an unknown option or one out of range.
    pub fn from_options(options: &JsonObject) -> Result<Self, AlgorithmError> {
        let invalid = AlgorithmError::InvalidOptions;
        if let Some(key) = options.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
            return Err(invalid(format!(
                "unknown option {key:?}; {NAME} takes reward, min_probability and max_probability"
            )));
        }
        let reward = match options.get("reward") {
            None => DEFAULT_REWARD.to_owned(),
            Some(Value::String(field)) if !field.is_empty() => field.clone(),
            Some(_) => {
                return Err(invalid(
                    "reward must be the name of an outcome field".into(),
                ))
            }
        };
        let bound = |key: &str, default: f64| match options.get(key) {
            None => Ok(default),
            Some(value) => value
                .as_f64()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| invalid(format!("{key} must be a number from 0 to 1"))),
        };
        let min_probability = bound("min_probability", DEFAULT_MIN_PROBABILITY)?;
        let max_probability = bound("max_probability", DEFAULT_MAX_PROBABILITY)?;
        if min_probability > max_probability {
            return Err(invalid(format!(
                "min_probability {min_probability} is above max_probability {max_probability}"
            )));
        }
        // Settings only, never participants' data; with the registration's log target, this
        // goes to rl.log each time the service builds the algorithm.
        log::info!(
            "{NAME}: reward from the outcome field {reward:?}, \
             P(action = 1) clipped to [{min_probability}, {max_probability}]"
        );
        Ok(Self {
            reward,
            min_probability,
            max_probability,
        })
    }

    /// The message for an outcome without the reward field.
    fn missing_reward(&self) -> String {
        format!("Invalid outcome. {} is required.", self.reward)
    }
}

/// A Beta distribution with whole-number parameters of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Beta {
    /// Successes, plus the prior's.
    pub alpha: u64,
    /// Failures, plus the prior's.
    pub beta: u64,
}

/// P(θ1 > θ0) for independent θ1 ~ `treated` and θ0 ~ `untreated`.
///
/// With θ1 ~ Beta(a1, b1) and θ0 ~ Beta(a0, b0), and a1 a whole number, it is the sum
///
/// ```text
/// Σ_{i=0}^{a1-1} B(a0 + i, b0 + b1) / ((b1 + i) · B(1 + i, b1) · B(a0, b0))
/// ```
///
/// (Evan Miller, "Formulas for Bayesian A/B testing"), whose first term is
/// t0 = Π_{k<b1} (b0 + k) / (a0 + b0 + k) when b1 is a whole number too, and each term the
/// one before times (a0 + i)(b1 + i) / ((a0 + b0 + b1 + i)(1 + i)). The terms are carried as
/// logarithms, so a long study's tiny first terms do not vanish. The sum takes b1 + a1 steps,
/// and its rounding grows with them: about 2e-12 after ten thousand.
pub fn probability_better(treated: Beta, untreated: Beta) -> f64 {
    let b1 = treated.beta as f64;
    let (a0, b0) = (untreated.alpha as f64, untreated.beta as f64);
    let mut log_term = 0.0;
    for k in 0..treated.beta {
        let k = k as f64;
        log_term += ((b0 + k) / (a0 + b0 + k)).ln();
    }
    let mut sum = 0.0;
    for i in 0..treated.alpha {
        let i = i as f64;
        sum += log_term.exp();
        log_term += ((a0 + i) * (b1 + i) / ((a0 + b0 + b1 + i) * (1.0 + i))).ln();
    }
    sum.min(1.0)
}

/// The parameters: the settings a version was made with, the prior, the successes and
/// failures after each action (index 0 for action 0), and P(action = 1) computed from them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Parameters {
    min_probability: f64,
    max_probability: f64,
    prior: Beta,
    successes: [u64; 2],
    failures: [u64; 2],
    probability: f64,
}

impl Parameters {
    /// The parameters after `successes` and `failures`, with the probability they give
    /// clipped to `[min_probability, max_probability]` (which must be in order).
    fn new(
        (min_probability, max_probability): (f64, f64),
        prior: Beta,
        successes: [u64; 2],
        failures: [u64; 2],
    ) -> Self {
        let posterior = |arm: usize| Beta {
            alpha: prior.alpha.saturating_add(successes[arm]),
            beta: prior.beta.saturating_add(failures[arm]),
        };
        let better = probability_better(posterior(1), posterior(0));
        Self {
            min_probability,
            max_probability,
            prior,
            successes,
            failures,
            probability: better.clamp(min_probability, max_probability),
        }
    }

    /// Reads stored parameters, checking what the computations rely on: bounds in order
    /// within [0, 1], and a prior from 1 to [`MAX_PRIOR`].
    fn read(values: &Value) -> Result<Self, AlgorithmError> {
        let invalid = AlgorithmError::InvalidParameters;
        let p = Self::deserialize(values).map_err(|e| invalid(e.to_string()))?;
        if !(0.0 <= p.min_probability && p.min_probability <= p.max_probability)
            || p.max_probability > 1.0
        {
            return Err(invalid(format!(
                "min_probability {} and max_probability {} must satisfy 0 <= min <= max <= 1",
                p.min_probability, p.max_probability
            )));
        }
        if ![p.prior.alpha, p.prior.beta]
            .iter()
            .all(|n| (1..=MAX_PRIOR).contains(n))
        {
            return Err(invalid(format!(
                "the prior's alpha and beta must be from 1 to {MAX_PRIOR}"
            )));
        }
        Ok(p)
    }

    fn to_json(&self) -> Result<Value, AlgorithmError> {
        serde_json::to_value(self).map_err(|e| AlgorithmError::InvalidParameters(e.to_string()))
    }
}

/// Reads a prior: a whole number from 1 to [`MAX_PRIOR`].
fn prior_count(priors: &JsonObject, key: &str) -> Result<u64, AlgorithmError> {
    priors
        .get(key)
        .and_then(Value::as_u64)
        .filter(|n| (1..=MAX_PRIOR).contains(n))
        .ok_or_else(|| {
            AlgorithmError::InvalidPriors(format!(
                "{key} is required and must be a whole number from 1 to {MAX_PRIOR}"
            ))
        })
}

impl Algorithm for BetaBernoulli {
    fn name(&self) -> &str {
        NAME
    }

    fn initial_parameters(&self, priors: &JsonObject) -> Result<Value, AlgorithmError> {
        if let Some(key) = priors
            .keys()
            .find(|k| !["alpha", "beta"].contains(&k.as_str()))
        {
            return Err(AlgorithmError::InvalidPriors(format!(
                "unknown prior {key:?}; {NAME} takes alpha and beta"
            )));
        }
        let prior = Beta {
            alpha: prior_count(priors, "alpha")?,
            beta: prior_count(priors, "beta")?,
        };
        let bounds = (self.min_probability, self.max_probability);
        Parameters::new(bounds, prior, [0, 0], [0, 0]).to_json()
    }

    /// Every participant and moment is treated alike: the state is empty, and the context is
    /// only stored for the study's analysis.
    fn make_state(&self, _context: &JsonObject) -> Result<State, AlgorithmError> {
        State::new(Vec::new()).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    fn get_action(
        &self,
        _user: &UserId,
        _state: &State,
        parameters: &Value,
        _decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        let parameters = Parameters::read(parameters)?;
        let p = Probability::new(parameters.probability)
            .map_err(|e| AlgorithmError::InvalidParameters(format!("probability: {e}")))?;
        Ok(ActionChoice::draw(p, rng))
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        match outcome.get(&self.reward) {
            None | Some(Value::Null) => Err(AlgorithmError::InvalidInput(self.missing_reward())),
            Some(value) => match value.as_f64() {
                Some(r) if r == 0.0 || r == 1.0 => Ok(r),
                _ => Err(AlgorithmError::InvalidInput(format!(
                    "{} must be 0 or 1.",
                    self.reward
                ))),
            },
        }
    }

    fn check_outcome_names(&self, outcome: &Value) -> Result<(), AlgorithmError> {
        if names(outcome, &self.reward) {
            Ok(())
        } else {
            Err(AlgorithmError::InvalidInput(self.missing_reward()))
        }
    }

    fn update(
        &self,
        current: &Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<Value, AlgorithmError> {
        let current = Parameters::read(current)?;
        let (mut successes, mut failures) = ([0_u64; 2], [0_u64; 2]);
        for record in data {
            let arm = usize::from(record.action == Action::One);
            if record.reward == 1.0 {
                successes[arm] += 1;
            } else if record.reward == 0.0 {
                failures[arm] += 1;
            } else {
                return Err(AlgorithmError::UpdateFailed(format!(
                    "the reward of user {} at decision_idx {} is neither 0 nor 1",
                    record.user_id,
                    record.decision_idx.get()
                )));
            }
        }
        // From the prior, never from the previous counts: every update gets all the data.
        let bounds = (current.min_probability, current.max_probability);
        Parameters::new(bounds, current.prior, successes, failures).to_json()
    }

    // No describe_change: P(action = 1) is computed from the participants' outcomes (after one
    // record it tells that participant's outcome), so rl.log gets only the service's line with
    // the version and the number of records.

    fn validate_parameters(&self, values: &Value) -> Result<(), AlgorithmError> {
        let invalid = |why: String| Err(AlgorithmError::InvalidParameters(why));
        let p = Parameters::read(values)?;
        if (p.min_probability, p.max_probability) != (self.min_probability, self.max_probability) {
            return invalid(format!(
                "the parameters were made for min_probability {} and max_probability {}, but \
                 algorithm.options says {} and {}; the bounds cannot change within a study",
                p.min_probability, p.max_probability, self.min_probability, self.max_probability
            ));
        }
        if !(p.min_probability..=p.max_probability).contains(&p.probability) {
            return invalid(format!(
                "probability {} lies outside [{}, {}]",
                p.probability, p.min_probability, p.max_probability
            ));
        }
        Ok(())
    }
}
