//! A participant's life through the API: registration with a time in the study,
//! `GET`/`PATCH /api/v1/users/{user_id}`, withdrawal and erasure.

use serde_json::{json, Value};

use crate::helpers::{check_cases, error, rfc3339, spawn_app, sql_lines, TestApp};
use crate::openapi::served_contract;

/// Registers `user` with the given bounds (`None`: not sent), which must succeed.
fn enroll(app: &TestApp, user: &str, start: Option<&str>, end: Option<&str>) {
    let mut body = json!({ "user_id": user });
    if let Some(start) = start {
        body["study_start"] = json!(start);
    }
    if let Some(end) = end {
        body["study_end"] = json!(end);
    }
    app.post_expecting("/api/v1/add_user", &body, 201);
}

#[test]
fn add_user_with_a_window_answers_as_without_one() {
    let app = spawn_app();

    let got = app.post_json(
        "/api/v1/add_user",
        &json!({
            "user_id": "u1",
            "study_start": "2025-01-06T00:00:00+01:00",
            "study_end": "2025-03-03",
        }),
    );

    assert_eq!(
        got,
        (
            201,
            json!({
                "status": "success",
                "user_id": "u1",
                "message": "User added successfully.",
            })
        )
    );
}

#[test]
fn a_participant_shows_their_window_exactly_as_sent() {
    let app = spawn_app();
    enroll(
        &app,
        "u1",
        Some("2025-01-06 00:00:00.5+01:00"),
        Some("2999-03-03"),
    );

    let (status, body) = app.get("/api/v1/users/u1");

    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success", "{body}");
    let user = &body["user"];
    assert_eq!(user["user_id"], "u1");
    assert_eq!(user["study_start"], "2025-01-06 00:00:00.5+01:00");
    assert_eq!(user["study_end"], "2999-03-03");
    assert_eq!(user["status"], "active");
    assert_eq!(user["withdrawn_at"], Value::Null);
    assert_eq!(user["withdrawal_reason"], Value::Null);
    assert_eq!(
        (&user["decisions"], &user["uploads"]),
        (&json!(0), &json!(0))
    );
    rfc3339(&user["registered_at"], "registered_at");
    served_contract(&app).check("get", "/api/v1/users/{user_id}", &(status, body));
}

#[test]
fn a_participant_without_a_window_has_nulls_and_is_active() {
    let app = spawn_app();
    app.add_user("u1");

    let user = app.participant("u1");

    assert_eq!(user["study_start"], Value::Null);
    assert_eq!(user["study_end"], Value::Null);
    assert_eq!(user["status"], "active");
}

#[test]
fn null_bounds_count_as_absent() {
    let app = spawn_app();
    app.post_expecting(
        "/api/v1/add_user",
        &json!({ "user_id": "u1", "study_start": null, "study_end": null }),
        201,
    );

    let user = app.participant("u1");

    assert_eq!(
        (&user["study_start"], &user["study_end"]),
        (&Value::Null, &Value::Null)
    );
}

#[test]
fn the_status_follows_the_window_at_the_services_clock() {
    let app = spawn_app();
    enroll(&app, "later", Some("2999-01-01T00:00:00Z"), None);
    enroll(&app, "over", None, Some("2001-01-01T00:00:00Z"));
    enroll(
        &app,
        "now",
        Some("2001-01-01T00:00:00Z"),
        Some("2999-01-01T00:00:00Z"),
    );

    assert_eq!(app.participant("later")["status"], "not_started");
    assert_eq!(app.participant("over")["status"], "ended");
    assert_eq!(app.participant("now")["status"], "active");
}

#[test]
fn counts_follow_decisions_and_uploads() {
    let app = spawn_app();
    app.add_user("u1");
    let (_, answer) = app.action("u1", 0, 23.0);
    app.action("u1", 1, 23.0);
    let mut upload = crate::helpers::upload_body_for("u1", 0, 23.0, &answer);
    upload["timestamp"] = json!("2025-01-01T13:00:00Z");
    app.post_expecting("/api/v1/upload_data", &upload, 201);

    let user = app.participant("u1");

    assert_eq!(
        (&user["decisions"], &user["uploads"]),
        (&json!(2), &json!(1))
    );
}

