//! Hostile input, table-driven over every route: whatever a client, a misconfigured proxy or an
//! attacker sends, the answer is a 4xx in the JSON error envelope with a message that says what
//! is wrong, never a 5xx, a dropped connection or a half-written record.
//!
//! Requests go out over a raw TCP connection so that the bytes are exactly the case's: no
//! client library adds a Content-Type, fixes a length or refuses to send invalid UTF-8.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{action_body, spawn_app, spawn_app_with, upload_body, TestApp};

/// One request as it goes on the wire.
struct Raw<'a> {
    method: &'a str,
    path: &'a str,
    content_type: Option<&'a str>,
    body: Vec<u8>,
}

/// What came back: the status and the body parsed as JSON (or `None` when it was not JSON).
#[derive(Debug)]
struct Answer {
    status: u16,
    json: Option<Value>,
    text: String,
}

fn send(app: &TestApp, raw: &Raw<'_>) -> Answer {
    let addr = app.base_url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("the test server accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout can be set");
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        raw.method,
        raw.path,
        raw.body.len()
    );
    if let Some(content_type) = raw.content_type {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).expect("the head is sent");
    // The server may answer (413) and close before the whole body is read; that is its right.
    stream.write_all(&raw.body).ok();
    let mut response = Vec::new();
    if let Err(e) = stream.read_to_end(&mut response) {
        assert!(
            !response.is_empty(),
            "{} {}: no answer before the connection failed: {e}",
            raw.method,
            raw.path
        );
    }
    parse_response(&response)
}

fn parse_response(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head:?}"));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    Answer {
        status,
        json: serde_json::from_str(&body).ok(),
        text: body,
    }
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Every answer to a hostile request: a 4xx whose JSON body is the error envelope.
fn check(answer: &Answer, status: u16, message: &str) -> Result<(), String> {
    let envelope_ok = answer.json.as_ref().is_some_and(|json| {
        json["status"] == "failed"
            && json["message"]
                .as_str()
                .is_some_and(|m| m.contains(message))
            && json.as_object().is_some_and(|o| o.len() == 2)
    });
    if answer.status == status && envelope_ok {
        Ok(())
    } else {
        Err(format!(
            "expected {status} with a message containing {message:?}, got {} {:?}",
            answer.status, answer.text
        ))
    }
}

