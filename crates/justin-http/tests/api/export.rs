//! `GET /api/v1/export`: one CSV row per decision with its upload, streamed.

use std::io::{BufRead, BufReader, Read};

use justin_backup::csv::CsvReader;
use justin_http::export::COLUMNS;
use serde_json::json;

use crate::helpers::{
    action_body, error, execute, spawn_app, upload_body, upload_body_for, with, CallbackReceiver,
    TestApp, WAIT,
};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into()
}

/// Starts `GET /api/v1/export`, which must answer 200 as streamed CSV; the body, unread.
fn open_export(app: &TestApp) -> impl Read {
    let response = agent()
        .get(format!("{}/api/v1/export", app.base_url()))
        .call()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    assert_eq!(
        header("content-type").as_deref(),
        Some("text/csv; charset=utf-8")
    );
    // Streamed as it is read: no length is known up front.
    assert_eq!(header("transfer-encoding").as_deref(), Some("chunked"));
    assert_eq!(header("content-length"), None);
    response.into_body().into_reader()
}

/// The export as records of named fields (`None` for an empty unquoted field).
pub(crate) fn export_rows(app: &TestApp) -> Vec<Vec<(String, Option<String>)>> {
    let mut reader = CsvReader::new(BufReader::new(open_export(app)));
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    assert_eq!(header, COLUMNS);
    let mut rows = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        assert_eq!(record.len(), COLUMNS.len());
        rows.push(header.iter().cloned().zip(record).collect());
    }
    rows
}

pub(crate) fn field<'a>(row: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    row.iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .1
        .as_deref()
}

