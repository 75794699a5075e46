//! The migrations: every `down.sql` reverts its `up.sql`, the study-safety and decision-types
//! migrations fill their new columns sensibly for rows stored before them, and the
//! decision-types revert refuses rows the old schema cannot hold, and the trial-life migration
//! keeps what rows were and refuses inconsistent ones.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Nullable, Text};
use justin_core::builders::{at, decision, unavailable, upload_for, user};
use justin_core::DecisionGuard;
use justin_core::{
    Availability, Decision, DecisionType, Enrollment, Policy, Provenance, Recorded, Store,
    TestingStore, UpdateRequest,
};
use justin_store_sqlite::testing::TestDatabase;

fn connect(db: &TestDatabase) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(db.url().trim_start_matches("sqlite://")).unwrap();
    conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;")
        .unwrap();
    conn
}

#[test]
fn every_migration_reverts_and_applies_again() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
    assert_eq!(db.revert_last_migration(), "20250201000000");
    assert_eq!(db.revert_last_migration(), "20250101000000");
    assert!(db.store().row_counts().is_err(), "the tables are gone");
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-01-01-000000_create_study_tables".to_owned(),
            "2025-02-01-000000_study_safety".to_owned(),
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
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
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
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
        vec![
            "2025-02-01-000000_study_safety".to_owned(),
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
        ]
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

/// Rows as the service stored them before migration 2025-03-01: four decisions (the newest,
/// id 4, deleted again, as only a hand edit would), their uploads at three times, and update
/// requests that started between them, with the provenance of the completed ones.
const BEFORE_DECISION_TYPES: &str = "
INSERT INTO users (user_id, created_at) VALUES ('alice', '2025-01-01T00:00:00.000000Z');
INSERT INTO model_parameters VALUES
    (1, 'algo', '{}', '2025-01-01T00:00:00.000000Z'),
    (2, 'algo', '{}', '2025-01-02T00:00:00.000000Z'),
    (3, 'algo', '{}', '2025-01-04T00:00:00.000000Z');
INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state,
                     action, action_prob, parameter_version, rng_seed)
VALUES ('alice', 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
        '{\"steps\": 1}', '[1.0]', 1, 0.75, 1, 7),
       ('alice', 1, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
        '{}', '[]', 0, 0.5, 1, 8),
       ('alice', 5, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
        '{}', '[]', 0, 0.5, 1, 10),
       ('alice', 2, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
        '{}', '[]', 0, 0.5, 1, 9);
DELETE FROM actions WHERE decision_idx = 2;
INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context, action,
                        action_prob, state, outcome, reward, action_logged)
VALUES ('alice', 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T06:00:00.000000Z',
        '{}', 1, 0.75, '[]', '{}', 0, 1),
       ('alice', 1, '2025-01-01T00:00:00.000000Z', '2025-01-03T06:00:00.000000Z',
        '{}', 0, 0.5, '[]', '{}', 0, 1),
       ('alice', 5, '2025-01-01T00:00:00.000000Z', '2025-01-05T06:00:00.000000Z',
        '{}', 0, 0.5, '[]', '{}', 0, 1);
-- Completed: one started on day 2 (version 2), one known only by its creation on day 4
-- (version 3), and a failed one on day 1 that used nothing.
INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url, status,
                                   finished_at, parameter_version, started_at)
VALUES ('00000000-0000-0000-0000-000000000003', '2025-01-01T00:00:00.000000Z',
        '2025-01-04T00:00:00.000000Z', 'http://x', 'completed', '2025-01-04T00:00:01.000000Z',
        3, NULL),
       ('00000000-0000-0000-0000-000000000002', '2025-01-01T00:00:00.000000Z',
        '2025-01-01T00:00:00.000000Z', 'http://x', 'completed', '2025-01-02T00:00:01.000000Z',
        2, '2025-01-02T00:00:00.000000Z'),
       ('00000000-0000-0000-0000-000000000001', '2025-01-01T00:00:00.000000Z',
        '2025-01-01T07:00:00.000000Z', 'http://x', 'failed', '2025-01-01T07:00:01.000000Z',
        NULL, '2025-01-01T07:00:00.000000Z');
