//! Update jobs across "processes" (stores opened on the same file): the lease keeps a second
//! store from claiming while a job runs; a holder that dies (its job neither completes, fails
//! nor drops) blocks claims only until its lease expires, after which its request runs again;
//! and a job that lost its lease stores nothing. A holder in a process that really died (its
//! lease file no longer locked) is taken over at once, without waiting for the lease.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::Duration;

use justin_core::builders::{at, provenance, update_request};
use justin_core::{Store, StoreError, TestingStore, UpdateJob, UpdateStatus};
use justin_store_sqlite::testing::TestDatabase;

const SHORT_LEASE: Duration = Duration::from_millis(200);

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
    let (first, second) = (update_request(1), update_request(2));
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
    let r = update_request(1);
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
    let r = update_request(1);
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
    let r = update_request(1);
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

/// Set for the child process of the test below: the URL of the database whose update it claims.
const HOLDER_VAR: &str = "JUSTIN_TEST_LEASE_HOLDER_URL";

/// The child half of `a_killed_holder_is_taken_over_at_once_and_a_live_one_is_not`: with
/// [`HOLDER_VAR`] set, claims the update, says so and holds the job until it is killed (its
/// stdin never closes). Without it, there is nothing to do.
#[test]
fn lease_holder_process() {
    let Ok(url) = std::env::var(HOLDER_VAR) else {
        return;
    };
    let store = justin_store_sqlite::SqliteStore::connect(&justin_store_sqlite::SqliteConfig {
        url,
        ..Default::default()
    })
    .unwrap();
    let job = store
        .claim_update(at(10))
        .unwrap()
        .expect("a request to claim");
    println!("claimed {}", job.request().id);
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).ok();
    drop(job);
}

#[test]
fn a_killed_holder_is_taken_over_at_once_and_a_live_one_is_not() {
    // The default lease (10 minutes): only the lease file can let the claim through.
    let db = TestDatabase::create();
    seeded(db.store());
    let r = update_request(1);
    db.store().create_update_request(&r).unwrap();
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "jobs::lease_holder_process", "--nocapture"])
        .env(HOLDER_VAR, db.url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(holder.stdout.take().unwrap()).lines();
    let claimed = format!("claimed {}", r.id);
    // Ends when the child prints the line or exits (its stdout then closes).
    let said = lines.by_ref().map_while(Result::ok).any(|l| l == claimed);
    assert!(said, "the holder process did not claim the update");

    assert!(
        db.store().claim_update(at(11)).unwrap().is_none(),
        "a live holder in another process keeps its update"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();

    let taken_over = db
        .store()
        .claim_update(at(12))
        .unwrap()
        .expect("the update of a dead holder is taken over at once");
    assert_eq!(taken_over.request().id, r.id);
    assert_eq!(
        taken_over.request().attempts,
        2,
        "the killed attempt counts"
    );
    taken_over
        .complete("algo", &serde_json::json!({"v": 2}), &provenance(), at(13))
        .unwrap();
    let stored = db.store().update_request(r.id).unwrap().unwrap();
    assert_eq!(stored.status, UpdateStatus::Completed);
    let left: Vec<_> = std::fs::read_dir(db.dir())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("-lease-"))
        .collect();
    assert!(left.is_empty(), "lease files left behind: {left:?}");
}
