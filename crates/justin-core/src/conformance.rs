//! The storage port's conformance suite (feature `conformance`): one function per `MUST` in
//! [`crate::ports::Store`] and [`crate::ports::TestingStore`], run against every storage
//! adapter so that they are interchangeable in fact and not only in type.
//!
//! Each check takes a fresh, empty, migrated store and talks to it only through the ports. An
//! adapter's test crate runs them all with one line:
//!
//! ```text
//! justin_core::store_conformance_suite!(my_adapter::testing::TestDatabase::create);
//! ```
//!
//! which expands to one `#[test]` per check, each calling the given function for a fresh
//! [`StoreFixture`]. The suite has two parts, which that line runs both of:
//! [`store_contract_suite!`], what every store must do, and [`durable_store_suite!`], the
//! backup files (`backup`, `check_backup`, `restore`). A store that keeps nothing in files,
//! like the in-memory store of `crate::testing`, runs the contract alone; the adapters over a
//! database run both.
//!
//! Checks rely on two conventions beyond the trait's signatures: timestamps are kept to the
//! microsecond, and [`Store::row_counts`] names the tables of [`crate::tables::TABLES`]:
//! `users`, `model_parameters`, `actions`, `study_data`, `model_update_requests`,
//! `update_provenance`, `participant_events`, `erasures` and `study_data_corrections`.
//!
//! [`store_contract_suite!`]: crate::store_contract_suite
//! [`durable_store_suite!`]: crate::durable_store_suite

// This module is test code compiled into the library so other crates can run it; a failed
// assertion or unwrap is how a check reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::{
    Action, Availability, CallbackDelivery, CallbackStatus, CompletedUpdate, Decision, DecisionIdx,
    DecisionType, Enrollment, Erasure, ExportLine, ExportRow, ExportedUpload, Imputation,
    ImputedReward, ImputedRewards, JsonObject, ModelParameters, OutOfStudy, Participant,
    ParticipantFacts, Policy, Probability, Provenance, SentTime, State, StudyRecord,
    UpdateInclusion, UpdateRecord, UpdateRequest, UpdateStatus, UserId, Withdrawal,
};
use crate::ports::{
    DecisionGuard, Recorded, Store, StoreError, TestingStore, UpdateJob, UploadRecorded,
};
use crate::tables::TABLES;

pub mod corrections;
pub mod participant_counts;

/// Gives a check a fresh, empty store and keeps whatever backs it (a database, a directory)
/// alive until the check ends.
pub trait StoreFixture {
    /// The store under test.
    fn store(&self) -> &dyn TestingStore;
}

/// Expands to one `#[test]` per conformance check, of the store contract
/// ([`store_contract_suite!`]) and of durable storage ([`durable_store_suite!`]): what every
/// adapter over a database runs. The argument is called once per test and must return a
/// [`StoreFixture`] holding a fresh, empty store.
///
/// [`store_contract_suite!`]: crate::store_contract_suite
/// [`durable_store_suite!`]: crate::durable_store_suite
#[macro_export]
macro_rules! store_conformance_suite {
    (@tests $make_fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                let fixture = ($make_fixture)();
                $crate::conformance::$check($crate::conformance::StoreFixture::store(&fixture));
            }
        )+
    };
    ($make_fixture:expr) => {
        $crate::store_contract_suite!($make_fixture);
        $crate::durable_store_suite!($make_fixture);
    };
}

/// Expands to one `#[test]` per check of the store contract: every `MUST` of the port except
/// those about backup files. Every store runs these, the in-memory one of
/// `crate::testing` included.
#[macro_export]
macro_rules! store_contract_suite {
    ($make_fixture:expr) => {
        $crate::store_conformance_suite!(@tests $make_fixture;
            add_user_rejects_duplicate,
            record_decision_rejects_unknown_user,
            record_decision_returns_stored_decision_on_repeat,
            record_decision_refuses_pair_with_study_data,
            concurrent_duplicate_decisions_store_exactly_one,
            concurrent_decisions_get_the_answers_they_would_get_alone,
            a_decision_and_its_upload_racing_agree_with_one_order,
            record_study_data_rejects_unknown_user,
            record_study_data_rejects_duplicate,
            upload_differing_in_action_is_refused,
            upload_differing_in_probability_is_refused,
            upload_matching_the_logged_decision_is_marked_logged,
            upload_without_logged_decision_is_marked_unlogged,
            decisions_stream_every_decision_in_order,
            parameters_are_absent_before_seeding,
            seed_parameters_is_idempotent,
            concurrent_seeding_leaves_one_version,
            publish_parameters_increments_without_gaps,
            concurrent_publishers_leave_no_gaps,
            study_data_streams_every_record_in_upload_order,
            study_data_excludes_records_stored_after_the_call,
            study_data_of_empty_store_is_empty,
            update_requests_are_stored_as_given,
            claim_update_returns_none_without_unfinished_requests,
            claim_update_takes_the_oldest_request_first,
            a_claim_never_starts_a_request_before_it_was_received,
            second_claim_while_a_job_runs_returns_none,
            dropped_job_changes_nothing_and_is_claimed_again,
            requeued_job_changes_nothing_and_is_claimed_afresh,
            completed_job_stores_next_version_with_provenance,
            failed_job_keeps_parameters_and_records_the_error,
            concurrent_claimers_run_each_request_once_without_gaps,
            callbacks_are_recorded_and_pending_ones_listed,
            row_counts_count_every_table,
            reset_empties_every_table,
            decision_types_key_decisions_separately,
            uploads_are_keyed_by_decision_type,
            unavailable_decisions_are_stored_with_their_reason,
            uploads_take_availability_from_the_logged_decision,
            update_jobs_never_read_unavailable_records,
            completed_job_marks_the_records_it_read,
            export_joins_every_decision_with_its_upload,
            export_streams_many_decisions_in_order,
            export_excludes_decisions_stored_after_the_call,
            export_lines_carry_the_json_as_serialising_it_gives,
            numbers_come_back_bit_for_bit,
            add_user_stores_the_enrollment_window_and_its_history,
            participant_counts_decisions_and_uploads,
            change_enrollment_replaces_the_window_and_records_it,
            withdraw_records_the_withdrawal_once,
            guarded_decision_inside_the_window_is_inserted,
            guarded_decision_outside_the_window_is_ineligible,
            guarded_decision_of_a_withdrawn_participant_is_ineligible,
            guard_counts_earlier_decisions_up_to_the_limit,
            guard_counts_started_participants_up_to_the_limit,
            guarded_refusals_come_in_order,
            every_policy_and_out_of_study_decisions_round_trip,
            host_decision_after_a_matching_upload_is_stored,
            host_decision_after_a_mismatching_upload_is_refused,
            decisions_behind_the_newest_version_are_refused,
            update_jobs_leave_out_withdrawn_participants_and_excluded_policies,
            export_shows_the_first_update_that_learned_from_each_upload,
            erasing_a_participant_leaves_no_trace_of_them,
            erasing_an_unknown_participant_changes_nothing,
            update_rows_are_exactly_what_each_update_read,
            an_update_imputes_the_default_reward_for_decisions_past_the_window,
            a_withdrawal_after_an_update_started_leaves_what_it_reads,
            export_by_participant_groups_the_export_by_participant,
            export_by_participant_streams_many_decisions_from_one_snapshot,
        );
        $crate::dashboard_store_suite!($make_fixture);
        $crate::watchdog_store_suite!($make_fixture);
        $crate::corrections_store_suite!($make_fixture);
        $crate::participant_counts_store_suite!($make_fixture);
    };
}

/// Expands to one `#[test]` per check of durable storage: `backup` writes a file that
/// `check_backup` and `restore` read back whole, and refuse when damaged. Only a store that
/// keeps its data in files can pass them, so the in-memory store does not run these.
#[macro_export]
macro_rules! durable_store_suite {
    ($make_fixture:expr) => {
        $crate::store_conformance_suite!(@tests $make_fixture;
            backup_writes_one_file_with_matching_row_counts,
            restore_puts_back_every_row_and_continues_ids,
            restore_refuses_a_damaged_file_and_changes_nothing,
            numbers_come_back_bit_for_bit_after_a_restore,
            backup_and_restore_keep_the_life_of_the_trial,
        );
        $crate::dashboard_durable_suite!($make_fixture);
        $crate::corrections_durable_suite!($make_fixture);
        $crate::participant_counts_durable_suite!($make_fixture);
    };
}

// ---------------------------------------------------------------------------------------------
// Test data

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

fn idx(i: i64) -> DecisionIdx {
    DecisionIdx::new(i).unwrap()
}

/// A time with microseconds, the precision every adapter must keep.
fn at(seconds: i64, micros: u32) -> DateTime<Utc> {
    DateTime::from_timestamp(1_750_000_000 + seconds, micros * 1000).unwrap()
}

/// A `timestamp` as a study server may send it; stores keep the text exactly, whatever it is
/// (the HTTP edge has checked that it names an instant).
fn sent(n: i64) -> String {
    const FORMS: [&str; 8] = [
        "2025-01-01T12:00:00",
        "2025-01-01 14:00:00.123456789+02:00",
        "2025-W01-3",
        "2016-12-31T23:59:60Z",
        "20250101T120000,5",
        "2025-01-01T12:00:00.5",
        "0001-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999999999Z",
    ];
    let i = usize::try_from(n.rem_euclid(8)).unwrap();
    FORMS[i].to_owned()
}

fn object(value: serde_json::Value) -> JsonObject {
    match value {
        serde_json::Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

/// A decision whose every field depends on `variant`, so a returned decision shows which call
/// stored it.
fn decision(user_id: &UserId, i: i64, variant: u32, parameter_version: i64) -> Decision {
    let v = f64::from(variant);
    Decision {
        user_id: user_id.clone(),
        decision_type: DecisionType::default(),
        decision_idx: idx(i),
        requested_at: at(i64::from(variant), 250_001),
        sent_timestamp: sent(i64::from(variant)),
        decided_at: at(i64::from(variant) + 1, 999_999),
        availability: Availability::Available,
        context: object(json!({
            "variant": variant,
            "steps": 1234.5,
            "nested": {"ok": true, "tags": ["a", "ü"], "none": null},
        })),
        state: State::new(vec![1.0, v, 0.25, -3.0]).unwrap(),
        action: if variant.is_multiple_of(2) {
            Action::Zero
        } else {
            Action::One
        },
        action_prob: Probability::new(1.0 / (v + 2.0)).unwrap(),
        parameter_version,
        // The high bit set checks that all 64 bits survive.
        rng_seed: u64::MAX - u64::from(variant),
        policy: Policy::Algorithm,
    }
}

fn study_record(user_id: &UserId, i: i64) -> StudyRecord {
    StudyRecord {
        user_id: user_id.clone(),
        decision_type: DecisionType::default(),
        decision_idx: idx(i),
        requested_at: at(i, 1),
        sent_timestamp: sent(i + 3),
        received_at: at(i + 1, 2),
        context: object(json!({"i": i, "mood": "ok"})),
        action: if i % 2 == 0 {
            Action::Zero
        } else {
            Action::One
        },
        action_prob: Probability::new(0.5).unwrap(),
        state: State::new(vec![1.0, 0.5]).unwrap(),
        outcome: object(json!({"steps": i * 10, "ratio": 0.125})),
        reward: 0.5 + 0.001 * (i % 1000) as f64,
        available: true,
    }
}

/// The upload of what happened after `d`, agreeing with its type, action, probability and
/// availability.
fn upload_for(d: &Decision) -> StudyRecord {
    StudyRecord {
        decision_type: d.decision_type.clone(),
        action: d.action,
        action_prob: d.action_prob,
        available: d.availability.is_available(),
        ..study_record(&d.user_id, d.decision_idx.get())
    }
}

fn kind(name: &str) -> DecisionType {
    DecisionType::parse(name).unwrap()
}

/// `d` as an unavailable decision: action 0, probability 0, with `reason`.
fn unavailable(d: Decision, reason: Option<&str>) -> Decision {
    Decision {
        availability: Availability::unavailable(reason.map(str::to_owned)).unwrap(),
        action: Action::Zero,
        action_prob: Probability::ZERO,
        ..d
    }
}

/// `d` without a draw because the participant was out of the study (`why`).
fn out_of_study(d: Decision, why: OutOfStudy) -> Decision {
    Decision {
        availability: Availability::OutOfStudy(why),
        action: Action::Zero,
        action_prob: Probability::ZERO,
        ..d
    }
}

/// `d` drawn (or sent) under `policy`.
fn with_policy(d: Decision, policy: Policy) -> Decision {
    Decision { policy, ..d }
}

/// `d` requested at `at(seconds, micros)`.
fn requested(d: Decision, seconds: i64, micros: u32) -> Decision {
    Decision {
        requested_at: at(seconds, micros),
        ..d
    }
}

/// A time in the study as a study server sends it: the instant `at(seconds, 0)` and a text
/// that differs from call to call.
fn sent_time(seconds: i64) -> SentTime {
    SentTime {
        at: at(seconds, 0),
        sent: format!("{} (sent as {seconds})", sent(seconds)),
    }
}

/// The time in the study from `at(start, 0)` (inclusive) to `at(end, 0)` (exclusive); `None`
/// leaves that bound open.
fn window(start: Option<i64>, end: Option<i64>) -> Enrollment {
    Enrollment::new(start.map(sent_time), end.map(sent_time)).unwrap()
}

/// The guard of a decision drawn by the algorithm with the given warm-up counts.
fn in_study(first: Option<u32>, participants: Option<u32>) -> DecisionGuard {
    DecisionGuard::InStudy {
        warmup_first_decisions: first,
        warmup_until_participants: participants,
    }
}

/// An erasure as the service asks for it: a fresh id and pseudonym, no counts yet.
fn erasure(erased_at: DateTime<Utc>) -> Erasure {
    let id = Uuid::new_v4();
    Erasure {
        id,
        erased_at,
        participant_number: 0,
        pseudonym: format!("erased-{id}"),
        row_counts: vec![],
        backup_file: format!("/backups/justin-backup-{}.tar", id.simple()),
    }
}

/// A new request; a larger `n` is received later.
fn update_request(n: u32) -> UpdateRequest {
    UpdateRequest::new(
        Uuid::new_v4(),
        at(i64::from(n), 10),
        sent(i64::from(n) + 5),
        at(i64::from(n) + 1, 20),
        format!("http://study.example/callback/{n}"),
    )
}

fn provenance(rows_read: u64) -> Provenance {
    Provenance {
        service_version: "9.8.7".into(),
        algorithm: "test-algo".into(),
        config_hash: "c0ffee".into(),
        rows_read,
        backup_file: Some("/backups/justin-backup-x.tar".into()),
        included_policies: "algorithm,warmup,host".into(),
        imputed: None,
    }
}

/// Claims the next job, which must exist.
fn claim(store: &dyn Store, started_at: DateTime<Utc>) -> Box<dyn UpdateJob + '_> {
    store
        .claim_update(started_at)
        .unwrap()
        .expect("an unfinished update request to claim")
}

/// Stores version 1, which decisions refer to.
fn seeded(store: &dyn Store) -> ModelParameters {
    store
        .seed_parameters("test-algo", &json!({"mu": [0.0, 1.0]}), at(0, 0))
        .unwrap()
}

fn counts(store: &dyn Store) -> BTreeMap<String, u64> {
    store.row_counts().unwrap().into_iter().collect()
}

fn count(store: &dyn Store, table: &str) -> u64 {
    *counts(store)
        .get(table)
        .unwrap_or_else(|| panic!("row_counts does not list table {table}"))
}

// ---------------------------------------------------------------------------------------------
// Users and decisions

/// `add_user` MUST return `UserExists` for an id registered already.
pub fn add_user_rejects_duplicate(store: &dyn Store) {
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0, 0))
        .unwrap();
    let again = store.add_user(&user("alice"), &Enrollment::default(), at(1, 0));
    assert!(
        matches!(again, Err(StoreError::UserExists)),
        "second add_user of one id: expected UserExists, got {again:?}"
    );
    store
        .add_user(&user("bob"), &Enrollment::default(), at(2, 0))
        .unwrap();
    assert_eq!(count(store, "users"), 2);
}

/// `record_decision` MUST return `UnknownUser` for a participant that is not registered, and
/// store nothing.
pub fn record_decision_rejects_unknown_user(store: &dyn Store) {
    let params = seeded(store);
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0, 0))
        .unwrap();
    let result = store.record_decision(
        &decision(&user("mallory"), 0, 1, params.version),
        DecisionGuard::None,
    );
    assert!(
        matches!(result, Err(StoreError::UnknownUser)),
        "decision for an unregistered user: expected UnknownUser, got {result:?}"
    );
    assert_eq!(count(store, "actions"), 0);
}