INSERT INTO update_provenance (update_id, parameter_version, service_version, algorithm,
                               config_hash, rows_read, backup_file, created_at)
VALUES ('00000000-0000-0000-0000-000000000002', 2, '0.1.0', 'algo', 'h', 1, NULL,
        '2025-01-02T00:00:01.000000Z'),
       ('00000000-0000-0000-0000-000000000003', 3, '0.1.0', 'algo', 'h', 2, NULL,
        '2025-01-04T00:00:01.000000Z');
";

/// What the export says each decision's upload was first used by, by decision index.
fn used_in_versions(store: &dyn Store) -> Vec<(i64, Option<i64>)> {
    store
        .export()
        .unwrap()
        .map(Result::unwrap)
        .filter_map(|row| {
            let upload = row.upload?;
            Some((row.decision.decision_idx.get(), upload.used_in_version))
        })
        .collect()
}

/// Each update's `last_study_data_id`, by parameter version.
fn watermarks(db: &TestDatabase) -> Vec<(i64, i64)> {
    diesel::dsl::sql::<(BigInt, BigInt)>(
        "SELECT parameter_version, last_study_data_id FROM update_provenance \
         ORDER BY parameter_version",
    )
    .load(&mut connect(db))
    .unwrap()
}

#[test]
fn decision_types_migration_keeps_decisions_as_default_and_available() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
    connect(&db).batch_execute(BEFORE_DECISION_TYPES).unwrap();
    let store = db.store();
    assert_eq!(
        store.run_migrations().unwrap(),
        vec![
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
        ]
    );

    let decisions: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions.len(), 3);
    for (d, idx) in decisions.iter().zip([0, 1, 5]) {
        assert_eq!(d.decision_idx.get(), idx);
        assert!(d.decision_type.is_default());
        assert_eq!(d.availability, Availability::Available);
    }
    assert_eq!(decisions[0].rng_seed, 7);
    let study: Vec<_> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert!(study
        .iter()
        .all(|r| r.decision_type.is_default() && r.available));
    // Each update is taken to have read what was stored when it started: version 2 (started
    // on day 2) the upload of day 1, version 3 (created on day 4) those of days 1 and 3. So
    // each upload shows the first completed update that started after it was stored, the last
    // none.
    assert_eq!(watermarks(&db), [(2, 1), (3, 2)]);
    assert_eq!(
        used_in_versions(store),
        [(0, Some(2)), (1, Some(3)), (5, None)]
    );

    // The new key: the same index with another type is a new decision (under the newest
    // version, 3), and ids continue after the deleted one.
    let morning = Decision {
        decision_type: DecisionType::parse("morning").unwrap(),
        ..decision("alice", 0, 3)
    };
    assert_eq!(
        store
            .record_decision(&morning, DecisionGuard::None)
            .unwrap(),
        Recorded::Inserted
    );
    let id: i64 = diesel::dsl::sql::<BigInt>("SELECT max(id) FROM actions")
        .get_result(&mut connect(&db))
        .unwrap();
    assert_eq!(id, 5, "the AUTOINCREMENT counter survives the rebuild");
    // The next update reads every upload and is the first to use the last one.
    store
        .create_update_request(&UpdateRequest::new(
            uuid::Uuid::new_v4(),
            at(0),
            "2025-01-01T12:00:00+02:00".into(),
            at(0),
            "http://x".into(),
        ))
        .unwrap();
    let mut job = store.claim_update(at(1)).unwrap().unwrap();
    assert_eq!(
        job.study_data(justin_core::UpdateInclusion::default())
            .unwrap()
            .count(),
        3
    );
    let provenance = Provenance {
        service_version: "t".into(),
        algorithm: "algo".into(),
        config_hash: "h".into(),
        rows_read: 3,
        backup_file: None,
        included_policies: "algorithm".into(),
        imputed: None,
    };
    let v4 = job
        .complete("algo", &serde_json::json!({}), &provenance, at(2))
        .unwrap()
        .version;
    assert_eq!(watermarks(&db), [(2, 1), (3, 2), (v4, 3)]);
    assert_eq!(
        used_in_versions(store),
        [(0, Some(2)), (1, Some(3)), (5, Some(v4))]
    );
}

