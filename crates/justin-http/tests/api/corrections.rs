//! Corrected uploads through HTTP: `correction: true` stores a correction beside the original
//! upload, updates from then on learn from it while earlier ones keep what they read, the
//! export shows the value in force with the number of corrections, and
//! `GET /api/v1/users/{user_id}/decisions/{decision_idx}` shows every one of them. Erasure
//! removes them; a backup keeps them.

use justin_core::{Store, StudyRecord};
use justin_http::config::DatabaseConfig;
use justin_http::database::{Database, OpenMode};
use serde_json::{json, Value};

use crate::export::{export_rows, field};
use crate::helpers::{error, rfc3339, spawn_app, upload_body, CallbackReceiver, TestApp};
use crate::openapi::served_contract;

const UPLOAD: &str = "/api/v1/upload_data";
const HISTORY: &str = "/api/v1/users/{user_id}/decisions/{decision_idx}";

/// An upload of decision `idx` of `user` with `clicks` (flat_prob's reward), sent at `sent`,
/// as a correction when `correction` says so.
fn body(user: &str, idx: i64, clicks: f64, sent: &str, correction: Option<Value>) -> Value {
    let mut body = upload_body(user, idx, 20.0 + clicks);
    body["timestamp"] = json!(sent);
    body["data"]["outcome"] = json!({ "clicks": clicks });
    if let Some(flag) = correction {
        body["correction"] = flag;
    }
    body
}

fn correct(app: &TestApp, user: &str, idx: i64, clicks: f64, sent: &str) -> (u16, Value) {
    app.post_json(
        "/api/v1/upload_data",
        &body(user, idx, clicks, sent, Some(json!(true))),
    )
}

fn history(app: &TestApp, user: &str, idx: i64) -> (u16, Value) {
    app.get(&format!("/api/v1/users/{user}/decisions/{idx}"))
}

/// The store the app serves, opened as `justin` commands open it.
fn store(app: &TestApp) -> std::sync::Arc<dyn Store> {
    let config = DatabaseConfig {
        url: app.database_url().to_owned(),
        ..DatabaseConfig::default()
    };
    Database::open(
        &config,
        OpenMode {
            create_if_missing: false,
            run_migrations: false,
        },
    )
    .unwrap()
    .store()
}

/// Runs an update to its end; the version it stored.
fn update(app: &TestApp, callbacks: &CallbackReceiver) -> i64 {
    let id = app.request_update(callbacks.url());
    let callback = callbacks.next();
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], id.as_str(), "{callback}");
    app.current_parameters().0
}

fn update_rows(store: &dyn Store, version: i64) -> Vec<StudyRecord> {
    store
        .update_rows(version)
        .unwrap()
        .map(|record| record.unwrap().into_record())
        .collect()
}

#[test]
fn a_correction_is_stored_beside_the_original_and_listed_in_the_history() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");
    let sent = "2025-01-01 12:00:00.5+01:00";
    let (status, answer) = app.post_json("/api/v1/upload_data", &body("u1", 0, 4.0, sent, None));
    assert_eq!(status, 201, "{answer}");

    // Without the flag, or with it false or null, a second upload is refused as before.
    for flag in [None, Some(json!(false)), Some(json!(null))] {
        let again = app.post_json("/api/v1/upload_data", &body("u1", 0, 5.0, sent, flag));
        assert_eq!(again, (400, error("Decision index already exists.")));
    }
    let first = correct(&app, "u1", 0, 6.0, "2025-01-02T09:00:00Z");
    contract.check("post", UPLOAD, &first);
    assert_eq!(
        first,
        (
            201,
            json!({ "correction": 1, "message": "Data uploaded successfully.", "status": "success" })
        )
    );
    let (status, second) = correct(&app, "u1", 0, 7.5, "2025-01-03T09:00:00.000001-05:00");
    assert_eq!(
        (status, &second["correction"]),
        (201, &json!(2)),
        "{second}"
    );

    let got = history(&app, "u1", 0);
    contract.check("get", HISTORY, &got);
    let (status, shown) = got;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["status"], "success");
    assert_eq!(shown["user_id"], "u1");
    assert_eq!(shown["decision_type"], "default");
    assert_eq!(shown["decision_idx"], 0);
    assert_eq!(shown["decision"], Value::Null, "no decision was logged");
    let upload = &shown["upload"];
    assert_eq!(
        upload["outcome"],
        json!({ "clicks": 4.0 }),
        "the original is kept"
    );
    assert_eq!(upload["reward"], 4.0);
    assert_eq!(upload["timestamp"], sent, "as sent");
    assert_eq!(upload["action"], 1);
    assert_eq!(upload["context"], json!({ "temperature": 24.0 }));
    let corrections = shown["corrections"].as_array().unwrap();
    assert_eq!(corrections.len(), 2, "{shown}");
    assert_eq!(corrections[0]["correction"], 1);
    assert_eq!(corrections[0]["outcome"], json!({ "clicks": 6.0 }));
    assert_eq!(corrections[0]["reward"], 6.0);
    assert_eq!(corrections[0]["timestamp"], "2025-01-02T09:00:00Z");
    assert_eq!(corrections[0]["state"][0].as_f64(), Some(26.0), "{shown}");
    assert!(corrections[0].get("action").is_none(), "{shown}");
    assert_eq!(corrections[1]["correction"], 2);
    assert_eq!(
        corrections[1]["timestamp"],
        "2025-01-03T09:00:00.000001-05:00"
    );
    let received = [
        &upload["received_at"],
        &corrections[0]["received_at"],
        &corrections[1]["received_at"],
    ]
    .map(|t| rfc3339(t, "received_at"));
    assert!(
        received[0] <= received[1] && received[1] <= received[2],
        "{shown}"
    );

    // The export: the value in force, the count, the original's times.
    let rows = export_rows(&app);
    assert!(rows.is_empty(), "no decision was logged, so no export row");
}