/// A repeated `record_decision` MUST return `Existing` with the decision stored first (not the
/// repeat's values) and store nothing.
pub fn record_decision_returns_stored_decision_on_repeat(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let first = decision(&alice, 0, 1, params.version);
    assert_eq!(
        store.record_decision(&first, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );

    let repeat = decision(&alice, 0, 2, params.version);
    assert_ne!(
        first, repeat,
        "the repeat must differ for this check to mean anything"
    );
    assert_eq!(
        store.record_decision(&repeat, DecisionGuard::None).unwrap(),
        Recorded::Existing(first.clone())
    );
    // A third call still sees the first, not the second.
    assert_eq!(
        store
            .record_decision(&decision(&alice, 0, 3, params.version), DecisionGuard::None)
            .unwrap(),
        Recorded::Existing(first)
    );

    // Another decision index is another decision.
    let next = decision(&alice, 1, 4, params.version);
    assert_eq!(
        store.record_decision(&next, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
    assert_eq!(count(store, "actions"), 2);
}

/// `record_decision` MUST return `StudyDataExists` when study data was uploaded for the pair,
/// whether or not a decision was stored for it before.
pub fn record_decision_refuses_pair_with_study_data(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();

    store.record_study_data(&study_record(&alice, 0)).unwrap();
    let without_decision =
        store.record_decision(&decision(&alice, 0, 1, params.version), DecisionGuard::None);
    assert!(
        matches!(without_decision, Err(StoreError::StudyDataExists)),
        "decision after upload: expected StudyDataExists, got {without_decision:?}"
    );

    let earlier = decision(&alice, 1, 1, params.version);
    assert_eq!(
        store
            .record_decision(&earlier, DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
    store.record_study_data(&upload_for(&earlier)).unwrap();
    let with_decision = store.record_decision(&earlier, DecisionGuard::None);
    assert!(
        matches!(with_decision, Err(StoreError::StudyDataExists)),
        "repeated decision after upload: expected StudyDataExists, got {with_decision:?}"
    );
    assert_eq!(count(store, "actions"), 1);
}

/// Concurrent `record_decision` calls for one pair MUST store exactly one decision, and every
/// caller MUST see that one.
pub fn concurrent_duplicate_decisions_store_exactly_one(store: &dyn Store) {
    const THREADS: u32 = 8;
    const ROUNDS: i64 = 4;
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();

    for round in 0..ROUNDS {
        let barrier = Barrier::new(THREADS as usize);
        let results: Vec<(Decision, Recorded)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let barrier = &barrier;
                    let alice = &alice;
                    s.spawn(move || {
                        let mine = decision(alice, round, t, params.version);
                        barrier.wait();
                        let recorded = store.record_decision(&mine, DecisionGuard::None).unwrap();
                        (mine, recorded)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });

        let winners: Vec<&Decision> = results
            .iter()
            .filter(|(_, r)| *r == Recorded::Inserted)
            .map(|(mine, _)| mine)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one call must insert"
        );
        let winner = winners[0];
        for (mine, recorded) in &results {
            if mine != winner {
                assert_eq!(
                    recorded,
                    &Recorded::Existing(winner.clone()),
                    "round {round}: every other caller must get the inserted decision"
                );
            }
        }
    }
    assert_eq!(count(store, "actions"), ROUNDS as u64);
}

/// The kinds of call [`concurrent_decisions_get_the_answers_they_would_get_alone`] mixes.
#[derive(Debug, Clone, Copy)]
enum DecisionCase {
    New,
    NewUnguarded,
    Repeat,
    DifferingRepeat,
    Withdrawn,
    Unknown,
    Uploaded,
    Stale,
}

/// `record_decision` calls made at the same moment by many callers, each on a key of its own,
/// MUST each get the answer the call would get alone (an adapter that writes concurrent
/// decisions together must still answer each one as itself): a new decision is `Inserted`, a
/// repeat of a stored one gets it as `Existing`, a withdrawn participant's guarded decision is
/// `Ineligible`, an unregistered participant's `UnknownUser`, a key with study data
/// `StudyDataExists`, a stale parameter version `UnknownParameterVersion`. Exactly the
/// inserted decisions are stored, as sent.
pub fn concurrent_decisions_get_the_answers_they_would_get_alone(store: &dyn TestingStore) {
    const THREADS: i64 = 16;
    const ROUNDS: i64 = 16;
    const CASES: [DecisionCase; 8] = [
        DecisionCase::New,
        DecisionCase::NewUnguarded,
        DecisionCase::Repeat,
        DecisionCase::DifferingRepeat,
        DecisionCase::Withdrawn,
        DecisionCase::Unknown,
        DecisionCase::Uploaded,
        DecisionCase::Stale,
    ];
    let stale = seeded(store);
    let current = store
        .publish_parameters("test-algo", &json!({"mu": [0.5, 1.0]}), at(1, 0))
        .unwrap();
    let (alice, bob, nobody) = (user("alice"), user("bob"), user("nobody"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    store.withdraw(&bob, "moved away", at(0, 5)).unwrap();
    // Every call has a key of its own: thread t of round r uses index (r * THREADS + t) * 10,
    // plus what its case needs stored first.
    let key = |t: i64, r: i64| (r * THREADS + t) * 10;
    let case = |t: i64, r: i64| CASES[usize::try_from((t + r) % 8).unwrap()];
    let variant = |t: i64| u32::try_from(t).unwrap();
    let mut stored: BTreeMap<i64, Decision> = BTreeMap::new();
    for r in 0..ROUNDS {
        for t in 0..THREADS {
            match case(t, r) {
                DecisionCase::Repeat | DecisionCase::DifferingRepeat => {
                    let d = decision(&alice, key(t, r), variant(t) + 100, current.version);
                    assert_eq!(
                        store.record_decision(&d, in_study(None, None)).unwrap(),
                        Recorded::Inserted
                    );
                    stored.insert(key(t, r), d);
                }
                DecisionCase::Uploaded => {
                    store
                        .record_study_data(&study_record(&alice, key(t, r)))
                        .unwrap();
                }
                _ => {}
            }
        }
    }
    let calls = |t: i64, r: i64| -> (Decision, DecisionGuard) {
        let guarded = in_study(None, None);
        match case(t, r) {
            DecisionCase::New | DecisionCase::Uploaded => (
                decision(&alice, key(t, r), variant(t), current.version),
                guarded,
            ),
            DecisionCase::NewUnguarded => (
                decision(&alice, key(t, r), variant(t), current.version),
                DecisionGuard::None,
            ),
            DecisionCase::Repeat => (stored[&key(t, r)].clone(), guarded),
            DecisionCase::DifferingRepeat => (
                decision(&alice, key(t, r), variant(t) + 200, current.version),
                guarded,
            ),
            DecisionCase::Withdrawn => (
                decision(&bob, key(t, r), variant(t), current.version),
                guarded,
            ),
            DecisionCase::Unknown => (
                decision(&nobody, key(t, r), variant(t), current.version),
                if t % 2 == 0 {
                    guarded
                } else {
                    DecisionGuard::None
                },
            ),
            DecisionCase::Stale => (
                decision(&alice, key(t, r), variant(t), stale.version),
                guarded,
            ),
        }
    };

    let barrier = Barrier::new(usize::try_from(THREADS).unwrap());
    let answers: Vec<Vec<Result<Recorded, StoreError>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (barrier, calls) = (&barrier, &calls);
                s.spawn(move || {
                    (0..ROUNDS)
                        .map(|r| {
                            let (d, guard) = calls(t, r);
                            barrier.wait();
                            store.record_decision(&d, guard)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let mut expected = stored.clone();
    for (t, answers) in (0..THREADS).zip(&answers) {
        for (r, answer) in (0..ROUNDS).zip(answers) {
            let (d, _) = calls(t, r);
            let case = case(t, r);
            let right = match case {
                DecisionCase::New | DecisionCase::NewUnguarded => {
                    expected.insert(key(t, r), d);
                    matches!(answer, Ok(Recorded::Inserted))
                }
                DecisionCase::Repeat | DecisionCase::DifferingRepeat => {
                    matches!(answer, Ok(Recorded::Existing(e)) if *e == stored[&key(t, r)])
                }
                DecisionCase::Withdrawn => {
                    matches!(answer, Ok(Recorded::Ineligible(f)) if f.withdrawn)
                }
                DecisionCase::Unknown => matches!(answer, Err(StoreError::UnknownUser)),
                DecisionCase::Uploaded => matches!(answer, Err(StoreError::StudyDataExists)),
                DecisionCase::Stale => {
                    matches!(answer, Err(StoreError::UnknownParameterVersion))
                }
            };
            assert!(
                right,
                "thread {t}, round {r}, {case:?}: answered {answer:?}"
            );
        }
    }
    let kept: BTreeMap<i64, Decision> = store
        .decisions()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            (d.decision_idx.get(), d)
        })
        .collect();
    assert_eq!(
        kept, expected,
        "exactly the inserted decisions are stored, as sent"
    );
}

/// How one call of a race between `record_decision` and `record_study_data` for one key ended.
#[derive(Debug)]
struct RaceOutcome {
    decision: Result<Recorded, StoreError>,
    upload: Result<UploadRecorded, StoreError>,
}

/// `record_decision` and `record_study_data` for one key, called at the same moment, MUST end
/// as one of the two orders would: the decision first (the upload checked against it: stored
/// as logged when it agrees, refused with `UploadMismatch` when it contradicts it), or the
/// upload first (stored as not logged, and the decision refused with `StudyDataExists`). What
/// is stored afterwards MUST agree with those answers.
pub fn a_decision_and_its_upload_racing_agree_with_one_order(store: &dyn TestingStore) {
    const TRIALS: i64 = 300;
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    // Every other upload contradicts its decision's action.
    let trials: Vec<(Decision, StudyRecord)> = (0..TRIALS)
        .map(|i| {
            let variant = u32::try_from(i % 5).unwrap();
            let d = decision(&alice, i, variant, params.version);
            let mut upload = upload_for(&d);
            if i % 2 == 1 {
                upload.action = match d.action {
                    Action::Zero => Action::One,
                    Action::One => Action::Zero,
                };
            }
            (d, upload)
        })
        .collect();

    let barrier = Barrier::new(2);
    let (decisions, uploads): (Vec<_>, Vec<_>) = std::thread::scope(|s| {
        let deciding = s.spawn(|| {
            trials
                .iter()
                .map(|(d, _)| {
                    barrier.wait();
                    store.record_decision(d, DecisionGuard::None)
                })
                .collect::<Vec<_>>()
        });
        let uploading = s.spawn(|| {
            trials
                .iter()
                .map(|(_, upload)| {
                    barrier.wait();
                    store.record_study_data(upload)
                })
                .collect::<Vec<_>>()
        });
        (deciding.join().unwrap(), uploading.join().unwrap())
    });

    let stored_decisions: BTreeMap<i64, Decision> = store
        .decisions()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            (d.decision_idx.get(), d)
        })
        .collect();
    let stored_uploads: BTreeMap<i64, StudyRecord> = store
        .study_data()
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.decision_idx.get(), r)
        })
        .collect();

    let mut decision_first = 0;
    let mut upload_first = 0;
    for (((d, upload), decision), uploaded) in trials.iter().zip(decisions).zip(uploads) {
        let i = d.decision_idx.get();
        let agrees = upload.action == d.action;
        let outcome = RaceOutcome {
            decision,
            upload: uploaded,
        };
        let as_decision_first = matches!(outcome.decision, Ok(Recorded::Inserted))
            && if agrees {
                matches!(
                    outcome.upload,
                    Ok(UploadRecorded {
                        action_logged: true
                    })
                )
            } else {
                matches!(
                    outcome.upload,
                    Err(StoreError::UploadMismatch { logged_action, logged_prob })
                        if logged_action == d.action && logged_prob == d.action_prob
                )
            };
        let as_upload_first = matches!(
            outcome.upload,
            Ok(UploadRecorded {
                action_logged: false
            })
        ) && matches!(outcome.decision, Err(StoreError::StudyDataExists));
        assert!(
            as_decision_first || as_upload_first,
            "trial {i} (upload {}): answers no order gives: {outcome:?}",
            if agrees { "agreeing" } else { "contradicting" }
        );
        if as_decision_first {
            decision_first += 1;
            assert_eq!(stored_decisions.get(&i), Some(d), "trial {i}: the decision");
            let expected = agrees.then_some(upload);
            assert_eq!(stored_uploads.get(&i), expected, "trial {i}: the upload");
        } else {
            upload_first += 1;
            assert_eq!(stored_decisions.get(&i), None, "trial {i}: no decision");
            assert_eq!(
                stored_uploads.get(&i),
                Some(upload),
                "trial {i}: the upload"
            );
        }
    }
    // Which order each trial took is up to the scheduler; printed, not asserted.
    eprintln!("{decision_first} trials ended decision first, {upload_first} upload first");
}

/// `record_study_data` MUST return `UnknownUser` for a participant that is not registered.
pub fn record_study_data_rejects_unknown_user(store: &dyn Store) {
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0, 0))
        .unwrap();
    let result = store.record_study_data(&study_record(&user("mallory"), 0));
    assert!(
        matches!(result, Err(StoreError::UnknownUser)),
        "upload for an unregistered user: expected UnknownUser, got {result:?}"
    );
    assert_eq!(count(store, "study_data"), 0);
}

/// A second `record_study_data` for one pair MUST return `StudyDataExists` and keep the first.
pub fn record_study_data_rejects_duplicate(store: &dyn TestingStore) {
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let first = study_record(&alice, 3);
    store.record_study_data(&first).unwrap();

    let mut second = study_record(&alice, 3);
    second.reward = -1.0;
    let result = store.record_study_data(&second);
    assert!(
        matches!(result, Err(StoreError::StudyDataExists)),
        "second upload of one decision: expected StudyDataExists, got {result:?}"
    );
    let stored: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(stored, vec![first]);
}

/// Sets up alice with one logged decision (action 1, probability 1/3) and returns it.
fn logged_decision(store: &dyn Store) -> Decision {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let logged = decision(&alice, 4, 1, params.version);
    store.record_decision(&logged, DecisionGuard::None).unwrap();
    logged
}

/// Asserts that `upload` is refused as differing from `logged`, and that nothing was stored.
fn assert_mismatch(store: &dyn Store, logged: &Decision, upload: &StudyRecord) {
    match store.record_study_data(upload) {
        Err(StoreError::UploadMismatch {
            logged_action,
            logged_prob,
        }) => {
            assert_eq!(logged_action, logged.action, "the logged action is named");
            assert_eq!(
                logged_prob, logged.action_prob,
                "the logged probability is named"
            );
        }
        other => panic!(
            "an upload differing from the logged decision: expected UploadMismatch, got {other:?}"
        ),
    }
    assert_eq!(
        count(store, "study_data"),
        0,
        "a refused upload stores nothing"
    );
}

/// `record_study_data` MUST return `UploadMismatch`, naming the logged values, and store
/// nothing, when the logged decision has another action.
pub fn upload_differing_in_action_is_refused(store: &dyn Store) {
    let logged = logged_decision(store);
    let upload = StudyRecord {
        action: Action::Zero,
        ..upload_for(&logged)
    };
    assert_mismatch(store, &logged, &upload);
    // The matching upload is still accepted afterwards.
    assert_eq!(
        store.record_study_data(&upload_for(&logged)).unwrap(),
        UploadRecorded {
            action_logged: true
        }
    );
}

/// `record_study_data` MUST return `UploadMismatch` and store nothing when the uploaded
/// probability lies more than 1e-9 from the logged one; closer is the same probability.
pub fn upload_differing_in_probability_is_refused(store: &dyn Store) {
    let logged = logged_decision(store);
    let p = logged.action_prob.get();
    for off in [1e-6, -1e-6, 0.5] {
        let upload = StudyRecord {
            action_prob: Probability::new(p + off).unwrap(),
            ..upload_for(&logged)
        };
        assert_mismatch(store, &logged, &upload);
    }
    let rounded = StudyRecord {
        action_prob: Probability::new(p + 1e-12).unwrap(),
        ..upload_for(&logged)
    };
    assert_eq!(
        store.record_study_data(&rounded).unwrap(),
        UploadRecorded {
            action_logged: true
        },
        "a probability within 1e-9 of the logged one matches"
    );
}

/// An upload that agrees with the logged decision is stored and marked as logged.
pub fn upload_matching_the_logged_decision_is_marked_logged(store: &dyn TestingStore) {
    let logged = logged_decision(store);
    let upload = upload_for(&logged);
    assert_eq!(
        store.record_study_data(&upload).unwrap(),
        UploadRecorded {
            action_logged: true
        }
    );
    let stored: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(stored, vec![upload]);
}

/// An upload for a decision that was never logged is stored and marked as not logged; a
/// decision logged for another index or user does not count.
pub fn upload_without_logged_decision_is_marked_unlogged(store: &dyn Store) {
    let logged = logged_decision(store);
    let bob = user("bob");
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let other_index = study_record(&logged.user_id, logged.decision_idx.get() + 1);
    let other_user = study_record(&bob, logged.decision_idx.get());
    for upload in [&other_index, &other_user] {
        assert_eq!(
            store.record_study_data(upload).unwrap(),
            UploadRecorded {
                action_logged: false
            }
        );
    }
    assert_eq!(count(store, "study_data"), 2);
}

/// `decisions` MUST yield every stored decision in the order they were stored, across any
/// internal paging, and nothing for an empty store.
pub fn decisions_stream_every_decision_in_order(store: &dyn Store) {
    assert_eq!(store.decisions().unwrap().count(), 0);
    let params = seeded(store);
    let users = [user("u-a"), user("u-b"), user("u-c")];
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let n = MANY_RECORDS;
    let stored: Vec<Decision> = (0..n)
        .map(|i| {
            // Indices run backwards per user, so storage order differs from key order.
            let d = decision(
                &users[(i % 3) as usize],
                n - i,
                (i % 7) as u32,
                params.version,
            );
            assert_eq!(
                store.record_decision(&d, DecisionGuard::None).unwrap(),
                Recorded::Inserted
            );
            d
        })
        .collect();
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed.len(), stored.len());
    if let Some(i) = (0..stored.len()).find(|&i| streamed[i] != stored[i]) {
        panic!(
            "decision {i} differs: streamed {:?}, stored {:?}",
            streamed[i], stored[i]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Model parameters

/// Before any version is stored there is no current version and no version 1.
pub fn parameters_are_absent_before_seeding(store: &dyn Store) {
    assert_eq!(store.current_parameters().unwrap(), None);
    assert_eq!(store.parameters(1).unwrap(), None);
}

/// `seed_parameters` stores version 1 once; later calls return the current version and keep
/// the first values.
pub fn seed_parameters_is_idempotent(store: &dyn Store) {
    let first_values = json!({"mu": [0.5, -1.25], "sigma": 2});
    let first = store
        .seed_parameters("algo-a", &first_values, at(1, 5))
        .unwrap();
    let expected = ModelParameters {
        version: 1,
        algorithm: "algo-a".into(),
        values: first_values,
        created_at: at(1, 5),
    };
    assert_eq!(first, expected);

    let second = store
        .seed_parameters("algo-b", &json!({"other": true}), at(2, 0))
        .unwrap();
    assert_eq!(second, expected, "a second seed must change nothing");
    assert_eq!(store.current_parameters().unwrap(), Some(expected.clone()));
    assert_eq!(store.parameters(1).unwrap(), Some(expected));
    assert_eq!(store.parameters(2).unwrap(), None);
    assert_eq!(count(store, "model_parameters"), 1);
}

/// Concurrent `seed_parameters` calls MUST leave exactly one version 1, and all see it.
pub fn concurrent_seeding_leaves_one_version(store: &dyn Store) {
    const THREADS: u32 = 8;
    let barrier = Barrier::new(THREADS as usize);
    let seen: Vec<ModelParameters> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    store
                        .seed_parameters("algo", &json!({ "thread": t }), at(0, 0))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let stored = store.parameters(1).unwrap().expect("version 1 exists");
    assert!(
        seen.iter().all(|p| *p == stored),
        "every seeder sees the stored version 1"
    );
    assert_eq!(count(store, "model_parameters"), 1);
}

/// `publish_parameters` MUST store the newest version plus one; `seed_parameters` then
/// returns the newest.
pub fn publish_parameters_increments_without_gaps(store: &dyn TestingStore) {
    seeded(store);
    for expected_version in 2..=4 {
        let values = json!({ "round": expected_version });
        let published = store
            .publish_parameters("test-algo", &values, at(expected_version, 7))
            .unwrap();
        let expected = ModelParameters {
            version: expected_version,
            algorithm: "test-algo".into(),
            values,
            created_at: at(expected_version, 7),
        };
        assert_eq!(published, expected);
        assert_eq!(store.current_parameters().unwrap(), Some(expected.clone()));
        assert_eq!(store.parameters(expected_version).unwrap(), Some(expected));
    }
    assert_eq!(
        store
            .seed_parameters("test-algo", &json!({}), at(9, 0))
            .unwrap()
            .version,
        4,
        "seeding after publishing returns the newest version"
    );
    assert_eq!(
        store.parameters(1).unwrap().unwrap().values,
        json!({"mu": [0.0, 1.0]})
    );
    assert_eq!(count(store, "model_parameters"), 4);
}

/// Concurrent publishers MUST still produce versions that increase by one with no gaps.
pub fn concurrent_publishers_leave_no_gaps(store: &dyn TestingStore) {
    const THREADS: i64 = 6;
    const EACH: i64 = 4;
    seeded(store);
    let barrier = Barrier::new(THREADS as usize);
    let versions: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    (0..EACH)
                        .map(|n| {
                            store
                                .publish_parameters("test-algo", &json!([t, n]), at(t, 0))
                                .unwrap()
                                .version
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let distinct: BTreeSet<i64> = versions.iter().copied().collect();
    let expected: BTreeSet<i64> = (2..=1 + THREADS * EACH).collect();
    assert_eq!(
        versions.len(),
        distinct.len(),
        "no version is handed out twice"
    );
    assert_eq!(distinct, expected, "versions run from 2 with no gaps");
    assert_eq!(
        store.current_parameters().unwrap().unwrap().version,
        1 + THREADS * EACH
    );
    for v in expected {
        assert!(
            store.parameters(v).unwrap().is_some(),
            "version {v} is stored"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Study data

/// More records than an adapter would sensibly read at once, to cross page boundaries.
const MANY_RECORDS: i64 = 12_000;

/// Stores `n` records for three users, interleaved, and returns them in upload order.
fn upload_many(store: &dyn Store, n: i64) -> Vec<StudyRecord> {
    let users = [user("u-a"), user("u-b"), user("u-c")];
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    (0..n)
        .map(|i| {
            // Indices run backwards per user, so upload order differs from key order.
            let record = study_record(&users[(i % 3) as usize], n - i);
            store.record_study_data(&record).unwrap();
            record
        })
        .collect()
}

/// `study_data` MUST yield every stored record, in upload order, across any internal paging.
pub fn study_data_streams_every_record_in_upload_order(store: &dyn TestingStore) {
    let uploaded = upload_many(store, MANY_RECORDS);
    let streamed: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed.len(), uploaded.len());
    if let Some(i) = (0..uploaded.len()).find(|&i| streamed[i] != uploaded[i]) {
        panic!(
            "record {i} differs: streamed {:?}, uploaded {:?}",
            streamed[i], uploaded[i]
        );
    }
}

/// Records stored after `study_data` is called MUST NOT appear in its stream, even when the
/// stream has to read several pages.
pub fn study_data_excludes_records_stored_after_the_call(store: &dyn TestingStore) {
    let uploaded = upload_many(store, MANY_RECORDS);
    let late_user = user("late");
    store
        .add_user(&late_user, &Enrollment::default(), at(0, 0))
        .unwrap();

    let mut stream = store.study_data().unwrap();
    store
        .record_study_data(&study_record(&late_user, 0))
        .unwrap();
    let first = stream.next().expect("a first record").unwrap();
    store
        .record_study_data(&study_record(&late_user, 1))
        .unwrap();
    let rest: Vec<StudyRecord> = stream.map(Result::unwrap).collect();

    assert_eq!(first, uploaded[0]);
    assert_eq!(rest.len(), uploaded.len() - 1);
    assert!(
        rest.iter().all(|r| r.user_id != late_user),
        "records uploaded after the call must not be streamed"
    );
    // A new call sees them.
    assert_eq!(
        store.study_data().unwrap().count(),
        uploaded.len() + 2,
        "a later call streams the later records"
    );
}

/// An empty store streams nothing, and the store stays usable afterwards.
pub fn study_data_of_empty_store_is_empty(store: &dyn TestingStore) {
    assert_eq!(store.study_data().unwrap().count(), 0);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store.record_study_data(&study_record(&alice, 0)).unwrap();
    assert_eq!(store.study_data().unwrap().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Update requests and jobs

/// Update requests are stored as given and read back; unknown ids read as `None`.
pub fn update_requests_are_stored_as_given(store: &dyn Store) {
    let requests = [update_request(1), update_request(2)];
    for r in &requests {
        store.create_update_request(r).unwrap();
    }
    for r in &requests {
        assert_eq!(store.update_request(r.id).unwrap().as_ref(), Some(r));
    }
    assert_eq!(store.update_request(Uuid::new_v4()).unwrap(), None);
}

/// A worker reads its clock, then claims: a request received in between MUST start at its
/// `received_at`, and a later clock reading is kept as given.
pub fn a_claim_never_starts_a_request_before_it_was_received(store: &dyn Store) {
    seeded(store);
    let r = update_request(5);
    store.create_update_request(&r).unwrap();
    let early = r.received_at - chrono::Duration::microseconds(23);
    let job = claim(store, early);
    assert_eq!(job.request().started_at, Some(r.received_at));
    drop(job);
    assert_eq!(
        store.update_request(r.id).unwrap().unwrap().started_at,
        Some(r.received_at),
        "the stored start"
    );
    let late = r.received_at + chrono::Duration::seconds(3);
    let again = claim(store, late);
    assert_eq!(again.request().started_at, Some(late));
}

/// `claim_update` MUST return `None` when no request is unfinished: none at all, or only
/// finished ones.
pub fn claim_update_returns_none_without_unfinished_requests(store: &dyn Store) {
    seeded(store);
    assert!(store.claim_update(at(1, 0)).unwrap().is_none());
    let r = update_request(1);
    store.create_update_request(&r).unwrap();
    claim(store, at(2, 0)).fail("no", at(3, 0)).unwrap();
    assert!(store.claim_update(at(4, 0)).unwrap().is_none());
    assert_eq!(
        store.update_request(r.id).unwrap().unwrap().attempts,
        1,
        "a claim that finds nothing counts no attempt"
    );
}

/// `claim_update` MUST claim the oldest unfinished request by reception time, whatever the
/// order they were stored in, and count the attempt.
pub fn claim_update_takes_the_oldest_request_first(store: &dyn Store) {
    seeded(store);
    let newest = update_request(30);
    let oldest = update_request(10);
    let middle = update_request(20);
    for r in [&newest, &oldest, &middle] {
        store.create_update_request(r).unwrap();
    }
    for (expected, n) in [(&oldest, 1), (&middle, 2), (&newest, 3)] {
        let job = claim(store, at(100 + n, 5));
        let request = job.request().clone();
        assert_eq!(
            request.id, expected.id,
            "claim {n} takes the oldest unfinished"
        );
        assert_eq!(request.attempts, 1);
        assert_eq!(request.started_at, Some(at(100 + n, 5)));
        assert_eq!(request.status, UpdateStatus::Processing);
        job.fail("checked", at(200, 0)).unwrap();
    }
    assert!(store.claim_update(at(300, 0)).unwrap().is_none());
}

/// While a job is claimed, `claim_update` MUST return `None` to every other caller, even with
/// requests waiting; once the job ends they are claimable.
pub fn second_claim_while_a_job_runs_returns_none(store: &dyn Store) {
    seeded(store);
    let first = update_request(1);
    let second = update_request(2);
    store.create_update_request(&first).unwrap();
    store.create_update_request(&second).unwrap();

    let job = claim(store, at(10, 0));
    assert_eq!(job.request().id, first.id);
    let elsewhere = std::thread::scope(|s| {
        s.spawn(|| store.claim_update(at(11, 0)).unwrap().is_none())
            .join()
            .unwrap()
    });
    assert!(
        elsewhere,
        "a claim from another thread while a job runs gets nothing"
    );
    assert!(
        store.claim_update(at(12, 0)).unwrap().is_none(),
        "nor does another claim from this thread"
    );
    assert_eq!(
        store.update_request(second.id).unwrap().unwrap().attempts,
        0,
        "a refused claim counts no attempt"
    );
    job.complete("test-algo", &json!({"v": 2}), &provenance(0), at(13, 0))
        .unwrap();

    let next = std::thread::scope(|s| {
        s.spawn(|| {
            let job = claim(store, at(14, 0));
            let id = job.request().id;
            job.fail("checked", at(15, 0)).unwrap();
            id
        })
        .join()
        .unwrap()
    });
    assert_eq!(
        next, second.id,
        "after the job ends, the next request is claimable"
    );
}

/// A job dropped without `complete` or `fail` MUST change nothing but its attempt count, and
/// its request MUST be claimable again (counting the new attempt).
pub fn dropped_job_changes_nothing_and_is_claimed_again(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store.record_study_data(&study_record(&alice, 0)).unwrap();
    let r = update_request(1);
    store.create_update_request(&r).unwrap();

    let mut job = claim(store, at(10, 0));
    assert_eq!(job.current_parameters().unwrap(), params);
    assert_eq!(
        job.study_data(UpdateInclusion::default()).unwrap().count(),
        1
    );
    drop(job);

    assert_eq!(store.current_parameters().unwrap(), Some(params.clone()));
    assert_eq!(count(store, "model_parameters"), 1);
    assert_eq!(count(store, "update_provenance"), 0);
    let stored = store.update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Processing);
    assert_eq!(stored.attempts, 1, "the dropped attempt is on record");
    assert_eq!(stored.started_at, Some(at(10, 0)));

    let again = claim(store, at(20, 0));
    assert_eq!(again.request().id, r.id);
    assert_eq!(again.request().attempts, 2);
    assert_eq!(again.request().started_at, Some(at(20, 0)));
    drop(again);
    assert_eq!(store.update_request(r.id).unwrap().unwrap().attempts, 2);
}

/// A requeued job MUST change nothing, and its request MUST be claimable again as if the
/// requeued attempt had never started.
pub fn requeued_job_changes_nothing_and_is_claimed_afresh(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store.record_study_data(&study_record(&alice, 0)).unwrap();
    let r = update_request(1);
    store.create_update_request(&r).unwrap();

    let mut job = claim(store, at(10, 0));
    assert_eq!(job.request().attempts, 1);
    assert_eq!(
        job.study_data(UpdateInclusion::default()).unwrap().count(),
        1
    );
    job.requeue().unwrap();

    assert_eq!(store.current_parameters().unwrap(), Some(params.clone()));
    assert_eq!(count(store, "model_parameters"), 1);
    assert_eq!(count(store, "update_provenance"), 0);
    let stored = store.update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Processing);
    assert_eq!(stored.attempts, 0, "the requeued attempt is not counted");
    assert_eq!(stored.started_at, None);

    let mut again = claim(store, at(20, 0));
    assert_eq!(again.request().id, r.id);
    assert_eq!(again.request().attempts, 1);
    assert_eq!(again.request().started_at, Some(at(20, 0)));
    let current = again.current_parameters().unwrap();
    again
        .complete("flat_prob", &current.values, &provenance(1), at(21, 0))
        .unwrap();
    let done = store.update_request(r.id).unwrap().unwrap();
    assert_eq!(done.status, UpdateStatus::Completed);
    assert_eq!(done.attempts, 1);
    assert_eq!(count(store, "model_parameters"), 2);
}

/// `complete` MUST store the newest version plus one and mark the request completed with its
/// provenance, all visible through `update_request`; the job reads the current parameters and
/// every study record.
pub fn completed_job_stores_next_version_with_provenance(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let uploaded: Vec<StudyRecord> = (0..5).map(|i| study_record(&alice, i)).collect();
    for record in &uploaded {
        store.record_study_data(record).unwrap();
    }
    let r = update_request(1);
    store.create_update_request(&r).unwrap();

    let mut job = claim(store, at(10, 0));
    assert_eq!(job.current_parameters().unwrap(), params);
    let read: Vec<StudyRecord> = job
        .study_data(UpdateInclusion::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read, uploaded, "the job reads every record in upload order");
    let values = json!({"mu": [0.25, 0.75]});
    let published = job
        .complete("test-algo", &values, &provenance(5), at(11, 123))
        .unwrap();

    let expected = ModelParameters {
        version: params.version + 1,
        algorithm: "test-algo".into(),
        values,
        created_at: at(11, 123),
    };
    assert_eq!(published, expected);
    assert_eq!(store.current_parameters().unwrap(), Some(expected.clone()));
    assert_eq!(store.parameters(expected.version).unwrap(), Some(expected));
    let mut completed = r.clone();
    completed.status = UpdateStatus::Completed;
    completed.finished_at = Some(at(11, 123));
    completed.parameter_version = Some(params.version + 1);
    completed.attempts = 1;
    completed.started_at = Some(at(10, 0));
    completed.provenance = Some(provenance(5));
    assert_eq!(store.update_request(r.id).unwrap(), Some(completed));
    assert!(
        store.claim_update(at(12, 0)).unwrap().is_none(),
        "nothing left to claim"
    );
}

/// `fail` MUST mark the request failed with the error and leave the parameters as they were.
pub fn failed_job_keeps_parameters_and_records_the_error(store: &dyn Store) {
    let params = seeded(store);
    let r = update_request(1);
    store.create_update_request(&r).unwrap();

    let mut job = claim(store, at(10, 0));
    job.current_parameters().unwrap();
    job.fail("the algorithm refused: p = NaN", at(12, 34))
        .unwrap();

    assert_eq!(store.current_parameters().unwrap(), Some(params));
    assert_eq!(count(store, "model_parameters"), 1);
    let mut failed = r.clone();
    failed.status = UpdateStatus::Failed;
    failed.finished_at = Some(at(12, 34));
    failed.error = Some("the algorithm refused: p = NaN".into());
    failed.attempts = 1;
    failed.started_at = Some(at(10, 0));
    assert_eq!(store.update_request(r.id).unwrap(), Some(failed));
    assert!(store.claim_update(at(13, 0)).unwrap().is_none());
}

/// Workers racing for many queued requests MUST run each exactly once, one at a time, and the
/// versions they store MUST increase by one with no gaps.
pub fn concurrent_claimers_run_each_request_once_without_gaps(store: &dyn Store) {
    const THREADS: usize = 4;
    const REQUESTS: u32 = 24;
    seeded(store);
    let requests: Vec<UpdateRequest> = (0..REQUESTS).map(update_request).collect();
    for r in &requests {
        store.create_update_request(r).unwrap();
    }
    let done = AtomicUsize::new(0);
    let running = AtomicUsize::new(0);
    let runs: Mutex<Vec<(Uuid, i64, i64)>> = Mutex::new(Vec::new());
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (done, running, runs, barrier) = (&done, &running, &runs, &barrier);
            s.spawn(move || {
                barrier.wait();
                // A bound instead of a clock: far more refused claims than the work needs.
                let mut refused = 0u32;
                while done.load(Ordering::SeqCst) < REQUESTS as usize {
                    let Some(mut job) = store.claim_update(at(t as i64, 0)).unwrap() else {
                        refused += 1;
                        assert!(refused < 200_000, "thread {t} never got a job");
                        std::thread::sleep(Duration::from_micros(200));
                        continue;
                    };
                    assert_eq!(
                        running.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two jobs ran at once"
                    );
                    let id = job.request().id;
                    assert_eq!(job.request().attempts, 1, "no request is claimed twice");
                    let read = job.current_parameters().unwrap().version;
                    let values = json!({ "thread": t });
                    running.fetch_sub(1, Ordering::SeqCst);
                    let published = job
                        .complete("test-algo", &values, &provenance(0), at(50, 0))
                        .unwrap();
                    runs.lock().unwrap().push((id, read, published.version));
                    done.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    let runs = runs.into_inner().unwrap();
    let ids: BTreeSet<Uuid> = runs.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(runs.len(), REQUESTS as usize, "as many runs as requests");
    assert_eq!(
        ids,
        requests.iter().map(|r| r.id).collect(),
        "each request ran once"
    );
    let versions: BTreeSet<i64> = runs.iter().map(|(_, _, v)| *v).collect();
    assert_eq!(
        versions,
        (2..=i64::from(REQUESTS) + 1).collect(),
        "versions run from 2 with no gaps"
    );
    for (id, read, published) in &runs {
        assert_eq!(
            *published,
            read + 1,
            "update {id} built on the newest version"
        );
        let stored = store.update_request(*id).unwrap().unwrap();
        assert_eq!(stored.status, UpdateStatus::Completed);
        assert_eq!(stored.parameter_version, Some(*published));
        assert_eq!(stored.attempts, 1);
    }
}

/// `record_callback` stores a delivery as given; `undelivered_callbacks` lists finished
/// requests whose delivery is pending, oldest first, and nothing else.
pub fn callbacks_are_recorded_and_pending_ones_listed(store: &dyn Store) {
    seeded(store);
    let completed = update_request(1);
    let failed = update_request(2);
    let processing = update_request(3);
    for r in [&completed, &failed, &processing] {
        store.create_update_request(r).unwrap();
    }
    assert!(
        store.undelivered_callbacks().unwrap().is_empty(),
        "unfinished requests have nothing to deliver"
    );
    claim(store, at(10, 0))
        .complete("test-algo", &json!({}), &provenance(0), at(11, 0))
        .unwrap();
    claim(store, at(12, 0)).fail("boom", at(13, 0)).unwrap();

    let pending = store.undelivered_callbacks().unwrap();
    assert_eq!(
        pending.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![completed.id, failed.id]
    );
    assert_eq!(
        pending[0],
        store.update_request(completed.id).unwrap().unwrap()
    );

    let delivered = CallbackDelivery {
        status: CallbackStatus::Delivered,
        attempts: 2,
        last_error: None,
        finished_at: Some(at(20, 1)),
    };
    store.record_callback(completed.id, &delivered).unwrap();
    assert_eq!(
        store
            .update_request(completed.id)
            .unwrap()
            .unwrap()
            .callback,
        delivered
    );
    assert_eq!(
        store
            .undelivered_callbacks()
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect::<Vec<_>>(),
        vec![failed.id]
    );

    let given_up = CallbackDelivery {
        status: CallbackStatus::Failed,
        attempts: 5,
        last_error: Some("connection refused".into()),
        finished_at: Some(at(21, 2)),
    };
    store.record_callback(failed.id, &given_up).unwrap();
    assert_eq!(
        store.update_request(failed.id).unwrap().unwrap().callback,
        given_up
    );
    assert!(store.undelivered_callbacks().unwrap().is_empty());

    let unknown = store.record_callback(Uuid::new_v4(), &delivered);
    assert!(
        matches!(unknown, Err(StoreError::UnknownUpdate)),
        "recording the callback of an unknown request: expected UnknownUpdate, got {unknown:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Whole-store operations

/// What [`populate`] stored.
struct Populated {
    counts: BTreeMap<String, u64>,
    users: Vec<UserId>,
    updates: Vec<Uuid>,
}

/// The participants [`contents`] reads back: those [`populate`] registers (`p4` is erased)
/// and one a check adds after a backup.
const PARTICIPANTS: [&str; 5] = ["p1", "p2", "p3", "p4", "after-backup"];

/// Fills every table with a different number of rows: 3 registered participants and one
/// erased, 2 parameter versions, 9 decisions (every policy, out of the study too), 6 study
/// records, 3 update requests (completed, failed with a two-line error, processing),
/// 1 provenance record, 5 history entries and 1 erasure.
fn populate(store: &dyn Store) -> Populated {
    let params = seeded(store);
    let users = vec![user("p1"), user("p2"), user("p3")];
    store
        .add_user(&users[0], &Enrollment::default(), at(0, 0))
        .unwrap();
    store
        .add_user(&users[1], &window(Some(-5), None), at(0, 0))
        .unwrap();
    store
        .add_user(&users[2], &window(Some(-5), Some(500)), at(0, 0))
        .unwrap();
    // Four decisions: two of the default type, one of another type on the same index, and
    // one unavailable, with a reason holding a comma and a quote.
    let mut decisions: Vec<Decision> = vec![
        decision(&users[0], 0, 1, params.version),
        decision(&users[0], 1, 1, params.version),
        Decision {
            decision_type: kind("evening"),
            ..decision(&users[0], 0, 3, params.version)
        },
        unavailable(
            decision(&users[0], 2, 1, params.version),
            Some("driving, \"busy\""),
        ),
    ];
    // Four of p3, one of each other policy, and one out of the study.
    decisions.extend([
        with_policy(decision(&users[2], 0, 1, params.version), Policy::Warmup),
        with_policy(
            decision(&users[2], 1, 2, params.version),
            Policy::Fallback {
                reason: "invalid parameters: \"p\", second\nline".into(),
            },
        ),
        with_policy(
            decision(&users[2], 2, 3, params.version),
            Policy::Host {
                decided_by: "study server, \"plan B\"".into(),
            },
        ),
        out_of_study(
            decision(&users[2], 3, 4, params.version),
            OutOfStudy::Withdrawn,
        ),
    ]);
    for d in &decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    store.record_study_data(&upload_for(&decisions[0])).unwrap();
    for i in 0..3 {
        store
            .record_study_data(&study_record(&users[1], i))
            .unwrap();
    }
    store.record_study_data(&upload_for(&decisions[3])).unwrap();
    store.record_study_data(&upload_for(&decisions[5])).unwrap();
    // A correction whose sent text holds a comma, a quote and a newline.
    store
        .record_correction(&StudyRecord {
            sent_timestamp: "2025-01-02T00:00:00Z, \"again\"\nsecond line".into(),
            ..corrections::correction_of(&upload_for(&decisions[0]), 3, 1)
        })
        .unwrap();
    store
        .change_enrollment(&users[1], &window(Some(-5), Some(900)), at(3, 0))
        .unwrap();
    store
        .withdraw(&users[2], "moved, \"no phone\"", at(4, 0))
        .unwrap();
    // p4 is erased: one decision kept under the pseudonym, the upload and history gone.
    let p4 = user("p4");
    store
        .add_user(&p4, &window(Some(-5), None), at(0, 0))
        .unwrap();
    let p4_decision = decision(&p4, 0, 2, params.version);
    store
        .record_decision(&p4_decision, DecisionGuard::None)
        .unwrap();
    store.record_study_data(&upload_for(&p4_decision)).unwrap();
    store.erase_participant(&p4, &erasure(at(4, 500))).unwrap();
    let updates: Vec<UpdateRequest> = (1..=3).map(update_request).collect();
    for r in &updates {
        store.create_update_request(r).unwrap();
    }
    claim(store, at(5, 0))
        .complete("test-algo", &json!({"v": 2}), &provenance(5), at(6, 0))
        .unwrap();
    // A field holding a line break and quotes, as an adapter's files must keep them.
    claim(store, at(7, 0))
        .fail("not enough data\nsecond \"line\", with a comma", at(8, 0))
        .unwrap();
    store
        .record_callback(
            updates[0].id,
            &CallbackDelivery {
                status: CallbackStatus::Delivered,
                attempts: 1,
                last_error: None,
                finished_at: Some(at(9, 0)),
            },
        )
        .unwrap();
    let counts = [
        ("users", 4),
        ("model_parameters", 2),
        ("actions", 9),
        ("study_data", 6),
        ("model_update_requests", 3),
        ("update_provenance", 1),
        ("participant_events", 5),
        ("erasures", 1),
        ("study_data_corrections", 1),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_owned(), n))
    .collect();
    Populated {
        counts,
        users,
        updates: updates.iter().map(|r| r.id).collect(),
    }
}

/// Everything a store holds that the port can read back.
#[derive(Debug, PartialEq)]
struct Contents {
    counts: BTreeMap<String, u64>,
    decisions: Vec<Decision>,
    study_data: Vec<StudyRecord>,
    export: Vec<ExportRow>,
    parameters: Vec<ModelParameters>,
    updates: Vec<Option<UpdateRequest>>,
    participants: Vec<Option<Participant>>,
    erased: BTreeSet<String>,
}

fn contents(store: &dyn TestingStore, updates: &[Uuid]) -> Contents {
    let newest = store.current_parameters().unwrap().map_or(0, |p| p.version);
    Contents {
        counts: counts(store),
        decisions: store.decisions().unwrap().map(Result::unwrap).collect(),
        study_data: store.study_data().unwrap().map(Result::unwrap).collect(),
        export: store.export().unwrap().map(Result::unwrap).collect(),
        parameters: (1..=newest)
            .map(|v| store.parameters(v).unwrap().expect("no version is missing"))
            .collect(),
        updates: updates
            .iter()
            .map(|id| store.update_request(*id).unwrap())
            .collect(),
        participants: PARTICIPANTS
            .iter()
            .map(|name| store.participant(&user(name)).unwrap())
            .collect(),
        erased: store.erased_pseudonyms().unwrap().into_iter().collect(),
    }
}

/// `row_counts` lists every table with its number of rows.
pub fn row_counts_count_every_table(store: &dyn Store) {
    let empty = counts(store);
    assert_eq!(
        empty.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "actions",
            "erasures",
            "model_parameters",
            "model_update_requests",
            "participant_events",
            "study_data",
            "study_data_corrections",
            "update_provenance",
            "users"
        ]
    );
    assert!(
        empty.values().all(|&n| n == 0),
        "a fresh store is empty: {empty:?}"
    );
    let expected = populate(store).counts;
    assert_eq!(counts(store), expected);
}

/// `reset` deletes every row of every table; the store is usable afterwards.
pub fn reset_empties_every_table(store: &dyn TestingStore) {
    populate(store);
    store.reset().unwrap();
    let after = counts(store);
    assert!(after.values().all(|&n| n == 0), "after reset: {after:?}");
    assert_eq!(after.len(), TABLES.len());
    assert_eq!(store.erased_pseudonyms().unwrap(), Vec::<String>::new());
    assert_eq!(store.participant(&user("p1")).unwrap(), None);
    assert_eq!(store.current_parameters().unwrap(), None);
    assert_eq!(store.study_data().unwrap().count(), 0);
    assert_eq!(store.decisions().unwrap().count(), 0);
    // Ids and versions start over.
    store
        .add_user(&user("p1"), &Enrollment::default(), at(0, 0))
        .unwrap();
    assert_eq!(seeded(store).version, 1);
}

/// `backup` creates the missing directory and writes one file there, reporting the row count
/// of every table; no partial file is left beside it.
pub fn backup_writes_one_file_with_matching_row_counts(store: &dyn Store) {
    let expected = populate(store).counts;
    // The directory is the only IO of the suite's own: the port needs somewhere to write.
    let scratch = ScratchDir::new();
    let dir = scratch.0.join("backups");
    let report = store.backup(&dir, at(100, 123_456)).unwrap();

    let reported: BTreeMap<String, u64> = report.row_counts.iter().cloned().collect();
    assert_eq!(reported, expected);
    assert_eq!(report.path.parent(), Some(dir.as_path()));
    let size = std::fs::metadata(&report.path)
        .expect("the reported backup file exists")
        .len();
    assert!(size > 0, "the backup file is not empty");
    let entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        entries,
        vec![report.path.clone()],
        "only the backup file is left"
    );
}

/// `restore` MUST put back every row of a backup, replacing what the store holds, and new
/// rows MUST continue after the restored ones.
pub fn restore_puts_back_every_row_and_continues_ids(store: &dyn TestingStore) {
    let populated = populate(store);
    let before = contents(store, &populated.updates);
    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(100, 0)).unwrap().path;

    // Checking a backup reports what it holds and changes nothing.
    let checked = store.check_backup(&backup).unwrap();
    let held: BTreeMap<String, u64> = checked.row_counts.into_iter().collect();
    assert_eq!(held, populated.counts);
    assert_eq!(contents(store, &populated.updates), before);

    store.reset().unwrap();
    let report = store.restore(&backup).unwrap();
    let reported: BTreeMap<String, u64> = report.row_counts.into_iter().collect();
    assert_eq!(reported, populated.counts);
    assert_eq!(contents(store, &populated.updates), before);
    for u in &populated.users {
        assert!(
            matches!(
                store.add_user(u, &Enrollment::default(), at(1, 0)),
                Err(StoreError::UserExists)
            ),
            "user {u} is restored"
        );
    }

    // Restoring over rows replaces them rather than adding to them.
    let extra = user("after-backup");
    store
        .add_user(&extra, &Enrollment::default(), at(2, 0))
        .unwrap();
    store.record_study_data(&study_record(&extra, 0)).unwrap();
    store.restore(&backup).unwrap();
    assert_eq!(contents(store, &populated.updates), before);

    // New rows continue after the restored ones.
    store
        .add_user(&extra, &Enrollment::default(), at(3, 0))
        .unwrap();
    let params = store.current_parameters().unwrap().unwrap();
    let next = decision(&extra, 0, 3, params.version);
    assert_eq!(
        store.record_decision(&next, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed.len(), before.decisions.len() + 1);
    assert_eq!(
        streamed.last(),
        Some(&next),
        "the new decision comes after the restored ones"
    );
    store.record_study_data(&upload_for(&next)).unwrap();
    let r = update_request(50);
    store.create_update_request(&r).unwrap();
    let job = claim(store, at(60, 0));
    assert_eq!(
        job.request().id,
        populated.updates[2],
        "the restored unfinished request is still queued, ahead of newer ones"
    );
    assert_eq!(job.request().attempts, 1);
    let published = job
        .complete("test-algo", &json!({}), &provenance(0), at(61, 0))
        .unwrap();
    assert_eq!(published.version, params.version + 1);
    let job = claim(store, at(62, 0));
    assert_eq!(job.request().id, r.id);
    job.fail("checked", at(63, 0)).unwrap();
}

/// `restore` MUST refuse, with `InvalidBackup` and before changing anything, a file that is not
/// a complete backup: missing, empty, not a backup at all, or cut short.
pub fn restore_refuses_a_damaged_file_and_changes_nothing(store: &dyn TestingStore) {
    let populated = populate(store);
    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(100, 0)).unwrap().path;
    // Rows the backup does not have, which a restore would remove.
    let extra = user("after-backup");
    store
        .add_user(&extra, &Enrollment::default(), at(2, 0))
        .unwrap();
    store.record_study_data(&study_record(&extra, 0)).unwrap();
    let before = contents(store, &populated.updates);

    let bytes = std::fs::read(&backup).unwrap();
    let damaged = |name: &str, content: &[u8]| -> PathBuf {
        let path = scratch.0.join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let cases: Vec<(&str, PathBuf)> = vec![
        ("a missing file", scratch.0.join("no-such-backup")),
        ("an empty file", damaged("empty", b"")),
        (
            "a file that is no backup",
            damaged("text", b"hello, this is not a backup\n"),
        ),
        ("the first half", damaged("half", &bytes[..bytes.len() / 2])),
        (
            "all but the last 2000 bytes",
            damaged("short", &bytes[..bytes.len() - 2000]),
        ),
        ("the first 700 bytes", damaged("head", &bytes[..700])),
    ];
    for (what, path) in &cases {
        let checked = store.check_backup(path);
        assert!(
            matches!(checked, Err(StoreError::InvalidBackup(_))),
            "checking {what}: expected InvalidBackup, got {checked:?}"
        );
        let result = store.restore(path);
        assert!(
            matches!(result, Err(StoreError::InvalidBackup(_))),
            "restoring {what}: expected InvalidBackup, got {result:?}"
        );
        assert_eq!(
            contents(store, &populated.updates),
            before,
            "restoring {what} changed the store"
        );
    }
    assert!(
        matches!(
            store.add_user(&extra, &Enrollment::default(), at(3, 0)),
            Err(StoreError::UserExists)
        ),
        "rows stored after the backup are still there"
    );
}

/// A fresh path under the system's temporary directory, removed with its contents when the
/// check ends, passing or not.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> Self {
        Self(std::env::temp_dir().join(format!("justin-conformance-{}", Uuid::new_v4().simple())))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Decision types, availability and the analysis export

/// The key of a decision is (user, decision type, decision index): decisions that differ only
/// in type MUST both be stored, and a repeat of each MUST return that one.
pub fn decision_types_key_decisions_separately(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let default = decision(&alice, 0, 1, params.version);
    let morning = Decision {
        decision_type: kind("morning"),
        ..decision(&alice, 0, 2, params.version)
    };
    let evening = Decision {
        decision_type: kind("evening"),
        ..decision(&alice, 0, 3, params.version)
    };
    for d in [&default, &morning, &evening] {
        assert_eq!(
            store.record_decision(d, DecisionGuard::None).unwrap(),
            Recorded::Inserted
        );
    }
    for d in [&default, &morning, &evening] {
        let repeat = Decision {
            action_prob: Probability::new(0.99).unwrap(),
            ..d.clone()
        };
        assert_eq!(
            store.record_decision(&repeat, DecisionGuard::None).unwrap(),
            Recorded::Existing(d.clone()),
            "a repeat of the {} decision returns that one",
            d.decision_type
        );
    }
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, vec![default, morning, evening]);
}

/// Uploads MUST be keyed by (user, decision type, decision index): checked against the logged
/// decision of their own type, once per key, and closing only their own key to decisions.
pub fn uploads_are_keyed_by_decision_type(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let morning = Decision {
        decision_type: kind("morning"),
        ..decision(&alice, 0, 1, params.version)
    };
    store
        .record_decision(&morning, DecisionGuard::None)
        .unwrap();

    // The default type at the same index has no logged decision.
    let default_upload = study_record(&alice, 0);
    assert_eq!(
        store.record_study_data(&default_upload).unwrap(),
        UploadRecorded {
            action_logged: false
        }
    );
    // The morning upload is checked against the morning decision.
    let differing = StudyRecord {
        action: Action::Zero,
        ..upload_for(&morning)
    };
    assert!(matches!(
        store.record_study_data(&differing),
        Err(StoreError::UploadMismatch { .. })
    ));
    assert_eq!(
        store.record_study_data(&upload_for(&morning)).unwrap(),
        UploadRecorded {
            action_logged: true
        }
    );
    assert!(matches!(
        store.record_study_data(&upload_for(&morning)),
        Err(StoreError::StudyDataExists)
    ));
    // Each upload closes its own key only.
    assert!(matches!(
        store.record_decision(&morning, DecisionGuard::None),
        Err(StoreError::StudyDataExists)
    ));
    let evening = Decision {
        decision_type: kind("evening"),
        ..decision(&alice, 0, 2, params.version)
    };
    assert_eq!(
        store
            .record_decision(&evening, DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
    let stored: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(stored, vec![default_upload, upload_for(&morning)]);
}

/// An unavailable decision MUST be stored and read back with its availability and reason
/// (or without a reason when none was given).
pub fn unavailable_decisions_are_stored_with_their_reason(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let with_reason = unavailable(
        decision(&alice, 0, 1, params.version),
        Some("driving, \"busy\"; second line ü"),
    );
    let without_reason = unavailable(decision(&alice, 1, 2, params.version), None);
    let available = decision(&alice, 2, 3, params.version);
    for d in [&with_reason, &without_reason, &available] {
        assert_eq!(
            store.record_decision(d, DecisionGuard::None).unwrap(),
            Recorded::Inserted
        );
    }
    assert_eq!(
        store
            .record_decision(&with_reason, DecisionGuard::None)
            .unwrap(),
        Recorded::Existing(with_reason.clone())
    );
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, vec![with_reason, without_reason, available]);
}

/// An upload MUST be stored with the availability of its logged decision, or as available when
/// none is logged, whatever the record passed in says.
pub fn uploads_take_availability_from_the_logged_decision(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let off = unavailable(decision(&alice, 0, 1, params.version), Some("asleep"));
    let on = decision(&alice, 1, 2, params.version);
    store.record_decision(&off, DecisionGuard::None).unwrap();
    store.record_decision(&on, DecisionGuard::None).unwrap();

    let claims_available = StudyRecord {
        available: true,
        ..upload_for(&off)
    };
    let claims_unavailable = StudyRecord {
        available: false,
        ..upload_for(&on)
    };
    let unlogged = StudyRecord {
        available: false,
        ..study_record(&alice, 2)
    };
    for r in [&claims_available, &claims_unavailable, &unlogged] {
        store.record_study_data(r).unwrap();
    }
    let availability: Vec<(i64, bool)> = store
        .study_data()
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            (r.decision_idx.get(), r.available)
        })
        .collect();
    assert_eq!(availability, vec![(0, false), (1, true), (2, true)]);
}

/// Stores, for alice, decisions 0..n where every third is unavailable, each with its upload;
/// returns the uploads as stored, in upload order.
fn mixed_uploads(store: &dyn Store, n: i64) -> Vec<StudyRecord> {
    let params = store.current_parameters().unwrap().unwrap();
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    (0..n)
        .map(|i| {
            let d = decision(&alice, i, 1, params.version);
            let d = if i % 3 == 1 {
                unavailable(d, Some("busy"))
            } else {
                d
            };
            store.record_decision(&d, DecisionGuard::None).unwrap();
            let upload = upload_for(&d);
            store.record_study_data(&upload).unwrap();
            upload
        })
        .collect()
}

/// `UpdateJob::study_data` MUST stream only the records of available decisions, in upload
/// order.
pub fn update_jobs_never_read_unavailable_records(store: &dyn Store) {
    seeded(store);
    let uploads = mixed_uploads(store, 9);
    store.create_update_request(&update_request(1)).unwrap();
    let mut job = claim(store, at(10, 0));
    let read: Vec<StudyRecord> = job
        .study_data(UpdateInclusion::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<StudyRecord> = uploads.into_iter().filter(|r| r.available).collect();
    assert_eq!(expected.len(), 6);
    assert_eq!(read, expected);
}

/// The upload of each export row, keyed by (type, index), with its first update version.
fn used_versions(store: &dyn Store) -> Vec<(String, i64, Option<i64>)> {
    store
        .export()
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            (
                row.decision.decision_type.to_string(),
                row.decision.decision_idx.get(),
                row.upload.and_then(|u| u.used_in_version),
            )
        })
        .collect()
}

/// `complete` MUST mark the records the job could read with the new version, leave records of
/// earlier updates with theirs, and leave unmarked the records of unavailable decisions and
/// the records stored after the job's snapshot.
pub fn completed_job_marks_the_records_it_read(store: &dyn Store) {
    let params = seeded(store);
    mixed_uploads(store, 3); // indexes 0 and 2 available, 1 not
    store.create_update_request(&update_request(1)).unwrap();
    let mut job = claim(store, at(10, 0));
    assert_eq!(
        job.study_data(UpdateInclusion::default()).unwrap().count(),
        2
    );
    // Stored while the job runs: after its snapshot.
    let alice = user("alice");
    let late = decision(&alice, 3, 1, params.version);
    store.record_decision(&late, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&late)).unwrap();
    let v2 = job
        .complete("test-algo", &json!({}), &provenance(2), at(11, 0))
        .unwrap()
        .version;
    let d = || "default".to_owned();
    assert_eq!(
        used_versions(store),
        vec![
            (d(), 0, Some(v2)),
            (d(), 1, None),
            (d(), 2, Some(v2)),
            (d(), 3, None),
        ]
    );

    // The next update reads all three available records and marks only the new one.
    store.create_update_request(&update_request(2)).unwrap();
    let mut job = claim(store, at(12, 0));
    assert_eq!(
        job.study_data(UpdateInclusion::default()).unwrap().count(),
        3
    );
    let v3 = job
        .complete("test-algo", &json!({}), &provenance(3), at(13, 0))
        .unwrap()
        .version;
    assert_eq!(
        used_versions(store),
        vec![
            (d(), 0, Some(v2)),
            (d(), 1, None),
            (d(), 2, Some(v2)),
            (d(), 3, Some(v3)),
        ]
    );

    // A failed update marks nothing.
    let after = decision(&alice, 4, 1, v3);
    store.record_decision(&after, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&after)).unwrap();
    store.create_update_request(&update_request(3)).unwrap();
    claim(store, at(14, 0)).fail("no", at(15, 0)).unwrap();
    assert_eq!(used_versions(store).last(), Some(&(d(), 4, None)));
}

/// `export` MUST yield one row per stored decision, in storage order, each joined with the
/// upload of its own (user, type, index) when there is one; uploads without a decision are
/// not rows.
pub fn export_joins_every_decision_with_its_upload(store: &dyn Store) {
    assert_eq!(store.export().unwrap().count(), 0);
    let params = seeded(store);
    let alice = user("alice");
    let bob = user("bob");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let plain = decision(&alice, 0, 1, params.version);
    let typed = Decision {
        decision_type: kind("evening"),
        ..decision(&alice, 0, 2, params.version)
    };
    let off = unavailable(decision(&bob, 0, 3, params.version), Some("asleep"));
    let no_upload = decision(&bob, 1, 4, params.version);
    for d in [&plain, &typed, &off, &no_upload] {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    // Uploaded in another order than the decisions, plus one without a decision.
    let typed_upload = upload_for(&typed);
    let off_upload = upload_for(&off);
    let plain_upload = upload_for(&plain);
    for r in [&typed_upload, &off_upload, &plain_upload] {
        store.record_study_data(r).unwrap();
    }
    store.record_study_data(&study_record(&bob, 7)).unwrap();

    let exported = |r: &StudyRecord, used_in_version: Option<i64>| ExportedUpload {
        requested_at: r.requested_at,
        sent_timestamp: r.sent_timestamp.clone(),
        received_at: r.received_at,
        outcome: r.outcome.clone(),
        reward: r.reward,
        used_in_version,
        corrections: 0,
    };
    let rows: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        rows,
        vec![
            ExportRow {
                decision: plain.clone(),
                upload: Some(exported(&plain_upload, None)),
                imputed: None,
            },
            ExportRow {
                decision: typed.clone(),
                upload: Some(exported(&typed_upload, None)),
                imputed: None,
            },
            ExportRow {
                decision: off.clone(),
                upload: Some(exported(&off_upload, None)),
                imputed: None,
            },
            ExportRow {
                decision: no_upload.clone(),
                upload: None,
                imputed: None,
            },
        ]
    );
}

/// `export` MUST stream every decision in storage order across any internal paging.
pub fn export_streams_many_decisions_in_order(store: &dyn Store) {
    let params = seeded(store);
    let users = [user("u-a"), user("u-b"), user("u-c")];
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let n = MANY_RECORDS;
    let mut keys = Vec::new();
    for i in 0..n {
        // Indices run backwards per user, so storage order differs from key order.
        let d = decision(&users[(i % 3) as usize], n - i, 1, params.version);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        if i % 4 == 0 {
            store.record_study_data(&upload_for(&d)).unwrap();
        }
        keys.push((d.user_id, d.decision_idx, i % 4 == 0));
    }
    let streamed: Vec<(UserId, DecisionIdx, bool)> = store
        .export()
        .unwrap()
        .map(|row| {
            let row = row.unwrap();
            (
                row.decision.user_id,
                row.decision.decision_idx,
                row.upload.is_some(),
            )
        })
        .collect();
    assert_eq!(streamed.len(), keys.len());
    if let Some(i) = (0..keys.len()).find(|&i| streamed[i] != keys[i]) {
        panic!(
            "row {i} differs: streamed {:?}, stored {:?}",
            streamed[i], keys[i]
        );
    }
}

/// Decisions stored after `export` is called MUST NOT appear in its stream, even when it has
/// to read several pages.
pub fn export_excludes_decisions_stored_after_the_call(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let n = MANY_RECORDS;
    for i in 0..n {
        store
            .record_decision(&decision(&alice, i, 1, params.version), DecisionGuard::None)
            .unwrap();
    }
    let mut stream = store.export().unwrap();
    let first = stream.next().unwrap().unwrap();
    assert_eq!(first.decision.decision_idx, idx(0));
    for i in n..n + 10 {
        store
            .record_decision(&decision(&alice, i, 1, params.version), DecisionGuard::None)
            .unwrap();
    }
    assert_eq!(
        1 + stream.count(),
        n as usize,
        "the stream holds the decisions stored when it was opened"
    );
    assert_eq!(store.export().unwrap().count(), n as usize + 10);
}

// ---------------------------------------------------------------------------------------------
// The life of a trial: enrollment, withdrawal, guarded decisions, policies and erasure

/// `add_user` MUST store the participant's window as given (each bound open or not, its text
/// as sent) and record the enrollment in their history; `participant` reads them back with no
/// decisions and no uploads, and `None` for an id that is not registered.
pub fn add_user_stores_the_enrollment_window_and_its_history(store: &dyn Store) {
    let registered = [
        ("alice", window(Some(10), Some(20))),
        ("bob", Enrollment::default()),
        ("carol", window(Some(-3), None)),
        ("dave", window(None, Some(7))),
    ];
    for (n, (name, enrollment)) in (0..).zip(&registered) {
        store
            .add_user(&user(name), enrollment, at(n, 123_456))
            .unwrap();
    }
    for (n, (name, enrollment)) in (0..).zip(&registered) {
        assert_eq!(
            store.participant(&user(name)).unwrap(),
            Some(Participant {
                user_id: user(name),
                created_at: at(n, 123_456),
                enrollment: enrollment.clone(),
                withdrawal: None,
                decisions: 0,
                uploads: 0,
            }),
            "participant {name}"
        );
    }
    assert_eq!(store.participant(&user("mallory")).unwrap(), None);
    assert_eq!(count(store, "participant_events"), 4, "one enrollment each");

    // A refused registration changes nothing.
    let again = store.add_user(&user("alice"), &window(Some(30), None), at(9, 0));
    assert!(matches!(again, Err(StoreError::UserExists)), "{again:?}");
    assert_eq!(
        store
            .participant(&user("alice"))
            .unwrap()
            .unwrap()
            .enrollment,
        registered[0].1
    );
    assert_eq!(count(store, "participant_events"), 4);
}

/// `participant` MUST count the participant's stored decisions (of every type, with or without
/// a draw) and uploads (with or without a logged decision), and no one else's.
pub fn participant_counts_decisions_and_uploads(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    let bob = user("bob");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let alices = [
        decision(&alice, 0, 1, params.version),
        decision(&alice, 1, 2, params.version),
        Decision {
            decision_type: kind("evening"),
            ..decision(&alice, 0, 3, params.version)
        },
        unavailable(decision(&alice, 2, 4, params.version), None),
        out_of_study(
            decision(&alice, 3, 5, params.version),
            OutOfStudy::NotInStudy,
        ),
    ];
    for d in &alices {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    store.record_study_data(&upload_for(&alices[0])).unwrap();
    store.record_study_data(&study_record(&alice, 9)).unwrap();
    let bobs = decision(&bob, 0, 1, params.version);
    store.record_decision(&bobs, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&bobs)).unwrap();

    let alice_now = store.participant(&alice).unwrap().unwrap();
    assert_eq!((alice_now.decisions, alice_now.uploads), (5, 2));
    let bob_now = store.participant(&bob).unwrap().unwrap();
    assert_eq!((bob_now.decisions, bob_now.uploads), (1, 1));
}

/// `change_enrollment` MUST replace the window, record the change in the history, return the
/// participant as now stored, and leave decisions stored before as they were; guards use the
/// new window from then on. For an unregistered participant it MUST return `UnknownUser` and
/// change nothing.
pub fn change_enrollment_replaces_the_window_and_records_it(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &window(Some(10), Some(20)), at(0, 0))
        .unwrap();
    let before = requested(decision(&alice, 0, 1, params.version), 15, 0);
    store.record_decision(&before, DecisionGuard::None).unwrap();

    let new_window = window(Some(30), None);
    let changed = store
        .change_enrollment(&alice, &new_window, at(25, 1))
        .unwrap();
    assert_eq!(
        changed,
        Participant {
            user_id: alice.clone(),
            created_at: at(0, 0),
            enrollment: new_window.clone(),
            withdrawal: None,
            decisions: 1,
            uploads: 0,
        }
    );
    assert_eq!(store.participant(&alice).unwrap(), Some(changed));
    assert_eq!(count(store, "participant_events"), 2);
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, vec![before]);

    let old_inside = requested(decision(&alice, 1, 2, params.version), 15, 0);
    assert_eq!(
        store
            .record_decision(&old_inside, in_study(None, None))
            .unwrap(),
        Recorded::Ineligible(ParticipantFacts {
            enrollment: new_window.clone(),
            withdrawn: false,
            earlier_in_study: 0,
            started_participants: 0,
        })
    );
    let new_inside = requested(decision(&alice, 1, 2, params.version), 30, 0);
    assert_eq!(
        store
            .record_decision(&new_inside, in_study(None, None))
            .unwrap(),
        Recorded::Inserted
    );

    let unknown = store.change_enrollment(&user("mallory"), &new_window, at(26, 0));
    assert!(
        matches!(unknown, Err(StoreError::UnknownUser)),
        "{unknown:?}"
    );
    assert_eq!(count(store, "participant_events"), 2);
    assert_eq!(count(store, "users"), 1);
}

/// `withdraw` MUST record the withdrawal (time and reason as given) and its history entry, and
/// return the participant as now stored; a second withdrawal MUST return `AlreadyWithdrawn`
/// and an unregistered participant `UnknownUser`, each changing nothing.
pub fn withdraw_records_the_withdrawal_once(store: &dyn Store) {
    let alice = user("alice");
    store
        .add_user(&alice, &window(Some(10), Some(100)), at(0, 0))
        .unwrap();
    let reason = "moved away, \"no phone\"; ü\nsecond line";
    let withdrawn = store.withdraw(&alice, reason, at(50, 3)).unwrap();
    assert_eq!(
        withdrawn,
        Participant {
            user_id: alice.clone(),
            created_at: at(0, 0),
            enrollment: window(Some(10), Some(100)),
            withdrawal: Some(Withdrawal {
                at: at(50, 3),
                reason: reason.to_owned(),
            }),
            decisions: 0,
            uploads: 0,
        }
    );
    assert_eq!(store.participant(&alice).unwrap(), Some(withdrawn.clone()));
    assert_eq!(count(store, "participant_events"), 2);

    let again = store.withdraw(&alice, "another reason", at(60, 0));
    assert!(
        matches!(again, Err(StoreError::AlreadyWithdrawn)),
        "{again:?}"
    );
    assert_eq!(store.participant(&alice).unwrap(), Some(withdrawn));
    assert_eq!(count(store, "participant_events"), 2);

    let unknown = store.withdraw(&user("mallory"), "why", at(61, 0));
    assert!(
        matches!(unknown, Err(StoreError::UnknownUser)),
        "{unknown:?}"
    );
    assert_eq!(count(store, "participant_events"), 2);
}

/// A guarded decision whose `requested_at` lies inside the window (its start included, its end
/// not) MUST be stored as given; an open bound holds any time.
pub fn guarded_decision_inside_the_window_is_inserted(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    let bob = user("bob");
    store
        .add_user(&alice, &window(Some(10), Some(20)), at(0, 0))
        .unwrap();
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let inside = [
        requested(decision(&alice, 0, 1, params.version), 10, 0),
        requested(decision(&alice, 1, 2, params.version), 19, 999_999),
        requested(decision(&bob, 0, 3, params.version), 100_000, 0),
    ];
    for d in &inside {
        assert_eq!(
            store.record_decision(d, in_study(None, None)).unwrap(),
            Recorded::Inserted,
            "{d:?}"
        );
    }
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, inside.to_vec());
}

/// A guarded decision before the start or at or after the end of the window MUST store
/// nothing and return `Ineligible` with the participant's facts.
pub fn guarded_decision_outside_the_window_is_ineligible(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    let alices_window = window(Some(10), Some(20));
    store.add_user(&alice, &alices_window, at(0, 0)).unwrap();
    let outside = [(9, 999_999), (20, 0), (25, 0)];
    for (i, (seconds, micros)) in (0..).zip(outside) {
        let d = requested(decision(&alice, i, 1, params.version), seconds, micros);
        let plain = store.record_decision(&d, in_study(None, None)).unwrap();
        assert_eq!(
            plain,
            Recorded::Ineligible(ParticipantFacts {
                enrollment: alices_window.clone(),
                withdrawn: false,
                earlier_in_study: 0,
                started_participants: 0,
            }),
            "at {seconds}.{micros}"
        );
        // With warm-up counts, the facts count too: alice has started at 10.
        let counted = store
            .record_decision(&d, in_study(Some(3), Some(5)))
            .unwrap();
        assert_eq!(
            counted,
            Recorded::Ineligible(ParticipantFacts {
                enrollment: alices_window.clone(),
                withdrawn: false,
                earlier_in_study: 0,
                started_participants: u64::from(seconds >= 10),
            }),
            "at {seconds}.{micros}, with counts"
        );
    }
    assert_eq!(count(store, "actions"), 0);
    assert_eq!(store.decisions().unwrap().count(), 0);
    assert_eq!(store.participant(&alice).unwrap().unwrap().decisions, 0);
}

/// A guarded decision of a withdrawn participant MUST store nothing and return `Ineligible`
/// with `withdrawn` set, whatever its time; unguarded, it is stored.
pub fn guarded_decision_of_a_withdrawn_participant_is_ineligible(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let first = requested(decision(&alice, 0, 1, params.version), 1, 0);
    assert_eq!(
        store.record_decision(&first, in_study(None, None)).unwrap(),
        Recorded::Inserted
    );
    store
        .withdraw(&alice, "no longer interested", at(5, 0))
        .unwrap();

    let later = requested(decision(&alice, 1, 2, params.version), 3, 0);
    assert_eq!(
        store.record_decision(&later, in_study(None, None)).unwrap(),
        Recorded::Ineligible(ParticipantFacts {
            enrollment: Enrollment::default(),
            withdrawn: true,
            earlier_in_study: 0,
            started_participants: 0,
        })
    );
    assert_eq!(
        store
            .record_decision(&later, in_study(Some(1), Some(1)))
            .unwrap(),
        Recorded::Ineligible(ParticipantFacts {
            enrollment: Enrollment::default(),
            withdrawn: true,
            earlier_in_study: 1,
            started_participants: 1,
        })
    );
    assert_eq!(count(store, "actions"), 1);
    let recorded = out_of_study(later, OutOfStudy::Withdrawn);
    assert_eq!(
        store
            .record_decision(&recorded, DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, vec![first, recorded]);
}

/// `warmup_first_decisions: Some(n)` MUST hold only when at least `n` decisions of the same
/// participant and type with a smaller index are stored that were available and drawn by the
/// service (algorithm, warm-up or fallback; not unavailable, out of the study or the host's);
/// the facts count them up to `n`.
pub fn guard_counts_earlier_decisions_up_to_the_limit(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let alice = user("alice");
    let bob = user("bob");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let stored = [
        decision(&alice, 0, 1, v),
        with_policy(decision(&alice, 1, 2, v), Policy::Warmup),
        unavailable(decision(&alice, 2, 3, v), Some("asleep")),
        out_of_study(decision(&alice, 3, 4, v), OutOfStudy::NotInStudy),
        with_policy(
            decision(&alice, 4, 5, v),
            Policy::Host {
                decided_by: "host".into(),
            },
        ),
        Decision {
            decision_type: kind("evening"),
            ..decision(&alice, 5, 6, v)
        },
        decision(&alice, 11, 7, v),
        decision(&bob, 6, 8, v),
    ];
    for d in &stored {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    let target = decision(&alice, 10, 9, v);
    assert_eq!(
        store
            .record_decision(&target, in_study(Some(3), None))
            .unwrap(),
        Recorded::Ineligible(ParticipantFacts {
            enrollment: Enrollment::default(),
            withdrawn: false,
            earlier_in_study: 2,
            started_participants: 0,
        }),
        "only the algorithm's and the warm-up's decisions 0 and 1 count"
    );
    let fallback = with_policy(
        decision(&alice, 7, 10, v),
        Policy::Fallback {
            reason: "failed".into(),
        },
    );
    store
        .record_decision(&fallback, DecisionGuard::None)
        .unwrap();
    assert_eq!(
        store
            .record_decision(&target, in_study(Some(3), None))
            .unwrap(),
        Recorded::Inserted,
        "a fallback decision counts"
    );

    for i in [8, 9] {
        store
            .record_decision(&decision(&alice, i, 11, v), DecisionGuard::None)
            .unwrap();
    }
    store.withdraw(&alice, "done", at(1, 0)).unwrap();
    // Decisions 0, 1, 7, 8, 9, 10 and 11 lie below index 12.
    let last = decision(&alice, 12, 12, v);
    for (limit, expected) in [(3, 3), (100, 7)] {
        assert_eq!(
            store
                .record_decision(&last, in_study(Some(limit), None))
                .unwrap(),
            Recorded::Ineligible(ParticipantFacts {
                enrollment: Enrollment::default(),
                withdrawn: true,
                earlier_in_study: expected,
                started_participants: 0,
            }),
            "counted up to {limit}"
        );
    }
}

/// `warmup_until_participants: Some(k)` MUST hold only when at least `k` registered
/// participants had started at the decision's `requested_at` (at their start, or their
/// registration when they have none); the facts count them up to `k`.
pub fn guard_counts_started_participants_up_to_the_limit(store: &dyn Store) {
    let params = seeded(store);
    let a = user("a");
    store
        .add_user(&a, &Enrollment::default(), at(0, 0))
        .unwrap();
    store
        .add_user(&user("b"), &window(Some(100), None), at(0, 0))
        .unwrap();
    store
        .add_user(&user("c"), &Enrollment::default(), at(50, 0))
        .unwrap();
    store
        .add_user(&user("d"), &window(Some(200), Some(300)), at(0, 0))
        .unwrap();
    let facts = |started, withdrawn| ParticipantFacts {
        enrollment: Enrollment::default(),
        withdrawn,
        earlier_in_study: 0,
        started_participants: started,
    };
    for (i, (seconds, started)) in (0..).zip([(10, 1), (60, 2), (99, 2)]) {
        let d = requested(decision(&a, i, 1, params.version), seconds, 0);
        assert_eq!(
            store.record_decision(&d, in_study(None, Some(3))).unwrap(),
            Recorded::Ineligible(facts(started, false)),
            "at {seconds}"
        );
    }
    let reached = requested(decision(&a, 5, 1, params.version), 100, 0);
    assert_eq!(
        store
            .record_decision(&reached, in_study(None, Some(3)))
            .unwrap(),
        Recorded::Inserted
    );
    store.withdraw(&a, "done", at(101, 0)).unwrap();
    let late = requested(decision(&a, 6, 1, params.version), 250, 0);
    for (limit, expected) in [(2, 2), (10, 4)] {
        assert_eq!(
            store
                .record_decision(&late, in_study(None, Some(limit)))
                .unwrap(),
            Recorded::Ineligible(facts(expected, true)),
            "counted up to {limit}"
        );
    }
    assert_eq!(count(store, "actions"), 1);
}

/// When a guarded decision cannot be stored, what stands on its key comes before the
/// participant's facts: a stored decision (`Existing`), an unregistered participant
/// (`UnknownUser`), then uploaded study data (`StudyDataExists`), and only then `Ineligible`.
pub fn guarded_refusals_come_in_order(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let alice = user("alice");
    store
        .add_user(&alice, &window(Some(10), Some(20)), at(0, 0))
        .unwrap();
    let guards = [in_study(None, None), in_study(Some(5), Some(5))];

    let stored = requested(decision(&alice, 0, 1, v), 15, 0);
    store.record_decision(&stored, DecisionGuard::None).unwrap();
    let uploaded = study_record(&alice, 1);
    store.record_study_data(&uploaded).unwrap();
    let closed = requested(decision(&alice, 2, 3, v), 15, 0);
    store.record_decision(&closed, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&closed)).unwrap();

    for guard in guards {
        let outside = |d: Decision| requested(d, 30, 0);
        assert_eq!(
            store
                .record_decision(&outside(decision(&alice, 0, 2, v)), guard)
                .unwrap(),
            Recorded::Existing(stored.clone()),
            "{guard:?}"
        );
        let unknown = store.record_decision(&outside(decision(&user("mallory"), 0, 2, v)), guard);
        assert!(
            matches!(unknown, Err(StoreError::UnknownUser)),
            "{guard:?}: {unknown:?}"
        );
        for i in [1, 2] {
            let refused = store.record_decision(&outside(decision(&alice, i, 2, v)), guard);
            assert!(
                matches!(refused, Err(StoreError::StudyDataExists)),
                "{guard:?}, index {i}: {refused:?}"
            );
        }
    }
    assert_eq!(count(store, "actions"), 2);
}

/// Decisions of every policy (with the fallback's reason and the host's name) and decisions
/// out of the study (with the service's reason) MUST be stored and read back as given, by a
/// repeat, `decisions` and `export`.
pub fn every_policy_and_out_of_study_decisions_round_trip(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let host = Policy::Host {
        decided_by: "study server's schedule, \"v2\"; ü".into(),
    };
    let all = [
        decision(&alice, 0, 1, v),
        with_policy(decision(&alice, 1, 2, v), Policy::Warmup),
        with_policy(
            decision(&alice, 2, 3, v),
            Policy::Fallback {
                reason: "invalid parameters: p must be a probability, \"x\"\nline 2".into(),
            },
        ),
        with_policy(decision(&alice, 3, 4, v), host.clone()),
        with_policy(unavailable(decision(&alice, 4, 5, v), Some("asleep")), host),
        out_of_study(decision(&alice, 5, 6, v), OutOfStudy::NotInStudy),
        out_of_study(decision(&alice, 6, 7, v), OutOfStudy::Withdrawn),
        with_policy(unavailable(decision(&alice, 7, 8, v), None), Policy::Warmup),
    ];
    for d in &all {
        assert_eq!(
            store.record_decision(d, DecisionGuard::None).unwrap(),
            Recorded::Inserted
        );
    }
    for d in &all {
        assert_eq!(
            store.record_decision(d, DecisionGuard::None).unwrap(),
            Recorded::Existing(d.clone())
        );
    }
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, all.to_vec());
    for d in &all[1..3] {
        assert_eq!(
            store.record_study_data(&upload_for(d)).unwrap(),
            UploadRecorded {
                action_logged: true
            }
        );
    }
    let exported: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        exported
            .iter()
            .map(|r| r.decision.clone())
            .collect::<Vec<_>>(),
        all.to_vec()
    );
    let with_upload: Vec<bool> = exported.iter().map(|r| r.upload.is_some()).collect();
    assert_eq!(
        with_upload,
        vec![false, true, true, false, false, false, false, false]
    );
}

