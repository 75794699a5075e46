//! Update replay: every completed update is computed again from the parameter version before
//! it and exactly the study records it read ([`crate::ports::Store::update_rows`]), and the
//! result is compared with the version it stored. Each record an update read is also checked
//! against what it was derived from: its reward against the reward the algorithm gives its
//! outcome now, its action and probability against the decision logged for it.

use std::collections::HashMap;

use uuid::Uuid;

use super::{DomainError, Service};
use crate::algorithm::AlgorithmError;
use crate::domain::{
    Action, CompletedUpdate, DecisionIdx, DecisionType, ModelParameters, Probability, StudyRecord,
    UpdateRecord, UserId,
};
use crate::ports::StoreError;

/// The relative difference under which a recomputed number counts as equal to the stored one
/// when the two are not bit for bit the same (a different order of floating-point operations,
/// or a different CPU's rounding, changes the last bits).
pub const UPDATE_REPLAY_TOLERANCE: f64 = 1e-9;

/// How a version compared with its recomputation.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateVerdict {
    /// Recomputed bit for bit.
    Exact,
    /// Every number within [`UPDATE_REPLAY_TOLERANCE`] (relative) of the stored one, the
    /// structure the same: not a failure.
    WithinTolerance {
        /// The largest relative difference found.
        largest_relative_difference: f64,
    },
    /// The recomputation differs, or the update's records cannot be what it read (more than
    /// it counted), or it cannot be recomputed.
    Mismatch {
        /// What differs first.
        reason: String,
    },
    /// The update cannot be checked: records it read are gone (an erasure), or it was computed
    /// by another algorithm than the one configured.
    Unverifiable {
        /// Why.
        reason: String,
    },
}

/// The replay of one completed update.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateReplay {
    /// The version the update stored.
    pub parameter_version: i64,
    /// The update request's id.
    pub update_id: Uuid,
    /// The records the update read, by its provenance.
    pub rows_read: u64,
    /// The records stored for it now (what the replay computed from).
    pub rows_streamed: u64,
    /// How it compared.
    pub verdict: UpdateVerdict,
}

/// A record an update read that does not agree with what it was derived from.
#[derive(Debug, Clone, PartialEq)]
pub struct InconsistentRow {
    /// The participant.
    pub user_id: UserId,
    /// The kind of decision.
    pub decision_type: DecisionType,
    /// The decision time.
    pub decision_idx: DecisionIdx,
    /// What disagrees (never the participant's values themselves).
    pub reason: String,
    /// Every version whose update read the record, oldest first.
    pub versions: Vec<i64>,
}

/// What an update replay found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateReplaySummary {
    /// Completed updates replayed.
    pub versions: u64,
    /// Recomputed bit for bit.
    pub exact: u64,
    /// Recomputed within the tolerance.
    pub within_tolerance: u64,
    /// Recomputed differently (or not at all).
    pub mismatches: u64,
    /// Could not be checked.
    pub unverifiable: u64,
    /// Records that disagree with what they were derived from.
    pub inconsistent_rows: u64,
}

impl UpdateReplaySummary {
    /// Whether the replay found anything wrong: a mismatch or an inconsistent record.
    pub fn failed(&self) -> bool {
        self.mismatches > 0 || self.inconsistent_rows > 0
    }
}

/// The key of a decision and of its upload.
type Key = (UserId, DecisionType, DecisionIdx);

/// What a record is checked against: the draw of the decision logged for each uploaded key.
type Logged = HashMap<Key, (Action, Probability)>;

