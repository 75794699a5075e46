//! `POST /api/v1/action`: drawing a decision, returning the stored one on a repeat, and every
//! way a request can be refused.

use std::collections::BTreeSet;
use std::sync::Barrier;

use chrono::{DurationRound, TimeDelta, Utc};
use serde_json::{json, Value};

use crate::helpers::{
    action_body, check_cases, error, rfc3339, spawn_app, upload_body, with, TIMESTAMP,
};

/// The keys of a decision answer.
const DECISION_KEYS: [&str; 6] = [
    "action",
    "action_prob",
    "state",
    "status",
    "timestamp",
    "user_id",
];

fn keys(body: &Value) -> BTreeSet<&str> {
    body.as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default()
}

/// What must be identical between two answers for one decision.
fn decision(body: &Value) -> (Value, Value, Value) {
    (
        body["action"].clone(),
        body["action_prob"].clone(),
        body["state"].clone(),
    )
}

#[test]
fn action_answers_201_with_the_decision() {
    let app = spawn_app();
    app.add_user("test_user_123");
    let before = Utc::now()
        .duration_trunc(TimeDelta::microseconds(1))
        .unwrap();

    let (status, body) = app.action("test_user_123", 0, 23.0);

    let after = Utc::now();
    assert_eq!(status, 201, "{body}");
    assert_eq!(keys(&body), BTreeSet::from(DECISION_KEYS), "{body}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["user_id"], "test_user_123");
    let action = body["action"].as_i64().expect("action is an integer");
    assert!(action == 0 || action == 1, "{body}");
    // The priors' probability: version 1 of the parameters.
    assert_eq!(body["action_prob"].as_f64(), Some(0.5), "{body}");
    // flat_prob's state is [temperature]; JSON does not tell 23 from 23.0, so compare numbers.
    let state: Vec<f64> = body["state"]
        .as_array()
        .expect("state is a list")
        .iter()
        .map(|v| v.as_f64().expect("state holds numbers"))
        .collect();
    assert_eq!(state, [23.0], "{body}");
    // The server's receive time, not the request's timestamp.
    let at = rfc3339(&body["timestamp"], "timestamp");
    assert!(
        before <= at && at <= after,
        "{at} is not in [{before}, {after}]"
    );
}

#[test]
fn a_timestamp_with_any_offset_is_accepted() {
    let app = spawn_app();
    app.add_user("u1");

    for (idx, timestamp) in ["2025-01-01T14:00:00+02:00", "2025-01-01T12:00:00.250Z"]
        .into_iter()
        .enumerate()
    {
        let body = with(
            &action_body("u1", idx as i64, 23.0),
            None,
            "timestamp",
            Some(json!(timestamp)),
        );
        let (status, answer) = app.post_json("/api/v1/action", &body);
        assert_eq!(status, 201, "{timestamp}: {answer}");
    }
}

#[test]
fn a_repeated_action_answers_200_with_the_stored_decision() {
    let app = spawn_app();
    app.add_user("u1");
    let (status, first) = app.action("u1", 0, 23.0);
    assert_eq!(status, 201, "{first}");

    // Another context and timestamp: the stored decision wins, nothing is drawn again.
    let repeat = json!({
        "user_id": "u1",
        "timestamp": "2025-01-02T08:00:00Z",
        "decision_idx": 0,
        "context": { "temperature": 35 },
    });
    let (status, second) = app.post_json("/api/v1/action", &repeat);

    assert_eq!(status, 200, "{second}");
    assert_eq!(keys(&second), BTreeSet::from(DECISION_KEYS), "{second}");
    assert_eq!(second["status"], "success");
    assert_eq!(second["user_id"], "u1");
    assert_eq!(decision(&second), decision(&first));
}

#[test]
fn action_for_an_unknown_user_is_404() {
    let app = spawn_app();
    app.add_user("someone_else");

    let got = app.action("nobody", 0, 23.0);

    assert_eq!(got, (404, error("User not found.")));
}

#[test]
fn action_after_an_upload_is_refused() {
    let app = spawn_app();
    app.add_user("u1");
    // Decision 0 was drawn before its data was uploaded; decision 1 was never drawn here.
    let (status, body) = app.action("u1", 0, 23.0);
    assert_eq!(status, 201, "{body}");
    let mut upload = upload_body("u1", 0, 23.0);
    upload["data"]["action"] = body["action"].clone();
    let (status, body) = app.post_json("/api/v1/upload_data", &upload);
    assert_eq!(status, 201, "{body}");
    app.upload("u1", 1, 23.0);

    let after_drawn = app.action("u1", 0, 23.0);
    let after_undrawn = app.action("u1", 1, 23.0);

    assert_eq!(after_drawn, (400, error("Decision index already exists.")));
    assert_eq!(
        after_undrawn,
        (400, error("Decision index already exists."))
    );
    // Other decisions of the same user are unaffected.
    let (status, body) = app.action("u1", 2, 23.0);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn action_rejects_each_malformed_field_with_its_message() {
    let app = spawn_app();
    app.add_user("u1");
    let valid = action_body("u1", 0, 23.0);
    let set = |key: &str, value: Value| with(&valid, None, key, Some(value));
    let remove = |key: &str| with(&valid, None, key, None);
    let required = "user_id and timestamp are required.";

    check_cases(
        &app,
        "/api/v1/action",
        &[
            // Missing fields (absent, null or empty count as missing).
            (remove("user_id"), 400, required),
            (set("user_id", Value::Null), 400, required),
            (set("user_id", json!("")), 400, required),
            (remove("timestamp"), 400, required),
            (set("timestamp", Value::Null), 400, required),
            (set("timestamp", json!("")), 400, required),
            (
                set("context", json!({"temperature": 23, "note": "\0"})),
                400,
                "context must not contain the character \\u0000.",
            ),
            (remove("decision_idx"), 400, "decision_idx is required."),
            (
                set("decision_idx", Value::Null),
                400,
                "decision_idx is required.",
            ),
            (remove("context"), 400, "context is required."),
            (set("context", Value::Null), 400, "context is required."),
            // Wrong types.
            (set("user_id", json!(123)), 400, "user_id must be a string."),
            (
                set("user_id", json!(["u1"])),
                400,
                "user_id must be a string.",
            ),
            (
                set("timestamp", json!(1_735_732_800)),
                400,
                "timestamp must be a string or datetime object.",
            ),
            (
                set("timestamp", json!({ "year": 2025 })),
                400,
                "timestamp must be a string or datetime object.",
            ),
            (
                set("timestamp", json!("yesterday")),
                400,
                "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, 2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read in UTC).",
            ),
            (
                set("decision_idx", json!("0")),
                400,
                "decision_idx must be an integer.",
            ),
            (
                set("decision_idx", json!(1.5)),
                400,
                "decision_idx must be an integer.",
            ),
            (
                set("decision_idx", json!(true)),
                400,
                "decision_idx must be an integer.",
            ),
            (
                set("decision_idx", json!(-1)),
                400,
                "decision_idx must be a non-negative integer.",
            ),
            // The template's `"temperature" in context` runs first: a list or string that
            // does not hold the word lacks the temperature; one that does is no dictionary.
            (
                set("context", json!([23])),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!("hot")),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!([])),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!("")),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!(["temperature"])),
                400,
                "context must be a dictionary.",
            ),
            (
                set("context", json!("temperature")),
                400,
                "context must be a dictionary.",
            ),
            (
                set("context", json!(23)),
                400,
                "context must be a dictionary.",
            ),
            // The algorithm's checks of the context.
            (
                set("context", json!({})),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!({ "humidity": 40 })),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                set("context", json!({ "temperature": "hot" })),
                400,
                "temperature must be a float or int.",
            ),
            (
                set("context", json!({ "temperature": [23] })),
                400,
                "temperature must be a float or int.",
            ),
        ],
    );

    // None of the refused requests stored a decision: the first valid one draws anew.
    let (status, body) = app.post_json("/api/v1/action", &valid);
    assert_eq!(status, 201, "{body}");
}

