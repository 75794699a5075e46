//! Decision types and availability on `/action` and `/upload_data`: the key of a decision is
//! `(user_id, decision_type, decision_idx)`, and an unavailable decision gets no draw and
//! never reaches a model update.

use serde_json::{json, Value};

use crate::helpers::{
    action_body, check_cases, error, spawn_app, upload_body, upload_body_for, with,
    CallbackReceiver, TestApp, TIMESTAMP,
};

fn typed(body: Value, decision_type: &str) -> Value {
    with(&body, None, "decision_type", Some(json!(decision_type)))
}

fn unavailable(body: Value, reason: Option<&str>) -> Value {
    let body = with(&body, None, "available", Some(json!(false)));
    match reason {
        Some(r) => with(&body, None, "unavailable_reason", Some(json!(r))),
        None => body,
    }
}

/// An upload agreeing with the decision `answer` of `/action`, of `decision_type`.
fn upload_for(user: &str, idx: i64, answer: &Value, decision_type: Option<&str>) -> Value {
    let body = upload_body_for(user, idx, 20.0, answer);
    match decision_type {
        Some(t) => typed(body, t),
        None => body,
    }
}

#[test]
fn one_index_holds_one_decision_per_type() {
    let app = spawn_app();
    app.add_user("u1");

    let default = app.post_expecting("/api/v1/action", &action_body("u1", 0, 20.0), 201);
    let morning = app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 20.0), "morning"),
        201,
    );
    let evening = app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 20.0), "evening"),
        201,
    );

    // The default type's answer is the template's, without the newer keys.
    let mut keys: Vec<&str> = default
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "action_prob",
            "state",
            "status",
            "timestamp",
            "user_id"
        ]
    );
    assert_eq!(morning["decision_type"], "morning");
    assert_eq!(evening["decision_type"], "evening");
    // A repeat of each returns that one, unchanged.
    for (body, first) in [
        (action_body("u1", 0, 99.0), &default),
        (typed(action_body("u1", 0, 99.0), "morning"), &morning),
        (typed(action_body("u1", 0, 99.0), "evening"), &evening),
    ] {
        assert_eq!(&app.post_expecting("/api/v1/action", &body, 200), first);
    }
    // An explicit "default" is the default type.
    let explicit = app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 99.0), "default"),
        200,
    );
    assert_eq!(explicit, default);
}

#[test]
fn uploads_belong_to_the_decision_of_their_type() {
    let app = spawn_app();
    app.add_user("u1");
    let morning = app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 20.0), "morning"),
        201,
    );

    // An upload naming the morning decision with another action contradicts it.
    let mut contradicting = upload_for("u1", 0, &morning, Some("morning"));
    contradicting["data"]["action"] = json!(1 - morning["action"].as_i64().unwrap());
    app.post_expecting("/api/v1/upload_data", &contradicting, 409);
    app.post_expecting(
        "/api/v1/upload_data",
        &upload_for("u1", 0, &morning, Some("morning")),
        201,
    );
    // A second upload of the same key is refused; the default type's index 0 is another key.
    let again = app.post_expecting(
        "/api/v1/upload_data",
        &upload_for("u1", 0, &morning, Some("morning")),
        400,
    );
    assert_eq!(again, error("Decision index already exists."));
    app.post_expecting("/api/v1/upload_data", &upload_body("u1", 0, 20.0), 201);
    // Each upload closes its own key to decisions only.
    let closed = app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 20.0), "morning"),
        400,
    );
    assert_eq!(closed, error("Decision index already exists."));
    app.post_expecting(
        "/api/v1/action",
        &typed(action_body("u1", 0, 20.0), "evening"),
        201,
    );
}

