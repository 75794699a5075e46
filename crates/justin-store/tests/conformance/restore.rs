//! Restore, as only this adapter can test it: archives damaged in ways the suite cannot make
//! without knowing the format are refused before anything changes, with a reason; a restore
//! puts back the rows byte for byte and moves the identity sequences past them.

use std::io::Read;
use std::path::{Path, PathBuf};

use diesel::sql_types::{BigInt, Text};
use diesel::RunQueryDsl;
use justin_core::builders::{at, decision, upload_for, user};
use justin_core::tables::TABLES;
use justin_core::{Store, StoreError};
use justin_store::testing::TestDatabase;

use crate::support::{connect, populate, unpack, ScratchDir};

/// Every row of every table as JSON text, sorted, for comparing whole databases.
fn dump(db: &TestDatabase) -> Vec<String> {
    let mut conn = connect(db);
    TABLES
        .iter()
        .map(|t| {
            diesel::dsl::sql::<Text>(&format!(
                "SELECT '{t}: ' || coalesce(string_agg(row_to_json(x)::text, E'\\n' \
                 ORDER BY row_to_json(x)::text), '') FROM {t} x"
            ))
            .get_result(&mut conn)
            .unwrap()
        })
        .collect()
}

/// A [`dump`] with every row read as JSON, for comparing values rather than their text.
fn as_values(dump: &[String]) -> Vec<(String, Vec<serde_json::Value>)> {
    dump.iter()
        .map(|table| {
            let (name, rows) = table.split_once(": ").unwrap();
            let rows = rows
                .lines()
                .map(|row| serde_json::from_str(row).unwrap())
                .collect();
            (name.to_owned(), rows)
        })
        .collect()
}

/// A study with rows in every table, including a finished update with provenance and text
/// holding line breaks, quotes and commas.
fn study(db: &TestDatabase) {
    let store = db.store();
    populate(store, 4);
    store
        .add_user(&user("bob"), &justin_core::Enrollment::default(), at(0))
        .unwrap();
    for i in 0..3 {
        let d = decision("bob", i, 1);
        store
            .record_decision(&d, justin_core::DecisionGuard::None)
            .unwrap();
        store.record_study_data(&upload_for(&d)).unwrap();
    }
    // A correction, with text that needs quoting.
    let original = upload_for(&decision("bob", 1, 1));
    store
        .record_correction(&justin_core::StudyRecord {
            sent_timestamp: "2025-01-02, \"corrected\"\nagain".into(),
            outcome: serde_json::json!({"steps": 12, "note": "a,b"})
                .as_object()
                .unwrap()
                .clone(),
            reward: 0.1,
            ..original
        })
        .unwrap();
    let mut r = justin_core::UpdateRequest::new(
        uuid::Uuid::new_v4(),
        at(5),
        "2025-01-01T12:00:00+02:00".into(),
        at(5),
        "http://study.example/cb?a=1,b=\"2\"\nx".into(),
    );
    store.create_update_request(&r).unwrap();
    let job = store.claim_update(at(6)).unwrap().unwrap();
    job.complete(
        "algo",
        &serde_json::json!({"mu": 1}),
        &justin_core::Provenance {
            service_version: "1.2.3".into(),
            algorithm: "algo".into(),
            config_hash: "abc".into(),
            rows_read: 7,
            backup_file: Some("/b/x.tar".into()),
            included_policies: "algorithm,warmup".into(),
            imputed: None,
        },
        at(7),
    )
    .unwrap();
    r.id = uuid::Uuid::new_v4();
    store.create_update_request(&r).unwrap();
}

fn next_id(db: &TestDatabase, table: &str) -> i64 {
    diesel::dsl::sql::<BigInt>(&format!(
        "SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"
    ))
    .get_result(&mut connect(db))
    .unwrap()
}

fn max_id(db: &TestDatabase, table: &str) -> i64 {
    diesel::dsl::sql::<BigInt>(&format!("SELECT coalesce(max(id), 0) FROM {table}"))
        .get_result(&mut connect(db))
        .unwrap()
}

