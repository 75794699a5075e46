//! The analysis hand-off: how an algorithm's parameters and data become the inputs of an
//! analysis that accounts for the algorithm's adaptivity (lifejacket's, see docs/analysis.md).
//!
//! Such an analysis recomputes every recorded probability and every update from a vector of
//! numbers per parameter version (lifejacket's β) with two functions the study's statistician
//! runs (written in JAX for lifejacket): the probability of action 1 for one decision, and the
//! update's per-participant loss or estimating function. An algorithm that can take part
//! implements [`AnalysisModel`] and returns it from
//! [`Algorithm::analysis`](crate::Algorithm::analysis): it says how a parameter version becomes
//! β and a few constants, how a decision's state becomes numeric covariates, and which
//! arguments, in which order, each of the two functions takes. The export writes those values
//! as plain files and an analysis tool builds the functions' arguments from them, without
//! knowing the algorithm.

use serde::Serialize;

use crate::algorithm::AlgorithmError;
use crate::domain::{JsonObject, State};

/// The fixed columns of the export's grid (`grid.csv` of `justin export --for lifejacket`), in
/// order; the covariate columns follow them. A covariate name must be none of these.
pub const GRID_COLUMNS: &[&str] = &[
    "user_id",
    "calendar_t",
    "scheduled_at",
    "decision_type",
    "in_study",
    "called",
    "decision_idx",
    "available",
    "action",
    "action1_prob",
    "parameter_version",
    "policy_num",
    "policy",
    "drawn_by_policy",
    "observed",
    "reward",
    "first_used_in_version",
    "has_state",
    "corrections",
];

/// Python's keywords, which cannot name a function's parameter.
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue",
    "def", "del", "elif", "else", "except", "finally", "for", "from", "global", "if", "import",
    "in", "is", "lambda", "nonlocal", "not", "or", "pass", "raise", "return", "try", "while",
    "with", "yield",
];

/// Whether `name` can be a covariate's name: an ASCII Python identifier (letters, digits and
/// `_`, not starting with a digit), not a Python keyword, and none of [`GRID_COLUMNS`] nor
/// `theta` (the name lifejacket gives the inference function's parameter).
pub fn usable_covariate_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && !PYTHON_KEYWORDS.contains(&name)
        && !GRID_COLUMNS.contains(&name)
        && name != "theta"
}

/// Where one argument of an analysis function comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum ArgSource {
    /// The parameter version's β ([`AnalysisModel::beta`]), a 1-D array. Both functions take it.
    Beta,
    /// A constant of the parameter version ([`AnalysisModel::constants`]) under `key`: a
    /// number, a list of numbers or a list of equally long lists of numbers.
    Constant {
        /// The constant's key.
        key: String,
    },
    /// (Probability function.) The decision's covariates, a 1-D array in
    /// [`AnalysisModel::covariate_names`] order.
    Covariates,
    /// (Probability function.) 1 when the decision was available for randomization, else 0.
    Available,
    /// (Probability function.) 1 when the algorithm's policy drew the decision's probability,
    /// 0 when it was fixed otherwise (warm-up, fallback, or made by the study server).
    DrawnByPolicy,
    /// (Probability function.) The probability of action 1 as recorded, which the function
    /// returns where [`ArgSource::DrawnByPolicy`] is 0.
    RecordedProb,
    /// (Update function.) The covariates of each of the participant's rows the update read, a
    /// 2-D array (rows × covariates).
    UpdateCovariates,
    /// (Update function.) The action of each of those rows, a 1-D array of 0 and 1.
    UpdateActions,
    /// (Update function.) The reward of each of those rows, a 1-D array.
    UpdateRewards,
    /// (Update function.) How many participants gave the update at least one row, a number.
    UpdateParticipants,
}

/// One argument of an analysis function: its name (a Python identifier) and where its value
/// comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgSpec {
    /// The argument's name in the function's signature.
    pub name: String,
    /// Where its value comes from.
    #[serde(flatten)]
    pub source: ArgSource,
}

