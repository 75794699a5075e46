//! The template's own clients: the requests of the JustIn template's test files
//! (`tests/test_users.py`, `test_actions.py`, `test_data.py`, `test_update.py`), sent as its
//! Flask test client sends them (`Content-Type: application/json`, Python's `json.dumps`
//! text), in the same order, with the answers those tests require. A study server written
//! against the template sends the same bytes, so these must keep passing as they are.
//!
//! Beside them, ordinary requests the template accepts that a client library may well send:
//! other JSON media types, a byte order mark, `-0`, whole floats.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error, spawn_app, sql_lines, CallbackReceiver, TestApp};

/// How long the template's update test waits before it checks for the callback.
const TEMPLATE_UPDATE_WAIT: Duration = Duration::from_secs(7);

/// POSTs `body`, written as Python's `json.dumps` writes it, as the Flask test client's
/// `json=` does.
fn post(app: &TestApp, path: &str, body: &str) -> (u16, Value) {
    app.post_raw(path, body, "application/json")
}

/// `json.dumps` of a value the tests build from an earlier answer: `", "` and `": "` between
/// items, which is what Python writes and what serde_json's compact form is not.
fn python_dumps(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::String(k.clone()), python_dumps(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(python_dumps).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

#[test]
fn test_users_requests_get_the_templates_answers() {
    let app = spawn_app();

    // test_add_user_missing_field
    let (status, body) = post(&app, "/api/v1/add_user", "{}");
    assert_eq!((status, body), (400, error("user_id is required.")));

    // test_add_user_duplicate
    let first = post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_123"}"#);
    assert_eq!(first.0, 201, "{}", first.1);
    let (status, body) = post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_123"}"#);
    assert_eq!((status, body), (400, error("User already exists.")));

    // test_add_user_success, on a fresh participant
    let (status, body) = post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_456"}"#);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["user_id"], "test_user_456");
    assert_eq!(body["message"], "User added successfully.");
}

#[test]
fn test_actions_requests_get_the_templates_answers() {
    let app = spawn_app();

    // test_request_action_missing_user: before the participant is registered.
    let valid = r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {"temperature": 22}}"#;
    let (status, body) = post(&app, "/api/v1/action", valid);
    assert_eq!((status, body), (404, error("User not found.")));

    post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_123"}"#);

    // The check_fields tests, each sent as a request.
    let refused = [
        (
            r#"{"timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {"temperature": 22}}"#,
            "user_id and timestamp are required.",
        ),
        (
            r#"{"user_id": "test_user_123", "decision_idx": 0, "context": {"temperature": 22}}"#,
            "user_id and timestamp are required.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "context": {"temperature": 22}}"#,
            "decision_idx is required.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0}"#,
            "context is required.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {}}"#,
            "Invalid context. Temperature is required.",
        ),
        (
            r#"{"user_id": 123, "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {"temperature": 22}}"#,
            "user_id must be a string.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": 123, "decision_idx": 0, "context": {"temperature": 22}}"#,
            "timestamp must be a string or datetime object.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": "0", "context": {"temperature": 22}}"#,
            "decision_idx must be an integer.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": "temperature"}"#,
            "context must be a dictionary.",
        ),
        (
            r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {"temperature": "22"}}"#,
            "temperature must be a float or int.",
        ),
    ];
    for (request, message) in refused {
        let answer = post(&app, "/api/v1/action", request);
        assert_eq!(answer, (400, error(message)), "{request}");
    }

    // test_check_fields_valid and test_request_action_success.
    let (status, body) = post(&app, "/api/v1/action", valid);
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["user_id"], "test_user_123");
    assert_eq!(body["state"], json!([22]));
}

#[test]
fn test_data_requests_get_the_templates_answers() {
    let app = spawn_app();
    post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_123"}"#);

    // test_upload_data_success
    let (status, body) = post(
        &app,
        "/api/v1/upload_data",
        r#"{"user_id": "test_user_123", "timestamp": "2024-01-01T12:00:00Z", "decision_idx": 0, "data": {"context": {"temperature": 23}, "action": 1, "action_prob": 0.5, "state": [23], "outcome": {"clicks": 4}}}"#,
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["message"], "Data uploaded successfully.");

    // test_upload_data_user_not_found
    let (status, body) = post(
        &app,
        "/api/v1/upload_data",
        r#"{"user_id": "non_existent_user", "timestamp": "2024-01-01T12:00:00Z", "decision_idx": 2, "data": {"context": {"temperature": 30}, "action": 1, "action_prob": 0.5, "state": [30], "outcome": {"clicks": 4}}}"#,
    );
    assert_eq!((status, body), (404, error("User not found.")));
}

/// test_update_model_success: add a participant, ask for an action, upload its outcome with
/// the answer's action, probability and state, ask for an update with a callback, and find
/// the callback within the 7 seconds the template's test waits, saying `completed`.
#[test]
fn test_update_flow_calls_back_completed_within_the_templates_wait() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();

    post(&app, "/api/v1/add_user", r#"{"user_id": "test_user_123"}"#);
    let (status, action) = post(
        &app,
        "/api/v1/action",
        r#"{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "context": {"temperature": 25.0}}"#,
    );
    assert_eq!(status, 201, "{action}");

    let upload = format!(
        r#"{{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00", "decision_idx": 0, "data": {{"context": {{"temperature": 25.0}}, "action": {}, "action_prob": {}, "state": {}, "outcome": {{"clicks": 4}}}}}}"#,
        python_dumps(&action["action"]),
        python_dumps(&action["action_prob"]),
        python_dumps(&action["state"]),
    );
    let (status, body) = post(&app, "/api/v1/upload_data", &upload);
    assert_eq!(status, 201, "{upload}: {body}");

    let update = format!(
        r#"{{"callback_url": "{}", "timestamp": "2025-01-01T12:00:00"}}"#,
        callbacks.url()
    );
    let (status, body) = post(&app, "/api/v1/update", &update);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "processing");
    let update_id = body["update_id"]
        .as_str()
        .unwrap_or_else(|| panic!("update_id is a string: {body}"));

    let callback = callbacks
        .next_within(TEMPLATE_UPDATE_WAIT)
        .unwrap_or_else(|| panic!("no callback within the template's {TEMPLATE_UPDATE_WAIT:?}"));
    assert_eq!(callback["update_id"], update_id, "{callback}");
    assert_eq!(callback["status"], "completed", "{callback}");
    assert!(
        callbacks.try_next().is_none(),
        "the template's test finds exactly one callback"
    );
}

