//! The algorithms a service can run, by name: the open end of the [`Algorithm`] extension
//! point. A service binary hands a [`Registry`] to its entry point; the configuration's
//! `algorithm.name` picks one entry, whose constructor builds the algorithm from
//! `[algorithm.options]`. An algorithm crate outside this workspace registers itself the same
//! way the built-in ones do, so every place that lists names (the configuration check, the
//! message naming the known algorithms, the log routing of an algorithm's records) treats it
//! exactly as it treats them.

use std::sync::Arc;

use crate::algorithm::{Algorithm, AlgorithmError};
use crate::domain::JsonObject;

/// Builds an algorithm from the `[algorithm.options]` table.
///
/// It MUST return [`AlgorithmError::InvalidOptions`] naming the option and what is expected
/// when an option is unknown, missing or out of range. A closure that captures nothing
/// coerces to this type: `|options| Ok(Arc::new(MyAlgorithm::from_options(options)?))`.
pub type Constructor = fn(&JsonObject) -> Result<Arc<dyn Algorithm>, AlgorithmError>;

/// One algorithm a registry can build: its name, where its log records come from, and its
/// constructor.
#[derive(Debug, Clone)]
pub struct Registration {
    name: String,
    log_target: String,
    build: Constructor,
}

impl Registration {
    /// The algorithm named `name` (what `algorithm.name` selects, and what the built
    /// algorithm's [`Algorithm::name`] must return), whose log records have the target
    /// `log_target` or one under it (`log_target::...`): pass `module_path!()` from the
    /// algorithm's crate or module. Those records, and the service's own records about the
    /// policy, go to `rl.log`.
    pub fn new(name: impl Into<String>, log_target: impl Into<String>, build: Constructor) -> Self {
        Self {
            name: name.into(),
            log_target: log_target.into(),
            build,
        }
    }

    /// The name it is registered under.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log target its records come from.
    pub fn log_target(&self) -> &str {
        &self.log_target
    }
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is registered already: `algorithm.name` could not say which one is meant.
    #[error(
        "two algorithms are registered as {0:?}; each algorithm needs a name of its own \
         (rename one of them: the name is what algorithm.name selects)"
    )]
    Duplicate(String),
    /// The name is empty.
    #[error("an algorithm is registered with an empty name; algorithm.name could not select it")]
    EmptyName,
    /// The log target is empty, which would route every record of the service to `rl.log`.
    #[error(
        "the algorithm {0:?} is registered with an empty log target; give the module path its \
         log records come from (module_path!())"
    )]
    EmptyLogTarget(String),
}

/// Why a registry could not build the algorithm a configuration names.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BuildError {
    /// No algorithm is registered under the name.
    #[error("unknown algorithm {name:?}; {}", known_list(.known))]
    Unknown {
        /// The name asked for.
        name: String,
        /// Every registered name, in registration order.
        known: Vec<String>,
    },
    /// The constructor refused the options (or failed otherwise).
    #[error(transparent)]
    Refused(#[from] AlgorithmError),
    /// The algorithm built calls itself by another name than it is registered under. The
    /// name is stored with every parameter version and compared at start-up, so the two
    /// must agree.
    #[error(
        "the algorithm registered as {registered:?} says its name is {reported:?}; \
         Algorithm::name must return the name it is registered under"
    )]
    Misnamed {
        /// The name it is registered under.
        registered: String,
        /// What its [`Algorithm::name`] returned.
        reported: String,
    },
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        "no algorithm is registered".to_owned()
    } else {
        format!("known: {}", known.join(", "))
    }
}

/// The algorithms a service can run, in the order they were registered.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: Vec<Registration>,
}

impl Registry {
    /// A registry with no algorithms.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an algorithm.
    ///
    /// # Errors
    /// [`RegistryError::Duplicate`] when an algorithm of that name is registered already
    /// (the registry is unchanged), [`RegistryError::EmptyName`] or
    /// [`RegistryError::EmptyLogTarget`] when the name or the log target is empty.
    pub fn register(&mut self, registration: Registration) -> Result<(), RegistryError> {
        if registration.name.is_empty() {
            return Err(RegistryError::EmptyName);
        }
        if registration.log_target.is_empty() {
            return Err(RegistryError::EmptyLogTarget(registration.name));
        }
        if self.get(&registration.name).is_some() {
            return Err(RegistryError::Duplicate(registration.name));
        }
        self.entries.push(registration);
        Ok(())
    }

