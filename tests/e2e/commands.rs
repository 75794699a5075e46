//! The maintenance commands: migrate, backup and the guarded reset-db.

use justin_e2e::{env_for, justin, run, ScratchDir, Served, TestDatabase};
use serde_json::json;

fn backup_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("backups"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn migrate_applies_once_then_reports_up_to_date() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    // TestDatabase migrated the schema already, so there is nothing left to apply.
    let out = run(justin(dir.path(), &env_for(&db)).arg("migrate"));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("up to date"), "{}", out.stdout);
}

#[test]
fn backup_then_guarded_reset() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    {
        let served = Served::start(dir.path(), &env);
        for user in ["p1", "p2"] {
            let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": user}));
            assert_eq!(status, 201);
        }
    }

    let out = run(justin(dir.path(), &env).arg("backup"));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("backup written to"), "{}", out.stdout);
    assert_eq!(backup_files(dir.path()).len(), 1);

    // Without --yes nothing is deleted: the users are still registered.
    let out = run(justin(dir.path(), &env).arg("reset-db"));
    assert_eq!(out.status.code(), Some(2), "{}", out.stdout);
    assert!(out.stdout.contains("users: 2 rows"), "{}", out.stdout);
    {
        let served = Served::start(dir.path(), &env);
        let (status, body) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
        assert_eq!(
            (status, body["message"].as_str()),
            (400, Some("User already exists."))
        );
    }

    // With --yes a backup comes first, then every row goes.
    let out = run(justin(dir.path(), &env).args(["reset-db", "--yes"]));
    assert!(out.status.success(), "{}", out.stderr);
    assert!(out.stdout.contains("backup written to"), "{}", out.stdout);
    assert_eq!(backup_files(dir.path()).len(), 2);
    let served = Served::start(dir.path(), &env);
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201, "the reset removed the user");
    let (_, params) = served.get("/api/v1/parameters");
    assert_eq!(
        params["version"], 1,
        "the priors are installed again on start"
    );
}

#[test]
fn a_reset_under_a_running_service_leaves_it_serving_from_the_priors() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    let receiver = justin_e2e::CallbackReceiver::start();
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    let (status, _) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T12:00:00Z", "callback_url": receiver.url()}),
    );
    assert_eq!(status, 202);
    assert_eq!(receiver.next()["status"], "completed");
    // The service now draws from version 2, which the reset removes.
    let out = run(justin(dir.path(), &env).args(["reset-db", "--yes"]));
    assert!(out.status.success(), "{}", out.stderr);

    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    let (status, body) = served.post(
        "/api/v1/action",
        &json!({
            "user_id": "p1",
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 0,
            "context": {"temperature": 20},
        }),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["action_prob"],
        json!(0.5),
        "drawn from the priors again"
    );
    let (_, params) = served.get("/api/v1/parameters");
    assert_eq!(params["version"], 1);
}
