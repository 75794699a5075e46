//! `/dashboard`: each page shows what was stored (counts per day, versions, participants'
//! statuses and latest activity, the update history), escapes every value a client sent,
//! answers 404 and 400 pages, and follows the API's keys (a read key opens it, no key is 401
//! with a Basic challenge).

use justin_http::config::{ApiKeyConfig, KeyAccess};
use serde_json::{json, Value};

use crate::helpers::{
    action_body, spawn_app, spawn_app_with, upload_body_for, CallbackReceiver, TestApp, WAIT,
};

const HOSTILE: &str = "<script>alert(\"x\")</script>&'";

/// A page: its status, `WWW-Authenticate` and body.
struct Page {
    status: u16,
    challenge: Option<String>,
    body: String,
}

fn fetch(app: &TestApp, path: &str, authorization: Option<&str>) -> Page {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(WAIT))
        .build()
        .into();
    let mut request = agent.get(format!("{}{path}", app.base_url()));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.call().unwrap();
    let challenge = response
        .headers()
        .get("WWW-Authenticate")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let content_type = response
        .headers()
        .get("Content-Type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    if status == 200 {
        assert_eq!(content_type.as_deref(), Some("text/html; charset=utf-8"));
    }
    Page {
        status,
        challenge,
        body,
    }
}

fn page(app: &TestApp, path: &str) -> String {
    let p = fetch(app, path, None);
    assert_eq!(p.status, 200, "{path}: {}", p.body);
    p.body
}

/// The text of the element opened by `open` (its start tag, exactly), up to the next tag.
fn text_after<'a>(html: &'a str, open: &str) -> Option<&'a str> {
    let start = html.find(open)? + open.len();
    let rest = &html[start..];
    Some(&rest[..rest.find('<')?])
}

/// The `<tr …>…</tr>` whose start tag holds `attribute`.
fn row<'a>(html: &'a str, attribute: &str) -> Option<&'a str> {
    let at = html.find(&format!("<tr {attribute}"))?;
    let rest = &html[at..];
    Some(&rest[..rest.find("</tr>")?])
}

/// The text of a row's `td[data-col=col]`.
fn col<'a>(row: &'a str, col: &str) -> &'a str {
    let open = format!("data-col=\"{col}\">");
    text_after(row, &open).unwrap_or_else(|| panic!("no {col} in {row}"))
}

fn decide(app: &TestApp, user: &str, idx: i64, timestamp: &str) -> Value {
    let mut body = action_body(user, idx, 20.0);
    body["timestamp"] = json!(timestamp);
    let (status, answer) = app.post_json("/api/v1/action", &body);
    assert_eq!(status, 201, "{answer}");
    answer
}

fn upload(app: &TestApp, user: &str, idx: i64, timestamp: &str, answer: &Value) {
    let mut body = upload_body_for(user, idx, 20.0, answer);
    body["timestamp"] = json!(timestamp);
    let (status, reply) = app.post_json("/api/v1/upload_data", &body);
    assert_eq!(status, 201, "{reply}");
}

const DAY1: &str = "2025-01-01T12:00:00Z";
const DAY2: &str = "2025-01-02T23:30:00Z";

#[test]
fn the_overview_counts_what_was_stored_per_day() {
    let app = spawn_app();
    for user in ["alice", "bob", HOSTILE] {
        app.add_user(user);
    }
    let a0 = decide(&app, "alice", 0, DAY1);
    let a1 = decide(&app, "alice", 1, DAY1);
    decide(&app, "alice", 2, DAY2);
    let h0 = decide(&app, HOSTILE, 0, DAY2);
    upload(&app, "alice", 0, DAY1, &a0);
    upload(&app, HOSTILE, 0, DAY2, &h0);

    let html = page(&app, "/dashboard");

    assert_eq!(
        text_after(&html, "<span id=\"participants-count\">"),
        Some("3")
    );
    assert_eq!(
        text_after(&html, "<span id=\"parameter-version\">"),
        Some("1")
    );
    assert_eq!(
        text_after(&html, "<span id=\"monitor-state\" class=\"state green\">"),
        Some("green")
    );
    let day1 = row(&html, "data-day=\"2025-01-01\"").unwrap();
    assert_eq!((col(day1, "decisions"), col(day1, "uploads")), ("2", "1"));
    let day2 = row(&html, "data-day=\"2025-01-02\"").unwrap();
    assert_eq!((col(day2, "decisions"), col(day2, "uploads")), ("2", "1"));
    assert!(row(&html, "data-day=\"2025-01-03\"").is_none());
    assert!(html.contains("<table id=\"findings\">"));
    assert!(html.matches("<svg role=\"img\"").count() >= 3, "{html}");
    assert!(
        !html.contains("http://") || !html.contains("src="),
        "nothing is fetched"
    );

    // What comes later is counted on the next load, a late upload in its own day.
    decide(&app, "bob", 0, DAY1);
    upload(&app, "alice", 1, DAY1, &a1);
    let html = page(&app, "/dashboard");
    let day1 = row(&html, "data-day=\"2025-01-01\"").unwrap();
    assert_eq!((col(day1, "decisions"), col(day1, "uploads")), ("3", "2"));
    let day2 = row(&html, "data-day=\"2025-01-02\"").unwrap();
    assert_eq!((col(day2, "decisions"), col(day2, "uploads")), ("2", "1"));
}

#[test]
fn days_are_those_of_the_schedules_time_zone() {
    let app = spawn_app_with(|config| {
        config.schedule.time_zone = Some("Europe/Berlin".into());
        config.schedule.times = vec![justin_http::config::ScheduleTimeConfig {
            decision_type: None,
            at: "08:00".into(),
        }];
    });
    app.add_user("alice");
    decide(&app, "alice", 0, DAY2);

    let html = page(&app, "/dashboard");

    // 23:30 UTC on 2 January is 00:30 on 3 January in Berlin.
    assert!(row(&html, "data-day=\"2025-01-02\"").is_none(), "{html}");
    let day = row(&html, "data-day=\"2025-01-03\"").unwrap();
    assert_eq!(col(day, "decisions"), "1");
}

