//! `sqlite://:memory:`: one throwaway database shared by the whole pool, with the same
//! concurrency as a file, gone when the store is.

use justin_core::builders::{at, decision, upload_for, user};
use justin_core::{DecisionGuard, Enrollment};
use justin_core::{Recorded, Store};
use justin_store_sqlite::{SqliteConfig, SqliteStore};

fn memory_store(pool_size: u32) -> SqliteStore {
    SqliteStore::connect(&SqliteConfig {
        url: "sqlite://:memory:".into(),
        pool_size,
        ..SqliteConfig::default()
    })
    .unwrap()
}

#[test]
fn memory_database_is_one_database_for_the_pool_and_its_clones() {
    let store = memory_store(4);
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    let clone = store.clone();
    // Writes from other threads (other pooled connections) land in the same database.
    std::thread::scope(|s| {
        for t in 0..4 {
            let clone = &clone;
            s.spawn(move || {
                for i in 0..10 {
                    let d = decision("alice", t * 100 + i, params.version);
                    assert_eq!(
                        clone.record_decision(&d, DecisionGuard::None).unwrap(),
                        Recorded::Inserted
                    );
                }
            });
        }
    });
    assert_eq!(store.decisions().unwrap().count(), 40);

    // A stream and an update job stay open while others write, as with a file.
    let mut stream = store.decisions().unwrap();
    let d = decision("alice", 1000, params.version);
    store.record_decision(&d, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&d)).unwrap();
    assert_eq!(stream.by_ref().count(), 40);
    store
        .create_update_request(&justin_core::UpdateRequest::new(
            uuid::Uuid::new_v4(),
            at(1),
            "2025-01-01T12:00:00+02:00".into(),
            at(1),
            "http://x".into(),
        ))
        .unwrap();
    let mut job = store.claim_update(at(2)).unwrap().unwrap();
    store
        .add_user(&user("bob"), &Enrollment::default(), at(3))
        .unwrap();
    assert_eq!(
        job.study_data(justin_core::UpdateInclusion::default())
            .unwrap()
            .count(),
        1
    );
    job.complete(
        "algo",
        &serde_json::json!({"v": 2}),
        &justin_core::Provenance {
            service_version: "1".into(),
            algorithm: "algo".into(),
            config_hash: "h".into(),
            rows_read: 1,
            backup_file: None,
            included_policies: "algorithm".into(),
            imputed: None,
        },
        at(4),
    )
    .unwrap();
    assert_eq!(store.current_parameters().unwrap().unwrap().version, 2);
}

#[test]
fn every_memory_url_is_a_database_of_its_own() {
    let first = memory_store(2);
    let second = memory_store(2);
    first
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    second
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    let counts: std::collections::BTreeMap<String, u64> =
        first.row_counts().unwrap().into_iter().collect();
    assert_eq!(counts["users"], 1);
}
