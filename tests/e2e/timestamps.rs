//! The study server's `timestamp` in every accepted form survives the whole life of a study:
//! stored, repeated, exported, replayed, backed up, and restored into the other backend and
//! back, with the text as sent and the instant it names unchanged.

use justin_e2e::{justin, reported_backup, run, CallbackReceiver, ScratchDir, Served};
use serde_json::{json, Value};

/// Every accepted form (see docs/api.md), each sent as one decision's, upload's and update's
/// timestamp.
const FORMS: [&str; 13] = [
    "2025-01-01T12:00:00",
    "2025-01-01 12:00:00",
    "2025-01-01T14:00:00+02:00",
    "2025-01-01T14:00:00+0200",
    "2025-01-01T07:00:00-05",
    "2025-01-01",
    "20250101T120000",
    "2025-W01-3T12:00",
    "2025-01-01T12:00:00,5",
    "2025-01-01T12:00:00.123456789Z",
    "2016-12-31T23:59:60Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
];

fn action(idx: usize, timestamp: &str) -> Value {
    json!({
        "user_id": "p1",
        "timestamp": timestamp,
        "decision_idx": idx,
        "context": {"temperature": 20},
    })
}

/// The export, written by `justin export` on the database `env` names.
fn export(dir: &std::path::Path, env: &[(&str, String)], name: &str) -> String {
    let out = run(justin(dir, env).args(["export", "--out", name]));
    assert!(out.status.success(), "{}", out.stderr);
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn replay_matches(dir: &std::path::Path, env: &[(&str, String)]) {
    let out = run(justin(dir, env).arg("replay"));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
}

fn backup(dir: &std::path::Path, env: &[(&str, String)]) -> String {
    let out = run(justin(dir, env).arg("backup"));
    assert!(out.status.success(), "{}", out.stderr);
    reported_backup(dir, &out).display().to_string()
}

fn restore(dir: &std::path::Path, env: &[(&str, String)], file: &str) {
    let out = run(justin(dir, env).args(["restore", file, "--yes"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
}

/// Repeats every decision that has no upload, which must answer the stored one, and reads every
/// update's status, which must show its timestamp as sent.
fn check_served(served: &Served, decisions: &[Value], updates: &[String]) {
    for (idx, (sent, before)) in FORMS.iter().zip(decisions).enumerate() {
        if idx % 2 == 1 {
            let (status, body) = served.post("/api/v1/action", &action(idx, sent));
            assert_eq!(status, 200, "{sent}: {body}");
            assert_eq!(&body, before, "{sent}");
        }
    }
    for (sent, id) in FORMS.iter().zip(updates) {
        let (status, body) = served.get(&format!("/api/v1/update/{id}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["timestamp"], *sent, "{body}");
    }
}

// Uses both backends on purpose, so PostgreSQL-only: the `pg_` prefix lets the SQLite run skip it.
#[test]
fn pg_every_timestamp_form_survives_export_replay_and_moves_between_backends() {
    let dir = ScratchDir::new();
    let sqlite = vec![("JUSTIN_DATABASE__URL", "sqlite://study.db".to_owned())];

    let mut decisions = Vec::new();
    let mut updates = Vec::new();
    {
        let served = Served::start(dir.path(), &sqlite);
        let receiver = CallbackReceiver::start();
        let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
        assert_eq!(status, 201);
        for (idx, sent) in FORMS.iter().enumerate() {
            let (status, body) = served.post("/api/v1/action", &action(idx, sent));
            assert_eq!(status, 201, "{sent}: {body}");
            decisions.push(body.clone());
            if idx % 2 == 0 {
                let upload = json!({
                    "user_id": "p1",
                    "timestamp": sent,
                    "decision_idx": idx,
                    "data": {
                        "context": {"temperature": 20},
                        "action": body["action"],
                        "action_prob": body["action_prob"],
                        "state": body["state"],
                        "outcome": {"clicks": idx},
                    },
                });
                let (status, body) = served.post("/api/v1/upload_data", &upload);
                assert_eq!(status, 201, "{sent}: {body}");
            }
            let (status, body) = served.post(
                "/api/v1/update",
                &json!({"timestamp": sent, "callback_url": receiver.url()}),
            );
            assert_eq!(status, 202, "{sent}: {body}");
            updates.push(body["update_id"].as_str().unwrap().to_owned());
            assert_eq!(receiver.next()["status"], "completed");
        }
        check_served(&served, &decisions, &updates);
        assert!(served.terminate().success());
    }
    let on_sqlite = export(dir.path(), &sqlite, "sqlite.csv");
    for sent in FORMS {
        // Forms holding a comma are quoted; every one is there as sent.
        assert!(on_sqlite.contains(sent), "{sent} is in the export");
    }
    assert!(
        on_sqlite.contains(",2017-01-01T00:00:00.000000Z,"),
        "the leap second"
    );
    assert!(on_sqlite.contains(",9999-12-31T23:59:59.999999Z,"));
    assert!(on_sqlite.contains(",0001-01-01T00:00:00.000000Z,"));
    replay_matches(dir.path(), &sqlite);

    // SQLite to PostgreSQL: the same export, the same replay, the same answers.
    let from_sqlite = backup(dir.path(), &sqlite);
    let pg = justin_store::testing::TestDatabase::create();
    let postgres = vec![("JUSTIN_DATABASE__URL", pg.url().to_owned())];
    restore(dir.path(), &postgres, &from_sqlite);
    assert_eq!(export(dir.path(), &postgres, "postgres.csv"), on_sqlite);
    replay_matches(dir.path(), &postgres);
    {
        let served = Served::start(dir.path(), &postgres);
        check_served(&served, &decisions, &updates);
        assert!(served.terminate().success());
    }

    // And back: PostgreSQL to a new SQLite database.
    let from_postgres = backup(dir.path(), &postgres);
    let again = vec![("JUSTIN_DATABASE__URL", "sqlite://again.db".to_owned())];
    let out = run(justin(dir.path(), &again).arg("migrate"));
    assert!(out.status.success(), "{}", out.stderr);
    restore(dir.path(), &again, &from_postgres);
    assert_eq!(export(dir.path(), &again, "again.csv"), on_sqlite);
    replay_matches(dir.path(), &again);
}