impl Service {
    /// Recomputes every completed update, oldest first, from the version before it and the
    /// records it read, and calls `on_version` with how each compared; then calls
    /// `on_inconsistent` for each record (read by any update) whose reward is not the one the
    /// algorithm gives its outcome now, or whose action or probability differs from the
    /// decision logged for it, with every version whose update read it.
    ///
    /// Holds in memory the action and probability of every decision with an upload, and the
    /// inconsistent records; the records themselves are streamed, once per update.
    ///
    /// # Errors
    /// On storage failure.
    pub fn replay_updates(
        &self,
        on_version: &mut dyn FnMut(&UpdateReplay),
        on_inconsistent: &mut dyn FnMut(&InconsistentRow),
    ) -> Result<UpdateReplaySummary, DomainError> {
        let updates = self.store.completed_updates()?;
        let mut summary = UpdateReplaySummary::default();
        if updates.is_empty() {
            return Ok(summary);
        }
        let logged = self.logged_draws()?;
        let mut inconsistent: Vec<InconsistentRow> = Vec::new();
        let mut inconsistent_index: HashMap<Key, usize> = HashMap::new();
        for update in &updates {
            let replay = self.replay_update(update, &logged, &mut |record, reason| {
                let key = (
                    record.user_id.clone(),
                    record.decision_type.clone(),
                    record.decision_idx,
                );
                match inconsistent_index.get(&key) {
                    Some(&i) => {
                        let row = &mut inconsistent[i];
                        if row.versions.last() != Some(&update.parameter_version) {
                            row.versions.push(update.parameter_version);
                        }
                    }
                    None => {
                        inconsistent_index.insert(key, inconsistent.len());
                        inconsistent.push(InconsistentRow {
                            user_id: record.user_id.clone(),
                            decision_type: record.decision_type.clone(),
                            decision_idx: record.decision_idx,
                            reason,
                            versions: vec![update.parameter_version],
                        });
                    }
                }
            })?;
            summary.versions += 1;
            match replay.verdict {
                UpdateVerdict::Exact => summary.exact += 1,
                UpdateVerdict::WithinTolerance { .. } => summary.within_tolerance += 1,
                UpdateVerdict::Mismatch { .. } => summary.mismatches += 1,
                UpdateVerdict::Unverifiable { .. } => summary.unverifiable += 1,
            }
            on_version(&replay);
        }
        summary.inconsistent_rows = inconsistent.len() as u64;
        for row in &inconsistent {
            on_inconsistent(row);
        }
        Ok(summary)
    }

    /// The action and probability of every stored decision that has an upload.
    fn logged_draws(&self) -> Result<Logged, DomainError> {
        let mut logged = Logged::new();
        for row in self.store.export()? {
            let row = row?;
            if row.upload.is_some() {
                let d = row.decision;
                logged.insert(
                    (d.user_id, d.decision_type, d.decision_idx),
                    (d.action, d.action_prob),
                );
            }
        }
        Ok(logged)
    }

