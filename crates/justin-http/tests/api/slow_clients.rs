//! Clients that stall or send what is not HTTP, over raw sockets: a request's headers and body
//! must arrive within `server.header_timeout_secs` and `server.body_timeout_secs`, after which
//! the answer is 408 and the connection is closed; the HTTP layer's own answers (400, 408,
//! 431) carry the JSON envelope like every other.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::Value;

use crate::helpers::{spawn_app_with, TestApp, WAIT};

/// An app whose clients get one second for headers and one for a body.
fn impatient_app() -> TestApp {
    spawn_app_with(|config| {
        config.server.header_timeout_secs = 1;
        config.server.body_timeout_secs = 1;
    })
}

/// Sends `bytes`, then reads until the server closes the connection (failing after [`WAIT`]);
/// the status, the JSON body and the whole answer as text.
fn exchange(app: &TestApp, bytes: &[u8]) -> (u16, Value, String) {
    exchange_in_steps(app, &[(bytes, "")])
}

/// Sends each step's bytes once the answer so far ends with the previous step's text, then
/// reads until the server closes the connection; as [`exchange`].
fn exchange_in_steps(app: &TestApp, steps: &[(&[u8], &str)]) -> (u16, Value, String) {
    let addr = app.base_url().trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr).expect("the test server accepts connections");
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut chunk = [0_u8; 4096];
    for (i, (bytes, wait_for)) in steps.iter().enumerate() {
        stream.write_all(bytes).unwrap();
        let last = i + 1 == steps.len();
        while last || !answer.ends_with(wait_for.as_bytes()) {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) => panic!(
                    "the server kept the connection open for {:?} ({e}); answered so far: {:?}",
                    started.elapsed(),
                    String::from_utf8_lossy(&answer)
                ),
            }
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
    // Null when the first answer's body is not JSON alone (several answers on one connection).
    let json = serde_json::from_str(body).unwrap_or(Value::Null);
    (status, json, text)
}

fn assert_envelope(json: &Value, text: &str) {
    assert_eq!(json["status"], "failed", "{text}");
    assert!(
        json["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{text}"
    );
}

#[test]
fn a_body_that_stalls_after_one_byte_is_answered_408_and_closed() {
    let app = impatient_app();
    let (status, json, text) = exchange(
        &app,
        b"POST /api/v1/add_user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: 100000\r\n\r\n{",
    );
    assert_eq!(status, 408, "{text}");
    assert_eq!(json["message"], "The request was not received in time.");
    assert_envelope(&json, &text);
}

#[test]
fn a_chunked_body_without_its_last_chunk_is_answered_408_and_closed() {
    let app = impatient_app();
    let (status, json, text) = exchange(
        &app,
        b"POST /api/v1/action HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
    );
    assert_eq!(status, 408, "{text}");
    assert_envelope(&json, &text);
}

#[test]
fn a_chunked_body_no_handler_reads_does_not_hold_the_connection() {
    // Answered at once (404), but the HTTP layer would wait for the rest of the body for ever.
    let app = impatient_app();
    let (status, json, text) = exchange(
        &app,
        b"POST /api/v1/no_such_route HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
    );
    assert_eq!(status, 404, "{text}");
    assert_envelope(&json, &text);
    assert!(
        text.to_ascii_lowercase().contains("connection: close"),
        "{text}"
    );
}

#[test]
fn headers_that_stall_are_answered_408_in_the_envelope() {
    let app = impatient_app();
    let (status, json, text) = exchange(&app, b"POST /api/v1/action HTTP/1.1\r\nHost: x\r\n");
    assert_eq!(status, 408, "{text}");
    assert_eq!(json["message"], "The request was not received in time.");
    assert_envelope(&json, &text);
}

#[test]
fn a_malformed_request_line_is_answered_400_in_the_envelope() {
    let app = impatient_app();
    let (status, json, text) = exchange(&app, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(status, 400, "{text}");
    assert_envelope(&json, &text);
    let length = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|l| l.trim().parse::<usize>().ok());
    assert_eq!(length, Some(json.to_string().len()), "{text}");
}

#[test]
fn headers_too_large_are_answered_431_in_the_envelope() {
    let app = impatient_app();
    let mut request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Padding: ".to_vec();
    request.extend(std::iter::repeat_n(b'a', 200 * 1024));
    request.extend_from_slice(b"\r\n\r\n");
    let (status, json, text) = exchange(&app, &request);
    assert_eq!(status, 431, "{text}");
    assert_envelope(&json, &text);
}

#[test]
fn answers_on_a_kept_alive_connection_pass_unchanged_before_the_timeout() {
    // A HEAD, a GET, an error answer and a chunked stream on one connection, then headers
    // that stall: every application answer arrives as written, and the last one is the 408
    // (timed by the connection, as the HTTP layer times only a first request's headers).
    let app = impatient_app();
    let (status, _, text) = exchange_in_steps(
        &app,
        &[
            (
                b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
GET /api/v1/no_such_route HTTP/1.1\r\nHost: x\r\n\r\n\
GET /api/v1/export HTTP/1.1\r\nHost: x\r\n\r\n",
                // The end of the export's chunked body.
                "\r\n0\r\n\r\n",
            ),
            (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", ""),
        ],
    );
    assert_eq!(status, 405, "HEAD is not served: {text}");
    assert_eq!(text.matches("HTTP/1.1 ").count(), 5, "{text}");
    assert!(text.contains("{\"status\":\"ok\"}"), "{text}");
    assert!(text.contains("HTTP/1.1 404"), "{text}");
    assert!(
        text.ends_with(r#"{"message":"The request was not received in time.","status":"failed"}"#),
        "{text}"
    );
}

#[test]
fn a_prompt_client_is_not_cut_off() {
    let app = impatient_app();
    let body = br#"{"user_id":"p1","timestamp":"2025-01-01T12:00:00Z"}"#;
    let mut request = format!(
        "POST /api/v1/add_user HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let (status, _, text) = exchange(&app, &request);
    assert_eq!(status, 201, "{text}");
}
