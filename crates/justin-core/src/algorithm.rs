//! The extension point: the trait a decision algorithm implements.
//!
//! An algorithm turns a context into a state, draws an action from its current parameters,
//! turns an outcome into a reward, and computes new parameters from the study data. It owns its
//! parameter format (any JSON value) and validates its own inputs: a context or outcome it
//! cannot use is a client error whose message reaches the study server unchanged.
//!
//! Implementations live in their own crates (`justin-algos`, or a crate outside this workspace)
//! and reach the service through a [`Registry`](crate::registry::Registry); the core never names
//! one.

use std::any::Any;
use std::sync::Arc;

use crate::analysis::AnalysisModel;
use crate::domain::{Action, DecisionIdx, JsonObject, Probability, State, StudyRecord, UserId};
use crate::rng::DecisionRng;

/// What an algorithm made once of one parameter version ([`Algorithm::prepare_policy`]) for
/// every draw from that version ([`Algorithm::get_action_prepared`]): its own type (parsed
/// vectors and matrices, say), which the service holds without looking inside.
pub type PreparedPolicy = Arc<dyn Any + Send + Sync>;

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

/// The unavailable reason of a decision the algorithm declared not available because its
/// context lacked a value ([`Prepared::NotAvailable`]).
pub const MISSING_CONTEXT: &str = "missing_context";

/// What an algorithm made of a context ([`Algorithm::prepare_state`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Prepared {
    /// The state the policy works on, with whatever the algorithm imputed in it.
    State(State),
    /// The context lacks a value the algorithm cannot do without, and its rule for that value
    /// is to record the decision as not available, with this reason (usually
    /// [`MISSING_CONTEXT`]): stored without a draw, like a decision the study server marked
    /// unavailable.
    NotAvailable(String),
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