#[test]
fn the_export_has_one_row_per_decision_with_its_upload() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    app.add_user("u,2");
    let first = app.post_expecting("/api/v1/action", &action_body("u1", 0, 20.0), 201);
    let evening = with(
        &action_body("u1", 0, 21.0),
        None,
        "decision_type",
        Some(json!("evening")),
    );
    app.post_expecting("/api/v1/action", &evening, 201);
    let off = with(
        &action_body("u,2", 3, 22.0),
        None,
        "available",
        Some(json!(false)),
    );
    let off = with(
        &off,
        None,
        "unavailable_reason",
        Some(json!("driving, \"fast\"")),
    );
    app.post_expecting("/api/v1/action", &off, 201);
    // The first decision's upload, used by the update below.
    let mut upload = upload_body_for("u1", 0, 20.0, &first);
    upload["data"]["outcome"] = json!({"clicks": 3, "note": "a,b"});
    app.post_expecting("/api/v1/upload_data", &upload, 201);
    // An upload without a logged decision is study data but no export row.
    app.post_expecting("/api/v1/upload_data", &upload_body("u1", 9, 20.0), 201);
    let id = app.request_update(callbacks.url());
    assert_eq!(callbacks.next()["status"], "completed");
    let version = app.update_status(&id)["parameter_version"]
        .as_i64()
        .unwrap();
    // Uploaded after the update: not used by one.
    let late = app.post_expecting("/api/v1/action", &action_body("u1", 1, 20.0), 201);
    app.post_expecting(
        "/api/v1/upload_data",
        &upload_body_for("u1", 1, 20.0, &late),
        201,
    );

    let rows = export_rows(&app);

    assert_eq!(rows.len(), 4);
    let keys: Vec<(Option<&str>, Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|r| {
            (
                field(r, "user_id"),
                field(r, "decision_type"),
                field(r, "decision_idx"),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (Some("u1"), Some("default"), Some("0")),
            (Some("u1"), Some("evening"), Some("0")),
            (Some("u,2"), Some("default"), Some("3")),
            (Some("u1"), Some("default"), Some("1")),
        ]
    );
    let used = &rows[0];
    assert_eq!(field(used, "available"), Some("true"));
    assert_eq!(field(used, "unavailable_reason"), None);
    assert_eq!(field(used, "context"), Some(r#"{"temperature":20.0}"#));
    assert_eq!(field(used, "state"), Some("[20]"));
    assert_eq!(
        field(used, "action"),
        Some(first["action"].to_string().as_str())
    );
    assert_eq!(field(used, "action1_prob"), Some("0.5"));
    assert_eq!(field(used, "parameter_version"), Some("1"));
    assert_eq!(field(used, "outcome"), Some(r#"{"clicks":3,"note":"a,b"}"#));
    assert_eq!(field(used, "reward"), Some("3.0"));
    assert_eq!(field(used, "used_in_update"), Some("true"));
    assert_eq!(
        field(used, "used_in_version"),
        Some(version.to_string().as_str())
    );
    assert_eq!(
        field(used, "request_timestamp"),
        Some("2025-01-01T12:00:00.000000Z")
    );
    assert!(field(used, "upload_timestamp").is_some());
    assert!(field(used, "rng_seed").unwrap().parse::<u64>().is_ok());
    // Decided, never uploaded.
    let no_upload = &rows[1];
    for column in ["outcome", "reward", "used_in_version", "upload_timestamp"] {
        assert_eq!(field(no_upload, column), None, "{column}");
    }
    assert_eq!(field(no_upload, "used_in_update"), Some("false"));
    let unavailable = &rows[2];
    assert_eq!(field(unavailable, "available"), Some("false"));
    assert_eq!(
        field(unavailable, "unavailable_reason"),
        Some("driving, \"fast\"")
    );
    assert_eq!(field(unavailable, "action"), Some("0"));
    assert_eq!(field(unavailable, "action1_prob"), Some("0.0"));
    let late_row = &rows[3];
    assert!(field(late_row, "outcome").is_some());
    assert_eq!(field(late_row, "used_in_update"), Some("false"));
}

/// An upload that arrives after an update that could have used it (its decision was made
/// before the update started) is used by the next update, and the export names that update,
/// not the one it missed; an upload the first update read keeps the first update's version.
#[test]
fn a_late_upload_is_used_by_the_next_update_and_the_export_names_it() {
    let app = spawn_app();
    let callbacks = CallbackReceiver::start();
    app.add_user("u1");
    let on_time = app.post_expecting("/api/v1/action", &action_body("u1", 0, 20.0), 201);
    let late = app.post_expecting("/api/v1/action", &action_body("u1", 1, 21.0), 201);
    app.post_expecting(
        "/api/v1/upload_data",
        &upload_body_for("u1", 0, 20.0, &on_time),
        201,
    );
    let first = app.request_update(callbacks.url());
    assert_eq!(callbacks.next()["status"], "completed");
    let first = app.update_status(&first);
    // Decision 1 was made before the first update; its outcome arrives only now.
    app.post_expecting(
        "/api/v1/upload_data",
        &upload_body_for("u1", 1, 21.0, &late),
        201,
    );
    let before_next = export_rows(&app);
    assert_eq!(field(&before_next[1], "used_in_update"), Some("false"));
    let second = app.request_update(callbacks.url());
    assert_eq!(callbacks.next()["status"], "completed");
    let second = app.update_status(&second);
    assert_eq!(second["provenance"]["rows_read"], 2, "{second}");

    let rows = export_rows(&app);
    let version = |status: &serde_json::Value| status["parameter_version"].to_string();
    assert_eq!(
        field(&rows[0], "used_in_version"),
        Some(version(&first).as_str())
    );
    assert_eq!(field(&rows[1], "used_in_update"), Some("true"));
    assert_eq!(
        field(&rows[1], "used_in_version"),
        Some(version(&second).as_str()),
        "the late upload is the second update's, not the first's"
    );
}

/// Stores `n` decisions of ten participants straight into the tables (uploads for every
/// other one), in SQL both backends run: going through the API would take most of a minute.
/// The JSON is the compact text the service itself stores, which the export passes through.
fn store_decisions_in_bulk(app: &TestApp, n: u32) {
    for u in 0..10 {
        app.add_user(&format!("bulk-{u}"));
    }
    let at = "'2025-01-01T12:00:00.000000Z'";
    execute(
        app.database_url(),
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) \
             INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, \
                 state, action, action_prob, parameter_version, rng_seed, decision_type, \
                 sent_timestamp) \
             SELECT 'bulk-' || (i % 10), i / 10, {at}, {at}, '{{\"temperature\":20}}', '[20]', \
                 i % 2, 0.5, 1, i, CASE WHEN i % 3 = 0 THEN 'morning' ELSE 'default' END, \
                 '2025-01-01 12:00:00' \
             FROM n",
            last = n - 1
        ),
    );
    execute(
        app.database_url(),
        &format!(
            "INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, \
                 context, action, action_prob, state, outcome, reward, action_logged, \
                 decision_type, sent_timestamp) \
             SELECT user_id, decision_idx, {at}, {at}, context, action, action_prob, state, \
                 '{{\"clicks\":1}}', 1.0, true, decision_type, sent_timestamp \
             FROM actions WHERE rng_seed % 2 = 0"
        ),
    );
}

#[test]
fn a_study_of_100000_decisions_is_exported_as_it_is_read() {
    const N: u32 = 100_000;
    let app = spawn_app();
    store_decisions_in_bulk(&app, N);

    let mut lines = BufReader::new(open_export(&app)).lines();
    let header = lines.next().unwrap().unwrap();
    assert_eq!(header, COLUMNS.join(","));
    // While this export runs, a second one is refused.
    let (status, body) = app.get("/api/v1/export");
    assert_eq!(
        (status, body),
        (
            409,
            error("An export is already running; try again when it ends.")
        )
    );
    let mut rows = 0_u32;
    let mut uploaded = 0_u32;
    let mut morning = 0_u32;
    for line in lines {
        let line = line.unwrap();
        if rows == 0 {
            assert!(line.starts_with("bulk-0,morning,0,"), "{line}");
        }
        rows += 1;
        uploaded += u32::from(line.contains(r#""{""clicks"":1}""#));
        morning += u32::from(line.split(',').nth(1) == Some("morning"));
    }
    assert_eq!(rows, N);
    assert_eq!(uploaded, N / 2);
    assert_eq!(morning, N.div_ceil(3));
    // The finished export freed its slot.
    let mut again = BufReader::new(open_export(&app)).lines();
    assert_eq!(again.next().unwrap().unwrap(), header);
}