const DECISION_TYPES_DOWN: &str =
    include_str!("../../../../migrations/sqlite/2025-03-01-000000_decision_types/down.sql");

#[test]
fn decision_types_revert_refuses_rows_the_old_schema_cannot_hold() {
    let db = TestDatabase::create();
    let store = db.store();
    let params = store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("alice"), &Enrollment::default(), at(0))
        .unwrap();
    let plain = decision("alice", 0, params.version);
    store.record_decision(&plain, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&plain)).unwrap();
    let off = unavailable(decision("alice", 1, params.version), "default", None);
    store.record_decision(&off, DecisionGuard::None).unwrap();
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
        rows_read: 1,
        backup_file: None,
        included_policies: "algorithm".into(),
        imputed: None,
    };
    store
        .claim_update(at(1))
        .unwrap()
        .unwrap()
        .complete("algo", &serde_json::json!({}), &provenance, at(2))
        .unwrap();

    // The revert as the migration harness runs it: in a transaction.
    let refused = connect(&db)
        .transaction(|conn| conn.batch_execute(DECISION_TYPES_DOWN))
        .expect_err("an unavailable decision blocks the revert")
        .to_string();
    assert!(
        refused.contains("cannot revert migration 2025-03-01"),
        "{refused}"
    );
    assert_eq!(
        store.decisions().unwrap().count(),
        2,
        "nothing changed: the schema is still the new one"
    );

    // With only default, available rows left, the revert brings the old key back.
    connect(&db)
        .batch_execute("DELETE FROM actions WHERE NOT available")
        .unwrap();
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(db.revert_last_migration(), "20250402000000");
    assert_eq!(db.revert_last_migration(), "20250401000000");
    assert_eq!(db.revert_last_migration(), "20250301000000");
    let mut conn = connect(&db);
    let columns: Vec<String> =
        diesel::dsl::sql::<Text>("SELECT name FROM pragma_table_info('actions') ORDER BY cid")
            .load(&mut conn)
            .unwrap();
    assert_eq!(columns.last().map(String::as_str), Some("rng_seed"));
    let columns: Vec<String> = diesel::dsl::sql::<Text>(
        "SELECT name FROM pragma_table_info('update_provenance') ORDER BY cid",
    )
    .load(&mut conn)
    .unwrap();
    assert_eq!(columns.last().map(String::as_str), Some("created_at"));
    let duplicate = conn.batch_execute(
        "INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                              state, action, action_prob, parameter_version, rng_seed)
         SELECT user_id, decision_idx, request_timestamp, created_at, context, state, action,
                action_prob, parameter_version, rng_seed
         FROM actions",
    );
    assert!(
        duplicate.is_err(),
        "(user_id, decision_idx) is unique again"
    );
    assert_eq!(
        store.run_migrations().unwrap(),
        vec![
            "2025-03-01-000000_decision_types".to_owned(),
            "2025-04-01-000000_exact_numbers".to_owned(),
            "2025-04-02-000000_sent_timestamps".to_owned(),
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned(),
        ]
    );
    let study: Vec<_> = store.study_data().unwrap().map(Result::unwrap).collect();
    // Reverting 2025-04-02 dropped the text as sent; applying it again filled in the stored
    // time's RFC 3339 form.
    let upload = upload_for(&plain);
    let refilled = upload
        .requested_at
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    assert_eq!(
        study,
        vec![justin_core::StudyRecord {
            sent_timestamp: refilled,
            ..upload
        }]
    );
}