#[test]
fn add_user_refuses_bad_bounds_with_a_message() {
    let app = spawn_app();
    let with = |key: &str, value: Value| {
        let mut body = json!({ "user_id": "u1" });
        body[key] = value;
        body
    };

    check_cases(
        &app,
        "/api/v1/add_user",
        &[
            (
                with("study_start", json!(5)),
                400,
                "study_start must be a string.",
            ),
            (
                with("study_end", json!(["x"])),
                400,
                "study_end must be a string.",
            ),
            (
                with("study_start", json!("soon")),
                400,
                "study_start must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
                 2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is \
                 read in UTC).",
            ),
            (
                with("study_end", json!("")),
                400,
                "study_end must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
                 2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is \
                 read in UTC).",
            ),
            (
                with("study_start", json!("2".repeat(65))),
                400,
                "study_start must be at most 64 characters long.",
            ),
            (
                json!({ "user_id": "u1", "study_start": "2025-02-01", "study_end": "2025-01-01" }),
                400,
                "study_end must be later than study_start.",
            ),
            (
                json!({
                    "user_id": "u1",
                    "study_start": "2025-01-01T01:00:00+01:00",
                    "study_end": "2025-01-01T00:00:00Z",
                }),
                400,
                "study_end must be later than study_start.",
            ),
            // The id is checked first, as before.
            (
                json!({ "user_id": 5, "study_start": "soon" }),
                400,
                "user_id must be a string.",
            ),
        ],
    );
    assert_eq!(app.get("/api/v1/users/u1").0, 404, "nothing was registered");
}

#[test]
fn an_unknown_participant_is_not_found() {
    let app = spawn_app();
    let contract = served_contract(&app);

    let got = app.get("/api/v1/users/nobody");

    assert_eq!(got, (404, error("User not found.")));
    contract.check("get", "/api/v1/users/{user_id}", &got);
    assert_eq!(
        app.patch_json(
            "/api/v1/users/nobody",
            &json!({ "study_end": "2025-01-01" })
        ),
        (404, error("User not found."))
    );
    assert_eq!(
        app.post_json("/api/v1/users/nobody/withdraw", &json!({ "reason": "r" })),
        (404, error("User not found."))
    );
    assert_eq!(
        app.post_empty("/api/v1/users/nobody/erase"),
        (404, error("User not found."))
    );
}

#[test]
fn ids_in_the_path_are_read_as_ids() {
    let app = spawn_app();
    app.add_user("a b/ü");

    let user = app.participant("a%20b%2F%C3%BC");
    let bad = app.get("/api/v1/users/a%01b");

    assert_eq!(user["user_id"], "a b/ü");
    assert_eq!(
        bad,
        (400, error("user_id must not contain control characters."))
    );
}

#[test]
fn patch_replaces_a_bound_sent_opens_a_null_one_and_keeps_an_absent_one() {
    let app = spawn_app();
    let contract = served_contract(&app);
    enroll(
        &app,
        "u1",
        Some("2025-01-06T00:00:00+01:00"),
        Some("2025-03-03"),
    );

    let got = app.patch_json(
        "/api/v1/users/u1",
        &json!({ "study_end": "2025-03-10 12:00:00" }),
    );
    assert_eq!(got.0, 200, "{}", got.1);
    contract.check("patch", "/api/v1/users/{user_id}", &got);
    assert_eq!(got.1["status"], "success");
    assert_eq!(got.1["user"]["study_start"], "2025-01-06T00:00:00+01:00");
    assert_eq!(got.1["user"]["study_end"], "2025-03-10 12:00:00");

    let got = app.patch_json("/api/v1/users/u1", &json!({ "study_start": null }));
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["user"]["study_start"], Value::Null);
    assert_eq!(got.1["user"]["study_end"], "2025-03-10 12:00:00");

    let got = app.patch_json("/api/v1/users/u1", &json!({}));
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["user"], app.participant("u1"));
    assert_eq!(got.1["user"]["study_end"], "2025-03-10 12:00:00");
}

#[test]
fn patch_records_each_change_in_the_participants_history() {
    let app = spawn_app();
    enroll(&app, "u1", None, Some("2025-03-03"));

    app.patch_json("/api/v1/users/u1", &json!({ "study_end": "2025-04-01" }));
    app.patch_json("/api/v1/users/u1", &json!({ "study_end": null }));

    let events = sql_lines(
        app.database_url(),
        "SELECT kind || ':' || coalesce(study_end_sent, '-') AS out FROM participant_events \
         WHERE user_id = 'u1' ORDER BY id",
    );
    assert_eq!(
        events,
        [
            "enrolled:2025-03-03",
            "enrollment_changed:2025-04-01",
            "enrollment_changed:-"
        ]
    );
}

