//! The export beyond the shared suite: an upload stored, or an update completed, after the
//! export started does not show on a page the export reads later, so every row comes from one
//! moment.

use justin_core::builders::{at, decision, upload_for, user};
use justin_core::{DecisionGuard, Enrollment};
use justin_core::{Provenance, Store, UpdateRequest};
use justin_store_sqlite::testing::TestDatabase;

/// More decisions than one page of the export holds.
const DECISIONS: i64 = 6_000;

#[test]
fn uploads_stored_after_the_export_started_are_not_joined() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    for i in 0..DECISIONS {
        store
            .record_decision(&decision("alice", i, params.version), DecisionGuard::None)
            .unwrap();
    }
    let mut export = store.export().unwrap();
    assert!(export.next().unwrap().unwrap().upload.is_none());
    // On the last page, which the export has not read yet.
    let last = decision("alice", DECISIONS - 1, params.version);
    store.record_study_data(&upload_for(&last)).unwrap();

    let rest: Vec<_> = export.map(Result::unwrap).collect();
    assert_eq!(rest.len() as i64, DECISIONS - 1);
    assert_eq!(rest.last().unwrap().decision, last);
    assert!(
        rest.iter().all(|row| row.upload.is_none()),
        "the upload came after the export started"
    );
    let now = store.export().unwrap().last().unwrap().unwrap();
    assert!(now.upload.is_some(), "a new export joins it");
}

#[test]
fn an_update_completed_after_the_export_started_is_not_shown() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    for i in 0..DECISIONS {
        let d = decision("alice", i, params.version);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        store.record_study_data(&upload_for(&d)).unwrap();
    }
    let mut export = store.export().unwrap();
    let first = export.next().unwrap().unwrap();
    assert_eq!(first.upload.unwrap().used_in_version, None);
    // Completed before the export reads its second page.
    store
        .create_update_request(&UpdateRequest::new(
            uuid::Uuid::new_v4(),
            at(0),
            "2025-01-01T12:00:00+02:00".into(),
            at(0),
            "http://x".into(),
        ))
        .unwrap();
    let provenance = Provenance {
        service_version: "t".into(),
        algorithm: "algo".into(),
        config_hash: "h".into(),
        rows_read: DECISIONS as u64,
        backup_file: None,
        included_policies: "algorithm".into(),
        imputed: None,
    };
    let v2 = store
        .claim_update(at(1))
        .unwrap()
        .unwrap()
        .complete("algo", &serde_json::json!({}), &provenance, at(2))
        .unwrap()
        .version;

    let used: Vec<Option<i64>> = export
        .map(|row| row.unwrap().upload.unwrap().used_in_version)
        .collect();
    assert_eq!(used.len() as i64, DECISIONS - 1);
    assert!(
        used.iter().all(Option::is_none),
        "the update completed after the export started"
    );
    let now = store.export().unwrap().last().unwrap().unwrap();
    assert_eq!(
        now.upload.unwrap().used_in_version,
        Some(v2),
        "a new export shows it"
    );
}
