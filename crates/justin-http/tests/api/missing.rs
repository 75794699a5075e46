//! Missing context values through HTTP: `thompson` follows each feature's rule
//! (`[algorithm.options.missing]`): impute with a missing indicator, record the decision as not
//! available, or refuse as the template does. What was imputed shows in the stored state, and
//! a missing value comes back as sent.

use justin_core::JsonObject;
use serde_json::{json, Value};

use crate::export::{export_rows, field};
use crate::helpers::{error, spawn_app_with, CallbackReceiver, TestApp, TIMESTAMP};

fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap()
}

/// `steps` imputed by 0, `mood` by its mean (2 until an update), `sleep` not available, `hr`
/// refused: x = [1, steps, mood, sleep, hr, steps missing, mood missing].
fn app() -> TestApp {
    let app = spawn_app_with(|config| {
        config.algorithm.name = "thompson".into();
        config.algorithm.options = obj(json!({
            "features": ["steps", "mood", "sleep", "hr"],
            "missing": {
                "steps": { "impute": 0 },
                "mood": { "impute": "mean" },
                "sleep": "not_available",
                "hr": "refuse",
            },
        }));
        config.algorithm.priors = obj(json!({
            "variance": 1.0, "noise_variance": 1.0, "feature_means": { "mood": 2.0 },
        }));
    });
    app.add_user("p1");
    app
}

fn decide(app: &TestApp, idx: i64, context: Value) -> (u16, Value) {
    app.post_json(
        "/api/v1/action",
        &json!({ "user_id": "p1", "timestamp": TIMESTAMP, "decision_idx": idx,
                 "context": context }),
    )
}

fn upload(app: &TestApp, idx: i64, context: Value, state: Value, reward: f64) -> (u16, Value) {
    app.post_json(
        "/api/v1/upload_data",
        &json!({ "user_id": "p1", "timestamp": TIMESTAMP, "decision_idx": idx, "data": {
            "context": context, "action": 1, "action_prob": 0.5, "state": state,
            "outcome": { "reward": reward } } }),
    )
}

/// The export's row of decision `idx`.
fn row(app: &TestApp, idx: i64) -> Vec<(String, Option<String>)> {
    export_rows(app)
        .into_iter()
        .find(|r| field(r, "decision_idx") == Some(idx.to_string().as_str()))
        .unwrap_or_else(|| panic!("no export row for decision {idx}"))
}

fn json_field(row: &[(String, Option<String>)], name: &str) -> Value {
    serde_json::from_str(field(row, name).unwrap()).unwrap()
}

/// The row's stored state.
fn state(row: &[(String, Option<String>)]) -> Vec<f64> {
    serde_json::from_str(field(row, "state").unwrap()).unwrap()
}

