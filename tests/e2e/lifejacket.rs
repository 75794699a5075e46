//! `justin export --for lifejacket`: a small thompson study run through the service (staggered
//! starts, a closed window, a withdrawal, an unavailable decision, a missing upload, a
//! scheduled time without a call, two updates), exported, and the files checked for what
//! lifejacket requires: every participant at every calendar time once, one unbroken in-study
//! stretch each, dense non-decreasing policy numbers, each update's rows as many as it read,
//! numeric covariates.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, NaiveTime, SecondsFormat, Utc};
use justin_e2e::{env_for, justin, run, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

/// The schedule's one decision time a day, in UTC.
const AT: (u32, u32) = (8, 0);

/// Day `k` from today (the service's clock, read once per run), at `hour`:00 UTC.
fn day(k: i64, hour: u32) -> DateTime<Utc> {
    static TODAY: std::sync::OnceLock<chrono::NaiveDate> = std::sync::OnceLock::new();
    let today = *TODAY.get_or_init(|| Utc::now().date_naive());
    (today + Duration::days(k))
        .and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap())
        .and_utc()
}

fn text(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

struct Study<'a> {
    served: &'a Served,
    callbacks: CallbackReceiver,
}

impl Study<'_> {
    fn add(&self, user: &str, start: DateTime<Utc>, end: Option<DateTime<Utc>>) {
        let mut body = json!({"user_id": user, "study_start": text(start)});
        if let Some(end) = end {
            body["study_end"] = json!(text(end));
        }
        let (status, answer) = self.served.post("/api/v1/add_user", &body);
        assert_eq!(status, 201, "{answer}");
    }

    /// The decision of `user` at `idx`, requested at the schedule's time on day `k`; uploaded
    /// with reward `reward` unless `None`.
    fn decide(&self, user: &str, idx: i64, k: i64, available: bool, reward: Option<f64>) -> Value {
        let when = text(day(k, AT.0));
        let context = json!({"temp": 0.5 * idx as f64 - 1.0});
        let mut body = json!({
            "user_id": user, "timestamp": when, "decision_idx": idx, "context": context,
        });
        if !available {
            body["available"] = json!(false);
            body["unavailable_reason"] = json!("driving");
        }
        let (status, decision) = self.served.post("/api/v1/action", &body);
        assert_eq!(status, 201, "{decision}");
        if let Some(reward) = reward {
            let (status, answer) = self.served.post(
                "/api/v1/upload_data",
                &json!({
                    "user_id": user, "timestamp": when, "decision_idx": idx,
                    "data": {
                        "context": context,
                        "action": decision["action"],
                        "action_prob": decision["action_prob"],
                        "state": decision["state"],
                        "outcome": {"reward": reward},
                    },
                }),
            );
            assert_eq!(status, 201, "{answer}");
        }
        decision
    }

    fn update(&self) {
        let (status, accepted) = self.served.post(
            "/api/v1/update",
            &json!({"timestamp": text(Utc::now()), "callback_url": self.callbacks.url()}),
        );
        assert_eq!(status, 202, "{accepted}");
        assert_eq!(self.callbacks.next()["status"], "completed");
    }
}

/// A CSV file of the export as rows of column name → text (empty for a missing value).
fn csv_rows(path: &std::path::Path) -> Vec<BTreeMap<String, String>> {
    let file = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let mut reader = justin_backup::csv::CsvReader::new(file);
    let mut records: Vec<Vec<String>> = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        records.push(record.into_iter().map(Option::unwrap_or_default).collect());
    }
    let header = records.remove(0);
    records
        .into_iter()
        .map(|r| header.iter().cloned().zip(r).collect())
        .collect()
}

