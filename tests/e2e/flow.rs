//! A study's day through the binary: register, decide, upload, update, get the callback; and
//! what the files on disk show afterwards (backups, logs without health data).

use justin_e2e::{env_for, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::json;

/// A context value distinctive enough that finding it in a log can only mean a leak.
const MARKER_TEMPERATURE: f64 = 17.123_456_789;

#[test]
fn a_study_day_from_decision_to_callback() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let served = Served::start(dir.path(), &env_for(&db));
    let receiver = CallbackReceiver::start();

    let (status, body) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201, "{body}");

    let request = json!({
        "user_id": "p1",
        "timestamp": "2025-01-01T12:00:00Z",
        "decision_idx": 0,
        "context": {"temperature": MARKER_TEMPERATURE},
    });
    let (status, decision) = served.post("/api/v1/action", &request);
    assert_eq!(status, 201, "{decision}");
    assert_eq!(decision["state"], json!([MARKER_TEMPERATURE]));
    let action = decision["action"].as_i64().unwrap();
    assert!(action == 0 || action == 1);
    assert_eq!(decision["action_prob"], json!(0.5));

    let (status, again) = served.post("/api/v1/action", &request);
    assert_eq!(status, 200, "a repeat returns the stored decision");
    assert_eq!(again["action"], decision["action"]);

    let upload = json!({
        "user_id": "p1",
        "timestamp": "2025-01-01T13:00:00Z",
        "decision_idx": 0,
        "data": {
            "context": {"temperature": MARKER_TEMPERATURE},
            "action": action,
            "action_prob": 0.5,
            "state": [MARKER_TEMPERATURE],
            "outcome": {"clicks": 3},
        },
    });
    let (status, body) = served.post("/api/v1/upload_data", &upload);
    assert_eq!(status, 201, "{body}");

    let (status, accepted) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T14:00:00Z", "callback_url": receiver.url()}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["status"], "processing");
    let callback = receiver.next();
    assert_eq!(callback["status"], "completed");
    assert_eq!(callback["update_id"], accepted["update_id"]);
    assert!(callback["timestamp"].is_string());

    // The mean temperature is below 30, so the probability rose by 0.01.
    let (status, params) = served.get("/api/v1/parameters");
    assert_eq!(status, 200);
    assert_eq!(params["version"], 2);
    assert_eq!(params["parameters"]["probability_of_action"], json!(0.51));

    // A backup was taken before the update, in the working directory's backups/.
    let backups: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
        .expect("the backup directory exists")
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .collect();
    assert_eq!(backups.len(), 1, "one backup per update");

    let exit = served.terminate();
    assert!(exit.success(), "SIGTERM stops the service cleanly: {exit}");

    let app_log = std::fs::read_to_string(dir.path().join("logs/app.log")).unwrap();
    let rl_log = std::fs::read_to_string(dir.path().join("logs/rl.log")).unwrap();
    assert!(
        app_log.contains("POST /api/v1/action 201"),
        "one line per request with method, path and status:\n{app_log}"
    );
    assert!(
        rl_log.contains("flat_prob"),
        "the algorithm's records go to rl.log:\n{rl_log}"
    );
    assert!(
        !rl_log.contains("POST /api/v1"),
        "rl.log holds only the algorithm's records"
    );
    let marker = MARKER_TEMPERATURE.to_string();
    for (name, text) in [("app.log", &app_log), ("rl.log", &rl_log)] {
        assert!(
            !text.contains(&marker),
            "{name} must not contain context values"
        );
        assert!(!text.contains("clicks"), "{name} must not contain outcomes");
    }
}
