//! The watchdog across processes: two `justin serve` processes on one database (PostgreSQL,
//! or one SQLite file) check the study every second and share the verdict; a real webhook
//! receiver gets exactly one alert per change of state, whichever instance saw it first.
//! Also `justin monitor`'s report and exit status, and the simulated study of the recipe the
//! browser test uses (one `--silent` participant: one red missed-decisions finding).

use chrono::{DurationRound, SecondsFormat, TimeDelta, Utc};
use justin_e2e::{
    env_for, justin, run, sql_lines, CallbackReceiver, ScratchDir, Served, TestDatabase, WAIT,
};
use serde_json::{json, Value};

/// Every hour on the hour, UTC, with the default decision type; checks every second.
fn write_config(dir: &std::path::Path, alert_url: Option<&str>) {
    let times: Vec<String> = (0..24)
        .map(|h| format!("{{ decision_type = \"default\", at = \"{h:02}:00\" }}"))
        .collect();
    let mut text = format!(
        "[backup]\nenabled = false\n\n[update]\ncallback_backoff_ms = 50\n\n\
         [schedule]\ntime_zone = \"UTC\"\ntimes = [{}]\n\n[monitor]\ncheck_every_secs = 1\n",
        times.join(", ")
    );
    if let Some(url) = alert_url {
        text.push_str(&format!("alert_url = \"{url}\"\n"));
    }
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn stamp(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The alerts the database queued, as `state|status`, oldest first.
fn queued(db: &TestDatabase) -> Vec<String> {
    sql_lines(
        db.url(),
        "SELECT state || '|' || status AS out FROM monitor_alerts ORDER BY id",
    )
}

#[test]
fn two_instances_on_one_database_send_one_alert_per_change() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    // Answers 200 to every POST (the default receiver takes update callbacks only).
    let receiver = CallbackReceiver::failing_first(0, 200);
    write_config(dir.path(), Some(receiver.url()));
    let env = env_for(&db);
    let first = Served::start(dir.path(), &env);
    let second = Served::start(dir.path(), &env);
    let started = stamp(Utc::now() - TimeDelta::hours(5));

    // Green (no one expected) -> red: a participant who started five hours ago and never
    // called.
    let (status, body) = first.post(
        "/api/v1/add_user",
        &json!({ "user_id": "quiet-1", "study_start": started }),
    );
    assert_eq!(status, 201, "{body}");
    let alert = receiver.next();
    assert_eq!(alert["event"], "monitor_state_changed", "{alert}");
    assert_eq!(
        (&alert["state"], &alert["previous"]),
        (&json!("red"), &json!("green")),
        "{alert}"
    );
    let finding = &alert["findings"][0];
    assert_eq!(finding["kind"], "missed_decisions", "{alert}");
    // Who is concerned is for GET /api/v1/monitor to say: the stored alert names no one.
    assert_eq!(finding.get("participant"), None, "{alert}");

    // Red -> green: they withdraw, through the other instance.
    let (status, body) = second.post(
        "/api/v1/users/quiet-1/withdraw",
        &json!({ "reason": "left the study" }),
    );
    assert_eq!(status, 200, "{body}");
    let alert = receiver.next();
    assert_eq!(
        (&alert["state"], &alert["previous"]),
        (&json!("green"), &json!("red")),
        "{alert}"
    );

    // Green -> red again.
    let (status, body) = second.post(
        "/api/v1/add_user",
        &json!({ "user_id": "quiet-2", "study_start": started }),
    );
    assert_eq!(status, 201, "{body}");
    let alert = receiver.next();
    assert_eq!(
        (&alert["state"], &alert["previous"]),
        (&json!("red"), &json!("green")),
        "{alert}"
    );

    // Each change was queued once and delivered once: a second alert for a change would have
    // arrived before the next change's (the receiver keeps arrival order), or be a row here.
    let deadline = std::time::Instant::now() + WAIT;
    while queued(&db).iter().any(|a| !a.ends_with("|delivered")) {
        assert!(std::time::Instant::now() < deadline, "{:?}", queued(&db));
        std::thread::yield_now();
    }
    assert_eq!(
        queued(&db),
        ["red|delivered", "green|delivered", "red|delivered"]
    );
    assert_eq!(receiver.try_next(), None);

    // Both instances answer the same report.
    for served in [&first, &second] {
        let (status, report) = served.get("/api/v1/monitor");
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["state"], "red");
        assert_eq!(report["findings"][0]["participant"], "quiet-2");
    }
    first.terminate();
    second.terminate();
}

#[test]
fn justin_monitor_prints_the_report_and_exits_by_its_state() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    write_config(dir.path(), None);
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    let monitor = |json: bool| {
        let mut cmd = justin(dir.path(), &env);
        cmd.arg("monitor");
        if json {
            cmd.arg("--json");
        }
        run(&mut cmd)
    };

    let green = monitor(false);
    assert_eq!(green.status.code(), Some(0), "{green:?}");
    assert!(green.stdout.starts_with("green at "), "{green:?}");

    let (status, body) = served.post(
        "/api/v1/add_user",
        &json!({ "user_id": "quiet", "study_start": stamp(Utc::now() - TimeDelta::hours(5)) }),
    );
    assert_eq!(status, 201, "{body}");
    let red = monitor(false);
    assert_eq!(red.status.code(), Some(2), "{red:?}");
    assert!(
        red.stdout
            .contains("red    missed_decisions participant=quiet decision_type=default"),
        "{red:?}"
    );
    let red = monitor(true);
    assert_eq!(red.status.code(), Some(2), "{red:?}");
    let report: Value = serde_json::from_str(&red.stdout).unwrap();
    assert_eq!(report["state"], "red");
    assert_eq!(report["findings"][0]["participant"], "quiet");

    let mut cmd = justin(dir.path(), &env);
    let usage = run(cmd.args(["monitor", "--no-such-flag"]));
    assert_eq!(usage.status.code(), Some(3), "{usage:?}");
    served.terminate();
}

/// The recipe in the notes the browser test builds on: an hourly schedule, a run whose last
/// decision time is the latest hour, and participant 2 silent from decision time 3.
#[test]
fn a_simulated_study_with_one_silent_participant_has_one_red_missed_decisions_finding() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    write_config(dir.path(), None);
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let start = stamp(hour - TimeDelta::hours(7));

    let mut cmd = justin(dir.path(), &[]);
    let sim = run(cmd.args([
        "simulate",
        "--url",
        &served.base_url,
        "--participants",
        "4",
        "--decision-times",
        "8",
        "--update-every",
        "8",
        "--start",
        &start,
        "--decision-time-secs",
        "3600",
        "--silent",
        "2@3",
        "--user-prefix",
        "p-",
        "--outcome-field",
        "clicks",
        "--out",
        "sim.csv",
    ]));
    assert_eq!(sim.status.code(), Some(0), "{sim:?}");

    let (status, report) = served.get("/api/v1/monitor");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["state"], "red", "{report}");
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    let f = &findings[0];
    assert_eq!(
        (
            &f["severity"],
            &f["kind"],
            &f["participant"],
            &f["decision_type"]
        ),
        (
            &json!("red"),
            &json!("missed_decisions"),
            &json!("p-2"),
            &json!("default")
        )
    );
    assert_eq!(f["since"], stamp(hour - TimeDelta::hours(4)));
    let count = f["count"].as_u64().unwrap();
    assert!((4..=5).contains(&count), "{f}");
    served.terminate();
}