#[test]
fn patch_refuses_bad_changes_and_changes_nothing() {
    let app = spawn_app();
    enroll(&app, "u1", Some("2025-01-01"), Some("2025-03-01"));
    let before = app.participant("u1");
    let cases = [
        (
            json!({ "study_end": "2024-12-31" }),
            "study_end must be later than study_start.",
        ),
        (
            json!({ "study_start": "2025-03-01" }),
            "study_end must be later than study_start.",
        ),
        (json!({ "study_start": 1 }), "study_start must be a string."),
        (
            json!({ "study_end": "tomorrow" }),
            "study_end must be an ISO 8601 date-time such as 2025-01-01T12:00:00Z, \
             2025-01-01T14:00:00+02:00 or 2025-01-01 12:00:00 (without an offset it is read \
             in UTC).",
        ),
        (
            json!({ "study_start": "2025-01-02", "withdrawn": true }),
            "withdrawn cannot be changed; send study_start and/or study_end.",
        ),
        (
            json!({ "user_id": "u2" }),
            "user_id cannot be changed; send study_start and/or study_end.",
        ),
    ];

    for (body, message) in cases {
        let got = app.patch_json("/api/v1/users/u1", &body);
        assert_eq!(got, (400, error(message)), "{body}");
    }
    assert_eq!(app.participant("u1"), before);
    let got = app.client().send(
        "PATCH",
        "/api/v1/users/u1",
        None,
        &[("Content-Type", "text/plain")],
    );
    assert_eq!(got.status, 415, "{}", got.json);
}

#[test]
fn withdraw_records_time_and_reason_once() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("u1");

    let got = app.post_json(
        "/api/v1/users/u1/withdraw",
        &json!({ "reason": "withdrew consent by phone" }),
    );
    assert_eq!(got.0, 200, "{}", got.1);
    contract.check("post", "/api/v1/users/{user_id}/withdraw", &got);
    let user = &got.1["user"];
    assert_eq!(user["status"], "withdrawn");
    assert_eq!(user["withdrawal_reason"], "withdrew consent by phone");
    rfc3339(&user["withdrawn_at"], "withdrawn_at");
    assert_eq!(&app.participant("u1"), user);

    let again = app.post_json("/api/v1/users/u1/withdraw", &json!({ "reason": "again" }));
    assert_eq!(again, (409, error("User already withdrawn.")));
    contract.check("post", "/api/v1/users/{user_id}/withdraw", &again);
    assert_eq!(
        app.participant("u1")["withdrawal_reason"],
        "withdrew consent by phone"
    );
}

#[test]
fn withdraw_needs_a_reason() {
    let app = spawn_app();
    app.add_user("u1");

    check_cases(
        &app,
        "/api/v1/users/u1/withdraw",
        &[
            (json!({}), 400, "reason is required."),
            (json!({ "reason": null }), 400, "reason is required."),
            (json!({ "reason": "" }), 400, "reason is required."),
            (json!({ "reason": 3 }), 400, "reason must be a string."),
            (
                json!({ "reason": "x".repeat(1025) }),
                400,
                "reason must be at most 1024 bytes long.",
            ),
            (
                json!({ "reason": "a\nb" }),
                400,
                "reason must not contain control characters.",
            ),
        ],
    );
    assert_eq!(app.participant("u1")["status"], "active");
    let longest = "é".repeat(512);
    let got = app.post_json("/api/v1/users/u1/withdraw", &json!({ "reason": longest }));
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["user"]["withdrawal_reason"], json!(longest));
}