#[test]
fn the_participants_page_shows_status_and_latest_activity_escaped() {
    let app = spawn_app();
    app.add_user("alice");
    app.add_user(HOSTILE);
    let (status, body) = app.post_json(
        "/api/v1/add_user",
        &json!({ "user_id": "later", "study_start": "2999-01-01T00:00:00Z" }),
    );
    assert_eq!(status, 201, "{body}");
    app.add_user("gone");
    let (status, body) =
        app.post_json("/api/v1/users/gone/withdraw", &json!({ "reason": HOSTILE }));
    assert_eq!(status, 200, "{body}");
    let answer = decide(&app, "alice", 0, DAY1);
    decide(&app, "alice", 1, DAY2);
    upload(&app, "alice", 0, DAY1, &answer);

    let html = page(&app, "/dashboard/participants");

    assert!(html.contains("<table id=\"participants\">"));
    let alice = row(&html, "data-participant=\"alice\"").unwrap();
    assert_eq!(col(alice, "status"), "active");
    assert_eq!(col(alice, "last-decision"), "2025-01-02T23:30:00Z");
    assert_ne!(col(alice, "last-upload"), "—");
    let later = row(&html, "data-participant=\"later\"").unwrap();
    assert_eq!(col(later, "status"), "not started");
    assert_eq!(col(later, "last-decision"), "—");
    assert_eq!(col(later, "last-upload"), "—");
    let gone = row(&html, "data-participant=\"gone\"").unwrap();
    assert_eq!(col(gone, "status"), "withdrawn");
    // The hostile id comes back exactly, as text: escaped, never as markup.
    let escaped = "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;";
    assert!(
        row(&html, &format!("data-participant=\"{escaped}\"")).is_some(),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");
    let overview = page(&app, "/dashboard");
    assert_eq!(
        text_after(&overview, "<span id=\"participants-count\">"),
        Some("4")
    );
}

#[test]
fn the_update_pages_show_the_history_and_the_policy_before_and_after() {
    let app = spawn_app();
    let receiver = CallbackReceiver::start();
    app.add_user("alice");
    for i in 0..5 {
        let answer = decide(&app, "alice", i, DAY1);
        upload(&app, "alice", i, DAY1, &answer);
    }
    let id = app.request_update(receiver.url());
    app.wait_for_update(&id, |s| s["update_status"] == "completed");

    let list = page(&app, "/dashboard/updates");
    let update = row(&list, &format!("data-update-id=\"{id}\"")).unwrap();
    assert!(update.contains(&format!("href=\"/dashboard/updates/{id}\"")));
    assert_eq!(col(update, "status"), "completed");
    assert_eq!(col(update, "version"), "2");
    assert_eq!(col(update, "rows-read"), "5");

    let one = page(&app, &format!("/dashboard/updates/{id}"));
    assert_eq!(text_after(&one, "<span id=\"version-before\">"), Some("1"));
    assert_eq!(text_after(&one, "<span id=\"version-after\">"), Some("2"));
    assert!(one.contains("<table id=\"parameters\">"));
    assert!(one.contains("<svg role=\"img\""));
    // flat_prob's probability does not depend on the state: every sampled point has both.
    assert_eq!(one.matches("<tr><td>alice</td>").count(), 5, "{one}");
    let overview = page(&app, "/dashboard");
    assert_eq!(
        text_after(&overview, "<span id=\"parameter-version\">"),
        Some("2")
    );
}

#[test]
fn unknown_and_malformed_addresses_get_pages_of_their_own() {
    let app = spawn_app();

    let unknown = fetch(
        &app,
        "/dashboard/updates/6f1c2a4e-0000-4000-8000-000000000000",
        None,
    );
    assert_eq!(unknown.status, 404);
    assert!(unknown
        .body
        .contains("<p id=\"error\">No update request has this id.</p>"));
    let malformed = fetch(&app, "/dashboard/updates/%3Cb%3E", None);
    assert_eq!(malformed.status, 400);
    assert!(malformed.body.contains("The update id must be a UUID."));
    let nowhere = fetch(&app, "/dashboard/nowhere", None);
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.body.contains("<p id=\"error\">"));
    assert_eq!(fetch(&app, "/dashboard/", None).status, 200);
}

#[test]
fn a_read_key_opens_the_dashboard_and_no_key_is_refused() {
    use base64::Engine as _;
    let app = spawn_app_with(|config| {
        config.auth.api_keys = vec![
            ApiKeyConfig {
                name: "study-app".into(),
                sha256: None,
                key: Some("full-key-0123456789".into()),
                access: KeyAccess::Full,
            },
            ApiKeyConfig {
                name: "study-team".into(),
                sha256: None,
                key: Some("read-key-0123456789".into()),
                access: KeyAccess::Read,
            },
        ];
    });
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("team:read-key-0123456789")
    );

    for path in [
        "/dashboard",
        "/dashboard/participants",
        "/dashboard/updates",
    ] {
        let refused = fetch(&app, path, None);
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(
            refused.challenge.as_deref(),
            Some("Basic realm=\"JustIn dashboard\", charset=\"UTF-8\""),
            "{path}"
        );
        assert_eq!(fetch(&app, path, Some(&basic)).status, 200, "{path}");
        let bearer = fetch(&app, path, Some("Bearer read-key-0123456789"));
        assert_eq!(bearer.status, 200, "{path}");
    }
}