/// Rows stored before migration 2025-05-01 keep what they were: participants with an open
/// window who never withdrew (and a history that starts afterwards), decisions the algorithm
/// drew for a participant in the study, uploads carrying their logged decision's policy (none
/// without one), updates that learned from the algorithm's decisions; and the tables of
/// histories and erasures are new and empty. Reverting the migration and applying it again
/// keeps the rows it found.
#[test]
fn trial_life_migration_keeps_what_rows_were() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    let t = "2025-01-01T00:00:00.000000Z";
    connect(&db)
        .batch_execute(&format!(
            "INSERT INTO users (user_id, created_at) VALUES ('alice', '{t}'), ('bob', '{t}');
             INSERT INTO model_parameters VALUES (1, 'algo', '{{}}', '{t}'),
                                                 (2, 'algo', '{{}}', '{t}');
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context,
                                  state, action, action_prob, parameter_version, rng_seed,
                                  decision_type, available, unavailable_reason, sent_timestamp)
             VALUES ('alice', 0, '{t}', '{t}', '{{\"x\":1}}', '[1]', 1, 0.75, 1, 7, 'default',
                     1, NULL, 'then'),
                    ('alice', 1, '{t}', '{t}', '{{}}', '[]', 0, 0, 1, 8, 'default', 0,
                     'driving', 'then');
             INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at,
                                     context, action, action_prob, state, outcome, reward,
                                     action_logged, decision_type, available, sent_timestamp)
             VALUES ('alice', 0, '{t}', '{t}', '{{}}', 1, 0.75, '[]', '{{}}', 1, 1, 'default', 1,
                     'then'),
                    ('bob', 5, '{t}', '{t}', '{{}}', 0, 0.5, '[]', '{{}}', 0, 0, 'default', 1,
                     'then');
             INSERT INTO model_update_requests (id, request_timestamp, created_at, callback_url,
                                                status, finished_at, parameter_version,
                                                attempts, started_at, callback_status,
                                                sent_timestamp)
             VALUES ('00000000-0000-0000-0000-000000000001', '{t}', '{t}', 'http://x',
                     'completed', '{t}', 2, 1, '{t}', 'delivered', 'then');
             INSERT INTO update_provenance VALUES ('00000000-0000-0000-0000-000000000001', 2,
                                                   '0.1.0', 'algo', 'abc', 2, NULL, '{t}', 2);"
        ))
        .unwrap();

    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned()
        ]
    );

    let store = db.store();
    let decisions: Vec<Decision> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions.len(), 2);
    for d in &decisions {
        assert_eq!(d.policy, Policy::Algorithm);
        assert!(d.availability.in_study());
    }
    assert_eq!(decisions[1].availability.reason(), Some("driving"));
    let alice = store.participant(&user("alice")).unwrap().unwrap();
    assert_eq!(alice.enrollment, Enrollment::default());
    assert_eq!(alice.withdrawal, None);
    assert_eq!((alice.decisions, alice.uploads), (2, 1));
    #[derive(QueryableByName)]
    struct Policies {
        #[diesel(sql_type = Nullable<Text>)]
        policy: Option<String>,
    }
    let policies: Vec<Option<String>> =
        diesel::sql_query("SELECT policy FROM study_data ORDER BY id")
            .load::<Policies>(&mut connect(&db))
            .unwrap()
            .into_iter()
            .map(|p| p.policy)
            .collect();
    assert_eq!(policies, [Some("algorithm".to_owned()), None]);
    let request = store
        .update_request(uuid::Uuid::from_u128(1))
        .unwrap()
        .unwrap();
    assert_eq!(request.provenance.unwrap().included_policies, "algorithm");
    let export: Vec<_> = store.export().unwrap().map(Result::unwrap).collect();
    assert_eq!(
        export[0].upload.as_ref().map(|u| u.used_in_version),
        Some(Some(2)),
        "the update that read the upload still shows"
    );
    let counts: std::collections::BTreeMap<String, u64> =
        store.row_counts().unwrap().into_iter().collect();
    assert_eq!((counts["participant_events"], counts["erasures"]), (0, 0));

    // Reverted and applied again, the rows the migration found are as they were.
    assert_eq!(db.revert_last_migration(), "20261205000000");
    assert_eq!(db.revert_last_migration(), "20261204000000");
    assert_eq!(db.revert_last_migration(), "20261203000000");
    assert_eq!(db.revert_last_migration(), "20261202000000");
    assert_eq!(db.revert_last_migration(), "20261201000000");
    assert_eq!(db.revert_last_migration(), "20250501000000");
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec![
            "2025-05-01-000000_trial_life".to_owned(),
            "2026-12-01-000000_monitor".to_owned(),
            "2026-12-02-000000_dashboard".to_owned(),
            "2026-12-03-000000_outcome_window".to_owned(),
            "2026-12-04-000000_corrections".to_owned(),
            "2026-12-05-000000_participant_counts".to_owned()
        ]
    );
    let again: Vec<Decision> = db
        .store()
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(again, decisions);
}

