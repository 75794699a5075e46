//! The study server's `timestamp` on `/action`, `/upload_data` and `/update`: every form the
//! template's study servers send is accepted, stored next to the text as sent, and comes back
//! unchanged from a repeated decision, the update status and the export; forms no backend can
//! keep exactly are refused with a message naming the rule.

use chrono::SecondsFormat;
use serde_json::{json, Value};

use crate::export::{export_rows, field};
use crate::helpers::{
    action_body, rfc3339, spawn_app, spawn_app_with, upload_body_for, CallbackReceiver, TestApp,
};

/// Each accepted form, with the instant it names as the export writes it.
const ACCEPTED: [(&str, &str); 14] = [
    // The template's own test suite sends this one: no offset, read in UTC by default.
    ("2025-01-01T12:00:00", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01 12:00:00", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01T12:00:00Z", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01T14:00:00+02:00", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01T14:00:00+0200", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01T07:00:00-05", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01", "2025-01-01T00:00:00.000000Z"),
    ("20250101T120000", "2025-01-01T12:00:00.000000Z"),
    ("2025-W01-3T12:00", "2025-01-01T12:00:00.000000Z"),
    ("2025-01-01T12:00:00,5", "2025-01-01T12:00:00.500000Z"),
    (
        "2025-01-01T12:00:00.123456789Z",
        "2025-01-01T12:00:00.123456Z",
    ),
    // A leap second is the next second on both backends.
    ("2016-12-31T23:59:60Z", "2017-01-01T00:00:00.000000Z"),
    ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00.000000Z"),
    (
        "9999-12-31T23:59:59.999999999Z",
        "9999-12-31T23:59:59.999999Z",
    ),
];

fn with_timestamp(mut body: Value, timestamp: &str) -> Value {
    body["timestamp"] = json!(timestamp);
    body
}

/// Decides, repeats and uploads decision `idx` of `user` with `timestamp`; the first answer.
fn decide_and_upload(app: &TestApp, user: &str, idx: i64, timestamp: &str) -> Value {
    let body = with_timestamp(action_body(user, idx, 20.0), timestamp);
    let first = app.post_expecting("/api/v1/action", &body, 201);
    let repeated = app.post_expecting("/api/v1/action", &body, 200);
    assert_eq!(
        repeated, first,
        "{timestamp}: the repeat returns the stored decision"
    );
    let upload = with_timestamp(upload_body_for(user, idx, 20.0, &first), timestamp);
    app.post_expecting("/api/v1/upload_data", &upload, 201);
    first
}

#[test]
fn every_accepted_form_is_stored_repeated_and_exported_as_sent() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    for (idx, (sent, _)) in (0..).zip(ACCEPTED) {
        decide_and_upload(&app, "u1", idx, sent);
        let accepted = app.post_expecting(
            "/api/v1/update",
            &json!({ "timestamp": sent, "callback_url": callbacks.url() }),
            202,
        );
        let id = accepted["update_id"].as_str().unwrap();
        let status = app.update_status(id);
        assert_eq!(status["timestamp"], sent, "{status}");
        let (_, instant) = ACCEPTED[usize::try_from(idx).unwrap()];
        assert_eq!(
            rfc3339(&status["requested_at"], "requested_at")
                .to_rfc3339_opts(SecondsFormat::Micros, true),
            instant
        );
    }

    let rows = export_rows(&app);
    assert_eq!(rows.len(), ACCEPTED.len());
    for (row, (sent, instant)) in rows.iter().zip(ACCEPTED) {
        assert_eq!(field(row, "request_timestamp"), Some(instant), "{sent}");
        assert_eq!(field(row, "request_timestamp_as_sent"), Some(sent));
        assert_eq!(
            field(row, "upload_request_timestamp"),
            Some(instant),
            "{sent}"
        );
        assert_eq!(field(row, "upload_request_timestamp_as_sent"), Some(sent));
    }
}

