//! The migrations: every `down.sql` reverts its `up.sql`, and each migration fills its new
//! columns sensibly for rows stored before it.

use diesel::connection::SimpleConnection;
use diesel::sql_types::{BigInt, Bool, Text};
use diesel::RunQueryDsl;
use justin_core::builders::decision;
use justin_core::{Availability, DecisionType, Recorded, Store, TestingStore};
use justin_store::testing::TestDatabase;

use crate::support::connect;

#[test]
fn study_safety_migration_reverts_and_marks_existing_rows() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250403000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
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
        vec![
            "2025-02-01-000000_study_safety".to_owned(),
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-04-03-000000_decision_key_lock".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
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

#[test]
fn decision_types_migration_keeps_old_rows_as_default_and_available() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250403000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
    // A study as the service stored it before the migration: three updates completed (the
    // first two finished before claims were recorded, so only their creation times are known),
    // one failed, and uploads before, between and after them (the last one stored the instant
    // the third update was claimed, and with the highest id).
    connect(&db)
        .batch_execute(
            "INSERT INTO users (user_id, created_at) VALUES ('alice', now());
             INSERT INTO model_parameters VALUES (1, 'algo', '{}', '2025-01-01'),
                 (2, 'algo', '{}', '2025-01-01'), (3, 'algo', '{}', '2025-01-02'),
                 (4, 'algo', '{}', '2025-01-03');
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                                  state, action, action_prob, parameter_version, rng_seed)
             VALUES ('alice', 0, now(), '2025-01-01 09:00Z', '{}', '[1]', 1, 0.75, 2, 0),
                    ('alice', 1, now(), '2025-01-02 09:00Z', '{}', '[1]', 0, 0.5, 3, 0),
                    ('alice', 2, now(), '2025-01-05 09:00Z', '{}', '[1]', 0, 0.5, 4, 0),
                    ('alice', 3, now(), '2025-01-02 10:30Z', '{}', '[1]', 0, 0.5, 3, 0);
             INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at,
                                     context, action, action_prob, state, outcome, reward,
                                     action_logged)
             VALUES ('alice', 0, now(), '2025-01-01 10:00Z', '{}', 1, 0.75, '[1]', '{}', 0, true),
                    ('alice', 1, now(), '2025-01-02 10:00Z', '{}', 0, 0.5, '[1]', '{}', 0, true),
                    ('alice', 2, now(), '2025-01-05 10:00Z', '{}', 0, 0.5, '[1]', '{}', 0, true),
                    ('alice', 3, now(), '2025-01-02 11:00Z', '{}', 0, 0.5, '[1]', '{}', 0, true);
             INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url,
                                                status, finished_at, parameter_version,
                                                started_at)
             VALUES ('00000000-0000-0000-0000-000000000001', now(), '2025-01-01 08:00Z',
                     'http://x', 'completed', now(), 2, NULL),
                    ('00000000-0000-0000-0000-000000000002', now(), '2025-01-01 12:00Z',
                     'http://x', 'completed', now(), 3, NULL),
                    ('00000000-0000-0000-0000-000000000003', now(), '2025-01-02 08:00Z',
                     'http://x', 'completed', now(), 4, '2025-01-02 11:00Z'),
                    ('00000000-0000-0000-0000-000000000004', now(), '2025-01-04 00:00Z',
                     'http://x', 'failed', now(), NULL, '2025-01-06 00:00Z');
             INSERT INTO update_provenance (update_id, parameter_version, service_version,
                                            algorithm, config_hash, rows_read, created_at)
             VALUES ('00000000-0000-0000-0000-000000000001', 2, '1', 'algo', 'h', 0, now()),
                    ('00000000-0000-0000-0000-000000000002', 3, '1', 'algo', 'h', 1, now()),
                    ('00000000-0000-0000-0000-000000000003', 4, '1', 'algo', 'h', 2, now());",
        )
        .unwrap();

    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-04-03-000000_decision_key_lock".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
    );

    let decisions: Vec<_> = db
        .store()
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decisions.len(), 4);
    for d in &decisions {
        assert_eq!(d.decision_type, DecisionType::default());
        assert_eq!(d.availability, Availability::Available);
    }
    assert!(db
        .store()
        .study_data()
        .unwrap()
        .all(|r| r.unwrap().available));
    #[derive(diesel::QueryableByName)]
    struct Watermark {
        #[diesel(sql_type = BigInt)]
        last_study_data_id: i64,
    }
    let watermarks: Vec<i64> = diesel::sql_query(
        "SELECT last_study_data_id FROM update_provenance ORDER BY parameter_version",
    )
    .load::<Watermark>(&mut connect(&db))
    .unwrap()
    .into_iter()
    .map(|w| w.last_study_data_id)
    .collect();
    // The uploads stored before each update was requested or claimed: none; the first; the
    // first two.
    assert_eq!(watermarks, vec![0, 1, 2]);
    let used: Vec<Option<i64>> = db
        .store()
        .export()
        .unwrap()
        .map(|row| row.unwrap().upload.unwrap().used_in_version)
        .collect();
    // Read first by the second update; by the third; by none; by none.
    assert_eq!(used, vec![Some(3), Some(4), None, None]);

    // The new key: another type at a used index is a new decision (under the newest version).
    let newest = db.store().current_parameters().unwrap().unwrap().version;
    let morning = justin_core::Decision {
        decision_type: DecisionType::parse("morning").unwrap(),
        ..decision("alice", 0, newest)
    };
    assert_eq!(
        db.store()
            .record_decision(&morning, justin_core::DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
}

#[test]
fn decision_types_migration_reverts_only_what_the_old_schema_can_hold() {
    let db = TestDatabase::create();
    let store = db.store();
    store
        .seed_parameters("algo", &serde_json::json!({}), justin_core::builders::at(0))
        .unwrap();
    store
        .add_user(
            &justin_core::builders::user("alice"),
            &justin_core::Enrollment::default(),
            justin_core::builders::at(0),
        )
        .unwrap();
    store
        .record_decision(&decision("alice", 0, 1), justin_core::DecisionGuard::None)
        .unwrap();
    let morning = justin_core::Decision {
        decision_type: DecisionType::parse("morning").unwrap(),
        ..decision("alice", 0, 1)
    };
    store
        .record_decision(&morning, justin_core::DecisionGuard::None)
        .unwrap();

    let down =
        include_str!("../../../../migrations/postgres/2025-03-01-000000_decision_types/down.sql");
    let mut conn = connect(&db);
    let refused = conn
        .batch_execute(&format!("BEGIN; {down}"))
        .unwrap_err()
        .to_string();
    conn.batch_execute("ROLLBACK").unwrap();
    assert!(refused.contains("cannot revert"), "{refused}");
    assert_eq!(store.decisions().unwrap().count(), 2, "nothing was dropped");

    connect(&db)
        .batch_execute("DELETE FROM actions WHERE decision_type = 'morning'")
        .unwrap();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250403000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
    assert_eq!(
        store.run_migrations().unwrap(),
        vec![
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-04-03-000000_decision_key_lock".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
    );
    // Reverting 2025-04-02 dropped the text as sent; applying it again filled in the stored
    // time's RFC 3339 form.
    let kept = decision("alice", 0, 1);
    let refilled = kept
        .requested_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        store
            .decisions()
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![justin_core::Decision {
            sent_timestamp: refilled,
            ..kept
        }]
    );
}

/// Rows stored before migration 2025-05-01 keep what they were: participants with open windows
/// who never withdrew, decisions of the algorithm in the study, uploads under their logged
/// decision's policy, updates that learned from the algorithm's decisions. And the rules of a
/// trial's life work on them: a participant registered before it can be erased in place.
#[test]
fn trial_life_migration_keeps_old_rows_as_they_were() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    connect(&db)
        .batch_execute(
            "INSERT INTO users (user_id, created_at) VALUES ('alice', '2025-01-01');
             INSERT INTO model_parameters VALUES (1, 'algo', '{}', '2025-01-01'),
                                                 (2, 'algo', '{}', '2025-01-02');
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                                  state, action, action_prob, parameter_version, rng_seed,
                                  sent_timestamp, available, unavailable_reason)
             VALUES ('alice', 0, '2025-01-01', '2025-01-01', '{\"steps\": 10}', '[1]', 1, 0.75,
                     1, 0, '2025-01-01T00:00:00Z', true, NULL),
                    ('alice', 1, '2025-01-01', '2025-01-01', '{}', '[]', 0, 0, 1, 0,
                     '2025-01-01T00:00:00Z', false, 'driving');
             INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at,
                                     context, action, action_prob, state, outcome, reward,
                                     action_logged, sent_timestamp)
             VALUES ('alice', 0, '2025-01-01', '2025-01-01', '{}', 1, 0.75, '[1]',
                     '{\"mood\": 3}', 0, true, '2025-01-01T00:00:00Z'),
                    ('alice', 5, '2025-01-01', '2025-01-01', '{}', 1, 0.5, '[1]', '{}', 0,
                     false, '2025-01-01T00:00:00Z');
             INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url,
                                                status, finished_at, parameter_version,
                                                started_at, sent_timestamp)
             VALUES ('00000000-0000-0000-0000-000000000001', '2025-01-02', '2025-01-02',
                     'http://x', 'completed', '2025-01-02', 2, '2025-01-02',
                     '2025-01-02T00:00:00Z');
             INSERT INTO update_provenance (update_id, parameter_version, service_version,
                                            algorithm, config_hash, rows_read, created_at,
                                            last_study_data_id)
             VALUES ('00000000-0000-0000-0000-000000000001', 2, '1', 'algo', 'h', 2,
                     '2025-01-02', 2);",
        )
        .unwrap();

    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
    );

    let store = db.store();
    let decisions: Vec<_> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions.len(), 2);
    assert!(decisions
        .iter()
        .all(|d| d.policy == justin_core::Policy::Algorithm && d.availability.in_study()));
    #[derive(diesel::QueryableByName)]
    struct Policy {
        #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
        policy: Option<String>,
    }
    let policies: Vec<Option<String>> =
        diesel::sql_query("SELECT policy FROM study_data ORDER BY decision_idx")
            .load::<Policy>(&mut connect(&db))
            .unwrap()
            .into_iter()
            .map(|p| p.policy)
            .collect();
    assert_eq!(policies, vec![Some("algorithm".to_owned()), None]);
    let update = store
        .update_request(uuid::Uuid::from_u128(1))
        .unwrap()
        .unwrap();
    assert_eq!(update.provenance.unwrap().included_policies, "algorithm");
    let alice = store
        .participant(&justin_core::builders::user("alice"))
        .unwrap()
        .unwrap();
    assert_eq!(alice.enrollment, justin_core::Enrollment::default());
    assert_eq!(alice.withdrawal, None);
    assert_eq!((alice.decisions, alice.uploads), (2, 2));
    // The export reads the old uploads as before: the logged one was read by the update.
    let used: Vec<Option<i64>> = store
        .export()
        .unwrap()
        .map(|r| r.unwrap().upload.and_then(|u| u.used_in_version))
        .collect();
    assert_eq!(used, vec![Some(2), None]);

    let id = uuid::Uuid::from_u128(7);
    let erased = store
        .erase_participant(
            &justin_core::builders::user("alice"),
            &justin_core::Erasure {
                id,
                erased_at: justin_core::builders::at(0),
                participant_number: 0,
                pseudonym: format!("erased-{id}"),
                row_counts: vec![],
                backup_file: "/b/before.tar".into(),
            },
        )
        .unwrap();
    assert_eq!(erased.participant_number, 1, "the users row keeps its id");
    assert_eq!(
        erased.row_counts,
        vec![
            ("actions".to_owned(), 2),
            ("study_data".to_owned(), 2),
            ("participant_events".to_owned(), 0),
            ("users".to_owned(), 1),
        ]
    );
    let kept: Vec<_> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert!(kept
        .iter()
        .all(|d| d.user_id.as_str() == erased.pseudonym && d.context.is_empty()));
    // The client's reason for unavailability goes with the participant.
    assert_eq!(
        kept[1].availability,
        Availability::Unavailable { reason: None }
    );
}