impl ArgSpec {
    /// An argument named `name` from `source`.
    pub fn new(name: &str, source: ArgSource) -> Self {
        Self {
            name: name.to_owned(),
            source,
        }
    }
}

/// What an update function computes, for each participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateFunctionKind {
    /// A loss whose minimum over β is the update's β.
    Loss,
    /// An estimating function whose mean over participants is zero at the update's β.
    Estimating,
}

/// One analysis function: the name of the function (and of the file defining it, with `.py`)
/// and its arguments in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnalysisFunction {
    /// The function's name, also its file's name without `.py`.
    pub name: String,
    /// Its arguments, in order.
    pub args: Vec<ArgSpec>,
}

/// How an algorithm's parameters and data become an adaptivity-aware analysis's inputs.
///
/// Every method but [`AnalysisModel::covariates`] depends on the algorithm's configuration
/// only, or on one stored parameter version; none sees participants' data except through the
/// covariates of a state.
pub trait AnalysisModel: Send + Sync + std::fmt::Debug {
    /// The names of the numeric covariates a state becomes, in order. Each MUST pass
    /// [`usable_covariate_name`] and be distinct: they become column names of the analysis
    /// table.
    fn covariate_names(&self) -> Vec<String>;

    /// A decision's state as numeric covariates, as many as [`AnalysisModel::covariate_names`].
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidInput`] when the state does not have the algorithm's shape.
    fn covariates(&self, state: &State) -> Result<Vec<f64>, AlgorithmError>;

    /// The parameter version as the analysis's parameter vector β: every number that decides
    /// the probabilities the version gives and that its update estimates.
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidParameters`] when `parameters` are not of this algorithm's
    /// shape.
    fn beta(&self, parameters: &serde_json::Value) -> Result<Vec<f64>, AlgorithmError>;

    /// The names of β's entries, as many as [`AnalysisModel::beta`] returns, for people
    /// reading the export.
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidParameters`] when `parameters` are not of this algorithm's
    /// shape.
    fn beta_names(&self, parameters: &serde_json::Value) -> Result<Vec<String>, AlgorithmError>;

    /// The parameter version's constants that the functions take besides β (clip bounds,
    /// prior, noise variance...), by key: numbers, lists of numbers or lists of lists.
    ///
    /// # Errors
    /// [`AlgorithmError::InvalidParameters`] when `parameters` are not of this algorithm's
    /// shape.
    fn constants(&self, parameters: &serde_json::Value) -> Result<JsonObject, AlgorithmError>;

    /// The function giving P(action = 1) for one decision, reproducing the recorded
    /// probability of every decision (within 1e-6).
    fn action_prob_function(&self) -> AnalysisFunction;

    /// The update's per-participant function, and whether it is a loss or an estimating
    /// function. For every update, β of the version it produced MUST minimise the mean loss
    /// over participants, or root the mean estimating function, given each participant's rows
    /// the update read.
    fn update_function(&self) -> (AnalysisFunction, UpdateFunctionKind);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covariate_names_are_python_identifiers_apart_from_the_grids_columns() {
        for good in ["steps", "_x", "mood2", "Temperature", "match"] {
            assert!(usable_covariate_name(good), "{good}");
        }
        for bad in [
            "",
            "2x",
            "step count",
            "café",
            "class",
            "reward",
            "user_id",
            "theta",
            "a-b",
        ] {
            assert!(!usable_covariate_name(bad), "{bad}");
        }
    }

    #[test]
    fn arg_specs_serialize_as_the_manifest_shows_them() {
        let specs = [
            ArgSpec::new("x", ArgSource::Covariates),
            ArgSpec::new(
                "bounds",
                ArgSource::Constant {
                    key: "bounds".into(),
                },
            ),
        ];
        assert_eq!(
            serde_json::to_value(specs).unwrap(),
            serde_json::json!([
                {"name": "x", "source": "covariates"},
                {"name": "bounds", "source": "constant", "key": "bounds"}
            ])
        );
    }
}
