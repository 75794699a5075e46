//! Study safety over the API: uploads checked against the logged decision, callbacks retried
//! until they arrive (or recorded as failed), the callback host allow-list, the status and
//! provenance of an update, and new parameters checked before they are published.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use justin_core::{
    Action, ActionChoice, Algorithm, AlgorithmError, BoxError, CallbackNotifier, CallbackPayload,
    CallbackPolicy, CallbackStatus, DecisionIdx, DecisionRng, JsonObject, Probability, Service,
    ServiceSettings, State, StudyRecord, UpdateOutcome, UpdateStatus, UserId,
};
use justin_http::config::Config;
use justin_http::startup::SystemClock;
use serde_json::{json, Value};

use crate::helpers::{
    error, rfc3339, spawn_app, spawn_app_with, sql_lines, CallbackReceiver, TestApp, TestDatabase,
    TIMESTAMP,
};

/// An `/upload_data` body for `(user, idx)` claiming `action` drawn with `action_prob`.
fn upload(user: &str, idx: i64, action: i64, action_prob: f64) -> Value {
    json!({
        "user_id": user,
        "timestamp": TIMESTAMP,
        "decision_idx": idx,
        "data": {
            "context": { "temperature": 20 },
            "action": action,
            "action_prob": action_prob,
            "state": [20],
            "outcome": { "clicks": 2 },
        },
    })
}

fn mismatch(uploaded: (i64, f64), logged: (i64, f64)) -> Value {
    error(&format!(
        "The uploaded action ({}) and action_prob ({}) must match the logged decision (action {}, action_prob {}).",
        uploaded.0, uploaded.1, logged.0, logged.1
    ))
}

#[test]
fn an_upload_must_match_the_logged_decision() {
    let app = spawn_app();
    app.add_user("u1");
    let (status, decision) = app.action("u1", 0, 20.0);
    assert_eq!(status, 201, "{decision}");
    let logged = decision["action"].as_i64().expect("action is an integer");
    let logged_prob = decision["action_prob"]
        .as_f64()
        .expect("action_prob is a number");
    let other = 1 - logged;

    let wrong_action = app.post_json("/api/v1/upload_data", &upload("u1", 0, other, logged_prob));
    let wrong_prob = app.post_json("/api/v1/upload_data", &upload("u1", 0, logged, 0.25));
    let matching = app.post_json("/api/v1/upload_data", &upload("u1", 0, logged, logged_prob));

    assert_eq!(
        wrong_action,
        (409, mismatch((other, logged_prob), (logged, logged_prob)))
    );
    assert_eq!(
        wrong_prob,
        (409, mismatch((logged, 0.25), (logged, logged_prob)))
    );
    // The refused uploads stored nothing, or this one would be a second upload (400).
    assert_eq!(
        matching,
        (
            201,
            json!({ "status": "success", "message": "Data uploaded successfully." })
        )
    );
}

#[test]
fn an_upload_without_a_logged_decision_is_stored_and_marked_as_such() {
    let app = spawn_app();
    app.add_user("u1");
    let (status, decision) = app.action("u1", 0, 20.0);
    assert_eq!(status, 201, "{decision}");
    let logged = decision["action"].as_i64().expect("action is an integer");

    let with_decision = app.post_json("/api/v1/upload_data", &upload("u1", 0, logged, 0.5));
    // No /action was asked for decision 1: any action and probability are taken as given.
    let without_decision = app.post_json("/api/v1/upload_data", &upload("u1", 1, 1, 0.9));

    assert_eq!(with_decision.0, 201, "{}", with_decision.1);
    assert_eq!(without_decision.0, 201, "{}", without_decision.1);
    let stored = sql_lines(
        app.database_url(),
        "SELECT CAST(decision_idx AS TEXT) || '|' || \
         CASE WHEN action_logged THEN 't' ELSE 'f' END AS out \
         FROM study_data WHERE user_id = 'u1' ORDER BY decision_idx",
    );
    assert_eq!(stored, ["0|t", "1|f"], "decision_idx|action_logged");
}

/// A configuration with quick callback retries and no backups.
fn quick_callbacks(config: &mut Config, attempts: u32) {
    config.backup.enabled = false;
    config.update.callback_attempts = attempts;
    config.update.callback_backoff_ms = 10;
    config.update.poll_interval_ms = 20;
}

/// Waits until the update's callback delivery has ended; its status.
fn delivery_ended(app: &TestApp, id: &str) -> Value {
    app.wait_for_update(id, |body| body["callback"]["status"] != "pending")
}

