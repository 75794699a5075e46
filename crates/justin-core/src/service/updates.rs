//! Model updates: a request is recorded, and a worker claims the oldest unfinished one and runs
//! it to its end (backup, new parameters checked and stored with the request's completion,
//! callback). An update interrupted by a lost database is claimed again while
//! `update.max_attempts` allows; a failed one is stored as failed.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{error_chain, DomainError, Service, RL_TARGET};
use crate::algorithm::AlgorithmError;
use crate::domain::{Imputation, ImputedRewards, Provenance, UpdateRequest};
use std::time::Instant;

use crate::ports::{StoreError, UpdateEnd, UpdateJob, UpdateOutcome};

/// Refuses parameters that are not a JSON object (the API promises clients an object: the
/// OpenAPI document's `ParametersResponse.parameters`), or that hold null anywhere: serde_json
/// turns NaN and infinities into null, so a null is how a non-finite number shows.
pub(super) fn check_publishable(values: &serde_json::Value) -> Result<(), AlgorithmError> {
    fn has_null(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Null => true,
            serde_json::Value::Array(items) => items.iter().any(has_null),
            serde_json::Value::Object(map) => map.values().any(has_null),
            _ => false,
        }
    }
    if !values.is_object() {
        return Err(AlgorithmError::InvalidParameters(
            "the parameters are not a JSON object".into(),
        ));
    }
    if has_null(values) {
        return Err(AlgorithmError::InvalidParameters(
            "the new parameters hold a null or non-finite number".into(),
        ));
    }
    Ok(())
}

impl Service {
    /// Records a model update request. A worker runs it later with
    /// [`Service::run_next_update`], in this process or another sharing the database.
    ///
    /// # Errors
    /// On storage failure.
    pub fn request_update(
        &self,
        requested_at: DateTime<Utc>,
        sent_timestamp: String,
        callback_url: String,
    ) -> Result<UpdateRequest, DomainError> {
        let request = UpdateRequest::new(
            Uuid::new_v4(),
            requested_at,
            sent_timestamp,
            self.clock.now(),
            callback_url,
        );
        let created = self.store.create_update_request(&request);
        self.track_write(created.map_err(DomainError::from))?;
        Ok(request)
    }

    /// An update request and what became of it.
    ///
    /// # Errors
    /// [`DomainError::UpdateNotFound`] for an unknown id.
    pub fn update_request(&self, id: Uuid) -> Result<UpdateRequest, DomainError> {
        self.store
            .update_request(id)?
            .ok_or(DomainError::UpdateNotFound)
    }

    /// Claims the oldest unfinished update request and runs it to its end: backup, new
    /// parameters checked and published together with the request's completion, callback.
    /// Returns the request and how it ended, or `None` when there was nothing to run (or
    /// another worker holds the update lock, or the service is stopping).
    ///
    /// # Errors
    /// When the outcome itself cannot be stored, and [`DomainError::Unavailable`] when the
    /// database was lost during the update: the request then stays unfinished, this attempt
    /// counted, for a later call to claim again (see `update.max_attempts`). A failed update is an
    /// [`UpdateOutcome::Failed`], stored and sent to the callback.
    pub fn run_next_update(&self) -> Result<Option<(UpdateRequest, UpdateOutcome)>, DomainError> {
        if self.is_stopping() {
            return Ok(None);
        }
        let Some(job) = self.store.claim_update(self.clock.now())? else {
            return Ok(None);
        };
        let started = Instant::now();
        let mut rows_read = 0;
        let result = self.run_claimed(job, &mut rows_read);
        let end = match &result {
            Ok(Some((_, UpdateOutcome::Completed { .. }))) => UpdateEnd::Completed,
            Ok(Some((_, UpdateOutcome::Failed { .. }))) => UpdateEnd::Failed,
            Ok(Some((_, UpdateOutcome::Requeued))) => UpdateEnd::Requeued,
            // Claimed, so never `Ok(None)`; an error leaves the request unfinished.
            Ok(None) | Err(_) => UpdateEnd::Interrupted,
        };
        self.telemetry
            .update_ended(end, started.elapsed(), rows_read);
        result
    }

