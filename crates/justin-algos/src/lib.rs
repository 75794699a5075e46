//! The decision algorithms JustIn ships: `flat_prob`, the demonstration, and `thompson`,
//! Thompson sampling for a binary treatment. Each is a type implementing
//! [`justin_core::Algorithm`] with a [`Registration`] of its own; [`builtin`] is the registry
//! of both that the `justin` binary runs, and [`register_builtin`] adds them to a registry that
//! holds other algorithms too (an algorithm crate's own binary).

use justin_core::{Registration, Registry, RegistryError};

pub mod flat_prob;
pub mod thompson;

pub use flat_prob::FlatProb;
pub use thompson::Thompson;

/// The registration of every built-in algorithm, `flat_prob` first.
pub fn registrations() -> [Registration; 2] {
    [flat_prob::registration(), thompson::registration()]
}

/// Adds the built-in algorithms to `registry`.
///
/// # Errors
/// [`RegistryError::Duplicate`] when `registry` holds an algorithm of a built-in's name
/// already; the built-ins before it are added.
pub fn register_builtin(registry: &mut Registry) -> Result<(), RegistryError> {
    registrations()
        .into_iter()
        .try_for_each(|registration| registry.register(registration))
}

/// A registry of the built-in algorithms.
pub fn builtin() -> Registry {
    let mut registry = Registry::new();
    // An empty registry refuses a built-in only when two built-ins share a name, and theirs
    // differ (`builtin_holds_every_algorithm` checks it): nothing to report.
    register_builtin(&mut registry).ok();
    registry
}

#[cfg(test)]
mod tests {
    use super::*;
    use justin_core::{AlgorithmError, BuildError, JsonObject};
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
    fn builtin_holds_every_algorithm() {
        let registry = builtin();
        assert_eq!(
            registry.names().collect::<Vec<_>>(),
            [flat_prob::NAME, thompson::NAME]
        );
        for name in registry.names() {
            let algorithm = registry.build(name, &minimal_options(name)).unwrap();
            assert_eq!(algorithm.name(), name);
        }
        assert!(matches!(
            registry.build("no_such_algorithm", &JsonObject::new()),
            Err(BuildError::Unknown { .. })
        ));
    }

    #[test]
    fn records_of_each_algorithm_are_routed_by_its_module() {
        assert_eq!(
            builtin().log_targets().collect::<Vec<_>>(),
            ["justin_algos::flat_prob", "justin_algos::thompson"]
        );
    }

    #[test]
    fn a_registry_holding_a_builtin_name_refuses_the_builtins() {
        let mut registry = Registry::new();
        registry.register(thompson::registration()).unwrap();
        assert_eq!(
            register_builtin(&mut registry),
            Err(RegistryError::Duplicate(thompson::NAME.into()))
        );
    }

    #[test]
    fn options_reach_the_algorithm() {
        let registry = builtin();
        assert!(registry.build(flat_prob::NAME, &JsonObject::new()).is_ok());
        let err = registry
            .build(thompson::NAME, &JsonObject::new())
            .unwrap_err();
        assert!(matches!(
            err,
            BuildError::Refused(AlgorithmError::InvalidOptions(_))
        ));
        assert!(err.to_string().contains("features is required"), "{err}");
        let options = json!({ "temperature": 1 }).as_object().cloned().unwrap();
        let err = registry.build(flat_prob::NAME, &options).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid algorithm.options: flat_prob takes no options; remove \"temperature\""
        );
    }
}
