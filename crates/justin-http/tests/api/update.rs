//! `POST /api/v1/update`, `GET /api/v1/update/{id}` and `GET /api/v1/parameters`: model
//! updates run in the background, call back, publish parameter versions and back up first.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{
    check_cases, error, rfc3339, spawn_app, spawn_app_with, CallbackReceiver, TestApp, TIMESTAMP,
};

fn keys(body: &Value) -> BTreeSet<&str> {
    body.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

fn entries(dir: &Path) -> Vec<std::fs::DirEntry> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a readable directory entry"))
        .collect()
}

/// Probabilities are sums of 0.01 steps: equal up to rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

/// Asserts the current parameters are `version` with probability of action `p`.
fn assert_parameters(app: &TestApp, version: i64, p: f64) {
    let (got_version, got_p) = app.current_parameters();
    assert!(
        got_version == version && close(got_p, p),
        "expected version {version} with probability {p}, got version {got_version} with {got_p}"
    );
}

/// Asserts `callback` is a completed callback for `update_id`.
fn assert_completed(callback: &Value, update_id: &str) {
    assert_eq!(
        keys(callback),
        BTreeSet::from(["status", "timestamp", "update_id"]),
        "{callback}"
    );
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], update_id, "{callback}");
    rfc3339(&callback["timestamp"], "the callback's timestamp");
}

#[test]
fn parameters_start_from_the_priors_as_version_1() {
    let app = spawn_app();

    let (status, current) = app.get("/api/v1/parameters");

    assert_eq!(status, 200, "{current}");
    assert_eq!(
        keys(&current),
        BTreeSet::from(["algorithm", "created_at", "parameters", "status", "version"]),
        "{current}"
    );
    assert_eq!(current["status"], "success");
    assert_eq!(current["version"], 1);
    assert_eq!(current["algorithm"], "flat_prob");
    assert_eq!(
        current["parameters"],
        json!({ "probability_of_action": 0.5 })
    );
    rfc3339(&current["created_at"], "created_at");
    assert_eq!(app.get("/api/v1/parameters/1"), (200, current));
    assert_eq!(
        app.get("/api/v1/parameters/2"),
        (404, error("Parameter version not found."))
    );
}

#[test]
fn update_answers_202_with_a_uuid() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();

    let (status, body) = app.post_json(
        "/api/v1/update",
        &json!({ "timestamp": TIMESTAMP, "callback_url": callbacks.url() }),
    );

    assert_eq!(status, 202, "{body}");
    assert_eq!(
        keys(&body),
        BTreeSet::from(["status", "update_id"]),
        "{body}"
    );
    assert_eq!(body["status"], "processing");
    let id = body["update_id"].as_str().expect("update_id is a string");
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("update_id {id:?} is a UUID: {e}"));
    assert_completed(&callbacks.next(), id);
}

#[test]
fn an_update_with_mean_temperature_below_30_raises_the_probability() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.add_user("u2");
    app.upload("u1", 0, 20.0);
    app.upload("u2", 0, 25.0);
    app.upload("u2", 1, 29.5);

    let id = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &id);
    assert_parameters(&app, 2, 0.51);
    let (status, current) = app.get("/api/v1/parameters");
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["algorithm"], "flat_prob");
    // The old version stays readable as it was.
    let (status, first) = app.get("/api/v1/parameters/1");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["parameters"], json!({ "probability_of_action": 0.5 }));
}

#[test]
fn an_update_with_mean_temperature_of_30_or_more_lowers_the_probability() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    // The mean is exactly 30: not below 30, so the probability goes down.
    app.upload("u1", 0, 29.0);
    app.upload("u1", 1, 31.0);

    let id = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &id);
    assert_parameters(&app, 2, 0.49);
}

#[test]
fn an_update_without_study_data_keeps_the_probability() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    // Decisions without uploaded data are not study data.
    let (status, body) = app.action("u1", 0, 10.0);
    assert_eq!(status, 201, "{body}");

    let id = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &id);
    let (_, probability) = app.current_parameters();
    assert!(close(probability, 0.5), "probability {probability}");
}

#[test]
fn the_update_status_shows_a_completed_update() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.upload("u1", 0, 20.0);
    let id = app.request_update(callbacks.url());
    assert_completed(&callbacks.next(), &id);

    let (status, body) = app.get(&format!("/api/v1/update/{id}"));

    assert_eq!(status, 200, "{body}");
    assert_eq!(
        keys(&body),
        BTreeSet::from([
            "attempts",
            "callback",
            "error",
            "finished_at",
            "parameter_version",
            "provenance",
            "received_at",
            "requested_at",
            "started_at",
            "status",
            "timestamp",
            "update_id",
            "update_status",
        ]),
        "{body}"
    );
    assert_eq!(body["status"], "success");
    assert_eq!(body["update_id"], id.as_str());
    assert_eq!(body["update_status"], "completed");
    assert_eq!(body["parameter_version"], 2);
    assert_eq!(body["error"], Value::Null);
    // requested_at is the instant the client's timestamp names, and timestamp the text as
    // it was sent; the other two times are the server's.
    assert_eq!(
        rfc3339(&body["requested_at"], "requested_at"),
        rfc3339(&json!(TIMESTAMP), "TIMESTAMP")
    );
    assert_eq!(body["timestamp"], TIMESTAMP);
    let received = rfc3339(&body["received_at"], "received_at");
    let finished = rfc3339(&body["finished_at"], "finished_at");
    assert!(received <= finished, "{body}");
}