    /// Replays one update, calling `on_inconsistent` for each record it read that disagrees
    /// with what it was derived from.
    fn replay_update(
        &self,
        update: &CompletedUpdate,
        logged: &Logged,
        on_inconsistent: &mut dyn FnMut(&StudyRecord, String),
    ) -> Result<UpdateReplay, DomainError> {
        let version = update.parameter_version;
        let rows_read = update.provenance.rows_read;
        let stored = self.store.parameters(version)?;
        let before = self.store.parameters(version - 1)?;
        let mut rows_streamed: u64 = 0;
        let mut failure: Option<StoreError> = None;
        let recomputed = {
            let mut records = self
                .store
                .update_rows(version)?
                .map_while(|item| match item {
                    Ok(UpdateRecord::Uploaded(record)) => {
                        rows_streamed += 1;
                        if let Some(reason) = self.inconsistency(&record, logged) {
                            on_inconsistent(&record, reason);
                        }
                        Some(record)
                    }
                    // An imputed record has no outcome to derive its reward from: its reward
                    // is the update's default.
                    Ok(UpdateRecord::Imputed(record)) => {
                        rows_streamed += 1;
                        let default = update.provenance.imputed.map(|i| i.default_reward);
                        if default.map(f64::to_bits) != Some(record.reward.to_bits()) {
                            on_inconsistent(
                                &record,
                                "its imputed reward is not the update's default reward".into(),
                            );
                        }
                        Some(record)
                    }
                    Err(e) => {
                        failure = Some(e);
                        None
                    }
                });
            let computed = before.as_ref().map(|before| {
                let algorithm = &self.algorithm;
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    algorithm.update(&before.values, &mut records)
                }))
                .unwrap_or_else(|_| {
                    Err(AlgorithmError::UpdateFailed(
                        "the algorithm panicked".into(),
                    ))
                })
            });
            // The records are checked whatever became of the computation.
            records.for_each(drop);
            computed
        };
        if let Some(e) = failure {
            return Err(e.into());
        }
        let verdict = self.verdict(
            update,
            stored.as_ref(),
            before.as_ref(),
            recomputed,
            rows_streamed,
        );
        Ok(UpdateReplay {
            parameter_version: version,
            update_id: update.update_id,
            rows_read,
            rows_streamed,
            verdict,
        })
    }

    fn verdict(
        &self,
        update: &CompletedUpdate,
        stored: Option<&ModelParameters>,
        before: Option<&ModelParameters>,
        recomputed: Option<Result<serde_json::Value, AlgorithmError>>,
        rows_streamed: u64,
    ) -> UpdateVerdict {
        let version = update.parameter_version;
        let rows_read = update.provenance.rows_read;
        let mismatch = |reason: String| UpdateVerdict::Mismatch { reason };
        let Some(stored) = stored else {
            return mismatch(format!("version {version} is not stored"));
        };
        if stored.algorithm != self.algorithm.name() {
            return UpdateVerdict::Unverifiable {
                reason: format!(
                    "computed by algorithm {}; this service runs {}",
                    stored.algorithm,
                    self.algorithm.name()
                ),
            };
        }
        if before.is_none() {
            return mismatch(format!(
                "version {} (the one it was computed from) is not stored",
                version - 1
            ));
        }
        if rows_streamed > rows_read {
            return mismatch(format!(
                "the update read {rows_read} records but {rows_streamed} are stored for it now (records were added)"
            ));
        }
        if rows_streamed < rows_read {
            return UpdateVerdict::Unverifiable {
                reason: format!(
                    "the update read {rows_read} records but only {rows_streamed} are stored now (erased since)"
                ),
            };
        }
        match recomputed {
            None => mismatch("nothing to compute from".into()),
            Some(Err(e)) => mismatch(format!("the algorithm cannot recompute it: {e}")),
            Some(Ok(values)) => match compare(&stored.values, &values) {
                Comparison::Exact => UpdateVerdict::Exact,
                Comparison::Within(largest) => UpdateVerdict::WithinTolerance {
                    largest_relative_difference: largest,
                },
                Comparison::Differs(reason) => mismatch(reason),
            },
        }
    }

    /// How a record an update read disagrees with what it was derived from, if it does.
    fn inconsistency(&self, record: &StudyRecord, logged: &Logged) -> Option<String> {
        let key = (
            record.user_id.clone(),
            record.decision_type.clone(),
            record.decision_idx,
        );
        if let Some(&(action, prob)) = logged.get(&key) {
            if action != record.action {
                return Some("its action differs from the logged decision's".into());
            }
            if !prob.agrees_with(record.action_prob) {
                return Some("its probability differs from the logged decision's".into());
            }
        }
        let algorithm = &self.algorithm;
        let reward = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            algorithm.make_reward(
                &record.user_id,
                &record.state,
                record.action,
                &record.outcome,
            )
        }));
        match reward {
            Ok(Ok(reward)) if reward.to_bits() == record.reward.to_bits() => None,
            Ok(Ok(_)) => Some("its reward is not the one the algorithm gives its outcome".into()),
            Ok(Err(e)) => Some(format!("the algorithm gives its outcome no reward: {e}")),
            Err(_) => Some("the algorithm panicked computing its reward".into()),
        }
    }
}

/// How a recomputed value compares with the stored one.
#[derive(Debug, Clone, PartialEq)]
enum Comparison {
    Exact,
    /// Equal within the tolerance, with the largest relative difference.
    Within(f64),
    /// The first difference, by path.
    Differs(String),
}

/// Compares `stored` with `recomputed`: same structure, same keys, numbers bit for bit, or
/// within [`UPDATE_REPLAY_TOLERANCE`] relative; the first difference is named by its path.
fn compare(stored: &serde_json::Value, recomputed: &serde_json::Value) -> Comparison {
    let mut largest = 0.0_f64;
    match walk("", stored, recomputed, &mut largest) {
        Err(reason) => Comparison::Differs(reason),
        Ok(()) if largest == 0.0 => Comparison::Exact,
        Ok(()) => Comparison::Within(largest),
    }
}

