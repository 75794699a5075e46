//! Update jobs across processes: the update lock is per database (a second `PgStore` cannot
//! claim while a job runs), it never stays behind in a pooled connection, and a worker whose
//! session dies mid-update (as under `kill -9`) leaves the parameters as they were and its
//! request claimable again. A job's watermarks wait for uploads and corrections in flight, so
//! that none committed after them has an id at or below them.

use diesel::sql_types::BigInt;
use diesel::RunQueryDsl;
use justin_core::builders::{at, decision, provenance, record, update_request};
use justin_core::{
    Decision, DecisionGuard, Imputation, Store, StoreError, StudyRecord, TestingStore,
    UpdateInclusion, UpdateRecord, UpdateStatus,
};
use justin_store::testing::TestDatabase;

use crate::support::{connect, populate, second_store};

/// Advisory locks held on the test's database right now.
fn advisory_locks(db: &TestDatabase) -> i64 {
    diesel::dsl::sql::<BigInt>(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut connect(db))
    .unwrap()
}

#[test]
fn a_job_blocks_claims_from_another_store_on_the_database() {
    let db = TestDatabase::create();
    populate(db.store(), 0);
    let (first, second) = (update_request(1), update_request(2));
    db.store().create_update_request(&first).unwrap();
    db.store().create_update_request(&second).unwrap();
    let other_process = second_store(&db, 2);

    let job = db.store().claim_update(at(10)).unwrap().unwrap();

    assert!(other_process.claim_update(at(11)).unwrap().is_none());
    assert_eq!(advisory_locks(&db), 1);
    job.complete("algo", &serde_json::json!({}), &provenance(), at(12))
        .unwrap();
    let next = other_process.claim_update(at(13)).unwrap().unwrap();
    assert_eq!(next.request().id, second.id);
    drop(next);
}

#[test]
fn a_dropped_job_leaves_no_lock_in_the_pool() {
    let db = TestDatabase::create();
    populate(db.store(), 2);
    let r = update_request(1);
    db.store().create_update_request(&r).unwrap();
    // One connection: the job's goes back to the pool and serves everything afterwards.
    let worker = second_store(&db, 1);

    let mut job = worker.claim_update(at(10)).unwrap().unwrap();
    assert_eq!(
        job.study_data(justin_core::UpdateInclusion::default())
            .unwrap()
            .count(),
        2
    );
    drop(job);

    assert_eq!(advisory_locks(&db), 0, "the lock went with the job");
    worker.ping().unwrap();
    let again = db.store().claim_update(at(11)).unwrap().unwrap();
    assert_eq!(again.request().attempts, 2);
    again.fail("checked", at(12)).unwrap();
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn a_worker_killed_mid_update_changes_nothing_and_its_request_runs_again() {
    let db = TestDatabase::create();
    populate(db.store(), 3);
    let before = db.store().current_parameters().unwrap();
    let r = update_request(1);
    db.store().create_update_request(&r).unwrap();
    let worker = second_store(&db, 2);

    let mut job = worker.claim_update(at(10)).unwrap().unwrap();
    job.current_parameters().unwrap();
    assert_eq!(
        job.study_data(justin_core::UpdateInclusion::default())
            .unwrap()
            .count(),
        3
    );
    // kill -9 of the worker, as the database sees it: its session ends mid-transaction.
    let killed: i64 = diesel::dsl::sql::<BigInt>(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_locks WHERE locktype = 'advisory' \
         AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut connect(&db))
    .unwrap();
    assert_eq!(killed, 1, "exactly one session held the update lock");

    let late = job.complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(11));
    assert!(
        matches!(late, Err(StoreError::Unavailable(_) | StoreError::Other(_))),
        "completing on a dead session fails: {late:?}"
    );
    assert_eq!(db.store().current_parameters().unwrap(), before);
    let stored = db.store().update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Processing);
    assert_eq!(stored.attempts, 1);

    // The server releases the lock once the killed backend has exited, which takes a moment;
    // a bounded number of tries keeps this free of timing assumptions.
    let mut next = None;
    for _ in 0..500 {
        next = worker.claim_update(at(12)).unwrap();
        if next.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let next = next.expect("the interrupted request is claimable again");
    assert_eq!(next.request().id, r.id);
    assert_eq!(next.request().attempts, 2);
    let published = next
        .complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(13))
        .unwrap();
    assert_eq!(published.version, 2);
    drop(worker);
    assert_eq!(advisory_locks(&db), 0);
}

