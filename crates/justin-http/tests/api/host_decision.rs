//! `POST /api/v1/host_decision`: decisions the study server made itself, sent afterwards.

use serde_json::{json, Value};

use crate::helpers::{check_cases, error, spawn_app, upload_body, with, TIMESTAMP};
use crate::openapi::served_contract;

const PATH: &str = "/api/v1/host_decision";

/// A valid host decision for `(user, idx)`.
fn host_body(user: &str, idx: i64) -> Value {
    json!({
        "user_id": user,
        "timestamp": TIMESTAMP,
        "decision_idx": idx,
        "context": { "temperature": 23 },
        "action": 1,
        "action_prob": 0.5,
        "decided_by": "app-server-bernoulli-0.5",
    })
}

#[test]
fn a_host_decision_is_stored_once_and_repeats_answer_200() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");

    let created = app.post_json(PATH, &host_body("u1", 0));
    let repeated = app.post_json(PATH, &host_body("u1", 0));

    assert_eq!(created.0, 201, "{}", created.1);
    contract.check("post", PATH, &created);
    let body = &created.1;
    assert_eq!(body["action"], 1);
    assert_eq!(body["action_prob"], 0.5);
    assert_eq!(body["policy"], "host");
    assert_eq!(body["decided_by"], "app-server-bernoulli-0.5");
    assert_eq!(body["user_id"], "u1");
    assert_eq!(body["status"], "success");
    assert_eq!(repeated, (200, created.1.clone()));
    contract.check("post", PATH, &repeated);
    assert_eq!(app.participant("u1")["decisions"], 1);
    // /action for the key answers the stored host decision.
    assert_eq!(app.action("u1", 0, 23.0), (200, created.1));
}

#[test]
fn a_different_decision_for_the_key_is_a_conflict_that_shows_the_stored_one() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");
    let (_, drawn) = app.action("u1", 0, 23.0);
    let mut other = host_body("u1", 0);
    other["action"] = json!(1 - drawn["action"].as_i64().unwrap());
    other["action_prob"] = json!(0.9);

    let got = app.post_json(PATH, &other);

    assert_eq!(got.0, 409, "{}", got.1);
    contract.check("post", PATH, &got);
    assert_eq!(got.1["status"], "failed");
    assert_eq!(
        got.1["message"],
        "A different decision is stored for this decision index."
    );
    let mut stored = drawn.clone();
    stored.as_object_mut().unwrap().remove("status");
    assert_eq!(got.1["decision"], stored);
}

#[test]
fn a_host_decision_after_an_upload_must_match_it_and_then_logs_it() {
    let app = spawn_app();
    app.add_user("u1");
    let mut upload = upload_body("u1", 0, 23.0);
    upload["data"]["action"] = json!(1);
    upload["data"]["action_prob"] = json!(0.5);
    app.post_expecting("/api/v1/upload_data", &upload, 201);
    let mut differs = host_body("u1", 0);
    differs["action"] = json!(0);
    differs["action_prob"] = json!(0.5);

    let refused = app.post_json(PATH, &differs);
    let stored = app.post_json(PATH, &host_body("u1", 0));

    assert_eq!(
        refused,
        (
            400,
            error(
                "The study data uploaded for this decision (action 1, action_prob 0.5) must \
                 match it (action 0, action_prob 0.5)."
            )
        )
    );
    assert_eq!(stored.0, 201, "{}", stored.1);
    let rows = crate::helpers::sql_lines(
        app.database_url(),
        "SELECT CASE WHEN action_logged THEN 'logged' ELSE 'unlogged' END || ':' || \
         coalesce(policy, '-') AS out FROM study_data",
    );
    assert_eq!(rows, ["logged:host"]);
}

#[test]
fn an_unavailable_host_decision_is_stored_with_action_and_probability_zero() {
    let app = spawn_app();
    app.add_user("u1");
    let mut body = host_body("u1", 0);
    body["available"] = json!(false);
    body["unavailable_reason"] = json!("driving");
    body["action"] = json!(0);
    body["action_prob"] = json!(0);
    body["context"] = json!({});

    let got = app.post_json(PATH, &body);

    assert_eq!(got.0, 201, "{}", got.1);
    assert_eq!(got.1["available"], false);
    assert_eq!(got.1["unavailable_reason"], "driving");
    assert_eq!(got.1["policy"], "host");
    assert_eq!(got.1["state"], json!([]));
}