#[test]
fn a_callback_refused_twice_arrives_on_the_third_attempt() {
    let app = spawn_app_with(|config| quick_callbacks(config, 5));
    let receiver = CallbackReceiver::failing_first(2, 503);

    let id = app.request_update(receiver.url());

    let bodies = [receiver.next(), receiver.next(), receiver.next()];
    assert_eq!(bodies[0]["status"], "completed", "{}", bodies[0]);
    assert_eq!(bodies[0]["update_id"], id.as_str(), "{}", bodies[0]);
    assert!(
        bodies.iter().all(|b| *b == bodies[0]),
        "every attempt sends the same body: {bodies:?}"
    );
    let status = delivery_ended(&app, &id);
    assert_eq!(status["update_status"], "completed", "{status}");
    assert_eq!(status["callback"]["status"], "delivered", "{status}");
    assert_eq!(status["callback"]["attempts"], 3, "{status}");
    assert_eq!(status["callback"]["last_error"], Value::Null, "{status}");
    rfc3339(&status["callback"]["finished_at"], "callback.finished_at");
    assert_eq!(receiver.try_next(), None, "no attempt after the delivery");
}

#[test]
fn a_callback_that_never_arrives_is_recorded_as_failed_after_its_attempts() {
    let app = spawn_app_with(|config| quick_callbacks(config, 3));
    let receiver = CallbackReceiver::failing_first(usize::MAX, 500);

    let id = app.request_update(receiver.url());

    for attempt in 1..=3 {
        let body = receiver.next();
        assert_eq!(body["update_id"], id.as_str(), "attempt {attempt}: {body}");
    }
    let status = delivery_ended(&app, &id);
    assert_eq!(status["callback"]["status"], "failed", "{status}");
    assert_eq!(status["callback"]["attempts"], 3, "{status}");
    assert!(
        status["callback"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "the last error is recorded: {status}"
    );
    // The update itself went through; only its announcement failed.
    assert_eq!(status["update_status"], "completed", "{status}");
    assert_eq!(status["parameter_version"], 2, "{status}");
    assert_eq!(receiver.try_next(), None, "no fourth attempt");
}

#[test]
fn a_redirect_is_not_a_delivery() {
    let app = spawn_app_with(|config| quick_callbacks(config, 2));
    let receiver = CallbackReceiver::failing_first(usize::MAX, 302);

    let id = app.request_update(receiver.url());

    for attempt in 1..=2 {
        let body = receiver.next();
        assert_eq!(body["update_id"], id.as_str(), "attempt {attempt}: {body}");
    }
    let status = delivery_ended(&app, &id);
    assert_eq!(status["callback"]["status"], "failed", "{status}");
    assert!(
        status["callback"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("302")),
        "the redirect is the recorded error: {status}"
    );
}

#[test]
fn callbacks_go_only_to_allowed_hosts() {
    let app = spawn_app_with(|config| {
        quick_callbacks(config, 1);
        config.update.callback_allowed_hosts = vec!["127.0.0.1".into()];
    });
    let receiver = CallbackReceiver::start();

    let (refused_status, refused) = app.post_json(
        "/api/v1/update",
        &json!({ "timestamp": TIMESTAMP, "callback_url": "http://localhost:1/cb" }),
    );
    let accepted = app.request_update(receiver.url());

    assert_eq!(refused_status, 400, "{refused}");
    assert_eq!(refused["status"], "failed", "{refused}");
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("update.callback_allowed_hosts") && message.contains("localhost"),
        "the refusal names the host and the setting: {refused}"
    );
    assert_eq!(receiver.next()["update_id"], accepted.as_str());
    assert_eq!(
        sql_lines(
            app.database_url(),
            "SELECT CAST(count(*) AS TEXT) AS out FROM model_update_requests"
        ),
        ["1"],
        "the refused request was not stored"
    );
}

