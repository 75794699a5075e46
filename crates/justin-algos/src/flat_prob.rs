//! `flat_prob`: the demonstration algorithm. Every participant gets action 1 with one fixed,
//! shared probability; each update nudges that probability by 0.01 depending on the mean
//! temperature seen in the uploaded contexts. It learns nothing useful, and that is the point:
//! it shows every step of the [`Algorithm`] trait with the least possible statistics.

use std::sync::Arc;

use justin_core::{
    names, Action, ActionChoice, Algorithm, AlgorithmError, DecisionIdx, DecisionRng, JsonObject,
    Probability, Registration, State, StudyRecord, UserId,
};
use serde_json::{json, Value};

/// The registry name.
pub const NAME: &str = "flat_prob";

/// Registers `flat_prob` under [`NAME`], its log records coming from this module.
pub fn registration() -> Registration {
    Registration::new(NAME, module_path!(), |options| {
        Ok(Arc::new(FlatProb::from_options(options)?))
    })
}
/// The parameter (and prior) holding P(action = 1).
const PROBABILITY_KEY: &str = "probability_of_action";
/// The probability never leaves this range through updates.
const MIN_PROBABILITY: f64 = 0.2;
/// See [`MIN_PROBABILITY`].
const MAX_PROBABILITY: f64 = 0.8;
/// How far one update moves the probability.
const STEP: f64 = 0.01;
/// Mean temperatures below this raise the probability; others lower it.
const TEMPERATURE_THRESHOLD: f64 = 30.0;

/// The flat fixed-probability algorithm.
#[derive(Debug, Clone, Default)]
pub struct FlatProb;