#[test]
fn a_job_whose_parameters_were_replaced_meanwhile_stores_nothing() {
    let db = TestDatabase::create();
    populate(db.store(), 1);
    let r = update_request(1);
    db.store().create_update_request(&r).unwrap();

    let mut job = db.store().claim_update(at(10)).unwrap().unwrap();
    assert_eq!(job.current_parameters().unwrap().version, 1);
    // Another writer stores version 2 after the job read version 1.
    let other = db
        .store()
        .publish_parameters("algo", &serde_json::json!({"other": true}), at(11))
        .unwrap();
    let result = job.complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(12));

    let Err(StoreError::Other(source)) = result else {
        panic!("expected the update to fail, got {result:?}");
    };
    assert!(source.to_string().contains("another writer"), "{source}");
    assert_eq!(db.store().current_parameters().unwrap(), Some(other));
    let stored = db.store().update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Processing);
    assert_eq!(stored.provenance, None);
    assert_eq!(advisory_locks(&db), 0, "the failed job released the lock");
    let again = db.store().claim_update(at(13)).unwrap().unwrap();
    assert_eq!(again.request().attempts, 2);
    assert_eq!(
        again
            .complete("algo", &serde_json::json!({}), &provenance(), at(14))
            .unwrap()
            .version,
        3
    );
}

/// Sessions of the test's database waiting for a lock on `study_data`.
fn waiting_on_study_data(db: &TestDatabase) -> i64 {
    diesel::dsl::sql::<BigInt>(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'study_data'::regclass \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut connect(db))
    .unwrap()
}

#[test]
fn a_job_waits_for_an_upload_in_flight_and_reads_it() {
    let db = TestDatabase::create();
    populate(db.store(), 1);
    db.store()
        .add_user(
            &justin_core::builders::user("bob"),
            &justin_core::Enrollment::default(),
            at(0),
        )
        .unwrap();
    let late = decision("bob", 100, 1);
    db.store()
        .record_decision(&late, justin_core::DecisionGuard::None)
        .unwrap();
    let mut other = connect(&db);
    // An upload whose id is drawn before the job starts but which commits after it asked for
    // its watermark, and a later one that commits at once with a higher id. The two are of
    // different participants: an upload waits for one of the same participant's in flight
    // (both update the participant's counts, migration 2026-12-05).
    diesel::connection::SimpleConnection::batch_execute(
        &mut other,
        "BEGIN; INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, \
         context, action, action_prob, state, outcome, reward, action_logged, sent_timestamp) \
         VALUES ('bob', 100, now(), now(), '{}', 1, 0.75, '[1]', '{}', 0, true, '2025-01-01')",
    )
    .unwrap();
    db.store().record_study_data(&record("alice", 1)).unwrap();
    db.store()
        .create_update_request(&update_request(1))
        .unwrap();

    let (waited, read, version) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut job = db.store().claim_update(at(10)).unwrap().unwrap();
            let read = job
                .study_data(justin_core::UpdateInclusion::default())
                .unwrap()
                .count();
            let version = job
                .complete("algo", &serde_json::json!({}), &provenance(), at(11))
                .unwrap()
                .version;
            (read, version)
        });
        // A bounded number of looks keeps this free of timing assumptions; the insert commits
        // before anything is asserted, so a failure cannot leave the worker waiting forever.
        let seen = (0..500).any(|_| {
            let seen = waiting_on_study_data(&db) == 1;
            if !seen {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            seen
        });
        let waited = seen && !worker.is_finished();
        diesel::connection::SimpleConnection::batch_execute(&mut other, "COMMIT").unwrap();
        let (read, version) = worker.join().unwrap();
        (waited, read, version)
    });

    assert!(waited, "the claim waited for the insert in flight");
    assert_eq!(
        read, 3,
        "the job read the upload that committed late, and the one after it"
    );
    let exported: Vec<_> = db
        .store()
        .export()
        .unwrap()
        .map(|row| row.unwrap())
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].decision, late);
    assert_eq!(
        exported[0].upload.as_ref().unwrap().used_in_version,
        Some(version)
    );
}