fn is_lower_hex_sha256(text: &str) -> bool {
    text.len() == 64 && text.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

#[test]
fn a_completed_update_shows_its_status_and_provenance() {
    let mut effective: Option<Config> = None;
    let app = spawn_app_with(|config| {
        quick_callbacks(config, 3);
        config.backup.enabled = true;
        effective = Some(config.clone());
    });
    let effective = effective.expect("the configuration was seen");
    let receiver = CallbackReceiver::start();
    app.add_user("u1");
    app.add_user("u2");
    app.upload("u1", 0, 20.0);
    app.upload("u1", 1, 21.0);
    app.upload("u2", 0, 22.0);

    let id = app.request_update(receiver.url());

    assert_eq!(receiver.next()["status"], "completed");
    let status = delivery_ended(&app, &id);
    assert_eq!(status["update_status"], "completed", "{status}");
    assert_eq!(status["attempts"], 1, "{status}");
    assert_eq!(status["parameter_version"], 2, "{status}");
    assert_eq!(status["error"], Value::Null, "{status}");
    assert_eq!(status["callback"]["status"], "delivered", "{status}");
    assert_eq!(status["callback"]["url"], receiver.url(), "{status}");
    let received = rfc3339(&status["received_at"], "received_at");
    let started = rfc3339(&status["started_at"], "started_at");
    let finished = rfc3339(&status["finished_at"], "finished_at");
    assert!(received <= started && started <= finished, "{status}");

    let provenance = &status["provenance"];
    assert_eq!(
        provenance["service_version"],
        env!("CARGO_PKG_VERSION"),
        "{provenance}"
    );
    assert_eq!(provenance["algorithm"], "flat_prob", "{provenance}");
    let hash = provenance["config_hash"].as_str().unwrap_or_default();
    assert!(is_lower_hex_sha256(hash), "{provenance}");
    assert_eq!(
        hash,
        effective.fingerprint(),
        "the running configuration's hash"
    );
    assert_eq!(provenance["rows_read"], 3, "{provenance}");
    // The provenance names the backup file (issue 4: "the backup file name"); it lives in
    // backup.dir.
    let tars: Vec<String> = std::fs::read_dir(app.backup_dir())
        .expect("the backup directory can be listed")
        .map(|entry| entry.expect("a readable entry").file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tar"))
        .collect();
    assert_eq!(tars.len(), 1, "one backup before the update: {tars:?}");
    assert_eq!(provenance["backup_file"], tars[0].as_str(), "{provenance}");
}

/// What the test algorithm's update produces.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Produces {
    /// A valid probability: the update completes.
    Valid,
    /// NaN, which JSON turns into null.
    NonFinite,
    /// A number where parameters must be an object.
    NotAnObject,
    /// A value its own validation refuses.
    OutOfRange,
    /// Nothing: the update panics.
    Panic,
}

/// An algorithm whose update produces what the test asks for.
#[derive(Debug)]
struct TestAlgorithm(Produces);

const REFUSAL: &str = "p must lie in [0, 1]";

impl Algorithm for TestAlgorithm {
    fn name(&self) -> &str {
        "test_algorithm"
    }

    fn initial_parameters(&self, _priors: &JsonObject) -> Result<Value, AlgorithmError> {
        Ok(json!({ "p": 0.5 }))
    }

    fn make_state(&self, _context: &JsonObject) -> Result<State, AlgorithmError> {
        State::new(vec![0.0]).map_err(|e| AlgorithmError::InvalidInput(e.to_string()))
    }

    fn get_action(
        &self,
        _user: &UserId,
        _state: &State,
        _parameters: &Value,
        _decision_idx: DecisionIdx,
        _rng: &mut DecisionRng,
    ) -> Result<ActionChoice, AlgorithmError> {
        Ok(ActionChoice {
            action: Action::Zero,
            action_prob: Probability::new(0.5).unwrap(),
        })
    }

    fn make_reward(
        &self,
        _user: &UserId,
        _state: &State,
        _action: Action,
        _outcome: &JsonObject,
    ) -> Result<f64, AlgorithmError> {
        Ok(0.0)
    }

    fn update(
        &self,
        _current: &Value,
        data: &mut dyn Iterator<Item = StudyRecord>,
    ) -> Result<Value, AlgorithmError> {
        data.for_each(drop);
        Ok(match self.0 {
            Produces::Valid => json!({ "p": 0.6 }),
            Produces::NonFinite => json!({ "p": f64::NAN }),
            Produces::NotAnObject => json!(0.6),
            Produces::OutOfRange => json!({ "p": 2.0 }),
            Produces::Panic => panic!("a bug in the algorithm"),
        })
    }

    fn validate_parameters(&self, values: &Value) -> Result<(), AlgorithmError> {
        match values["p"].as_f64() {
            Some(p) if !(0.0..=1.0).contains(&p) => {
                Err(AlgorithmError::InvalidParameters(REFUSAL.into()))
            }
            _ => Ok(()),
        }
    }
}

/// A notifier that records what it was asked to send and always succeeds.
#[derive(Default)]
struct RecordingNotifier(Mutex<Vec<(String, CallbackPayload)>>);

impl CallbackNotifier for RecordingNotifier {
    fn notify(&self, url: &str, payload: &CallbackPayload) -> Result<(), BoxError> {
        self.0
            .lock()
            .unwrap()
            .push((url.to_owned(), payload.clone()));
        Ok(())
    }
}

const CALLBACK_URL: &str = "http://127.0.0.1:9/callback";

/// Runs one update with the test algorithm on a fresh database; how it ended, the request as
/// stored, what the notifier was asked to send, and the store to inspect.
fn run_one_update(
    produces: Produces,
) -> (
    UpdateOutcome,
    justin_core::UpdateRequest,
    Vec<(String, CallbackPayload)>,
    TestDatabase,
) {
    let db = TestDatabase::create();
    let notifier = Arc::new(RecordingNotifier::default());
    let service = Service::new(
        db.store(),
        Arc::new(TestAlgorithm(produces)),
        Arc::new(SystemClock),
        notifier.clone(),
        ServiceSettings {
            seed: 42,
            backup_dir: None,
            update_attempts: 3,
            callbacks: CallbackPolicy {
                attempts: 1,
                first_backoff: Duration::from_millis(10),
                attempt_timeout: Duration::from_secs(1),
            },
            service_version: env!("CARGO_PKG_VERSION").into(),
            config_hash: "0".repeat(64),
            trial: justin_core::TrialSettings::default(),
            erasure_backup_dir: std::env::temp_dir(),
        },
    );
    assert_eq!(service.initialise(&JsonObject::new()).unwrap().version, 1);
    let request = service
        .request_update(
            Utc::now(),
            "2025-01-01T12:00:00".into(),
            CALLBACK_URL.into(),
        )
        .unwrap();

    let (finished, outcome) = service
        .run_next_update()
        .unwrap()
        .expect("the stored request is run");

    assert_eq!(finished.id, request.id);
    assert!(
        service.run_next_update().unwrap().is_none(),
        "nothing is left to run"
    );
    let sent = notifier.0.lock().unwrap().clone();
    (outcome, finished, sent, db)
}

#[test]
fn the_test_algorithm_publishes_valid_parameters() {
    // The harness of the two tests below, with parameters that pass every check.
    let (outcome, finished, sent, db) = run_one_update(Produces::Valid);

    assert_eq!(
        outcome,
        UpdateOutcome::Completed {
            parameter_version: 2
        }
    );
    assert_eq!(finished.status, UpdateStatus::Completed);
    let current = db.store().current_parameters().unwrap().unwrap();
    assert_eq!((current.version, current.values), (2, json!({ "p": 0.6 })));
    assert_eq!(sent.len(), 1, "{sent:?}");
}

/// Asserts the update failed with a reason containing `reason`, kept version 1 and told the
/// callback it failed.
fn assert_refused(produces: Produces, reason: &str) {
    let (outcome, finished, sent, db) = run_one_update(produces);

    match &outcome {
        UpdateOutcome::Failed { error } => {
            assert!(error.contains(reason), "{produces:?}: {error}");
        }
        UpdateOutcome::Completed { .. } | UpdateOutcome::Requeued => {
            panic!("{produces:?} was not refused: {outcome:?}")
        }
    }
    assert_eq!(finished.status, UpdateStatus::Failed);
    assert!(
        finished
            .error
            .as_deref()
            .is_some_and(|e| e.contains(reason)),
        "the reason is stored: {finished:?}"
    );
    assert_eq!(finished.parameter_version, None);
    let store = db.store();
    let current = store.current_parameters().unwrap().unwrap();
    assert_eq!((current.version, current.values), (1, json!({ "p": 0.5 })));
    assert_eq!(store.parameters(2).unwrap(), None);
    assert_eq!(
        sent,
        vec![(
            CALLBACK_URL.to_owned(),
            CallbackPayload::Failed {
                update_id: finished.id,
                message: "Model update failed.".into(),
            }
        )]
    );
    let stored = store.update_request(finished.id).unwrap().unwrap();
    assert_eq!(stored.callback.status, CallbackStatus::Delivered);
    assert_eq!(stored.callback.attempts, 1);
}

#[test]
fn an_algorithm_that_panics_fails_its_update() {
    assert_refused(
        Produces::Panic,
        "the algorithm panicked: a bug in the algorithm",
    );
}

#[test]
fn parameters_with_a_non_finite_number_are_not_published() {
    assert_refused(Produces::NonFinite, "non-finite");
}

#[test]
fn parameters_that_are_not_an_object_are_not_published() {
    assert_refused(Produces::NotAnObject, "not a JSON object");
}

#[test]
fn parameters_the_algorithm_refuses_are_not_published() {
    assert_refused(Produces::OutOfRange, REFUSAL);
}

#[test]
fn priors_the_algorithm_would_not_publish_stop_start_up() {
    let db = TestDatabase::create();
    let mut config = Config::default();
    config.database.url = db.url().to_owned();
    config.server.port = 0;
    // flat_prob publishes only probabilities in [0.2, 0.8].
    config
        .algorithm
        .priors
        .insert("probability_of_action".into(), json!(0.95));

    let refused = justin_http::startup::start(config, &justin_algos::builtin())
        .map(|_| ())
        .unwrap_err()
        .to_string();

    assert!(refused.contains("algorithm.priors"), "{refused}");
    assert!(refused.contains("0.95"), "{refused}");
}