/// Streams the study data a new job reads with `include`, and drops the job.
fn job_reads(store: &dyn Store, include: UpdateInclusion) -> Vec<StudyRecord> {
    let mut job = claim(store, at(1000, 0));
    let read: Vec<StudyRecord> = job
        .study_data(include)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(job);
    read
}

const EVERYTHING: UpdateInclusion = UpdateInclusion {
    warmup: true,
    fallback: true,
    host: true,
};

const ALGORITHM_ONLY: UpdateInclusion = UpdateInclusion {
    warmup: false,
    fallback: false,
    host: false,
};

/// A host decision sent after an upload that agrees with it (same action, probability within
/// the tolerance) MUST be stored, and the upload MUST count as logged from then on: it takes
/// the host's policy (so jobs that leave host decisions out no longer read it) and the export
/// joins it to the decision. A repeat returns the stored decision; a decision of the service
/// for the key is still refused.
pub fn host_decision_after_a_matching_upload_is_stored(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    store.create_update_request(&update_request(1)).unwrap();
    let upload = study_record(&alice, 0);
    assert_eq!(
        store.record_study_data(&upload).unwrap(),
        UploadRecorded {
            action_logged: false
        }
    );
    assert_eq!(
        job_reads(store, UpdateInclusion::default()),
        vec![upload.clone()]
    );

    let host = Decision {
        action: upload.action,
        action_prob: Probability::new(upload.action_prob.get() + 1e-12).unwrap(),
        ..with_policy(
            decision(&alice, 0, 3, params.version),
            Policy::Host {
                decided_by: "schedule".into(),
            },
        )
    };
    assert_eq!(
        store.record_decision(&host, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed, vec![host.clone()]);
    let exported: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        exported,
        vec![ExportRow {
            decision: host.clone(),
            upload: Some(ExportedUpload {
                requested_at: upload.requested_at,
                sent_timestamp: upload.sent_timestamp.clone(),
                received_at: upload.received_at,
                outcome: upload.outcome.clone(),
                reward: upload.reward,
                used_in_version: None,
                corrections: 0,
            }),
            imputed: None,
        }]
    );
    assert_eq!(job_reads(store, UpdateInclusion::default()), vec![]);
    assert_eq!(job_reads(store, EVERYTHING), vec![upload]);

    assert_eq!(
        store.record_decision(&host, DecisionGuard::None).unwrap(),
        Recorded::Existing(host.clone()),
        "a repeat of the host decision returns it"
    );
    let drawn = decision(&alice, 0, 3, params.version);
    for guard in [DecisionGuard::None, in_study(None, None)] {
        let refused = store.record_decision(&drawn, guard);
        assert!(
            matches!(refused, Err(StoreError::StudyDataExists)),
            "{refused:?}"
        );
    }
    let alice_now = store.participant(&alice).unwrap().unwrap();
    assert_eq!((alice_now.decisions, alice_now.uploads), (1, 1));
}

