//! How `thompson` makes a state from a context in which a feature's value is missing (absent or
//! `null`): each feature has a rule, from `[algorithm.options.missing]`.
//!
//! - `"refuse"` (the default): the request is refused with the template's message
//!   (`Invalid context. steps is required.`).
//! - `"not_available"`: the decision is recorded as not available, with reason
//!   `missing_context`, and gets no draw.
//! - `{ impute = <number> }` or `{ impute = "mean" }`: the value is imputed (the constant, or the
//!   mean of the feature's observed values that the current parameters hold) and a missing
//!   indicator joins the state: x = [1, features..., one indicator per imputed feature], the
//!   indicator 1 when the value was imputed and 0 when it was sent. The model learns a
//!   coefficient for each indicator like for any feature, so an imputed value does not pass
//!   for an observed one.
//!
//! The rules are stored in the parameters with the features, and `validate_parameters` refuses
//! a version made with other rules than the configured ones, so every version of a study has
//! the configured rules: a state is made by them, with the means of the version the decision
//! is drawn from (a replay repeats an imputation exactly). Every update recomputes the means
//! from the study data's states.

use justin_core::{AlgorithmError, JsonObject, Prepared, State, MISSING_CONTEXT};
use serde_json::{json, Map, Value};

/// How a missing value is imputed.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Imputation {
    /// This constant.
    Constant(f64),
    /// The mean of the feature's observed values the parameters hold.
    Mean,
}

/// A feature's rule for a missing value.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Missing {
    /// Refuse the request.
    Refuse,
    /// Record the decision as not available.
    NotAvailable,
    /// Impute a value and add a missing indicator to the state.
    Impute(Imputation),
}

impl Missing {
    /// The rule as options and parameters write it (`None` for the default, refuse).
    fn to_json(&self) -> Option<Value> {
        match self {
            Self::Refuse => None,
            Self::NotAvailable => Some(json!("not_available")),
            Self::Impute(Imputation::Constant(c)) => Some(json!({ "impute": c })),
            Self::Impute(Imputation::Mean) => Some(json!({ "impute": "mean" })),
        }
    }

    fn read(
        value: &Value,
        key: &str,
        fail: fn(String) -> AlgorithmError,
    ) -> Result<Self, AlgorithmError> {
        let wrong = || {
            fail(format!(
                "{key} must be \"refuse\", \"not_available\", {{ impute = <number> }} or \
                 {{ impute = \"mean\" }}"
            ))
        };
        match value {
            Value::String(s) if s == "refuse" => Ok(Self::Refuse),
            Value::String(s) if s == "not_available" => Ok(Self::NotAvailable),
            Value::Object(o) if o.len() == 1 => match o.get("impute") {
                Some(Value::String(s)) if s == "mean" => Ok(Self::Impute(Imputation::Mean)),
                Some(v) => v
                    .as_f64()
                    .filter(|c| c.is_finite())
                    .map(|c| Self::Impute(Imputation::Constant(c)))
                    .ok_or_else(wrong),
                None => Err(wrong()),
            },
            _ => Err(wrong()),
        }
    }
}

/// How states are made: the features in state order, each one's rule, and for each feature
/// imputed by its mean, that mean.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct StateRules {
    pub(super) features: Vec<String>,
    /// One per feature.
    pub(super) missing: Vec<Missing>,
    /// One per feature: the mean imputed for it (features imputed by their mean only).
    pub(super) means: Vec<Option<f64>>,
}

impl StateRules {
    /// Every feature refused when missing.
    pub(super) fn refusing(features: Vec<String>) -> Self {
        let n = features.len();
        Self {
            features,
            missing: vec![Missing::Refuse; n],
            means: vec![None; n],
        }
    }

    /// The rules of `[algorithm.options.missing]` (a table of feature → rule) for `features`;
    /// the means are unknown until the priors give them.
    pub(super) fn from_options(
        features: Vec<String>,
        missing: Option<&Value>,
    ) -> Result<Self, AlgorithmError> {
        let fail = AlgorithmError::InvalidOptions;
        let mut rules = Self::refusing(features);
        let Some(missing) = missing else {
            return Ok(rules);
        };
        let table = missing.as_object().ok_or_else(|| {
            fail("missing must be a table of feature = rule (\"refuse\", \"not_available\", { impute = <number> } or { impute = \"mean\" })".into())
        })?;
        for (name, rule) in table {
            let Some(i) = rules.features.iter().position(|f| f == name) else {
                return Err(fail(format!(
                    "missing.{name}: {name:?} is not one of the features {:?}",
                    rules.features
                )));
            };
            rules.missing[i] = Missing::read(rule, &format!("missing.{name}"), fail)?;
        }
        Ok(rules)
    }