#[test]
fn restore_puts_back_every_byte_and_moves_the_sequences_on() {
    let db = TestDatabase::create();
    study(&db);
    let before = dump(&db);
    let dir = ScratchDir::new();
    let first = db.store().backup(&dir, at(100)).unwrap();

    db.store().reset().unwrap();
    db.store().restore(&first.path).unwrap();

    assert_eq!(dump(&db), before);
    for table in ["users", "actions", "study_data"] {
        assert_eq!(next_id(&db, table), max_id(&db, table) + 1, "{table}");
    }
    // A second backup of the restored database holds the same files.
    let second = db.store().backup(&dir, at(101)).unwrap();
    let (a, b) = (unpack(&first.path), unpack(&second.path));
    for (name, text) in &a {
        if name != "manifest.json" {
            assert_eq!(text, &b[name], "{name} survives a round trip");
        }
    }
}

#[test]
fn restore_of_empty_tables_restarts_their_ids() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let empty = db.store().backup(&dir, at(100)).unwrap();
    study(&db);

    db.store().restore(&empty.path).unwrap();

    assert!(db
        .store()
        .row_counts()
        .unwrap()
        .iter()
        .all(|(_, n)| *n == 0));
    assert_eq!(next_id(&db, "users"), 1);
    assert_eq!(next_id(&db, "actions"), 1);
}

/// Copies a tar, letting `edit` change or (with `None`) leave out each entry.
fn rewrite(
    from: &Path,
    to: PathBuf,
    edit: impl Fn(&str, String) -> Option<(String, String)>,
) -> PathBuf {
    let mut archive = tar::Archive::new(std::fs::File::open(from).unwrap());
    let mut out = tar::Builder::new(std::fs::File::create(&to).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut text = String::new();
        entry.read_to_string(&mut text).unwrap();
        if let Some((name, text)) = edit(&name, text) {
            let mut header = tar::Header::new_ustar();
            header.set_size(text.len() as u64);
            header.set_mode(0o600);
            out.append_data(&mut header, name, text.as_bytes()).unwrap();
        }
    }
    out.finish().unwrap();
    to
}

fn edit_manifest(text: &str, f: impl Fn(&mut serde_json::Value)) -> String {
    let mut manifest: serde_json::Value = serde_json::from_str(text).unwrap();
    f(&mut manifest);
    manifest.to_string()
}