    /// Runs a claimed update to its end (see [`Service::run_next_update`]), counting the
    /// study records it reads into `rows_read`.
    fn run_claimed(
        &self,
        mut job: Box<dyn UpdateJob + '_>,
        rows_read: &mut u64,
    ) -> Result<Option<(UpdateRequest, UpdateOutcome)>, DomainError> {
        let request = job.request().clone();
        let outcome = if request.attempts > self.settings.update_attempts {
            let error = format!(
                "abandoned after {} interrupted attempts",
                request.attempts - 1
            );
            job.fail(&error, self.clock.now())?;
            UpdateOutcome::Failed { error }
        } else {
            match self.compute_update(job.as_mut(), rows_read) {
                Ok(None) => {
                    job.requeue()?;
                    log::info!(
                        target: RL_TARGET,
                        "update {} put back for the next start: the service is stopping; \
                         nothing it computed was stored",
                        request.id
                    );
                    return Ok(Some((
                        self.update_request(request.id)?,
                        UpdateOutcome::Requeued,
                    )));
                }
                Ok(Some((values, provenance, change))) => {
                    let published = job.complete(
                        self.algorithm.name(),
                        &values,
                        &provenance,
                        self.clock.now(),
                    )?;
                    // Only now, once stored, is the policy's change reported.
                    let change = if change.is_empty() {
                        String::new()
                    } else {
                        format!(": {change}")
                    };
                    log::info!(
                        target: RL_TARGET,
                        "update {} stored {} parameters version {} from {} records{change}",
                        request.id, published.algorithm, published.version, provenance.rows_read
                    );
                    let version = published.version;
                    self.set_current(published);
                    UpdateOutcome::Completed {
                        parameter_version: version,
                    }
                }
                // The database was lost (a restart, an outage): nothing says the update itself
                // is bad. Dropping the job rolls its transaction back and leaves the request
                // `processing` with this attempt counted, so a later poll claims it again
                // while `update.max_attempts` allows; no callback goes out.
                Err(e @ DomainError::Unavailable(_)) => {
                    drop(job);
                    log::warn!(
                        target: RL_TARGET,
                        "update {} interrupted (attempt {} of {}), to be claimed again: {}",
                        request.id,
                        request.attempts,
                        self.settings.update_attempts,
                        error_chain(&e)
                    );
                    return Err(e);
                }
                Err(e) => {
                    let error = error_chain(&e);
                    log::error!(target: RL_TARGET, "update {} failed: {error}", request.id);
                    job.fail(&error, self.clock.now())?;
                    UpdateOutcome::Failed { error }
                }
            }
        };
        let finished = self.update_request(request.id)?;
        self.deliver_callback(&finished)?;
        Ok(Some((finished, outcome)))
    }

    /// Computes and checks new parameters inside the job, with the algorithm's description of
    /// the change for the log once stored; nothing is stored or logged about them here.
    fn compute_update(
        &self,
        job: &mut dyn UpdateJob,
        rows_read: &mut u64,
    ) -> Result<Option<(serde_json::Value, Provenance, String)>, DomainError> {
        let backup_file = match &self.settings.backup_dir {
            Some(dir) => {
                let report = self.backup_to(dir)?;
                log::info!("backup before update written to {}", report.path.display());
                let name = report.path.file_name().unwrap_or(report.path.as_os_str());
                Some(name.to_string_lossy().into_owned())
            }
            None => None,
        };
        if self.is_stopping() {
            return Ok(None);
        }
        let current = job.current_parameters()?;
        let imputation = self.settings.trial.missing_outcomes.map(|rule| {
            let started_at = job.request().started_at.unwrap_or_else(|| self.clock.now());
            Imputation {
                decided_by: started_at - rule.window,
                reward: rule.reward,
            }
        });
        let mut failure: Option<StoreError> = None;
        let mut interrupted = false;
        let mut imputed_rows = 0;
        let values = {
            let mut records = job
                .update_data(self.settings.trial.include, imputation)?
                .map_while(|item| match item {
                    // The algorithm sees the end of the data early; what it computes is dropped.
                    Ok(_) if self.is_stopping() => {
                        interrupted = true;
                        None
                    }
                    Ok(record) => {
                        *rows_read += 1;
                        if record.is_imputed() {
                            imputed_rows += 1;
                        }
                        Some(record.into_record())
                    }
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                });
            // A panicking algorithm fails this update like any other error, instead of
            // taking the worker thread (and every later update of this process) with it.
            let algorithm = &self.algorithm;
            let current_values = &current.values;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                algorithm.update(current_values, &mut records)
            }))
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".to_owned());
                Err(AlgorithmError::UpdateFailed(format!(
                    "the algorithm panicked: {message}"
                )))
            })
        };
        if let Some(e) = failure {
            return Err(e.into());
        }
        if interrupted {
            return Ok(None);
        }
        let values = values?;
        check_publishable(&values).map_err(DomainError::Algorithm)?;
        self.algorithm
            .validate_parameters(&values)
            .map_err(DomainError::Algorithm)?;
        let change = self.algorithm.describe_change(&current.values, &values);
        Ok(Some((
            values,
            Provenance {
                service_version: self.settings.service_version.clone(),
                algorithm: self.algorithm.name().to_owned(),
                config_hash: self.settings.config_hash.clone(),
                rows_read: *rows_read,
                backup_file,
                included_policies: self.settings.trial.include.as_stored(),
                imputed: imputation.map(|rule| ImputedRewards {
                    decided_by: rule.decided_by,
                    default_reward: rule.reward,
                    rows: imputed_rows,
                }),
            },
            change,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_with_null_are_refused() {
        assert!(check_publishable(&serde_json::json!({"p": 0.5, "v": [1, 2]})).is_ok());
        // serde_json writes NaN as null.
        let nan = serde_json::json!({"p": f64::NAN});
        assert!(check_publishable(&nan).is_err());
        assert!(check_publishable(&serde_json::json!({"deep": [{"x": null}]})).is_err());
    }

    #[test]
    fn parameters_that_are_not_an_object_are_refused() {
        for values in [
            serde_json::json!(0.5),
            serde_json::json!([0.5]),
            serde_json::json!("p"),
        ] {
            assert_eq!(
                check_publishable(&values),
                Err(AlgorithmError::InvalidParameters(
                    "the parameters are not a JSON object".into()
                )),
                "{values}"
            );
        }
    }
}
