//! Policy numbers never decrease, also with two `justin serve` processes on one database where
//! one is behind on parameters: process A runs the updates and polls often; process B polls so
//! rarely that it never reloads the parameters on its own. B still answers every decision,
//! drawn or sent by the host, under the newest stored version, and no participant ever gets a
//! lower version than one they had before.

use justin_e2e::{env_for, sql_lines, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

/// A process that polls every `poll_ms` milliseconds.
fn serve(dir: &std::path::Path, db: &TestDatabase, poll_ms: u64) -> Served {
    let mut env = env_for(db);
    env.extend([
        ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", poll_ms.to_string()),
    ]);
    Served::start(dir, &env)
}

fn decide(served: &Served, user: &str, idx: i64) -> Value {
    let (status, body) = served.post(
        "/api/v1/action",
        &json!({
            "user_id": user,
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": idx,
            "context": {"temperature": 20 + idx},
        }),
    );
    assert_eq!(status, 201, "{body}");
    body
}

fn upload(served: &Served, user: &str, idx: i64, decision: &Value) {
    let (status, body) = served.post(
        "/api/v1/upload_data",
        &json!({
            "user_id": user,
            "timestamp": "2025-01-01T13:00:00Z",
            "decision_idx": idx,
            "data": {
                "context": {"temperature": 20 + idx},
                "action": decision["action"],
                "action_prob": decision["action_prob"],
                "state": decision["state"],
                "outcome": {"clicks": idx + 1},
            },
        }),
    );
    assert_eq!(status, 201, "{body}");
}

/// Requests an update from `served` and waits for its callback: completed.
fn update(served: &Served, receiver: &CallbackReceiver) {
    let (status, accepted) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T14:00:00Z", "callback_url": receiver.url()}),
    );
    assert_eq!(status, 202, "{accepted}");
    let callback = receiver.next();
    assert_eq!(callback["update_id"], accepted["update_id"]);
    assert_eq!(callback["status"], "completed", "{callback}");
}

/// The stored parameter version of each of `user`'s decisions, by decision index.
fn versions(db: &TestDatabase, user: &str) -> Vec<i64> {
    sql_lines(
        db.url(),
        &format!(
            "SELECT CAST(parameter_version AS TEXT) AS out FROM actions \
             WHERE user_id = '{user}' ORDER BY decision_idx"
        ),
    )
    .iter()
    .map(|v| v.parse().unwrap())
    .collect()
}

fn current_version(served: &Served) -> i64 {
    let (status, body) = served.get("/api/v1/parameters");
    assert_eq!(status, 200, "{body}");
    body["version"].as_i64().unwrap()
}

#[test]
fn a_process_behind_on_parameters_never_serves_an_older_version() {
    let db = TestDatabase::create();
    let (dir_a, dir_b) = (ScratchDir::new(), ScratchDir::new());
    let a = serve(dir_a.path(), &db, 20);
    // B's first poll is its last within the test: it keeps the version it started with.
    let b = serve(dir_b.path(), &db, 3_600_000);
    let receiver = CallbackReceiver::start();
    for user in ["alice", "bob"] {
        let (status, body) = a.post("/api/v1/add_user", &json!({"user_id": user}));
        assert_eq!(status, 201, "{body}");
    }

    // Both start under version 1; A publishes version 2.
    let first = decide(&b, "alice", 0);
    upload(&b, "alice", 0, &first);
    update(&a, &receiver);
    assert_eq!(current_version(&a), 2);
    let second = decide(&a, "alice", 1);
    upload(&a, "alice", 1, &second);

    // B still holds version 1, but stores and answers alice's next decision, and bob's first,
    // under version 2: the store refuses the older one and B reloads.
    decide(&b, "alice", 2);
    decide(&b, "bob", 0);
    assert_eq!(versions(&db, "alice"), [1, 2, 2]);
    assert_eq!(versions(&db, "bob"), [2]);
    assert_eq!(current_version(&b), 2, "B caught up");

    // A publishes version 3; a host decision sent to B records it, not B's version 2.
    update(&a, &receiver);
    let (status, body) = b.post(
        "/api/v1/host_decision",
        &json!({
            "user_id": "alice",
            "timestamp": "2025-01-01T15:00:00Z",
            "decision_idx": 3,
            "context": {"temperature": 23},
            "action": 1,
            "action_prob": 0.5,
            "decided_by": "app-server-bernoulli-0.5",
        }),
    );
    assert_eq!(status, 201, "{body}");
    decide(&b, "bob", 1);
    assert_eq!(versions(&db, "alice"), [1, 2, 2, 3]);
    assert_eq!(versions(&db, "bob"), [2, 3]);
    assert_eq!(current_version(&b), 3);

    // Across the study no participant's version ever goes down.
    let decreases = sql_lines(
        db.url(),
        "SELECT CAST(count(*) AS TEXT) AS out FROM actions later JOIN actions earlier \
         ON later.user_id = earlier.user_id AND later.decision_idx > earlier.decision_idx \
         WHERE later.parameter_version < earlier.parameter_version",
    );
    assert_eq!(decreases, ["0"]);
}