/// A valid `/action` body for `test_user_123` at `idx`, in Python's text.
fn action_text(idx: &str) -> String {
    format!(
        r#"{{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00Z", "decision_idx": {idx}, "context": {{"temperature": 22}}}}"#
    )
}

/// A valid `/upload_data` body for `test_user_123` at `idx` with `action` and `action_prob`
/// written as given, in Python's text.
fn upload_text(idx: &str, action: &str, action_prob: &Value) -> String {
    format!(
        r#"{{"user_id": "test_user_123", "timestamp": "2025-01-01T12:00:00Z", "decision_idx": {idx}, "data": {{"context": {{"temperature": 22}}, "action": {action}, "action_prob": {action_prob}, "state": [22], "outcome": {{"clicks": 4}}}}}}"#
    )
}

#[test]
fn every_json_media_type_the_templates_framework_reads_is_accepted() {
    let app = spawn_app();
    app.add_user("test_user_123");
    for (idx, content_type) in [
        "application/json",
        "application/json; charset=utf-8",
        "APPLICATION/JSON",
        "application/vnd.api+json",
        "application/ld+json; profile=\"x\"",
        "application/merge-patch+json",
    ]
    .into_iter()
    .enumerate()
    {
        let (status, body) = app.post_raw(
            "/api/v1/action",
            &action_text(&idx.to_string()),
            content_type,
        );
        assert_eq!(status, 201, "{content_type}: {body}");
    }
    for content_type in [
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
    ] {
        let answer = app.post_raw("/api/v1/action", &action_text("99"), content_type);
        assert_eq!(
            answer,
            (415, error("Content-Type must be application/json.")),
            "{content_type}"
        );
    }
}

#[test]
fn a_body_starting_with_a_byte_order_mark_is_read() {
    let app = spawn_app();
    // U+FEFF, written in UTF-8 as EF BB BF.
    let (status, body) = app.post_raw(
        "/api/v1/add_user",
        "\u{FEFF}{\"user_id\": \"test_user_123\"}",
        "application/json",
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = app.post_raw(
        "/api/v1/action",
        &format!("\u{FEFF}{}", action_text("0")),
        "application/json",
    );
    assert_eq!(status, 201, "{body}");
    // A second one is not a byte order mark but text before the JSON.
    let answer = app.post_raw(
        "/api/v1/add_user",
        "\u{FEFF}\u{FEFF}{\"user_id\": \"other\"}",
        "application/json",
    );
    assert_eq!(answer, (400, error("Request body must be valid JSON.")));
}

#[test]
fn decision_idx_minus_zero_is_decision_0_and_whole_float_actions_are_integers() {
    let app = spawn_app();
    app.add_user("test_user_123");

    let (status, first) = app.post_raw("/api/v1/action", &action_text("-0"), "application/json");
    assert_eq!(status, 201, "{first}");
    // The same decision as 0: the repeat answers the stored one.
    let (status, repeat) = app.post_raw("/api/v1/action", &action_text("0"), "application/json");
    assert_eq!((status, &repeat), (200, &first));
    // Python reads -0.0 and 0.0 as floats, which the template refuses as indexes.
    for literal in ["-0.0", "0.0", "1e0"] {
        let answer = app.post_raw("/api/v1/action", &action_text(literal), "application/json");
        assert_eq!(
            answer,
            (400, error("decision_idx must be an integer.")),
            "{literal}"
        );
    }

    // The upload names the action as a whole float and its decision as -0.
    let action = if first["action"] == 1 { "1.0" } else { "0.0" };
    let upload = upload_text("-0", action, &first["action_prob"]);
    let (status, body) = app.post_raw("/api/v1/upload_data", &upload, "application/json");
    assert_eq!(status, 201, "{upload}: {body}");
    // It was stored for decision 0, matching the logged action: a second upload of it is the
    // duplicate.
    let (status, body) = app.post_raw("/api/v1/upload_data", &upload, "application/json");
    assert_eq!(
        (status, body),
        (400, error("Decision index already exists."))
    );
    assert_eq!(
        sql_lines(
            app.database_url(),
            "SELECT CAST(decision_idx AS TEXT) || ' ' || CASE WHEN action_logged THEN 'logged' \
             ELSE 'unlogged' END AS out FROM study_data",
        ),
        ["0 logged"]
    );

    // A whole float is compared with the logged action as the integer it is.
    let (status, second) = app.post_raw("/api/v1/action", &action_text("1"), "application/json");
    assert_eq!(status, 201, "{second}");
    let other = if second["action"] == 1 { "0.0" } else { "1.0" };
    let contradicting = upload_text("1", other, &second["action_prob"]);
    let (status, body) = app.post_raw("/api/v1/upload_data", &contradicting, "application/json");
    assert_eq!(status, 409, "{body}");
}
