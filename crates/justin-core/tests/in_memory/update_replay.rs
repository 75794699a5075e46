//! Update replay: every completed update comes out again from the version before it and the
//! records it read; a version that does not is reported, a record that disagrees with what it
//! was derived from is named with the versions that read it, and versions whose records were
//! erased are unverifiable.

use justin_core::service::{InconsistentRow, UpdateReplay, UpdateReplaySummary, UpdateVerdict};
use justin_core::{
    Algorithm, Clock, Decision, Provenance, Service, Store, StudyRecord, UpdateInclusion,
};
use serde_json::json;
use std::time::Duration;

use crate::support::{object, upload_request, Study};

fn replay(service: &Service) -> (UpdateReplaySummary, Vec<UpdateReplay>, Vec<InconsistentRow>) {
    let mut versions = Vec::new();
    let mut rows = Vec::new();
    let summary = service
        .replay_updates(&mut |v| versions.push(v.clone()), &mut |r| {
            rows.push(r.clone());
        })
        .unwrap();
    (summary, versions, rows)
}

fn verdicts(versions: &[UpdateReplay]) -> Vec<(i64, UpdateVerdict)> {
    versions
        .iter()
        .map(|v| (v.parameter_version, v.verdict.clone()))
        .collect()
}

/// Runs the next update as the service would, but computes it from the records as `seen`
/// shows them (what the update read before they were changed) and stores `rows_read` of
/// `count(read)`; `adjust` may change the values stored.
fn run_update_seeing(
    study: &Study,
    n: u32,
    seen: impl Fn(StudyRecord) -> StudyRecord,
    rows_read: impl Fn(u64) -> u64,
    adjust: impl Fn(serde_json::Value) -> serde_json::Value,
) {
    study.request_update(n);
    let mut job = study
        .store
        .claim_update(study.clock.now())
        .unwrap()
        .unwrap();
    let current = job.current_parameters().unwrap();
    let read: Vec<StudyRecord> = job
        .study_data(UpdateInclusion::default())
        .unwrap()
        .map(|r| seen(r.unwrap()))
        .collect();
    let count = read.len() as u64;
    let values = study
        .algorithm
        .update(&current.values, &mut read.into_iter())
        .unwrap();
    let provenance = Provenance {
        service_version: "test".into(),
        algorithm: "coin".into(),
        config_hash: "hash".into(),
        rows_read: rows_read(count),
        backup_file: None,
        included_policies: UpdateInclusion::default().as_stored(),
        imputed: None,
    };
    job.complete("coin", &adjust(values), &provenance, study.clock.now())
        .unwrap();
}

/// Alice and bob with uploads, three updates, a late upload, a withdrawal in between.
fn study_with_updates() -> (Study, Vec<Decision>) {
    let study = Study::new();
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    let mut decided = Vec::new();
    for i in 0..3 {
        for u in [&alice, &bob] {
            let d = study.decide(u, i);
            study.upload(&d, 0.125 * (i as f64 + 1.0));
            decided.push(d);
        }
    }
    let late = study.decide(&alice, 3);
    study.run_update(1);
    study.upload(&late, 0.875);
    decided.push(late);
    let d = study.decide(&bob, 3);
    study.upload(&d, 0.5);
    decided.push(d);
    study.run_update(2);
    // After the second update started: it keeps bob's records.
    study.clock.advance(Duration::from_secs(60));
    study.service.withdraw(&bob, "moved away").unwrap();
    study.clock.advance(Duration::from_secs(60));
    study.run_update(3);
    (study, decided)
}

#[test]
fn every_update_the_service_computed_replays_bit_for_bit() {
    let (study, _) = study_with_updates();
    let (summary, versions, rows) = replay(&study.service);
    assert_eq!(rows, vec![]);
    assert_eq!(
        verdicts(&versions),
        vec![
            (2, UpdateVerdict::Exact),
            (3, UpdateVerdict::Exact),
            (4, UpdateVerdict::Exact)
        ]
    );
    let read: Vec<(u64, u64)> = versions
        .iter()
        .map(|v| (v.rows_read, v.rows_streamed))
        .collect();
    assert_eq!(read, vec![(6, 6), (8, 8), (4, 4)]);
    assert_eq!(
        summary,
        UpdateReplaySummary {
            versions: 3,
            exact: 3,
            ..UpdateReplaySummary::default()
        }
    );
    assert!(!summary.failed());
}

#[test]
fn a_study_without_updates_has_nothing_to_replay() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    study.upload(&d, 0.5);
    let (summary, versions, rows) = replay(&study.service);
    assert_eq!(
        (summary, versions, rows),
        (UpdateReplaySummary::default(), vec![], vec![])
    );
}

