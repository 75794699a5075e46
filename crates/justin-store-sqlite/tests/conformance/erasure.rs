//! Erasure on SQLite reaches the file: the erased participant's id, contexts and outcomes are
//! not left in the free space of the database's pages (nor in copies a page split left
//! behind), where a reader of the file, not of the tables, would find them.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use justin_core::builders::{at, context, decision, upload_for, user};
use justin_core::{DecisionGuard, Enrollment, Erasure, JsonObject, Store};
use justin_store_sqlite::testing::TestDatabase;

/// Marks that occur nowhere but in the participant's rows.
const ID: &str = "zq-participant-4711";
const CONTEXT: &str = "zq-context-mark";
const OUTCOME: &str = "zq-outcome-mark";

fn marked(key: &str, mark: &str) -> JsonObject {
    let mut object = context();
    object.insert(key.into(), serde_json::Value::String(mark.into()));
    object
}

/// The database file's bytes once the write-ahead log is copied into it and emptied.
fn file_bytes(db: &TestDatabase) -> Vec<u8> {
    let path = db.url().trim_start_matches("sqlite://").to_owned();
    let mut conn = SqliteConnection::establish(&path).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    std::fs::read(&path).unwrap()
}

fn holds(bytes: &[u8], mark: &str) -> bool {
    bytes.windows(mark.len()).any(|w| w == mark.as_bytes())
}

#[test]
fn an_erased_participant_leaves_nothing_in_the_file() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("kept"), &Enrollment::default(), at(0))
        .unwrap();
    store
        .add_user(&user(ID), &Enrollment::default(), at(0))
        .unwrap();
    for i in 0..50 {
        let mut d = decision(ID, i, params.version);
        d.context = marked("note", CONTEXT);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        let mut upload = upload_for(&d);
        upload.outcome = marked("said", OUTCOME);
        store.record_study_data(&upload).unwrap();
        store
            .record_decision(&decision("kept", i, params.version), DecisionGuard::None)
            .unwrap();
    }
    let before = file_bytes(&db);
    assert!(holds(&before, ID) && holds(&before, CONTEXT) && holds(&before, OUTCOME));

    store
        .erase_participant(
            &user(ID),
            &Erasure {
                id: uuid::Uuid::from_u128(9),
                erased_at: at(60),
                participant_number: 0,
                pseudonym: "erased-00000000-0000-0000-0000-000000000009".into(),
                row_counts: vec![],
                backup_file: "before.tar".into(),
            },
        )
        .unwrap();

    let after = file_bytes(&db);
    for mark in [ID, CONTEXT, OUTCOME] {
        assert!(!holds(&after, mark), "{mark} is still in the file");
    }
    // The other participant's rows are whole, and later deletes go on as before.
    assert_eq!(
        store.participant(&user("kept")).unwrap().unwrap().decisions,
        50
    );
    store.reset().unwrap();
}