#[test]
fn a_correction_needs_an_upload_with_the_same_draw() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");
    let (status, decided) = app.action("u1", 0, 30.0);
    assert_eq!(status, 201, "{decided}");

    // A decision without an upload, a participant without one, an unknown participant.
    let nothing = error("No upload to correct for this decision index.");
    let mut first = body("u1", 0, 4.0, "2025-01-01T12:00:00Z", Some(json!(true)));
    first["data"]["action"] = decided["action"].clone();
    first["data"]["action_prob"] = decided["action_prob"].clone();
    assert_eq!(
        app.post_json("/api/v1/upload_data", &first),
        (400, nothing.clone())
    );
    assert_eq!(
        correct(&app, "nobody", 0, 4.0, "2025-01-01T12:00:00Z"),
        (400, nothing)
    );

    // A flag that is no boolean.
    let (status, answer) = app.post_json(
        "/api/v1/upload_data",
        &body("u1", 0, 4.0, "2025-01-01T12:00:00Z", Some(json!("yes"))),
    );
    assert_eq!(
        (status, answer),
        (400, error("correction must be true or false."))
    );

    let mut upload = first.clone();
    upload.as_object_mut().unwrap().remove("correction");
    let (status, answer) = app.post_json("/api/v1/upload_data", &upload);
    assert_eq!(status, 201, "{answer}");

    // Another action, or another probability, than the original's: 409, nothing stored.
    let mut other_action = first.clone();
    other_action["data"]["action"] = json!(1 - decided["action"].as_i64().unwrap());
    let refused = app.post_json("/api/v1/upload_data", &other_action);
    contract.check("post", UPLOAD, &refused);
    let (status, answer) = refused;
    assert_eq!(status, 409, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.starts_with("A correction's action ("), "{message}");
    assert!(
        message.contains("must match the original upload"),
        "{message}"
    );
    let mut other_prob = first.clone();
    other_prob["data"]["action_prob"] = json!(0.25);
    let (status, answer) = app.post_json("/api/v1/upload_data", &other_prob);
    assert_eq!(status, 409, "{answer}");
    // A correction the algorithm cannot use is refused as an upload would be.
    let mut no_temperature = first.clone();
    no_temperature["data"]["context"] = json!({ "humidity": 3 });
    let (status, answer) = app.post_json("/api/v1/upload_data", &no_temperature);
    assert_eq!(status, 400, "{answer}");

    let got = history(&app, "u1", 0);
    contract.check("get", HISTORY, &got);
    let (status, shown) = got;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["corrections"], json!([]));
    assert_eq!(shown["decision"]["action"], decided["action"], "{shown}");
    assert_eq!(
        shown["decision"]["timestamp"], decided["timestamp"],
        "{shown}"
    );

    assert_eq!(correct_with(&app, &first).0, 201);
}

fn correct_with(app: &TestApp, body: &Value) -> (u16, Value) {
    app.post_json("/api/v1/upload_data", body)
}

#[test]
fn the_history_of_an_unknown_decision_is_404_and_bad_paths_are_400() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");
    app.upload("u1", 0, 20.0);
    contract.check("get", HISTORY, &history(&app, "u1", 1));
    contract.check("get", HISTORY, &app.get("/api/v1/users/u1/decisions/x"));

    assert_eq!(history(&app, "u1", 1), (404, error("Decision not found.")));
    assert_eq!(
        history(&app, "nobody", 0),
        (404, error("Decision not found."))
    );
    assert_eq!(
        app.get("/api/v1/users/u1/decisions/0?decision_type=evening"),
        (404, error("Decision not found."))
    );
    assert_eq!(
        app.get("/api/v1/users/u1/decisions/-1").0,
        400,
        "a negative index"
    );
    assert_eq!(app.get("/api/v1/users/u1/decisions/x").0, 400);
    assert_eq!(
        app.get("/api/v1/users/u1/decisions/0?decision_type=no%20spaces")
            .0,
        400
    );
    assert_eq!(
        app.get("/api/v1/users/u1/decisions/0?decision_type=a&decision_type=b"),
        (400, error("The query must be at most one decision_type."))
    );
    assert_eq!(history(&app, "u1", 0).0, 200);
}