#[test]
fn trial_life_migration_reverts_only_what_the_old_schema_can_hold() {
    let db = TestDatabase::create();
    let store = db.store();
    store
        .seed_parameters("algo", &serde_json::json!({}), justin_core::builders::at(0))
        .unwrap();
    for name in ["alice", "bob"] {
        store
            .add_user(
                &justin_core::builders::user(name),
                &justin_core::Enrollment::default(),
                justin_core::builders::at(0),
            )
            .unwrap();
    }
    store
        .record_decision(&decision("alice", 0, 1), justin_core::DecisionGuard::None)
        .unwrap();
    let warmup = justin_core::Decision {
        policy: justin_core::Policy::Warmup,
        ..decision("bob", 0, 1)
    };
    store
        .record_decision(&warmup, justin_core::DecisionGuard::None)
        .unwrap();

    let down =
        include_str!("../../../../migrations/postgres/2025-05-01-000000_trial_life/down.sql");
    let mut conn = connect(&db);
    let refused = conn
        .batch_execute(&format!("BEGIN; {down}"))
        .unwrap_err()
        .to_string();
    conn.batch_execute("ROLLBACK").unwrap();
    assert!(refused.contains("cannot revert"), "{refused}");
    assert_eq!(store.decisions().unwrap().count(), 2, "nothing was dropped");

    // A withdrawal is refused the same way.
    connect(&db)
        .batch_execute("DELETE FROM actions WHERE policy = 'warmup'")
        .unwrap();
    store
        .withdraw(
            &justin_core::builders::user("bob"),
            "moved",
            justin_core::builders::at(1),
        )
        .unwrap();
    let refused = conn
        .batch_execute(&format!("BEGIN; {down}"))
        .unwrap_err()
        .to_string();
    conn.batch_execute("ROLLBACK").unwrap();
    assert!(refused.contains("cannot revert"), "{refused}");

    // Enrollments with open windows and decisions of the algorithm revert and come back.
    connect(&db)
        .batch_execute(
            "DELETE FROM participant_events WHERE kind = 'withdrawn'; \
             UPDATE users SET withdrawn_at = NULL, withdrawal_reason = NULL",
        )
        .unwrap();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(
        store.run_migrations().unwrap(),
        vec![
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
    );
    assert_eq!(
        store
            .decisions()
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
        vec![decision("alice", 0, 1)]
    );
}

/// Rows of `alice` (three decisions, two uploads), `bob` (one decision, no upload) and `carol`
/// (none), written by SQL as a seed, a restore or a hand edit writes them, with no help from
/// the service.
const ROWS_BY_SQL: &str = "
    INSERT INTO model_parameters (version, algorithm, parameters, created_at)
        VALUES (1, 'algo', '{}', '2025-01-01T00:00:00Z');
    INSERT INTO users (user_id, created_at)
        VALUES ('alice', '2025-01-01T00:00:00Z'), ('bob', '2025-01-01T00:00:00Z'),
               ('carol', '2025-01-01T00:00:00Z');
    INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state,
                         action, action_prob, parameter_version, rng_seed, sent_timestamp)
        SELECT u, i, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', '{}', '[]', 1, 0.5, 1, 0,
               '2025-01-01T00:00:00Z'
        FROM (VALUES ('alice', 0), ('alice', 1), ('alice', 2), ('bob', 0)) AS r (u, i);
    INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context,
                            action, action_prob, state, outcome, reward, action_logged,
                            sent_timestamp)
        SELECT 'alice', i, '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', '{}', 1, 0.5, '[]',
               '{}', 0, true, '2025-01-01T00:00:00Z'
        FROM generate_series(0, 1) AS i;";