    /// Features imputed by their mean.
    pub(super) fn mean_imputed(&self) -> impl Iterator<Item = (usize, &str)> {
        self.features
            .iter()
            .enumerate()
            .filter(|(i, _)| self.missing[*i] == Missing::Impute(Imputation::Mean))
            .map(|(i, f)| (i, f.as_str()))
    }

    /// The number of missing indicators (one per imputed feature).
    pub(super) fn indicators(&self) -> usize {
        self.missing
            .iter()
            .filter(|m| matches!(m, Missing::Impute(_)))
            .count()
    }

    /// The number of values in a state: the intercept, the features and the indicators.
    pub(super) fn dimension(&self) -> usize {
        1 + self.features.len() + self.indicators()
    }

    /// Takes the means the priors give (`feature_means`, a table of feature → number), one for
    /// every feature imputed by its mean and none for another.
    pub(super) fn with_prior_means(mut self, priors: &JsonObject) -> Result<Self, AlgorithmError> {
        let fail = AlgorithmError::InvalidPriors;
        let given = match priors.get("feature_means") {
            None => Map::new(),
            Some(Value::Object(o)) => o.clone(),
            Some(_) => {
                return Err(fail(
                    "feature_means must be a table of feature = number".into(),
                ))
            }
        };
        if let Some(name) = given
            .keys()
            .find(|k| !self.mean_imputed().any(|(_, f)| f == k.as_str()))
        {
            return Err(fail(format!(
                "feature_means.{name}: {name:?} is not a feature imputed by its mean \
                 (missing.{name} = {{ impute = \"mean\" }})"
            )));
        }
        let wanted: Vec<(usize, String)> = self
            .mean_imputed()
            .map(|(i, f)| (i, f.to_owned()))
            .collect();
        for (i, name) in wanted {
            let mean = given
                .get(&name)
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    fail(format!(
                        "feature_means.{name} is required (a number): the value imputed for a \
                         missing {name} until an update computes the mean from the study data"
                    ))
                })?;
            self.means[i] = Some(mean);
        }
        Ok(self)
    }

    /// The rules and means as the parameters hold them: nothing when every feature is refused
    /// when missing (the parameters then read as they always have).
    pub(super) fn write(&self, parameters: &mut Map<String, Value>) {
        let rules: Map<String, Value> = self
            .features
            .iter()
            .zip(&self.missing)
            .filter_map(|(f, m)| m.to_json().map(|rule| (f.clone(), rule)))
            .collect();
        if rules.is_empty() {
            return;
        }
        parameters.insert("missing".into(), Value::Object(rules));
        let means: Map<String, Value> = self
            .features
            .iter()
            .zip(&self.means)
            .filter_map(|(f, m)| m.map(|m| (f.clone(), json!(m))))
            .collect();
        parameters.insert("feature_means".into(), Value::Object(means));
    }

    /// The rules the parameters hold for `features`.
    pub(super) fn read(features: Vec<String>, parameters: &Value) -> Result<Self, AlgorithmError> {
        let fail = AlgorithmError::InvalidParameters;
        let mut rules = Self::refusing(features);
        let Some(missing) = parameters.get("missing") else {
            return Ok(rules);
        };
        let table = missing
            .as_object()
            .ok_or_else(|| fail("missing must be an object of feature: rule".into()))?;
        for (name, rule) in table {
            let i = rules
                .features
                .iter()
                .position(|f| f == name)
                .ok_or_else(|| {
                    fail(format!(
                        "missing.{name}: {name:?} is not one of the features"
                    ))
                })?;
            rules.missing[i] = Missing::read(rule, &format!("missing.{name}"), fail)?;
        }
        let means = parameters.get("feature_means").and_then(Value::as_object);
        let wanted: Vec<(usize, String)> = rules
            .mean_imputed()
            .map(|(i, f)| (i, f.to_owned()))
            .collect();
        for (i, name) in wanted {
            let mean = means
                .and_then(|m| m.get(&name))
                .and_then(Value::as_f64)
                .filter(|v| v.is_finite())
                .ok_or_else(|| fail(format!("feature_means.{name} must be a number")))?;
            rules.means[i] = Some(mean);
        }
        Ok(rules)
    }

    /// Whether the rules (not the means) are the same.
    pub(super) fn same_rules(&self, other: &Self) -> bool {
        self.features == other.features && self.missing == other.missing
    }

    /// Makes the state of `context` for a decision drawn from `parameters`: the first refused
    /// value (missing or not a number) in feature order refuses the request with the
    /// template's messages; otherwise a missing value whose rule is not available makes the
    /// decision not available; otherwise the state, imputed values and indicators included.
    /// Without parameters every missing value is refused (`make_state`). Only a mean
    /// imputation reads the parameters (their `feature_means`), so a decision whose context
    /// lacks nothing reads nothing from them.
    pub(super) fn make(
        &self,
        context: &JsonObject,
        parameters: Option<&Value>,
    ) -> Result<Prepared, AlgorithmError> {
        let mut values = Vec::with_capacity(self.dimension());
        values.push(1.0);
        let mut indicators = Vec::with_capacity(self.indicators());
        let mut not_available = false;
        for (rule, feature) in self.missing.iter().zip(&self.features) {
            match context.get(feature) {
                None | Some(Value::Null) => match (rule, parameters) {
                    (Missing::Refuse, _) | (_, None) => {
                        return Err(super::missing("context", feature))
                    }
                    (Missing::NotAvailable, Some(_)) => {
                        not_available = true;
                        values.push(0.0);
                    }
                    (Missing::Impute(imputation), Some(parameters)) => {
                        let value = match imputation {
                            Imputation::Constant(c) => *c,
                            Imputation::Mean => mean_in(parameters, feature)?,
                        };
                        values.push(value);
                        indicators.push(1.0);
                    }
                },
                Some(v) => {
                    values.push(super::context_number(v, feature)?);
                    if matches!(rule, Missing::Impute(_)) {
                        indicators.push(0.0);
                    }
                }
            }
        }
        if not_available {
            return Ok(Prepared::NotAvailable(MISSING_CONTEXT.to_owned()));
        }
        values.extend(indicators);
        State::new(values)
            .map(Prepared::State)
            .map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    /// Whether a missing `feature` refuses the request (the names check looks for it).
    pub(super) fn refuses(&self, feature: usize) -> bool {
        self.missing[feature] == Missing::Refuse
    }
}

