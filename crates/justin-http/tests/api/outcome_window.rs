//! Missing outcomes through HTTP: with `[update] missing_outcomes = "default_reward"`, an update
//! learns from every decision past the outcome window that has no upload, with the default
//! reward; its provenance counts them, the export names the update that imputed each one, and a
//! late upload is still stored and used by the next update.

use justin_core::JsonObject;
use serde_json::{json, Value};

use crate::export::{export_rows, field};
use crate::helpers::{spawn_app_with, CallbackReceiver, TestApp, TIMESTAMP};

fn obj(v: Value) -> JsonObject {
    v.as_object().cloned().unwrap()
}

/// A `thompson` study on `steps` whose updates impute `-1.5` for a decision without an upload
/// `window_mins` after it was made.
fn app(window_mins: u64) -> TestApp {
    let app = spawn_app_with(|config| {
        config.algorithm.name = "thompson".into();
        config.algorithm.options = obj(json!({ "features": ["steps"] }));
        config.algorithm.priors = obj(json!({ "variance": 1.0, "noise_variance": 1.0 }));
        config.update.missing_outcomes = "default_reward".into();
        config.update.outcome_window_mins = Some(window_mins);
        config.update.default_reward = Some(-1.5);
    });
    app.add_user("p1");
    app
}

/// Decides `idx` for p1 with `steps`; the answer.
fn decide(app: &TestApp, idx: i64, steps: f64) -> Value {
    let (status, answer) = app.post_json(
        "/api/v1/action",
        &json!({ "user_id": "p1", "timestamp": TIMESTAMP, "decision_idx": idx,
                 "context": { "steps": steps } }),
    );
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Uploads the outcome of decision `idx` (answered `answer`), with `reward`.
fn upload(app: &TestApp, idx: i64, steps: f64, answer: &Value, reward: f64) {
    let (status, body) = app.post_json(
        "/api/v1/upload_data",
        &json!({ "user_id": "p1", "timestamp": TIMESTAMP, "decision_idx": idx, "data": {
            "context": { "steps": steps }, "action": answer["action"],
            "action_prob": answer["action_prob"], "state": [1.0, steps],
            "outcome": { "reward": reward } } }),
    );
    assert_eq!(status, 201, "{body}");
}

/// Runs an update to its end; its status.
fn update(app: &TestApp) -> Value {
    let callbacks = CallbackReceiver::start();
    let id = app.request_update(callbacks.url());
    assert_eq!(callbacks.next()["status"], "completed");
    app.update_status(&id)
}

/// The export's row of decision `idx`.
fn row(app: &TestApp, idx: i64) -> Vec<(String, Option<String>)> {
    export_rows(app)
        .into_iter()
        .find(|r| field(r, "decision_idx") == Some(idx.to_string().as_str()))
        .unwrap_or_else(|| panic!("no export row for decision {idx}"))
}

/// The export row's imputation: the version that imputed it and the reward, as written.
fn imputed(app: &TestApp, idx: i64) -> (Option<String>, Option<f64>) {
    let row = row(app, idx);
    (
        field(&row, "reward_imputed_in_version").map(str::to_owned),
        field(&row, "imputed_reward").map(|r| r.parse().unwrap()),
    )
}

#[test]
fn an_update_learns_from_decisions_past_the_window_with_the_default_reward() {
    // A window of 0: every decision made before the update started is past it.
    let app = app(0);
    let answers: Vec<Value> = (1..=4)
        .map(|i| decide(&app, i, f64::from(i as u8)))
        .collect();
    upload(&app, 1, 1.0, &answers[0], 2.0);
    upload(&app, 2, 2.0, &answers[1], 0.5);

    let status = update(&app);
    assert_eq!(status["parameter_version"], 2, "{status}");
    let provenance = &status["provenance"];
    assert_eq!(
        provenance["rows_read"], 4,
        "2 uploads and 2 imputed: {status}"
    );
    assert_eq!(provenance["imputed"]["rows"], 2, "{status}");
    assert_eq!(provenance["imputed"]["default_reward"], -1.5, "{status}");
    assert!(provenance["imputed"]["decided_by"].is_string(), "{status}");

    for idx in [3, 4] {
        assert_eq!(imputed(&app, idx), (Some("2".into()), Some(-1.5)), "{idx}");
        let row = row(&app, idx);
        // Nothing was uploaded: the uploaded columns stay empty.
        assert_eq!(field(&row, "reward"), None);
        assert_eq!(field(&row, "outcome"), None);
        assert_eq!(field(&row, "used_in_update"), Some("false"));
    }
    for idx in [1, 2] {
        assert_eq!(imputed(&app, idx), (None, None), "{idx}");
    }

    // The outcome of decision 3 arrives late: it is stored, the export keeps the update that
    // imputed it, and the next update learns from the upload instead.
    upload(&app, 3, 3.0, &answers[2], 1.0);
    assert_eq!(imputed(&app, 3), (Some("2".into()), Some(-1.5)));
    let late = row(&app, 3);
    assert_eq!(field(&late, "reward"), Some("1.0"));
    assert_eq!(field(&late, "used_in_update"), Some("false"));

    let status = update(&app);
    assert_eq!(status["provenance"]["rows_read"], 4, "{status}");
    assert_eq!(
        status["provenance"]["imputed"]["rows"], 1,
        "only 4: {status}"
    );
    let late = row(&app, 3);
    assert_eq!(field(&late, "used_in_version"), Some("3"));
    assert_eq!(imputed(&app, 3), (Some("2".into()), Some(-1.5)));
    assert_eq!(
        imputed(&app, 4),
        (Some("2".into()), Some(-1.5)),
        "the first update that imputed it"
    );
}

#[test]
fn decisions_within_the_window_wait_for_their_outcome() {
    let app = app(60);
    let answer = decide(&app, 1, 1.0);
    upload(&app, 1, 1.0, &answer, 1.0);
    decide(&app, 2, 2.0);

    let status = update(&app);
    assert_eq!(status["provenance"]["rows_read"], 1, "{status}");
    assert_eq!(status["provenance"]["imputed"]["rows"], 0, "{status}");
    assert_eq!(imputed(&app, 2), (None, None));
}

#[test]
fn by_default_an_update_leaves_missing_outcomes_out() {
    let app = spawn_app_with(|config| {
        config.algorithm.name = "thompson".into();
        config.algorithm.options = obj(json!({ "features": ["steps"] }));
        config.algorithm.priors = obj(json!({ "variance": 1.0, "noise_variance": 1.0 }));
    });
    app.add_user("p1");
    let answer = decide(&app, 1, 1.0);
    upload(&app, 1, 1.0, &answer, 1.0);
    decide(&app, 2, 2.0);

    let status = update(&app);
    assert_eq!(status["provenance"]["rows_read"], 1, "{status}");
    assert!(status["provenance"].get("imputed").is_none(), "{status}");
    assert_eq!(imputed(&app, 2), (None, None));
}
