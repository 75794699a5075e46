//! The store's tests against a real PostgreSQL server: the shared storage conformance suite,
//! then what only this adapter has (the backup's archive layout, restore's checks of a damaged
//! archive, backups under write load, update jobs across processes and killed workers, the
//! migrations, database creation, setup errors, error mapping and the study data snapshot).
//! One binary, so the suite links once.
//!
//! Every test gets a database of its own from `TestDatabase::create`; point the tests at a
//! server with `JUSTIN_TEST_DATABASE_URL` (default: postgres://postgres@127.0.0.1:5432/postgres).

// A test binary: helpers outside `#[test]` functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod conformance {
    use justin_store::testing::TestDatabase;

    justin_core::store_conformance_suite!(TestDatabase::create);
}

mod between_adapters;
mod erasure;
mod group_commit;
mod jobs;
mod load;
mod migrations;
mod restore;
mod round_trips;

mod support {
    use std::collections::BTreeMap;
    use std::io::Read;

    use justin_core::builders::{at, record, user};
    use justin_core::Store;

    pub use justin_testkit::ScratchDir;

    /// Reads every entry of a tar file into memory (the test archives are small).
    pub fn unpack(path: &std::path::Path) -> BTreeMap<String, String> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                (name, text)
            })
            .collect()
    }

    /// The records of a CSV file in PostgreSQL's dialect: fields split at commas outside
    /// quotes, `""` inside quotes is a quote, records end at newlines outside quotes.
    pub fn csv_records(text: &str) -> Vec<Vec<String>> {
        let mut records = Vec::new();
        let mut record = Vec::new();
        let mut field = String::new();
        let mut in_quotes = false;
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, in_quotes) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                ('"', _) => in_quotes = !in_quotes,
                (',', false) => record.push(std::mem::take(&mut field)),
                ('\n', false) => {
                    record.push(std::mem::take(&mut field));
                    records.push(std::mem::take(&mut record));
                }
                (c, _) => field.push(c),
            }
        }
        assert!(
            !in_quotes && field.is_empty() && record.is_empty(),
            "CSV ends mid-record"
        );
        records
    }

    /// A connection of the test's own, outside the store's pool.
    pub fn connect(db: &justin_store::testing::TestDatabase) -> diesel::PgConnection {
        diesel::Connection::establish(db.url()).unwrap()
    }

    /// A second store on the same database, as another process would have.
    pub fn second_store(
        db: &justin_store::testing::TestDatabase,
        pool_size: u32,
    ) -> justin_store::PgStore {
        justin_store::PgStore::connect(&justin_store::PgConfig {
            url: db.url().to_owned(),
            pool_size,
            connect_timeout: std::time::Duration::from_secs(5),
            create_if_missing: false,
            run_migrations: false,
        })
        .unwrap()
    }

    /// A user, version 1 of the parameters, and `n` study records.
    pub fn populate(store: &dyn Store, n: i64) {
        store
            .seed_parameters("algo", &serde_json::json!({"mu": 0}), at(0))
            .unwrap();
        store
            .add_user(&user("alice"), &justin_core::Enrollment::default(), at(0))
            .unwrap();
        for i in 0..n {
            store.record_study_data(&record("alice", i)).unwrap();
        }
    }
}