/// The mean of `feature` that `parameters` hold, for imputing it.
fn mean_in(parameters: &Value, feature: &str) -> Result<f64, AlgorithmError> {
    parameters
        .get("feature_means")
        .and_then(|means| means.get(feature))
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
        .ok_or_else(|| {
            AlgorithmError::InvalidParameters(format!("feature_means.{feature} must be a number"))
        })
}

/// The running sums of each mean-imputed feature's observed values over an update's records.
pub(super) struct MeanSums {
    /// (feature index, state index of its value, state index of its indicator, sum, count).
    sums: Vec<(usize, usize, usize, f64, u64)>,
}

impl MeanSums {
    pub(super) fn new(rules: &StateRules) -> Self {
        let nf = rules.features.len();
        let mut indicator = 1 + nf;
        let mut sums = Vec::new();
        for (i, m) in rules.missing.iter().enumerate() {
            if let Missing::Impute(imputation) = m {
                if *imputation == Imputation::Mean {
                    sums.push((i, 1 + i, indicator, 0.0, 0));
                }
                indicator += 1;
            }
        }
        Self { sums }
    }

    /// Adds a record's state (of the rules' dimension): its observed values count.
    pub(super) fn add(&mut self, x: &[f64]) {
        for (_, value, indicator, sum, count) in &mut self.sums {
            if x.get(*indicator) == Some(&0.0) {
                if let Some(v) = x.get(*value) {
                    *sum += v;
                    *count += 1;
                }
            }
        }
    }

    /// The rules with the means of the observed values; a feature never observed keeps the
    /// mean it had.
    pub(super) fn apply(&self, mut rules: StateRules) -> StateRules {
        for &(i, _, _, sum, count) in &self.sums {
            if count > 0 {
                #[allow(clippy::cast_precision_loss)]
                let mean = sum / count as f64;
                if mean.is_finite() {
                    rules.means[i] = Some(mean);
                }
            }
        }
        rules
    }
}