#[test]
fn malformed_decision_types_and_availability_are_refused() {
    let app = spawn_app();
    app.add_user("u1");
    let base = action_body("u1", 0, 20.0);
    let cases = [
        (
            with(&base, None, "decision_type", Some(json!(7))),
            400,
            "decision_type must be a string.",
        ),
        (
            with(&base, None, "decision_type", Some(json!(""))),
            400,
            "decision_type must be 1 to 64 characters long.",
        ),
        (
            with(&base, None, "decision_type", Some(json!("a".repeat(65)))),
            400,
            "decision_type must be 1 to 64 characters long.",
        ),
        (
            with(&base, None, "decision_type", Some(json!("two words"))),
            400,
            "decision_type may only hold ASCII letters, digits, '_', '-' and '.'.",
        ),
        (
            with(&base, None, "available", Some(json!("no"))),
            400,
            "available must be true or false.",
        ),
        (
            with(&base, None, "available", Some(json!(0))),
            400,
            "available must be true or false.",
        ),
        (
            with(&base, None, "unavailable_reason", Some(json!("driving"))),
            400,
            "unavailable_reason is only allowed with available: false.",
        ),
        (
            unavailable(
                with(&base, None, "unavailable_reason", Some(json!(3))),
                None,
            ),
            400,
            "unavailable_reason must be a string.",
        ),
        (
            unavailable(base.clone(), Some(&"r".repeat(1025))),
            400,
            "unavailable_reason must be at most 1024 bytes long.",
        ),
        (
            unavailable(base.clone(), Some("line\nbreak")),
            400,
            "unavailable_reason must not contain control characters.",
        ),
    ];
    check_cases(&app, "/api/v1/action", &cases);
    let upload = upload_body("u1", 0, 20.0);
    check_cases(
        &app,
        "/api/v1/upload_data",
        &[(
            with(&upload, None, "decision_type", Some(json!(["morning"]))),
            400,
            "decision_type must be a string.",
        )],
    );
    // Nothing was stored: the decision can still be made.
    app.post_expecting("/api/v1/action", &base, 201);
}

#[test]
fn an_unavailable_decision_is_stored_without_a_draw() {
    let app = spawn_app();
    app.add_user("u1");

    // No temperature: an unavailable participant's context need not satisfy the algorithm.
    let body = json!({
        "user_id": "u1",
        "timestamp": TIMESTAMP,
        "decision_idx": 0,
        "available": false,
        "unavailable_reason": "driving",
        "context": {"screen": "off"},
    });
    let answer = app.post_expecting("/api/v1/action", &body, 201);

    assert_eq!(answer["action"], 0);
    assert_eq!(answer["action_prob"], 0.0);
    assert_eq!(answer["available"], false);
    assert_eq!(answer["unavailable_reason"], "driving");
    assert_eq!(answer["state"], json!([]));
    // Stored as such: a repeat returns it, even one that now claims availability (whose
    // context must then satisfy the algorithm).
    assert_eq!(app.post_expecting("/api/v1/action", &body, 200), answer);
    let repeat = with(
        &action_body("u1", 0, 20.0),
        None,
        "available",
        Some(json!(true)),
    );
    assert_eq!(app.post_expecting("/api/v1/action", &repeat, 200), answer);
    // A usable context gives the state all the same; a reason is optional.
    let with_state = app.post_expecting(
        "/api/v1/action",
        &unavailable(action_body("u1", 1, 21.5), None),
        201,
    );
    assert_eq!(with_state["state"], json!([21.5]));
    assert_eq!(with_state["available"], false);
    assert!(
        with_state.get("unavailable_reason").is_none(),
        "{with_state}"
    );
    // An available decision still needs a usable context.
    let refused = app.post_expecting(
        "/api/v1/action",
        &json!({"user_id": "u1", "timestamp": TIMESTAMP, "decision_idx": 2, "context": {}}),
        400,
    );
    assert_eq!(refused["status"], "failed");
}

/// Waits for the update asked with `callbacks` and returns its status.
fn run_update(app: &TestApp, callbacks: &CallbackReceiver) -> Value {
    let id = app.request_update(callbacks.url());
    let callback = callbacks.next();
    assert_eq!(callback["status"], "completed", "{callback}");
    app.update_status(&id)
}

#[test]
fn study_data_of_unavailable_decisions_never_reaches_an_update() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    // Cold, so flat_prob would raise its probability if it saw it.
    let off = app.post_expecting(
        "/api/v1/action",
        &unavailable(action_body("u1", 0, 5.0), Some("asleep")),
        201,
    );
    let mut upload = upload_for("u1", 0, &off, None);
    upload["data"]["context"] = json!({"temperature": 5.0});
    // The upload must carry the logged action 0 and probability 0.
    app.post_expecting("/api/v1/upload_data", &upload, 201);

    let first = run_update(&app, &callbacks);
    assert_eq!(first["provenance"]["rows_read"], 0, "{first}");
    assert_eq!(app.current_parameters(), (2, 0.5));

    let on = app.post_expecting("/api/v1/action", &action_body("u1", 1, 5.0), 201);
    app.post_expecting("/api/v1/upload_data", &upload_for("u1", 1, &on, None), 201);
    let second = run_update(&app, &callbacks);
    assert_eq!(second["provenance"]["rows_read"], 1, "{second}");
}