/// Runs every case and fails listing each that got another answer.
fn run_table(app: &TestApp, cases: &[(Raw<'_>, u16, &str)]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(raw, status, message)| {
            let answer = send(app, raw);
            check(&answer, *status, message).err().map(|why| {
                let shown: String = String::from_utf8_lossy(&raw.body)
                    .chars()
                    .take(80)
                    .collect();
                format!(
                    "  {} {} [{}] {shown:?}\n    {why}",
                    raw.method,
                    raw.path,
                    raw.content_type.unwrap_or("no Content-Type")
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} hostile cases got the wrong answer:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

const JSON: Option<&str> = Some("application/json");

/// The routes that take a JSON body, each with a valid body to spoil.
fn post_routes() -> Vec<(&'static str, Value)> {
    vec![
        ("/api/v1/add_user", json!({ "user_id": "hostile" })),
        ("/api/v1/action", action_body("hostile", 0, 20.0)),
        ("/api/v1/upload_data", upload_body("hostile", 0, 20.0)),
        (
            "/api/v1/update",
            json!({ "timestamp": "2025-01-01T12:00:00Z", "callback_url": "http://127.0.0.1:9/cb" }),
        ),
        ("/api/v1/users/hostile/withdraw", json!({ "reason": "r" })),
        (
            "/api/v1/host_decision",
            json!({
                "user_id": "hostile", "timestamp": "2025-01-01T12:00:00Z", "decision_idx": 0,
                "context": {}, "action": 1, "action_prob": 0.5, "decided_by": "app",
            }),
        ),
    ]
}

/// Every route with the methods it answers (comma-separated when several).
const ROUTES: &[(&str, &str)] = &[
    ("/api/v1/add_user", "POST"),
    ("/api/v1/users/u1", "GET, PATCH"),
    ("/api/v1/users/u1/withdraw", "POST"),
    ("/api/v1/users/u1/erase", "POST"),
    ("/api/v1/users/u1/decisions/0", "GET"),
    ("/api/v1/host_decision", "POST"),
    ("/api/v1/action", "POST"),
    ("/api/v1/upload_data", "POST"),
    ("/api/v1/update", "POST"),
    ("/api/v1/update/00000000-0000-0000-0000-000000000000", "GET"),
    ("/api/v1/parameters", "GET"),
    ("/api/v1/parameters/1", "GET"),
    ("/api/v1/openapi.json", "GET"),
    ("/healthz", "GET"),
    ("/readyz", "GET"),
];

fn nested(depth: usize) -> Vec<u8> {
    let mut body = String::from("{\"user_id\": ");
    body.push_str(&"[".repeat(depth));
    body.push_str(&"]".repeat(depth));
    body.push('}');
    body.into_bytes()
}

#[test]
fn malformed_bodies_get_a_4xx_on_every_route() {
    let app = spawn_app();
    let mut cases = Vec::new();
    for (path, valid) in post_routes() {
        let valid = valid.to_string();
        let truncated = valid.as_bytes()[..valid.len() / 2].to_vec();
        let body_cases: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
            (JSON, b"not json".to_vec(), 400, "must be valid JSON"),
            (JSON, truncated, 400, "must be valid JSON"),
            (JSON, Vec::new(), 400, "must be valid JSON"),
            (JSON, b"[]".to_vec(), 400, "must be a JSON object"),
            (JSON, b"[1, 2]".to_vec(), 400, "must be a JSON object"),
            (JSON, b"null".to_vec(), 400, "must be a JSON object"),
            (JSON, b"\"text\"".to_vec(), 400, "must be a JSON object"),
            (JSON, b"42".to_vec(), 400, "must be a JSON object"),
            (JSON, b"{\"a\": NaN}".to_vec(), 400, "must be valid JSON"),
            (
                JSON,
                b"{\"a\": Infinity}".to_vec(),
                400,
                "must be valid JSON",
            ),
            (JSON, b"{\"a\": 1e400}".to_vec(), 400, "must be valid JSON"),
            (
                JSON,
                b"{\"user_id\": \"\xff\xfe\"}".to_vec(),
                400,
                "must be valid JSON",
            ),
            (JSON, b"{} trailing".to_vec(), 400, "must be valid JSON"),
            (JSON, nested(10_000), 400, "must be valid JSON"),
            (
                None,
                valid.clone().into_bytes(),
                415,
                "Content-Type must be application/json",
            ),
            (
                Some("text/plain"),
                valid.clone().into_bytes(),
                415,
                "Content-Type must be application/json",
            ),
            (
                Some("application/x-www-form-urlencoded"),
                b"user_id=a".to_vec(),
                415,
                "Content-Type must be application/json",
            ),
        ];
        for (content_type, body, status, message) in body_cases {
            cases.push((
                Raw {
                    method: "POST",
                    path,
                    content_type,
                    body,
                },
                status,
                message,
            ));
        }
    }
    run_table(&app, &cases);
}

#[test]
fn a_body_over_the_limit_gets_413_on_every_route() {
    // The default limit: 1 MiB.
    let app = spawn_app();
    let mut cases = Vec::new();
    for (path, _) in post_routes() {
        let mut body = b"{\"user_id\": \"".to_vec();
        body.resize(1024 * 1024 + 1, b'a');
        cases.push((
            Raw {
                method: "POST",
                path,
                content_type: JSON,
                body,
            },
            413,
            "larger than 1048576 bytes",
        ));
    }
    run_table(&app, &cases);

    // A configured limit, and a body just under it is read.
    let app = spawn_app_with(|config| config.server.max_body_bytes = 200);
    let mut padded = json!({ "user_id": "under-the-limit", "pad": "" });
    let length = padded.to_string().len();
    padded["pad"] = json!("x".repeat(200 - length));
    assert_eq!(padded.to_string().len(), 200);
    let answer = send(
        &app,
        &Raw {
            method: "POST",
            path: "/api/v1/add_user",
            content_type: JSON,
            body: padded.to_string().into_bytes(),
        },
    );
    assert_eq!(
        answer.status, 201,
        "a body of exactly the limit is accepted: {answer:?}"
    );
    padded["pad"] = json!("x".repeat(201 - length));
    let answer = send(
        &app,
        &Raw {
            method: "POST",
            path: "/api/v1/add_user",
            content_type: JSON,
            body: padded.to_string().into_bytes(),
        },
    );
    check(&answer, 413, "larger than 200 bytes").unwrap();
}

/// A copy of `base` with the field at `pointer` (e.g. `/data/action`) replaced.
fn spoil(base: &Value, pointer: &str, value: Value) -> Vec<u8> {
    let mut body = base.clone();
    *body
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("the base body has {pointer}")) = value;
    body.to_string().into_bytes()
}

#[test]
fn malformed_fields_get_a_400_naming_the_field() {
    let app = spawn_app();
    app.add_user("hostile");
    let integer_fields = [
        ("/api/v1/action", "/decision_idx"),
        ("/api/v1/upload_data", "/decision_idx"),
    ];
    let timestamp_fields = [
        ("/api/v1/action", "/timestamp"),
        ("/api/v1/upload_data", "/timestamp"),
        ("/api/v1/update", "/timestamp"),
    ];
    let user_fields = [
        ("/api/v1/add_user", "/user_id"),
        ("/api/v1/action", "/user_id"),
        ("/api/v1/upload_data", "/user_id"),
    ];
    let bases: std::collections::HashMap<&str, Value> = post_routes().into_iter().collect();
    let mut cases = Vec::new();
    let mut add = |path: &'static str, pointer: &str, value: Value, message: &'static str| {
        cases.push((
            Raw {
                method: "POST",
                path,
                content_type: JSON,
                body: spoil(&bases[path], pointer, value),
            },
            400,
            message,
        ));
    };
    for (path, pointer) in integer_fields {
        for not_integer in [json!(1.5), json!(1e300), json!("3"), json!(true)] {
            add(
                path,
                pointer,
                not_integer,
                "decision_idx must be an integer.",
            );
        }
        add(path, pointer, json!(-1), "decision_idx");
        add(path, pointer, json!(i64::MIN), "decision_idx");
        add(path, pointer, json!(u64::MAX), "decision_idx is too large.");
    }
    for (path, pointer) in timestamp_fields {
        for bad in [
            "yesterday",
            "2025-13-01T12:00:00Z",
            "2025-01-01T25:00:00Z",
            "2025-01-01T12:00:00 UTC",
            "1735732800",
        ] {
            add(path, pointer, json!(bad), "timestamp must be an ISO 8601");
        }
        for outside in ["0000-12-31T23:59:59Z", "9999-12-31T23:59:59-23:59"] {
            add(
                path,
                pointer,
                json!(outside),
                "timestamp must lie between 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z",
            );
        }
        add(
            path,
            pointer,
            json!(1_735_732_800),
            "timestamp must be a string",
        );
        add(path, pointer, json!({}), "timestamp must be a string");
    }
    for (path, pointer) in user_fields {
        add(
            path,
            pointer,
            json!("a".repeat(256)),
            "user_id must be at most 255",
        );
        add(path, pointer, json!("bell\u{7}"), "control characters");
        add(path, pointer, json!("nul\u{0}"), "control characters");
        add(path, pointer, json!("line\nbreak"), "control characters");
        add(path, pointer, json!(17), "user_id must be a string.");
        add(path, pointer, json!(["a"]), "user_id must be a string.");
    }
    add(
        "/api/v1/upload_data",
        "/data/action",
        json!(2),
        "action must be 0 or 1.",
    );
    add(
        "/api/v1/upload_data",
        "/data/action",
        json!(1.0e30),
        "action must be 0 or 1.",
    );
    add(
        "/api/v1/upload_data",
        "/data/action",
        json!(0.5),
        "action must be 0 or 1.",
    );
    add(
        "/api/v1/upload_data",
        "/data/action_prob",
        json!(1.5),
        "action_prob must be a number",
    );
    add(
        "/api/v1/upload_data",
        "/data/action_prob",
        json!(-0.1),
        "action_prob must be a number",
    );
    add(
        "/api/v1/upload_data",
        "/data/action_prob",
        json!("0.5"),
        "action_prob must be a number",
    );
    add(
        "/api/v1/upload_data",
        "/data/state",
        json!(["x"]),
        "state must be a list of numbers.",
    );
    add(
        "/api/v1/upload_data",
        "/data/state",
        json!(3),
        "state must be a list of numbers.",
    );
    add(
        "/api/v1/upload_data",
        "/data/outcome",
        json!(["clicks"]),
        "outcome must be a dictionary.",
    );
    add(
        "/api/v1/upload_data",
        "/data/context",
        json!("hot temperature"),
        "context must be a dictionary.",
    );
    add(
        "/api/v1/upload_data",
        "/data",
        json!(["context"]),
        "data must be a dictionary.",
    );
    add(
        "/api/v1/action",
        "/context",
        json!([1, 2, "temperature"]),
        "context must be a dictionary.",
    );
    add(
        "/api/v1/action",
        "/context",
        json!({ "temperature": 20, "k": "nul\u{0}" }),
        "\\u0000",
    );
    add(
        "/api/v1/update",
        "/callback_url",
        json!("ftp://example.com/"),
        "callback_url must be",
    );
    add(
        "/api/v1/update",
        "/callback_url",
        json!("http://"),
        "callback_url must be",
    );
    add(
        "/api/v1/update",
        "/callback_url",
        json!("http://host:99999/"),
        "callback_url must be",
    );
    add(
        "/api/v1/update",
        "/callback_url",
        json!(5),
        "callback_url must be a string.",
    );
    // Whole numbers beyond every integer type arrive as floats; their literal is an integer.
    let beyond_u64 = br#"{"user_id": "hostile", "timestamp": "2025-01-01T12:00:00Z", "decision_idx": 18446744073709551616, "context": {"temperature": 20}}"#;
    cases.push((
        Raw {
            method: "POST",
            path: "/api/v1/action",
            content_type: JSON,
            body: beyond_u64.to_vec(),
        },
        400,
        "decision_idx is too large.",
    ));
    run_table(&app, &cases);

    // Nothing above was stored.
    let (_, params) = app.get("/api/v1/parameters");
    assert_eq!(params["version"], 1, "no update was accepted: {params}");
    let (status, _) = app.action("hostile", 0, 20.0);
    assert_eq!(status, 201, "no decision 0 was stored by a refused request");
}

#[test]
fn a_user_id_of_255_bytes_is_accepted() {
    let app = spawn_app();
    let longest = "é".repeat(127) + "a";
    assert_eq!(longest.len(), 255);
    let (status, body) = app.post_json("/api/v1/add_user", &json!({ "user_id": longest }));
    assert_eq!(status, 201, "{body}");
    let (status, _) = app.action(&longest, 0, 20.0);
    assert_eq!(status, 201);
}

#[test]
fn unknown_routes_get_404_and_wrong_methods_405_in_json() {
    let app = spawn_app();
    let mut cases = Vec::new();
    for path in [
        "/",
        "/api",
        "/api/v1",
        "/api/v1/",
        "/api/v1/nope",
        "/api/v2/action",
        "/api/v1/action/extra",
        "/api/v1/%00",
        "/api/v1/update/not-a-uuid/extra",
        "/api/v1/users",
        "/api/v1/users/",
        "/api/v1/users/u1/withdraw/extra",
    ] {
        for method in ["GET", "POST"] {
            cases.push((
                Raw {
                    method,
                    path,
                    content_type: JSON,
                    body: b"{}".to_vec(),
                },
                404,
                "Not found.",
            ));
        }
    }
    for (path, allowed) in ROUTES {
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if allowed.split(", ").any(|a| a == method) {
                continue;
            }
            cases.push((
                Raw {
                    method,
                    path,
                    content_type: JSON,
                    body: b"{}".to_vec(),
                },
                405,
                "Method not allowed.",
            ));
        }
    }
    run_table(&app, &cases);
}

#[test]
fn malformed_path_parameters_get_a_4xx() {
    let app = spawn_app();
    let long = format!("/api/v1/users/{}", "a".repeat(256));
    let mut cases = Vec::new();
    let get = |path: &'static str| Raw {
        method: "GET",
        path,
        content_type: None,
        body: Vec::new(),
    };
    for path in [
        "/api/v1/update/not-a-uuid",
        "/api/v1/update/00000000-0000-0000-0000-00000000000g",
        "/api/v1/update/%FF%FE",
        "/api/v1/update/'%20OR%201=1",
    ] {
        cases.push((get(path), 400, "update_id"));
    }
    cases.push((
        get("/api/v1/update/00000000-0000-0000-0000-000000000000"),
        404,
        "",
    ));
    for path in [
        "/api/v1/parameters/abc",
        "/api/v1/parameters/1.5",
        "/api/v1/parameters/99999999999999999999999",
        "/api/v1/parameters/%00",
    ] {
        cases.push((get(path), 400, "version"));
    }
    for path in [
        "/api/v1/parameters/0",
        "/api/v1/parameters/-1",
        "/api/v1/parameters/999",
    ] {
        cases.push((get(path), 404, ""));
    }
    for path in ["/api/v1/users/a%00b", "/api/v1/users/a%0Ab"] {
        cases.push((
            get(path),
            400,
            "user_id must not contain control characters.",
        ));
    }
    cases.push((get("/api/v1/users/%FF%FE"), 404, ""));
    cases.push((
        Raw {
            method: "GET",
            path: &long,
            content_type: None,
            body: Vec::new(),
        },
        400,
        "user_id must be at most 255 bytes long.",
    ));
    run_table(&app, &cases);
}

#[test]
fn contexts_and_outcomes_are_stored_as_the_client_sent_them() {
    let app = spawn_app();
    app.add_user("faithful");
    let context = json!({
        "temperature": 21.5,
        "unicode": "naïve ☕ 日本語 \u{1F600}",
        "escapes": "quote \" backslash \\ tab \t",
        "nested": { "list": [1, -2, 3.25, null, true, "x"], "empty": {} },
        "big": 9_007_199_254_740_993_i64,
        "tiny": 1.0e-300,
    });
    let mut action = action_body("faithful", 0, 21.5);
    action["context"] = context.clone();
    let (status, body) = app.post_json("/api/v1/action", &action);
    assert_eq!(status, 201, "{body}");
    let outcome =
        json!({ "clicks": 4, "steps": 10_432, "mood": "ok 🙂", "answers": [[1, 2], { "q": "a" }] });
    let mut upload = upload_body("faithful", 0, 21.5);
    upload["data"]["context"] = context.clone();
    upload["data"]["outcome"] = outcome.clone();
    upload["data"]["action"] = body["action"].clone();
    upload["data"]["action_prob"] = body["action_prob"].clone();
    let (status, answer) = app.post_json("/api/v1/upload_data", &upload);
    assert_eq!(status, 201, "{answer}");

    let stored = |sql: &str| -> Value {
        let text = crate::helpers::sql_lines(app.database_url(), sql).join("\n");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{sql}: {e}: {text}"))
    };
    assert_eq!(
        stored("SELECT CAST(context AS TEXT) AS out FROM actions WHERE user_id = 'faithful'"),
        context
    );
    assert_eq!(
        stored("SELECT CAST(context AS TEXT) AS out FROM study_data WHERE user_id = 'faithful'"),
        context
    );
    assert_eq!(
        stored("SELECT CAST(outcome AS TEXT) AS out FROM study_data WHERE user_id = 'faithful'"),
        outcome
    );
}
