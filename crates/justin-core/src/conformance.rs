//! The storage port's conformance suite (feature `conformance`): one function per `MUST` in
//! [`crate::ports::Store`], run against every storage adapter so that they are
//! interchangeable in fact and not only in type.
//!
//! Each check takes a fresh, empty, migrated store and talks to it only through the port. An
//! adapter's test crate runs them all with one line:
//!
//! ```text
//! justin_core::store_conformance_suite!(my_adapter::testing::TestDatabase::create);
//! ```
//!
//! which expands to one `#[test]` per check, each calling the given function for a fresh
//! [`StoreFixture`]. Checks rely on two conventions beyond the trait's signatures: timestamps
//! are kept to the microsecond, and [`Store::row_counts`] names the tables `users`,
//! `model_parameters`, `actions`, `study_data` and `model_update_requests`.

// This module is test code compiled into the library so other crates can run it; a failed
// assertion or unwrap is how a check reports.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Barrier;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use crate::domain::{
    Action, Decision, DecisionIdx, JsonObject, ModelParameters, Probability, State, StudyRecord,
    UpdateRequest, UpdateStatus, UserId,
};
use crate::ports::{Recorded, Store, StoreError, UpdateOutcome};

/// Gives a check a fresh, empty store and keeps whatever backs it (a database, a directory)
/// alive until the check ends.
pub trait StoreFixture {
    /// The store under test.
    fn store(&self) -> &dyn Store;
}

/// Expands to one `#[test]` per conformance check. The argument is called once per test and
/// must return a [`StoreFixture`] holding a fresh, empty store.
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
        $crate::store_conformance_suite!(@tests $make_fixture;
            add_user_rejects_duplicate,
            record_decision_rejects_unknown_user,
            record_decision_returns_stored_decision_on_repeat,
            record_decision_refuses_pair_with_study_data,
            concurrent_duplicate_decisions_store_exactly_one,
            record_study_data_rejects_unknown_user,
            record_study_data_rejects_duplicate,
            parameters_are_absent_before_seeding,
            seed_parameters_is_idempotent,
            concurrent_seeding_leaves_one_version,
            publish_parameters_increments_without_gaps,
            concurrent_publishers_leave_no_gaps,
            study_data_streams_every_record_in_upload_order,
            study_data_excludes_records_stored_after_the_call,
            study_data_of_empty_store_is_empty,
            update_requests_are_created_finished_and_read,
            finish_unknown_update_request_fails,
            row_counts_count_every_table,
            reset_empties_every_table,
            backup_writes_one_file_with_matching_row_counts,
        );
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
        decision_idx: idx(i),
        requested_at: at(i64::from(variant), 250_001),
        decided_at: at(i64::from(variant) + 1, 999_999),
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
    }
}

fn study_record(user_id: &UserId, i: i64) -> StudyRecord {
    StudyRecord {
        user_id: user_id.clone(),
        decision_idx: idx(i),
        requested_at: at(i, 1),
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
    }
}

fn update_request(n: u32) -> UpdateRequest {
    UpdateRequest {
        id: Uuid::new_v4(),
        requested_at: at(i64::from(n), 10),
        received_at: at(i64::from(n) + 1, 20),
        callback_url: format!("http://study.example/callback/{n}"),
        status: UpdateStatus::Processing,
        finished_at: None,
        error: None,
        parameter_version: None,
    }
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
    store.add_user(&user("alice"), at(0, 0)).unwrap();
    let again = store.add_user(&user("alice"), at(1, 0));
    assert!(
        matches!(again, Err(StoreError::UserExists)),
        "second add_user of one id: expected UserExists, got {again:?}"
    );
    store.add_user(&user("bob"), at(2, 0)).unwrap();
    assert_eq!(count(store, "users"), 2);
}

