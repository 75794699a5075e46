//! The export beyond the shared suite: an upload stored after the export started is not joined
//! to a decision the export reads on a later page, so every row comes from one moment.

use justin_core::Store;
use justin_store_sqlite::testing::TestDatabase;

use crate::support::{at, decision, upload_for, user};

/// More decisions than one page of the export holds.
const DECISIONS: i64 = 6_000;

#[test]
fn uploads_stored_after_the_export_started_are_not_joined() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store.add_user(&user("alice"), at(0)).unwrap();
    for i in 0..DECISIONS {
        store
            .record_decision(&decision("alice", i, params.version))
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