/// Whether a request's JSON value names `key` as the template's presence checks (Python's
/// `key in value`) see it: an object holding the key with a value other than `null` (JSON
/// `null` counts as absent everywhere in the API), a string containing it, a list holding it
/// as a string. A number, a boolean or `null` has no members in Python (its check fails with
/// an error there); here it counts as naming every key, so that the request's type checks,
/// which come next, say what is wrong with it.
pub fn names(value: &serde_json::Value, key: &str) -> bool {
    use serde_json::Value;
    match value {
        Value::Object(map) => map.get(key).is_some_and(|v| !v.is_null()),
        Value::String(text) => text.contains(key),
        Value::Array(items) => items.iter().any(|item| item.as_str() == Some(key)),
        Value::Null | Value::Bool(_) | Value::Number(_) => true,
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

    /// The first parameter version, built from the configured priors. Parameters are a JSON
    /// object (clients read them as one), of the algorithm's own shape; the service refuses
    /// any other value, here and from [`Algorithm::update`].
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

    /// Turns a context into the state a decision drawn from `parameters` works on, following
    /// the algorithm's rule for each value the context lacks (absent or `null`): refuse it
    /// (an [`AlgorithmError::InvalidInput`], as [`Algorithm::make_state`] gives), impute a
    /// value (the state then shows what was imputed, for instance with a missing indicator
    /// beside it), or declare the decision not available ([`Prepared::NotAvailable`]). The
    /// service calls this for every decision and upload, with the parameter version the
    /// decision is drawn from, and a replay calls it again with the same version, so it must
    /// depend on nothing else. The default refuses every missing value: it is
    /// [`Algorithm::make_state`].
    ///
    /// # Errors
    /// As [`Algorithm::make_state`]; [`AlgorithmError::InvalidParameters`] when an imputation
    /// needs something `parameters` do not hold.
    fn prepare_state(
        &self,
        context: &JsonObject,
        parameters: &serde_json::Value,
    ) -> Result<Prepared, AlgorithmError> {
        let _ = parameters;
        self.make_state(context).map(Prepared::State)
    }

    /// Checks that a request's context names every field [`Algorithm::make_state`] needs
    /// (a field whose absence the algorithm's rule tolerates is not needed),
    /// before any field of the request is checked for its type: the template reports a
    /// missing context field ahead of, say, a `user_id` that is not a string, and a request
    /// with both faults must get the same message here. `context` is the request's value as
    /// sent, whatever its JSON type; [`names`] tells whether it names a field the way the
    /// template's check sees it. The types of the fields are `make_state`'s to check, later.
    /// The default checks nothing.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidInput`] with the same message `make_state` gives
    /// for the first missing field.
    fn check_context_names(&self, context: &serde_json::Value) -> Result<(), AlgorithmError> {
        let _ = context;
        Ok(())
    }

    /// Like [`Algorithm::check_context_names`], for an upload's outcome and the fields
    /// [`Algorithm::make_reward`] needs.
    ///
    /// # Errors
    /// MUST return [`AlgorithmError::InvalidInput`] with the same message `make_reward` gives
    /// for the first missing field.
    fn check_outcome_names(&self, outcome: &serde_json::Value) -> Result<(), AlgorithmError> {
        let _ = outcome;
        Ok(())
    }

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

    /// Reads one parameter version, once, into what makes its draws cheap (the parsed
    /// posterior, a factorisation), for [`Algorithm::get_action_prepared`]. The service calls
    /// it the first time it draws from a version, keeps the result with that version while the
    /// version is among the newest two it has drawn from, and hands it, with the same
    /// version's JSON, to every draw from it; a new version (an update, a restore, a reset,
    /// another process's update) is prepared afresh. Like `get_action`, it must depend on
    /// `parameters` only.
    ///
    /// `None`, the default, prepares nothing: every draw goes to [`Algorithm::get_action`]
    /// with the JSON. Return `None` too for parameters that cannot be prepared (not of this
    /// algorithm's shape): `get_action` then says what is wrong with them, draw by draw.
    fn prepare_policy(&self, parameters: &serde_json::Value) -> Option<PreparedPolicy> {
        let _ = parameters;
        None
    }

    /// Draws an action as [`Algorithm::get_action`] does, from `policy`, what
    /// [`Algorithm::prepare_policy`] made of `parameters`. It must give exactly what
    /// `get_action` gives for the same arguments, to the last bit of the probability and with
    /// the same draws from `rng`: a replay draws again with `get_action`, and compares. The
    /// default is `get_action`.
    ///
    /// # Errors
    /// As [`Algorithm::get_action`].
    fn get_action_prepared(
        &self,
        user: &UserId,
        state: &State,
        policy: &(dyn Any + Send + Sync),
        parameters: &serde_json::Value,
        decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        let _ = policy;
        self.get_action(user, state, parameters, decision_idx, rng)
    }

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

    /// Describes for `rl.log` how an update changes the policy from `current` to `next`
    /// (e.g. `probability 0.5 -> 0.51`), in terms of the parameters only: never participants'
    /// data or values derived from it. The service logs it once `next` is stored, so the log
    /// never reports a change that was discarded (an update put back, or one that failed).
    /// [`update`](Self::update) itself logs nothing about the policy for that reason.
    fn describe_change(&self, current: &serde_json::Value, next: &serde_json::Value) -> String {
        let _ = (current, next);
        String::new()
    }

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

    /// How this algorithm takes part in an analysis that accounts for its adaptivity
    /// (`justin export --for lifejacket`; see [`AnalysisModel`]), or `None` when it cannot: its
    /// update is not a loss or estimating function of its parameters. The default is `None`.
    fn analysis(&self) -> Option<&dyn AnalysisModel> {
        None
    }

    /// The bounds the algorithm clips P(action = 1) to, `(lower, upper)`, when it has them:
    /// the dashboard shows the share of decisions at them. The default is `None`.
    fn clip_bounds(&self) -> Option<(f64, f64)> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::names;
    use serde_json::json;

    #[test]
    fn names_follows_pythons_membership_test() {
        let named = [
            json!({"temperature": 1}),
            json!({"temperature": "x"}),
            json!("temperature"),
            json!("my temperature today"),
            json!(["temperature"]),
            json!(5),
            json!(true),
            json!(null),
        ];
        for value in named {
            assert!(names(&value, "temperature"), "{value}");
        }
        let unnamed = [
            json!({}),
            json!({"temperature": null}),
            json!({"Temperature": 1}),
            json!(""),
            json!("temp"),
            json!([]),
            json!([{"temperature": 1}]),
            json!([1, 2]),
        ];
        for value in unnamed {
            assert!(!names(&value, "temperature"), "{value}");
        }
    }
}