    /// The registration of `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Registration> {
        self.entries.iter().find(|entry| entry.name == name)
    }

    /// Every registered name, in registration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(Registration::name)
    }

    /// Every registered algorithm's log target, in registration order.
    pub fn log_targets(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(Registration::log_target)
    }

    /// Builds the algorithm registered as `name` with `options` (`[algorithm.options]`).
    ///
    /// # Errors
    /// [`BuildError::Unknown`] when no algorithm has that name, [`BuildError::Refused`] when
    /// its constructor refuses the options, [`BuildError::Misnamed`] when the algorithm built
    /// reports another name.
    pub fn build(
        &self,
        name: &str,
        options: &JsonObject,
    ) -> Result<Arc<dyn Algorithm>, BuildError> {
        let Some(entry) = self.get(name) else {
            return Err(BuildError::Unknown {
                name: name.to_owned(),
                known: self.names().map(str::to_owned).collect(),
            });
        };
        let algorithm = (entry.build)(options)?;
        if algorithm.name() != entry.name {
            return Err(BuildError::Misnamed {
                registered: entry.name.clone(),
                reported: algorithm.name().to_owned(),
            });
        }
        Ok(algorithm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::ActionChoice;
    use crate::domain::{Action, DecisionIdx, Probability, State, StudyRecord, UserId};
    use crate::rng::DecisionRng;
    use serde_json::{json, Value};

    /// An algorithm whose name is the one option it takes, so one constructor can stand for
    /// algorithms of any name.
    #[derive(Debug)]
    struct Named(String);

    impl Algorithm for Named {
        fn name(&self) -> &str {
            &self.0
        }
        fn initial_parameters(&self, _: &JsonObject) -> Result<Value, AlgorithmError> {
            Ok(json!({}))
        }
        fn make_state(&self, _: &JsonObject) -> Result<State, AlgorithmError> {
            State::new(vec![]).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
        }
        fn get_action(
            &self,
            _: &UserId,
            _: &State,
            _: &Value,
            _: DecisionIdx,
            rng: &mut DecisionRng,
        ) -> Result<ActionChoice, AlgorithmError> {
            let half = Probability::new(0.5)
                .map_err(|e| AlgorithmError::InvalidParameters(e.to_string()))?;
            Ok(ActionChoice::draw(half, rng))
        }
        fn make_reward(
            &self,
            _: &UserId,
            _: &State,
            _: Action,
            _: &JsonObject,
        ) -> Result<f64, AlgorithmError> {
            Ok(0.0)
        }
        fn update(
            &self,
            current: &Value,
            _: &mut dyn Iterator<Item = StudyRecord>,
        ) -> Result<Value, AlgorithmError> {
            Ok(current.clone())
        }
    }

    /// Builds [`Named`] with the name in the `name` option; no option is refused.
    fn named(options: &JsonObject) -> Result<Arc<dyn Algorithm>, AlgorithmError> {
        match options.get("name").and_then(Value::as_str) {
            Some(name) => Ok(Arc::new(Named(name.to_owned()))),
            None => Err(AlgorithmError::InvalidOptions("name is required".into())),
        }
    }

    fn options(name: &str) -> JsonObject {
        json!({ "name": name }).as_object().cloned().unwrap()
    }

    fn two() -> Registry {
        let mut registry = Registry::new();
        registry
            .register(Registration::new("first", "crate_one", named))
            .unwrap();
        registry
            .register(Registration::new("second", "crate_two::algo", named))
            .unwrap();
        registry
    }

    #[test]
    fn names_and_log_targets_keep_the_registration_order() {
        let registry = two();
        assert_eq!(registry.names().collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(
            registry.log_targets().collect::<Vec<_>>(),
            ["crate_one", "crate_two::algo"]
        );
        assert_eq!(
            registry.get("second").unwrap().log_target(),
            "crate_two::algo"
        );
        assert!(registry.get("third").is_none());
    }

    #[test]
    fn the_named_algorithm_is_built_with_the_options() {
        let registry = two();
        let built = registry.build("second", &options("second")).unwrap();
        assert_eq!(built.name(), "second");
        let refused = registry.build("first", &JsonObject::new()).unwrap_err();
        assert_eq!(
            refused,
            BuildError::Refused(AlgorithmError::InvalidOptions("name is required".into()))
        );
        assert_eq!(
            refused.to_string(),
            "invalid algorithm.options: name is required"
        );
    }

    #[test]
    fn an_unknown_name_lists_the_known_ones() {
        let err = two().build("third", &options("third")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown algorithm \"third\"; known: first, second"
        );
        let err = Registry::new()
            .build("third", &JsonObject::new())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown algorithm \"third\"; no algorithm is registered"
        );
    }

    #[test]
    fn an_algorithm_must_answer_to_its_registered_name() {
        let err = two().build("first", &options("other")).unwrap_err();
        assert_eq!(
            err,
            BuildError::Misnamed {
                registered: "first".into(),
                reported: "other".into()
            }
        );
        assert!(err.to_string().contains("Algorithm::name"), "{err}");
    }

    #[test]
    fn a_duplicate_name_is_refused_and_the_first_stays() {
        let mut registry = two();
        let err = registry
            .register(Registration::new("first", "elsewhere", named))
            .unwrap_err();
        assert_eq!(err, RegistryError::Duplicate("first".into()));
        assert!(
            err.to_string()
                .starts_with("two algorithms are registered as \"first\""),
            "{err}"
        );
        assert_eq!(registry.names().collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(registry.get("first").unwrap().log_target(), "crate_one");
    }

    #[test]
    fn empty_names_and_log_targets_are_refused() {
        let mut registry = Registry::new();
        assert_eq!(
            registry.register(Registration::new("", "crate_one", named)),
            Err(RegistryError::EmptyName)
        );
        assert_eq!(
            registry.register(Registration::new("first", "", named)),
            Err(RegistryError::EmptyLogTarget("first".into()))
        );
        assert_eq!(registry.names().count(), 0);
    }
}