/// A host decision that differs from the upload of its key (another action, or a probability
/// more than the tolerance away) MUST be refused with `UploadMismatch` naming the upload's
/// action and probability, storing nothing.
pub fn host_decision_after_a_mismatching_upload_is_refused(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let upload = study_record(&alice, 1);
    store.record_study_data(&upload).unwrap();
    let host = Decision {
        action: upload.action,
        action_prob: upload.action_prob,
        ..with_policy(
            decision(&alice, 1, 3, params.version),
            Policy::Host {
                decided_by: "schedule".into(),
            },
        )
    };
    let other_action = Decision {
        action: match upload.action {
            Action::Zero => Action::One,
            Action::One => Action::Zero,
        },
        ..host.clone()
    };
    let other_prob = Decision {
        action_prob: Probability::new(upload.action_prob.get() + 1e-6).unwrap(),
        ..host.clone()
    };
    for d in [&other_action, &other_prob] {
        match store.record_decision(d, DecisionGuard::None) {
            Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) => assert_eq!(
                (logged_action, logged_prob),
                (upload.action, upload.action_prob)
            ),
            other => panic!("expected UploadMismatch, got {other:?}"),
        }
    }
    assert_eq!(count(store, "actions"), 0);
    let stored: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(stored, vec![upload]);
    assert_eq!(
        store.record_decision(&host, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
}

/// A decision whose key is free and whose parameter version is older than the newest stored
/// version MUST be refused with `UnknownParameterVersion`, storing nothing, whatever its guard
/// (none, in the study, with either warm-up count) and its policy (a host decision too, also
/// over a matching upload), and before the guard is looked at (a participant out of the study
/// as well); under the newest version the same decisions are stored. A decision stored for the
/// key before is still returned, whatever the version of the repeat.
pub fn decisions_behind_the_newest_version_are_refused(store: &dyn TestingStore) {
    let old = seeded(store).version;
    let (alice, bob) = (user("alice"), user("bob"));
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    // Bob's window is over before any decision's time.
    store
        .add_user(&bob, &window(Some(0), Some(1)), at(0, 0))
        .unwrap();
    let stored_before = decision(&alice, 99, 1, old);
    assert_eq!(
        store
            .record_decision(&stored_before, in_study(None, None))
            .unwrap(),
        Recorded::Inserted
    );
    let new = store
        .publish_parameters("test-algo", &json!({"mu": [1.0, 1.0]}), at(5, 0))
        .unwrap()
        .version;
    assert_eq!(new, old + 1);
    let host = Policy::Host {
        decided_by: "schedule".into(),
    };
    // A matching upload stands on the host decision's key at index 5.
    let upload = study_record(&alice, 5);
    store.record_study_data(&upload).unwrap();
    let over_upload = |version| Decision {
        action: upload.action,
        action_prob: upload.action_prob,
        ..with_policy(decision(&alice, 5, 3, version), host.clone())
    };
    let cases = |version| {
        [
            (decision(&alice, 0, 1, version), DecisionGuard::None),
            (decision(&alice, 1, 2, version), in_study(None, None)),
            (decision(&alice, 2, 3, version), in_study(Some(0), None)),
            (decision(&alice, 3, 4, version), in_study(None, Some(1))),
            (
                with_policy(decision(&alice, 4, 5, version), host.clone()),
                DecisionGuard::None,
            ),
            (over_upload(version), DecisionGuard::None),
            (decision(&bob, 0, 6, version), in_study(None, None)),
        ]
    };
    for (d, guard) in cases(old) {
        let refused = store.record_decision(&d, guard);
        assert!(
            matches!(refused, Err(StoreError::UnknownParameterVersion)),
            "{guard:?} {:?} at {}: {refused:?}",
            d.policy,
            d.decision_idx.get()
        );
    }
    assert_eq!(
        count(store, "actions"),
        1,
        "nothing stored behind the newest"
    );
    assert_eq!(
        store
            .record_decision(&decision(&alice, 99, 7, old), in_study(None, None))
            .unwrap(),
        Recorded::Existing(stored_before.clone()),
        "a stored decision is found whatever the version of the repeat"
    );
    for (d, guard) in cases(new) {
        let recorded = store.record_decision(&d, guard).unwrap();
        if d.user_id == bob {
            assert!(matches!(recorded, Recorded::Ineligible(_)), "{recorded:?}");
        } else {
            assert_eq!(recorded, Recorded::Inserted, "{guard:?} {:?}", d.policy);
        }
    }
    assert_eq!(count(store, "actions"), 7);
    let versions: Vec<i64> = store
        .decisions()
        .unwrap()
        .map(|d| d.unwrap().parameter_version)
        .collect();
    assert_eq!(versions, [old, new, new, new, new, new, new]);
}

/// `UpdateJob::study_data(include)` MUST leave out the records of participants withdrawn
/// before the job and those whose logged decision's policy `include` leaves out, and keep
/// uploads without a logged decision, in upload order.
pub fn update_jobs_leave_out_withdrawn_participants_and_excluded_policies(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for u in [&alice, &bob, &carol] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let host = Policy::Host {
        decided_by: "host".into(),
    };
    let fallback = Policy::Fallback {
        reason: "failed".into(),
    };
    // (decision, the policy word its upload reaches updates under; None: never)
    let decided = [
        (decision(&alice, 0, 1, v), Some("algorithm")),
        (
            with_policy(decision(&alice, 1, 2, v), Policy::Warmup),
            Some("warmup"),
        ),
        (
            with_policy(decision(&alice, 2, 3, v), fallback),
            Some("fallback"),
        ),
        (with_policy(decision(&alice, 3, 4, v), host), Some("host")),
        (unavailable(decision(&alice, 4, 5, v), Some("busy")), None),
        (decision(&bob, 0, 6, v), None),
        (
            with_policy(decision(&carol, 0, 7, v), Policy::Warmup),
            Some("warmup"),
        ),
    ];
    let mut uploads = Vec::new();
    for (d, reaches) in &decided {
        store.record_decision(d, DecisionGuard::None).unwrap();
        let upload = upload_for(d);
        store.record_study_data(&upload).unwrap();
        uploads.push((upload, *reaches));
    }
    let unlogged = study_record(&alice, 5);
    store.record_study_data(&unlogged).unwrap();
    uploads.push((unlogged, Some("none")));
    store.withdraw(&bob, "left", at(1, 0)).unwrap();
    store.create_update_request(&update_request(1)).unwrap();

    let partial = UpdateInclusion {
        warmup: false,
        fallback: true,
        host: false,
    };
    for include in [
        UpdateInclusion::default(),
        EVERYTHING,
        ALGORITHM_ONLY,
        partial,
    ] {
        let expected: Vec<StudyRecord> = uploads
            .iter()
            .filter(|(_, reaches)| match reaches {
                None => false,
                Some("none") => true,
                Some(word) => include.includes(Some(word)),
            })
            .map(|(u, _)| u.clone())
            .collect();
        assert_eq!(job_reads(store, include), expected, "{include:?}");
    }
}

/// `export` MUST show, for each upload, the first completed update that read it: one whose
/// stored `included_policies` holds the upload's policy and that started before its
/// participant withdrew (and never one that left it out). `complete` stores the provenance's
/// `included_policies` as given.
pub fn export_shows_the_first_update_that_learned_from_each_upload(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    for u in [&alice, &bob, &carol] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let alice0 = decision(&alice, 0, 1, v);
    let alice1 = with_policy(decision(&alice, 1, 2, v), Policy::Warmup);
    let bob0 = decision(&bob, 0, 3, v);
    for d in [&alice0, &alice1, &bob0] {
        store.record_decision(d, DecisionGuard::None).unwrap();
        store.record_study_data(&upload_for(d)).unwrap();
    }
    let first = update_request(1);
    store.create_update_request(&first).unwrap();
    let mut job = claim(store, at(10, 0));
    assert_eq!(job.study_data(ALGORITHM_ONLY).unwrap().count(), 2);
    let algorithm_only = Provenance {
        included_policies: ALGORITHM_ONLY.as_stored(),
        ..provenance(2)
    };
    let va = job
        .complete("test-algo", &json!({}), &algorithm_only, at(11, 0))
        .unwrap()
        .version;
    assert_eq!(
        store.update_request(first.id).unwrap().unwrap().provenance,
        Some(algorithm_only)
    );
    let d = || "default".to_owned();
    let users_versions = |store: &dyn Store| -> Vec<(String, Option<i64>)> {
        store
            .export()
            .unwrap()
            .map(|row| {
                let row = row.unwrap();
                (
                    row.decision.user_id.to_string(),
                    row.upload.and_then(|u| u.used_in_version),
                )
            })
            .collect()
    };
    assert_eq!(
        used_versions(store),
        vec![(d(), 0, Some(va)), (d(), 1, None), (d(), 0, Some(va))]
    );

    // Bob withdraws after the first update started: it had learned from him.
    store.withdraw(&bob, "left", at(20, 0)).unwrap();
    let carol0 = decision(&carol, 0, 4, va);
    store.record_decision(&carol0, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&carol0)).unwrap();
    // Carol withdraws before the second update starts: it never learns from her.
    store.withdraw(&carol, "left", at(30, 0)).unwrap();
    store.create_update_request(&update_request(2)).unwrap();
    let mut job = claim(store, at(40, 0));
    assert_eq!(
        job.study_data(UpdateInclusion::default()).unwrap().count(),
        2
    );
    let vb = job
        .complete(
            "test-algo",
            &json!({}),
            &Provenance {
                included_policies: UpdateInclusion::default().as_stored(),
                ..provenance(2)
            },
            at(41, 0),
        )
        .unwrap()
        .version;
    assert_eq!(
        users_versions(store),
        vec![
            ("alice".to_owned(), Some(va)),
            ("alice".to_owned(), Some(vb)),
            ("bob".to_owned(), Some(va)),
            ("carol".to_owned(), None),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Reading back what updates read, and the export by participant

/// An update run as the service runs one: claimed at `started`, its records of `include`
/// streamed, then `during` (writes while the job is open), then completed at `finished` with
/// their count as `rows_read`. Returns the version, the records streamed and the provenance.
fn run_update(
    store: &dyn Store,
    n: u32,
    include: UpdateInclusion,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    during: impl FnOnce(),
) -> (CompletedUpdate, Vec<StudyRecord>) {
    let request = update_request(n);
    store.create_update_request(&request).unwrap();
    let mut job = claim(store, started);
    let read: Vec<StudyRecord> = job
        .study_data(include)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    during();
    let provenance = Provenance {
        included_policies: include.as_stored(),
        ..provenance(read.len() as u64)
    };
    let stored = job
        .complete("test-algo", &json!({"n": n}), &provenance, finished)
        .unwrap();
    let completed = CompletedUpdate {
        update_id: request.id,
        parameter_version: stored.version,
        started_at: Some(started),
        finished_at: Some(finished),
        provenance,
    };
    (completed, read)
}

fn update_rows(store: &dyn Store, version: i64) -> Vec<StudyRecord> {
    store
        .update_rows(version)
        .unwrap()
        .map(|item| match item.unwrap() {
            UpdateRecord::Uploaded(record) => record,
            UpdateRecord::Imputed(record) => {
                panic!("an update without imputation imputed {record:?}")
            }
        })
        .collect()
}

/// `update_rows(v)` MUST stream exactly the records the job of the update that produced `v`
/// streamed, in the same order: not an upload stored while it ran, a late upload only from the
/// next update on, no unavailable record, no record of a policy it left out, none of a
/// participant withdrawn before it started (but those of one withdrawn afterwards); records
/// erased since are missing. Nothing for the initial version or an unknown one.
/// `completed_updates` MUST list the completed updates by version with their provenance.
pub fn update_rows_are_exactly_what_each_update_read(store: &dyn Store) {
    seeded(store);
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    for u in [&alice, &bob, &carol, &dave] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let current = || store.current_parameters().unwrap().unwrap().version;
    let decide = |d: Decision| {
        store.record_decision(&d, DecisionGuard::None).unwrap();
        d
    };
    let upload = |d: &Decision| store.record_study_data(&upload_for(d)).unwrap();
    let v = current();
    let alice0 = decide(decision(&alice, 0, 1, v));
    let alice1 = decide(with_policy(decision(&alice, 1, 2, v), Policy::Warmup));
    let bob0 = decide(decision(&bob, 0, 3, v));
    let carol0 = decide(decision(&carol, 0, 4, v));
    let dave0 = decide(unavailable(decision(&dave, 0, 5, v), Some("busy")));
    // Decided now, uploaded after the first update: a late upload.
    let alice2 = decide(decision(&alice, 2, 6, v));
    for d in [&alice0, &alice1, &bob0, &carol0, &dave0] {
        upload(d);
    }
    store.record_study_data(&study_record(&dave, 5)).unwrap();
    let carol1 = decide(decision(&carol, 1, 7, v));

    let (first, first_read) = run_update(store, 1, ALGORITHM_ONLY, at(10, 0), at(11, 0), || {
        upload(&carol1);
    });
    assert_eq!(
        first_read.len(),
        4,
        "alice0, bob0, carol0 and dave's unlogged upload"
    );

    upload(&alice2);
    let bob1 = decide(decision(&bob, 1, 8, current()));
    upload(&bob1);
    store.withdraw(&bob, "left", at(50, 0)).unwrap();
    let (second, second_read) = run_update(store, 2, EVERYTHING, at(60, 0), at(61, 0), || {});
    assert!(second_read.iter().all(|r| r.user_id != bob));
    assert!(second_read.iter().any(|r| r.user_id == dave));

    // Dave withdraws after the second update started: it keeps his record.
    store.withdraw(&dave, "left", at(80, 0)).unwrap();
    let (third, third_read) = run_update(
        store,
        3,
        UpdateInclusion::default(),
        at(90, 0),
        at(91, 0),
        || {},
    );
    assert!(third_read.iter().all(|r| r.user_id != dave));

    let runs = [
        (first.clone(), first_read),
        (second.clone(), second_read),
        (third.clone(), third_read),
    ];
    for (update, read) in &runs {
        assert_eq!(
            update_rows(store, update.parameter_version),
            *read,
            "version {}",
            update.parameter_version
        );
    }
    assert_eq!(update_rows(store, 1), vec![], "the initial version");
    assert_eq!(update_rows(store, 99), vec![], "an unknown version");
    assert_eq!(
        store.completed_updates().unwrap(),
        vec![first, second, third]
    );

    store
        .erase_participant(&carol, &erasure(at(100, 0)))
        .unwrap();
    for (update, read) in &runs {
        let kept: Vec<StudyRecord> = read
            .iter()
            .filter(|r| r.user_id != carol)
            .cloned()
            .collect();
        assert_eq!(
            update_rows(store, update.parameter_version),
            kept,
            "version {} after an erasure",
            update.parameter_version
        );
    }
}

/// With an imputation, `update_data` MUST stream the uploads and then, in decision order, the
/// decisions past the cut-off without an upload in the job's snapshot: available, of an
/// included policy, of a participant neither withdrawn before the job started nor erased, and
/// stored before the job's snapshot; each as [`StudyRecord::imputed`] with the default reward.
/// An upload stored while the job runs leaves its decision imputed by that update.
/// `update_rows(v)` MUST stream the same records again (without an erased participant's), the
/// provenance MUST keep what was imputed, and the export MUST name, for each decision, the first
/// update that imputed its reward and that reward.
pub fn an_update_imputes_the_default_reward_for_decisions_past_the_window(store: &dyn Store) {
    let v = seeded(store).version;
    let (alice, bob, carol, dave) = (user("alice"), user("bob"), user("carol"), user("dave"));
    for u in [&alice, &bob, &carol, &dave] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let decide = |d: Decision| {
        store.record_decision(&d, DecisionGuard::None).unwrap();
        d
    };
    let missing = decide(decision(&alice, 0, 1, v));
    let uploaded = decide(decision(&alice, 1, 2, v));
    store.record_study_data(&upload_for(&uploaded)).unwrap();
    let warmup = decide(with_policy(decision(&alice, 2, 3, v), Policy::Warmup));
    let unavailable_one = decide(unavailable(decision(&alice, 3, 4, v), Some("busy")));
    let withdrawn = decide(decision(&bob, 0, 5, v));
    store.withdraw(&bob, "left", at(30, 0)).unwrap();
    let erased_later = decide(decision(&carol, 0, 6, v));
    let late = decide(decision(&dave, 0, 7, v));
    // Made 51 s in, after the cut-off at 40 s: still within the outcome window.
    let recent = decide(decision(&dave, 1, 50, v));

    let imputation = Imputation {
        decided_by: at(40, 0),
        reward: -1.5,
    };
    let request = update_request(1);
    store.create_update_request(&request).unwrap();
    let mut job = claim(store, at(100, 0));
    let read: Vec<UpdateRecord> = job
        .update_data(ALGORITHM_ONLY, Some(imputation))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let imputed = |d: &Decision| UpdateRecord::Imputed(StudyRecord::imputed(d.clone(), -1.5));
    assert_eq!(
        read,
        vec![
            UpdateRecord::Uploaded(upload_for(&uploaded)),
            imputed(&missing),
            imputed(&erased_later),
            imputed(&late),
        ]
    );
    // Stored while the job runs: the upload comes too late for it, the decision after its
    // snapshot.
    store.record_study_data(&upload_for(&late)).unwrap();
    let after_start = decide(decision(&dave, 2, 8, v));
    let provenance = Provenance {
        included_policies: ALGORITHM_ONLY.as_stored(),
        imputed: Some(ImputedRewards {
            decided_by: imputation.decided_by,
            default_reward: -1.5,
            rows: 3,
        }),
        ..provenance(4)
    };
    let version = job
        .complete("test-algo", &json!({"n": 1}), &provenance, at(101, 0))
        .unwrap()
        .version;
    let rows = |version| -> Vec<UpdateRecord> {
        store
            .update_rows(version)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(rows(version), read);
    assert_eq!(
        store.completed_updates().unwrap()[0].provenance,
        provenance,
        "the provenance keeps what was imputed"
    );

    let export: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    let first_imputed = |d: &Decision| {
        export
            .iter()
            .find(|row| {
                row.decision.user_id == d.user_id && row.decision.decision_idx == d.decision_idx
            })
            .unwrap_or_else(|| panic!("{} {} is exported", d.user_id, d.decision_idx.get()))
            .imputed
    };
    let by_v = Some(ImputedReward {
        version,
        reward: -1.5,
    });
    for d in [&missing, &erased_later, &late] {
        assert_eq!(first_imputed(d), by_v, "{}", d.decision_idx.get());
    }
    for d in [
        &uploaded,
        &warmup,
        &unavailable_one,
        &withdrawn,
        &recent,
        &after_start,
    ] {
        assert_eq!(
            first_imputed(d),
            None,
            "{} {}",
            d.user_id,
            d.decision_idx.get()
        );
    }
    // The late upload is stored, not yet used: the next update reads it.
    let late_row = export
        .iter()
        .find(|row| row.decision.user_id == dave && row.decision.decision_idx == late.decision_idx)
        .unwrap();
    assert_eq!(
        late_row.upload.as_ref().map(|u| u.used_in_version),
        Some(None)
    );

    // An update that leaves missing outcomes out changes nothing of the first one's.
    let (second, second_read) = run_update(store, 2, ALGORITHM_ONLY, at(200, 0), at(201, 0), || {});
    assert!(second_read
        .iter()
        .any(|r| r.user_id == dave && r.decision_idx == late.decision_idx));
    assert!(rows(second.parameter_version)
        .iter()
        .all(|r| !r.is_imputed()));
    let export: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        export.iter().filter(|row| row.imputed == by_v).count(),
        3,
        "the first update that imputed stays named"
    );

    // A backup keeps what was imputed: restored, every update streams what it read again.
    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(250, 0)).unwrap().path;
    let updates = store.completed_updates().unwrap();
    store.reset().unwrap();
    store.restore(&backup).unwrap();
    assert_eq!(store.completed_updates().unwrap(), updates);
    assert_eq!(rows(version), read, "after a restore");
    let restored: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(restored, export, "after a restore");

    store
        .erase_participant(&carol, &erasure(at(300, 0)))
        .unwrap();
    let kept: Vec<UpdateRecord> = read
        .iter()
        .filter(|r| r.record().user_id != carol)
        .cloned()
        .collect();
    assert_eq!(
        rows(version),
        kept,
        "an erased participant's decisions are gone"
    );
}

/// A participant who withdraws after an update's job started, before it reads, MUST still be
/// read by it: an update leaves out participants withdrawn at or before its start, the rule
/// `update_rows` and `export` apply, whenever its snapshot is taken.
pub fn a_withdrawal_after_an_update_started_leaves_what_it_reads(store: &dyn Store) {
    let params = seeded(store);
    let (alice, bob) = (user("alice"), user("bob"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
        let d = decision(u, 0, 1, params.version);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        store.record_study_data(&upload_for(&d)).unwrap();
    }
    store.create_update_request(&update_request(1)).unwrap();
    let mut job = claim(store, at(100, 0));
    store.withdraw(&bob, "left", at(101, 0)).unwrap();
    let read: Vec<StudyRecord> = job
        .study_data(UpdateInclusion::default())
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read.len(), 2, "bob withdrew after the update started");
    let provenance = Provenance {
        included_policies: UpdateInclusion::default().as_stored(),
        ..provenance(2)
    };
    let v = job
        .complete("test-algo", &json!({}), &provenance, at(102, 0))
        .unwrap()
        .version;
    assert_eq!(update_rows(store, v), read);
    let used: Vec<Option<i64>> = store
        .export()
        .unwrap()
        .map(|row| row.unwrap().upload.and_then(|u| u.used_in_version))
        .collect();
    assert_eq!(used, vec![Some(v), Some(v)]);
}

/// The rows of `export`, ordered by participant id as bytes and, within a participant, in
/// storage order: what `export_by_participant` MUST stream.
fn export_grouped(store: &dyn Store) -> Vec<ExportRow> {
    let mut rows: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    rows.sort_by(|a, b| {
        a.decision
            .user_id
            .as_str()
            .as_bytes()
            .cmp(b.decision.user_id.as_str().as_bytes())
    });
    rows
}

/// `export_by_participant` MUST stream the rows of `export` (uploads, first updates that used
/// them), ordered by participant id as bytes (not by any locale's collation), each
/// participant's rows in storage order.
pub fn export_by_participant_groups_the_export_by_participant(store: &dyn Store) {
    seeded(store);
    assert_eq!(store.export_by_participant().unwrap().count(), 0);
    let names = ["bob", "Zoe", "alice", "émile", "alice_2", "al"];
    let users: Vec<UserId> = names.iter().map(|n| user(n)).collect();
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    store
        .add_user(&user("nobody"), &Enrollment::default(), at(0, 0))
        .unwrap();
    let current = || store.current_parameters().unwrap().unwrap().version;
    for round in 0..4_i64 {
        for (k, u) in users.iter().enumerate() {
            let k = k as i64;
            // Indices run backwards, so storage order differs from key order.
            let i = 10 - round;
            let variant = u32::try_from(round * 10 + k).unwrap();
            let mut d = decision(u, i, variant, current());
            if (round + k) % 5 == 0 {
                d = unavailable(d, None);
            }
            store.record_decision(&d, DecisionGuard::None).unwrap();
            if (round + k) % 3 != 1 {
                store.record_study_data(&upload_for(&d)).unwrap();
            }
        }
        if round == 1 {
            let (_, read) = run_update(
                store,
                1,
                UpdateInclusion::default(),
                at(100, 0),
                at(101, 0),
                || {},
            );
            assert!(!read.is_empty());
        }
    }
    let expected = export_grouped(store);
    assert!(expected.iter().any(|r| r
        .upload
        .as_ref()
        .is_some_and(|u| u.used_in_version.is_some())));
    let streamed: Vec<ExportRow> = store
        .export_by_participant()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(streamed, expected);
    let mut order: Vec<&str> = streamed
        .iter()
        .map(|r| r.decision.user_id.as_str())
        .collect();
    order.dedup();
    assert_eq!(order, ["Zoe", "al", "alice", "alice_2", "bob", "émile"]);
}

/// `export_by_participant` MUST stream every row when participants have more than a page of
/// decisions, and MUST NOT show decisions stored after the call.
pub fn export_by_participant_streams_many_decisions_from_one_snapshot(store: &dyn Store) {
    let params = seeded(store);
    let users = [user("u-b"), user("u-a")];
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let n = MANY_RECORDS;
    for i in 0..n {
        let d = decision(&users[(i % 2) as usize], n - i, 1, params.version);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        if i % 4 == 0 {
            store.record_study_data(&upload_for(&d)).unwrap();
        }
    }
    let expected = export_grouped(store);
    let mut stream = store.export_by_participant().unwrap();
    let first = stream.next().unwrap().unwrap();
    let early = user("a-first");
    store
        .add_user(&early, &Enrollment::default(), at(0, 0))
        .unwrap();
    for d in [
        decision(&early, 0, 1, params.version),
        decision(&users[0], n + 1, 1, params.version),
        decision(&users[1], n + 1, 1, params.version),
    ] {
        store.record_decision(&d, DecisionGuard::None).unwrap();
    }
    let streamed: Vec<ExportRow> = std::iter::once(first)
        .chain(stream.map(Result::unwrap))
        .collect();
    assert_eq!(streamed.len(), expected.len());
    if let Some(i) = (0..expected.len()).find(|&i| streamed[i] != expected[i]) {
        panic!(
            "row {i} differs: streamed {:?}, expected {:?}",
            streamed[i].decision, expected[i].decision
        );
    }
    assert_eq!(
        store.export_by_participant().unwrap().count(),
        n as usize + 3
    );
}

/// A participant with a window, a changed window, a withdrawal, decisions of every kind (with
/// context, state and an unavailable reason), uploads and a completed update that read them:
/// returns alice's decisions as sent.
fn a_participant_to_erase(store: &dyn Store, alice: &UserId) -> Vec<Decision> {
    let params = store.current_parameters().unwrap().unwrap();
    let v = params.version;
    store
        .add_user(alice, &window(Some(-100), Some(1000)), at(0, 0))
        .unwrap();
    let secret = object(json!({"alice_secret": "ctx-5e3c", "n": 7321.5}));
    let secret_state = State::new(vec![7321.5, 42.25]).unwrap();
    let kept = |d: Decision| Decision {
        context: secret.clone(),
        state: secret_state.clone(),
        ..d
    };
    let decisions = vec![
        kept(decision(alice, 0, 1, v)),
        kept(unavailable(
            decision(alice, 1, 2, v),
            Some("alice-reason-9d1"),
        )),
        kept(out_of_study(
            decision(alice, 2, 3, v),
            OutOfStudy::NotInStudy,
        )),
        kept(with_policy(
            decision(alice, 3, 5, v),
            Policy::Host {
                decided_by: "host-x".into(),
            },
        )),
    ];
    for d in &decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    let outcome = object(json!({"alice_outcome": "out-81b2"}));
    store
        .record_study_data(&StudyRecord {
            outcome: outcome.clone(),
            context: secret.clone(),
            state: secret_state.clone(),
            ..upload_for(&decisions[0])
        })
        .unwrap();
    store
        .record_study_data(&StudyRecord {
            outcome,
            context: secret,
            state: secret_state,
            ..study_record(alice, 9)
        })
        .unwrap();
    store.create_update_request(&update_request(1)).unwrap();
    let mut job = claim(store, at(7, 0));
    assert!(job.study_data(EVERYTHING).unwrap().count() >= 2);
    job.complete(
        "test-algo",
        &json!({"learned": 1}),
        &provenance(2),
        at(8, 0),
    )
    .unwrap();
    store
        .change_enrollment(alice, &window(Some(-100), Some(2000)), at(9, 0))
        .unwrap();
    store
        .withdraw(alice, "alice-withdrawal-reason-44c", at(10, 0))
        .unwrap();
    decisions
}

/// What no read may show after alice's erasure.
const ALICE_TRACES: [&str; 6] = [
    "alice-7f3a",
    "ctx-5e3c",
    "7321.5",
    "out-81b2",
    "alice-reason-9d1",
    "alice-withdrawal-reason-44c",
];

/// `erase_participant` MUST, in one unit: delete the participant's uploads and history, keep
/// their decisions under the pseudonym without context, state or client reason (every other
/// field as stored, out-of-study reasons too), keep their `users` row under the pseudonym, and
/// store the audit record with its row counts and participant number; afterwards no read
/// shows the participant's id, contexts, states, outcomes or reasons, parameter versions are
/// as they were, other participants are untouched, and the id can be registered afresh.
pub fn erasing_a_participant_leaves_no_trace_of_them(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice-7f3a");
    let bob = user("bob");
    store
        .add_user(&bob, &Enrollment::default(), at(0, 0))
        .unwrap();
    let bobs = decision(&bob, 0, 1, params.version);
    store.record_decision(&bobs, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&bobs)).unwrap();
    let alices = a_participant_to_erase(store, &alice);
    let bob_before = store.participant(&bob).unwrap();
    let parameters_before: Vec<ModelParameters> = (1..=2)
        .map(|v| store.parameters(v).unwrap().unwrap())
        .collect();
    let counts_before = counts(store);

    let asked = erasure(at(11, 123));
    let filled = store.erase_participant(&alice, &asked).unwrap();
    assert_ne!(filled.participant_number, 0, "the participant's row number");
    assert_eq!(
        filled,
        Erasure {
            participant_number: filled.participant_number,
            row_counts: vec![
                ("actions".to_owned(), 4),
                ("study_data".to_owned(), 2),
                ("participant_events".to_owned(), 3),
                ("users".to_owned(), 1),
            ],
            ..asked.clone()
        }
    );
    let pseudonym = user(&asked.pseudonym);
    let kept: Vec<Decision> = alices
        .iter()
        .map(|d| Decision {
            user_id: pseudonym.clone(),
            context: JsonObject::new(),
            state: State::default(),
            availability: match &d.availability {
                Availability::Unavailable { .. } => Availability::Unavailable { reason: None },
                other => other.clone(),
            },
            ..d.clone()
        })
        .collect();
    let mut expected_decisions = vec![bobs.clone()];
    expected_decisions.extend(kept);
    let decisions: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions, expected_decisions);
    let exported: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        exported
            .iter()
            .map(|r| r.decision.clone())
            .collect::<Vec<_>>(),
        expected_decisions
    );
    assert!(exported[0].upload.is_some(), "bob's upload stays");
    assert!(exported[1..].iter().all(|r| r.upload.is_none()));
    let study_data: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(study_data, vec![upload_for(&bobs)]);
    assert_eq!(store.participant(&alice).unwrap(), None);
    assert_eq!(
        store.participant(&pseudonym).unwrap(),
        None,
        "an erased participant is not registered, under either id"
    );
    assert_eq!(store.participant(&bob).unwrap(), bob_before);
    assert_eq!(
        store.erased_pseudonyms().unwrap(),
        vec![asked.pseudonym.clone()]
    );
    let parameters_after: Vec<ModelParameters> = (1..=2)
        .map(|v| store.parameters(v).unwrap().unwrap())
        .collect();
    assert_eq!(parameters_after, parameters_before);
    let mut expected_counts = counts_before.clone();
    *expected_counts.get_mut("study_data").unwrap() -= 2;
    *expected_counts.get_mut("participant_events").unwrap() -= 3;
    *expected_counts.get_mut("erasures").unwrap() += 1;
    assert_eq!(counts(store), expected_counts);

    // No read shows anything of alice's.
    store.create_update_request(&update_request(2)).unwrap();
    let job_read = job_reads(store, EVERYTHING);
    let everything = json!({
        "decisions": decisions,
        "export": exported,
        "study_data": study_data,
        "job": job_read,
        "bob": store.participant(&bob).unwrap(),
        "pseudonym": store.participant(&pseudonym).unwrap(),
        "parameters": parameters_after,
        "erased": store.erased_pseudonyms().unwrap(),
        "counts": counts(store),
    })
    .to_string();
    for trace in ALICE_TRACES {
        assert!(
            !everything.contains(trace),
            "{trace} is still readable: {everything}"
        );
    }

    // The id is free again, for a participant of its own.
    store
        .add_user(&alice, &Enrollment::default(), at(20, 0))
        .unwrap();
    let again = store.participant(&alice).unwrap().unwrap();
    assert_eq!(
        (again.decisions, again.uploads, again.withdrawal),
        (0, 0, None)
    );
}