/// `record_decision` MUST return `UnknownUser` for a participant that is not registered, and
/// store nothing.
pub fn record_decision_rejects_unknown_user(store: &dyn Store) {
    let params = seeded(store);
    store.add_user(&user("alice"), at(0, 0)).unwrap();
    let result = store.record_decision(&decision(&user("mallory"), 0, 1, params.version));
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
    store.add_user(&alice, at(0, 0)).unwrap();
    let first = decision(&alice, 0, 1, params.version);
    assert_eq!(store.record_decision(&first).unwrap(), Recorded::Inserted);

    let repeat = decision(&alice, 0, 2, params.version);
    assert_ne!(
        first, repeat,
        "the repeat must differ for this check to mean anything"
    );
    assert_eq!(
        store.record_decision(&repeat).unwrap(),
        Recorded::Existing(first.clone())
    );
    // A third call still sees the first, not the second.
    assert_eq!(
        store
            .record_decision(&decision(&alice, 0, 3, params.version))
            .unwrap(),
        Recorded::Existing(first)
    );

    // Another decision index is another decision.
    let next = decision(&alice, 1, 4, params.version);
    assert_eq!(store.record_decision(&next).unwrap(), Recorded::Inserted);
    assert_eq!(count(store, "actions"), 2);
}

/// `record_decision` MUST return `StudyDataExists` when study data was uploaded for the pair,
/// whether or not a decision was stored for it before.
pub fn record_decision_refuses_pair_with_study_data(store: &dyn Store) {
    let params = seeded(store);
    let alice = user("alice");
    store.add_user(&alice, at(0, 0)).unwrap();

    store.record_study_data(&study_record(&alice, 0)).unwrap();
    let without_decision = store.record_decision(&decision(&alice, 0, 1, params.version));
    assert!(
        matches!(without_decision, Err(StoreError::StudyDataExists)),
        "decision after upload: expected StudyDataExists, got {without_decision:?}"
    );

    let earlier = decision(&alice, 1, 1, params.version);
    assert_eq!(store.record_decision(&earlier).unwrap(), Recorded::Inserted);
    store.record_study_data(&study_record(&alice, 1)).unwrap();
    let with_decision = store.record_decision(&earlier);
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
    store.add_user(&alice, at(0, 0)).unwrap();

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
                        let recorded = store.record_decision(&mine).unwrap();
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

/// `record_study_data` MUST return `UnknownUser` for a participant that is not registered.
pub fn record_study_data_rejects_unknown_user(store: &dyn Store) {
    store.add_user(&user("alice"), at(0, 0)).unwrap();
    let result = store.record_study_data(&study_record(&user("mallory"), 0));
    assert!(
        matches!(result, Err(StoreError::UnknownUser)),
        "upload for an unregistered user: expected UnknownUser, got {result:?}"
    );
    assert_eq!(count(store, "study_data"), 0);
}

/// A second `record_study_data` for one pair MUST return `StudyDataExists` and keep the first.
pub fn record_study_data_rejects_duplicate(store: &dyn Store) {
    let alice = user("alice");
    store.add_user(&alice, at(0, 0)).unwrap();
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
pub fn publish_parameters_increments_without_gaps(store: &dyn Store) {
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
pub fn concurrent_publishers_leave_no_gaps(store: &dyn Store) {
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
        store.add_user(u, at(0, 0)).unwrap();
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
pub fn study_data_streams_every_record_in_upload_order(store: &dyn Store) {
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
pub fn study_data_excludes_records_stored_after_the_call(store: &dyn Store) {
    let uploaded = upload_many(store, MANY_RECORDS);
    let late_user = user("late");
    store.add_user(&late_user, at(0, 0)).unwrap();

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
pub fn study_data_of_empty_store_is_empty(store: &dyn Store) {
    assert_eq!(store.study_data().unwrap().count(), 0);
    let alice = user("alice");
    store.add_user(&alice, at(0, 0)).unwrap();
    store.record_study_data(&study_record(&alice, 0)).unwrap();
    assert_eq!(store.study_data().unwrap().count(), 1);
}

// ---------------------------------------------------------------------------------------------
// Update requests

/// Update requests are stored as given, finished with either outcome, and read back.
pub fn update_requests_are_created_finished_and_read(store: &dyn Store) {
    let params = seeded(store);
    let completed = update_request(1);
    let failed = update_request(2);
    let pending = update_request(3);
    for r in [&completed, &failed, &pending] {
        store.create_update_request(r).unwrap();
        assert_eq!(store.update_request(r.id).unwrap().as_ref(), Some(r));
    }

    store
        .finish_update_request(
            completed.id,
            &UpdateOutcome::Completed {
                parameter_version: params.version,
            },
            at(10, 11),
        )
        .unwrap();
    store
        .finish_update_request(
            failed.id,
            &UpdateOutcome::Failed {
                error: "not enough data".into(),
            },
            at(12, 13),
        )
        .unwrap();

    assert_eq!(
        store.update_request(completed.id).unwrap(),
        Some(UpdateRequest {
            status: UpdateStatus::Completed,
            finished_at: Some(at(10, 11)),
            parameter_version: Some(params.version),
            ..completed
        })
    );
    assert_eq!(
        store.update_request(failed.id).unwrap(),
        Some(UpdateRequest {
            status: UpdateStatus::Failed,
            finished_at: Some(at(12, 13)),
            error: Some("not enough data".into()),
            ..failed
        })
    );
    assert_eq!(store.update_request(pending.id).unwrap(), Some(pending));
    assert_eq!(store.update_request(Uuid::new_v4()).unwrap(), None);
}

/// `finish_update_request` MUST return `UnknownUpdate` when no request has the id.
pub fn finish_unknown_update_request_fails(store: &dyn Store) {
    store.create_update_request(&update_request(1)).unwrap();
    let result = store.finish_update_request(
        Uuid::new_v4(),
        &UpdateOutcome::Failed { error: "x".into() },
        at(1, 0),
    );
    assert!(
        matches!(result, Err(StoreError::UnknownUpdate)),
        "finishing an unknown request: expected UnknownUpdate, got {result:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Whole-store operations

/// Fills every table with a different number of rows: 3 users, 2 parameter versions,
/// 4 decisions, 5 study records, 1 update request.
fn populate(store: &dyn Store) -> BTreeMap<String, u64> {
    let params = seeded(store);
    store
        .publish_parameters("test-algo", &json!({"v": 2}), at(1, 0))
        .unwrap();
    let users = [user("p1"), user("p2"), user("p3")];
    for u in &users {
        store.add_user(u, at(0, 0)).unwrap();
    }
    for i in 0..4 {
        store
            .record_decision(&decision(&users[0], i, 1, params.version))
            .unwrap();
    }
    for i in 0..5 {
        store
            .record_study_data(&study_record(&users[1], i))
            .unwrap();
    }
    store.create_update_request(&update_request(1)).unwrap();
    [
        ("users", 3),
        ("model_parameters", 2),
        ("actions", 4),
        ("study_data", 5),
        ("model_update_requests", 1),
    ]
    .into_iter()
    .map(|(t, n)| (t.to_owned(), n))
    .collect()
}

/// `row_counts` lists every table with its number of rows.
pub fn row_counts_count_every_table(store: &dyn Store) {
    let empty = counts(store);
    assert_eq!(
        empty.keys().map(String::as_str).collect::<Vec<_>>(),
        vec![
            "actions",
            "model_parameters",
            "model_update_requests",
            "study_data",
            "users"
        ]
    );
    assert!(
        empty.values().all(|&n| n == 0),
        "a fresh store is empty: {empty:?}"
    );
    let expected = populate(store);
    assert_eq!(counts(store), expected);
}

/// `reset` deletes every row of every table; the store is usable afterwards.
pub fn reset_empties_every_table(store: &dyn Store) {
    populate(store);
    store.reset().unwrap();
    let after = counts(store);
    assert!(after.values().all(|&n| n == 0), "after reset: {after:?}");
    assert_eq!(after.len(), 5);
    assert_eq!(store.current_parameters().unwrap(), None);
    assert_eq!(store.study_data().unwrap().count(), 0);
    // Ids and versions start over.
    store.add_user(&user("p1"), at(0, 0)).unwrap();
    assert_eq!(seeded(store).version, 1);
}

/// `backup` creates the missing directory and writes one file there, reporting the row count
/// of every table; no partial file is left beside it.
pub fn backup_writes_one_file_with_matching_row_counts(store: &dyn Store) {
    let expected = populate(store);
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