/// `participant`'s (decisions, uploads) for `name`.
fn counts_of(db: &TestDatabase, name: &str) -> (u64, u64) {
    let p = db
        .store()
        .participant(&justin_core::UserId::parse(name).unwrap())
        .unwrap()
        .unwrap();
    (p.decisions, p.uploads)
}

#[derive(diesel::QueryableByName)]
struct Wrong {
    #[diesel(sql_type = BigInt)]
    wrong: i64,
}

/// How many users rows (erased ones too) hold counts other than their rows'.
fn wrong_counts(db: &TestDatabase) -> i64 {
    diesel::sql_query(
        "SELECT count(*) AS wrong FROM users u \
         WHERE decisions <> (SELECT count(*) FROM actions a WHERE a.user_id = u.user_id) \
            OR uploads <> (SELECT count(*) FROM study_data s WHERE s.user_id = u.user_id)",
    )
    .get_result::<Wrong>(&mut connect(db))
    .unwrap()
    .wrong
}

#[test]
fn participant_counts_follow_rows_written_by_sql() {
    let db = TestDatabase::create();
    connect(&db).batch_execute(ROWS_BY_SQL).unwrap();
    assert_eq!(counts_of(&db, "alice"), (3, 2));
    assert_eq!(counts_of(&db, "bob"), (1, 0));
    assert_eq!(counts_of(&db, "carol"), (0, 0));
    // Rows moved, deleted and renamed by hand, and bob renamed as an erasure renames him.
    connect(&db)
        .batch_execute(
            "UPDATE actions SET user_id = 'carol' WHERE user_id = 'alice' AND decision_idx = 2;
             UPDATE actions SET context = '{\"edited\": true}';
             DELETE FROM study_data WHERE user_id = 'alice' AND decision_idx = 0;
             UPDATE users SET user_id = 'erased-bob', erased_at = now() WHERE user_id = 'bob';
             INSERT INTO users (user_id, created_at) VALUES ('bob', now());",
        )
        .unwrap();
    assert_eq!(counts_of(&db, "alice"), (2, 1));
    assert_eq!(counts_of(&db, "carol"), (1, 0));
    assert_eq!(counts_of(&db, "bob"), (0, 0));
    assert_eq!(
        wrong_counts(&db),
        0,
        "the erased row keeps its rows' counts"
    );
    connect(&db)
        .batch_execute("DELETE FROM actions; DELETE FROM study_data;")
        .unwrap();
    assert_eq!(counts_of(&db, "alice"), (0, 0));
    assert_eq!(wrong_counts(&db), 0);
}