impl FlatProb {
    /// Builds the algorithm from `[algorithm.options]`, of which it takes none: everything it
    /// needs is in its priors.
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidOptions`] naming the first option given.
    pub fn from_options(options: &JsonObject) -> Result<Self, AlgorithmError> {
        match options.keys().next() {
            None => Ok(Self),
            Some(key) => Err(AlgorithmError::InvalidOptions(format!(
                "{NAME} takes no options; remove {key:?}"
            ))),
        }
    }
}

fn probability(values: &Value) -> Result<f64, AlgorithmError> {
    let p = values
        .get(PROBABILITY_KEY)
        .and_then(Value::as_f64)
        .ok_or_else(|| {
            AlgorithmError::InvalidParameters(format!("{PROBABILITY_KEY} must be a number"))
        })?;
    Probability::new(p)
        .map(Probability::get)
        .map_err(|e| AlgorithmError::InvalidParameters(format!("{PROBABILITY_KEY}: {e}")))
}

/// The template's message for a context without a temperature.
const NO_TEMPERATURE: &str = "Invalid context. Temperature is required.";
/// The template's message for an outcome without clicks.
const NO_CLICKS: &str = "Invalid outcome. Clicks is required.";

/// Reads a required numeric field of a context or outcome, with the template's messages.
fn number_field(object: &JsonObject, key: &str, missing: &str) -> Result<f64, AlgorithmError> {
    match object.get(key) {
        None | Some(Value::Null) => Err(AlgorithmError::InvalidInput(missing.into())),
        Some(v) => v
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or_else(|| AlgorithmError::InvalidInput(format!("{key} must be a float or int."))),
    }
}

/// Rounds away the binary noise of repeated 0.01 steps, so stored values read as written.
fn tidy(p: f64) -> f64 {
    (p * 1e9).round() / 1e9
}

impl Algorithm for FlatProb {
    fn name(&self) -> &str {
        NAME
    }

    fn initial_parameters(&self, priors: &JsonObject) -> Result<Value, AlgorithmError> {
        let p = priors
            .get(PROBABILITY_KEY)
            .and_then(Value::as_f64)
            .ok_or_else(|| {
                AlgorithmError::InvalidPriors(format!(
                    "{PROBABILITY_KEY} is required and must be a number"
                ))
            })?;
        Probability::new(p)
            .map_err(|e| AlgorithmError::InvalidPriors(format!("{PROBABILITY_KEY}: {e}")))?;
        Ok(json!({ PROBABILITY_KEY: p }))
    }

    fn make_state(&self, context: &JsonObject) -> Result<State, AlgorithmError> {
        let temperature = number_field(context, "temperature", NO_TEMPERATURE)?;
        State::new(vec![temperature]).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    fn get_action(
        &self,
        _user: &UserId,
        _state: &State,
        parameters: &Value,
        _decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        let p = probability(parameters)?;
        let p =
            Probability::new(p).map_err(|e| AlgorithmError::InvalidParameters(e.to_string()))?;
        Ok(ActionChoice::draw(p, rng))
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        number_field(outcome, "clicks", NO_CLICKS)
    }

    fn check_context_names(&self, context: &Value) -> Result<(), AlgorithmError> {
        if names(context, "temperature") {
            Ok(())
        } else {
            Err(AlgorithmError::InvalidInput(NO_TEMPERATURE.into()))
        }
    }

    fn check_outcome_names(&self, outcome: &Value) -> Result<(), AlgorithmError> {
        if names(outcome, "clicks") {
            Ok(())
        } else {
            Err(AlgorithmError::InvalidInput(NO_CLICKS.into()))
        }
    }

    fn update(
        &self,
        current: &Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<Value, AlgorithmError> {
        let p = probability(current)?;
        // A running mean: a plain sum of extreme temperatures could overflow to infinity.
        let (mut mean, mut count) = (0.0_f64, 0_u64);
        for record in data {
            // Uploads were checked for a numeric temperature, so every record counts.
            if let Some(t) = record.context.get("temperature").and_then(Value::as_f64) {
                count += 1;
                let n = count as f64;
                mean += t / n - mean / n;
            }
        }
        if count == 0 {
            return Ok(json!({ PROBABILITY_KEY: p }));
        }
        let step = if mean < TEMPERATURE_THRESHOLD {
            STEP
        } else {
            -STEP
        };
        let next = tidy((p + step).clamp(MIN_PROBABILITY, MAX_PROBABILITY));
        Ok(json!({ PROBABILITY_KEY: next }))
    }

    // The mean is derived from participants' contexts (with one record, it is one
    // participant's value): it stays out of the log, which records only the policy.
    fn describe_change(&self, current: &Value, next: &Value) -> String {
        match (probability(current), probability(next)) {
            (Ok(p), Ok(q)) if p.to_bits() == q.to_bits() => format!("probability stays {p}"),
            (Ok(p), Ok(q)) => format!("probability {p} -> {q}"),
            _ => String::new(),
        }
    }

    fn validate_parameters(&self, values: &Value) -> Result<(), AlgorithmError> {
        let p = probability(values)?;
        if (MIN_PROBABILITY..=MAX_PROBABILITY).contains(&p) {
            Ok(())
        } else {
            Err(AlgorithmError::InvalidParameters(format!(
                "{PROBABILITY_KEY} {p} lies outside [{MIN_PROBABILITY}, {MAX_PROBABILITY}]"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A study record as an upload would store it.
    fn record(temperature: f64) -> StudyRecord {
        serde_json::from_value(json!({
            "user_id": "u",
            "decision_idx": 0,
            "requested_at": "2025-01-01T12:00:00Z",
            "sent_timestamp": "2025-01-01T12:00:00",
            "received_at": "2025-01-01T12:00:01Z",
            "context": { "temperature": temperature },
            "action": 1,
            "action_prob": 0.5,
            "state": [temperature],
            "outcome": { "clicks": 1 },
            "reward": 1.0,
        }))
        .unwrap()
    }

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    fn update_with(p: f64, temps: &[f64]) -> f64 {
        let mut records = temps.iter().map(|t| record(*t));
        let next = FlatProb
            .update(&json!({ PROBABILITY_KEY: p }), &mut records)
            .unwrap();
        next[PROBABILITY_KEY].as_f64().unwrap()
    }

    #[test]
    fn state_is_the_temperature() {
        let state = FlatProb
            .make_state(&obj(json!({"temperature": 23})))
            .unwrap();
        assert_eq!(state.values(), &[23.0]);
    }

    #[test]
    fn context_messages_are_the_templates() {
        let missing = FlatProb
            .make_state(&obj(json!({"humidity": 1})))
            .unwrap_err();
        assert_eq!(
            missing.to_string(),
            "Invalid context. Temperature is required."
        );
        let wrong = FlatProb
            .make_state(&obj(json!({"temperature": "hot"})))
            .unwrap_err();
        assert_eq!(wrong.to_string(), "temperature must be a float or int.");
    }

    #[test]
    fn reward_is_clicks() {
        let user = UserId::parse("u").unwrap();
        let state = State::new(vec![1.0]).unwrap();
        let r = FlatProb
            .make_reward(&user, &state, Action::One, &obj(json!({"clicks": 4})))
            .unwrap();
        assert!((r - 4.0).abs() < f64::EPSILON);
        let missing = FlatProb
            .make_reward(&user, &state, Action::One, &obj(json!({})))
            .unwrap_err();
        assert_eq!(missing.to_string(), "Invalid outcome. Clicks is required.");
    }

    /// The records of the current thread's log calls, for the test below.
    mod captured {
        use std::sync::Mutex;

        pub static RECORDS: Mutex<Vec<(std::thread::ThreadId, String)>> = Mutex::new(Vec::new());

        struct Capture;

        impl log::Log for Capture {
            fn enabled(&self, _: &log::Metadata<'_>) -> bool {
                true
            }
            fn log(&self, record: &log::Record<'_>) {
                RECORDS
                    .lock()
                    .unwrap()
                    .push((std::thread::current().id(), record.args().to_string()));
            }
            fn flush(&self) {}
        }

        pub fn install() {
            let _ = log::set_logger(&Capture);
            log::set_max_level(log::LevelFilter::Trace);
        }

        pub fn of_this_thread() -> Vec<String> {
            let me = std::thread::current().id();
            RECORDS
                .lock()
                .unwrap()
                .iter()
                .filter(|(thread, _)| *thread == me)
                .map(|(_, line)| line.clone())
                .collect()
        }
    }

    /// An update's result may be discarded (put back at shutdown): computing it logs nothing,
    /// and the change is described for the service to log once it is stored.
    #[test]
    fn computing_an_update_logs_nothing_and_the_change_is_described() {
        captured::install();
        assert!((update_with(0.5, &[20.0, 25.0]) - 0.51).abs() < 1e-12);
        assert!((update_with(0.5, &[]) - 0.5).abs() < 1e-12);
        assert_eq!(captured::of_this_thread(), Vec::<String>::new());
        assert_eq!(
            FlatProb.describe_change(
                &json!({PROBABILITY_KEY: 0.5}),
                &json!({PROBABILITY_KEY: 0.51})
            ),
            "probability 0.5 -> 0.51"
        );
        assert_eq!(
            FlatProb.describe_change(
                &json!({PROBABILITY_KEY: 0.8}),
                &json!({PROBABILITY_KEY: 0.8})
            ),
            "probability stays 0.8"
        );
    }

    #[test]
    fn update_rule() {
        assert!((update_with(0.5, &[20.0, 25.0]) - 0.51).abs() < 1e-12);
        assert!((update_with(0.5, &[30.0, 40.0]) - 0.49).abs() < 1e-12);
        // Mean exactly at the threshold lowers the probability.
        assert!((update_with(0.5, &[30.0]) - 0.49).abs() < 1e-12);
        assert!((update_with(0.8, &[10.0]) - 0.8).abs() < 1e-12);
        assert!((update_with(0.2, &[50.0]) - 0.2).abs() < 1e-12);
        assert!((update_with(0.5, &[]) - 0.5).abs() < 1e-12);
        // Extreme values neither overflow nor flip the rule: the mean of these is below 30.
        assert!((update_with(0.5, &[-1e308, -1e308, 1e308]) - 0.51).abs() < 1e-12);
    }

    #[test]
    fn published_probabilities_stay_in_the_clip_range() {
        assert!(FlatProb
            .validate_parameters(&json!({PROBABILITY_KEY: 0.2}))
            .is_ok());
        assert!(FlatProb
            .validate_parameters(&json!({PROBABILITY_KEY: 0.8}))
            .is_ok());
        for bad in [
            json!({PROBABILITY_KEY: 0.9}),
            json!({PROBABILITY_KEY: 0.1}),
            json!({}),
        ] {
            assert!(matches!(
                FlatProb.validate_parameters(&bad),
                Err(AlgorithmError::InvalidParameters(_))
            ));
        }
    }

    #[test]
    fn priors_are_checked() {
        assert!(FlatProb
            .initial_parameters(&obj(json!({PROBABILITY_KEY: 0.5})))
            .is_ok());
        assert!(matches!(
            FlatProb.initial_parameters(&obj(json!({}))),
            Err(AlgorithmError::InvalidPriors(_))
        ));
        assert!(matches!(
            FlatProb.initial_parameters(&obj(json!({PROBABILITY_KEY: 1.5}))),
            Err(AlgorithmError::InvalidPriors(_))
        ));
    }

    #[test]
    fn draws_follow_the_probability() {
        let user = UserId::parse("u").unwrap();
        let state = State::new(vec![1.0]).unwrap();
        let params = json!({ PROBABILITY_KEY: 0.3 });
        let n = 10_000;
        let ones = (0..n)
            .filter(|i| {
                let idx = DecisionIdx::new(*i).unwrap();
                let mut rng = DecisionRng::for_decision(
                    42,
                    &user,
                    &justin_core::DecisionType::default(),
                    idx,
                );
                let choice = FlatProb
                    .get_action(&user, &state, &params, idx, &mut rng)
                    .unwrap();
                assert!((choice.action_prob.get() - 0.3).abs() < f64::EPSILON);
                choice.action == Action::One
            })
            .count();
        let share = ones as f64 / n as f64;
        assert!((0.27..0.33).contains(&share), "share of ones {share}");
    }
}