/// The columns the migration adds refuse rows the service never writes.
#[test]
fn trial_life_columns_refuse_inconsistent_rows() {
    let db = TestDatabase::create();
    let t = "2025-01-01T00:00:00.000000Z";
    let mut conn = connect(&db);
    conn.batch_execute(&format!(
        "INSERT INTO users (user_id, created_at) VALUES ('alice', '{t}');
         INSERT INTO model_parameters VALUES (1, 'algo', '{{}}', '{t}');"
    ))
    .unwrap();
    let action = |columns: &str, values: &str| {
        format!(
            "INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, \
             state, action, action_prob, parameter_version, rng_seed, available, \
             unavailable_reason, {columns}) \
             VALUES ('alice', 0, '{t}', '{t}', '{{}}', '[]', 0, 0, 1, 0, {values})"
        )
    };
    let refused = [
        "UPDATE users SET study_start = '2025-02-01T00:00:00.000000Z'".to_owned(),
        format!(
            "UPDATE users SET study_start = '{t}', study_start_sent = 'a', \
             study_end = '{t}', study_end_sent = 'b'"
        ),
        "UPDATE users SET withdrawal_reason = 'moved'".to_owned(),
        action("policy", "1, NULL, 'warmup-ish'"),
        action("policy", "1, NULL, 'fallback'"),
        action("policy, decided_by", "1, NULL, 'algorithm', 'me'"),
        action("in_study", "1, NULL, 0"),
        action("in_study", "0, 'driving', 0"),
        format!(
            "INSERT INTO participant_events (user_id, kind, recorded_at, reason) \
             VALUES ('alice', 'enrolled', '{t}', 'why')"
        ),
        format!("INSERT INTO erasures VALUES ('x', '{t}', 1, 'erased-x', 'not json', 'f.tar')"),
    ];
    for sql in &refused {
        assert!(conn.batch_execute(sql).is_err(), "accepted: {sql}");
    }
    let accepted = [
        format!(
            "UPDATE users SET study_start = '{t}', study_start_sent = 'a', \
             study_end = '2025-02-01T00:00:00.000000Z', study_end_sent = 'b'"
        ),
        action(
            "in_study, policy, fallback_reason",
            "0, 'withdrawn', 0, 'fallback', 'nan'",
        ),
    ];
    for sql in &accepted {
        conn.batch_execute(sql).unwrap();
    }
}

