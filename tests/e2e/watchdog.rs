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

/// The clip-bound share through `thompson`: the bounds counted are the algorithm's own
/// (0.3 and 0.7 here, inside the default 0.2 and 0.8, so a watchdog that used the defaults
/// would count nothing), and a posterior that has become confident shows as decisions at the
/// upper bound.
#[test]
fn a_thompson_posterior_pinned_at_its_clip_bound_is_a_clip_bound_share_finding() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"mean": [0, 0], "variance": 1.0, "noise_variance": 1.0}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[backup]\nenabled = false\n",
    )
    .unwrap();
    let mut env = env_for(&db);
    env.extend([
        ("JUSTIN_ALGORITHM__NAME", "thompson".to_owned()),
        ("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".to_owned()),
        ("JUSTIN_ALGORITHM__OPTIONS__FEATURES", "[]".to_owned()),
        (
            "JUSTIN_ALGORITHM__OPTIONS__MIN_PROBABILITY",
            "0.3".to_owned(),
        ),
        (
            "JUSTIN_ALGORITHM__OPTIONS__MAX_PROBABILITY",
            "0.7".to_owned(),
        ),
    ]);
    let served = Served::start(dir.path(), &env);
    let now = stamp(Utc::now());
    let (status, body) = served.post("/api/v1/add_user", &json!({ "user_id": "p1" }));
    assert_eq!(status, 201, "{body}");
    let decide = |idx: i64| {
        let (status, answer) = served.post(
            "/api/v1/action",
            &json!({ "user_id": "p1", "timestamp": now, "decision_idx": idx,
                     "context": {} }),
        );
        assert_eq!(status, 201, "{answer}");
        answer["action_prob"].as_f64().unwrap()
    };
    let clip_findings = || {
        let (status, report) = served.get("/api/v1/monitor");
        assert_eq!(status, 200, "{report}");
        let found: Vec<Value> = report["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["kind"] == "clip_bound_share")
            .cloned()
            .collect();
        (report["state"].clone(), found)
    };

    // Under the prior P(action = 1) = 1/2: no decision at a bound.
    for idx in 0..20 {
        assert_eq!(decide(idx), 0.5);
    }
    let (state, found) = clip_findings();
    assert_eq!((state, found), (json!("green"), vec![]));

    // Forty records in which action 1 always paid 5 more: the posterior is sure, and every
    // decision after the update is clipped to 0.7.
    for idx in 1000..1040 {
        let (status, answer) = served.post(
            "/api/v1/upload_data",
            &json!({ "user_id": "p1", "timestamp": now, "decision_idx": idx, "data": {
                "context": {}, "action": idx % 2, "action_prob": 0.5, "state": [1],
                "outcome": { "reward": 5.0 * (idx % 2) as f64 } } }),
        );
        assert_eq!(status, 201, "{answer}");
    }
    let callbacks = CallbackReceiver::start();
    let (status, answer) = served.post(
        "/api/v1/update",
        &json!({ "timestamp": now, "callback_url": callbacks.url() }),
    );
    assert_eq!(status, 202, "{answer}");
    assert_eq!(callbacks.next()["status"], "completed");
    for idx in 100..300 {
        assert_eq!(decide(idx), 0.7);
    }

    // 200 of 220 (90.9 %) at a bound: over the yellow threshold (90 %), under the red (99 %).
    let (state, found) = clip_findings();
    assert_eq!(state, "yellow");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["severity"], "yellow");
    assert_eq!(found[0]["count"], 200);
    let message = found[0]["message"].as_str().unwrap();
    assert!(message.starts_with("200 of 220 "), "{message}");
    served.terminate();
}