#[test]
fn each_feature_follows_its_rule_for_a_missing_value() {
    let app = app();

    // Imputed: steps absent-as-null gets 0, mood absent gets the prior mean 2, each with its
    // indicator raised; the context is stored as sent, null included.
    let context = json!({ "steps": null, "sleep": 7, "hr": 60 });
    let (status, answer) = decide(&app, 1, context.clone());
    assert_eq!(status, 201, "{answer}");
    let p = answer["action_prob"].as_f64().unwrap();
    assert!((0.2..=0.8).contains(&p), "{answer}");
    assert_ne!(answer["available"], false, "{answer}");

    // Not available: no draw, the reason says why.
    let (status, answer) = decide(&app, 2, json!({ "steps": 5, "mood": 3, "hr": 60 }));
    assert_eq!(status, 201, "{answer}");
    assert_eq!(
        (
            &answer["action"],
            &answer["action_prob"],
            &answer["available"],
            &answer["unavailable_reason"]
        ),
        (
            &json!(0),
            &json!(0.0),
            &json!(false),
            &json!("missing_context")
        ),
        "{answer}"
    );
    // Asked again, the same stored decision.
    let (status, again) = decide(&app, 2, json!({ "steps": 5, "mood": 3, "hr": 60 }));
    assert_eq!((status, &again), (200, &answer));

    // Refused, with the template's message; nothing stored.
    let (status, answer) = decide(&app, 3, json!({ "steps": 5, "mood": 3, "sleep": 7 }));
    assert_eq!(
        (status, answer),
        (400, error("Invalid context. hr is required."))
    );
    let (status, answer) = decide(&app, 3, json!({ "steps": 5, "sleep": 7, "hr": null }));
    assert_eq!(
        (status, answer),
        (400, error("Invalid context. hr is required."))
    );

    let imputed = row(&app, 1);
    assert_eq!(json_field(&imputed, "context"), context);
    assert_eq!(state(&imputed), [1.0, 0.0, 2.0, 7.0, 60.0, 1.0, 1.0]);
    assert_eq!(field(&imputed, "available"), Some("true"));
    let skipped = row(&app, 2);
    assert_eq!(field(&skipped, "available"), Some("false"));
    assert_eq!(
        field(&skipped, "unavailable_reason"),
        Some("missing_context")
    );
    assert_eq!(field(&skipped, "policy"), Some("algorithm"));
    assert_eq!(
        export_rows(&app).len(),
        2,
        "the refused decision is not stored"
    );
}

#[test]
fn uploads_follow_the_rules_and_an_update_imputes_the_new_mean() {
    let app = app();
    // A context with an imputed or not-available value is accepted; a refused one is not.
    let (status, answer) = upload(
        &app,
        10,
        json!({ "steps": 5, "mood": 4, "sleep": 7, "hr": 60 }),
        json!([1, 5, 4, 7, 60, 0, 0]),
        1.0,
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = upload(
        &app,
        11,
        json!({ "steps": null, "mood": 6, "hr": 60 }),
        json!([1, 0, 6, 0, 60, 1, 0]),
        0.0,
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = upload(
        &app,
        12,
        json!({ "steps": 1, "mood": null, "sleep": 7, "hr": 60 }),
        json!([1, 1, 2, 7, 60, 0, 1]),
        0.0,
    );
    assert_eq!(status, 201, "{answer}");
    let (status, answer) = upload(
        &app,
        13,
        json!({ "steps": 1, "mood": 1, "sleep": 7 }),
        json!([1, 1, 1, 7, 60, 0, 0]),
        0.0,
    );
    assert_eq!(
        (status, answer),
        (400, error("Invalid context. hr is required."))
    );

    let callbacks = CallbackReceiver::start();
    app.request_update(callbacks.url());
    assert_eq!(callbacks.next()["status"], "completed");
    let (status, parameters) = app.get("/api/v1/parameters");
    assert_eq!(status, 200, "{parameters}");
    // (4 + 6) / 2: the mood imputed in decision 12 does not count.
    assert_eq!(
        parameters["parameters"]["feature_means"],
        json!({ "mood": 5.0 }),
        "{parameters}"
    );

    let (status, answer) = decide(&app, 20, json!({ "steps": 3, "sleep": 7, "hr": 60 }));
    assert_eq!(status, 201, "{answer}");
    let drawn = row(&app, 20);
    assert_eq!(field(&drawn, "parameter_version"), Some("2"));
    assert_eq!(state(&drawn), [1.0, 3.0, 5.0, 7.0, 60.0, 0.0, 1.0]);
}

#[test]
fn flat_prob_still_refuses_a_missing_value() {
    let app = spawn_app_with(|_| {});
    app.add_user("p1");
    let (status, answer) = app.post_json(
        "/api/v1/action",
        &json!({ "user_id": "p1", "timestamp": TIMESTAMP, "decision_idx": 1,
                 "context": { "humidity": 3 } }),
    );
    assert_eq!(
        (status, answer),
        (400, error("Invalid context. Temperature is required."))
    );
}
