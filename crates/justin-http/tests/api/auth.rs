//! API keys: every `/api/v1` route answers 401 without a valid key once keys are configured,
//! the health routes stay open, start-up refuses an open API on a network address, and every
//! answer carries a request id.

use justin_http::auth::{digest_hex, INVALID_MESSAGE, MALFORMED_MESSAGE, MISSING_MESSAGE};
use justin_http::config::{ApiKeyConfig, Config, KeyAccess};
use justin_http::startup::{start, StartupError};
use serde_json::{json, Value};

use crate::helpers::{
    action_body, error, spawn_app_with, upload_body, CallbackReceiver, ScratchDir, TestApp,
    TestDatabase, TIMESTAMP, WAIT,
};

/// Configured as its SHA-256 digest, as a deployment should.
const APP_KEY: &str = "app-key-0123456789abcdef";
/// Configured as it is.
const DEV_KEY: &str = "dev-key-fedcba9876543210";

/// What one request got.
struct Answer {
    status: u16,
    json: Value,
    www_authenticate: Option<String>,
    request_id: Option<String>,
}

/// Sends `method path` with the JSON `body` (if any) and the extra headers.
fn send(
    base_url: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into();
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{base_url}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = match body {
        Some(body) => agent.run(
            request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .unwrap(),
        ),
        None => agent.run(request.body(()).unwrap()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let www_authenticate = header("www-authenticate");
    let request_id = header("x-request-id");
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: {status} is not JSON ({e}): {text:?}"));
    Answer {
        status,
        json,
        www_authenticate,
        request_id,
    }
}

fn keys() -> Vec<ApiKeyConfig> {
    vec![
        ApiKeyConfig {
            name: "study-app".into(),
            sha256: Some(digest_hex(APP_KEY)),
            key: None,
            access: KeyAccess::Full,
        },
        ApiKeyConfig {
            name: "developer".into(),
            sha256: None,
            key: Some(DEV_KEY.into()),
            access: KeyAccess::Full,
        },
    ]
}

fn spawn_with_keys() -> TestApp {
    spawn_app_with(|config| config.auth.api_keys = keys())
}

#[test]
fn every_api_route_needs_a_valid_key() {
    let app = spawn_with_keys();
    let receiver = CallbackReceiver::start();
    let update = json!({ "timestamp": TIMESTAMP, "callback_url": receiver.url() });
    let unknown_update = format!("/api/v1/update/{}", uuid::Uuid::new_v4());
    // Each route, and what it answers with the developer's key and then with the study app's
    // (the same request twice: a POST's second answer is a repeat's).
    let routes: Vec<(&str, &str, Option<Value>, [u16; 2])> = vec![
        (
            "POST",
            "/api/v1/add_user",
            Some(json!({ "user_id": "p1" })),
            [201, 400],
        ),
        (
            "POST",
            "/api/v1/action",
            Some(action_body("p1", 0, 20.0)),
            [201, 200],
        ),
        (
            "POST",
            "/api/v1/upload_data",
            Some(upload_body("p1", 1, 20.0)),
            [201, 400],
        ),
        ("GET", "/api/v1/users/p1/decisions/1", None, [200, 200]),
        ("POST", "/api/v1/update", Some(update), [202, 202]),
        ("GET", &unknown_update, None, [404, 404]),
        ("GET", "/api/v1/parameters", None, [200, 200]),
        ("GET", "/api/v1/parameters/1", None, [200, 200]),
        ("DELETE", "/api/v1/action", None, [405, 405]),
        ("PUT", "/api/v1/parameters", None, [405, 405]),
        ("GET", "/api/v1/no-such-route", None, [404, 404]),
        ("GET", "/api/v1", None, [404, 404]),
        // Percent-encoded, the router still takes it for /api/v1/parameters.
        ("GET", "/api/%761/parameters", None, [200, 200]),
    ];
    let digest_as_key = format!("Bearer {}", digest_hex(APP_KEY));
    let basic = format!("Basic {APP_KEY}");
    let dev = format!("Bearer {DEV_KEY}");
    let app_key = format!("Bearer {APP_KEY}");
    let refusals = [
        (None, MISSING_MESSAGE),
        (Some("Bearer wrong-key-0123456789"), INVALID_MESSAGE),
        (Some(digest_as_key.as_str()), INVALID_MESSAGE),
        (Some(basic.as_str()), MALFORMED_MESSAGE),
    ];
    let mut failures = Vec::new();
    for (method, path, body, statuses) in &routes {
        for (authorization, message) in refusals {
            let headers: Vec<_> = authorization
                .map(|a| ("Authorization", a))
                .into_iter()
                .collect();
            let got = send(app.base_url(), method, path, body.as_ref(), &headers);
            let challenge = got.www_authenticate.as_deref();
            if (got.status, &got.json, challenge)
                != (401, &error(message), Some(r#"Bearer realm="justin""#))
            {
                failures.push(format!(
                    "{method} {path} with {authorization:?}: got {} {} (WWW-Authenticate {challenge:?})",
                    got.status, got.json
                ));
            }
        }
        for (bearer, status) in [(&dev, statuses[0]), (&app_key, statuses[1])] {
            let headers = [("Authorization", bearer.as_str())];
            let got = send(app.base_url(), method, path, body.as_ref(), &headers);
            if got.status != status || got.www_authenticate.is_some() {
                failures.push(format!(
                    "{method} {path} with {bearer:?}: expected {status}, got {} {}",
                    got.status, got.json
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The updates accepted with a key ran and called back.
    assert_eq!(receiver.next()["status"], "completed");
    assert_eq!(receiver.next()["status"], "completed");
}

#[test]
fn health_routes_and_other_paths_stay_open() {
    let app = spawn_with_keys();
    for (path, status) in [("/healthz", 200), ("/readyz", 200), ("/no-such-page", 404)] {
        let got = send(app.base_url(), "GET", path, None, &[]);
        assert_eq!(got.status, status, "{path}: {}", got.json);
        assert!(got.www_authenticate.is_none(), "{path}");
    }
}

#[test]
fn without_keys_the_api_is_open_on_loopback() {
    let app = spawn_app_with(|_| {});
    let got = send(app.base_url(), "GET", "/api/v1/parameters", None, &[]);
    assert_eq!(got.status, 200, "{}", got.json);
}

/// A configuration on a fresh database; `start` on it is the code under test.
fn config_on(db: &TestDatabase, scratch: &ScratchDir) -> Config {
    let mut config = Config::default();
    config.database.url = db.url().to_owned();
    config.server.port = 0;
    config.backup.dir = scratch.path().to_path_buf();
    config
}

#[test]
fn an_open_api_on_a_network_address_is_refused() {
    let db = TestDatabase::create();
    let scratch = ScratchDir::new();
    let mut config = config_on(&db, &scratch);
    config.server.host = "0.0.0.0".into();
    let err = start(config.clone(), &justin_algos::builtin())
        .expect_err("an open API on 0.0.0.0 must not start");
    assert!(matches!(err, StartupError::Unprotected(_)), "{err:?}");
    let message = err.to_string();
    for hint in [
        "0.0.0.0",
        "auth.api_keys",
        "auth.allow_unauthenticated = true",
    ] {
        assert!(message.contains(hint), "{message:?} lacks {hint:?}");
    }

    // Asked for explicitly, it serves, open.
    let mut open = config.clone();
    open.auth.allow_unauthenticated = true;
    let server =
        start(open, &justin_algos::builtin()).unwrap_or_else(|e| panic!("allowed, it starts: {e}"));
    let loopback = format!("http://127.0.0.1:{}", server.addr().port());
    assert_eq!(
        send(&loopback, "GET", "/api/v1/parameters", None, &[]).status,
        200
    );
    server.stop();

    // With keys, it serves, protected.
    let mut protected = config;
    protected.auth.api_keys = keys();
    let server = start(protected, &justin_algos::builtin())
        .unwrap_or_else(|e| panic!("with keys, it starts: {e}"));
    let loopback = format!("http://127.0.0.1:{}", server.addr().port());
    assert_eq!(
        send(&loopback, "GET", "/api/v1/parameters", None, &[]).status,
        401
    );
    server.stop();
}

#[test]
fn unusable_keys_stop_start_up() {
    let db = TestDatabase::create();
    let scratch = ScratchDir::new();
    let mut config = config_on(&db, &scratch);
    config.auth.api_keys = vec![ApiKeyConfig {
        name: "study-app".into(),
        sha256: None,
        key: Some("short".into()),
        access: KeyAccess::Full,
    }];
    let err = start(config, &justin_algos::builtin()).expect_err("a short key must not start");
    let message = err.to_string();
    assert!(
        message.contains(r#"auth.api_keys[0] ("study-app")"#),
        "{message}"
    );
    assert!(!message.contains("short\""), "{message} shows the key");
}

#[test]
fn every_answer_carries_a_request_id() {
    let app = spawn_with_keys();
    let bearer = format!("Bearer {APP_KEY}");
    let mut seen = std::collections::HashSet::new();
    for (path, headers) in [
        ("/healthz", vec![]),
        ("/api/v1/parameters", vec![]),
        (
            "/api/v1/parameters",
            vec![("Authorization", bearer.as_str())],
        ),
        ("/no-such-page", vec![]),
    ] {
        let got = send(app.base_url(), "GET", path, None, &headers);
        let id = got
            .request_id
            .unwrap_or_else(|| panic!("{path}: no X-Request-Id"));
        assert!(uuid::Uuid::parse_str(&id).is_ok(), "{path}: {id}");
        assert!(seen.insert(id), "{path}: a request id was given twice");
    }
    let own = "proxy-7f3a.1_b";
    let got = send(
        app.base_url(),
        "GET",
        "/healthz",
        None,
        &[("X-Request-Id", own)],
    );
    assert_eq!(
        got.request_id.as_deref(),
        Some(own),
        "a well-formed id is kept"
    );
    let got = send(
        app.base_url(),
        "GET",
        "/healthz",
        None,
        &[("X-Request-Id", "no spaces=allowed")],
    );
    let id = got.request_id.unwrap();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "a malformed id is replaced: {id}"
    );
}

#[test]
fn logging_bodies_hands_them_on_unchanged() {
    let app = spawn_app_with(|config| {
        config.logging.log_bodies = true;
        config.server.max_body_bytes = 4096;
    });
    app.add_user("p1");
    let (status, decision) = app.action("p1", 0, 21.5);
    assert_eq!(status, 201, "{decision}");
    assert_eq!(decision["state"], json!([21.5]));
    let (status, body) = app.post_raw("/api/v1/add_user", "{\"user_id\": ", "application/json");
    assert_eq!(
        (status, body),
        (400, error("Request body must be valid JSON.")),
        "a broken body reaches the handler as it was"
    );
    let big = json!({ "user_id": "p2", "padding": "x".repeat(5000) });
    let (status, body) = app.post_json("/api/v1/add_user", &big);
    assert_eq!(
        (status, body),
        (413, error("Request body is larger than 4096 bytes."))
    );
}

#[test]
fn a_read_key_only_reads_and_a_metrics_key_only_scrapes() {
    const READ_KEY: &str = "read-key-0123456789abcdef";
    const METRICS_KEY: &str = "metrics-key-0123456789abcdef";
    let app = spawn_app_with(|config| {
        let mut all = keys();
        all.push(ApiKeyConfig {
            name: "team".into(),
            sha256: None,
            key: Some(READ_KEY.into()),
            access: KeyAccess::Read,
        });
        all.push(ApiKeyConfig {
            name: "scraper".into(),
            sha256: None,
            key: Some(METRICS_KEY.into()),
            access: KeyAccess::Metrics,
        });
        config.auth.api_keys = all;
    });
    let read = format!("Bearer {READ_KEY}");
    let metrics = format!("Bearer {METRICS_KEY}");

    let answer = send(
        app.base_url(),
        "GET",
        "/api/v1/parameters",
        None,
        &[("Authorization", &read)],
    );
    assert_eq!(answer.status, 200);
    let body = json!({ "user_id": "p1" });
    let answer = send(
        app.base_url(),
        "POST",
        "/api/v1/add_user",
        Some(&body),
        &[("Authorization", &read)],
    );
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json,
        json!({ "status": "failed", "message": justin_http::auth::READ_ONLY_MESSAGE })
    );
    // Nothing was registered by the refused request.
    let answer = send(
        app.base_url(),
        "GET",
        "/api/v1/users/p1",
        None,
        &[("Authorization", &read)],
    );
    assert_eq!(answer.status, 404);

    let answer = send(
        app.base_url(),
        "GET",
        "/api/v1/parameters",
        None,
        &[("Authorization", &metrics)],
    );
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.json,
        json!({ "status": "failed", "message": justin_http::auth::METRICS_ONLY_MESSAGE })
    );
}

#[test]
fn the_dashboard_asks_a_browser_for_basic_credentials() {
    let app = spawn_with_keys();
    let answer = send(app.base_url(), "GET", "/dashboard", None, &[]);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.json["message"], MISSING_MESSAGE);
    let offered = answer.www_authenticate.unwrap_or_default();
    assert!(offered.starts_with("Basic "), "{offered}");
    // The API keeps offering Bearer only.
    let answer = send(app.base_url(), "GET", "/api/v1/parameters", None, &[]);
    assert_eq!(answer.status, 401);
    assert!(answer
        .www_authenticate
        .unwrap_or_default()
        .starts_with("Bearer "));
    // The key as the password of Basic credentials is a key like any other.
    use base64::Engine as _;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("anyone:{APP_KEY}"))
    );
    let answer = send(
        app.base_url(),
        "GET",
        "/api/v1/parameters",
        None,
        &[("Authorization", &basic)],
    );
    assert_eq!(answer.status, 200);
}