/// `erase_participant` MUST return `UnknownUser` for an unregistered participant (or one
/// erased already) and change nothing; `erased_pseudonyms` lists every erasure's pseudonym,
/// and each erasure records its participant's own row number.
pub fn erasing_an_unknown_participant_changes_nothing(store: &dyn TestingStore) {
    let params = seeded(store);
    let (alice, bob) = (user("alice"), user("bob"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
        store
            .record_decision(&decision(u, 0, 1, params.version), DecisionGuard::None)
            .unwrap();
    }
    let before = contents(store, &[]);
    let unknown = store.erase_participant(&user("mallory"), &erasure(at(1, 0)));
    assert!(
        matches!(unknown, Err(StoreError::UnknownUser)),
        "{unknown:?}"
    );
    assert_eq!(contents(store, &[]), before);
    assert_eq!(store.erased_pseudonyms().unwrap(), Vec::<String>::new());

    let first = store.erase_participant(&alice, &erasure(at(2, 0))).unwrap();
    let after_first = contents(store, &[]);
    let again = store.erase_participant(&alice, &erasure(at(3, 0)));
    assert!(matches!(again, Err(StoreError::UnknownUser)), "{again:?}");
    assert_eq!(contents(store, &[]), after_first);
    let second = store.erase_participant(&bob, &erasure(at(4, 0))).unwrap();
    assert_ne!(first.participant_number, second.participant_number);
    let erased: BTreeSet<String> = store.erased_pseudonyms().unwrap().into_iter().collect();
    assert_eq!(
        erased,
        BTreeSet::from([first.pseudonym.clone(), second.pseudonym.clone()])
    );
    assert_eq!(count(store, "erasures"), 2);
    assert_eq!(count(store, "users"), 2);
    assert_eq!(count(store, "actions"), 2);
}

/// A backup MUST hold the life of the trial (windows, withdrawals, histories, policies, erased
/// participants and their audit records), and a restore MUST put it all back: guards,
/// participants and erasures behave after it as before.
pub fn backup_and_restore_keep_the_life_of_the_trial(store: &dyn TestingStore) {
    seeded(store);
    let alice = user("alice-7f3a");
    a_participant_to_erase(store, &alice);
    // Decisions from here on are drawn under the newest version.
    let params = store.current_parameters().unwrap().unwrap();
    store
        .erase_participant(&alice, &erasure(at(11, 0)))
        .unwrap();
    let carol = user("carol");
    store
        .add_user(&carol, &window(Some(50), Some(60)), at(0, 0))
        .unwrap();
    let dave = user("dave");
    store
        .add_user(&dave, &Enrollment::default(), at(0, 0))
        .unwrap();
    store.withdraw(&dave, "left", at(12, 0)).unwrap();
    let names = ["alice-7f3a", "carol", "dave"];
    let participants = |store: &dyn TestingStore| -> Vec<Option<Participant>> {
        names
            .iter()
            .map(|n| store.participant(&user(n)).unwrap())
            .collect()
    };
    let before = (contents(store, &[]), participants(store));

    let scratch = ScratchDir::new();
    let report = store.backup(&scratch.0, at(100, 0)).unwrap();
    let in_backup: BTreeMap<String, u64> = report.row_counts.into_iter().collect();
    assert_eq!(in_backup, before.0.counts);
    assert_eq!(in_backup["participant_events"], 3);
    assert_eq!(in_backup["erasures"], 1);
    store.reset().unwrap();
    assert!(counts(store).values().all(|&n| n == 0));
    store.restore(&report.path).unwrap();
    assert_eq!((contents(store, &[]), participants(store)), before);

    // The restored rows work as before.
    let outside = requested(decision(&carol, 0, 1, params.version), 60, 0);
    assert!(matches!(
        store
            .record_decision(&outside, in_study(None, None))
            .unwrap(),
        Recorded::Ineligible(_)
    ));
    let withdrawn = requested(decision(&dave, 0, 1, params.version), 60, 0);
    assert!(matches!(
        store
            .record_decision(&withdrawn, in_study(None, None))
            .unwrap(),
        Recorded::Ineligible(ParticipantFacts {
            withdrawn: true,
            ..
        })
    ));
    assert!(matches!(
        store.withdraw(&dave, "again", at(13, 0)),
        Err(StoreError::AlreadyWithdrawn)
    ));
    let erin = user("erin");
    store
        .add_user(&erin, &Enrollment::default(), at(14, 0))
        .unwrap();
    let erased_dave = store.erase_participant(&dave, &erasure(at(15, 0))).unwrap();
    let erased_erin = store.erase_participant(&erin, &erasure(at(16, 0))).unwrap();
    assert!(
        erased_erin.participant_number > erased_dave.participant_number,
        "participants registered after a restore continue the row numbers"
    );
    assert_eq!(store.erased_pseudonyms().unwrap().len(), 3);
}

// ---------------------------------------------------------------------------------------------
// Numbers

/// Doubles that stores and their text forms are known to get wrong: both zeros, the smallest
/// subnormal, the largest subnormal, the smallest normal, the largest finite, numbers a
/// `numeric` prints with hundreds of digits, whole numbers at the edge of `f64`'s integers, and
/// ones whose shortest text has 17 significant digits.
pub const SPECIAL_DOUBLES: [f64; 20] = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    f64::from_bits(0x000f_ffff_ffff_ffff),
    f64::MIN_POSITIVE,
    -f64::MIN_POSITIVE,
    f64::MAX,
    -f64::MAX,
    1e-300,
    -1e300,
    1e300,
    9_007_199_254_740_992.0,
    9_007_199_254_740_994.0,
    -9_007_199_254_740_994.0,
    1e15,
    13.306_201_483_010_007,
    0.1,
    -123_456_789.012_345_68,
    1.0,
];

