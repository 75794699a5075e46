//! `GET /metrics`: the counters move by what real requests, updates and callbacks did, the
//! labels never name a participant, the keys guard it, and `[metrics] enabled = false` turns it
//! off.

use std::collections::BTreeMap;

use justin_http::config::{ApiKeyConfig, Config, KeyAccess};
use serde_json::json;

use crate::helpers::{action_body, spawn_app_with, upload_body_for, TestApp, TIMESTAMP, WAIT};

/// A participant id that must never show in the metrics.
const USER: &str = "participant-zq7x";

/// What one GET of `/metrics` got: status, content type and body.
fn get_metrics(base_url: &str, authorization: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into();
    let mut request = agent.get(format!("{base_url}/metrics"));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.call().expect("an answer from /metrics");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.body_mut().read_to_string().unwrap();
    (status, content_type, body)
}

/// Every sample of the exposition, `name{labels}` to value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (name, value) = line.rsplit_once(' ').expect("a sample is `name value`");
            (name.to_owned(), value.parse().expect("a numeric value"))
        })
        .collect()
}

/// The samples of a scrape that must answer 200, and its text.
pub(crate) fn scrape(app: &TestApp) -> (BTreeMap<String, f64>, String) {
    let (status, content_type, text) = get_metrics(app.base_url(), None);
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert!(text.ends_with("# EOF\n"), "{text}");
    (samples(&text), text)
}

/// Scrapes until `done` holds for the samples, for at most [`WAIT`].
fn scrape_until(
    app: &TestApp,
    what: &str,
    done: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (now, text) = scrape(app);
        if done(&now) {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} within {WAIT:?}; last scrape:\n{text}"
        );
        std::thread::yield_now();
    }
}

/// How much the sample `name` moved from `before` to `after` (absent counts as 0).
fn moved(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>, name: &str) -> f64 {
    after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0)
}

fn requests(method: &str, route: &str, status: u16) -> String {
    format!(
        "justin_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}}"
    )
}

fn decisions(kind: &str) -> String {
    format!("justin_decisions_total{{kind=\"{kind}\"}}")
}

#[test]
fn requests_decisions_and_uploads_are_counted_by_kind_without_naming_anyone() {
    let app = spawn_app_with(|config| {
        config.algorithm.warmup.probability = Some(0.5);
        config.algorithm.warmup.first_decisions = Some(1);
    });
    let (before, _) = scrape(&app);

    app.add_user(USER);
    let (status, warm) = app.action(USER, 0, 23.0);
    assert_eq!(status, 201, "{warm}");
    assert_eq!(warm["policy"], "warmup", "{warm}");
    let (status, learned) = app.action(USER, 1, 23.0);
    assert_eq!(status, 201, "{learned}");
    assert_eq!(app.action(USER, 1, 23.0).0, 200);
    let mut unavailable = action_body(USER, 2, 23.0);
    unavailable["available"] = json!(false);
    let (status, off) = app.post_json("/api/v1/action", &unavailable);
    assert_eq!(status, 201, "{off}");
    let host = json!({
        "user_id": USER, "timestamp": TIMESTAMP, "decision_idx": 3,
        "context": { "temperature": 23 }, "action": 1, "action_prob": 0.5,
        "decided_by": "app",
    });
    app.post_expecting("/api/v1/host_decision", &host, 201);
    // Decision time long past: late. Decision time now: on time.
    app.post_expecting(
        "/api/v1/upload_data",
        &upload_body_for(USER, 0, 23.0, &warm),
        201,
    );
    let mut on_time = upload_body_for(USER, 1, 23.0, &learned);
    on_time["timestamp"] = json!(chrono::Utc::now().to_rfc3339());
    app.post_expecting("/api/v1/upload_data", &on_time, 201);
    // The unavailable decision was action 0 with probability 0: this contradicts it.
    let mut contradicting = upload_body_for(USER, 2, 23.0, &off);
    contradicting["data"]["action"] = json!(1);
    contradicting["data"]["action_prob"] = json!(0.5);
    app.post_expecting("/api/v1/upload_data", &contradicting, 409);
    assert_eq!(app.get(&format!("/api/v1/users/{USER}")).0, 200);
    assert_eq!(app.get(&format!("/api/v1/users/{USER}/nothing")).0, 404);
    assert_eq!(app.get("/no/such/route").0, 404);
    let (after, text) = scrape(&app);

    for (kind, expected) in [
        ("warmup", 1.0),
        ("learned", 1.0),
        ("repeated", 1.0),
        ("unavailable", 1.0),
        ("host", 1.0),
        ("fallback", 0.0),
    ] {
        assert_eq!(
            moved(&before, &after, &decisions(kind)),
            expected,
            "{kind}\n{text}"
        );
    }
    let uploads = |outcome: &str| format!("justin_uploads_total{{outcome=\"{outcome}\"}}");
    assert_eq!(moved(&before, &after, &uploads("stored")), 2.0, "{text}");
    assert_eq!(moved(&before, &after, &uploads("refused")), 1.0, "{text}");
    assert_eq!(
        moved(&before, &after, "justin_late_uploads_total"),
        1.0,
        "{text}"
    );
    for (method, route, status, expected) in [
        ("POST", "/api/v1/add_user", 201, 1.0),
        ("POST", "/api/v1/action", 201, 3.0),
        ("POST", "/api/v1/action", 200, 1.0),
        ("POST", "/api/v1/host_decision", 201, 1.0),
        ("POST", "/api/v1/upload_data", 201, 2.0),
        ("POST", "/api/v1/upload_data", 409, 1.0),
        ("GET", "/api/v1/users/{user_id}", 200, 1.0),
        ("GET", "unmatched", 404, 2.0),
        ("GET", "/metrics", 200, 1.0),
    ] {
        assert_eq!(
            moved(&before, &after, &requests(method, route, status)),
            expected,
            "{method} {route} {status}\n{text}"
        );
    }
    let latency =
        "justin_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/action\"}";
    assert_eq!(moved(&before, &after, latency), 4.0, "{text}");
    assert!(after["justin_pool_wait_seconds_count"] > before["justin_pool_wait_seconds_count"]);
    assert_eq!(after["justin_parameter_version"], 1.0, "{text}");
    assert!(
        !text.contains(USER),
        "no participant id in any label:\n{text}"
    );
    assert!(
        !text.contains("nothing"),
        "no path as sent in any label:\n{text}"
    );
}

