//! The policies the algorithm prepared from parameter versions
//! ([`Algorithm::prepare_policy`](crate::algorithm::Algorithm::prepare_policy)), kept for the
//! newest versions decisions were drawn from, so that a draw does not read its version's JSON
//! again.
//!
//! An entry is found only for the very parameters a decision holds: the same algorithm,
//! version and time of storage, and the same values. Those are the parameters the decision
//! stores the version of, so a version published since (by this process or another, by an
//! update, a restore or a reset) can never be drawn from through a policy prepared from
//! another. Comparing the values costs a walk of the JSON only when the decision's copy of a
//! version is not the one the entry was made from (the current version reloaded from storage);
//! the entry then keeps the new copy, and later decisions find it by pointer.
//!
//! The lock is held to look an entry up or to put one in, never while the algorithm prepares
//! or draws: two requests that miss together may both prepare a version, and the second to
//! finish replaces the first's entry with an equal one.

use std::sync::{Arc, PoisonError, RwLock};

use super::Service;
use crate::algorithm::PreparedPolicy;
use crate::domain::ModelParameters;

/// How many versions keep their prepared policy: the current one, and the one before it for
/// the requests still drawing from it when a new one is published.
pub(super) const KEPT_VERSIONS: usize = 2;

/// The prepared policies, newest last.
#[derive(Default)]
pub(super) struct PolicyCache {
    entries: RwLock<Vec<Entry>>,
}

/// One version's prepared policy, with the parameters it was prepared from.
struct Entry {
    params: Arc<ModelParameters>,
    /// `None` when the algorithm prepares nothing for these parameters.
    policy: Option<PreparedPolicy>,
}

/// Whether `a` and `b` are the same stored version, short of comparing their values.
fn same_version(a: &ModelParameters, b: &ModelParameters) -> bool {
    a.version == b.version && a.created_at == b.created_at && a.algorithm == b.algorithm
}

/// What a look-up found.
enum Found {
    /// The entry made from this very copy of the parameters.
    Same(Option<PreparedPolicy>),
    /// The entry made from an equal copy, which the entry should now keep instead.
    Equal(Option<PreparedPolicy>),
    Missing,
}

impl PolicyCache {
    fn find(&self, params: &Arc<ModelParameters>) -> Found {
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        for entry in entries.iter().rev() {
            if Arc::ptr_eq(&entry.params, params) {
                return Found::Same(entry.policy.clone());
            }
            if same_version(&entry.params, params) && entry.params.values == params.values {
                return Found::Equal(entry.policy.clone());
            }
        }
        Found::Missing
    }

    /// The policy prepared from `params`, when one is kept: `Some(None)` when the algorithm
    /// prepared nothing for them.
    fn get(&self, params: &Arc<ModelParameters>) -> Option<Option<PreparedPolicy>> {
        match self.find(params) {
            Found::Same(policy) => Some(policy),
            Found::Equal(policy) => {
                let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
                if let Some(entry) = entries
                    .iter_mut()
                    .find(|e| same_version(&e.params, params) && e.params.values == params.values)
                {
                    entry.params = Arc::clone(params);
                }
                Some(policy)
            }
            Found::Missing => None,
        }
    }

    /// Keeps `policy` as prepared from `params`, in place of any entry for the same version,
    /// and forgets the oldest entries beyond [`KEPT_VERSIONS`].
    fn insert(&self, params: Arc<ModelParameters>, policy: Option<PreparedPolicy>) {
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        entries.retain(|e| !same_version(&e.params, &params));
        entries.push(Entry { params, policy });
        let excess = entries.len().saturating_sub(KEPT_VERSIONS);
        entries.drain(..excess);
    }
}

impl Service {
    /// What the algorithm prepared from `params` for its draws, prepared now when no entry
    /// is kept for them; `None` when it prepares nothing. May panic where the algorithm's
    /// `prepare_policy` does (the caller catches it); a policy whose preparation panicked is
    /// not kept.
    pub(super) fn prepared_policy(&self, params: &Arc<ModelParameters>) -> Option<PreparedPolicy> {
        if let Some(kept) = self.policies.get(params) {
            return kept;
        }
        let policy = self.algorithm.prepare_policy(&params.values);
        self.policies.insert(Arc::clone(params), policy.clone());
        policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use serde_json::json;

    fn version(version: i64, values: serde_json::Value) -> Arc<ModelParameters> {
        Arc::new(ModelParameters {
            version,
            algorithm: "coin".into(),
            values,
            created_at: DateTime::UNIX_EPOCH,
        })
    }

    fn policy(tag: i64) -> Option<PreparedPolicy> {
        Some(Arc::new(tag))
    }

    /// The tag of the policy `cache` keeps for `params`: `Some(None)` for a kept `None`.
    fn tag(cache: &PolicyCache, params: &Arc<ModelParameters>) -> Option<Option<i64>> {
        cache
            .get(params)
            .map(|p| p.and_then(|p| p.downcast_ref::<i64>().copied()))
    }

    #[test]
    fn a_policy_is_found_for_its_version_only() {
        let cache = PolicyCache::default();
        let one = version(1, json!({ "p": 0.5 }));
        assert_eq!(tag(&cache, &one), None);
        cache.insert(Arc::clone(&one), policy(1));
        assert_eq!(tag(&cache, &one), Some(Some(1)));
        assert_eq!(tag(&cache, &version(2, json!({ "p": 0.5 }))), None);
        let other_algorithm = Arc::new(ModelParameters {
            algorithm: "dice".into(),
            ..(*one).clone()
        });
        assert_eq!(tag(&cache, &other_algorithm), None);
        let stored_later = Arc::new(ModelParameters {
            created_at: DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(1),
            ..(*one).clone()
        });
        assert_eq!(tag(&cache, &stored_later), None);
        // The same number, time and algorithm with other values: a version stored again.
        assert_eq!(tag(&cache, &version(1, json!({ "p": 0.0 }))), None);
    }

    #[test]
    fn an_equal_copy_finds_the_policy_and_is_kept_in_its_place() {
        let cache = PolicyCache::default();
        let loaded = version(1, json!({ "p": 0.5 }));
        cache.insert(Arc::clone(&loaded), policy(1));
        let reloaded = version(1, json!({ "p": 0.5 }));
        assert_eq!(tag(&cache, &reloaded), Some(Some(1)));
        let entries = cache.entries.read().unwrap();
        assert!(Arc::ptr_eq(&entries[0].params, &reloaded));
    }

    #[test]
    fn only_the_newest_versions_are_kept() {
        let cache = PolicyCache::default();
        let versions: Vec<_> = (1..=3).map(|v| version(v, json!({ "v": v }))).collect();
        for v in &versions {
            cache.insert(Arc::clone(v), policy(v.version));
        }
        assert_eq!(tag(&cache, &versions[0]), None);
        assert_eq!(tag(&cache, &versions[1]), Some(Some(2)));
        assert_eq!(tag(&cache, &versions[2]), Some(Some(3)));
        // A version prepared again replaces its entry instead of pushing another out.
        cache.insert(Arc::clone(&versions[2]), None);
        assert_eq!(tag(&cache, &versions[1]), Some(Some(2)));
        assert_eq!(tag(&cache, &versions[2]), Some(None));
        assert_eq!(cache.entries.read().unwrap().len(), KEPT_VERSIONS);
    }
}