#[test]
fn an_unknown_participant_is_not_found() {
    let app = spawn_app();

    assert_eq!(
        app.post_json(PATH, &host_body("nobody", 0)),
        (404, error("User not found."))
    );
}

#[test]
fn malformed_host_decisions_are_refused_with_a_message() {
    let app = spawn_app();
    app.add_user("u1");
    let base = host_body("u1", 0);
    let set = |key: &str, value: Value| with(&base, None, key, Some(value));
    let drop = |key: &str| with(&base, None, key, None);

    check_cases(
        &app,
        PATH,
        &[
            (drop("user_id"), 400, "user_id and timestamp are required."),
            (
                drop("timestamp"),
                400,
                "user_id and timestamp are required.",
            ),
            (drop("decision_idx"), 400, "decision_idx is required."),
            (drop("context"), 400, "context is required."),
            (drop("action"), 400, "action is required."),
            (drop("action_prob"), 400, "action_prob is required."),
            (drop("decided_by"), 400, "decided_by is required."),
            (set("decided_by", json!("")), 400, "decided_by is required."),
            (set("user_id", json!(1)), 400, "user_id must be a string."),
            (
                set("timestamp", json!(1)),
                400,
                "timestamp must be a string or datetime object.",
            ),
            (
                set("decision_idx", json!(1.5)),
                400,
                "decision_idx must be an integer.",
            ),
            (
                set("context", json!([1])),
                400,
                "context must be a dictionary.",
            ),
            (
                set("decision_idx", json!(-1)),
                400,
                "decision_idx must be a non-negative integer.",
            ),
            (
                set("decision_type", json!("bad type")),
                400,
                "decision_type may only hold ASCII letters, digits, '_', '-' and '.'.",
            ),
            (
                set("available", json!("no")),
                400,
                "available must be true or false.",
            ),
            (
                set("unavailable_reason", json!("x")),
                400,
                "unavailable_reason is only allowed with available: false.",
            ),
            (set("action", json!(2)), 400, "action must be 0 or 1."),
            (
                set("action_prob", json!(1.5)),
                400,
                "action_prob must be a number between 0 and 1.",
            ),
            (
                set("action_prob", json!("0.5")),
                400,
                "action_prob must be a number between 0 and 1.",
            ),
            (
                set("decided_by", json!(5)),
                400,
                "decided_by must be a string.",
            ),
            (
                set("decided_by", json!("x".repeat(1025))),
                400,
                "decided_by must be at most 1024 bytes long.",
            ),
            (
                set("decided_by", json!("a\tb")),
                400,
                "decided_by must not contain control characters.",
            ),
            (
                set("available", json!(false)),
                400,
                "An unavailable decision has action 0 and action_prob 0.",
            ),
            (
                set("context", json!({ "note": "a\u{0}b" })),
                400,
                "context must not contain the character \\u0000.",
            ),
        ],
    );
    assert_eq!(app.participant("u1")["decisions"], 0);
}

#[test]
fn a_host_decision_is_kept_out_of_updates_by_default() {
    let app = spawn_app();
    app.add_user("u1");
    app.post_expecting(PATH, &host_body("u1", 0), 201);
    let mut upload = upload_body("u1", 0, 23.0);
    upload["data"]["action"] = json!(1);
    upload["data"]["action_prob"] = json!(0.5);
    app.post_expecting("/api/v1/upload_data", &upload, 201);
    let receiver = crate::helpers::CallbackReceiver::start();

    let id = app.request_update(receiver.url());
    receiver.next();
    let done = app.wait_for_update(&id, |b| b["update_status"] != "processing");

    assert_eq!(done["update_status"], "completed", "{done}");
    assert_eq!(done["provenance"]["rows_read"], 0, "{done}");
}
