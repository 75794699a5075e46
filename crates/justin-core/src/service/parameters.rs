//! The parameter versions: installing the priors as version 1, and the in-memory copy of the
//! current version that decisions are drawn from.

use std::sync::{Arc, PoisonError};

use super::{DomainError, Service, RL_TARGET};
use crate::domain::{JsonObject, ModelParameters};

impl Service {
    /// Makes sure a parameter version exists: when the store has none, the priors become
    /// version 1. Loads the current version into memory.
    ///
    /// # Errors
    /// [`DomainError::Setup`] when the priors are invalid or the stored parameters belong to
    /// another algorithm than the configured one.
    pub fn initialise(&self, priors: &JsonObject) -> Result<ModelParameters, DomainError> {
        // The priors become a published policy too: the same checks apply.
        let values = self
            .algorithm
            .initial_parameters(priors)
            .and_then(|values| {
                super::updates::check_publishable(&values)?;
                self.algorithm.validate_parameters(&values)?;
                Ok(values)
            })
            .map_err(|e| DomainError::Setup(e.to_string()))?;
        let current =
            self.store
                .seed_parameters(self.algorithm.name(), &values, self.clock.now())?;
        if current.algorithm != self.algorithm.name() {
            return Err(DomainError::Setup(format!(
                "the database holds parameters of algorithm {:?} (version {}), but the configured algorithm is {:?}",
                current.algorithm,
                current.version,
                self.algorithm.name()
            )));
        }
        // Decisions are drawn from the stored version, so it must suit the algorithm as
        // configured now (its options may have changed since it was stored).
        self.algorithm
            .validate_parameters(&current.values)
            .map_err(|e| {
                DomainError::Setup(format!(
                    "the stored parameters (version {}) do not suit the configured algorithm: {e}",
                    current.version
                ))
            })?;
        log::info!(target: RL_TARGET, "{} parameters at version {}", current.algorithm, current.version);
        self.set_current(current.clone());
        Ok(current)
    }

    pub(super) fn set_current(&self, params: ModelParameters) {
        let mut slot = self.current.write().unwrap_or_else(PoisonError::into_inner);
        *slot = Some(Arc::new(params));
    }

    /// The parameters decisions are drawn from now.
    ///
    /// # Errors
    /// On storage failure, or [`DomainError::Setup`] when no version exists.
    pub fn current_parameters(&self) -> Result<Arc<ModelParameters>, DomainError> {
        if let Some(p) = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            return Ok(Arc::clone(p));
        }
        let loaded = self.store.current_parameters()?.ok_or_else(|| {
            DomainError::Setup(
                "no model parameters are stored; start the service once to install the priors"
                    .into(),
            )
        })?;
        self.set_current(loaded.clone());
        Ok(Arc::new(loaded))
    }

    /// Parameter version `version`.
    ///
    /// # Errors
    /// [`DomainError::ParametersNotFound`] when it does not exist.
    pub fn parameters(&self, version: i64) -> Result<ModelParameters, DomainError> {
        self.store
            .parameters(version)?
            .ok_or(DomainError::ParametersNotFound)
    }

    /// Reloads the current parameters from storage, so that a version published by another
    /// process is used here too. Returns the version now in force.
    ///
    /// # Errors
    /// On storage failure.
    pub fn refresh_parameters(&self) -> Result<i64, DomainError> {
        self.forget_current();
        Ok(self.current_parameters()?.version)
    }

    pub(super) fn forget_current(&self) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = None;
    }
}