#[test]
fn participant_counts_migration_counts_the_rows_before_it() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261207000000");
    assert_eq!(db.revert_last_migration(), "20261205000000");
    connect(&db).batch_execute(ROWS_BY_SQL).unwrap();
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2026-12-05-000000_participant_counts".to_owned(),
            "2026-12-07-000000_participant_counts_in_one_update".to_owned()
        ]
    );
    assert_eq!(counts_of(&db, "alice"), (3, 2));
    assert_eq!(counts_of(&db, "bob"), (1, 0));
    assert_eq!(counts_of(&db, "carol"), (0, 0));
    assert_eq!(wrong_counts(&db), 0);
}

#[test]
fn participant_counts_stay_true_across_the_one_update_migration_both_ways() {
    let db = TestDatabase::create();
    // Rows of several participants per statement, then of one: both of the new function's
    // paths, then the old function's after the revert, then the new one's again.
    let writes = [
        ROWS_BY_SQL,
        "UPDATE actions SET user_id = 'carol' WHERE user_id = 'alice' AND decision_idx = 2;
         DELETE FROM study_data WHERE decision_idx = 0;",
        "DELETE FROM actions WHERE user_id IN ('bob', 'carol');",
    ];
    connect(&db).batch_execute(writes[0]).unwrap();
    assert_eq!(wrong_counts(&db), 0);
    assert_eq!(db.revert_last_migration(), "20261207000000");
    connect(&db).batch_execute(writes[1]).unwrap();
    assert_eq!(wrong_counts(&db), 0);
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec!["2026-12-07-000000_participant_counts_in_one_update".to_owned()]
    );
    connect(&db).batch_execute(writes[2]).unwrap();
    assert_eq!(wrong_counts(&db), 0);
    assert_eq!(counts_of(&db, "alice"), (2, 1));
    assert_eq!(counts_of(&db, "carol"), (0, 0));
}