/// Migration 2025-04-03 adds functions only: a backup taken before it (and one from SQLite,
/// which never has it) has this layout and restores as it is.
#[test]
fn a_backup_from_before_the_decision_key_lock_is_restored_as_it_is() {
    let db = TestDatabase::create();
    study(&db);
    let before = dump(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = rewrite(&current, dir.join("old.tar"), |name, text| {
        let text = if name == "manifest.json" {
            edit_manifest(&text, |m| {
                m["migrations"] = serde_json::json!([
                    "20250101000000",
                    "20250201000000",
                    "20250301000000",
                    "20250401000000",
                    "20250402000000",
                    "20250501000000",
                    "20261203000000",
                    "20261204000000"
                ]);
            })
        } else {
            text
        };
        Some((name.to_owned(), text))
    });

    db.store().reset().unwrap();
    db.store().restore(&old).unwrap();

    assert_eq!(dump(&db), before);
    assert!(db.store().run_migrations().unwrap().is_empty());
}

#[test]
fn restore_refuses_incomplete_or_edited_archives_and_changes_nothing() {
    let db = TestDatabase::create();
    study(&db);
    let dir = ScratchDir::new();
    let backup = db.store().backup(&dir, at(100)).unwrap().path;
    // A row the backup does not have: any restore would remove it.
    db.store()
        .add_user(&user("late"), &justin_core::Enrollment::default(), at(200))
        .unwrap();
    let before = dump(&db);

    type Edit = Box<dyn Fn(&str, String) -> Option<(String, String)>>;
    let keep = |name: &str, text: String| Some((name.to_owned(), text));
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "no-actions",
            Box::new(move |n, t| (n != "actions.csv").then(|| keep(n, t)).flatten()),
            "actions.csv is missing",
        ),
        (
            "no-manifest",
            Box::new(move |n, t| (n != "manifest.json").then(|| keep(n, t)).flatten()),
            "manifest.json is missing",
        ),
        (
            "row-count",
            Box::new(move |n, t| {
                if n == "manifest.json" {
                    keep(n, edit_manifest(&t, |m| m["tables"][3]["rows"] = 99.into()))
                } else {
                    keep(n, t)
                }
            }),
            "study_data.csv holds 7 rows but the manifest says 99",
        ),
        (
            "missing-row",
            Box::new(move |n, t| {
                if n == "users.csv" {
                    let cut = t.trim_end_matches('\n').rfind('\n').unwrap() + 1;
                    keep(n, t[..cut].to_owned())
                } else {
                    keep(n, t)
                }
            }),
            "users.csv holds 1 rows but the manifest says 2",
        ),
        (
            "header",
            Box::new(move |n, t| {
                if n == "users.csv" {
                    keep(n, t.replacen("created_at", "created", 1))
                } else {
                    keep(n, t)
                }
            }),
            "users.csv has the columns",
        ),
        (
            "format",
            Box::new(move |n, t| {
                if n == "manifest.json" {
                    keep(n, edit_manifest(&t, |m| m["format_version"] = 2.into()))
                } else {
                    keep(n, t)
                }
            }),
            "format_version 2 is not supported",
        ),
        (
            "migrations",
            Box::new(move |n, t| {
                if n == "manifest.json" {
                    keep(
                        n,
                        edit_manifest(&t, |m| {
                            m["migrations"] = serde_json::json!([
                                "20250101000000",
                                "20250501000000",
                                "20261204000000"
                            ])
                        }),
                    )
                } else {
                    keep(n, t)
                }
            }),
            "migrations",
        ),
        ("extra-entry", Box::new(move |n, t| keep(n, t)), ""),
        (
            "extra-table",
            Box::new(move |n, t| {
                if n == "manifest.json" {
                    keep(
                        n,
                        edit_manifest(&t, |m| {
                            let mut extra = m["tables"][0].clone();
                            extra["name"] = "notes".into();
                            extra["file"] = "notes.csv".into();
                            m["tables"].as_array_mut().unwrap().push(extra);
                        }),
                    )
                } else {
                    keep(n, t)
                }
            }),
            "this schema has",
        ),
    ];
    for (name, edit, reason) in cases {
        let mut path = rewrite(&backup, dir.join(format!("{name}.tar")), edit);
        let mut reason = reason.to_owned();
        if name == "extra-entry" {
            // An entry no backup has, appended after the real ones.
            let bytes = std::fs::read(&path).unwrap();
            let mut out = tar::Builder::new(Vec::new());
            let mut archive = tar::Archive::new(bytes.as_slice());
            for entry in archive.entries().unwrap() {
                let mut entry = entry.unwrap();
                let mut header = entry.header().clone();
                let entry_name = entry.path().unwrap().into_owned();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                out.append_data(&mut header, entry_name, data.as_slice())
                    .unwrap();
            }
            let mut header = tar::Header::new_ustar();
            header.set_size(2);
            out.append_data(&mut header, "notes.txt", &b"hi"[..])
                .unwrap();
            path = dir.join("extra-entry-2.tar");
            std::fs::write(&path, out.into_inner().unwrap()).unwrap();
            reason = "unexpected entry notes.txt".into();
        }

        let result = db.store().restore(&path);

        match result {
            Err(StoreError::InvalidBackup(message)) => {
                assert!(
                    message.contains(&reason),
                    "{name}: {message:?} should say {reason:?}"
                )
            }
            other => panic!("{name}: expected InvalidBackup, got {other:?}"),
        }
        assert_eq!(dump(&db), before, "{name}: the database is unchanged");
    }
    // The untouched archive still restores.
    db.store().restore(&backup).unwrap();
    assert!(matches!(
        db.store()
            .add_user(&user("late"), &justin_core::Enrollment::default(), at(300)),
        Ok(())
    ));
}

