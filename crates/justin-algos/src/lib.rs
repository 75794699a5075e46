//! Decision algorithms for JustIn, and the registry that builds one from the name given in
//! `algorithm.name` and the settings in `[algorithm.options]`. Each algorithm is a type
//! implementing [`justin_core::Algorithm`]; adding one means adding a module and a line in
//! [`build`], never a branch in the core.

use std::sync::Arc;

use justin_core::{Algorithm, AlgorithmError, JsonObject};

pub mod flat_prob;
pub mod thompson;

pub use flat_prob::FlatProb;
pub use thompson::Thompson;

/// The names of every algorithm this build knows.
pub const NAMES: &[&str] = &[flat_prob::NAME, thompson::NAME];

/// The algorithm registered under `name`, built with `options` (`[algorithm.options]`), or
/// `None` when no algorithm has that name.
///
/// # Errors
/// `Some(Err(AlgorithmError::InvalidOptions))` when the algorithm refuses the options.
pub fn build(
    name: &str,
    options: &JsonObject,
) -> Option<Result<Arc<dyn Algorithm>, AlgorithmError>> {
    fn shared<A: Algorithm + 'static>(
        built: Result<A, AlgorithmError>,
    ) -> Result<Arc<dyn Algorithm>, AlgorithmError> {
        built.map(|a| Arc::new(a) as Arc<dyn Algorithm>)
    }
    match name {
        flat_prob::NAME => Some(shared(FlatProb::from_options(options))),
        thompson::NAME => Some(shared(Thompson::from_options(options))),
        _ => None,
    }
}

/// [`build`] with no options: `None` exactly when the name is unknown, so it serves to check
/// a name. An algorithm that needs options (such as `thompson`) answers `Some(Err(..))`.
pub fn by_name(name: &str) -> Option<Result<Arc<dyn Algorithm>, AlgorithmError>> {
    build(name, &JsonObject::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The least each algorithm needs to be built.
    fn minimal_options(name: &str) -> JsonObject {
        let options = match name {
            thompson::NAME => json!({ "features": [] }),
            _ => json!({}),
        };
        options.as_object().cloned().unwrap()
    }

    #[test]
    fn every_listed_name_builds_itself() {
        for name in NAMES {
            let algorithm = build(name, &minimal_options(name)).unwrap().unwrap();
            assert_eq!(algorithm.name(), *name);
            assert!(by_name(name).is_some(), "{name} is known without options");
        }
        assert!(build("no_such_algorithm", &JsonObject::new()).is_none());
        assert!(by_name("no_such_algorithm").is_none());
    }

    #[test]
    fn options_reach_the_algorithm() {
        assert!(by_name(flat_prob::NAME).unwrap().is_ok());
        let err = by_name(thompson::NAME).unwrap().unwrap_err();
        assert!(matches!(err, AlgorithmError::InvalidOptions(_)));
        assert!(err.to_string().contains("features is required"), "{err}");
        let options = json!({ "temperature": 1 }).as_object().cloned().unwrap();
        let err = build(flat_prob::NAME, &options).unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid algorithm.options: flat_prob takes no options; remove \"temperature\""
        );
    }
}
