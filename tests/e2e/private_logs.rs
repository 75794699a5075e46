//! The data is health data: by default no context or outcome sent to the binary reaches any
//! log file, standard output or standard error; `logging.log_bodies = true` writes request
//! bodies into the access log, after a start-up warning, and so shows that the check can fail.

use justin_e2e::{env_for, files_under, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

/// Values distinctive enough that finding one anywhere can only mean a leak.
const CONTEXT_MARKER: &str = "ctx-marker-mood-8d1f0c";
/// Large enough that its rounded forms cannot be a clock reading or a latency in the logs.
const CONTEXT_NUMBER: f64 = 8_671.123_456_789;
const OUTCOME_MARKER: &str = "outcome-marker-steps-5b7e2a";
const OUTCOME_NUMBER: i64 = 918_273_645;

/// Runs a study's requests (some refused) carrying the markers through a `justin serve` with
/// `env`, stops it, and returns every file of its log directory and its standard output and
/// error, each with where it came from.
fn serve_marked_requests(env: &[(&str, String)]) -> Vec<(String, String)> {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = [env_for(&db), env.to_vec()].concat();
    // Debug level everywhere: whatever any part writes at any level is checked.
    env.retain(|(key, _)| *key != "JUSTIN_LOGGING__LEVEL");
    env.push(("JUSTIN_LOGGING__LEVEL", "debug".into()));
    let served = Served::start(dir.path(), &env);
    let receiver = CallbackReceiver::start();

    let (status, body) = served.post("/api/v1/add_user", &json!({ "user_id": "p1" }));
    assert_eq!(status, 201, "{body}");
    let context = json!({ "temperature": CONTEXT_NUMBER, "mood": CONTEXT_MARKER });
    let (status, decision) = served.post(
        "/api/v1/action",
        &json!({
            "user_id": "p1",
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 0,
            "context": context,
        }),
    );
    assert_eq!(status, 201, "{decision}");
    let upload = |action: &Value, outcome: Value| {
        json!({
            "user_id": "p1",
            "timestamp": "2025-01-01T13:00:00Z",
            "decision_idx": 0,
            "data": {
                "context": context,
                "action": action,
                "action_prob": decision["action_prob"],
                "state": decision["state"],
                "outcome": outcome,
            },
        })
    };
    let outcome = json!({ "clicks": OUTCOME_NUMBER, "note": OUTCOME_MARKER });
    let (status, body) = served.post(
        "/api/v1/upload_data",
        &upload(&decision["action"], outcome.clone()),
    );
    assert_eq!(status, 201, "{body}");
    // Refused requests carrying the markers, an upload for an unknown participant (404) and a
    // malformed decision request (400), are answered and logged like the others.
    let mut stranger = upload(&decision["action"], outcome);
    stranger["user_id"] = json!("nobody");
    let (status, body) = served.post("/api/v1/upload_data", &stranger);
    assert_eq!(status, 404, "{body}");
    let (status, body) = served.post(
        "/api/v1/action",
        &json!({ "user_id": "p1", "decision_idx": "x", "context": context }),
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = served.post(
        "/api/v1/update",
        &json!({ "timestamp": "2025-01-01T14:00:00Z", "callback_url": receiver.url() }),
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(receiver.next()["status"], "completed");

    let out = served.terminate_with_output();
    assert!(out.status.success(), "{}", out.stderr);
    let mut places: Vec<(String, String)> = files_under(&dir.path().join("logs"))
        .into_iter()
        .map(|(path, text)| (path.display().to_string(), text))
        .collect();
    assert!(
        places.iter().any(|(path, _)| path.ends_with("app.log"))
            && places.iter().any(|(path, _)| path.ends_with("rl.log")),
        "the log files were written: {places:?}"
    );
    places.push(("standard output".into(), out.stdout));
    places.push(("standard error".into(), out.stderr));
    places
}

fn markers() -> [String; 5] {
    [
        CONTEXT_MARKER.to_owned(),
        CONTEXT_NUMBER.to_string(),
        // Values computed from one participant's context, rounded, are still that context.
        format!("{CONTEXT_NUMBER:.1}"),
        OUTCOME_MARKER.to_owned(),
        OUTCOME_NUMBER.to_string(),
    ]
}

#[test]
fn contexts_and_outcomes_reach_no_log_by_default() {
    let places = serve_marked_requests(&[]);
    for (place, text) in &places {
        for marker in markers() {
            assert!(
                !text.contains(&marker),
                "{place} holds {marker:?}, sent in a request body:\n{text}"
            );
        }
        assert!(!text.contains("body="), "{place} logs a body:\n{text}");
    }
    let (_, app_log) = places
        .iter()
        .find(|(place, _)| place.ends_with("app.log"))
        .unwrap();
    assert!(
        app_log.contains("POST /api/v1/upload_data 404 "),
        "the refused requests were logged, without their bodies:\n{app_log}"
    );
}

#[test]
fn log_bodies_writes_request_bodies_after_a_warning() {
    let places = serve_marked_requests(&[("JUSTIN_LOGGING__LOG_BODIES", "true".into())]);
    let (_, app_log) = places
        .iter()
        .find(|(place, _)| place.ends_with("app.log"))
        .unwrap();
    for marker in markers() {
        assert!(
            app_log.contains(&marker),
            "with log_bodies, {marker:?} is in app.log:\n{app_log}"
        );
    }
    let warning = "logging.log_bodies = true: REQUEST BODIES, WHICH HOLD PARTICIPANTS' HEALTH DATA";
    assert!(app_log.contains(warning), "{app_log}");
    let upload = app_log
        .lines()
        .find(|line| line.contains("POST /api/v1/upload_data 201 "))
        .unwrap_or_else(|| panic!("no upload line:\n{app_log}"));
    assert!(
        upload.contains(" body=\"{") && upload.contains(OUTCOME_MARKER),
        "the body is on the request's own line: {upload}"
    );
}
