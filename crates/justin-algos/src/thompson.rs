//! `thompson`: Thompson sampling for a binary treatment, as mobile-health studies use it.
//!
//! The reward is modelled as linear in the state x = [1, features...] with a treatment effect:
//! r = x'β + a·x'γ + ε, ε ~ N(0, σ²), a ∈ {0, 1}. With a Gaussian prior on θ = [β; γ] the
//! posterior is Gaussian too, and Thompson sampling treats when a draw of γ says treating helps:
//! P(a = 1) = P(x'γ > 0) = Φ(x'm_γ / √(x'S_γγ x)), computed in closed form, then clipped to
//! [min_probability, max_probability] so every participant keeps some chance of either action
//! (which the study's analysis needs, and which keeps the policy from settling too early).
//!
//! The parameters carry the features, the clip bounds and the prior next to the posterior, so a
//! stored version always draws the same way whatever the configuration says later, and every
//! update computes the posterior afresh from the prior and all the study data (the service
//! streams every record to every update; starting from the previous posterior would count the
//! older records twice).

mod missing;

use std::any::Any;
use std::collections::BTreeSet;
use std::sync::Arc;

use missing::{MeanSums, StateRules};

use justin_core::{
    names, usable_covariate_name, Action, ActionChoice, Algorithm, AlgorithmError,
    AnalysisFunction, AnalysisModel, ArgSource, ArgSpec, DecisionIdx, DecisionRng, JsonObject,
    PreparedPolicy, Probability, Registration, State, StudyRecord, UpdateFunctionKind, UserId,
};
use justin_numeric::linalg::{dot, Cholesky, Matrix};
use justin_numeric::normal::normal_cdf;
use serde_json::{json, Value};

/// The registry name.
pub const NAME: &str = "thompson";

/// Registers `thompson` under [`NAME`], its log records coming from this module.
pub fn registration() -> Registration {
    Registration::new(NAME, module_path!(), |options| {
        Ok(Arc::new(Thompson::from_options(options)?))
    })
}
/// The outcome field read as the reward when the `reward` option is not given.
pub const DEFAULT_REWARD: &str = "reward";
/// The lower clip bound when `min_probability` is not given.
pub const DEFAULT_MIN_PROBABILITY: f64 = 0.2;
/// The upper clip bound when `max_probability` is not given.
pub const DEFAULT_MAX_PROBABILITY: f64 = 0.8;
/// How far apart (relative to their scale) the two halves of a covariance matrix may be.
const SYMMETRY_TOLERANCE: f64 = 1e-9;
/// The options `[algorithm.options]` may hold.
const OPTION_KEYS: [&str; 5] = [
    "features",
    "reward",
    "min_probability",
    "max_probability",
    "missing",
];

/// Builds an error of one kind (options, priors or parameters) from its message.
type Fail = fn(String) -> AlgorithmError;

/// Thompson sampling with clipping; see the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Thompson {
    /// The features and their rules for a missing value (the means come with the parameters).
    rules: StateRules,
    reward: String,
    min_probability: f64,
    max_probability: f64,
}