/// How many columns migrations 2025-03-01, 2025-04-02, 2025-05-01 and 2026-12-03 appended to
/// each table they changed.
const APPENDED_BY_DECISION_TYPES: [(&str, usize); 5] = [
    ("users", 7),
    ("actions", 8),
    ("study_data", 4),
    ("model_update_requests", 1),
    ("update_provenance", 7),
];

/// How many columns migrations 2025-04-02, 2025-05-01 and 2026-12-03 appended to each table
/// they changed.
const APPENDED_BY_SENT_TIMESTAMPS: [(&str, usize); 5] = [
    ("users", 7),
    ("actions", 5),
    ("study_data", 2),
    ("model_update_requests", 1),
    ("update_provenance", 6),
];

/// How many columns migrations 2025-05-01 and 2026-12-03 appended to each table they changed.
const APPENDED_BY_TRIAL_LIFE: [(&str, usize); 4] = [
    ("users", 7),
    ("actions", 4),
    ("study_data", 1),
    ("update_provenance", 6),
];

/// How many columns migrations 2026-12-03 and 2026-12-04 appended to each table they changed.
const APPENDED_BY_OUTCOME_WINDOW: [(&str, usize); 1] = [("update_provenance", 5)];

/// How many columns migration 2026-12-04 appended to each table it changed.
const APPENDED_BY_CORRECTIONS: [(&str, usize); 1] = [("update_provenance", 1)];

/// The tables migration 2025-05-01 created: a backup taken before it does not have them.
const CREATED_BY_TRIAL_LIFE: [&str; 2] = ["participant_events", "erasures"];

/// `backup` as the build before migration 2025-03-01 would have written it: without the
/// columns the migrations since appended, and without the migrations.
fn before_decision_types(backup: &Path, to: PathBuf) -> PathBuf {
    before(
        backup,
        to,
        &["20250101000000", "20250201000000"],
        &APPENDED_BY_DECISION_TYPES,
    )
}

/// `backup` as a build that had `migrations` would have written it: without the columns the
/// migrations since `appended` (per table), and without the tables 2025-05-01 and 2026-12-04
/// created when `migrations` lack them.
fn before(backup: &Path, to: PathBuf, migrations: &[&str], appended: &[(&str, usize)]) -> PathBuf {
    let without_tables = !migrations.contains(&"20250501000000");
    let without_corrections = !migrations.contains(&"20261204000000");
    let dropped = |table: &str| {
        (without_tables && CREATED_BY_TRIAL_LIFE.contains(&table))
            || (without_corrections && table == "study_data_corrections")
    };
    let appended = |table: &str| {
        appended
            .iter()
            .find(|(name, _)| *name == table)
            .map_or(0, |(_, n)| *n)
    };
    // Records are read and written whole: quoted fields may hold commas and line breaks.
    let drop_last = |text: &str, n: usize| {
        let mut reader = justin_backup::csv::CsvReader::new(text.as_bytes());
        let mut out = Vec::new();
        while let Some(mut fields) = reader.next_record().unwrap() {
            fields.truncate(fields.len() - n);
            justin_backup::csv::write_record(&mut out, &fields).unwrap();
        }
        String::from_utf8(out).unwrap()
    };
    rewrite(backup, to, |name, text| {
        let table = name.trim_end_matches(".csv");
        let text = match name {
            _ if dropped(table) => return None,
            "manifest.json" => edit_manifest(&text, |m| {
                m["migrations"] = serde_json::json!(migrations);
                m["tables"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| !dropped(t["name"].as_str().unwrap()));
                for table in m["tables"].as_array_mut().unwrap() {
                    let n = appended(table["name"].as_str().unwrap());
                    let columns = table["columns"].as_array_mut().unwrap();
                    columns.truncate(columns.len() - n);
                }
            }),
            _ if appended(table) > 0 => drop_last(&text, appended(table)),
            _ => text,
        };
        Some((name.to_owned(), text))
    })
}

