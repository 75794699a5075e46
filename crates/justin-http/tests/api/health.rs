//! Probes, and what every route does with requests it cannot route or read: unknown paths,
//! wrong methods, bodies that are not JSON objects, the wrong content type, oversized bodies.

use serde_json::{json, Value};

use crate::helpers::{action_body, error, spawn_app, spawn_app_with};

/// Every route that reads a JSON body.
const POST_ROUTES: [&str; 4] = [
    "/api/v1/add_user",
    "/api/v1/action",
    "/api/v1/upload_data",
    "/api/v1/update",
];

/// Asserts an error answer in the service's envelope, whatever its message.
fn assert_envelope(got: &(u16, Value), status: u16, what: &str) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{what}: {body}");
    assert_eq!(body["status"], "failed", "{what}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {body}"
    );
}

#[test]
fn healthz_answers_200() {
    let app = spawn_app();

    assert_eq!(app.get("/healthz"), (200, json!({ "status": "ok" })));
}

#[test]
fn readyz_answers_200_when_the_database_answers() {
    let app = spawn_app();

    assert_eq!(app.get("/readyz"), (200, json!({ "status": "ready" })));
}

#[test]
fn an_unknown_route_is_404_in_json() {
    let app = spawn_app();

    for path in ["/api/v1/nope", "/nope", "/api/v2/action", "/"] {
        assert_envelope(&app.get(path), 404, path);
    }
    assert_envelope(
        &app.post_json("/api/v1/nope", &json!({})),
        404,
        "POST /api/v1/nope",
    );
}

#[test]
fn a_wrong_method_is_405_in_json() {
    let app = spawn_app();

    for path in POST_ROUTES {
        assert_envelope(&app.get(path), 405, &format!("GET {path}"));
    }
    assert_envelope(
        &app.delete("/api/v1/parameters"),
        405,
        "DELETE /api/v1/parameters",
    );
    assert_envelope(&app.post_json("/healthz", &json!({})), 405, "POST /healthz");
    assert_envelope(&app.post_json("/readyz", &json!({})), 405, "POST /readyz");
}

#[test]
fn a_body_that_is_not_json_is_400() {
    let app = spawn_app();

    for path in POST_ROUTES {
        for body in ["{", "not json", "", "{\"user_id\": }"] {
            assert_eq!(
                app.post_raw(path, body, "application/json"),
                (400, error("Request body must be valid JSON.")),
                "{path} with {body:?}"
            );
        }
    }
}

#[test]
fn a_json_body_that_is_not_an_object_is_400() {
    let app = spawn_app();

    for path in POST_ROUTES {
        for body in ["[]", r#"[{"user_id": "u1"}]"#, "\"u1\"", "5", "null"] {
            assert_eq!(
                app.post_raw(path, body, "application/json"),
                (400, error("Request body must be a JSON object.")),
                "{path} with {body}"
            );
        }
    }
}

#[test]
fn a_body_not_declared_as_json_is_415() {
    let app = spawn_app();
    let body = r#"{"user_id": "u1"}"#;

    for path in POST_ROUTES {
        for content_type in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "text/json",
        ] {
            assert_eq!(
                app.post_raw(path, body, content_type),
                (415, error("Content-Type must be application/json.")),
                "{path} as {content_type}"
            );
        }
    }
    // Nothing was stored by the refused requests.
    app.add_user("u1");
}

#[test]
fn json_with_a_charset_parameter_is_accepted() {
    let app = spawn_app();

    let (status, body) = app.post_raw(
        "/api/v1/add_user",
        r#"{"user_id": "u1"}"#,
        "application/json; charset=utf-8",
    );

    assert_eq!(status, 201, "{body}");
}

#[test]
fn a_body_over_the_limit_is_413() {
    let app = spawn_app_with(|config| config.server.max_body_bytes = 256);
    app.add_user("u1");
    let mut body = action_body("u1", 0, 23.0);
    body["context"]["padding"] = json!("x".repeat(1024));

    let got = app.post_json("/api/v1/action", &body);

    assert_envelope(&got, 413, "an oversized /action body");
    // A body within the limit still goes through.
    let (status, answer) = app.action("u1", 0, 23.0);
    assert_eq!(status, 201, "{answer}");
}