#[test]
fn a_fallback_decision_is_counted_as_one() {
    let app = crate::trial::failing_app(Some(0.2));
    let (before, _) = scrape(&app);
    app.add_user(USER);

    let (status, answer) = app.action(USER, 0, 150.0);

    assert_eq!(status, 201, "{answer}");
    assert_eq!(answer["policy"], "fallback", "{answer}");
    let (after, text) = scrape(&app);
    assert_eq!(
        moved(&before, &after, &decisions("fallback")),
        1.0,
        "{text}"
    );
    assert_eq!(moved(&before, &after, &decisions("learned")), 0.0, "{text}");
}

/// A URL nothing listens on: the port of a listener just closed.
fn unreachable_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("http://127.0.0.1:{port}/callback")
}

#[test]
fn an_update_and_its_undeliverable_callback_are_counted() {
    let app = spawn_app_with(|config: &mut Config| {
        config.backup.enabled = false;
        config.update.callback_attempts = 3;
        config.update.callback_backoff_ms = 10;
        config.update.callback_timeout_secs = 2;
        config.update.poll_interval_ms = 20;
    });
    app.add_user(USER);
    for idx in 0..3 {
        let (status, answer) = app.action(USER, idx, 20.0);
        assert_eq!(status, 201, "{answer}");
        app.post_expecting(
            "/api/v1/upload_data",
            &upload_body_for(USER, idx, 20.0, &answer),
            201,
        );
    }
    let (before, _) = scrape(&app);

    let id = app.request_update(&unreachable_url());

    let status = app.wait_for_update(&id, |body| body["callback"]["status"] != "pending");
    assert_eq!(status["update_status"], "completed", "{status}");
    assert_eq!(status["callback"]["status"], "failed", "{status}");
    let completed = "justin_updates_total{outcome=\"completed\"}";
    let after = scrape_until(&app, "the update is counted", |now| {
        moved(&before, now, completed) >= 1.0
    });
    assert_eq!(moved(&before, &after, completed), 1.0);
    assert_eq!(
        moved(&before, &after, "justin_updates_total{outcome=\"failed\"}"),
        0.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "justin_update_duration_seconds_count{outcome=\"completed\"}"
        ),
        1.0
    );
    assert_eq!(moved(&before, &after, "justin_update_rows_read_total"), 3.0);
    assert_eq!(
        moved(
            &before,
            &after,
            "justin_callback_deliveries_total{outcome=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "justin_callback_deliveries_total{outcome=\"delivered\"}"
        ),
        0.0
    );
    assert_eq!(moved(&before, &after, "justin_callback_retries_total"), 2.0);
    assert_eq!(after["justin_parameter_version"], 2.0);
}

#[test]
fn a_metrics_key_scrapes_and_nothing_else() {
    const METRICS_KEY: &str = "metrics-key-0123456789abcdef";
    const APP_KEY: &str = "app-key-0123456789abcdef";
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![
            ApiKeyConfig {
                name: "study-app".into(),
                sha256: None,
                key: Some(APP_KEY.into()),
                access: KeyAccess::Full,
            },
            ApiKeyConfig {
                name: "scraper".into(),
                sha256: None,
                key: Some(METRICS_KEY.into()),
                access: KeyAccess::Metrics,
            },
        ];
    });
    let bearer = format!("Bearer {METRICS_KEY}");

    let (status, _, text) = get_metrics(app.base_url(), Some(&bearer));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("justin_decisions_total"), "{text}");
    let (status, _, text) = get_metrics(app.base_url(), None);
    assert_eq!(status, 401, "{text}");
    let refused = app.client().send(
        "POST",
        "/api/v1/action",
        Some(&action_body(USER, 0, 23.0)),
        &[("Authorization", &bearer)],
    );
    assert_eq!(refused.status, 403, "{}", refused.json);
    assert_eq!(
        refused.json["message"],
        justin_http::auth::METRICS_ONLY_MESSAGE
    );
    // The refusals are counted, under their route.
    let (_, _, text) = get_metrics(app.base_url(), Some(&bearer));
    let now = samples(&text);
    assert_eq!(now[&requests("GET", "/metrics", 401)], 1.0, "{text}");
    assert_eq!(now[&requests("POST", "/api/v1/action", 403)], 1.0, "{text}");
}

#[test]
fn with_metrics_off_nothing_is_served_at_metrics() {
    let app = spawn_app_with(|config| config.metrics.enabled = false);
    app.add_user(USER);

    let (status, _, text) = get_metrics(app.base_url(), None);

    assert_eq!(status, 404, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body, json!({ "status": "failed", "message": "Not found." }));
    assert_eq!(app.action(USER, 0, 23.0).0, 201);
}