impl Thompson {
    /// Builds the algorithm from `[algorithm.options]`: `features` (required, a list of
    /// distinct context field names, possibly empty), `reward` (the outcome field, default
    /// `"reward"`), `min_probability` and `max_probability` (default 0.2 and 0.8), and
    /// `missing`, each feature's rule for a missing value (the module `missing`; default
    /// refuse).
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidOptions`] for an unknown key, a missing or malformed
    /// `features`, or clip bounds outside 0 ≤ min ≤ max ≤ 1.
    pub fn from_options(options: &JsonObject) -> Result<Self, AlgorithmError> {
        let fail: Fail = AlgorithmError::InvalidOptions;
        if let Some(key) = options.keys().find(|k| !OPTION_KEYS.contains(&k.as_str())) {
            return Err(fail(format!(
                "unknown option {key:?}; {NAME} takes features, reward, min_probability, \
                 max_probability and missing"
            )));
        }
        let features = read_features(options.get("features"), "features", fail)?;
        let rules = StateRules::from_options(features, options.get("missing"))?;
        let reward = match options.get("reward") {
            None => DEFAULT_REWARD.to_owned(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => {
                return Err(fail(
                    "reward must be a non-empty string: the outcome field holding the reward"
                        .into(),
                ))
            }
        };
        let bound = |key: &str, default: f64| match options.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|p| (0.0..=1.0).contains(p))
                .ok_or_else(|| fail(format!("{key} must be a number in [0, 1]"))),
        };
        let min_probability = bound("min_probability", DEFAULT_MIN_PROBABILITY)?;
        let max_probability = bound("max_probability", DEFAULT_MAX_PROBABILITY)?;
        check_bounds(min_probability, max_probability, fail)?;
        Ok(Self {
            rules,
            reward,
            min_probability,
            max_probability,
        })
    }

    /// The context fields the model uses, in state order (after the intercept).
    pub fn features(&self) -> &[String] {
        &self.rules.features
    }
}

/// Why θ has the length it has, for messages about a wrong length.
fn length_reason(rules: &StateRules) -> String {
    let features = rules.features.len();
    let indicators = rules.indicators();
    if indicators == 0 {
        format!(
            "2 × (1 + {features} features) = {}: a coefficient for the intercept and for each \
             feature, once for the reward without treatment (β) and once for the treatment \
             effect (γ)",
            2 * (1 + features)
        )
    } else {
        format!(
            "2 × (1 + {features} features + {indicators} missing indicators) = {}: a \
             coefficient for the intercept, each feature and each imputed feature's missing \
             indicator, once for the reward without treatment (β) and once for the treatment \
             effect (γ)",
            2 * rules.dimension()
        )
    }
}

fn check_bounds(min: f64, max: f64, fail: Fail) -> Result<(), AlgorithmError> {
    if min <= max {
        Ok(())
    } else {
        Err(fail(format!(
            "min_probability ({min}) must not exceed max_probability ({max})"
        )))
    }
}

/// Reads a list of distinct, non-empty feature names.
fn read_features(
    value: Option<&Value>,
    key: &str,
    fail: Fail,
) -> Result<Vec<String>, AlgorithmError> {
    let Some(value) = value else {
        return Err(fail(format!(
            "{key} is required: a list of the context fields the model uses (an empty list fits \
             an intercept only)"
        )));
    };
    let items = value
        .as_array()
        .ok_or_else(|| fail(format!("{key} must be a list of context field names")))?;
    let mut seen = BTreeSet::new();
    let mut features = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let name = item
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| fail(format!("{key}[{i}] must be a non-empty string")))?;
        if !seen.insert(name) {
            return Err(fail(format!("{key} lists {name:?} twice")));
        }
        features.push(name.to_owned());
    }
    Ok(features)
}

/// Reads a finite number.
fn read_number(value: Option<&Value>, key: &str, fail: Fail) -> Result<f64, AlgorithmError> {
    value
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite())
        .ok_or_else(|| fail(format!("{key} must be a number")))
}

/// Reads a positive finite number.
fn read_positive(value: Option<&Value>, key: &str, fail: Fail) -> Result<f64, AlgorithmError> {
    value
        .and_then(Value::as_f64)
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| fail(format!("{key} must be a positive number")))
}

/// Reads a list of `len` finite numbers; `reason` says why that length.
fn read_vector(
    value: Option<&Value>,
    key: &str,
    len: usize,
    reason: &str,
    fail: Fail,
) -> Result<Vec<f64>, AlgorithmError> {
    let shape = || fail(format!("{key} must be a list of {len} numbers ({reason})"));
    let items = value.and_then(Value::as_array).ok_or_else(shape)?;
    if items.len() != len {
        return Err(fail(format!(
            "{key} has {} numbers; it needs {len} ({reason})",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| fail(format!("{key}[{i}] must be a number")))
        })
        .collect()
}

/// Reads an n×n symmetric positive-definite matrix given as a list of rows.
fn read_covariance(
    value: Option<&Value>,
    key: &str,
    n: usize,
    reason: &str,
    fail: Fail,
) -> Result<Matrix, AlgorithmError> {
    let shape = || {
        fail(format!(
            "{key} must be a list of {n} rows of {n} numbers each ({reason})"
        ))
    };
    let rows = value.and_then(Value::as_array).ok_or_else(shape)?;
    if rows.len() != n {
        return Err(shape());
    }
    let mut parsed = Vec::with_capacity(n);
    for (i, row) in rows.iter().enumerate() {
        let row = row.as_array().filter(|r| r.len() == n).ok_or_else(shape)?;
        let numbers = row
            .iter()
            .enumerate()
            .map(|(j, v)| {
                v.as_f64()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| fail(format!("{key}[{i}][{j}] must be a number")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        parsed.push(numbers);
    }
    let matrix = Matrix::from_rows(&parsed).ok_or_else(shape)?;
    if let Some((i, j)) = matrix.asymmetry(SYMMETRY_TOLERANCE) {
        return Err(fail(format!(
            "{key} must be symmetric: {key}[{i}][{j}] and {key}[{j}][{i}] differ"
        )));
    }
    if Cholesky::new(&matrix).is_none() {
        return Err(fail(format!(
            "{key} must be positive definite (a valid covariance matrix with no zero or \
             negative variance in any direction)"
        )));
    }
    Ok(matrix)
}

/// The Gaussian prior on θ and the noise variance σ².
#[derive(Debug, Clone, PartialEq)]
struct Prior {
    mean: Vec<f64>,
    covariance: Matrix,
    noise_variance: f64,
}

impl Prior {
    /// The prior from `[algorithm.priors]` for states made by `rules` (`feature_means` is
    /// the rules' to read).
    fn from_config(priors: &JsonObject, rules: &StateRules) -> Result<Self, AlgorithmError> {
        const KEYS: [&str; 5] = [
            "mean",
            "covariance",
            "variance",
            "noise_variance",
            "feature_means",
        ];
        let fail: Fail = AlgorithmError::InvalidPriors;
        if let Some(key) = priors.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(fail(format!(
                "unknown prior {key:?}; {NAME} takes mean, covariance or variance, \
                 noise_variance, and feature_means"
            )));
        }
        let k = 2 * rules.dimension();
        let reason = length_reason(rules);
        let mean = match priors.get("mean") {
            None => vec![0.0; k],
            some => read_vector(some, "mean", k, &reason, fail)?,
        };
        let covariance = match (priors.get("covariance"), priors.get("variance")) {
            (Some(_), Some(_)) => {
                return Err(fail(
                    "give either covariance (a matrix) or variance (a number), not both".into(),
                ))
            }
            (None, None) => {
                return Err(fail(format!(
                    "covariance (a {k}×{k} matrix) or variance (a positive number, for \
                     variance × identity) is required"
                )))
            }
            (Some(c), None) => read_covariance(Some(c), "covariance", k, &reason, fail)?,
            (None, Some(v)) => {
                Matrix::scaled_identity(k, read_positive(Some(v), "variance", fail)?)
            }
        };
        let noise_variance = match priors.get("noise_variance") {
            None => {
                return Err(fail(
                    "noise_variance is required: the variance of the reward around the model, \
                     a positive number"
                        .into(),
                ))
            }
            some => read_positive(some, "noise_variance", fail)?,
        };
        Ok(Self {
            mean,
            covariance,
            noise_variance,
        })
    }

    /// The prior stored in parameters under `prior`.
    fn from_parameters(value: Option<&Value>, rules: &StateRules) -> Result<Self, AlgorithmError> {
        let fail: Fail = AlgorithmError::InvalidParameters;
        let prior = value
            .and_then(Value::as_object)
            .ok_or_else(|| fail("prior must be an object".into()))?;
        let k = 2 * rules.dimension();
        let reason = length_reason(rules);
        Ok(Self {
            mean: read_vector(prior.get("mean"), "prior.mean", k, &reason, fail)?,
            covariance: read_covariance(
                prior.get("covariance"),
                "prior.covariance",
                k,
                &reason,
                fail,
            )?,
            noise_variance: read_positive(
                prior.get("noise_variance"),
                "prior.noise_variance",
                fail,
            )?,
        })
    }

    fn to_json(&self) -> Value {
        json!({
            "mean": self.mean,
            "covariance": self.covariance.rows(),
            "noise_variance": self.noise_variance,
        })
    }
}

/// What a draw needs from the parameters, checked for shape only (the rules that need more
/// work, such as positive definiteness, were checked by `validate_parameters` before the
/// version was published).
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    /// The features, their rules for a missing value and the means imputed.
    rules: StateRules,
    min_probability: f64,
    max_probability: f64,
    mean: Vec<f64>,
    covariance: Matrix,
}

impl Policy {
    fn read(values: &Value) -> Result<Self, AlgorithmError> {
        let fail: Fail = AlgorithmError::InvalidParameters;
        let features = read_features(values.get("features"), "features", fail)?;
        let bound = |key: &str| {
            read_number(values.get(key), key, fail).and_then(|p| {
                if (0.0..=1.0).contains(&p) {
                    Ok(p)
                } else {
                    Err(fail(format!("{key} must lie in [0, 1], not {p}")))
                }
            })
        };
        let min_probability = bound("min_probability")?;
        let max_probability = bound("max_probability")?;
        check_bounds(min_probability, max_probability, fail)?;
        let rules = StateRules::read(features, values)?;
        let k = 2 * rules.dimension();
        let reason = length_reason(&rules);
        let mean = read_vector(values.get("mean"), "mean", k, &reason, fail)?;
        let covariance = read_matrix_shape(values.get("covariance"), "covariance", k, &reason)?;
        Ok(Self {
            rules,
            min_probability,
            max_probability,
            mean,
            covariance,
        })
    }
}

/// A version's policy as every draw from it reads it: [`Policy`] with the treatment effect's
/// part of the posterior, m_γ and S_γγ, taken out. `prepare_policy` makes it once per version
/// (the service keeps it for the version's draws); `get_action` makes it on each call.
#[derive(Debug, Clone, PartialEq)]
struct Drawing {
    /// The state's length: the intercept, the features and the missing indicators.
    dimension: usize,
    /// The features (for messages about a state of the wrong length).
    features: Vec<String>,
    /// Missing indicators in the state (for the same messages).
    indicators: usize,
    min_probability: f64,
    max_probability: f64,
    /// m_γ: the second half of the posterior mean.
    effect_mean: Vec<f64>,
    /// S_γγ: the lower right block of the posterior covariance.
    effect_covariance: Matrix,
}

impl Drawing {
    fn new(policy: Policy) -> Self {
        let d = policy.rules.dimension();
        // `Policy::read` holds the mean at 2d numbers and the covariance at 2d × 2d.
        let effect_covariance = policy.covariance.block(d, d);
        let mut effect_mean = policy.mean;
        effect_mean.drain(..d);
        Self {
            dimension: d,
            indicators: policy.rules.indicators(),
            features: policy.rules.features,
            min_probability: policy.min_probability,
            max_probability: policy.max_probability,
            effect_mean,
            effect_covariance,
        }
    }

    /// The clipped P(a = 1) for `state`, and the one uniform draw from `rng`.
    fn draw(&self, state: &State, rng: &mut DecisionRng) -> Result<ActionChoice, AlgorithmError> {
        let x = state.values();
        let d = self.dimension;
        if x.len() != d {
            return Err(AlgorithmError::InvalidParameters(format!(
                "the parameters are for {d} state values (the intercept, features {:?} and {} \
                 missing indicators), but the state has {}",
                self.features,
                self.indicators,
                x.len()
            )));
        }
        let raw = self.treatment_probability(x);
        if raw.is_nan() {
            return Err(AlgorithmError::InvalidInput(
                "Invalid context. The features are too large to compute a probability.".into(),
            ));
        }
        let p = raw.clamp(self.min_probability, self.max_probability);
        let p =
            Probability::new(p).map_err(|e| AlgorithmError::InvalidParameters(e.to_string()))?;
        // Exactly one draw per decision, so a replay from the stored seed repeats it.
        Ok(ActionChoice::draw(p, rng))
    }

    /// P(a = 1) for state `x` (of the policy's length) before clipping: P(x'γ > 0) under the
    /// posterior of γ. NaN when x'm_γ or x'S_γγx overflows (a state far too large for the
    /// posterior).
    fn treatment_probability(&self, x: &[f64]) -> f64 {
        let location = dot(x, &self.effect_mean);
        let variance = self.effect_covariance.quadratic_form(x);
        if !(location.is_finite() && variance.is_finite()) {
            f64::NAN
        } else if variance > 0.0 {
            normal_cdf(location / variance.sqrt())
        } else if location > 0.0 {
            // No uncertainty left along x (or rounding made it a hair negative): the sign of
            // the mean decides.
            1.0
        } else if location < 0.0 {
            0.0
        } else {
            0.5
        }
    }
}

/// Reads an n×n matrix of finite numbers, without the symmetric positive-definite checks.
fn read_matrix_shape(
    value: Option<&Value>,
    key: &str,
    n: usize,
    reason: &str,
) -> Result<Matrix, AlgorithmError> {
    let fail = || {
        AlgorithmError::InvalidParameters(format!(
            "{key} must be a list of {n} rows of {n} numbers each ({reason})"
        ))
    };
    let rows = value.and_then(Value::as_array).ok_or_else(fail)?;
    let parsed = rows
        .iter()
        .map(|row| {
            row.as_array()
                .and_then(|r| {
                    r.iter()
                        .map(|v| v.as_f64().filter(|x| x.is_finite()))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(fail)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Matrix::from_rows(&parsed)
        .filter(|m| m.size() == n)
        .ok_or_else(fail)
}

/// Everything the parameters hold, with every rule checked.
#[derive(Debug, Clone, PartialEq)]
struct Parameters {
    policy: Policy,
    prior: Prior,
    n: u64,
}

impl Parameters {
    fn read(values: &Value) -> Result<Self, AlgorithmError> {
        let fail: Fail = AlgorithmError::InvalidParameters;
        let policy = Policy::read(values)?;
        // Read the covariance again, now with the symmetric positive-definite checks.
        read_covariance(
            values.get("covariance"),
            "covariance",
            policy.mean.len(),
            &length_reason(&policy.rules),
            fail,
        )?;
        let prior = Prior::from_parameters(values.get("prior"), &policy.rules)?;
        let n = values
            .get("n")
            .and_then(Value::as_u64)
            .ok_or_else(|| fail("n must be a non-negative whole number".into()))?;
        Ok(Self { policy, prior, n })
    }

    fn to_json(&self) -> Value {
        let mut values = json!({
            "features": self.policy.rules.features,
            "min_probability": self.policy.min_probability,
            "max_probability": self.policy.max_probability,
            "prior": self.prior.to_json(),
            "mean": self.policy.mean,
            "covariance": self.policy.covariance.rows(),
            "n": self.n,
        });
        if let Some(object) = values.as_object_mut() {
            self.policy.rules.write(object);
        }
        values
    }
}

/// The sufficient statistics of the study data: A = Σ φφ', b = Σ φ r and the record count,
/// with φ(x, a) = [x, a·x].
struct Statistics {
    gram: Matrix,
    moment: Vec<f64>,
    n: u64,
}

impl Statistics {
    fn new(coefficients: usize) -> Self {
        Self {
            gram: Matrix::zeros(coefficients),
            moment: vec![0.0; coefficients],
            n: 0,
        }
    }

    fn add(&mut self, record: &StudyRecord) -> Result<(), AlgorithmError> {
        let x = record.state.values();
        let d = self.moment.len() / 2;
        if x.len() != d {
            return Err(AlgorithmError::UpdateFailed(format!(
                "the study record of user {} at decision_idx {} has a state of {} numbers; the \
                 model needs {d} (the intercept, the features and any missing indicators)",
                record.user_id,
                record.decision_idx.get(),
                x.len(),
            )));
        }
        if !record.reward.is_finite() {
            return Err(AlgorithmError::UpdateFailed(format!(
                "the study record of user {} at decision_idx {} has a reward that is not a \
                 finite number",
                record.user_id,
                record.decision_idx.get()
            )));
        }
        let treated = match record.action {
            Action::One => 1.0,
            Action::Zero => 0.0,
        };
        let phi: Vec<f64> = x
            .iter()
            .copied()
            .chain(x.iter().map(|v| treated * v))
            .collect();
        self.gram.add_outer(&phi, 1.0);
        for (b, p) in self.moment.iter_mut().zip(&phi) {
            *b += p * record.reward;
        }
        self.n += 1;
        Ok(())
    }
}

/// The posterior mean and covariance of θ given the prior and the statistics:
/// P = Σ0⁻¹ + A/σ², Σn = P⁻¹, μn = Σn (Σ0⁻¹ μ0 + b/σ²).
fn posterior(prior: &Prior, stats: &Statistics) -> Result<(Vec<f64>, Matrix), AlgorithmError> {
    if stats.n == 0 {
        // Nothing learnt: the prior itself, exactly, rather than a round trip through inverses.
        return Ok((prior.mean.clone(), prior.covariance.clone()));
    }
    let prior_factor = Cholesky::new(&prior.covariance).ok_or_else(|| {
        AlgorithmError::InvalidParameters("prior.covariance must be positive definite".into())
    })?;
    let prior_precision = prior_factor.inverse();
    let inverse_noise = 1.0 / prior.noise_variance;
    let precision = prior_precision.plus_scaled(&stats.gram, inverse_noise);
    let factor = Cholesky::new(&precision).ok_or_else(|| {
        AlgorithmError::UpdateFailed(
            "the posterior precision is not positive definite: the study data holds states or \
             rewards too large to compute with"
                .into(),
        )
    })?;
    let rhs: Vec<f64> = prior_factor
        .solve(&prior.mean)
        .iter()
        .zip(&stats.moment)
        .map(|(p, b)| p + b * inverse_noise)
        .collect();
    let mean = factor.solve(&rhs);
    let covariance = factor.inverse();
    if !(mean.iter().all(|v| v.is_finite()) && covariance.is_finite()) {
        return Err(AlgorithmError::UpdateFailed(
            "the posterior holds a non-finite number: the study data holds states or rewards \
             too large to compute with"
                .into(),
        ));
    }
    Ok((mean, covariance))
}

/// The client-facing message for a context or outcome (`kind`) without `key`.
fn missing(kind: &str, key: &str) -> AlgorithmError {
    AlgorithmError::InvalidInput(format!("Invalid {kind}. {key} is required."))
}

/// Reads a required numeric field of a context or outcome, with the client-facing messages.
fn number_field(object: &JsonObject, key: &str, kind: &str) -> Result<f64, AlgorithmError> {
    match object.get(key) {
        None | Some(Value::Null) => Err(missing(kind, key)),
        Some(v) => context_number(v, key),
    }
}

/// A present value of field `key` as a number, with the client-facing message.
fn context_number(value: &Value, key: &str) -> Result<f64, AlgorithmError> {
    value
        .as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| AlgorithmError::InvalidInput(format!("{key} must be a float or int.")))
}

impl Algorithm for Thompson {
    fn name(&self) -> &str {
        NAME
    }

    fn initial_parameters(&self, priors: &JsonObject) -> Result<Value, AlgorithmError> {
        let rules = self.rules.clone().with_prior_means(priors)?;
        let prior = Prior::from_config(priors, &rules)?;
        let parameters = Parameters {
            policy: Policy {
                rules,
                min_probability: self.min_probability,
                max_probability: self.max_probability,
                mean: prior.mean.clone(),
                covariance: prior.covariance.clone(),
            },
            prior,
            n: 0,
        };
        Ok(parameters.to_json())
    }

    /// The state with every missing value refused, whatever the rules say (the service asks
    /// [`Algorithm::prepare_state`], which follows them); an imputed feature's indicator is
    /// there, at 0.
    fn make_state(&self, context: &JsonObject) -> Result<State, AlgorithmError> {
        match self.rules.make(context, None)? {
            justin_core::Prepared::State(state) => Ok(state),
            justin_core::Prepared::NotAvailable(_) => Err(AlgorithmError::InvalidParameters(
                "a state with every missing value refused cannot be not available".into(),
            )),
        }
    }

    fn prepare_state(
        &self,
        context: &JsonObject,
        parameters: &Value,
    ) -> Result<justin_core::Prepared, AlgorithmError> {
        // The configured rules are every stored version's (`validate_parameters` refuses
        // others); only a mean imputation reads the version's means. A decision pays for no
        // parse of the parameters here: `prepare_policy` reads them once per version.
        self.rules.make(context, Some(parameters))
    }

    fn get_action(
        &self,
        _user: &UserId,
        state: &State,
        parameters: &Value,
        _decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        Drawing::new(Policy::read(parameters)?).draw(state, rng)
    }

    /// The version's `Drawing`, read once: the service keeps it for the version's draws.
    fn prepare_policy(&self, parameters: &Value) -> Option<PreparedPolicy> {
        let drawing = Drawing::new(Policy::read(parameters).ok()?);
        Some(Arc::new(drawing))
    }

    fn get_action_prepared(
        &self,
        user: &UserId,
        state: &State,
        policy: &(dyn Any + Send + Sync),
        parameters: &Value,
        decision_idx: DecisionIdx,
        rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        match policy.downcast_ref::<Drawing>() {
            Some(drawing) => drawing.draw(state, rng),
            // Not prepared by `prepare_policy`: read the parameters as without one.
            None => self.get_action(user, state, parameters, decision_idx, rng),
        }
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        number_field(outcome, &self.reward, "outcome")
    }

    fn check_context_names(&self, context: &Value) -> Result<(), AlgorithmError> {
        let needed = self
            .rules
            .features
            .iter()
            .enumerate()
            .filter(|(i, _)| self.rules.refuses(*i));
        match needed.map(|(_, f)| f).find(|f| !names(context, f)) {
            Some(feature) => Err(missing("context", feature)),
            None => Ok(()),
        }
    }

    fn check_outcome_names(&self, outcome: &Value) -> Result<(), AlgorithmError> {
        if names(outcome, &self.reward) {
            Ok(())
        } else {
            Err(missing("outcome", &self.reward))
        }
    }

    fn update(
        &self,
        current: &Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<Value, AlgorithmError> {
        let current = Parameters::read(current)?;
        let mut stats = Statistics::new(current.prior.mean.len());
        let mut means = MeanSums::new(&current.policy.rules);
        for record in data {
            stats.add(&record)?;
            means.add(record.state.values());
        }
        let (mean, covariance) = posterior(&current.prior, &stats)?;
        let next = Parameters {
            policy: Policy {
                rules: means.apply(current.policy.rules.clone()),
                mean,
                covariance,
                ..current.policy
            },
            prior: current.prior,
            n: stats.n,
        };
        Ok(next.to_json())
    }

    // Counts only: the posterior is computed from participants' states and rewards.
    fn describe_change(&self, _current: &Value, next: &Value) -> String {
        Parameters::read(next).map_or_else(
            |_| String::new(),
            |next| {
                format!(
                    "posterior over {} coefficients from {} records",
                    next.policy.mean.len(),
                    next.n
                )
            },
        )
    }

    fn analysis(&self) -> Option<&dyn AnalysisModel> {
        Some(self)
    }

    fn clip_bounds(&self) -> Option<(f64, f64)> {
        Some((self.min_probability, self.max_probability))
    }

    fn validate_parameters(&self, values: &Value) -> Result<(), AlgorithmError> {
        let parameters = Parameters::read(values)?;
        let policy = &parameters.policy;
        if policy.rules.features != self.rules.features {
            return Err(AlgorithmError::InvalidParameters(format!(
                "the parameters were made for features {:?}, but algorithm.options.features is \
                 {:?}; the features cannot change within a study: configure {:?} again, or \
                 start a new study (a new database, or make reset-db)",
                policy.rules.features, self.rules.features, policy.rules.features
            )));
        }
        if !policy.rules.same_rules(&self.rules) {
            return Err(AlgorithmError::InvalidParameters(
                "the parameters were made with other rules for missing values than \
                 algorithm.options.missing gives; the rules cannot change within a study (they \
                 shape the state): configure the old ones again, or start a new study (a new \
                 database, or make reset-db)"
                    .into(),
            ));
        }
        if (policy.min_probability, policy.max_probability)
            != (self.min_probability, self.max_probability)
        {
            return Err(AlgorithmError::InvalidParameters(format!(
                "the parameters clip P(action = 1) to [{}, {}], but algorithm.options says [{}, \
                 {}]; the clip bounds cannot change within a study: configure the old bounds \
                 again, or start a new study (a new database, or make reset-db)",
                policy.min_probability,
                policy.max_probability,
                self.min_probability,
                self.max_probability
            )));
        }
        Ok(())
    }
}

/// The name of the analysis function giving P(action = 1) (analysis/functions/).
pub const ACTION_PROB_FUNCTION: &str = "thompson_action1_prob";
/// The name of the update's estimating function (analysis/functions/).
pub const UPDATE_FUNCTION: &str = "thompson_update_estimating";

/// The precision (inverse covariance) of a positive-definite covariance, exactly symmetric.
fn precision_of(covariance: &Matrix, key: &str) -> Result<Matrix, AlgorithmError> {
    Cholesky::new(covariance)
        .map(|f| f.inverse())
        .ok_or_else(|| {
            AlgorithmError::InvalidParameters(format!("{key} must be positive definite"))
        })
}

/// thompson in an adaptivity-aware analysis (lifejacket's; docs/algorithms.md).
///
/// - Covariates: the state, `intercept` then one per feature, then one per imputed feature's
///   missing indicator (`<feature>_missing`), named so when every name is usable as a column
///   ([`usable_covariate_name`], distinct, and not `intercept`), else `x1`, `x2`, ... in
///   state order. An imputed value is a covariate like an observed one: the analysis sees the
///   state the decision was drawn from.
/// - β: the posterior mean μ (k = 2(1 + features) numbers: the base coefficients, then the
///   treatment effects), then the lower triangle, row by row, of L, the Cholesky factor of the
///   posterior precision P = covariance⁻¹, with its diagonal as logarithms: k + k(k+1)/2
///   numbers. The covariance enters P(action = 1) and depends on the data, so it is part of β.
/// - Constants: `bounds` [min_probability, max_probability], `prior_mean` μ0, `prior_precision`
///   Σ0⁻¹ (k × k) and `noise_variance` σ².
/// - P(action = 1) = available · (drawn_by_policy · clip(Φ(x'm_γ / √(x'S_γγx)), bounds) +
///   (1 − drawn_by_policy) · recorded_prob), with m_γ, S_γγ the treatment block of μ and P⁻¹.
/// - The update, per participant i with rows φ = [x, a·x] (Φ_i) and rewards r_i, among n
///   participants who gave it rows: ψ_i = [Φ_i'(Φ_iμ − r_i)/σ² + Σ0⁻¹(μ − μ0)/n ;
///   vech(Φ_i'Φ_i/σ² + (Σ0⁻¹ − LL')/n)], vech the lower triangle row by row. Summed over the
///   participants it is Pμ − (Σ0⁻¹μ0 + b/σ²) and P − LL', zero at the update's posterior.
impl AnalysisModel for Thompson {
    fn covariate_names(&self) -> Vec<String> {
        let features = &self.rules.features;
        let indicators: Vec<String> = features
            .iter()
            .enumerate()
            .filter(|(i, _)| matches!(self.rules.missing[*i], missing::Missing::Impute(_)))
            .map(|(_, f)| format!("{f}_missing"))
            .collect();
        let all: Vec<&String> = features.iter().chain(&indicators).collect();
        let distinct = all.iter().collect::<BTreeSet<_>>().len() == all.len();
        let named = distinct
            && all
                .iter()
                .all(|f| usable_covariate_name(f) && f.as_str() != "intercept");
        std::iter::once("intercept".to_owned())
            .chain(all.iter().enumerate().map(|(i, f)| {
                if named {
                    (*f).clone()
                } else {
                    format!("x{}", i + 1)
                }
            }))
            .collect()
    }

    fn covariates(&self, state: &State) -> Result<Vec<f64>, AlgorithmError> {
        let d = self.rules.dimension();
        if state.values().len() == d {
            Ok(state.values().to_vec())
        } else {
            Err(AlgorithmError::InvalidInput(format!(
                "the state has {} numbers; {NAME} with features {:?} makes {d} (the intercept, \
                 the features and any missing indicators)",
                state.values().len(),
                self.rules.features
            )))
        }
    }

    fn beta(&self, parameters: &Value) -> Result<Vec<f64>, AlgorithmError> {
        let parameters = Parameters::read(parameters)?;
        let policy = &parameters.policy;
        let precision = precision_of(&policy.covariance, "covariance")?;
        let factor = Cholesky::new(&precision).ok_or_else(|| {
            AlgorithmError::InvalidParameters(
                "the posterior precision (the inverse of covariance) is not positive definite \
                 in floating point"
                    .into(),
            )
        })?;
        let lower = factor.lower();
        let k = policy.mean.len();
        let mut beta = Vec::with_capacity(k + k * (k + 1) / 2);
        beta.extend_from_slice(&policy.mean);
        for i in 0..k {
            for j in 0..=i {
                let v = lower.get(i, j);
                beta.push(if i == j { v.ln() } else { v });
            }
        }
        Ok(beta)
    }

    fn beta_names(&self, parameters: &Value) -> Result<Vec<String>, AlgorithmError> {
        let parameters = Parameters::read(parameters)?;
        let k = parameters.policy.mean.len();
        let covariates = self.covariate_names();
        let mut names: Vec<String> = covariates
            .iter()
            .map(|c| format!("mu_base_{c}"))
            .chain(covariates.iter().map(|c| format!("mu_treat_{c}")))
            .collect();
        // Parameters of other features would have another k; the covariates name this one's.
        names.truncate(k);
        for i in 0..k {
            for j in 0..=i {
                names.push(if i == j {
                    format!("log_L_{i}_{j}")
                } else {
                    format!("L_{i}_{j}")
                });
            }
        }
        Ok(names)
    }

    fn constants(&self, parameters: &Value) -> Result<JsonObject, AlgorithmError> {
        let parameters = Parameters::read(parameters)?;
        let prior = &parameters.prior;
        let prior_precision = precision_of(&prior.covariance, "prior.covariance")?;
        let mut constants = JsonObject::new();
        constants.insert(
            "bounds".into(),
            json!([
                parameters.policy.min_probability,
                parameters.policy.max_probability
            ]),
        );
        constants.insert("prior_mean".into(), json!(prior.mean));
        constants.insert("prior_precision".into(), json!(prior_precision.rows()));
        constants.insert("noise_variance".into(), json!(prior.noise_variance));
        Ok(constants)
    }

    fn action_prob_function(&self) -> AnalysisFunction {
        AnalysisFunction {
            name: ACTION_PROB_FUNCTION.into(),
            args: vec![
                ArgSpec::new("beta", ArgSource::Beta),
                ArgSpec::new("x", ArgSource::Covariates),
                ArgSpec::new(
                    "bounds",
                    ArgSource::Constant {
                        key: "bounds".into(),
                    },
                ),
                ArgSpec::new("available", ArgSource::Available),
                ArgSpec::new("drawn_by_policy", ArgSource::DrawnByPolicy),
                ArgSpec::new("recorded_prob", ArgSource::RecordedProb),
            ],
        }
    }

    fn update_function(&self) -> (AnalysisFunction, UpdateFunctionKind) {
        let constant = |key: &str| ArgSpec::new(key, ArgSource::Constant { key: key.into() });
        (
            AnalysisFunction {
                name: UPDATE_FUNCTION.into(),
                args: vec![
                    ArgSpec::new("beta", ArgSource::Beta),
                    ArgSpec::new("xs", ArgSource::UpdateCovariates),
                    ArgSpec::new("actions", ArgSource::UpdateActions),
                    ArgSpec::new("rewards", ArgSource::UpdateRewards),
                    constant("prior_mean"),
                    constant("prior_precision"),
                    constant("noise_variance"),
                    ArgSpec::new("n_participants", ArgSource::UpdateParticipants),
                ],
            },
            UpdateFunctionKind::Estimating,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use justin_core::Prepared;

    fn obj(v: Value) -> JsonObject {
        v.as_object().cloned().unwrap()
    }

    fn thompson(options: Value) -> Thompson {
        Thompson::from_options(&obj(options)).unwrap()
    }

    fn user() -> UserId {
        UserId::parse("u").unwrap()
    }

    /// A study record as an upload would store it.
    fn record(state: &[f64], action: i64, reward: f64) -> StudyRecord {
        serde_json::from_value(json!({
            "user_id": "u",
            "decision_idx": 3,
            "requested_at": "2025-01-01T12:00:00Z",
            "sent_timestamp": "2025-01-01T12:00:00",
            "received_at": "2025-01-01T12:00:01Z",
            "context": {},
            "action": action,
            "action_prob": 0.5,
            "state": state,
            "outcome": {},
            "reward": reward,
        }))
        .unwrap()
    }

    fn update(algo: &Thompson, current: &Value, records: Vec<StudyRecord>) -> Value {
        algo.update(current, &mut records.into_iter()).unwrap()
    }

    fn numbers(v: &Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-12, "{actual:?} vs {expected:?}");
        }
    }

    fn assert_matrix(actual: &Value, expected: &[&[f64]]) {
        let rows = actual.as_array().unwrap();
        assert_eq!(rows.len(), expected.len());
        for (row, want) in rows.iter().zip(expected) {
            assert_close(&numbers(row), want);
        }
    }

    fn probability(algo: &Thompson, parameters: &Value, state: &[f64]) -> f64 {
        let state = State::new(state.to_vec()).unwrap();
        let idx = DecisionIdx::new(0).unwrap();
        let mut rng = DecisionRng::from_seed(1);
        algo.get_action(&user(), &state, parameters, idx, &mut rng)
            .unwrap()
            .action_prob
            .get()
    }

    /// No features (x = [1], θ = [β0, γ0]), prior N(0, I₂), σ² = 1, and two records:
    /// (a = 1, r = 1) with φ = [1, 1] and (a = 0, r = 0) with φ = [1, 0].
    /// A = [[1,1],[1,1]] + [[1,0],[0,0]] = [[2,1],[1,1]], b = 1·[1,1] + 0·[1,0] = [1,1].
    /// P = I + A = [[3,1],[1,2]], det P = 5, Σn = P⁻¹ = 1/5 [[2,-1],[-1,3]],
    /// μn = Σn (0 + b) = 1/5 [2 - 1, -1 + 3] = [0.2, 0.4].
    /// P(a = 1) = Φ(0.4 / √0.6) = Φ(0.516397779494322...) = 0.697211691832326826...
    fn intercept_only() -> (Thompson, Value) {
        let algo = thompson(json!({ "features": [] }));
        let prior = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        let posterior = update(
            &algo,
            &prior,
            vec![record(&[1.0], 1, 1.0), record(&[1.0], 0, 0.0)],
        );
        (algo, posterior)
    }

    #[test]
    fn posterior_without_features_matches_hand_computation() {
        let (algo, posterior) = intercept_only();
        assert_close(&numbers(&posterior["mean"]), &[0.2, 0.4]);
        assert_matrix(&posterior["covariance"], &[&[0.4, -0.2], &[-0.2, 0.6]]);
        assert_eq!(posterior["n"], json!(2));
        let p = probability(&algo, &posterior, &[1.0]);
        assert!((p - 0.697_211_691_832_326_8).abs() < 1e-12, "{p}");
    }

    /// One feature, steps: x = [1, steps], θ = [β0, β1, γ0, γ1].
    /// Prior: μ0 = [0, 0, 1, 0], Σ0 = 2·I (Σ0⁻¹ = I/2), σ² = 1/2 (1/σ² = 2).
    /// Records: steps 1, a = 1, r = 2 → φ = [1, 1, 1, 1];
    ///          steps 2, a = 0, r = 1 → φ = [1, 2, 0, 0].
    /// A = (all ones) + [[1,2,0,0],[2,4,0,0],0,0] = [[2,3,1,1],[3,5,1,1],[1,1,1,1],[1,1,1,1]],
    /// b = 2·[1,1,1,1] + 1·[1,2,0,0] = [3,4,2,2].
    /// P = I/2 + 2A = [[9/2,6,2,2],[6,21/2,2,2],[2,2,5/2,2],[2,2,2,5/2]],
    /// right-hand side Σ0⁻¹μ0 + 2b = [0,0,1/2,0] + [6,8,4,4] = [6,8,9/2,4].
    /// Solve P μ = rhs for μ = [u, v, g, h]: row 3 − row 4 gives (g − h)/2 = 1/2, so g − h = 1;
    /// with s = g + h, rows 1, 2 and 3 + 4 read 9/2 u + 6v + 2s = 6, 6u + 21/2 v + 2s = 8 and
    /// 4u + 4v + 9/2 s = 17/2, whose solution is u = 56/213, v = 76/213, s = 285/213
    /// (check row 1: (9/2·56 + 6·76 + 2·285)/213 = 1278/213 = 6). So g = 83/71, h = 12/71.
    /// Σn = P⁻¹ = 1/213 [[314,-152,-72,-72],[-152,98,24,24],[-72,24,258,-168],[-72,24,-168,258]]
    /// (check: row 1 of P times column 1 is (9/2·314 − 6·152 − 2·72 − 2·72)/213 = 1).
    /// At steps = −1: x'm_γ = 83/71 − 12/71 = 1 and x'S_γγx = (258 + 2·168 + 258)/213 = 4, so
    /// P(a = 1) = Φ(1/2) = 0.691462461274013103...; at steps = 1: x'm_γ = 95/71,
    /// x'S_γγx = (258 − 336 + 258)/213 = 60/71, P(a = 1) = Φ(1.4555221...) = 0.92723761255662761...
    #[test]
    fn posterior_with_a_feature_matches_hand_computation() {
        let algo = thompson(json!({
            "features": ["steps"], "min_probability": 0.05, "max_probability": 0.95
        }));
        let prior = algo
            .initial_parameters(&obj(json!({
                "mean": [0, 0, 1, 0], "variance": 2, "noise_variance": 0.5
            })))
            .unwrap();
        let posterior = update(
            &algo,
            &prior,
            vec![record(&[1.0, 1.0], 1, 2.0), record(&[1.0, 2.0], 0, 1.0)],
        );
        let third = 1.0 / 213.0;
        assert_close(
            &numbers(&posterior["mean"]),
            &[56.0 * third, 76.0 * third, 83.0 / 71.0, 12.0 / 71.0],
        );
        let s = |v: f64| v * third;
        assert_matrix(
            &posterior["covariance"],
            &[
                &[s(314.0), s(-152.0), s(-72.0), s(-72.0)],
                &[s(-152.0), s(98.0), s(24.0), s(24.0)],
                &[s(-72.0), s(24.0), s(258.0), s(-168.0)],
                &[s(-72.0), s(24.0), s(-168.0), s(258.0)],
            ],
        );
        let low = probability(&algo, &posterior, &[1.0, -1.0]);
        assert!((low - 0.691_462_461_274_013_1).abs() < 1e-12, "{low}");
        let high = probability(&algo, &posterior, &[1.0, 1.0]);
        assert!((high - 0.927_237_612_556_627_6).abs() < 1e-12, "{high}");
        // The prior and the settings travel unchanged.
        assert_eq!(posterior["prior"], prior["prior"]);
        assert_eq!(posterior["features"], json!(["steps"]));
        assert_eq!(posterior["max_probability"], json!(0.95));
        assert!(algo.validate_parameters(&posterior).is_ok());
    }

    #[test]
    fn initial_parameters_hold_settings_prior_and_posterior() {
        let algo = thompson(json!({ "features": ["steps"] }));
        let values = algo
            .initial_parameters(&obj(json!({ "variance": 0.5, "noise_variance": 2 })))
            .unwrap();
        let identity_half = json!([
            [0.5, 0.0, 0.0, 0.0],
            [0.0, 0.5, 0.0, 0.0],
            [0.0, 0.0, 0.5, 0.0],
            [0.0, 0.0, 0.0, 0.5]
        ]);
        assert_eq!(
            values,
            json!({
                "features": ["steps"],
                "min_probability": 0.2,
                "max_probability": 0.8,
                "prior": {
                    "mean": [0.0, 0.0, 0.0, 0.0],
                    "covariance": identity_half,
                    "noise_variance": 2.0,
                },
                "mean": [0.0, 0.0, 0.0, 0.0],
                "covariance": identity_half,
                "n": 0,
            })
        );
        assert!(algo.validate_parameters(&values).is_ok());
        // An explicit covariance is the same prior as a variance.
        let explicit = algo
            .initial_parameters(&obj(json!({
                "covariance": identity_half, "noise_variance": 2
            })))
            .unwrap();
        assert_eq!(explicit, values);
    }

    #[test]
    fn an_update_without_data_keeps_the_prior() {
        let (algo, _) = intercept_only();
        let prior = algo
            .initial_parameters(&obj(json!({ "variance": 3, "noise_variance": 1 })))
            .unwrap();
        assert_eq!(update(&algo, &prior, vec![]), prior);
    }

    #[test]
    fn an_update_does_not_count_the_data_twice() {
        let (algo, once) = intercept_only();
        let data = || vec![record(&[1.0], 1, 1.0), record(&[1.0], 0, 0.0)];
        // As the service does: every update streams all the data, starting from the stored
        // (serialised) current version.
        let stored: Value = serde_json::from_str(&once.to_string()).unwrap();
        let twice = update(&algo, &stored, data());
        assert_eq!(twice, once);
        // Adding data still moves it.
        let mut more = data();
        more.push(record(&[1.0], 1, 1.0));
        assert_ne!(update(&algo, &stored, more)["mean"], once["mean"]);
    }

    #[test]
    fn the_probability_is_clipped_to_the_bounds() {
        let algo = thompson(json!({ "features": [] }));
        let sure = |gamma: f64| {
            algo.initial_parameters(&obj(json!({
                "mean": [0, gamma], "variance": 1, "noise_variance": 1
            })))
            .unwrap()
        };
        // Φ(50) rounds to 1 and Φ(-50) to 0: the bounds, exactly.
        assert_eq!(probability(&algo, &sure(50.0), &[1.0]), 0.8);
        assert_eq!(probability(&algo, &sure(-50.0), &[1.0]), 0.2);
        assert_eq!(probability(&algo, &sure(0.0), &[1.0]), 0.5);
    }

    #[test]
    fn the_probability_stays_within_the_bounds_for_any_state() {
        let algo = thompson(json!({
            "features": ["a", "b"], "min_probability": 0.1, "max_probability": 0.7
        }));
        let prior = algo
            .initial_parameters(&obj(json!({ "variance": 4, "noise_variance": 1 })))
            .unwrap();
        let mut rng = DecisionRng::from_seed(99);
        let mut scaled = |scale: f64| (rng.uniform() - 0.5) * scale;
        let records: Vec<_> = (0..200)
            .map(|i| record(&[1.0, scaled(10.0), scaled(10.0)], i % 2, scaled(20.0)))
            .collect();
        let posterior = update(&algo, &prior, records);
        let (mut at_bounds, mut inside) = (0, 0);
        for _ in 0..2000 {
            let p = probability(&algo, &posterior, &[1.0, scaled(100.0), scaled(100.0)]);
            assert!((0.1..=0.7).contains(&p), "{p}");
            if p == 0.1 || p == 0.7 {
                at_bounds += 1;
            } else {
                inside += 1;
            }
        }
        // Both sides of the clip are exercised.
        assert!(at_bounds > 0 && inside > 0, "{at_bounds} {inside}");
    }

    #[test]
    fn no_uncertainty_left_lets_the_sign_decide() {
        let algo = thompson(json!({
            "features": ["f"], "min_probability": 0, "max_probability": 1
        }));
        // Only γ1 is uncertain; along x = [1, 0] the variance of x'γ is zero.
        let mut values = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        values["covariance"] = json!([
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 1.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0]
        ]);
        for (gamma0, expected) in [(0.3, 1.0), (-0.3, 0.0), (0.0, 0.5)] {
            values["mean"] = json!([0.0, 0.0, gamma0, 0.0]);
            assert_eq!(probability(&algo, &values, &[1.0, 0.0]), expected);
        }
    }

    #[test]
    fn a_replay_repeats_the_draw_bit_for_bit() {
        let (algo, posterior) = intercept_only();
        let state = State::new(vec![1.0]).unwrap();
        let idx = DecisionIdx::new(5).unwrap();
        for seed in 0..100 {
            let mut first = DecisionRng::from_seed(seed);
            let mut again = DecisionRng::from_seed(seed);
            let a = algo
                .get_action(&user(), &state, &posterior, idx, &mut first)
                .unwrap();
            let b = algo
                .get_action(&user(), &state, &posterior, idx, &mut again)
                .unwrap();
            assert_eq!(a.action, b.action);
            assert_eq!(a.action_prob.get().to_bits(), b.action_prob.get().to_bits());
            // Exactly one uniform draw was taken: the next one is a fresh generator's second.
            let mut fresh = DecisionRng::from_seed(seed);
            let drawn = fresh.uniform();
            assert_eq!(first.uniform().to_bits(), fresh.uniform().to_bits());
            assert_eq!(a.action == Action::One, drawn < a.action_prob.get());
        }
    }

    #[test]
    fn draws_follow_the_probability() {
        let (algo, posterior) = intercept_only();
        let state = State::new(vec![1.0]).unwrap();
        let idx = DecisionIdx::new(0).unwrap();
        let n = 20_000;
        let ones = (0..n)
            .filter(|seed| {
                let mut rng = DecisionRng::from_seed(*seed);
                let choice = algo
                    .get_action(&user(), &state, &posterior, idx, &mut rng)
                    .unwrap();
                choice.action == Action::One
            })
            .count();
        let share = ones as f64 / n as f64;
        // p ≈ 0.6972; the standard error over 20 000 draws is about 0.0033.
        assert!((share - 0.697_2).abs() < 0.015, "share of ones {share}");
    }

    /// Ten features and a posterior from 300 records of made-up data: a dense covariance,
    /// and probabilities on both sides of the clip bounds.
    fn ten_features() -> (Thompson, Value) {
        let features: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        let algo = thompson(json!({ "features": features }));
        let prior = algo
            .initial_parameters(&obj(json!({ "variance": 4, "noise_variance": 1 })))
            .unwrap();
        let mut data = DecisionRng::from_seed(7);
        let records = (0..300)
            .map(|i| {
                let mut x = vec![1.0];
                x.extend((0..10).map(|_| 4.0 * data.uniform() - 2.0));
                let action = i % 2;
                let effect = if action == 1 { x[1] - 0.5 * x[2] } else { 0.0 };
                record(&x, action, x[3] + effect + data.uniform() - 0.5)
            })
            .collect();
        let posterior = update(&algo, &prior, records);
        (algo, posterior)
    }

    /// What `get_action` draws and the next number of the generator after it (the same
    /// number of draws taken), or its error.
    fn draw_with(
        draw: impl Fn(&mut DecisionRng) -> Result<ActionChoice, AlgorithmError>,
        seed: u64,
    ) -> Result<(Action, u64, u64), AlgorithmError> {
        let mut rng = DecisionRng::from_seed(seed);
        let choice = draw(&mut rng)?;
        Ok((
            choice.action,
            choice.action_prob.get().to_bits(),
            rng.uniform().to_bits(),
        ))
    }

    #[test]
    fn a_prepared_policy_draws_what_the_parameters_draw_bit_for_bit() {
        let (intercept, intercept_posterior) = intercept_only();
        let (missing, missing_params) = with_missing_rules();
        let (ten, ten_posterior) = ten_features();
        let idx = DecisionIdx::new(9).unwrap();
        let mut values = DecisionRng::from_seed(11);
        let mut clipped = [0, 0];
        for (algo, params, width) in [
            (&intercept, &intercept_posterior, 1),
            (&missing, &missing_params, 7),
            (&ten, &ten_posterior, 11),
        ] {
            let policy = algo.prepare_policy(params).unwrap();
            let mut states: Vec<Vec<f64>> = (0..200)
                .map(|_| {
                    let mut x = vec![1.0];
                    x.extend((1..width).map(|_| 6.0 * values.uniform() - 3.0));
                    x
                })
                .collect();
            // A state of the wrong length, and one too large for the posterior.
            states.push(vec![1.0; width + 1]);
            states.push(vec![1e300; width]);
            for (seed, x) in states.iter().enumerate() {
                let state = State::new(x.clone()).unwrap();
                let seed = seed as u64;
                let plain = draw_with(
                    |rng| algo.get_action(&user(), &state, params, idx, rng),
                    seed,
                );
                let prepared = draw_with(
                    |rng| {
                        algo.get_action_prepared(&user(), &state, policy.as_ref(), params, idx, rng)
                    },
                    seed,
                );
                assert_eq!(plain, prepared, "state {x:?}");
                if let Ok((_, bits, _)) = plain {
                    let p = f64::from_bits(bits);
                    clipped[0] += usize::from(p == DEFAULT_MIN_PROBABILITY);
                    clipped[1] += usize::from(p == DEFAULT_MAX_PROBABILITY);
                }
            }
        }
        assert!(clipped[0] > 0 && clipped[1] > 0, "{clipped:?}");
    }

    #[test]
    fn parameters_of_another_shape_are_not_prepared() {
        let (algo, posterior) = ten_features();
        let mut short = posterior.clone();
        short["mean"] = json!([0.0, 1.0]);
        assert!(algo.prepare_policy(&short).is_none());
        // A policy of another type is not used: the parameters are read instead.
        let state = State::new(vec![1.0; 11]).unwrap();
        let idx = DecisionIdx::new(0).unwrap();
        let foreign: PreparedPolicy = Arc::new(0.5_f64);
        let plain = draw_with(
            |rng| algo.get_action(&user(), &state, &posterior, idx, rng),
            3,
        );
        let through_foreign = draw_with(
            |rng| algo.get_action_prepared(&user(), &state, foreign.as_ref(), &posterior, idx, rng),
            3,
        );
        assert_eq!(plain, through_foreign);
    }

    #[test]
    fn the_state_is_the_intercept_then_the_features() {
        let algo = thompson(json!({ "features": ["steps", "mood"] }));
        let state = algo
            .make_state(&obj(json!({ "mood": -2.5, "steps": 1200, "other": "x" })))
            .unwrap();
        assert_eq!(state.values(), &[1.0, 1200.0, -2.5]);
        let intercept = thompson(json!({ "features": [] }));
        assert_eq!(
            intercept.make_state(&JsonObject::new()).unwrap().values(),
            &[1.0]
        );
    }

    /// `steps` imputed by 0, `mood` by its mean (2 in the priors), `sleep` not available,
    /// `hr` refused: x = [1, steps, mood, sleep, hr, steps missing, mood missing].
    fn with_missing_rules() -> (Thompson, Value) {
        let algo = thompson(json!({
            "features": ["steps", "mood", "sleep", "hr"],
            "missing": {
                "steps": { "impute": 0 },
                "mood": { "impute": "mean" },
                "sleep": "not_available",
                "hr": "refuse",
            },
        }));
        let params = algo
            .initial_parameters(&obj(json!({
                "variance": 1, "noise_variance": 1, "feature_means": { "mood": 2.0 }
            })))
            .unwrap();
        (algo, params)
    }

    fn prepared(algo: &Thompson, params: &Value, context: Value) -> Result<Prepared, String> {
        algo.prepare_state(&obj(context), params)
            .map_err(|e| e.to_string())
    }

    fn state(values: &[f64]) -> Prepared {
        Prepared::State(State::new(values.to_vec()).unwrap())
    }

    #[test]
    fn a_missing_value_follows_its_features_rule() {
        let (algo, params) = with_missing_rules();
        assert_eq!(params["missing"]["mood"], json!({ "impute": "mean" }));
        assert_eq!(params["feature_means"], json!({ "mood": 2.0 }));
        assert_eq!(numbers(&params["mean"]).len(), 2 * 7);

        let full = json!({ "steps": 10, "mood": 3, "sleep": 7, "hr": 60 });
        assert_eq!(
            prepared(&algo, &params, full),
            Ok(state(&[1.0, 10.0, 3.0, 7.0, 60.0, 0.0, 0.0]))
        );
        // Absent and null are both missing; each imputed value raises its indicator.
        assert_eq!(
            prepared(
                &algo,
                &params,
                json!({ "mood": null, "sleep": 7, "hr": 60 })
            ),
            Ok(state(&[1.0, 0.0, 2.0, 7.0, 60.0, 1.0, 1.0]))
        );
        assert_eq!(
            prepared(&algo, &params, json!({ "steps": 4, "mood": 1, "hr": 60 })),
            Ok(Prepared::NotAvailable("missing_context".into()))
        );
        // A refused value, missing or of the wrong type, wins over not available.
        assert_eq!(
            prepared(&algo, &params, json!({ "steps": 4, "mood": 1 })),
            Err("Invalid context. hr is required.".into())
        );
        assert_eq!(
            prepared(&algo, &params, json!({ "steps": "many", "hr": 60 })),
            Err("steps must be a float or int.".into())
        );
        // A context that lacks nothing needs nothing of the parameters; a mean does.
        let full = json!({ "steps": 10, "mood": 3, "sleep": 7, "hr": 60 });
        assert_eq!(
            prepared(&algo, &json!({}), full.clone()),
            Ok(state(&[1.0, 10.0, 3.0, 7.0, 60.0, 0.0, 0.0]))
        );
        assert_eq!(
            prepared(
                &algo,
                &json!({}),
                json!({ "steps": 10, "sleep": 7, "hr": 60 })
            ),
            Err("invalid parameters: feature_means.mood must be a number".into())
        );
        assert_eq!(
            algo.make_state(&obj(full)).unwrap().values(),
            [1.0, 10.0, 3.0, 7.0, 60.0, 0.0, 0.0]
        );
        // make_state refuses every missing value, as the template does.
        assert_eq!(
            algo.make_state(&obj(json!({ "mood": 1, "sleep": 7, "hr": 60 })))
                .unwrap_err()
                .to_string(),
            "Invalid context. steps is required."
        );
        // The names check asks only for the refused features.
        algo.check_context_names(&json!({ "hr": 1 })).unwrap();
        assert_eq!(
            algo.check_context_names(&json!({ "steps": 1 }))
                .unwrap_err()
                .to_string(),
            "Invalid context. hr is required."
        );
    }

    #[test]
    fn an_update_recomputes_the_mean_from_observed_values_only() {
        let (algo, params) = with_missing_rules();
        let records = vec![
            record(&[1.0, 5.0, 4.0, 7.0, 60.0, 0.0, 0.0], 1, 1.0),
            record(&[1.0, 0.0, 2.0, 7.0, 60.0, 1.0, 1.0], 0, 0.0),
            record(&[1.0, 5.0, 6.0, 7.0, 60.0, 0.0, 0.0], 0, 2.0),
        ];
        let next = update(&algo, &params, records);
        // (4 + 6) / 2: the imputed 2 does not count.
        assert_eq!(next["feature_means"], json!({ "mood": 5.0 }));
        algo.validate_parameters(&next).unwrap();
        assert_eq!(
            prepared(&algo, &next, json!({ "steps": 1, "sleep": 7, "hr": 60 })),
            Ok(state(&[1.0, 1.0, 5.0, 7.0, 60.0, 0.0, 1.0]))
        );
        // The version a decision was drawn from imputes as it did.
        assert_eq!(
            prepared(&algo, &params, json!({ "steps": 1, "sleep": 7, "hr": 60 })),
            Ok(state(&[1.0, 1.0, 2.0, 7.0, 60.0, 0.0, 1.0]))
        );
        // No observed value: the mean stays.
        let unseen = update(
            &algo,
            &params,
            vec![record(&[1.0, 0.0, 2.0, 7.0, 60.0, 1.0, 1.0], 0, 0.0)],
        );
        assert_eq!(unseen["feature_means"], json!({ "mood": 2.0 }));
        let p = probability(&algo, &next, &[1.0, 1.0, 5.0, 7.0, 60.0, 0.0, 1.0]);
        assert!((0.2..=0.8).contains(&p), "{p}");
    }

    #[test]
    fn missing_rules_are_checked() {
        let err = |options: Value| {
            Thompson::from_options(&obj(options))
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(json!({ "features": ["a"], "missing": { "b": "refuse" } })),
            "invalid algorithm.options: missing.b: \"b\" is not one of the features [\"a\"]"
        );
        assert_eq!(
            err(json!({ "features": ["a"], "missing": { "a": "skip" } })),
            "invalid algorithm.options: missing.a must be \"refuse\", \"not_available\", \
             { impute = <number> } or { impute = \"mean\" }"
        );
        assert!(
            err(json!({ "features": ["a"], "missing": { "a": { "impute": "median" } } }))
                .starts_with("invalid algorithm.options: missing.a must be")
        );
        assert!(err(json!({ "features": ["a"], "missing": ["a"] }))
            .starts_with("invalid algorithm.options: missing must be a table"));

        let algo = thompson(json!({ "features": ["a"], "missing": { "a": { "impute": "mean" } } }));
        let priors = |p: Value| algo.initial_parameters(&obj(p)).unwrap_err().to_string();
        assert_eq!(
            priors(json!({ "variance": 1, "noise_variance": 1 })),
            "invalid priors: feature_means.a is required (a number): the value imputed for a \
             missing a until an update computes the mean from the study data"
        );
        assert!(priors(json!({ "variance": 1, "noise_variance": 1,
                               "feature_means": { "a": 1, "b": 2 } }))
        .starts_with("invalid priors: feature_means.b: \"b\" is not a feature imputed"));
        // The prior's length counts the indicator: 2 × (1 + 1 + 1).
        assert!(priors(
            json!({ "mean": [0, 0, 0, 0], "variance": 1, "noise_variance": 1,
                               "feature_means": { "a": 1 } })
        )
        .contains("it needs 6 (2 × (1 + 1 features + 1 missing indicators) = 6"));

        // Other rules than the parameters': refused, like other features.
        let params = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1,
                                             "feature_means": { "a": 1 } })))
            .unwrap();
        let refusing = thompson(json!({ "features": ["a"] }));
        assert!(refusing
            .validate_parameters(&params)
            .unwrap_err()
            .to_string()
            .contains("other rules for missing values"));
    }

    #[test]
    fn without_rules_the_parameters_are_as_before() {
        let algo = thompson(json!({ "features": ["a"] }));
        let params = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        assert!(params.get("missing").is_none() && params.get("feature_means").is_none());
        assert_eq!(
            prepared(&algo, &params, json!({ "a": null })),
            Err("Invalid context. a is required.".into())
        );
    }

    #[test]
    fn the_analysis_names_the_indicators() {
        let (algo, _) = with_missing_rules();
        assert_eq!(
            algo.covariate_names(),
            [
                "intercept",
                "steps",
                "mood",
                "sleep",
                "hr",
                "steps_missing",
                "mood_missing"
            ]
        );
    }

    #[test]
    fn the_names_check_reports_the_first_missing_feature_and_reward_as_make_state_does() {
        let algo = thompson(json!({ "features": ["steps", "mood"], "reward": "steps_after" }));
        let context_names = |context: Value| algo.check_context_names(&context);
        assert!(context_names(json!({ "steps": "not checked here", "mood": 1 })).is_ok());
        for (context, missing) in [
            (json!({ "mood": 1 }), "steps"),
            (json!({ "steps": 1, "mood": null }), "mood"),
            (json!([]), "steps"),
            (json!("steps"), "mood"),
        ] {
            assert_eq!(
                context_names(context.clone()).unwrap_err().to_string(),
                format!("Invalid context. {missing} is required."),
                "{context}"
            );
        }
        assert!(algo
            .check_outcome_names(&json!({ "steps_after": 3 }))
            .is_ok());
        assert_eq!(
            algo.check_outcome_names(&json!({}))
                .unwrap_err()
                .to_string(),
            "Invalid outcome. steps_after is required."
        );
    }

    #[test]
    fn context_messages_name_the_field() {
        let algo = thompson(json!({ "features": ["steps", "mood"] }));
        let message = |context: Value| algo.make_state(&obj(context)).unwrap_err().to_string();
        assert_eq!(
            message(json!({ "mood": 1 })),
            "Invalid context. steps is required."
        );
        assert_eq!(
            message(json!({ "steps": null, "mood": 1 })),
            "Invalid context. steps is required."
        );
        assert_eq!(
            message(json!({ "steps": 1, "mood": "good" })),
            "mood must be a float or int."
        );
        assert_eq!(
            message(json!({ "steps": true, "mood": 1 })),
            "steps must be a float or int."
        );
        assert!(matches!(
            algo.make_state(&obj(json!({ "steps": [1], "mood": 1 }))),
            Err(AlgorithmError::InvalidInput(_))
        ));
    }

    #[test]
    fn a_state_too_large_for_the_posterior_is_refused() {
        let algo = thompson(json!({ "features": ["f"] }));
        let prior = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        // x'S_γγx = 1 + (1e200)² overflows to infinity.
        let state = State::new(vec![1.0, 1e200]).unwrap();
        let idx = DecisionIdx::new(0).unwrap();
        let err = algo
            .get_action(&user(), &state, &prior, idx, &mut DecisionRng::from_seed(1))
            .unwrap_err();
        assert_eq!(
            err,
            AlgorithmError::InvalidInput(
                "Invalid context. The features are too large to compute a probability.".into()
            )
        );
    }

    #[test]
    fn the_reward_is_the_configured_outcome_field() {
        let state = State::new(vec![1.0]).unwrap();
        let reward = |algo: &Thompson, outcome: Value| {
            algo.make_reward(&user(), &state, Action::One, &obj(outcome))
        };
        let default = thompson(json!({ "features": [] }));
        assert_eq!(reward(&default, json!({ "reward": 2.5 })), Ok(2.5));
        let steps = thompson(json!({ "features": [], "reward": "steps_after" }));
        assert_eq!(reward(&steps, json!({ "steps_after": 300 })), Ok(300.0));
        assert_eq!(
            reward(&steps, json!({ "reward": 1 }))
                .unwrap_err()
                .to_string(),
            "Invalid outcome. steps_after is required."
        );
        assert_eq!(
            reward(&steps, json!({ "steps_after": "many" }))
                .unwrap_err()
                .to_string(),
            "steps_after must be a float or int."
        );
    }

    fn options_error(options: Value) -> String {
        match Thompson::from_options(&obj(options)) {
            Err(e @ AlgorithmError::InvalidOptions(_)) => e.to_string(),
            other => panic!("expected InvalidOptions, got {other:?}"),
        }
    }

    #[test]
    fn options_are_checked() {
        let defaults = thompson(json!({ "features": ["a"] }));
        assert_eq!(defaults.reward, "reward");
        assert_eq!(
            (defaults.min_probability, defaults.max_probability),
            (0.2, 0.8)
        );
        assert_eq!(defaults.features(), ["a".to_owned()]);
        let cases = [
            (json!({}), "features is required"),
            (json!({ "features": "a" }), "features must be a list"),
            (
                json!({ "features": ["a", ""] }),
                "features[1] must be a non-empty string",
            ),
            (
                json!({ "features": [1] }),
                "features[0] must be a non-empty string",
            ),
            (
                json!({ "features": ["a", "b", "a"] }),
                "features lists \"a\" twice",
            ),
            (
                json!({ "features": [], "featurs": [] }),
                "unknown option \"featurs\"",
            ),
            (
                json!({ "features": [], "reward": "" }),
                "reward must be a non-empty string",
            ),
            (
                json!({ "features": [], "reward": 3 }),
                "reward must be a non-empty string",
            ),
            (
                json!({ "features": [], "min_probability": 0.9 }),
                "min_probability (0.9) must not exceed max_probability (0.8)",
            ),
            (
                json!({ "features": [], "max_probability": 1.5 }),
                "max_probability must be a number in [0, 1]",
            ),
            (
                json!({ "features": [], "min_probability": -0.1 }),
                "min_probability must be a number in [0, 1]",
            ),
            (
                json!({ "features": [], "min_probability": "0.1" }),
                "min_probability must be a number in [0, 1]",
            ),
        ];
        for (options, expected) in cases {
            let message = options_error(options.clone());
            assert!(
                message.starts_with("invalid algorithm.options: "),
                "{message}"
            );
            assert!(message.contains(expected), "{options}: {message}");
        }
        // The boundaries are accepted.
        let edges = thompson(json!({
            "features": [], "min_probability": 0, "max_probability": 0
        }));
        assert_eq!((edges.min_probability, edges.max_probability), (0.0, 0.0));
        assert!(Thompson::from_options(&obj(json!({
            "features": [], "min_probability": 0.3, "max_probability": 1
        })))
        .is_ok());
    }

    fn priors_error(algo: &Thompson, priors: Value) -> String {
        match algo.initial_parameters(&obj(priors)) {
            Err(e @ AlgorithmError::InvalidPriors(_)) => e.to_string(),
            other => panic!("expected InvalidPriors, got {other:?}"),
        }
    }

    #[test]
    fn priors_are_checked() {
        let algo = thompson(json!({ "features": ["steps"] }));
        let message = priors_error(
            &algo,
            json!({ "mean": [0, 0, 0], "variance": 1, "noise_variance": 1 }),
        );
        assert!(
            message.contains("mean has 3 numbers; it needs 4 (2 × (1 + 1 features) = 4"),
            "{message}"
        );
        let cases = [
            (json!({ "variance": 1 }), "noise_variance is required"),
            (
                json!({ "variance": 1, "noise_variance": -1 }),
                "noise_variance must be a positive number",
            ),
            (
                json!({ "variance": 1, "noise_variance": 0 }),
                "noise_variance must be a positive number",
            ),
            (
                json!({ "variance": 0, "noise_variance": 1 }),
                "variance must be a positive number",
            ),
            (
                json!({ "noise_variance": 1 }),
                "covariance (a 4×4 matrix) or variance",
            ),
            (
                json!({
                    "variance": 1, "noise_variance": 1,
                    "covariance": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
                }),
                "not both",
            ),
            (
                json!({ "covariance": [[1, 0], [0, 1]], "noise_variance": 1 }),
                "covariance must be a list of 4 rows of 4 numbers each",
            ),
            (
                json!({
                    "noise_variance": 1,
                    "covariance": [[1, 2, 0, 0], [2, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
                }),
                "covariance must be positive definite",
            ),
            (
                json!({
                    "noise_variance": 1,
                    "covariance": [[2, 1, 0, 0], [0.5, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
                }),
                "covariance must be symmetric: covariance[0][1] and covariance[1][0] differ",
            ),
            (
                json!({ "mean": [0, 0, "x", 0], "variance": 1, "noise_variance": 1 }),
                "mean[2] must be a number",
            ),
            (
                json!({ "probability_of_action": 0.5 }),
                "unknown prior \"probability_of_action\"",
            ),
        ];
        for (priors, expected) in cases {
            let message = priors_error(&algo, priors.clone());
            assert!(message.starts_with("invalid priors: "), "{message}");
            assert!(message.contains(expected), "{priors}: {message}");
        }
    }

    fn parameters_error(algo: &Thompson, values: &Value) -> String {
        match algo.validate_parameters(values) {
            Err(e @ AlgorithmError::InvalidParameters(_)) => e.to_string(),
            other => panic!("expected InvalidParameters, got {other:?}"),
        }
    }

    #[test]
    fn parameters_are_checked() {
        let algo = thompson(json!({ "features": ["steps"] }));
        let good = algo
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        assert!(algo.validate_parameters(&good).is_ok());
        let with = |key: &str, value: Value| {
            let mut v = good.clone();
            v[key] = value;
            v
        };
        let singular = json!([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]);
        let cases = [
            (
                with("mean", json!([0, 0, 0])),
                "mean has 3 numbers; it needs 4",
            ),
            (
                with("covariance", singular.clone()),
                "covariance must be positive definite",
            ),
            (
                with(
                    "covariance",
                    json!([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]),
                ),
                "covariance must be symmetric",
            ),
            (
                with("covariance", json!([[1]])),
                "covariance must be a list of 4 rows",
            ),
            (
                with("min_probability", json!(0.9)),
                "must not exceed max_probability",
            ),
            (
                with("max_probability", json!(1.2)),
                "max_probability must lie in [0, 1]",
            ),
            (
                with("n", json!(-1)),
                "n must be a non-negative whole number",
            ),
            (with("prior", json!(null)), "prior must be an object"),
            (
                with(
                    "prior",
                    json!({ "mean": [0, 0, 0, 0], "covariance": singular, "noise_variance": 1 }),
                ),
                "prior.covariance must be positive definite",
            ),
            (
                json!({ "probability_of_action": 0.5 }),
                "features is required",
            ),
        ];
        for (values, expected) in cases {
            let message = parameters_error(&algo, &values);
            assert!(message.contains(expected), "{values}: {message}");
        }
    }

    #[test]
    fn parameters_of_other_settings_are_refused_with_what_differs() {
        let old = thompson(json!({ "features": ["steps"] }));
        let values = old
            .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 1 })))
            .unwrap();
        let renamed = thompson(json!({ "features": ["mood"] }));
        let message = parameters_error(&renamed, &values);
        assert!(
            message.contains(
                "made for features [\"steps\"], but algorithm.options.features is [\"mood\"]"
            ),
            "{message}"
        );
        assert!(message.contains("start a new study"), "{message}");
        let reclipped = thompson(json!({ "features": ["steps"], "max_probability": 0.9 }));
        let message = parameters_error(&reclipped, &values);
        assert!(
            message.contains("[0.2, 0.8], but algorithm.options says [0.2, 0.9]"),
            "{message}"
        );
    }

    #[test]
    fn get_action_refuses_a_state_of_another_length() {
        let (algo, posterior) = intercept_only();
        let state = State::new(vec![1.0, 2.0]).unwrap();
        let idx = DecisionIdx::new(0).unwrap();
        let err = algo
            .get_action(
                &user(),
                &state,
                &posterior,
                idx,
                &mut DecisionRng::from_seed(1),
            )
            .unwrap_err();
        assert_eq!(
            err,
            AlgorithmError::InvalidParameters(
                "the parameters are for 1 state values (the intercept, features [] and 0 \
                 missing indicators), but the state has 2"
                    .into()
            )
        );
        let foreign = json!({ "probability_of_action": 0.5 });
        assert!(matches!(
            algo.get_action(
                &user(),
                &state,
                &foreign,
                idx,
                &mut DecisionRng::from_seed(1)
            ),
            Err(AlgorithmError::InvalidParameters(_))
        ));
    }

    #[test]
    fn update_names_the_record_that_does_not_fit() {
        let (algo, posterior) = intercept_only();
        let mut records = vec![record(&[1.0], 1, 1.0), record(&[1.0, 5.0], 0, 0.0)].into_iter();
        let err = algo.update(&posterior, &mut records).unwrap_err();
        assert_eq!(
            err,
            AlgorithmError::UpdateFailed(
                "the study record of user u at decision_idx 3 has a state of 2 numbers; the \
                 model needs 1 (the intercept, the features and any missing indicators)"
                    .into()
            )
        );
        let foreign = json!({ "probability_of_action": 0.5 });
        assert!(matches!(
            algo.update(&foreign, &mut std::iter::empty()),
            Err(AlgorithmError::InvalidParameters(_))
        ));
    }

    /// A record of participant `user` with state `x`.
    fn record_of(user: &str, x: &[f64], action: i64, reward: f64) -> StudyRecord {
        let mut r = record(x, action, reward);
        r.user_id = UserId::parse(user).unwrap();
        r
    }

    /// A two-feature study: three participants, uneven rows, a prior that is not the identity.
    fn study() -> (Thompson, Value, Vec<StudyRecord>, Value) {
        let algo = thompson(json!({ "features": ["steps", "mood"] }));
        let prior = algo
            .initial_parameters(&obj(json!({
                "mean": [0.1, 0, 0, 0.5, 0, 0],
                "covariance": [
                    [2.0, 0.3, 0, 0, 0, 0], [0.3, 1.0, 0, 0, 0, 0], [0, 0, 1.5, 0, 0.2, 0],
                    [0, 0, 0, 1.0, 0, 0], [0, 0, 0.2, 0, 1.0, 0], [0, 0, 0, 0, 0, 3.0]
                ],
                "noise_variance": 0.7
            })))
            .unwrap();
        let mut rng = DecisionRng::from_seed(7);
        let mut u = || rng.uniform() - 0.5;
        let mut rows = Vec::new();
        for (user, n) in [("a", 5), ("b", 1), ("c", 9)] {
            for _ in 0..n {
                let x = [1.0, 4.0 * u(), 2.0 * u()];
                let a = i64::from(u() > 0.0);
                let r = x[1] + f64::from(u8::try_from(a).unwrap()) * (0.5 + x[2]) + u();
                rows.push(record_of(user, &x, a, r));
            }
        }
        let posterior = update(&algo, &prior, rows.clone());
        (algo, prior, rows, posterior)
    }

    fn matrix_of(v: &Value) -> Matrix {
        let rows: Vec<Vec<f64>> = v.as_array().unwrap().iter().map(numbers).collect();
        Matrix::from_rows(&rows).unwrap()
    }

    /// μ and L (with its diagonal exponentiated back) from β.
    fn unpack(beta: &[f64], k: usize) -> (Vec<f64>, Matrix) {
        assert_eq!(beta.len(), k + k * (k + 1) / 2);
        let mut l = Matrix::zeros(k);
        let mut at = k;
        for i in 0..k {
            for j in 0..=i {
                l.set(i, j, if i == j { beta[at].exp() } else { beta[at] });
                at += 1;
            }
        }
        (beta[..k].to_vec(), l)
    }

    fn l_lt(l: &Matrix) -> Matrix {
        let k = l.size();
        let mut p = Matrix::zeros(k);
        for i in 0..k {
            for j in 0..k {
                p.set(i, j, (0..k).map(|m| l.get(i, m) * l.get(j, m)).sum());
            }
        }
        p
    }

    #[test]
    fn beta_rebuilds_the_posterior_mean_and_covariance() {
        let (algo, prior, _, posterior) = study();
        let model = algo.analysis().unwrap();
        for values in [&prior, &posterior] {
            let beta = model.beta(values).unwrap();
            let names = model.beta_names(values).unwrap();
            assert_eq!(names.len(), beta.len());
            assert_eq!(names[0], "mu_base_intercept");
            assert_eq!(names[5], "mu_treat_mood");
            assert_eq!(names[6], "log_L_0_0");
            assert_eq!(names[7], "L_1_0");
            let (mu, l) = unpack(&beta, 6);
            assert_eq!(mu, numbers(&values["mean"]));
            let covariance = Cholesky::new(&l_lt(&l)).unwrap().inverse();
            let stored = matrix_of(&values["covariance"]);
            for i in 0..6 {
                for j in 0..6 {
                    let (a, b) = (covariance.get(i, j), stored.get(i, j));
                    assert!(
                        (a - b).abs() <= 1e-12 * (1.0 + b.abs()),
                        "{i},{j}: {a} vs {b}"
                    );
                }
            }
        }
        assert!(matches!(
            model.beta(&json!({ "probability_of_action": 0.5 })),
            Err(AlgorithmError::InvalidParameters(_))
        ));
    }

    /// ψ_i of ISSUE16 §4 / docs/algorithms.md, as the JAX function computes it.
    fn estimating(beta: &[f64], rows: &[&StudyRecord], constants: &JsonObject, n: f64) -> Vec<f64> {
        let prior_mean = numbers(&constants["prior_mean"]);
        let prior_precision = matrix_of(&constants["prior_precision"]);
        let sigma2 = constants["noise_variance"].as_f64().unwrap();
        let k = prior_mean.len();
        let (mu, l) = unpack(beta, k);
        let mut gram = Matrix::zeros(k);
        let mut first = vec![0.0; k];
        for r in rows {
            let x = r.state.values();
            let a = if r.action == Action::One { 1.0 } else { 0.0 };
            let phi: Vec<f64> = x.iter().copied().chain(x.iter().map(|v| a * v)).collect();
            let residual = dot(&phi, &mu) - r.reward;
            for (f, p) in first.iter_mut().zip(&phi) {
                *f += p * residual / sigma2;
            }
            gram.add_outer(&phi, 1.0 / sigma2);
        }
        let shift: Vec<f64> = mu.iter().zip(&prior_mean).map(|(m, m0)| m - m0).collect();
        for (f, p) in first.iter_mut().zip(prior_precision.mul_vec(&shift)) {
            *f += p / n;
        }
        let llt = l_lt(&l);
        let mut out = first;
        for i in 0..k {
            for j in 0..=i {
                out.push(gram.get(i, j) + (prior_precision.get(i, j) - llt.get(i, j)) / n);
            }
        }
        out
    }

    #[test]
    fn the_estimating_function_sums_to_zero_at_the_updates_beta() {
        let (algo, _, rows, posterior) = study();
        let model = algo.analysis().unwrap();
        let beta = model.beta(&posterior).unwrap();
        let constants = model.constants(&posterior).unwrap();
        let users = ["a", "b", "c"];
        let per_user: Vec<Vec<&StudyRecord>> = users
            .iter()
            .map(|u| rows.iter().filter(|r| r.user_id.as_str() == *u).collect())
            .collect();
        let n = 3.0;
        let mut total = vec![0.0; beta.len()];
        let mut scale = 0.0_f64;
        for own in &per_user {
            let psi = estimating(&beta, own, &constants, n);
            for (t, p) in total.iter_mut().zip(&psi) {
                *t += p;
                scale = scale.max(p.abs());
            }
        }
        assert!(scale > 1.0, "each participant's term is not zero: {scale}");
        for (i, t) in total.iter().enumerate() {
            assert!(t.abs() < 1e-9 * scale, "entry {i}: {t} (scale {scale})");
        }
        // At another β (the prior's), the sum is not zero: the check has teeth.
        let prior_beta = model
            .beta(
                &algo
                    .initial_parameters(&obj(json!({ "variance": 1, "noise_variance": 0.7 })))
                    .unwrap(),
            )
            .unwrap();
        let off: f64 = per_user
            .iter()
            .map(|own| estimating(&prior_beta, own, &constants, n)[0])
            .sum();
        assert!(off.abs() > 1e-3, "{off}");
    }

    #[test]
    fn the_analysis_names_its_covariates_constants_and_functions() {
        let (algo, prior, _, _) = study();
        let model = algo.analysis().unwrap();
        assert_eq!(model.covariate_names(), ["intercept", "steps", "mood"]);
        let state = State::new(vec![1.0, 2.0, 3.0]).unwrap();
        assert_eq!(model.covariates(&state).unwrap(), [1.0, 2.0, 3.0]);
        assert!(matches!(
            model.covariates(&State::new(vec![]).unwrap()),
            Err(AlgorithmError::InvalidInput(_))
        ));
        // A feature name that cannot be a column turns every covariate into x1, x2, ...
        for odd in [
            json!(["steps", "step count"]),
            json!(["reward", "mood"]),
            json!(["class", "b"]),
        ] {
            let other = thompson(json!({ "features": odd }));
            assert_eq!(
                other.analysis().unwrap().covariate_names(),
                ["intercept", "x1", "x2"],
                "{odd}"
            );
        }
        let constants = model.constants(&prior).unwrap();
        assert_eq!(constants["bounds"], json!([0.2, 0.8]));
        assert_eq!(constants["noise_variance"], json!(0.7));
        assert_eq!(
            constants["prior_mean"],
            json!([0.1, 0.0, 0.0, 0.5, 0.0, 0.0])
        );
        let precision = matrix_of(&constants["prior_precision"]);
        assert!((precision.get(5, 5) - 1.0 / 3.0).abs() < 1e-15);
        let probability = model.action_prob_function();
        assert_eq!(
            serde_json::to_value(&probability).unwrap(),
            json!({
                "name": "thompson_action1_prob",
                "args": [
                    {"name": "beta", "source": "beta"},
                    {"name": "x", "source": "covariates"},
                    {"name": "bounds", "source": "constant", "key": "bounds"},
                    {"name": "available", "source": "available"},
                    {"name": "drawn_by_policy", "source": "drawn_by_policy"},
                    {"name": "recorded_prob", "source": "recorded_prob"},
                ]
            })
        );
        let (update, kind) = model.update_function();
        assert_eq!(kind, UpdateFunctionKind::Estimating);
        assert_eq!(update.name, "thompson_update_estimating");
        let names: Vec<_> = update.args.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "beta",
                "xs",
                "actions",
                "rewards",
                "prior_mean",
                "prior_precision",
                "noise_variance",
                "n_participants"
            ]
        );
    }

    /// The probability the analysis function computes from β, for a drawn decision.
    #[test]
    fn the_probability_from_beta_is_the_drawn_one() {
        let (algo, _, _, posterior) = study();
        let model = algo.analysis().unwrap();
        let beta = model.beta(&posterior).unwrap();
        let (mu, l) = unpack(&beta, 6);
        let covariance = Cholesky::new(&l_lt(&l)).unwrap().inverse();
        for x in [[1.0, 0.3, -0.2], [1.0, -1.5, 0.9], [1.0, 0.0, 0.0]] {
            let location = dot(&x, &mu[3..]);
            let variance = covariance.block(3, 3).quadratic_form(&x);
            let from_beta = normal_cdf(location / variance.sqrt()).clamp(0.2, 0.8);
            let drawn = probability(&algo, &posterior, &x);
            assert!((from_beta - drawn).abs() < 1e-12, "{from_beta} vs {drawn}");
        }
    }
}
