//! `POST /api/v1/upload_data`: storing what happened after a decision, and every way an upload
//! can be refused.

use serde_json::{json, Value};

use crate::helpers::{check_cases, error, spawn_app, upload_body, with};

#[test]
fn upload_answers_201() {
    let app = spawn_app();
    app.add_user("test_user_123");
    let (status, body) = app.action("test_user_123", 0, 30.0);
    assert_eq!(status, 201, "{body}");
    // The upload reports the action the participant got, which is the one drawn.
    let action = body["action"].clone();

    let got = app.post_json(
        "/api/v1/upload_data",
        &json!({
            "user_id": "test_user_123",
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 0,
            "data": {
                "context": { "temperature": 30 },
                "action": action,
                "action_prob": 0.5,
                "state": [30],
                "outcome": { "clicks": 4 },
            },
        }),
    );

    assert_eq!(
        got,
        (
            201,
            json!({ "status": "success", "message": "Data uploaded successfully." })
        )
    );
}

#[test]
fn a_second_upload_of_a_decision_is_refused() {
    let app = spawn_app();
    app.add_user("u1");
    app.upload("u1", 0, 30.0);

    let again = app.post_json("/api/v1/upload_data", &upload_body("u1", 0, 25.0));

    assert_eq!(again, (400, error("Decision index already exists.")));
    // The next decision is still open.
    let (status, body) = app.post_json("/api/v1/upload_data", &upload_body("u1", 1, 25.0));
    assert_eq!(status, 201, "{body}");
}

#[test]
fn upload_for_an_unknown_user_is_404() {
    let app = spawn_app();
    app.add_user("someone_else");

    let got = app.post_json("/api/v1/upload_data", &upload_body("nobody", 0, 30.0));

    assert_eq!(got, (404, error("User not found.")));
}

#[test]
fn upload_rejects_each_malformed_field_with_its_message() {
    let app = spawn_app();
    app.add_user("u1");
    let valid = upload_body("u1", 0, 30.0);
    let top = |key: &str, value: Option<Value>| with(&valid, None, key, value);
    let data = |key: &str, value: Option<Value>| with(&valid, Some("data"), key, value);

    check_cases(
        &app,
        "/api/v1/upload_data",
        &[
            // One missing field at a time.
            (top("user_id", None), 400, "user_id is required."),
            (
                top("user_id", Some(Value::Null)),
                400,
                "user_id is required.",
            ),
            (top("decision_idx", None), 400, "decision_idx is required."),
            (top("timestamp", None), 400, "timestamp is required."),
            (
                top("timestamp", Some(json!(""))),
                400,
                "timestamp is required.",
            ),
            (top("user_id", Some(json!(""))), 400, "user_id is required."),
            // PostgreSQL cannot store U+0000 in JSON; it is refused, not a 500.
            (
                data("outcome", Some(json!({"clicks": 1, "note": "a\0b"}))),
                400,
                "outcome must not contain the character \\u0000.",
            ),
            (top("data", None), 400, "data is required."),
            (data("context", None), 400, "context is required."),
            (
                data("context", Some(json!({}))),
                400,
                "Invalid context. Temperature is required.",
            ),
            (data("action", None), 400, "action is required."),
            (data("action_prob", None), 400, "action_prob is required."),
            (data("state", None), 400, "state is required."),
            (data("outcome", None), 400, "outcome is required."),
            (
                data("outcome", Some(json!({}))),
                400,
                "Invalid outcome. Clicks is required.",
            ),
            (
                data("outcome", Some(json!({ "views": 2 }))),
                400,
                "Invalid outcome. Clicks is required.",
            ),
            // One mistyped field at a time.
            (
                top("user_id", Some(json!(5))),
                400,
                "user_id must be a string.",
            ),
            (
                top("decision_idx", Some(json!("0"))),
                400,
                "decision_idx must be an integer.",
            ),
            (
                top("decision_idx", Some(json!(0.5))),
                400,
                "decision_idx must be an integer.",
            ),
            (
                top("timestamp", Some(json!(5))),
                400,
                "timestamp must be a string or datetime object.",
            ),
            // A `data` that names no context lacks it, as the template's `"context" in data`
            // sees it; one that names it without being an object is of the wrong type.
            (top("data", Some(json!([1]))), 400, "context is required."),
            (top("data", Some(json!("x"))), 400, "context is required."),
            (top("data", Some(json!({}))), 400, "context is required."),
            (top("data", Some(json!(0))), 400, "context is required."),
            (
                top("data", Some(json!(["context"]))),
                400,
                "data must be a dictionary.",
            ),
            (
                top("data", Some(json!("the context"))),
                400,
                "data must be a dictionary.",
            ),
            (
                top("data", Some(json!(5))),
                400,
                "data must be a dictionary.",
            ),
            // Likewise for the context's temperature and the outcome's clicks.
            (
                data("context", Some(json!([30]))),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                data("context", Some(json!(""))),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                data("context", Some(json!(["temperature"]))),
                400,
                "context must be a dictionary.",
            ),
            (
                data("context", Some(json!({ "temperature": "hot" }))),
                400,
                "temperature must be a float or int.",
            ),
            (
                data("action", Some(json!(2))),
                400,
                "action must be 0 or 1.",
            ),
            (
                data("action", Some(json!(-1))),
                400,
                "action must be 0 or 1.",
            ),
            (
                data("action", Some(json!("1"))),
                400,
                "action must be 0 or 1.",
            ),
            (
                data("action", Some(json!(0.5))),
                400,
                "action must be 0 or 1.",
            ),
            (
                data("action_prob", Some(json!(1.5))),
                400,
                "action_prob must be a number between 0 and 1.",
            ),
            (
                data("action_prob", Some(json!(-0.1))),
                400,
                "action_prob must be a number between 0 and 1.",
            ),
            (
                data("action_prob", Some(json!("0.5"))),
                400,
                "action_prob must be a number between 0 and 1.",
            ),
            (
                data("state", Some(json!("30"))),
                400,
                "state must be a list of numbers.",
            ),
            (
                data("state", Some(json!([30, "x"]))),
                400,
                "state must be a list of numbers.",
            ),
            (
                data("state", Some(json!({ "temperature": 30 }))),
                400,
                "state must be a list of numbers.",
            ),
            (
                data("outcome", Some(json!([4]))),
                400,
                "Invalid outcome. Clicks is required.",
            ),
            (
                data("outcome", Some(json!("clicks"))),
                400,
                "outcome must be a dictionary.",
            ),
            (
                data("outcome", Some(json!({ "clicks": "many" }))),
                400,
                "clicks must be a float or int.",
            ),
        ],
    );

    // None of the refused uploads was stored: the valid one is the first for decision 0.
    let (status, body) = app.post_json("/api/v1/upload_data", &valid);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn boundary_values_are_accepted() {
    let app = spawn_app();
    app.add_user("u1");

    let cases = [
        ("action_prob", json!(0)),
        ("action_prob", json!(1)),
        ("action", json!(0)),
        ("state", json!([30, 1.5, -2])),
    ];
    for (idx, (key, value)) in cases.into_iter().enumerate() {
        let body = with(
            &upload_body("u1", idx as i64, 30.0),
            Some("data"),
            key,
            Some(value.clone()),
        );
        let (status, answer) = app.post_json("/api/v1/upload_data", &body);
        assert_eq!(status, 201, "{key} = {value}: {answer}");
    }
}