#[test]
fn updates_before_a_correction_keep_what_they_read_and_later_ones_learn_from_it() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    let decide = |idx: i64| {
        let (status, decided) = app.action("u1", idx, 30.0);
        assert_eq!(status, 201, "{decided}");
        decided
    };
    let upload = |idx: i64, clicks: f64, decided: &Value, correction: bool| {
        let mut b = body("u1", idx, clicks, "2025-01-01T12:00:00Z", None);
        b["data"]["action"] = decided["action"].clone();
        b["data"]["action_prob"] = decided["action_prob"].clone();
        if correction {
            b["correction"] = json!(true);
        }
        let (status, answer) = app.post_json("/api/v1/upload_data", &b);
        assert_eq!(status, 201, "{answer}");
    };
    let d0 = decide(0);
    let d1 = decide(1);
    upload(0, 4.0, &d0, false);
    upload(1, 1.0, &d1, false);

    let before = update(&app, &callbacks);
    upload(0, 9.0, &d0, true);
    let after = update(&app, &callbacks);
    upload(0, 11.0, &d0, true);

    let store = store(&app);
    let rewards = |version: i64| -> Vec<f64> {
        update_rows(store.as_ref(), version)
            .iter()
            .map(|r| r.reward)
            .collect()
    };
    assert_eq!(
        rewards(before),
        [4.0, 1.0],
        "the update before keeps the original"
    );
    assert_eq!(
        rewards(after),
        [9.0, 1.0],
        "the update after learned the correction"
    );
    let read = update_rows(store.as_ref(), after);
    assert_eq!(read[0].outcome["clicks"], json!(9.0));
    assert_eq!(
        read[0].sent_timestamp, "2025-01-01T12:00:00Z",
        "the original's times"
    );

    // The export: the value in force now and how many corrections there were.
    let rows = export_rows(&app);
    let row = |idx: &str| {
        rows.iter()
            .find(|r| field(r, "decision_idx") == Some(idx))
            .unwrap()
            .clone()
    };
    assert_eq!(field(&row("0"), "reward"), Some("11.0"));
    assert_eq!(field(&row("0"), "outcome"), Some(r#"{"clicks":11.0}"#));
    assert_eq!(field(&row("0"), "corrections"), Some("2"));
    assert_eq!(field(&row("1"), "reward"), Some("1.0"));
    assert_eq!(field(&row("1"), "corrections"), Some("0"));
    assert_eq!(
        field(&row("0"), "used_in_version"),
        Some(before.to_string().as_str()),
        "first used by the update before the correction"
    );
}

#[test]
fn erasure_removes_corrections_and_a_backup_keeps_them() {
    let app = spawn_app();
    app.add_user("u1");
    app.add_user("u2");
    app.upload("u1", 0, 20.0);
    app.upload("u2", 0, 20.0);
    assert_eq!(correct(&app, "u1", 0, 6.0, "2025-01-02T09:00:00Z").0, 201);
    assert_eq!(correct(&app, "u2", 0, 8.0, "2025-01-02 09:00:00").0, 201);
    let (status, kept) = history(&app, "u2", 0);
    assert_eq!(status, 200, "{kept}");

    let store = store(&app);
    let scratch = tempdir();
    let backup = store.backup(&scratch, chrono::Utc::now()).unwrap().path;
    let (status, erased) = app.post_json("/api/v1/users/u1/erase", &json!({}));
    assert_eq!(status, 200, "{erased}");
    let counts: std::collections::BTreeMap<String, u64> =
        store.row_counts().unwrap().into_iter().collect();
    assert_eq!(counts["study_data_corrections"], 1, "only u2's is left");
    assert_eq!(history(&app, "u1", 0), (404, error("Decision not found.")));

    store.restore(&backup).unwrap();
    let (status, restored) = history(&app, "u2", 0);
    assert_eq!((status, &restored), (200, &kept));
    let (status, back) = history(&app, "u1", 0);
    assert_eq!(status, 200, "{back}");
    assert_eq!(back["corrections"][0]["outcome"], json!({ "clicks": 6.0 }));
    // Numbering continues after the restored corrections.
    assert_eq!(
        correct(&app, "u2", 0, 9.0, "2025-01-03T09:00:00Z").1["correction"],
        2
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// A fresh directory under the system's temporary one.
fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("justin-corrections-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