/// Rows of `alice` (three decisions, two uploads), `bob` (one decision, no upload) and `carol`
/// (none), written by SQL as a seed, a restore or a hand edit writes them, with no help from
/// the service.
const ROWS_BY_SQL: &str = "
    INSERT INTO model_parameters VALUES (1, 'algo', '{}', '2025-01-01T00:00:00.000000Z');
    INSERT INTO users (user_id, created_at)
        VALUES ('alice', '2025-01-01T00:00:00.000000Z'), ('bob', '2025-01-01T00:00:00.000000Z'),
               ('carol', '2025-01-01T00:00:00.000000Z');
    INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state,
                         action, action_prob, parameter_version, rng_seed, sent_timestamp)
        SELECT column1, column2, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z',
               '{}', '[]', 1, 0.5, 1, 0, '2025-01-01T00:00:00Z'
        FROM (VALUES ('alice', 0), ('alice', 1), ('alice', 2), ('bob', 0));
    INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context,
                            action, action_prob, state, outcome, reward, action_logged,
                            sent_timestamp)
        VALUES ('alice', 0, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z', '{}',
                1, 0.5, '[]', '{}', 0, 1, '2025-01-01T00:00:00Z'),
               ('alice', 1, '2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z', '{}',
                1, 0.5, '[]', '{}', 0, 1, '2025-01-01T00:00:00Z');";

/// `participant`'s (decisions, uploads) for `name`.
fn counts_of(db: &TestDatabase, name: &str) -> (u64, u64) {
    let p = db
        .store()
        .participant(&justin_core::UserId::parse(name).unwrap())
        .unwrap()
        .unwrap();
    (p.decisions, p.uploads)
}

#[derive(QueryableByName)]
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
    // Rows moved, deleted and renamed by hand, and bob renamed as an erasure renames him (his
    // rows first, then his users row).
    connect(&db)
        .batch_execute(
            "UPDATE actions SET user_id = 'carol' WHERE user_id = 'alice' AND decision_idx = 2;
             UPDATE actions SET context = '{\"edited\": true}';
             DELETE FROM study_data WHERE user_id = 'alice' AND decision_idx = 0;
             BEGIN;
             PRAGMA defer_foreign_keys = ON;
             UPDATE actions SET user_id = 'erased-bob' WHERE user_id = 'bob';
             UPDATE users SET user_id = 'erased-bob', erased_at = '2025-01-02T00:00:00.000000Z'
                 WHERE user_id = 'bob';
             COMMIT;
             INSERT INTO users (user_id, created_at) VALUES ('bob', '2025-01-03T00:00:00.000000Z');",
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
    // The other order: the users row renamed first, its rows after.
    connect(&db)
        .batch_execute(
            "BEGIN;
             PRAGMA defer_foreign_keys = ON;
             UPDATE users SET user_id = 'alice-2' WHERE user_id = 'alice';
             UPDATE actions SET user_id = 'alice-2' WHERE user_id = 'alice';
             UPDATE study_data SET user_id = 'alice-2' WHERE user_id = 'alice';
             COMMIT;",
        )
        .unwrap();
    assert_eq!(counts_of(&db, "alice-2"), (2, 1));
    assert_eq!(wrong_counts(&db), 0);
    connect(&db)
        .batch_execute("DELETE FROM actions; DELETE FROM study_data;")
        .unwrap();
    assert_eq!(counts_of(&db, "alice-2"), (0, 0));
    assert_eq!(wrong_counts(&db), 0);
}

#[test]
fn participant_counts_migration_counts_the_rows_before_it() {
    let db = TestDatabase::create();
    assert_eq!(db.revert_last_migration(), "20261205000000");
    connect(&db).batch_execute(ROWS_BY_SQL).unwrap();
    assert_eq!(
        db.store().run_migrations().unwrap(),
        vec!["2026-12-05-000000_participant_counts".to_owned()]
    );
    assert_eq!(counts_of(&db, "alice"), (3, 2));
    assert_eq!(counts_of(&db, "bob"), (1, 0));
    assert_eq!(counts_of(&db, "carol"), (0, 0));
    assert_eq!(wrong_counts(&db), 0);
}