fn walk(
    path: &str,
    stored: &serde_json::Value,
    recomputed: &serde_json::Value,
    largest: &mut f64,
) -> Result<(), String> {
    use serde_json::Value;
    let at = |path: &str| {
        if path.is_empty() {
            "the top".to_owned()
        } else {
            path.to_owned()
        }
    };
    match (stored, recomputed) {
        (Value::Object(a), Value::Object(b)) => {
            for key in a.keys() {
                if !b.contains_key(key) {
                    return Err(format!("{}: the recomputation has no {key:?}", at(path)));
                }
            }
            for key in b.keys() {
                if !a.contains_key(key) {
                    return Err(format!("{}: the stored version has no {key:?}", at(path)));
                }
            }
            for (key, value) in a {
                let inner = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                walk(&inner, value, &b[key], largest)?;
            }
            Ok(())
        }
        (Value::Array(a), Value::Array(b)) => {
            if a.len() != b.len() {
                return Err(format!(
                    "{}: stored {} items, recomputed {}",
                    at(path),
                    a.len(),
                    b.len()
                ));
            }
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, largest)?;
            }
            Ok(())
        }
        (Value::Number(a), Value::Number(b)) => {
            if a == b && a.to_string() == b.to_string() {
                return Ok(());
            }
            let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
                return Err(format!("{}: stored {a}, recomputed {b}", at(path)));
            };
            if x.to_bits() == y.to_bits() {
                return Ok(());
            }
            // Different bits of one value (0 and -0) count as a difference of the smallest
            // kind.
            let relative = if x == y {
                f64::MIN_POSITIVE
            } else {
                (x - y).abs() / x.abs().max(y.abs())
            };
            if relative <= UPDATE_REPLAY_TOLERANCE {
                *largest = largest.max(relative);
                Ok(())
            } else {
                Err(format!("{}: stored {a}, recomputed {b}", at(path)))
            }
        }
        (a, b) if a == b => Ok(()),
        (a, b) if kind(a) == kind(b) => Err(format!("{}: {} differs", at(path), kind(a))),
        (a, b) => Err(format!(
            "{}: stored {}, recomputed {}",
            at(path),
            kind(a),
            kind(b)
        )),
    }
}

/// What a JSON value is, without its content.
fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equal_values_compare_exact() {
        let v = json!({"mu": [0.1, -2.5, 3], "n": 7, "name": "x"});
        assert_eq!(compare(&v, &v.clone()), Comparison::Exact);
    }

    #[test]
    fn a_last_bit_is_within_the_tolerance() {
        let x = 0.1_f64;
        let y = f64::from_bits(x.to_bits() + 1);
        match compare(&json!({"mu": [x]}), &json!({"mu": [y]})) {
            Comparison::Within(r) => assert!(r > 0.0 && r < 1e-15, "{r}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn zero_and_negative_zero_are_not_bit_for_bit() {
        assert!(matches!(
            compare(&json!([0.0]), &json!([-0.0])),
            Comparison::Within(_)
        ));
    }

    #[test]
    fn the_first_difference_is_named_by_its_path() {
        let stored = json!({"policy": {"mean": [1.0, 2.0], "cov": [[1.0, 0.0], [0.0, 1.0]]}});
        let recomputed = json!({"policy": {"mean": [1.0, 2.0], "cov": [[1.0, 0.0], [0.5, 1.0]]}});
        assert_eq!(
            compare(&stored, &recomputed),
            Comparison::Differs("policy.cov[1][0]: stored 0.0, recomputed 0.5".into())
        );
        assert!(matches!(
            compare(&json!({"a": 1}), &json!({"a": 1, "b": 2})),
            Comparison::Differs(r) if r.contains("\"b\"")
        ));
        assert!(matches!(
            compare(&json!([1.0]), &json!([1.0, 2.0])),
            Comparison::Differs(r) if r.contains("stored 1 items")
        ));
        assert!(matches!(
            compare(&json!({"a": "x"}), &json!({"a": 1})),
            Comparison::Differs(r) if r == "a: stored a string, recomputed a number"
        ));
    }

    #[test]
    fn beyond_the_tolerance_differs() {
        assert!(matches!(
            compare(&json!([1.0]), &json!([1.0 + 1e-8])),
            Comparison::Differs(_)
        ));
        assert!(matches!(
            compare(&json!([1.0]), &json!([1.0 + 1e-10])),
            Comparison::Within(_)
        ));
    }
}
