//! The dashboard's use cases: the study's figures per day, its participants with their latest
//! activity, its updates, and how an update changed the policy.

use super::{DomainError, Service};
use crate::dashboard::{DashboardDays, DashboardSettings, ParticipantActivity};
use crate::domain::{ModelParameters, UpdateRequest};
use crate::rng::DecisionRng;

/// How many recent decisions an update's page evaluates both policies on.
pub const POLICY_SAMPLE: u32 = 200;

/// One stored state, with P(action = 1) under the policy before and after an update.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyPoint {
    /// The participant of the decision the state comes from.
    pub user_id: String,
    /// The decision's type.
    pub decision_type: String,
    /// The decision's index.
    pub decision_idx: i64,
    /// P(action = 1) under the version before (`None` when the algorithm could not give it).
    pub before: Option<f64>,
    /// P(action = 1) under the version after.
    pub after: Option<f64>,
}

/// An update and the policies before and after it.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateComparison {
    /// The update.
    pub update: UpdateRequest,
    /// The version before (its produced version minus one), if stored.
    pub before: Option<ModelParameters>,
    /// The version it produced, if it completed.
    pub after: Option<ModelParameters>,
    /// Both policies on the states of the latest decisions drawn under the version before.
    pub points: Vec<PolicyPoint>,
}

impl Service {
    /// The settings the dashboard's figures are computed under: the days of `zone`, and the
    /// algorithm's clip bounds.
    pub fn dashboard_settings(&self, zone: chrono_tz::Tz) -> DashboardSettings {
        DashboardSettings {
            zone,
            clip_bounds: self.algorithm.clip_bounds(),
        }
    }

    /// Now, by the service's clock (the time statuses are shown at).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The study's figures per day.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_days(&self, zone: chrono_tz::Tz) -> Result<DashboardDays, DomainError> {
        Ok(self
            .store
            .dashboard_days(&self.dashboard_settings(zone), self.clock.now())?)
    }

    /// Every registered participant with their latest decision and upload.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_participants(
        &self,
        zone: chrono_tz::Tz,
    ) -> Result<Vec<ParticipantActivity>, DomainError> {
        Ok(self
            .store
            .dashboard_participants(&self.dashboard_settings(zone), self.clock.now())?)
    }

    /// How many participants are registered (erased ones included) and how many are erased.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_participant_counts(&self) -> Result<(u64, u64), DomainError> {
        Ok(self.store.dashboard_participant_counts()?)
    }

    /// The newest stored parameter version, read from the store (not this process's cache, so
    /// a version another instance published shows); `None` before any.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_latest_version(&self) -> Result<Option<i64>, DomainError> {
        Ok(self.store.current_parameters()?.map(|p| p.version))
    }

    /// Every update request, newest first.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, DomainError> {
        Ok(self.store.dashboard_updates()?)
    }

    /// An update with the parameters before and after it and both policies' P(action = 1) on
    /// the states of the latest [`POLICY_SAMPLE`] available decisions drawn under the version
    /// before. Each probability is the one the algorithm's `get_action` answers with a
    /// generator seeded from the decision's key, as the decision itself was: the built-in
    /// algorithms compute it without drawing, so it does not depend on the seed. `None` when
    /// the update is unknown.
    ///
    /// # Errors
    /// On storage failure.
    pub fn dashboard_update(
        &self,
        id: uuid::Uuid,
    ) -> Result<Option<UpdateComparison>, DomainError> {
        let Some(update) = self.store.update_request(id)? else {
            return Ok(None);
        };
        let Some(version) = update.parameter_version else {
            return Ok(Some(UpdateComparison {
                update,
                before: None,
                after: None,
                points: Vec::new(),
            }));
        };
        let before = self.store.parameters(version - 1)?;
        let after = self.store.parameters(version)?;
        let mut points = Vec::new();
        if let (Some(b), Some(a)) = (&before, &after) {
            for d in self
                .store
                .dashboard_recent_decisions(b.version, POLICY_SAMPLE)?
            {
                let p = |values: &serde_json::Value| {
                    let seed = crate::rng::decision_seed(
                        self.settings.seed,
                        &d.user_id,
                        &d.decision_type,
                        d.decision_idx,
                    );
                    let mut rng = DecisionRng::from_seed(seed);
                    self.algorithm
                        .get_action(&d.user_id, &d.state, values, d.decision_idx, &mut rng)
                        .ok()
                        .map(|c| c.action_prob.get())
                };
                points.push(PolicyPoint {
                    user_id: d.user_id.as_str().to_owned(),
                    decision_type: d.decision_type.as_str().to_owned(),
                    decision_idx: d.decision_idx.get(),
                    before: p(&b.values),
                    after: p(&a.values),
                });
            }
        }
        Ok(Some(UpdateComparison {
            update,
            before,
            after,
            points,
        }))
    }
}
