//! `GET /api/v1/monitor`: the watchdog's report over the real wiring, against the schedule,
//! as the OpenAPI document describes it, behind the keys.

use chrono::{DurationRound, SecondsFormat, TimeDelta, Utc};
use justin_http::config::{ApiKeyConfig, KeyAccess, ScheduleTimeConfig};
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with};
use crate::openapi::served_contract;

/// Every hour on the hour, UTC.
fn hourly(config: &mut justin_http::config::Config) {
    config.schedule.time_zone = Some("UTC".into());
    config.schedule.times = (0..24)
        .map(|h| ScheduleTimeConfig {
            decision_type: None,
            at: format!("{h:02}:00"),
        })
        .collect();
}

fn stamp(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[test]
fn a_study_without_findings_is_green() {
    let app = spawn_app();

    let got = app.get("/api/v1/monitor");

    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["status"], "success");
    assert_eq!(got.1["state"], "green");
    assert_eq!(got.1["findings"], json!([]));
    served_contract(&app).check("get", "/api/v1/monitor", &got);
}

#[test]
fn a_participant_without_decisions_since_their_start_is_red_by_their_id_as_sent() {
    let app = spawn_app_with(hourly);
    let now = Utc::now();
    // Whole seconds, as sent.
    let started = (now - TimeDelta::hours(5))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    // The id comes back exactly as sent.
    let silent = "Silent.Participant_ü-1";
    for (user, start) in [
        (silent, started),
        // Not started yet: expects nothing.
        ("later", now + TimeDelta::days(1)),
    ] {
        app.post_expecting(
            "/api/v1/add_user",
            &json!({ "user_id": user, "study_start": stamp(start) }),
            201,
        );
    }
    // A participant who decided at the latest scheduled hour has nothing missed (the hour
    // before that at least is more than the 30 min grace ago).
    app.post_expecting(
        "/api/v1/add_user",
        &json!({ "user_id": "busy", "study_start": stamp(started) }),
        201,
    );
    let latest_hour = now.duration_trunc(TimeDelta::hours(1)).unwrap();
    let (status, body) = app.post_json(
        "/api/v1/action",
        &json!({
            "user_id": "busy",
            "decision_idx": 0,
            "timestamp": stamp(latest_hour),
            "context": { "temperature": 20 },
        }),
    );
    assert_eq!(status, 201, "{body}");

    let got = app.get("/api/v1/monitor");

    assert_eq!(got.0, 200, "{}", got.1);
    served_contract(&app).check("get", "/api/v1/monitor", &got);
    assert_eq!(got.1["state"], "red", "{}", got.1);
    let findings = got.1["findings"].as_array().unwrap();
    let missed: Vec<&Value> = findings
        .iter()
        .filter(|f| f["kind"] == "missed_decisions")
        .collect();
    assert_eq!(missed.len(), 1, "{}", got.1);
    let finding = missed[0];
    assert_eq!(finding["severity"], "red");
    assert_eq!(finding["participant"], silent);
    assert_eq!(finding["decision_type"], "default");
    // Started five hours ago: the first scheduled hour after the start, and four or five
    // hours missed (the latest one is within the grace for the first half of each hour).
    let hour = started.duration_trunc(TimeDelta::hours(1)).unwrap();
    let first = if hour == started {
        hour
    } else {
        hour + TimeDelta::hours(1)
    };
    assert_eq!(finding["since"], stamp(first));
    let count = finding["count"].as_u64().unwrap();
    assert!((4..=5).contains(&count), "{finding}");
}

#[test]
fn a_read_key_is_enough_and_no_key_is_refused() {
    const READ_KEY: &str = "read-key-0123456789abcdef";
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![ApiKeyConfig {
            name: "team".into(),
            sha256: None,
            key: Some(READ_KEY.into()),
            access: KeyAccess::Read,
        }];
    });
    let client = app.client();

    let answer = client.send("GET", "/api/v1/monitor", None, &[]);
    assert_eq!(answer.status, 401, "{}", answer.json);
    assert_eq!(answer.json["status"], "failed");

    let bearer = format!("Bearer {READ_KEY}");
    let answer = client.send(
        "GET",
        "/api/v1/monitor",
        None,
        &[("Authorization", &bearer)],
    );
    assert_eq!(answer.status, 200, "{}", answer.json);
    assert_eq!(answer.json["state"], "green");
}