#[test]
fn the_update_status_of_an_unknown_or_malformed_id_is_refused() {
    let app = spawn_app();

    let unknown = app.get(&format!("/api/v1/update/{}", Uuid::new_v4()));
    let (status, malformed) = app.get("/api/v1/update/not-a-uuid");

    assert_eq!(unknown, (404, error("Update not found.")));
    assert_eq!(status, 400, "{malformed}");
    assert_eq!(malformed["status"], "failed", "{malformed}");
    assert!(malformed["message"].is_string(), "{malformed}");
}

#[test]
fn decisions_after_an_update_use_the_new_parameters_and_stored_ones_stay() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    let (status, before) = app.action("u1", 0, 20.0);
    assert_eq!(status, 201, "{before}");
    app.upload("u1", 1, 20.0);
    let id = app.request_update(callbacks.url());
    assert_completed(&callbacks.next(), &id);

    let (repeat_status, repeat) = app.action("u1", 0, 20.0);
    let (new_status, new) = app.action("u1", 2, 20.0);

    assert_eq!(repeat_status, 200, "{repeat}");
    assert_eq!(repeat["action"], before["action"]);
    assert_eq!(repeat["action_prob"].as_f64(), Some(0.5), "{repeat}");
    assert_eq!(new_status, 201, "{new}");
    assert!(
        new["action_prob"].as_f64().is_some_and(|p| close(p, 0.51)),
        "{new}"
    );
}

#[test]
fn updates_run_one_at_a_time_in_order() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.upload("u1", 0, 20.0);

    let first = app.request_update(callbacks.url());
    let second = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &first);
    assert_completed(&callbacks.next(), &second);
    assert_parameters(&app, 3, 0.52);
    let (_, status) = app.get(&format!("/api/v1/update/{second}"));
    assert_eq!(status["parameter_version"], 3, "{status}");
}

#[test]
fn an_update_writes_a_backup_first_when_backups_are_on() {
    let app = spawn_app_with(|config| config.backup.enabled = true);
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.upload("u1", 0, 20.0);
    assert!(
        entries(app.backup_dir()).is_empty(),
        "the backup dir starts empty"
    );

    let id = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &id);
    let files = entries(app.backup_dir());
    assert_eq!(files.len(), 1, "one backup file per update: {files:?}");
    let metadata = files[0].metadata().expect("the backup can be inspected");
    assert!(metadata.is_file() && metadata.len() > 0, "{files:?}");
}

#[test]
fn an_update_writes_no_backup_when_backups_are_off() {
    let app = spawn_app_with(|config| config.backup.enabled = false);
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.upload("u1", 0, 20.0);

    let id = app.request_update(callbacks.url());

    assert_completed(&callbacks.next(), &id);
    assert_parameters(&app, 2, 0.51);
    assert!(entries(app.backup_dir()).is_empty());
}

#[test]
fn a_failed_update_calls_back_failed_and_keeps_the_parameters() {
    // The backup, which comes first, cannot be written: backup.dir is a regular file.
    let app = spawn_app_with(|config| {
        let file = config.backup.dir.join("not-a-directory");
        std::fs::write(&file, "a regular file where a directory should be").unwrap();
        config.backup.enabled = true;
        config.backup.dir = file;
    });
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.upload("u1", 0, 20.0);

    let id = app.request_update(callbacks.url());

    assert_eq!(
        callbacks.next(),
        json!({ "status": "failed", "update_id": id, "message": "Model update failed." })
    );
    let (status, body) = app.get(&format!("/api/v1/update/{id}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["update_status"], "failed", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "the error is stored: {body}"
    );
    assert_eq!(body["parameter_version"], Value::Null, "{body}");
    rfc3339(&body["finished_at"], "finished_at");
    assert_parameters(&app, 1, 0.5);
}

#[test]
fn update_rejects_malformed_requests() {
    let app = spawn_app();
    let url = "http://example.com/callback";
    let invalid_url = "callback_url must be an absolute http or https URL.";

    check_cases(
        &app,
        "/api/v1/update",
        &[
            (json!({}), 400, "timestamp is required."),
            (
                json!({ "callback_url": url }),
                400,
                "timestamp is required.",
            ),
            (
                json!({ "timestamp": null, "callback_url": url }),
                400,
                "timestamp is required.",
            ),
            (
                json!({ "timestamp": TIMESTAMP }),
                400,
                "callback_url is required.",
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": null }),
                400,
                "callback_url is required.",
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": 5 }),
                400,
                "callback_url must be a string.",
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": "example.com/callback" }),
                400,
                invalid_url,
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": "ftp://example.com/callback" }),
                400,
                invalid_url,
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": "not a url" }),
                400,
                invalid_url,
            ),
            (
                json!({ "timestamp": TIMESTAMP, "callback_url": "http://" }),
                400,
                invalid_url,
            ),
        ],
    );

    // A timestamp that is not one is refused too; the contract does not fix its message.
    for timestamp in [json!(5), json!("yesterday")] {
        let (status, body) = app.post_json(
            "/api/v1/update",
            &json!({ "timestamp": timestamp, "callback_url": url }),
        );
        assert_eq!(status, 400, "timestamp {timestamp}: {body}");
        assert_eq!(body["status"], "failed", "{body}");
    }
}