/// Sessions of the test's database waiting for a lock on `study_data_corrections`.
fn waiting_on_corrections(db: &TestDatabase) -> i64 {
    diesel::dsl::sql::<BigInt>(
        "SELECT count(*) FROM pg_locks WHERE NOT granted \
         AND relation = 'study_data_corrections'::regclass \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .get_result(&mut connect(db))
    .unwrap()
}

/// A correction whose id is drawn before a job starts but which commits after it asked for its
/// correction watermark is read by the job, and `update_rows` gives back exactly what the job
/// read: without the wait, a later correction's larger id would put the watermark above one
/// the job's snapshot cannot see, and `update_rows` would later read one the job never did.
#[test]
fn a_job_waits_for_a_correction_in_flight_and_reads_it() {
    let db = TestDatabase::create();
    populate(db.store(), 2);
    let mut other = connect(&db);
    diesel::connection::SimpleConnection::batch_execute(
        &mut other,
        "BEGIN; INSERT INTO study_data_corrections (study_data_id, user_id, decision_type, \
         decision_idx, request_timestamp, sent_timestamp, created_at, context, state, outcome, \
         reward) SELECT id, user_id, decision_type, decision_idx, now(), 'late', now(), \
         context, state, outcome, 7.0 FROM study_data WHERE decision_idx = 0",
    )
    .unwrap();
    db.store()
        .record_correction(&justin_core::StudyRecord {
            reward: 9.0,
            ..record("alice", 1)
        })
        .unwrap();
    db.store()
        .create_update_request(&update_request(1))
        .unwrap();

    let (waited, read, version) = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let mut job = db.store().claim_update(at(10)).unwrap().unwrap();
            let read: Vec<f64> = job
                .study_data(justin_core::UpdateInclusion::default())
                .unwrap()
                .map(|r| r.unwrap().reward)
                .collect();
            let version = job
                .complete("algo", &serde_json::json!({}), &provenance(), at(11))
                .unwrap()
                .version;
            (read, version)
        });
        // A bounded number of looks, each a round trip, and no sleep; the correction commits
        // before anything is asserted, so a failure cannot leave the worker waiting forever.
        let seen = (0..20_000).any(|_| waiting_on_corrections(&db) == 1);
        let waited = seen && !worker.is_finished();
        diesel::connection::SimpleConnection::batch_execute(&mut other, "COMMIT").unwrap();
        let (read, version) = worker.join().unwrap();
        (waited, read, version)
    });

    assert!(waited, "the claim waited for the correction in flight");
    assert_eq!(
        read,
        [7.0, 9.0],
        "both corrections are in force for the job"
    );
    let again: Vec<f64> = db
        .store()
        .update_rows(version)
        .unwrap()
        .map(|r| r.unwrap().record().reward)
        .collect();
    assert_eq!(again, read, "update_rows gives back what the job read");
}

/// An update that imputes rewards reads the decisions without an upload on a second connection
/// that imports the job's snapshot. What it reads is what the job's own connection reads when
/// the pool has no connection to spare: every such decision, in id order across pages, and
/// nothing stored after the job's snapshot, even while the second connection reads.
#[test]
fn imputed_decisions_read_ahead_are_those_the_jobs_connection_reads() {
    let db = TestDatabase::create();
    populate(db.store(), 0);
    let store = db.store();
    // More than a page of an update's reads.
    let decisions: Vec<Decision> = (0..1_205).map(|i| decision("alice", i, 1)).collect();
    for d in &decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    let upload = |d: &Decision| StudyRecord::imputed(d.clone(), 1.0);
    let uploaded: Vec<&Decision> = decisions.iter().step_by(7).collect();
    for d in &uploaded {
        store.record_study_data(&upload(d)).unwrap();
    }
    let imputation = Imputation {
        decided_by: at(1_000_000),
        reward: 0.25,
    };
    let expected: Vec<UpdateRecord> = uploaded
        .iter()
        .map(|d| UpdateRecord::Uploaded(upload(d)))
        .chain(
            decisions
                .iter()
                .filter(|d| d.decision_idx.get() % 7 != 0)
                .map(|d| UpdateRecord::Imputed(StudyRecord::imputed(d.clone(), 0.25))),
        )
        .collect();
    store.create_update_request(&update_request(1)).unwrap();
    let read = |worker: &dyn Store, meanwhile: &dyn Fn()| -> Vec<UpdateRecord> {
        let mut job = worker.claim_update(at(10)).unwrap().unwrap();
        job.current_parameters().unwrap();
        let stream = job
            .update_data(UpdateInclusion::default(), Some(imputation))
            .unwrap();
        meanwhile();
        stream.map(Result::unwrap).collect()
    };

    // One connection, the job's: the decisions are read after the uploads on it.
    let inline = read(&second_store(&db, 1), &|| {});
    assert_eq!(inline, expected);

    let ahead = read(store, &|| {
        // After the job's snapshot: an upload for a decision it imputes, and a new decision.
        store.record_study_data(&upload(&decisions[1])).unwrap();
        store
            .record_decision(&decision("alice", 5_000, 1), DecisionGuard::None)
            .unwrap();
    });
    assert_eq!(ahead, expected);
}