#[test]
fn erase_answers_the_audit_record_and_leaves_no_trace_of_the_id() {
    let app = spawn_app();
    let contract = served_contract(&app);
    app.add_user("keeps");
    enroll(&app, "to-erase", Some("2024-01-01"), None);
    let (_, answer) = app.action("to-erase", 0, 23.0);
    app.action("to-erase", 1, 23.0);
    app.action("keeps", 0, 23.0);
    let upload = crate::helpers::upload_body_for("to-erase", 0, 23.0, &answer);
    app.post_expecting("/api/v1/upload_data", &upload, 201);
    app.post_expecting(
        "/api/v1/users/to-erase/withdraw",
        &json!({ "reason": "asked to be erased" }),
        200,
    );

    let got = app.post_empty("/api/v1/users/to-erase/erase");

    assert_eq!(got.0, 200, "{}", got.1);
    contract.check("post", "/api/v1/users/{user_id}/erase", &got);
    let erasure = &got.1["erasure"];
    let id = erasure["id"].as_str().unwrap();
    assert_eq!(erasure["pseudonym"], format!("erased-{id}"));
    assert_eq!(
        erasure["row_counts"],
        json!({ "actions": 2, "participant_events": 2, "study_data": 1, "users": 1 })
    );
    assert!(
        erasure["participant_number"].as_i64().unwrap() > 0,
        "{erasure}"
    );
    rfc3339(&erasure["erased_at"], "erased_at");
    let backup = erasure["backup_file"].as_str().unwrap();
    let file = std::path::Path::new(backup);
    let in_dir = if file.is_absolute() {
        file.to_path_buf()
    } else {
        app.backup_dir().join(file.file_name().unwrap())
    };
    assert!(in_dir.is_file(), "the backup {backup} is in backup.dir");
    assert!(!got.1.to_string().contains("to-erase\""), "{}", got.1);

    assert_eq!(
        app.get("/api/v1/users/to-erase"),
        (404, error("User not found."))
    );
    assert_eq!(
        app.post_empty("/api/v1/users/to-erase/erase"),
        (404, error("User not found."))
    );
    let url = app.database_url();
    let holding = |sql: &str| sql_lines(url, sql);
    assert!(holding("SELECT user_id AS out FROM users WHERE user_id = 'to-erase'").is_empty());
    assert!(holding("SELECT user_id AS out FROM actions WHERE user_id = 'to-erase'").is_empty());
    assert!(holding("SELECT user_id AS out FROM study_data WHERE user_id = 'to-erase'").is_empty());
    assert!(
        holding("SELECT user_id AS out FROM participant_events WHERE user_id = 'to-erase'")
            .is_empty()
    );
    assert_eq!(
        holding(&format!(
            "SELECT user_id AS out FROM actions WHERE user_id = 'erased-{id}'"
        ))
        .len(),
        2,
        "the decisions are kept under the pseudonym"
    );
    assert_eq!(app.participant("keeps")["decisions"], 1);
    // The pseudonym names no participant: no request may address it, so nothing is ever
    // recorded for an erased participant again.
    let pseudonym = format!("erased-{id}");
    let reserved = (
        400,
        error("user_id must not start with 'erased-': such ids name erased participants."),
    );
    assert_eq!(app.get(&format!("/api/v1/users/{pseudonym}")), reserved);
    assert_eq!(app.action(&pseudonym, 5, 23.0), reserved);
    let upload = crate::helpers::upload_body_for(&pseudonym, 0, 23.0, &answer);
    assert_eq!(app.post_json("/api/v1/upload_data", &upload), reserved);
    let host = json!({
        "user_id": pseudonym, "timestamp": "2025-01-01T12:00:00Z", "decision_idx": 6,
        "context": {}, "action": 0, "action_prob": 0.5, "decided_by": "app",
    });
    assert_eq!(app.post_json("/api/v1/host_decision", &host), reserved);
    assert_eq!(
        app.patch_json(
            &format!("/api/v1/users/{pseudonym}"),
            &json!({ "study_end": null })
        ),
        reserved
    );
    assert_eq!(
        app.post_json(
            &format!("/api/v1/users/{pseudonym}/withdraw"),
            &json!({ "reason": "r" })
        ),
        reserved
    );
    assert_eq!(
        app.post_empty(&format!("/api/v1/users/{pseudonym}/erase")),
        reserved
    );
    assert_eq!(
        app.post_json("/api/v1/add_user", &json!({ "user_id": pseudonym })),
        reserved
    );
    assert_eq!(
        holding(&format!(
            "SELECT user_id AS out FROM study_data WHERE user_id = '{pseudonym}'"
        )),
        Vec::<String>::new()
    );
}

#[test]
fn erase_ignores_a_body() {
    let app = spawn_app();
    app.add_user("u1");

    let got = app.post_json("/api/v1/users/u1/erase", &json!({ "anything": 1 }));

    assert_eq!(got.0, 200, "{}", got.1);
}

#[test]
fn a_participant_erased_can_be_registered_again_as_someone_new() {
    let app = spawn_app();
    app.add_user("u1");
    app.action("u1", 0, 23.0);
    app.post_empty("/api/v1/users/u1/erase");

    app.add_user("u1");

    let user = app.participant("u1");
    assert_eq!(
        (&user["decisions"], &user["status"]),
        (&json!(0), &json!("active"))
    );
    assert_eq!(app.action("u1", 0, 23.0).0, 201);
}
