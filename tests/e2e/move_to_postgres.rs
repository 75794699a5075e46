//! Moving a study from SQLite to PostgreSQL: a backup taken on SQLite restores into
//! PostgreSQL, and the study carries on there with the same rows and the same decisions.

use std::collections::BTreeMap;

use justin_e2e::{justin, reported_backup, row_counts, run, CallbackReceiver, ScratchDir, Served};
use serde_json::{json, Value};

fn action(user: &str, idx: i64) -> Value {
    json!({
        "user_id": user,
        "timestamp": "2025-01-01T12:00:00Z",
        "decision_idx": idx,
        "context": {"temperature": 20 + idx},
    })
}

// Uses both backends on purpose, so PostgreSQL-only: the `pg_` prefix lets the SQLite run skip it.
#[test]
fn pg_a_sqlite_study_moves_to_postgres_by_backup_and_restore() {
    let dir = ScratchDir::new();
    let sqlite = vec![("JUSTIN_DATABASE__URL", "sqlite://study.db".to_owned())];

    // A study run on SQLite: users, decisions, uploads and one update.
    let mut decisions = BTreeMap::new();
    {
        let served = Served::start(dir.path(), &sqlite);
        let receiver = CallbackReceiver::start();
        for user in ["p1", "p2"] {
            let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": user}));
            assert_eq!(status, 201);
            for idx in 0..6 {
                let (status, body) = served.post("/api/v1/action", &action(user, idx));
                assert_eq!(status, 201, "{body}");
                decisions.insert((user, idx), body.clone());
                if idx % 2 == 0 {
                    let upload = json!({
                        "user_id": user,
                        "timestamp": "2025-01-01T13:00:00Z",
                        "decision_idx": idx,
                        "data": {
                            "context": {"temperature": 20 + idx},
                            "action": body["action"],
                            "action_prob": body["action_prob"],
                            "state": body["state"],
                            "outcome": {"clicks": idx},
                        },
                    });
                    let (status, body) = served.post("/api/v1/upload_data", &upload);
                    assert_eq!(status, 201, "{body}");
                }
            }
        }
        let (status, _) = served.post(
            "/api/v1/update",
            &json!({"timestamp": "2025-01-01T14:00:00Z", "callback_url": receiver.url()}),
        );
        assert_eq!(status, 202);
        assert_eq!(receiver.next()["status"], "completed");
        assert!(served.terminate().success());
    }
    let out = run(justin(dir.path(), &sqlite).arg("backup"));
    assert!(out.status.success(), "{}", out.stderr);
    let backup = reported_backup(dir.path(), &out);

    // Into a fresh PostgreSQL database.
    let pg = justin_store::testing::TestDatabase::create();
    let postgres = vec![("JUSTIN_DATABASE__URL", pg.url().to_owned())];
    let out = run(justin(dir.path(), &postgres).args([
        "restore",
        &backup.display().to_string(),
        "--yes",
    ]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);

    let counts = row_counts(pg.url());
    assert_eq!(counts["users"], 2);
    assert_eq!(counts["actions"], 12);
    assert_eq!(counts["study_data"], 6);
    assert_eq!(counts["model_parameters"], 2);
    assert_eq!(counts["model_update_requests"], 1);
    assert_eq!(counts["update_provenance"], 1);

    let served = Served::start(dir.path(), &postgres);
    let (_, params) = served.get("/api/v1/parameters");
    assert_eq!(params["version"], 2);
    assert_eq!(params["parameters"]["probability_of_action"], json!(0.51));
    for ((user, idx), before) in &decisions {
        let (status, body) = served.post("/api/v1/action", &action(user, *idx));
        if idx % 2 == 0 {
            assert_eq!(status, 400, "uploaded decisions stay closed: {body}");
        } else {
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["action"], before["action"]);
            assert_eq!(body["action_prob"], before["action_prob"]);
            assert_eq!(body["state"], before["state"]);
            assert_eq!(
                body["timestamp"], before["timestamp"],
                "the stored time survives"
            );
        }
    }
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 400, "the users moved");
    let (status, body) = served.post("/api/v1/action", &action("p3", 0));
    assert_eq!(status, 404, "{body}");
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p3"}));
    assert_eq!(status, 201, "new rows continue after the moved ones");
}
