//! The migrations: every `down.sql` reverts its `up.sql`, and the study-safety migration fills
//! its new columns sensibly for rows stored before it.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use justin_core::Store;
use justin_store_sqlite::testing::TestDatabase;

fn connect(db: &TestDatabase) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(db.url().trim_start_matches("sqlite://")).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
        .unwrap();
    conn
}

#[test]
fn both_migrations_revert_and_apply_again() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20250201000000");
    assert_eq!(db.revert_last_migration(), "20250101000000");
    assert!(db.store().row_counts().is_err(), "the tables are gone");
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-01-01-000000_create_study_tables".to_owned(),
            "2025-02-01-000000_study_safety".to_owned()
        ]
    );
    assert!(db.store().run_migrations().unwrap().is_empty());
    assert!(db
        .store()
        .row_counts()
        .unwrap()
        .iter()
        .all(|(_, n)| *n == 0));
}

#[test]
fn study_safety_migration_reverts_and_marks_existing_rows() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20250201000000");
    // Rows as the service stored them before the migration.
    connect(&db)
        .batch_execute(
            "INSERT INTO users (user_id, created_at) VALUES ('alice', '2025-01-01T00:00:00.000000Z');
             INSERT INTO model_parameters VALUES (1, 'algo', '{}', '2025-01-01T00:00:00.000000Z');
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                                  state, action, action_prob, parameter_version, rng_seed)
             VALUES ('alice', 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                     '{}', '[]', 1, 0.75, 1, 0),
                    ('alice', 1, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                     '{}', '[]', 0, 0.5, 1, 0);
             INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at,
                                     context, action, action_prob, state, outcome, reward)
             VALUES ('alice', 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                     '{}', 1, 0.75, '[]', '{}', 0),
                    ('alice', 1, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                     '{}', 1, 0.5, '[]', '{}', 0),
                    ('alice', 2, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
                     '{}', 1, 0.5, '[]', '{}', 0);
             INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url,
                                                status, finished_at)
             VALUES ('00000000-0000-0000-0000-000000000001', '2025-01-01T00:00:00.000000Z',
                     '2025-01-01T00:00:00.000000Z', 'http://x', 'completed',
                     '2025-01-01T00:00:01.000000Z'),
                    ('00000000-0000-0000-0000-000000000002', '2025-01-01T00:00:00.000000Z',
                     '2025-01-01T00:00:00.000000Z', 'http://x', 'processing', NULL);",
        )
        .unwrap();

    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec!["2025-02-01-000000_study_safety".to_owned()]
    );

    #[derive(QueryableByName)]
    struct Logged {
        #[diesel(sql_type = Bool)]
        action_logged: bool,
    }
    let logged: Vec<bool> =
        diesel::sql_query("SELECT action_logged FROM study_data ORDER BY decision_idx")
            .load::<Logged>(&mut connect(&db))
            .unwrap()
            .into_iter()
            .map(|l| l.action_logged)
            .collect();
    // Matching decision, mismatching decision, no decision: only the first is verified.
    assert_eq!(logged, vec![true, false, false]);
    let statuses: Vec<String> =
        diesel::dsl::sql::<Text>("SELECT callback_status FROM model_update_requests ORDER BY id")
            .load(&mut connect(&db))
            .unwrap();
    assert_eq!(statuses, vec!["failed", "pending"]);
    assert!(db.store().undelivered_callbacks().unwrap().is_empty());
    // The rebuilt study_data keeps its ids and its AUTOINCREMENT counter.
    let study: Vec<_> = db
        .store()
        .study_data()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(study.len(), 3);
    let queued = db
        .store()
        .claim_update(chrono::Utc::now())
        .unwrap()
        .expect("the unfinished request is queued");
    assert_eq!(queued.request().attempts, 1);
}