/// Sets what migration 2025-05-01 fills in for rows stored before it (no histories, updates
/// that learned from the algorithm's decisions), so that the database is what restoring a
/// backup from before that migration makes of it.
fn trial_life_as_migration_fills(db: &TestDatabase) {
    corrections_as_migration_fills(db);
    diesel::connection::SimpleConnection::batch_execute(
        &mut connect(db),
        "DELETE FROM participant_events; \
         UPDATE update_provenance SET included_policies = 'algorithm'",
    )
    .unwrap();
}

/// Removes what a backup from before migration 2026-12-04 cannot hold (corrections, the
/// updates' correction watermarks), so that the database is what restoring one makes of it.
fn corrections_as_migration_fills(db: &TestDatabase) {
    diesel::connection::SimpleConnection::batch_execute(
        &mut connect(db),
        "DELETE FROM study_data_corrections; \
         UPDATE update_provenance SET last_correction_id = NULL",
    )
    .unwrap();
}

/// Sets every time as sent to what migration 2025-04-02 fills in for rows stored before it, so
/// that the database is what restoring a backup from before that migration makes of it (and
/// what 2025-05-01 fills in, which came after it).
fn sent_as_migration_fills(db: &TestDatabase) {
    trial_life_as_migration_fills(db);
    let mut conn = connect(db);
    for table in ["actions", "study_data", "model_update_requests"] {
        diesel::sql_query(format!(
            "UPDATE {table} SET sent_timestamp = \
             to_char(request_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        ))
        .execute(&mut conn)
        .unwrap();
    }
}

#[test]
fn a_backup_from_before_sent_timestamps_is_restored_and_migrated() {
    let db = TestDatabase::create();
    study(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = before(
        &current,
        dir.join("old.tar"),
        &[
            "20250101000000",
            "20250201000000",
            "20250301000000",
            "20250401000000",
        ],
        &APPENDED_BY_SENT_TIMESTAMPS,
    );
    assert!(unpack(&old)["model_update_requests.csv"]
        .lines()
        .next()
        .unwrap()
        .ends_with(",callback_finished_at"));

    db.store().reset().unwrap();
    db.store().check_backup(&old).unwrap();
    db.store().restore(&old).unwrap();

    // Every row is back, with its time as sent as the migration fills it in.
    let decisions: Vec<_> = db
        .store()
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(decisions.len(), 3);
    for d in &decisions {
        assert_eq!(
            d.sent_timestamp,
            d.requested_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
        );
    }
    let restored = dump(&db);
    db.store().restore(&current).unwrap();
    sent_as_migration_fills(&db);
    assert_eq!(restored, dump(&db));
    assert!(db.store().run_migrations().unwrap().is_empty());
}

#[test]
fn a_backup_from_before_decision_types_is_restored_and_migrated() {
    let db = TestDatabase::create();
    study(&db);
    sent_as_migration_fills(&db);
    let before = dump(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = before_decision_types(&current, dir.join("old.tar"));
    let files = unpack(&old);
    assert!(files["actions.csv"].starts_with(
        "id,user_id,decision_idx,request_timestamp,created_at,context,state,action,\
         action_prob,parameter_version,rng_seed\n"
    ));
    assert!(files["update_provenance.csv"].starts_with(
        "update_id,parameter_version,service_version,algorithm,config_hash,rows_read,\
         backup_file,created_at\n"
    ));
    // The study's completed update read all 7 of its uploads, which were stored before it
    // started.
    let provenance = unpack(&current)["update_provenance.csv"].clone();
    assert!(
        provenance
            .lines()
            .nth(1)
            .unwrap()
            .ends_with(",7,algorithm,,,,,"),
        "{provenance}"
    );

    db.store().reset().unwrap();
    db.store()
        .add_user(&user("late"), &justin_core::Enrollment::default(), at(200))
        .unwrap();
    let checked = db.store().check_backup(&old).unwrap();
    assert_eq!(checked.row_counts[2], ("actions".to_owned(), 3));
    assert_eq!(db.store().row_counts().unwrap()[0], ("users".to_owned(), 1));
    db.store().restore(&old).unwrap();

    // The migrations filled in what the service had stored: type 'default', available, the
    // last upload the update read, and the stored time as the time sent. The JSON columns were
    // jsonb in the backup's schema, which respaced their text: the same values, not the same
    // bytes.
    assert_eq!(as_values(&dump(&db)), as_values(&before));
    for table in ["users", "actions", "study_data"] {
        assert_eq!(next_id(&db, table), max_id(&db, table) + 1, "{table}");
    }
    assert!(
        db.store().run_migrations().unwrap().is_empty(),
        "the migration is recorded as applied"
    );
    let rows: Vec<_> = db.store().export().unwrap().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|r| r.upload.as_ref().unwrap().used_in_version == Some(2)));
}

#[test]
fn a_backup_from_before_decision_types_with_other_columns_changes_nothing() {
    let db = TestDatabase::create();
    study(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    // The old migrations but the new columns: no build ever wrote that.
    let created =
        |table: &str| CREATED_BY_TRIAL_LIFE.contains(&table) || table == "study_data_corrections";
    let mixed = rewrite(&current, dir.join("mixed.tar"), |name, text| {
        if created(name.trim_end_matches(".csv")) {
            return None;
        }
        let text = if name == "manifest.json" {
            edit_manifest(&text, |m| {
                m["migrations"] = serde_json::json!(["20250101000000", "20250201000000"]);
                m["tables"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|t| !created(t["name"].as_str().unwrap()));
            })
        } else {
            text
        };
        Some((name.to_owned(), text))
    });
    // A backup whose rows the old schema could not hold fails in the middle of the restore,
    // after the schema was changed; the transaction takes everything back.
    let clash = before_decision_types(&current, dir.join("clash.tar"));
    let clash = rewrite(&clash, dir.join("clash-2.tar"), |name, text| {
        let text = if name == "actions.csv" {
            text.replacen("bob,1,", "bob,0,", 1)
        } else {
            text
        };
        Some((name.to_owned(), text))
    });
    let before = dump(&db);

    let refused = db.store().restore(&mixed);
    let failed = db.store().restore(&clash);

    match refused {
        Err(StoreError::InvalidBackup(message)) => {
            assert!(
                message.contains("schema of the backup's migrations"),
                "{message}"
            )
        }
        other => panic!("expected InvalidBackup, got {other:?}"),
    }
    let failed = format!("{failed:?}");
    assert!(failed.contains("actions_user_decision_key"), "{failed}");
    assert_eq!(dump(&db), before);
    assert!(db.store().run_migrations().unwrap().is_empty());
    let newest = db.store().current_parameters().unwrap().unwrap().version;
    db.store()
        .record_decision(
            &justin_core::Decision {
                decision_type: justin_core::DecisionType::parse("morning").unwrap(),
                ..decision("bob", 0, newest)
            },
            justin_core::DecisionGuard::None,
        )
        .unwrap();
}

/// A backup taken before migration 2025-04-01 holds the JSON columns as jsonb printed them
/// (every number as its numeric: 1e300 with 301 digits, 5e-324 with 324); it restores into the
/// json columns as it is, and every double reads back as the one stored, bit for bit. Only
/// -0.0 was 0 already: jsonb has no negative zero.
#[test]
fn a_backup_from_before_exact_numbers_restores_every_double() {
    let old = TestDatabase::create();
    let values: Vec<f64> = justin_core::conformance::finite_doubles(41, 200)
        .into_iter()
        .filter(|v| v.to_bits() != (-0.0_f64).to_bits())
        .collect();
    let store = old.store();
    store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    store
        .add_user(&user("alice"), &justin_core::Enrollment::default(), at(0))
        .unwrap();
    let mut decisions = Vec::new();
    for (i, chunk) in (0..).zip(values.chunks(10)) {
        let d = justin_core::Decision {
            context: chunk
                .iter()
                .enumerate()
                .map(|(k, v)| (format!("x{k}"), serde_json::json!(v)))
                .collect(),
            state: justin_core::State::new(chunk.to_vec()).unwrap(),
            ..decision("alice", i, 1)
        };
        store
            .record_decision(&d, justin_core::DecisionGuard::None)
            .unwrap();
        decisions.push(d);
    }
    // The numbers as a database before the migration held them: through jsonb, which prints
    // each as its numeric. Then the backup as that database wrote it: without the columns
    // 2025-04-02 appended, and with the migrations it had.
    diesel::connection::SimpleConnection::batch_execute(
        &mut connect(&old),
        "ALTER TABLE actions ALTER COLUMN context TYPE json USING context::jsonb::json, \
                            ALTER COLUMN state TYPE json USING state::jsonb::json",
    )
    .unwrap();
    let dir = ScratchDir::new();
    let current = store.backup(&dir, at(100)).unwrap().path;
    let backup = before(
        &current,
        dir.join("old.tar"),
        &["20250101000000", "20250201000000", "20250301000000"],
        &APPENDED_BY_SENT_TIMESTAMPS,
    );
    let files = unpack(&backup);
    assert!(
        files["actions.csv"].contains(&format!("0.{}5", "0".repeat(323))),
        "numbers as jsonb prints them"
    );

    let db = TestDatabase::create();
    db.store().restore(&backup).unwrap();
    let restored: Vec<_> = db
        .store()
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(restored.len(), decisions.len());
    for (sent, got) in decisions.iter().zip(&restored) {
        let bits = |d: &justin_core::Decision| -> Vec<u64> {
            let context = d.context.values().map(|v| v.as_f64().unwrap());
            context
                .chain(d.state.values().iter().copied())
                .map(f64::to_bits)
                .collect()
        };
        assert_eq!(bits(got), bits(sent), "{sent:?}");
    }
    assert!(db.store().run_migrations().unwrap().is_empty());
}

/// A backup taken before migration 2026-12-03 lacks the provenance columns of what updates
/// imputed; it restores with them empty (those updates imputed nothing), and the study goes on.
#[test]
fn a_backup_from_before_the_outcome_window_is_restored_and_migrated() {
    let db = TestDatabase::create();
    study(&db);
    let before_backup = dump(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = before(
        &current,
        dir.join("old.tar"),
        &[
            "20250101000000",
            "20250201000000",
            "20250301000000",
            "20250401000000",
            "20250402000000",
            "20250403000000",
            "20250501000000",
            "20261201000000",
            "20261202000000",
        ],
        &APPENDED_BY_OUTCOME_WINDOW,
    );
    let files = unpack(&old);
    assert!(files["update_provenance.csv"]
        .lines()
        .next()
        .unwrap()
        .ends_with(",last_study_data_id,included_policies"));
    db.store().reset().unwrap();
    db.store().check_backup(&old).unwrap();
    db.store().restore(&old).unwrap();
    // The study's tables as they were; its correction, which the old layout cannot hold, is
    // not restored (a backup taken before 2026-12-03 is from before 2026-12-04 too).
    assert_eq!(dump(&db)[..5], before_backup[..5]);
    assert!(db.store().run_migrations().unwrap().is_empty());
    let updates = db.store().completed_updates().unwrap();
    assert!(!updates.is_empty());
    assert!(updates.iter().all(|u| u.provenance.imputed.is_none()));
}

/// A backup taken before migration 2025-05-01 has neither the columns it appended nor the
/// tables it created; it restores into the current schema with what the migration fills in for
/// rows stored before it, and the tables it created empty with their ids starting again.
#[test]
fn a_backup_from_before_trial_life_is_restored_and_migrated() {
    let db = TestDatabase::create();
    study(&db);
    trial_life_as_migration_fills(&db);
    let filled = dump(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = before(
        &current,
        dir.join("old.tar"),
        &[
            "20250101000000",
            "20250201000000",
            "20250301000000",
            "20250401000000",
            "20250402000000",
            "20250403000000",
        ],
        &APPENDED_BY_TRIAL_LIFE,
    );
    let files = unpack(&old);
    assert!(!files.contains_key("participant_events.csv"));
    assert!(!files.contains_key("erasures.csv"));
    assert!(files["users.csv"].starts_with("id,user_id,created_at\n"));

    // Rows of the tables the backup lacks, which the restore must remove.
    db.store()
        .add_user(
            &user("late"),
            &justin_core::builders::window(10, 20),
            at(200),
        )
        .unwrap();
    let checked = db.store().check_backup(&old).unwrap();
    assert_eq!(
        checked
            .row_counts
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>(),
        TABLES[..6]
    );
    let restored = db.store().restore(&old).unwrap();

    assert_eq!(restored.row_counts, checked.row_counts);
    assert_eq!(dump(&db), filled);
    assert_eq!(next_id(&db, "participant_events"), 1);
    assert!(db.store().run_migrations().unwrap().is_empty());
    // Every decision was the algorithm's, with the participant in the study; and the life of
    // the trial goes on from there.
    for d in db.store().decisions().unwrap() {
        let d = d.unwrap();
        assert_eq!(d.policy, justin_core::Policy::Algorithm);
        assert!(d.availability.is_available());
    }
    let bob = db.store().participant(&user("bob")).unwrap().unwrap();
    assert_eq!((bob.decisions, bob.uploads), (3, 3));
    db.store()
        .withdraw(&user("bob"), "moved away", at(300))
        .unwrap();
}

/// A backup taken before migration 2026-12-04 has no corrections and no correction watermarks:
/// it restores with none (its updates read none), and corrections go on from there.
#[test]
fn a_backup_from_before_corrections_is_restored_without_corrections() {
    let db = TestDatabase::create();
    study(&db);
    corrections_as_migration_fills(&db);
    let filled = dump(&db);
    let dir = ScratchDir::new();
    let current = db.store().backup(&dir, at(100)).unwrap().path;
    let old = before(
        &current,
        dir.join("old.tar"),
        &[
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
        ],
        &APPENDED_BY_CORRECTIONS,
    );
    let files = unpack(&old);
    assert!(!files.contains_key("study_data_corrections.csv"));
    assert!(files["update_provenance.csv"]
        .lines()
        .next()
        .unwrap()
        .ends_with(",imputed_rows"));

    // A correction stored since, which the restore removes.
    let original = upload_for(&decision("bob", 0, 1));
    let corrected = justin_core::StudyRecord {
        reward: original.reward + 1.0,
        ..original.clone()
    };
    db.store().record_correction(&corrected).unwrap();
    let restored = db.store().restore(&old).unwrap();

    assert_eq!(restored.row_counts.len(), TABLES.len() - 1);
    assert_eq!(dump(&db), filled);
    assert!(db.store().run_migrations().unwrap().is_empty());
    // The restored update read no correction, even one stored after the restore.
    assert_eq!(
        db.store().record_correction(&corrected).unwrap(),
        justin_core::CorrectionRecorded { number: 1 }
    );
    let read: Vec<justin_core::StudyRecord> = db
        .store()
        .update_rows(2)
        .unwrap()
        .map(|r| r.unwrap().into_record())
        .collect();
    let bob0 = read
        .iter()
        .find(|r| r.user_id == user("bob") && r.decision_idx.get() == 0)
        .unwrap();
    assert_eq!(bob0.reward, original.reward);
}
