//! The extension point: the trait a decision algorithm implements.
//!
//! An algorithm turns a context into a state, draws an action from its current parameters,
//! turns an outcome into a reward, and computes new parameters from the study data. It owns its
//! parameter format (any JSON value) and validates its own inputs: a context or outcome it
//! cannot use is a client error whose message reaches the study server unchanged.
//!
//! Implementations live in their own crates (see `justin-algos`); the core never names one.

use crate::domain::{Action, DecisionIdx, JsonObject, Probability, State, StudyRecord, UserId};
use crate::rng::DecisionRng;

/// What went wrong inside an algorithm.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlgorithmError {
    /// The client sent a context or outcome the algorithm cannot use. The message is shown to
    /// the client as it is, so it must name the field and say what is expected.
    #[error("{0}")]
    InvalidInput(String),
    /// The priors given in configuration are unusable; start-up stops with this message.
    #[error("invalid priors: {0}")]
    InvalidPriors(String),
    /// The settings an algorithm is built with (`[algorithm.options]`) are unusable: an unknown
    /// key, a missing one, or a value out of range. Only building an algorithm returns it, and
    /// start-up stops with this message, which must name the option and say what is expected.
    #[error("invalid algorithm.options: {0}")]
    InvalidOptions(String),
    /// Stored or computed parameters do not have the algorithm's shape.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// The algorithm could not finish an update.
    #[error("update failed: {0}")]
    UpdateFailed(String),
}

/// The action an algorithm chose and the probability that the action is 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActionChoice {
    /// The action drawn.
    pub action: Action,
    /// P(action = 1) under the parameters used: the propensity analysts rely on.
    pub action_prob: Probability,
}

impl ActionChoice {
    /// Draws action 1 with probability `p` from the decision's generator, with exactly one
    /// uniform draw (so a replay from the stored seed repeats it), and keeps `p` as the
    /// decision's propensity. What most algorithms do once they know P(action = 1).
    pub fn draw(p: Probability, rng: &mut DecisionRng) -> Self {
        let action = if rng.uniform() < p.get() {
            Action::One
        } else {
            Action::Zero
        };
        Self {
            action,
            action_prob: p,
        }
    }
}

/// A decision-making algorithm.
///
/// Every method is called from many threads at once and must not keep per-request state in
/// `self`. Randomness comes only from the [`DecisionRng`] passed in, so that a decision can be
/// replayed from its stored seed.
pub trait Algorithm: Send + Sync + std::fmt::Debug {
    /// The name this algorithm is registered under (`algorithm.name` in config.toml). It is
    /// stored with every parameter version.
    fn name(&self) -> &str;

    /// The first parameter version, built from the configured priors.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidPriors`] when a prior is missing or out of range.
    fn initial_parameters(&self, priors: &JsonObject) -> Result<serde_json::Value, AlgorithmError>;

    /// Turns a context into the state the policy works on.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidInput`] with a client-facing message when the
    /// context lacks a field the algorithm needs or holds one of the wrong type.
    fn make_state(&self, context: &JsonObject) -> Result<State, AlgorithmError>;

    /// Draws an action for `user` at `decision_idx`.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidParameters`] when `parameters` are not of this
    /// algorithm's shape.
    fn get_action(
        &self,
        user: &UserId,
        state: &State,
        parameters: &serde_json::Value,
        decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError>;

    /// Turns an uploaded outcome into the reward the update learns from.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidInput`] with a client-facing message when the
    /// outcome lacks a field the algorithm needs or holds one of the wrong type.
    fn make_reward(
        &self,
        user: &UserId,
        state: &State,
        action: Action,
        outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError>;

    /// Computes new parameters from the current ones and the study data.
    ///
    /// The data arrives as a stream in upload order and is never held in memory as a whole:
    /// an implementation should fold over it (sums, counts, sufficient statistics). The stream
    /// ends early when storage fails; the caller then discards the result.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidParameters`] when `current` is not of this
    /// algorithm's shape, and [`AlgorithmError::UpdateFailed`] when no new parameters can be
    /// computed.
    fn update(
        &self,
        current: &serde_json::Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<serde_json::Value, AlgorithmError>;

    /// Checks parameters an update produced before they are published. The service has
    /// already checked that they hold no null (a non-finite number serialises as null); an
    /// algorithm adds its own rules here (ranges, shapes, positive definiteness).
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidParameters`] saying which rule failed.
    fn validate_parameters(&self, values: &serde_json::Value) -> Result<(), AlgorithmError> {
        let _ = values;
        Ok(())
    }
}