mod backup {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};
    use justin_core::builders::{at, decision};
    use justin_core::{Store, StoreError};
    use justin_store::testing::TestDatabase;

    use crate::support::{populate, unpack, ScratchDir};

    #[test]
    fn archive_holds_manifest_and_one_csv_per_table() {
        let db = TestDatabase::create();
        let store = db.store();
        populate(store, 3);
        store
            .record_decision(&decision("alice", 7, 1), justin_core::DecisionGuard::None)
            .unwrap();
        let dir = ScratchDir::new();

        let taken_at = "2025-03-04T05:06:07.089012Z".parse().unwrap();

        let report = store.backup(&dir, taken_at).unwrap();

        assert_eq!(
            report.path,
            dir.join("justin-backup-20250304T050607.089012Z.tar")
        );
        let files = unpack(&report.path);
        assert_eq!(
            files.keys().map(String::as_str).collect::<Vec<_>>(),
            vec![
                "actions.csv",
                "erasures.csv",
                "manifest.json",
                "model_parameters.csv",
                "model_update_requests.csv",
                "participant_events.csv",
                "study_data.csv",
                "study_data_corrections.csv",
                "update_provenance.csv",
                "users.csv"
            ]
        );
        let manifest: serde_json::Value = serde_json::from_str(&files["manifest.json"]).unwrap();
        assert_eq!(manifest["format_version"], 1);
        assert_eq!(manifest["taken_at"], "2025-03-04T05:06:07.089012Z");
        assert_eq!(manifest["database"], db.name());
        assert_eq!(
            manifest["migrations"],
            serde_json::json!([
                "20250101000000",
                "20250201000000",
                "20250301000000",
                "20250401000000",
                "20250402000000",
                "20250403000000",
                "20250501000000",
                "20261201000000",
                "20261202000000",
                "20261203000000",
                "20261204000000",
                "20261205000000",
                "20261207000000"
            ])
        );
        let tables = manifest["tables"].as_array().unwrap();
        let expected_rows = [
            ("users", 1),
            ("model_parameters", 1),
            ("actions", 1),
            ("study_data", 3),
            ("model_update_requests", 0),
            ("update_provenance", 0),
            ("participant_events", 1),
            ("erasures", 0),
            ("study_data_corrections", 0),
        ];
        assert_eq!(tables.len(), expected_rows.len());
        for ((name, rows), table) in expected_rows.iter().zip(tables) {
            assert_eq!(table["name"], *name);
            assert_eq!(table["rows"], *rows);
            let csv = &files[&format!("{name}.csv")];
            let mut lines = csv.lines();
            let header: Vec<&str> = lines.next().unwrap().split(',').collect();
            let columns: Vec<&str> = table["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().unwrap())
                .collect();
            assert_eq!(header, columns, "{name}: CSV header matches the manifest");
            // No field of these rows spans lines, so lines count rows.
            assert_eq!(lines.count(), *rows as usize, "{name}: one line per row");
        }
        assert_eq!(
            tables[0]["columns"],
            serde_json::json!([
                "id",
                "user_id",
                "created_at",
                "study_start",
                "study_start_sent",
                "study_end",
                "study_end_sent",
                "withdrawn_at",
                "withdrawal_reason",
                "erased_at"
            ])
        );
        assert_eq!(
            tables[6]["columns"],
            serde_json::json!([
                "id",
                "user_id",
                "kind",
                "recorded_at",
                "study_start",
                "study_start_sent",
                "study_end",
                "study_end_sent",
                "reason"
            ])
        );
        assert_eq!(
            tables[7]["columns"],
            serde_json::json!([
                "id",
                "erased_at",
                "participant_number",
                "pseudonym",
                "row_counts",
                "backup_file"
            ])
        );
        assert!(files["actions.csv"].contains("alice,7,"));
        assert_eq!(
            report.row_counts,
            expected_rows
                .iter()
                .map(|(n, r)| (n.to_string(), *r as u64))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn failed_backup_leaves_no_files() {
        let db = TestDatabase::create();
        populate(db.store(), 2);
        // A column this build does not know: exporting would silently drop it.
        PgConnection::establish(db.url())
            .unwrap()
            .batch_execute("ALTER TABLE study_data ADD COLUMN extra INTEGER")
            .unwrap();
        let dir = ScratchDir::new();

        let result = db.store().backup(&dir, at(0));

        let Err(StoreError::Other(source)) = result else {
            panic!("expected a failed backup, got {result:?}");
        };
        assert!(source.to_string().contains("extra"), "{source}");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(
            left.is_empty(),
            "nothing is left in the backup directory: {left:?}"
        );
    }

    #[test]
    fn backup_refuses_to_overwrite() {
        let db = TestDatabase::create();
        let dir = ScratchDir::new();
        let first = db.store().backup(&dir, at(0)).unwrap();
        let before = std::fs::read(&first.path).unwrap();
        populate(db.store(), 1);

        let second = db.store().backup(&dir, at(0));

        assert!(matches!(second, Err(StoreError::Other(_))), "{second:?}");
        assert_eq!(std::fs::read(&first.path).unwrap(), before);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}

mod setup {
    use std::time::Duration;

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection};
    use justin_core::builders::{at, user};
    use justin_core::Store;
    use justin_store::testing::{TestDatabase, DATABASE_URL_VAR, DEFAULT_DATABASE_URL};
    use justin_store::{PgConfig, PgStore, SetupError};

    fn server_url() -> String {
        std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned())
    }

    fn config(url: String) -> PgConfig {
        PgConfig {
            url,
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            create_if_missing: true,
            run_migrations: true,
        }
    }

    /// The server URL with another database; assumes the URL ends in `/<database>` with no
    /// query, as the default does.
    fn url_of(database: &str) -> String {
        let server = server_url();
        let (origin, _) = server.rsplit_once('/').unwrap();
        format!("{origin}/{database}")
    }

    fn drop_database(name: &str) {
        PgConnection::establish(&server_url())
            .unwrap()
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .unwrap();
    }

    #[test]
    fn connect_creates_a_missing_database_once_even_when_racing() {
        let name = format!("justin_setup_{}", uuid::Uuid::new_v4().simple());
        let stores: Vec<Result<PgStore, SetupError>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|_| s.spawn(|| PgStore::connect(&config(url_of(&name)))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let outcome: Vec<String> = stores
            .iter()
            .map(|s| {
                s.as_ref()
                    .map(|_| "ok".to_owned())
                    .unwrap_or_else(|e| e.to_string())
            })
            .collect();
        let first = stores.into_iter().next().unwrap();
        let store = first.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(outcome, vec!["ok", "ok", "ok"]);

        store.ping().unwrap();
        store
            .add_user(&user("alice"), &justin_core::Enrollment::default(), at(0))
            .unwrap();
        assert!(
            store.run_migrations().unwrap().is_empty(),
            "migrated already"
        );
        drop(store);
        drop_database(&name);
    }

    #[test]
    fn run_migrations_reports_what_it_applied() {
        let name = format!("justin_setup_{}", uuid::Uuid::new_v4().simple());
        let store = PgStore::connect(&PgConfig {
            run_migrations: false,
            ..config(url_of(&name))
        })
        .unwrap();

        assert!(store.row_counts().is_err(), "no tables before migrating");
        assert_eq!(
            store.run_migrations().unwrap(),
            vec![
                "2025-01-01-000000_create_study_tables".to_owned(),
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
        assert!(store.run_migrations().unwrap().is_empty());
        assert_eq!(store.row_counts().unwrap().len(), 9);
        drop(store);
        drop_database(&name);
    }

    #[test]
    fn unreachable_server_is_a_connect_error_without_the_password() {
        for create_if_missing in [false, true] {
            let result = PgStore::connect(&PgConfig {
                url: "postgres://justin:hunter2@127.0.0.1:1/study".into(),
                pool_size: 1,
                connect_timeout: Duration::from_millis(500),
                create_if_missing,
                run_migrations: true,
            });
            let Err(e) = result else {
                panic!("connecting to port 1 succeeded");
            };
            assert!(matches!(e, SetupError::Connect { .. }), "{e:?}");
            let message = e.to_string();
            assert!(
                message.starts_with(
                    "cannot connect to the database at postgres://justin:****@127.0.0.1:1/"
                ),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
        let config = config("postgres://justin:hunter2@db/study".into());
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn invalid_settings_are_refused() {
        let zero_pool = PgStore::connect(&PgConfig {
            pool_size: 0,
            ..config(server_url())
        });
        assert!(matches!(zero_pool, Err(SetupError::InvalidConfig(_))));
        let zero_timeout = PgStore::connect(&PgConfig {
            connect_timeout: Duration::ZERO,
            ..config(server_url())
        });
        assert!(matches!(zero_timeout, Err(SetupError::InvalidConfig(_))));
        let not_a_url = PgStore::connect(&config("mysql://localhost/x".into()));
        assert!(matches!(not_a_url, Err(SetupError::InvalidUrl { .. })));
    }

    #[test]
    fn test_database_is_dropped_with_its_value() {
        let db = TestDatabase::create();
        let url = db.url().to_owned();
        PgConnection::establish(&url).unwrap();
        drop(db);
        assert!(
            PgConnection::establish(&url).is_err(),
            "the database is gone"
        );
    }
}

mod errors {
    use std::time::Duration;

    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, RunQueryDsl};
    use justin_core::builders::{at, decision, record, user};
    use justin_core::{Recorded, Store, StoreError, TestingStore};
    use justin_store::testing::TestDatabase;
    use justin_store::{PgConfig, PgStore};

    use crate::support::populate;

    #[test]
    fn unknown_parameter_version_is_reported_as_such() {
        let db = TestDatabase::create();
        populate(db.store(), 0);
        let result = db
            .store()
            .record_decision(&decision("alice", 0, 99), justin_core::DecisionGuard::None);
        assert!(
            matches!(result, Err(StoreError::UnknownParameterVersion)),
            "{result:?}"
        );
    }

    #[test]
    fn lost_database_is_unavailable() {
        let db = TestDatabase::create();
        let store = PgStore::connect(&PgConfig {
            url: db.url().to_owned(),
            pool_size: 1,
            connect_timeout: Duration::from_millis(500),
            create_if_missing: false,
            run_migrations: false,
        })
        .unwrap();
        store.ping().unwrap();
        // Ends every session on the database and removes it.
        drop(db);

        // First the pooled connection's statement fails, then new connections do.
        let add = store.add_user(&user("alice"), &justin_core::Enrollment::default(), at(0));
        assert!(matches!(add, Err(StoreError::Unavailable(_))), "{add:?}");
        let ping = store.ping();
        assert!(matches!(ping, Err(StoreError::Unavailable(_))), "{ping:?}");
        let decision =
            store.record_decision(&decision("alice", 0, 1), justin_core::DecisionGuard::None);
        assert!(
            matches!(decision, Err(StoreError::Unavailable(_))),
            "{decision:?}"
        );
    }

    #[test]
    fn rng_seed_is_stored_bit_for_bit() {
        let db = TestDatabase::create();
        populate(db.store(), 0);
        let mut d = decision("alice", 0, 1);
        d.rng_seed = 0x8000_0000_0000_0001;
        assert_eq!(
            db.store()
                .record_decision(&d, justin_core::DecisionGuard::None)
                .unwrap(),
            Recorded::Inserted
        );
        let raw: i64 =
            diesel::dsl::sql::<diesel::sql_types::BigInt>("SELECT rng_seed FROM actions")
                .get_result(&mut PgConnection::establish(db.url()).unwrap())
                .unwrap();
        assert_eq!(raw, i64::MIN + 1);
        assert_eq!(
            db.store()
                .record_decision(&d, justin_core::DecisionGuard::None)
                .unwrap(),
            Recorded::Existing(d)
        );
    }

    #[test]
    fn study_data_ignores_rows_committed_after_the_call() {
        let db = TestDatabase::create();
        populate(db.store(), 2);
        db.store()
            .add_user(&user("bob"), &justin_core::Enrollment::default(), at(0))
            .unwrap();
        let mut other = PgConnection::establish(db.url()).unwrap();
        // An upload whose id is drawn before the call but which commits after it, of another
        // participant: an upload waits for one of the same participant's in flight (both
        // update the participant's counts, migration 2026-12-05).
        other
            .batch_execute(
                "BEGIN; INSERT INTO study_data (user_id, decision_idx, request_timestamp, \
                 created_at, context, action, action_prob, state, outcome, reward, \
                 action_logged, sent_timestamp) \
                 VALUES ('bob', 100, now(), now(), '{}', 0, 0.5, '[1]', '{}', 0, false, \
                 '2025-01-01')",
            )
            .unwrap();
        db.store().record_study_data(&record("alice", 2)).unwrap();

        let stream = db.store().study_data().unwrap();
        other.batch_execute("COMMIT").unwrap();
        let indices: Vec<i64> = stream.map(|r| r.unwrap().decision_idx.get()).collect();

        assert_eq!(indices, vec![0, 1, 2]);
        assert_eq!(db.store().study_data().unwrap().count(), 4);
    }

    #[test]
    fn dropping_a_stream_early_returns_its_connection() {
        let db = TestDatabase::create();
        populate(db.store(), 3);
        // More streams than the pool (4) has connections, each dropped after one record.
        for _ in 0..10 {
            let mut stream = db.store().study_data().unwrap();
            assert!(stream.next().unwrap().is_ok());
        }
        db.store().ping().unwrap();
        assert_eq!(db.store().study_data().unwrap().count(), 3);
    }
}