/// `n` finite doubles, the same for the same `seed`: first [`SPECIAL_DOUBLES`], then draws
/// that alternate between uniform bit patterns (every exponent, subnormals included, both
/// signs) and uniform values in [-1000, 1000) (17 significant digits, like measurements).
pub fn finite_doubles(seed: u64, n: usize) -> Vec<f64> {
    use rand_core::{RngCore, SeedableRng};
    let mut rng = rand_pcg::Pcg64::seed_from_u64(seed);
    let mut values: Vec<f64> = SPECIAL_DOUBLES.iter().copied().take(n).collect();
    while values.len() < n {
        let v = if values.len().is_multiple_of(2) {
            f64::from_bits(rng.next_u64())
        } else {
            // 53 random bits as a fraction of 2^53, exactly; then scaled.
            #[allow(clippy::cast_precision_loss)]
            let unit = (rng.next_u64() >> 11) as f64 / 9_007_199_254_740_992.0;
            unit * 2000.0 - 1000.0
        };
        if v.is_finite() {
            values.push(v);
        }
    }
    values
}

/// Whether `got` holds the same JSON as `sent` with every number of the same kind (integer or
/// float) and every float the same double, bit for bit; `Err` names the first difference.
pub fn same_json_bits(sent: &serde_json::Value, got: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    fn walk(path: &str, sent: &Value, got: &Value) -> Result<(), String> {
        match (sent, got) {
            (Value::Number(s), Value::Number(g)) => {
                let same = match (s.as_f64(), s.is_f64(), g.as_f64(), g.is_f64()) {
                    (Some(a), true, Some(b), true) => a.to_bits() == b.to_bits(),
                    _ => s == g,
                };
                if same {
                    Ok(())
                } else {
                    Err(format!("{path}: sent {s}, got {g}"))
                }
            }
            (Value::Array(s), Value::Array(g)) if s.len() == g.len() => s
                .iter()
                .zip(g)
                .enumerate()
                .try_for_each(|(i, (s, g))| walk(&format!("{path}[{i}]"), s, g)),
            (Value::Object(s), Value::Object(g)) if s.keys().eq(g.keys()) => s
                .iter()
                .try_for_each(|(k, v)| walk(&format!("{path}.{k}"), v, &g[k])),
            _ if sent == got && !matches!(sent, Value::Array(_) | Value::Object(_)) => Ok(()),
            _ => Err(format!("{path}: sent {sent}, got {got}")),
        }
    }
    walk("$", sent, got)
}