#[test]
fn a_thompson_study_exports_for_lifejacket() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"variance": 1.0, "noise_variance": 1.0}"#,
    )
    .unwrap();
    let mut env = env_for(&db);
    env.extend([
        ("JUSTIN_ALGORITHM__NAME", "thompson".to_owned()),
        ("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".to_owned()),
        (
            "JUSTIN_ALGORITHM__OPTIONS__FEATURES",
            r#"["temp"]"#.to_owned(),
        ),
        (
            "JUSTIN_SCHEDULE__TIMES",
            format!(r#"[{{at="{:02}:{:02}"}}]"#, AT.0, AT.1),
        ),
        ("JUSTIN_SCHEDULE__TIME_ZONE", "UTC".to_owned()),
    ]);
    let served = Served::start(dir.path(), &env);
    let study = Study {
        served: &served,
        callbacks: CallbackReceiver::start(),
    };
    // p1 from day -3 to the start of day 2 (cells -3 to 1); p2 from day -2 on; p3 from day -3
    // until they withdraw, now (on day 0).
    study.add("p1", day(-3, 0), Some(day(2, 0)));
    study.add("p2", day(-2, 0), None);
    study.add("p3", day(-3, 0), None);
    // Registered and in the study, never asked for a decision: counted, not in the grid.
    study.add("idle", day(-3, 0), None);

    study.decide("p1", 0, -3, true, Some(1.0));
    study.decide("p3", 0, -3, true, Some(0.0));
    study.decide("p1", 1, -2, true, Some(0.5));
    study.decide("p2", 0, -2, true, Some(2.0));
    study.decide("p3", 1, -2, true, Some(1.5));
    study.update();
    study.decide("p1", 2, -1, true, Some(-0.5));
    // Unavailable: stored with probability 0, its upload never read by an update.
    study.decide("p2", 1, -1, false, Some(3.0));
    study.decide("p3", 2, -1, true, Some(0.25));
    // A missing upload.
    study.decide("p2", 2, 0, true, None);
    let (status, withdrawn) = served.post(
        "/api/v1/users/p3/withdraw",
        &json!({"reason": "moved away"}),
    );
    assert_eq!(status, 200, "{withdrawn}");
    study.update();
    // p1 makes no call on day 0. p3's call after the withdrawal is stored out of the study.
    study.decide("p1", 3, 1, true, Some(1.0));
    study.decide("p2", 3, 1, true, Some(0.75));
    let late = study.decide("p3", 3, 1, true, None);
    assert_eq!(late["in_study"], json!(false), "{late}");
    study.decide("p2", 4, 2, true, Some(1.25));

    let out = run(justin(dir.path(), &env).args(["export", "--for", "lifejacket", "export"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("for lifejacket to export"),
        "{}",
        out.stdout
    );
    let export = dir.path().join("export");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("manifest.json")).unwrap())
            .unwrap();

    // The grid: days -3 to 2, every participant at every calendar time, once, in order.
    let calendar = &manifest["calendar"];
    assert_eq!(calendar["cells_per_day"], 1);
    assert_eq!(
        calendar["origin_date"],
        json!(day(-3, 0).format("%Y-%m-%d").to_string())
    );
    assert_eq!(
        (&calendar["first_calendar_t"], &calendar["last_calendar_t"]),
        (&json!(0), &json!(5))
    );
    let grid = csv_rows(&export.join("grid.csv"));
    let keys: Vec<(String, i64)> = grid
        .iter()
        .map(|r| (r["user_id"].clone(), r["calendar_t"].parse().unwrap()))
        .collect();
    let expected: Vec<(String, i64)> = ["p1", "p2", "p3"]
        .iter()
        .flat_map(|u| (0..=5).map(move |t| ((*u).to_owned(), t)))
        .collect();
    assert_eq!(keys, expected);
    let column = |user: &str, name: &str| -> Vec<String> {
        grid.iter()
            .filter(|r| r["user_id"] == user)
            .map(|r| r[name].clone())
            .collect()
    };
    assert_eq!(column("p1", "scheduled_at")[0], text(day(-3, AT.0)));
    assert_eq!(column("p1", "in_study"), ["1", "1", "1", "1", "1", "0"]);
    assert_eq!(column("p2", "in_study"), ["0", "1", "1", "1", "1", "1"]);
    // p3 is in the study at each scheduled time before their withdrawal.
    let withdrawn_at =
        DateTime::parse_from_rfc3339(withdrawn["user"]["withdrawn_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&Utc);
    let p3_in: Vec<&str> = (-3..=2)
        .map(|k| {
            if day(k, AT.0) < withdrawn_at {
                "1"
            } else {
                "0"
            }
        })
        .collect();
    assert_eq!(column("p3", "in_study"), p3_in);
    assert_eq!(column("p3", "called"), ["1", "1", "1", "0", "1", "0"]);
    assert_eq!(column("p3", "available")[4], "0");
    assert_eq!(column("p1", "called"), ["1", "1", "1", "0", "1", "0"]);
    assert_eq!(column("p2", "available"), ["0", "1", "0", "1", "1", "1"]);
    assert_eq!(column("p2", "action1_prob")[2], "0.0");
    assert_eq!(column("p2", "observed"), ["0", "1", "1", "0", "1", "1"]);
    assert_eq!(column("p2", "reward")[3], "0.0");
    for user in ["p1", "p2", "p3"] {
        // One unbroken in-study stretch.
        let flags = column(user, "in_study").concat();
        assert!(!flags.trim_matches('0').contains('0'), "{user}: {flags}");
        // Policy numbers on every in-study row, never decreasing, empty elsewhere.
        let nums: Vec<i64> = grid
            .iter()
            .filter(|r| r["user_id"] == user && r["in_study"] == "1")
            .map(|r| r["policy_num"].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[0] <= w[1]), "{user}: {nums:?}");
        assert!(grid
            .iter()
            .filter(|r| r["user_id"] == user && r["in_study"] == "0")
            .all(|r| r["policy_num"].is_empty()));
    }
    assert_eq!(column("p1", "policy_num"), ["1", "1", "2", "2", "3", ""]);
    // Dense: the policy numbers in use are 1, 2, 3, one per version that drove an in-study
    // decision.
    let used: BTreeSet<i64> = grid
        .iter()
        .filter(|r| r["in_study"] == "1" && r["called"] == "1")
        .map(|r| r["policy_num"].parse().unwrap())
        .collect();
    assert_eq!(used, BTreeSet::from([1, 2, 3]));
    assert_eq!(
        manifest["policies"],
        json!([{"policy_num": 1, "parameter_version": 1},
               {"policy_num": 2, "parameter_version": 2},
               {"policy_num": 3, "parameter_version": 3}])
    );
    // Covariates are numbers wherever the decision has a state.
    assert_eq!(manifest["covariates"], json!(["intercept", "temp"]));
    for row in grid.iter().filter(|r| r["has_state"] == "1") {
        for name in ["intercept", "temp"] {
            let v: f64 = row[name].parse().unwrap_or_else(|_| panic!("{row:?}"));
            assert!(v.is_finite());
        }
    }

    // Each update's rows: as many as its provenance says it read, with their calendar times.
    let parameters: Vec<Value> = std::fs::read_to_string(export.join("parameters.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(parameters.len(), 3);
    let update_rows = csv_rows(&export.join("update_rows.csv"));
    for p in &parameters[1..] {
        let version = p["parameter_version"].as_i64().unwrap().to_string();
        let read = update_rows
            .iter()
            .filter(|r| r["parameter_version"] == version)
            .count();
        assert_eq!(json!(read), p["update"]["rows_read"], "version {version}");
        assert_eq!(p["beta"].as_array().unwrap().len(), 14, "{p}");
    }
    // The first read p1, p2 and p3's first days; the second left out p3 (withdrawn), the
    // unavailable decision and the missing upload.
    assert_eq!(parameters[1]["update"]["rows_read"], 5);
    assert_eq!(parameters[2]["update"]["rows_read"], 4);
    assert!(update_rows.iter().all(|r| !r["calendar_t"].is_empty()));
    assert!(update_rows
        .iter()
        .all(|r| r["temp"].parse::<f64>().is_ok() && r["reward"].parse::<f64>().is_ok()));

    let counts = &manifest["counts"];
    assert_eq!(counts["participants"], 3);
    assert_eq!(counts["grid_rows"], 18);
    assert_eq!(counts["decisions"], 13);
    assert_eq!(counts["unplaced_decisions"], 0);
    assert_eq!(counts["updates"], 2);
    assert_eq!(counts["policy_decreases"], 0);
    assert_eq!(counts["participants_without_decisions"], 1);

    // A second export into the same directory is refused, and changes nothing.
    let again = run(justin(dir.path(), &env).args(["export", "--for", "lifejacket", "export"]));
    assert!(!again.status.success());
    assert!(again.stderr.contains("is not empty"), "{}", again.stderr);
}

#[test]
fn the_export_for_lifejacket_refuses_without_a_schedule_and_for_flat_prob() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let out = run(justin(dir.path(), &env).args(["export", "--for", "lifejacket", "x"]));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("set [schedule] times"),
        "{}",
        out.stderr
    );
    let mut env = env_for(&db);
    env.push(("JUSTIN_SCHEDULE__TIMES", r#"[{at="08:00"}]"#.to_owned()));
    let out = run(justin(dir.path(), &env).args(["export", "--for", "lifejacket", "x"]));
    assert!(!out.status.success());
    assert!(
        out.stderr.contains(
            "flat_prob's update is a fixed step on a sign, not a loss or an estimating function"
        ),
        "{}",
        out.stderr
    );
    assert!(!dir.path().join("x").exists());
}