/// A study whose record (alice, 1) is stored as `stored` (outcome and reward) while the
/// updates read it with reward 0.25, from outcome r = 0.25: as if it had been changed after
/// they ran. Two updates read it.
fn study_with_a_changed_record(stored_r: f64, stored_reward: f64) -> Study {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d0 = study.decide(&alice, 0);
    study.upload(&d0, 0.5);
    let d1 = study.decide(&alice, 1);
    let upload = upload_request(&d1, stored_r);
    let record = StudyRecord {
        user_id: upload.user_id,
        decision_type: upload.decision_type,
        decision_idx: upload.decision_idx,
        requested_at: upload.requested_at,
        sent_timestamp: upload.sent_timestamp,
        received_at: study.clock.now(),
        context: upload.context,
        action: upload.action,
        action_prob: upload.action_prob,
        state: upload.state,
        outcome: upload.outcome,
        reward: stored_reward,
        available: true,
    };
    study.store.record_study_data(&record).unwrap();
    let seen = |r: StudyRecord| {
        if r.decision_idx == d1.decision_idx {
            StudyRecord {
                outcome: object(json!({"r": 0.25})),
                reward: 0.25,
                ..r
            }
        } else {
            r
        }
    };
    run_update_seeing(&study, 1, seen, |n| n, |v| v);
    let d2 = study.decide(&alice, 2);
    study.upload(&d2, 1.0);
    run_update_seeing(&study, 2, seen, |n| n, |v| v);
    study
}

#[test]
fn a_changed_reward_is_named_with_every_version_that_read_it() {
    let study = study_with_a_changed_record(0.25, 0.75);
    let (summary, versions, rows) = replay(&study.service);
    let versions = verdicts(&versions);
    assert_eq!(versions.len(), 2);
    for (v, verdict) in &versions {
        assert!(
            matches!(verdict, UpdateVerdict::Mismatch { reason } if reason.starts_with("p: stored")),
            "version {v}: {verdict:?}"
        );
    }
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].user_id.as_str(), "alice");
    assert_eq!(rows[0].decision_idx.get(), 1);
    assert_eq!(rows[0].versions, vec![2, 3]);
    assert_eq!(
        rows[0].reason,
        "its reward is not the one the algorithm gives its outcome"
    );
    assert_eq!((summary.mismatches, summary.inconsistent_rows), (2, 1));
    assert!(summary.failed());
}

#[test]
fn an_outcome_and_reward_changed_together_fail_the_versions_that_read_them() {
    let study = study_with_a_changed_record(0.75, 0.75);
    let (summary, versions, rows) = replay(&study.service);
    assert_eq!(rows, vec![], "the record agrees with itself");
    let mismatched: Vec<i64> = versions
        .iter()
        .filter(|v| matches!(v.verdict, UpdateVerdict::Mismatch { .. }))
        .map(|v| v.parameter_version)
        .collect();
    assert_eq!(mismatched, vec![2, 3]);
    assert!(summary.failed());
}

#[test]
fn a_version_a_last_bit_away_is_within_the_tolerance() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    study.upload(&d, 0.3);
    run_update_seeing(
        &study,
        1,
        |r| r,
        |n| n,
        |v| {
            let p = v["p"].as_f64().unwrap();
            json!({"p": f64::from_bits(p.to_bits() + 1), "n": v["n"]})
        },
    );
    let (summary, versions, _) = replay(&study.service);
    match &versions[0].verdict {
        UpdateVerdict::WithinTolerance {
            largest_relative_difference,
        } => assert!(*largest_relative_difference < 1e-15),
        other => panic!("{other:?}"),
    }
    assert_eq!(summary.within_tolerance, 1);
    assert!(!summary.failed());
}

#[test]
fn more_records_than_the_update_read_is_a_mismatch() {
    let study = Study::new();
    let alice = study.add_user("alice");
    for i in 0..2 {
        let d = study.decide(&alice, i);
        study.upload(&d, 0.5);
    }
    run_update_seeing(&study, 1, |r| r, |n| n - 1, |v| v);
    let (summary, versions, _) = replay(&study.service);
    assert!(
        matches!(&versions[0].verdict, UpdateVerdict::Mismatch { reason } if reason.contains("records were added")),
        "{:?}",
        versions[0]
    );
    assert_eq!((versions[0].rows_read, versions[0].rows_streamed), (1, 2));
    assert!(summary.failed());
}

#[test]
fn versions_that_read_an_erased_participant_are_unverifiable() {
    let (study, _) = study_with_updates();
    let bob = crate::support::user("bob");
    study.service.erase_participant(&bob).unwrap();
    let (summary, versions, rows) = replay(&study.service);
    assert_eq!(rows, vec![]);
    let verdicts = verdicts(&versions);
    assert!(matches!(
        &verdicts[0].1,
        UpdateVerdict::Unverifiable { reason } if reason.contains("erased")
    ));
    assert!(matches!(&verdicts[1].1, UpdateVerdict::Unverifiable { .. }));
    // The third update started after bob withdrew: it read none of his records.
    assert_eq!(verdicts[2].1, UpdateVerdict::Exact);
    assert_eq!((summary.unverifiable, summary.exact), (2, 1));
    assert!(!summary.failed());
}