fn assert_same_bits(what: &str, sent: &JsonObject, got: &JsonObject) {
    let sent = serde_json::Value::Object(sent.clone());
    let got = serde_json::Value::Object(got.clone());
    if let Err(difference) = same_json_bits(&sent, &got) {
        panic!("{what}: {difference}");
    }
}

fn assert_same_doubles(what: &str, sent: &[f64], got: &[f64]) {
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(sent), "{what}: sent {sent:?}, got {got:?}");
}

fn assert_same_decision(what: &str, sent: &Decision, got: &Decision) {
    assert_eq!(got, sent, "{what}");
    assert_same_bits(&format!("{what}, context"), &sent.context, &got.context);
    assert_same_doubles(
        &format!("{what}, state"),
        sent.state.values(),
        got.state.values(),
    );
}

fn assert_same_record(what: &str, sent: &StudyRecord, got: &StudyRecord) {
    assert_eq!(got, sent, "{what}");
    assert_same_bits(&format!("{what}, context"), &sent.context, &got.context);
    assert_same_bits(&format!("{what}, outcome"), &sent.outcome, &got.outcome);
    assert_same_doubles(
        &format!("{what}, state"),
        sent.state.values(),
        got.state.values(),
    );
    assert_same_reward(what, sent.reward, got.reward);
}

/// The reward, which the service derives from the outcome, is a `REAL` in SQLite, which
/// stores a whole number (-0.0 included) as an integer: it keeps its value, and its bits
/// except for the sign of zero. The outcome it came from keeps that too.
fn assert_same_reward(what: &str, sent: f64, got: f64) {
    if sent == 0.0 {
        assert_eq!(got, 0.0, "{what}, reward");
    } else {
        assert_same_doubles(&format!("{what}, reward"), &[sent], &[got]);
    }
}

/// What [`numbers_come_back_bit_for_bit`] reads back after storing and after a restore:
/// `decisions` in storage order, each with its upload if it has one.
fn assert_numbers_read_back(
    store: &dyn TestingStore,
    decisions: &[(Decision, Option<StudyRecord>)],
) {
    let streamed: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed.len(), decisions.len());
    for ((sent, upload), got) in decisions.iter().zip(&streamed) {
        assert_same_decision("decisions", sent, got);
        // A decision whose data was uploaded is closed to repeats.
        if upload.is_none() {
            match store.record_decision(sent, DecisionGuard::None).unwrap() {
                Recorded::Existing(existing) => assert_same_decision("a repeat", sent, &existing),
                other => panic!("a repeated decision was not returned as stored: {other:?}"),
            }
        }
    }
    let uploads: Vec<&StudyRecord> = decisions.iter().filter_map(|(_, u)| u.as_ref()).collect();
    let streamed: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(streamed.len(), uploads.len());
    for (sent, got) in uploads.iter().zip(&streamed) {
        assert_same_record("study data", sent, got);
    }
    let exported: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(exported.len(), decisions.len());
    for ((sent, upload), row) in decisions.iter().zip(&exported) {
        assert_same_decision("export", sent, &row.decision);
        assert_eq!(upload.is_some(), row.upload.is_some(), "export of {sent:?}");
        if let (Some(sent), Some(got)) = (upload, &row.upload) {
            assert_same_bits("export, outcome", &sent.outcome, &got.outcome);
            assert_same_reward("export", sent.reward, got.reward);
        }
    }
}

/// How many doubles [`numbers_come_back_bit_for_bit`] stores, and from which seed.
const NUMBERS: usize = 320;
const NUMBERS_SEED: u64 = 0x6e75_6d62_6572_7321;

/// Stores decisions and uploads holding every double of [`finite_doubles`] and returns them
/// in storage order, each with its upload if it has one.
fn store_numbers(store: &dyn Store) -> Vec<(Decision, Option<StudyRecord>)> {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let values = finite_doubles(NUMBERS_SEED, NUMBERS);
    let numbers = |prefix: &str, values: &[f64]| {
        values
            .iter()
            .enumerate()
            .map(|(k, v)| (format!("{prefix}{k}"), json!(v)))
            .collect::<JsonObject>()
    };
    // Every value is in a decision's context and state; every other decision is uploaded,
    // with its own values and the next decision's in the outcome, so every value is in an
    // outcome too, and repeats are tried on the decisions left open.
    let mut decisions = Vec::new();
    for (i, chunk) in (0_i64..).zip(values.chunks(8)) {
        let mut context = numbers("x", chunk);
        context.insert("nested".into(), json!({"list": chunk, "first": chunk[0]}));
        let d = Decision {
            context,
            state: State::new(chunk.to_vec()).unwrap(),
            ..decision(&alice, i, 1, params.version)
        };
        assert_eq!(
            store.record_decision(&d, DecisionGuard::None).unwrap(),
            Recorded::Inserted
        );
        decisions.push((d, None));
    }
    for (i, chunk) in values.chunks(16).enumerate() {
        let (d, upload) = &mut decisions[2 * i];
        let record = StudyRecord {
            context: d.context.clone(),
            state: d.state.clone(),
            outcome: numbers("y", chunk),
            // -0.0 (the second value) among them.
            reward: chunk[(7 * i + 1) % chunk.len()],
            ..upload_for(d)
        };
        store.record_study_data(&record).unwrap();
        *upload = Some(record);
    }
    decisions
}

/// Every finite double (the sign of zero included) in a context, a state and an outcome MUST
/// come back bit for bit, and a reward with its value: from a repeated `record_decision`,
/// `decisions`, `study_data` and `export`.
pub fn numbers_come_back_bit_for_bit(store: &dyn TestingStore) {
    let decisions = store_numbers(store);
    assert_numbers_read_back(store, &decisions);
}

/// `export_lines` MUST give the rows of `export`, in order, each with its context, state and
/// outcome as the compact text serialising them gives ([`ExportRow::to_line`]), whatever a
/// client sent: unicode and escapes, extreme numbers and negative zero, nesting, empty keys,
/// keys in any order; and a corrected upload's outcome in force.
pub fn export_lines_carry_the_json_as_serialising_it_gives(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let awkward = object(json!({
        "zeta": "é ü 😀 \u{2028} </script> ,;\r",
        "escapes": "quote \" backslash \\ slash / newline \n tab \t nul \u{0} bell \u{7} del \u{7f}",
        "a key, with \"quotes\"": {"nested": [[], {}, [1, [2, [3]]], null, true, false]},
        "big": [u64::MAX, i64::MIN, 1e300, -1e-300, 5e-324, f64::MAX, 1e21],
        "zeros": [-0.0, 0.0, 0],
        "fractions": [0.1, 1.5, 100.0, 123_456_789.125, -2.5e-7],
        "": "",
        "B": 1, "a": 2, "aa": 3, "ä": 4,
    }));
    let state = State::new(vec![
        -0.0,
        1e300,
        2.0,
        0.1,
        5e-324,
        -3.0,
        9_007_199_254_740_993.0,
    ])
    .unwrap();
    let mut decisions = Vec::new();
    for i in 0..4 {
        let d = Decision {
            context: awkward.clone(),
            state: state.clone(),
            ..decision(&alice, i, 1, params.version)
        };
        store.record_decision(&d, DecisionGuard::None).unwrap();
        decisions.push(d);
    }
    let unavailable_decision = unavailable(decision(&alice, 4, 2, params.version), Some("a, b"));
    store
        .record_decision(&unavailable_decision, DecisionGuard::None)
        .unwrap();
    let upload = StudyRecord {
        context: awkward.clone(),
        outcome: awkward.clone(),
        ..upload_for(&decisions[0])
    };
    store.record_study_data(&upload).unwrap();
    let corrected = StudyRecord {
        outcome: object(json!({"nested": {"b": [-0.0, "\u{1}"], "a": 1e-7}})),
        ..upload_for(&decisions[1])
    };
    store.record_study_data(&upload_for(&decisions[1])).unwrap();
    store
        .record_correction(&StudyRecord {
            requested_at: at(90, 0),
            received_at: at(91, 0),
            ..corrected.clone()
        })
        .unwrap();

    let lines: Vec<ExportLine> = store.export_lines().unwrap().map(Result::unwrap).collect();
    let serialised: Vec<ExportLine> = store
        .export()
        .unwrap()
        .map(|row| row.unwrap().to_line().unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines, serialised);
    // The text itself: compact, keys in byte order, numbers as their shortest round trip.
    assert_eq!(
        lines[0].decision.state,
        "[-0.0,1e+300,2,0.1,5e-324,-3,9007199254740992.0]"
    );
    assert_eq!(
        lines[0].decision.context,
        concat!(
            r#"{"":"","B":1,"a":2,"a key, with \"quotes\"":{"nested":[[],{},[1,[2,[3]]],null,true,false]},"#,
            r#""aa":3,"big":[18446744073709551615,-9223372036854775808,1e+300,-1e-300,5e-324,"#,
            r#"1.7976931348623157e+308,1e+21],"#,
            r#""escapes":"quote \" backslash \\ slash / newline \n tab \t nul \u0000 bell \u0007 del "#,
            "\u{7f}\",",
            r#""fractions":[0.1,1.5,100.0,123456789.125,-2.5e-7],"#,
            "\"zeros\":[-0.0,0.0,0],\"zeta\":\"é ü 😀 \u{2028} </script> ,;\\r\",\"ä\":4}"
        )
    );
    let outcome = |line: &ExportLine| line.upload.as_ref().map(|u| u.outcome.clone());
    assert_eq!(outcome(&lines[0]), Some(lines[0].decision.context.clone()));
    assert_eq!(
        outcome(&lines[1]).as_deref(),
        Some(r#"{"nested":{"a":1e-7,"b":[-0.0,"\u0001"]}}"#)
    );
    assert_eq!(lines[1].upload.as_ref().map(|u| u.corrections), Some(1));
    assert_eq!(outcome(&lines[2]), None);
    assert!(!lines[4].decision.availability.is_available());
}

/// The numbers of [`numbers_come_back_bit_for_bit`] MUST come back bit for bit as stored, and
/// again after a backup of them is restored.
pub fn numbers_come_back_bit_for_bit_after_a_restore(store: &dyn TestingStore) {
    let decisions = store_numbers(store);
    assert_numbers_read_back(store, &decisions);

    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(100, 0)).unwrap().path;
    store.reset().unwrap();
    store.restore(&backup).unwrap();
    assert_numbers_read_back(store, &decisions);
}

// ---------------------------------------------------------------------------------------------
// Dashboard: the per-day figures, participants, updates and recent decisions its pages read.
// Every figure is checked against `dashboard::days_of` over the rows the store streams back, so
// a rollup that missed, doubled or misplaced a row shows up.

/// Expands to one `#[test]` per check of the dashboard's reads (part of
/// [`store_contract_suite!`]).
#[macro_export]
macro_rules! dashboard_store_suite {
    ($make_fixture:expr) => {
        $crate::store_conformance_suite!(@tests $make_fixture;
            dashboard_days_count_every_row_once,
            dashboard_days_follow_a_reset_and_other_settings,
            dashboard_participants_list_everyone_with_their_latest_activity,
            dashboard_updates_come_newest_first,
            dashboard_recent_decisions_are_the_newest_available_of_a_version,
        );
    };
}

// ---- The watchdog: its aggregate reads, refusals, shared verdict and alerts. ----

/// Expands to one `#[test]` per check of the watchdog's storage methods (part of the store
/// contract: [`store_contract_suite!`](crate::store_contract_suite) runs them).
#[macro_export]
macro_rules! watchdog_store_suite {
    ($make_fixture:expr) => {
        $crate::store_conformance_suite!(@tests $make_fixture;
            monitor_facts_list_active_participants_with_their_latest_decisions,
            monitor_facts_list_no_participant_without_decision_types,
            monitor_facts_count_overdue_uploads_per_participant,
            monitor_facts_count_updates_callbacks_and_shares,
            monitor_state_changes_once_per_change,
            concurrent_state_changes_queue_one_alert,
            alerts_are_held_claimed_and_recorded,
        );
    };
}

/// Expands to the dashboard's checks of durable storage (part of [`durable_store_suite!`]).
#[macro_export]
macro_rules! dashboard_durable_suite {
    ($make_fixture:expr) => {
        $crate::store_conformance_suite!(@tests $make_fixture;
            dashboard_days_after_a_restore_are_those_of_the_restored_rows,
        );
    };
}

fn dashboard_settings(zone: chrono_tz::Tz) -> crate::dashboard::DashboardSettings {
    crate::dashboard::DashboardSettings {
        zone,
        clip_bounds: Some((0.2, 0.8)),
    }
}

/// The figures `days_of` computes from every decision and upload the store streams back.
fn dashboard_expected(
    store: &dyn TestingStore,
    settings: &crate::dashboard::DashboardSettings,
) -> crate::dashboard::DashboardDays {
    use crate::dashboard::{DecisionFact, UploadFact};
    let decisions: Vec<DecisionFact> = store
        .decisions()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            DecisionFact {
                id: 0,
                user_id: d.user_id.as_str().to_owned(),
                decision_type: d.decision_type.as_str().to_owned(),
                parameter_version: d.parameter_version,
                requested_at: d.requested_at,
                probability: d.action_prob.get(),
                available: d.availability.is_available(),
            }
        })
        .collect();
    let uploads: Vec<UploadFact> = TestingStore::study_data(store)
        .unwrap()
        .map(|r| {
            let r = r.unwrap();
            UploadFact {
                id: 0,
                user_id: r.user_id.as_str().to_owned(),
                decision_type: r.decision_type.as_str().to_owned(),
                requested_at: r.requested_at,
                received_at: r.received_at,
                reward: r.reward,
            }
        })
        .collect();
    crate::dashboard::days_of(settings, decisions, uploads)
}

/// A decision of `user` and `kind` at index `i`, `hours` after a fixed moment, with `p`.
fn dashboard_decision(
    user_id: &UserId,
    kind: &str,
    i: i64,
    hours: i64,
    p: f64,
    v: i64,
) -> Decision {
    let mut d = decision(user_id, i, 0, v);
    d.decision_type = DecisionType::parse(kind).unwrap();
    d.requested_at = at(hours * 3600, 0);
    d.action_prob = Probability::new(p).unwrap();
    d.action = Action::One;
    d
}