#[test]
fn refused_forms_get_a_400_naming_the_rule_on_every_endpoint() {
    let app = spawn_app();
    app.add_user("u1");
    let format = "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
                  2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is \
                  read in UTC).";
    let range = "timestamp must lie between 0001-01-01T00:00:00Z and \
                 9999-12-31T23:59:59.999999Z (years 1 to 9999 in UTC).";
    let cases: Vec<(Value, &str)> = vec![
        (json!("yesterday"), format),
        (json!("2025-02-30T12:00:00"), format),
        (json!("2025-01-01T24:00:00"), format),
        (json!("2025-01-01T12:00:00+24:00"), format),
        (json!("2025-01-01T12:00:00 UTC"), format),
        (json!(" 2025-01-01"), format),
        (json!("0000-01-01T00:00:00Z"), range),
        (json!("0001-01-01T00:30:00+01:00"), range),
        (json!("9999-12-31T23:59:59-23:59"), range),
        (json!("9999-12-31T23:59:60Z"), range),
        (
            json!(format!("2025-01-01T12:00:00.{}Z", "0".repeat(60))),
            "timestamp must be at most 64 characters long.",
        ),
        (
            json!(1_735_732_800),
            "timestamp must be a string or datetime object.",
        ),
        (
            json!(["2025-01-01"]),
            "timestamp must be a string or datetime object.",
        ),
    ];
    let bodies = |timestamp: &Value| {
        let mut action = action_body("u1", 0, 20.0);
        action["timestamp"] = timestamp.clone();
        let mut upload = upload_body_for("u1", 0, 20.0, &json!({"action": 1, "action_prob": 0.5}));
        upload["timestamp"] = timestamp.clone();
        let update = json!({ "timestamp": timestamp, "callback_url": "http://127.0.0.1:9/cb" });
        [
            ("/api/v1/action", action),
            ("/api/v1/upload_data", upload),
            ("/api/v1/update", update),
        ]
    };
    for (timestamp, message) in &cases {
        for (path, body) in bodies(timestamp) {
            let answer = app.post_expecting(path, &body, 400);
            assert_eq!(
                answer,
                json!({ "status": "failed", "message": message }),
                "{path} {timestamp}"
            );
        }
    }
    // Nothing was stored.
    assert!(export_rows(&app).is_empty());
}

#[test]
fn times_without_an_offset_are_read_in_the_configured_zone() {
    let app = spawn_app_with(|config| config.server.naive_time_zone = "America/New_York".into());
    app.add_user("u1");
    // Winter (UTC-5), summer (UTC-4), a bare date (local midnight), and an offset, which wins.
    let cases = [
        ("2025-01-01T12:00:00", "2025-01-01T17:00:00.000000Z"),
        ("2025-07-01 12:00:00", "2025-07-01T16:00:00.000000Z"),
        ("2025-01-01", "2025-01-01T05:00:00.000000Z"),
        ("2025-01-01T12:00:00Z", "2025-01-01T12:00:00.000000Z"),
    ];
    for (idx, (sent, _)) in (0..).zip(cases) {
        decide_and_upload(&app, "u1", idx, sent);
    }
    let rows = export_rows(&app);
    for (row, (sent, instant)) in rows.iter().zip(cases) {
        assert_eq!(field(row, "request_timestamp"), Some(instant), "{sent}");
        assert_eq!(field(row, "request_timestamp_as_sent"), Some(sent));
    }

    // The hour a clock change skips, and the one it repeats, are refused, naming the zone.
    for (sent, message) in [
        (
            "2025-03-09T02:30:00",
            "timestamp 2025-03-09T02:30:00 does not exist in America/New_York: a clock change \
             skips it; send the time with its offset.",
        ),
        (
            "2025-11-02 01:30",
            "timestamp 2025-11-02 01:30 is ambiguous in America/New_York: a clock change \
             repeats it; send the time with its offset.",
        ),
        (
            "yesterday",
            "timestamp must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
             2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read \
             in America/New_York).",
        ),
    ] {
        let body = with_timestamp(action_body("u1", 10, 20.0), sent);
        let answer = app.post_expecting("/api/v1/action", &body, 400);
        assert_eq!(answer["message"], message, "{sent}");
    }
    // With its offset, the repeated hour is two plain instants.
    let body = with_timestamp(action_body("u1", 10, 20.0), "2025-11-02T01:30:00-05:00");
    app.post_expecting("/api/v1/action", &body, 201);
}
