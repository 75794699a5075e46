//! Update jobs across "processes" (stores opened on the same file): the lease keeps a second
//! store from claiming while a job runs; a holder that dies (its job neither completes, fails
//! nor drops) blocks claims only until its lease expires, after which its request runs again;
//! and a job that lost its lease stores nothing.

use std::time::Duration;

use justin_core::{Provenance, Store, StoreError, UpdateJob, UpdateRequest, UpdateStatus};
use justin_store_sqlite::testing::TestDatabase;

use crate::support::at;

const SHORT_LEASE: Duration = Duration::from_millis(200);

fn request(n: i64) -> UpdateRequest {
    UpdateRequest::new(
        uuid::Uuid::new_v4(),
        at(n),
        "2025-01-01 12:00".into(),
        at(n),
        "http://cb".into(),
    )
}

fn provenance() -> Provenance {
    Provenance {
        service_version: "1".into(),
        algorithm: "algo".into(),
        config_hash: "h".into(),
        rows_read: 0,
        backup_file: None,
    }
}

fn seeded(store: &dyn Store) {
    store
        .seed_parameters("algo", &serde_json::json!({"v": 1}), at(0))
        .unwrap();
}

/// Claims until the lease held by a dead worker has expired; the number of tries bounds the
/// wait rather than a clock.
fn claim_after_expiry(store: &dyn Store) -> Box<dyn UpdateJob + '_> {
    for _ in 0..500 {
        if let Some(job) = store.claim_update(at(20)).unwrap() {
            return job;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the abandoned job's lease never expired");
}

#[test]
fn a_job_blocks_claims_from_another_store_on_the_file() {
    let db = TestDatabase::create();
    seeded(db.store());
    let (first, second) = (request(1), request(2));
    db.store().create_update_request(&first).unwrap();
    db.store().create_update_request(&second).unwrap();
    let other_process = db.open_again(|_| {});

    let job = db.store().claim_update(at(10)).unwrap().unwrap();
    assert!(other_process.claim_update(at(11)).unwrap().is_none());
    job.complete("algo", &serde_json::json!({}), &provenance(), at(12))
        .unwrap();

    let next = other_process.claim_update(at(13)).unwrap().unwrap();
    assert_eq!(next.request().id, second.id);
}

#[test]
fn an_expired_lease_lets_another_worker_take_an_abandoned_job() {
    let db = TestDatabase::with_config(|c| c.update_lease = SHORT_LEASE);
    seeded(db.store());
    let r = request(1);
    db.store().create_update_request(&r).unwrap();
    let dead_worker = db.open_again(|c| c.update_lease = SHORT_LEASE);

    let mut job = dead_worker.claim_update(at(10)).unwrap().unwrap();
    job.current_parameters().unwrap();
    // The worker's process dies: no complete, no fail, no drop; its lease stays behind.
    std::mem::forget(job);
    assert!(
        db.store().claim_update(at(11)).unwrap().is_none(),
        "the lease holds until it expires"
    );

    let taken_over = claim_after_expiry(db.store());
    assert_eq!(taken_over.request().id, r.id);
    assert_eq!(
        taken_over.request().attempts,
        2,
        "the abandoned attempt counts"
    );
    let published = taken_over
        .complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(21))
        .unwrap();
    assert_eq!(published.version, 2);
    let stored = db.store().update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Completed);
    assert_eq!(stored.attempts, 2);
}

#[test]
fn a_job_that_lost_its_lease_stores_nothing() {
    let db = TestDatabase::with_config(|c| c.update_lease = SHORT_LEASE);
    seeded(db.store());
    let r = request(1);
    db.store().create_update_request(&r).unwrap();
    let slow_worker = db.open_again(|c| c.update_lease = SHORT_LEASE);

    let slow = slow_worker.claim_update(at(10)).unwrap().unwrap();
    let taken_over = claim_after_expiry(db.store());
    assert_eq!(taken_over.request().id, r.id);

    let late = slow.complete(
        "algo",
        &serde_json::json!({"late": true}),
        &provenance(),
        at(30),
    );
    let Err(StoreError::Other(source)) = late else {
        panic!("a job without its lease must not complete: {late:?}");
    };
    assert!(source.to_string().contains("lost its lease"), "{source}");
    assert_eq!(db.store().current_parameters().unwrap().unwrap().version, 1);
    // The slow job's failure did not free the lease that is no longer its own.
    assert!(db.store().claim_update(at(31)).unwrap().is_none());
    taken_over
        .complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(32))
        .unwrap();
    assert_eq!(db.store().current_parameters().unwrap().unwrap().version, 2);
}

#[test]
fn a_job_whose_parameters_were_replaced_meanwhile_stores_nothing() {
    let db = TestDatabase::create();
    seeded(db.store());
    let r = request(1);
    db.store().create_update_request(&r).unwrap();

    let mut job = db.store().claim_update(at(10)).unwrap().unwrap();
    assert_eq!(job.current_parameters().unwrap().version, 1);
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
    let again = db.store().claim_update(at(13)).unwrap().unwrap();
    assert_eq!(
        again.request().attempts,
        2,
        "the failed job freed the lease"
    );
    assert_eq!(
        again
            .complete("algo", &serde_json::json!({}), &provenance(), at(14))
            .unwrap()
            .version,
        3
    );
}