/// Stores decisions over three days, two types and two versions (some unavailable, some at
/// the clip bounds) and uploads for some; returns the users.
fn dashboard_study(store: &dyn TestingStore) -> Vec<UserId> {
    let v1 = seeded(store).version;
    let users = vec![user("dash-a"), user("dash-b"), user("<dash&c>")];
    for u in &users {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let probabilities = [0.2, 0.35, 0.5, 0.8, 0.61, 0.2, 0.44];
    let mut n = 0;
    for (k, u) in users.iter().enumerate() {
        for i in 0..7_i64 {
            let kind = if i % 3 == 0 { "morning" } else { "default" };
            let mut d = dashboard_decision(u, kind, i, i * 9 + k as i64, probabilities[n % 7], v1);
            n += 1;
            if i == 4 {
                d = crate::builders::unavailable(d, kind, Some("driving"));
            }
            store.record_decision(&d, DecisionGuard::None).unwrap();
            if i % 2 == 0 {
                store
                    .record_study_data(&upload(&d, 1.25 + i as f64))
                    .unwrap();
            }
        }
    }
    let v2 = store
        .publish_parameters("algo", &json!({"p": 0.6}), at(200_000, 0))
        .unwrap()
        .version;
    for (k, u) in users.iter().enumerate() {
        let d = dashboard_decision(u, "default", 20, 60 + k as i64, 0.6, v2);
        store.record_decision(&d, DecisionGuard::None).unwrap();
    }
    users
}

/// The upload agreeing with `d`, with `reward`.
fn upload(d: &Decision, reward: f64) -> StudyRecord {
    StudyRecord {
        reward,
        ..crate::builders::upload_for(d)
    }
}

fn assert_days(
    store: &dyn TestingStore,
    settings: &crate::dashboard::DashboardSettings,
    now: DateTime<Utc>,
) {
    let got = store.dashboard_days(settings, now).unwrap();
    let want = dashboard_expected(store, settings);
    assert_eq!(got.decisions, want.decisions);
    assert_eq!(got.uploads.len(), want.uploads.len(), "{:?}", got.uploads);
    for (g, w) in got.uploads.iter().zip(&want.uploads) {
        assert_eq!(
            (g.day, &g.decision_type, g.uploads),
            (w.day, &w.decision_type, w.uploads)
        );
        assert!((g.reward_sum - w.reward_sum).abs() < 1e-9, "{g:?} {w:?}");
    }
}

/// Every decision and upload is counted once in its day, type and version, with exact
/// quartiles and counts at the bounds; rows stored later (in an existing group, a new day, a
/// late upload for an old day) are counted on the next read, and reading twice changes
/// nothing.
pub fn dashboard_days_count_every_row_once(store: &dyn TestingStore) {
    let settings = dashboard_settings(chrono_tz::Europe::Berlin);
    let empty = store.dashboard_days(&settings, at(0, 0)).unwrap();
    assert!(empty.decisions.is_empty() && empty.uploads.is_empty());
    let users = dashboard_study(store);

    assert_days(store, &settings, at(1_000_000, 0));
    let days = store.dashboard_days(&settings, at(1_000_000, 0)).unwrap();
    let decisions: u64 = days.decisions.iter().map(|d| d.decisions).sum();
    assert_eq!(decisions, 24);
    let uploads: u64 = days.uploads.iter().map(|d| d.uploads).sum();
    assert_eq!(uploads, 12);
    assert!(days.decisions.iter().any(|d| d.at_lower > 0));
    assert!(days.decisions.iter().any(|d| d.at_upper > 0));
    assert!(days.decisions.iter().any(|d| d.available < d.decisions));

    // Later rows: one in an existing group, one on a new day, a late upload for an old day.
    let v = store.current_parameters().unwrap().unwrap().version;
    let v1_first = Decision {
        parameter_version: v,
        ..dashboard_decision(&users[0], "default", 30, 61, 0.3, v)
    };
    store
        .record_decision(&v1_first, DecisionGuard::None)
        .unwrap();
    let later = dashboard_decision(&users[1], "default", 31, 24 * 9, 0.7, v);
    store.record_decision(&later, DecisionGuard::None).unwrap();
    let old = store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .find(|d| d.decision_idx.get() == 1 && d.user_id == users[2])
        .unwrap();
    store.record_study_data(&upload(&old, 7.5)).unwrap();
    assert_days(store, &settings, at(1_000_100, 0));
    assert_days(store, &settings, at(1_000_200, 0));
}

/// A reset empties the figures, and rows stored after it are counted afresh; figures asked for
/// in another zone are those of that zone.
pub fn dashboard_days_follow_a_reset_and_other_settings(store: &dyn TestingStore) {
    let berlin = dashboard_settings(chrono_tz::Europe::Berlin);
    let tokyo = dashboard_settings(chrono_tz::Asia::Tokyo);
    dashboard_study(store);
    assert_days(store, &berlin, at(1_000_000, 0));
    assert_days(store, &tokyo, at(1_000_000, 0));
    assert_ne!(
        store.dashboard_days(&berlin, at(1_000_000, 0)).unwrap(),
        store.dashboard_days(&tokyo, at(1_000_000, 0)).unwrap()
    );

    store.reset().unwrap();
    let empty = store.dashboard_days(&tokyo, at(1_000_000, 0)).unwrap();
    assert!(
        empty.decisions.is_empty() && empty.uploads.is_empty(),
        "{empty:?}"
    );
    dashboard_study(store);
    assert_days(store, &tokyo, at(1_000_001, 0));
}

/// Every registered participant is listed by id, an erased one under their pseudonym, with the
/// decision time of their latest decision and the arrival of their latest upload.
pub fn dashboard_participants_list_everyone_with_their_latest_activity(store: &dyn TestingStore) {
    let settings = dashboard_settings(chrono_tz::UTC);
    let users = dashboard_study(store);
    store
        .add_user(&user("dash-idle"), &Enrollment::default(), at(5, 0))
        .unwrap();
    store
        .withdraw(&users[1], "moved away", at(500_000, 0))
        .unwrap();

    let listed = store
        .dashboard_participants(&settings, at(1_000_000, 0))
        .unwrap();

    let ids: Vec<&str> = listed.iter().map(|p| p.user_id.as_str()).collect();
    assert_eq!(ids, ["<dash&c>", "dash-a", "dash-b", "dash-idle"]);
    assert_eq!(store.dashboard_participant_counts().unwrap(), (4, 0));
    for p in &listed {
        let decisions: Vec<Decision> = store
            .decisions()
            .unwrap()
            .map(Result::unwrap)
            .filter(|d| d.user_id.as_str() == p.user_id)
            .collect();
        let uploads: Vec<StudyRecord> = TestingStore::study_data(store)
            .unwrap()
            .map(Result::unwrap)
            .filter(|r| r.user_id.as_str() == p.user_id)
            .collect();
        assert_eq!(
            p.last_decision,
            decisions.iter().map(|d| d.requested_at).max(),
            "{p:?}"
        );
        assert_eq!(
            p.last_upload,
            uploads.iter().map(|r| r.received_at).max(),
            "{p:?}"
        );
    }
    assert_eq!(listed[2].withdrawn_at, Some(at(500_000, 0)));
    assert_eq!(
        listed[2].status_at(at(1_000_000, 0)),
        crate::dashboard::ActivityStatus::Withdrawn
    );

    let erased = store
        .erase_participant(&users[0], &erasure(at(600_000, 0)))
        .unwrap();
    let listed = store
        .dashboard_participants(&settings, at(1_000_000, 0))
        .unwrap();
    assert_eq!(listed.len(), 4);
    let pseudonym = listed
        .iter()
        .find(|p| p.user_id == erased.pseudonym)
        .unwrap();
    assert_eq!(pseudonym.erased_at, Some(at(600_000, 0)));
    assert_eq!(
        store.dashboard_participant_counts().unwrap(),
        (4, 1),
        "an erased participant is still counted, as erased"
    );
    assert!(pseudonym.last_decision.is_some());
    assert_eq!(
        pseudonym.last_upload, None,
        "an erasure deletes the uploads"
    );
    assert!(listed.iter().all(|p| p.user_id != "dash-a"));
    // The figures lose the erased uploads too.
    assert_days(store, &settings, at(1_000_001, 0));
}

/// Every update request is listed, newest received first, with its provenance and delivery.
pub fn dashboard_updates_come_newest_first(store: &dyn TestingStore) {
    seeded(store);
    assert!(store.dashboard_updates().unwrap().is_empty());
    let requests: Vec<UpdateRequest> = (1..=3).map(update_request).collect();
    for r in &requests {
        store.create_update_request(r).unwrap();
    }
    let delivery = CallbackDelivery {
        status: CallbackStatus::Failed,
        attempts: 3,
        last_error: Some("refused".into()),
        finished_at: Some(at(9, 0)),
    };
    store.record_callback(requests[0].id, &delivery).unwrap();

    let listed = store.dashboard_updates().unwrap();

    let ids: Vec<Uuid> = listed.iter().map(|u| u.id).collect();
    assert_eq!(ids, [requests[2].id, requests[1].id, requests[0].id]);
    assert_eq!(listed[2].callback, delivery);
    assert_eq!(
        listed[0],
        store.update_request(requests[2].id).unwrap().unwrap()
    );
}

/// The latest available decisions drawn under a version, newest first, at most `limit`.
pub fn dashboard_recent_decisions_are_the_newest_available_of_a_version(store: &dyn TestingStore) {
    dashboard_study(store);
    let v1 = 1;
    let all: Vec<Decision> = store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .filter(|d| d.parameter_version == v1 && d.availability.is_available())
        .collect();

    let recent = store.dashboard_recent_decisions(v1, 5).unwrap();

    let want: Vec<Decision> = all.iter().rev().take(5).cloned().collect();
    assert_eq!(recent, want);
    assert_eq!(
        store.dashboard_recent_decisions(v1, 1000).unwrap().len(),
        all.len()
    );
    assert!(store.dashboard_recent_decisions(99, 5).unwrap().is_empty());
}

/// After a restore the figures are those of the restored rows, whatever the rollup held.
pub fn dashboard_days_after_a_restore_are_those_of_the_restored_rows(store: &dyn TestingStore) {
    let settings = dashboard_settings(chrono_tz::Europe::Berlin);
    let users = dashboard_study(store);
    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(100, 0)).unwrap().path;
    let v = store.current_parameters().unwrap().unwrap().version;
    let extra = dashboard_decision(&users[0], "default", 40, 30, 0.5, v);
    store.record_decision(&extra, DecisionGuard::None).unwrap();
    assert_days(store, &settings, at(1_000_000, 0));

    store.restore(&backup).unwrap();

    assert_days(store, &settings, at(1_000_001, 0));
    store.record_decision(&extra, DecisionGuard::None).unwrap();
    assert_days(store, &settings, at(1_000_002, 0));
}

fn monitor_query(now: DateTime<Utc>) -> crate::monitor::MonitorQuery {
    crate::monitor::MonitorQuery {
        now,
        outcome_due_before: now,
        outcome_lookback_from: at(0, 0),
        window_from: at(0, 0),
        clip: None,
        decision_types: vec!["default".into(), "evening".into()],
    }
}

/// `monitor_facts` MUST list exactly the participants registered, not withdrawn, not erased
/// and inside their window at `now`, with (per asked type they have decisions of) the
/// `request_timestamp` of the decision with the highest index, ordered by id.
pub fn monitor_facts_list_active_participants_with_their_latest_decisions(store: &dyn Store) {
    let params = seeded(store);
    let now = at(1_000, 0);
    for (name, enrollment) in [
        ("a-open", Enrollment::default()),
        ("b-inside", window(Some(10), Some(2_000))),
        ("c-ended", window(Some(10), Some(1_000))),
        ("d-not-started", window(Some(1_001), None)),
        ("e-withdrawn", Enrollment::default()),
        ("f-erased", Enrollment::default()),
    ] {
        store.add_user(&user(name), &enrollment, at(5, 0)).unwrap();
    }
    store
        .withdraw(&user("e-withdrawn"), "gone", at(6, 0))
        .unwrap();
    store
        .erase_participant(&user("f-erased"), &erasure(at(7, 0)))
        .unwrap();
    let a = user("a-open");
    // Index order, not storage order, picks the latest: idx 2 is stored before idx 1.
    let mut d2 = decision(&a, 2, 1, params.version);
    d2.requested_at = at(300, 0);
    let mut d1 = decision(&a, 1, 2, params.version);
    d1.requested_at = at(400, 0);
    let mut evening = decision(&a, 0, 3, params.version);
    evening.decision_type = kind("evening");
    evening.requested_at = at(100, 7);
    let mut other = decision(&a, 0, 4, params.version);
    other.decision_type = kind("noon");
    for d in [&d2, &d1, &evening, &other] {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }

    let facts = store.monitor_facts(&monitor_query(now)).unwrap();

    let listed: Vec<(&str, DateTime<Utc>)> = facts
        .participants
        .iter()
        .map(|p| (p.user_id.as_str(), p.since))
        .collect();
    assert_eq!(listed, [("a-open", at(5, 0)), ("b-inside", at(10, 0))]);
    let mut latest = facts.participants[0].latest.clone();
    latest.sort();
    assert_eq!(
        latest,
        [
            ("default".to_owned(), at(300, 0)),
            ("evening".to_owned(), at(100, 7))
        ]
    );
    assert!(facts.participants[1].latest.is_empty());
}

/// `monitor_facts` MUST list no participant when the query asks for no decision type (a
/// watchdog without a schedule), and still count the rest: here the overdue uploads.
pub fn monitor_facts_list_no_participant_without_decision_types(store: &dyn Store) {
    let params = seeded(store);
    let now = at(1_000, 0);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(5, 0))
        .unwrap();
    let mut d = decision(&alice, 0, 1, params.version);
    d.requested_at = at(300, 0);
    store.record_decision(&d, DecisionGuard::None).unwrap();
    let query = crate::monitor::MonitorQuery {
        decision_types: Vec::new(),
        ..monitor_query(now)
    };

    let facts = store.monitor_facts(&query).unwrap();

    assert_eq!(facts.participants, []);
    let overdue: Vec<(&str, u64)> = facts
        .overdue
        .iter()
        .map(|o| (o.user_id.as_str(), o.count))
        .collect();
    assert_eq!(overdue, [("alice", 1)]);
    // The same store lists her when a type is asked for.
    let listed = store
        .monitor_facts(&monitor_query(now))
        .unwrap()
        .participants;
    assert_eq!(listed.len(), 1);
}

/// `monitor_facts` MUST count, per participant not withdrawn nor erased, the available
/// decisions in the lookback whose `request_timestamp` is before `outcome_due_before` and
/// that have no upload, with the oldest one's time.
pub fn monitor_facts_count_overdue_uploads_per_participant(store: &dyn Store) {
    let params = seeded(store);
    let (alice, bob, gone) = (user("alice"), user("bob"), user("gone"));
    for u in [&alice, &bob, &gone] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let timed = |u: &UserId, i: i64, t: i64| {
        let mut d = decision(u, i, 1, params.version);
        d.requested_at = at(t, 0);
        d
    };
    let decisions = [
        timed(&alice, 0, 50),  // before the lookback
        timed(&alice, 1, 120), // overdue
        timed(&alice, 2, 150), // overdue
        timed(&alice, 3, 160), // uploaded
        timed(&alice, 4, 500), // not due yet
        unavailable(timed(&alice, 5, 170), None),
        timed(&bob, 0, 130),
        timed(&gone, 0, 130),
    ];
    for d in &decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    store.record_study_data(&upload_for(&decisions[3])).unwrap();
    store.record_study_data(&upload_for(&decisions[6])).unwrap();
    store.withdraw(&gone, "gone", at(200, 0)).unwrap();

    let query = crate::monitor::MonitorQuery {
        outcome_due_before: at(400, 0),
        outcome_lookback_from: at(100, 0),
        ..monitor_query(at(1_000, 0))
    };
    let facts = store.monitor_facts(&query).unwrap();

    assert_eq!(
        facts.overdue,
        [crate::monitor::OverdueOutcomes {
            user_id: "alice".into(),
            count: 2,
            oldest: at(120, 0),
        }]
    );
}

/// `monitor_facts` MUST report the latest completed update, the failures after it in the
/// window, the oldest unfinished request, failed callbacks in the window, and the window's
/// decisions by policy (at the clip bounds, within 1e-9), uploads and recorded refusals.
pub fn monitor_facts_count_updates_callbacks_and_shares(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    // Decided just before 3, 4, 5 and 6 s (see `decision`): the window from 4 s holds the
    // last two.
    let mut drawn = Vec::new();
    for (i, policy, prob) in [
        (0, Policy::Algorithm, 0.2),
        (1, Policy::Fallback { reason: "x".into() }, 0.5),
        (2, Policy::Algorithm, 0.8),
        (3, Policy::Fallback { reason: "y".into() }, 0.5),
    ] {
        let d = Decision {
            policy,
            action_prob: Probability::new(prob).unwrap(),
            ..decision(&alice, i, u32::try_from(i).unwrap() + 1, params.version)
        };
        store.record_decision(&d, DecisionGuard::None).unwrap();
        drawn.push(d);
    }
    let mut late = upload_for(&drawn[3]);
    late.received_at = at(10, 0);
    store.record_study_data(&late).unwrap();
    for t in [1, 5, 6] {
        store
            .record_refused_upload(&crate::monitor::RefusedUpload {
                decision_type: "default".into(),
                refused_at: at(t, 0),
            })
            .unwrap();
    }
    // Requests: 1 completes at 20, 2 fails at 30, 3 stays unfinished.
    for n in 1..=3 {
        store.create_update_request(&update_request(n)).unwrap();
    }
    let job = store.claim_update(at(19, 0)).unwrap().unwrap();
    job.complete("test-algo", &json!({}), &provenance(0), at(20, 0))
        .unwrap();
    let job = store.claim_update(at(29, 0)).unwrap().unwrap();
    let failed_id = job.request().id;
    job.fail("broken", at(30, 0)).unwrap();
    store
        .record_callback(
            failed_id,
            &CallbackDelivery {
                status: CallbackStatus::Failed,
                attempts: 3,
                last_error: Some("refused".into()),
                finished_at: Some(at(31, 0)),
            },
        )
        .unwrap();

    let query = crate::monitor::MonitorQuery {
        window_from: at(4, 0),
        clip: Some((0.2, 0.8)),
        ..monitor_query(at(1_000, 0))
    };
    let facts = store.monitor_facts(&query).unwrap();

    let u = &facts.updates;
    assert_eq!(u.last_completed, Some(at(20, 0)));
    assert_eq!(u.first_version_at, Some(at(0, 0)));
    assert_eq!(
        (u.failed_since_completed, u.first_failed_at),
        (1, Some(at(30, 0)))
    );
    assert_eq!(u.oldest_unfinished, Some(update_request(3).received_at));
    assert_eq!(u.callbacks_failed, 1);
    let w = &facts.window;
    assert_eq!(
        (w.drawn, w.fallbacks, w.algorithm, w.at_clip),
        (2, 1, 1, 1),
        "{w:?}"
    );
    assert_eq!((w.uploads, w.refused), (1, 2), "{w:?}");
}

fn change(state: crate::monitor::Severity, t: i64, alert: bool) -> crate::monitor::StateChange {
    crate::monitor::StateChange {
        state,
        at: at(t, 0),
        alert: alert.then(|| json!({"state": state.as_str()})),
        lease_until: at(t + 60, 0),
    }
}

/// `advance_monitor_state` MUST change the stored state only when it differs, say so, and
/// queue an alert (with `previous`) only with a change, and not for a first green.
pub fn monitor_state_changes_once_per_change(store: &dyn Store) {
    use crate::monitor::Severity::{Green, Red};
    let first = store
        .advance_monitor_state(&change(Green, 1, true))
        .unwrap();
    assert_eq!(
        (first.previous, first.changed, first.alert),
        (None, true, None)
    );
    let same = store
        .advance_monitor_state(&change(Green, 2, true))
        .unwrap();
    assert_eq!(
        (same.previous, same.changed, same.alert),
        (Some(Green), false, None)
    );
    let red = store.advance_monitor_state(&change(Red, 3, true)).unwrap();
    assert_eq!((red.previous, red.changed), (Some(Green), true));
    let alert = red.alert.expect("a change queues an alert");
    assert_eq!(alert.payload, json!({"state": "red", "previous": "green"}));
    assert_eq!(alert.attempts, 0);
    let quiet = store
        .advance_monitor_state(&change(Green, 4, false))
        .unwrap();
    assert_eq!(
        (quiet.previous, quiet.changed, quiet.alert),
        (Some(Red), true, None)
    );
}

/// Of callers moving the state to the same value at once, exactly one MUST see the change
/// and get its alert.
pub fn concurrent_state_changes_queue_one_alert(store: &dyn Store) {
    use crate::monitor::Severity::{Green, Yellow};
    store
        .advance_monitor_state(&change(Green, 1, true))
        .unwrap();
    let callers = 6;
    let barrier = Barrier::new(callers);
    let outcomes: Vec<crate::monitor::StateAdvance> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..callers)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    store
                        .advance_monitor_state(&change(Yellow, 2, true))
                        .unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|o| o.changed).count(), 1);
    assert_eq!(outcomes.iter().filter(|o| o.alert.is_some()).count(), 1);
    // Nothing is left to claim: the one alert is held by its caller.
    assert_eq!(store.claim_alert(at(3, 0), at(100, 0)).unwrap(), None);
}

/// A queued alert MUST NOT be claimed while held; once the hold ends exactly one claimer
/// gets it, and once recorded it is never claimed again.
pub fn alerts_are_held_claimed_and_recorded(store: &dyn Store) {
    use crate::monitor::Severity::{Green, Red};
    store
        .advance_monitor_state(&change(Green, 1, true))
        .unwrap();
    let queued = store
        .advance_monitor_state(&change(Red, 10, true))
        .unwrap()
        .alert
        .unwrap();
    // Held until 70.
    assert_eq!(store.claim_alert(at(69, 0), at(200, 0)).unwrap(), None);
    let claimed = store.claim_alert(at(71, 0), at(200, 0)).unwrap().unwrap();
    assert_eq!((claimed.id, &claimed.payload), (queued.id, &queued.payload));
    assert_eq!(store.claim_alert(at(72, 0), at(300, 0)).unwrap(), None);
    store
        .record_alert(
            claimed.id,
            &crate::monitor::AlertDelivery {
                delivered: false,
                attempts: 5,
                error: Some("refused".into()),
                finished_at: at(80, 0),
            },
        )
        .unwrap();
    assert_eq!(store.claim_alert(at(1_000, 0), at(2_000, 0)).unwrap(), None);
}

#[cfg(test)]
mod number_tests {
    use super::*;

    #[test]
    fn finite_doubles_are_finite_and_start_with_the_special_ones() {
        let values = finite_doubles(7, 300);
        assert_eq!(values.len(), 300);
        assert!(values.iter().all(|v| v.is_finite()));
        assert_eq!(values[1].to_bits(), (-0.0_f64).to_bits());
        assert_eq!(
            finite_doubles(7, 300),
            values,
            "the same seed, the same values"
        );
        assert!(values.iter().any(|v| v.abs() > 1e100), "{values:?}");
        assert!(
            values.iter().any(|v| v.abs() < 1e-100 && *v != 0.0),
            "{values:?}"
        );
    }

    #[test]
    fn same_json_bits_tells_the_sign_of_zero_and_the_kind_of_number() {
        assert!(same_json_bits(&json!({"a": [0.5, 1]}), &json!({"a": [0.5, 1]})).is_ok());
        let zero = same_json_bits(&json!({"a": [-0.0]}), &json!({"a": [0.0]}));
        assert_eq!(zero, Err("$.a[0]: sent -0.0, got 0.0".into()));
        assert!(same_json_bits(&json!(1.0), &json!(1)).is_err());
        assert!(same_json_bits(&json!({"a": 1}), &json!({"b": 1})).is_err());
        assert!(same_json_bits(&json!([1]), &json!([1, 2])).is_err());
    }
}
