//! `POST /api/v1/add_user`: registering participants.

use serde_json::json;

use crate::helpers::{check_cases, error, spawn_app};

#[test]
fn add_user_answers_201_with_the_user() {
    let app = spawn_app();

    let got = app.post_json("/api/v1/add_user", &json!({ "user_id": "test_user_123" }));

    assert_eq!(
        got,
        (
            201,
            json!({
                "status": "success",
                "user_id": "test_user_123",
                "message": "User added successfully.",
            })
        )
    );
}

#[test]
fn a_registered_user_can_ask_for_actions() {
    let app = spawn_app();
    app.add_user("u1");

    let (status, body) = app.action("u1", 0, 23.0);

    assert_eq!(status, 201, "{body}");
}

#[test]
fn adding_a_user_twice_is_refused() {
    let app = spawn_app();
    app.add_user("test_user_123");

    let got = app.post_json("/api/v1/add_user", &json!({ "user_id": "test_user_123" }));

    assert_eq!(got, (400, error("User already exists.")));
}

#[test]
fn add_user_rejects_missing_or_mistyped_ids() {
    let app = spawn_app();

    check_cases(
        &app,
        "/api/v1/add_user",
        &[
            (json!({}), 400, "user_id is required."),
            (json!({ "user_id": null }), 400, "user_id is required."),
            (json!({ "user_id": "" }), 400, "user_id is required."),
            (json!({ "user": "u1" }), 400, "user_id is required."),
            (json!({ "user_id": 5 }), 400, "user_id must be a string."),
            (
                json!({ "user_id": ["u1"] }),
                400,
                "user_id must be a string.",
            ),
            (
                json!({ "user_id": { "id": "u1" } }),
                400,
                "user_id must be a string.",
            ),
            (json!({ "user_id": true }), 400, "user_id must be a string."),
        ],
    );
}
