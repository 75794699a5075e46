//! Concurrent load on one database file: many writers and readers at once must all succeed.
//! SQLite has one write lock; WAL, the busy timeout and `BEGIN IMMEDIATE` for read-then-write
//! transactions are what keep "database is locked" from reaching callers.

use std::sync::Barrier;

use justin_core::builders::{at, decision, upload_for, user};
use justin_core::{DecisionGuard, Enrollment};
use justin_core::{Recorded, Store, StoreError, TestingStore, UploadRecorded};
use justin_store_sqlite::testing::TestDatabase;

use crate::support::ScratchDir;

const THREADS: usize = 8;
const DECISIONS: i64 = 200;

#[test]
fn eight_writers_with_readers_and_a_backup_see_no_lock_errors() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({"mu": 0}), at(0))
        .unwrap();
    let names: Vec<String> = (0..THREADS).map(|t| format!("writer-{t}")).collect();
    let backups = ScratchDir::new();
    // Every thread starts together, so they contend for the write lock from the first call.
    let barrier = Barrier::new(THREADS + 2);

    let errors: Vec<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for name in &names {
            let barrier = &barrier;
            handles.push(s.spawn(move || {
                let mut errors = Vec::new();
                barrier.wait();
                if let Err(e) = store.add_user(&user(name), &Enrollment::default(), at(0)) {
                    errors.push(format!("add_user: {e:?}"));
                }
                for i in 0..DECISIONS {
                    // Under the newest version, read again when another writer published a
                    // newer one in between, as the service does.
                    let mut d = decision(name, i, params.version);
                    let recorded = loop {
                        d.parameter_version = match store.current_parameters() {
                            Ok(Some(p)) => p.version,
                            other => break Err(format!("current_parameters: {other:?}")),
                        };
                        match store.record_decision(&d, DecisionGuard::None) {
                            Err(StoreError::UnknownParameterVersion) => {}
                            other => break Ok(other),
                        }
                    };
                    match recorded {
                        Ok(Ok(Recorded::Inserted)) => {}
                        other => errors.push(format!("record_decision {name} {i}: {other:?}")),
                    }
                    match store.record_study_data(&upload_for(&d)) {
                        Ok(UploadRecorded {
                            action_logged: true,
                        }) => {}
                        other => errors.push(format!("record_study_data {name} {i}: {other:?}")),
                    }
                    if i % 50 == 0 {
                        if let Err(e) =
                            store.publish_parameters("algo", &serde_json::json!({"i": i}), at(i))
                        {
                            errors.push(format!("publish_parameters: {e:?}"));
                        }
                    }
                }
                errors
            }));
        }
        // A reader streaming while the writers write.
        let barrier_ref = &barrier;
        handles.push(s.spawn(move || {
            barrier_ref.wait();
            let mut errors = Vec::new();
            for _ in 0..5 {
                match store.study_data() {
                    Ok(stream) => {
                        for item in stream {
                            if let Err(e) = item {
                                errors.push(format!("study_data item: {e:?}"));
                            }
                        }
                    }
                    Err(e) => errors.push(format!("study_data: {e:?}")),
                }
                if let Err(e) = store.row_counts() {
                    errors.push(format!("row_counts: {e:?}"));
                }
            }
            errors
        }));
        // A backup in the middle of it all.
        let (barrier_ref, dir) = (&barrier, &backups);
        handles.push(s.spawn(move || {
            barrier_ref.wait();
            match store.backup(dir, at(1)) {
                Ok(_) => Vec::new(),
                Err(e) => vec![format!("backup: {e:?}")],
            }
        }));
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });

    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let counts: std::collections::BTreeMap<String, u64> =
        store.row_counts().unwrap().into_iter().collect();
    let expected = THREADS as u64 * DECISIONS as u64;
    assert_eq!(counts["actions"], expected);
    assert_eq!(counts["study_data"], expected);
    assert_eq!(counts["users"], THREADS as u64);
    assert_eq!(counts["model_parameters"], 1 + THREADS as u64 * 4);
}