#[test]
fn action_reports_the_first_error_when_several_fields_are_wrong() {
    let app = spawn_app();
    app.add_user("u1");

    check_cases(
        &app,
        "/api/v1/action",
        &[
            // Missing fields come first, in order: user_id/timestamp, decision_idx, context.
            (json!({}), 400, "user_id and timestamp are required."),
            (
                json!({ "user_id": 5, "decision_idx": "x", "context": [] }),
                400,
                "user_id and timestamp are required.",
            ),
            (
                json!({ "user_id": 5, "timestamp": 5, "context": [] }),
                400,
                "decision_idx is required.",
            ),
            (
                json!({ "user_id": 5, "timestamp": 5, "decision_idx": "x" }),
                400,
                "context is required.",
            ),
            // Then the context fields the algorithm needs (the template's temperature check),
            // ahead of every wrong type, and seen as Python's `in` sees them.
            (
                json!({ "user_id": 5, "timestamp": 5, "decision_idx": "x", "context": [] }),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                json!({ "user_id": 5, "timestamp": TIMESTAMP, "decision_idx": 0, "context": {} }),
                400,
                "Invalid context. Temperature is required.",
            ),
            (
                json!({ "user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": 0, "context": "" }),
                400,
                "Invalid context. Temperature is required.",
            ),
            // Then wrong types, in order: user_id, timestamp, decision_idx, context.
            (
                json!({ "user_id": 5, "timestamp": 5, "decision_idx": "x", "context": ["temperature"] }),
                400,
                "user_id must be a string.",
            ),
            (
                json!({ "user_id": "u1", "timestamp": 5, "decision_idx": "x", "context": ["temperature"] }),
                400,
                "timestamp must be a string or datetime object.",
            ),
            (
                json!({ "user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": "x", "context": "temperature" }),
                400,
                "decision_idx must be an integer.",
            ),
            (
                json!({ "user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": 0, "context": "the temperature" }),
                400,
                "context must be a dictionary.",
            ),
            // Then the algorithm's checks of the context's types, after every HTTP-level check.
            (
                json!({ "user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": 1.5, "context": { "temperature": "hot" } }),
                400,
                "decision_idx must be an integer.",
            ),
            (
                json!({ "user_id": "u1", "timestamp": "yesterday", "decision_idx": 0, "context": { "temperature": 1 } }),
                400,
                "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, 2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read in UTC).",
            ),
        ],
    );
}

#[test]
fn concurrent_duplicate_actions_store_exactly_one_decision() {
    const THREADS: usize = 16;
    let app = spawn_app();
    app.add_user("u1");
    let body = action_body("u1", 7, 23.0);
    let start = Barrier::new(THREADS);

    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                let client = app.client();
                let (start, body) = (&start, &body);
                scope.spawn(move || {
                    start.wait();
                    client.post_json("/api/v1/action", body)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a request thread panicked"))
            .collect()
    });

    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    let repeated = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!((created, repeated), (1, THREADS - 1), "{answers:?}");
    let first = decision(&answers[0].1);
    assert!(
        answers.iter().all(|(_, body)| decision(body) == first),
        "the answers disagree: {answers:?}"
    );
    // The stored decision is the one every thread saw.
    let (status, again) = app.post_json("/api/v1/action", &body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(decision(&again), first);
}
