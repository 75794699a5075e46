//! The migrations: every `down.sql` reverts its `up.sql`, and the study-safety migration fills
//! its new columns sensibly for rows stored before it.

use diesel::connection::SimpleConnection;
use diesel::sql_types::{Bool, Text};
use diesel::RunQueryDsl;
use justin_core::Store;
use justin_store::testing::TestDatabase;

use crate::support::connect;

#[test]
fn study_safety_migration_reverts_and_marks_existing_rows() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20250201000000");
    assert!(
        db.store().row_counts().is_err(),
        "update_provenance is gone"
    );
    // Rows as the service stored them before the migration.
    connect(&db)
        .batch_execute(
            "INSERT INTO users (user_id, created_at) VALUES ('alice', now());
             INSERT INTO model_parameters VALUES (1, 'algo', '{}', now());
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                                  state, action, action_prob, parameter_version, rng_seed)
             VALUES ('alice', 0, now(), now(), '{}', '[]', 1, 0.75, 1, 0),
                    ('alice', 1, now(), now(), '{}', '[]', 0, 0.5, 1, 0);
             INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at,
                                     context, action, action_prob, state, outcome, reward)
             VALUES ('alice', 0, now(), now(), '{}', 1, 0.75, '[]', '{}', 0),
                    ('alice', 1, now(), now(), '{}', 1, 0.5, '[]', '{}', 0),
                    ('alice', 2, now(), now(), '{}', 1, 0.5, '[]', '{}', 0);
             INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url,
                                                status, finished_at)
             VALUES ('00000000-0000-0000-0000-000000000001', now(), now(), 'http://x',
                     'completed', now()),
                    ('00000000-0000-0000-0000-000000000002', now(), now(), 'http://x',
                     'processing', NULL);",
        )
        .unwrap();

    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec!["2025-02-01-000000_study_safety".to_owned()]
    );

    #[derive(diesel::QueryableByName, Debug, PartialEq)]
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
    assert!(
        db.store().undelivered_callbacks().unwrap().is_empty(),
        "old callbacks are not sent again"
    );
    let queued = db
        .store()
        .claim_update(chrono::Utc::now())
        .unwrap()
        .expect("the unfinished request is queued");
    assert_eq!(queued.request().attempts, 1);
}
