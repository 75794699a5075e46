//! Corrected uploads through the running service and `justin replay --updates`: a `thompson`
//! study whose uploads are corrected between updates replays every update exactly, because
//! each update's records are read back as it read them (the value in force when it started),
//! while the export shows the value in force now.

use std::io::Cursor;

use justin_backup::csv::CsvReader;
use justin_e2e::{env_for, justin, run, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

const AT: &str = "2025-01-01T12:00:00Z";

fn decide(served: &Served, user: &str) -> Value {
    let (status, answer) = served.post(
        "/api/v1/action",
        &json!({"user_id": user, "timestamp": AT, "decision_idx": 0, "context": {}}),
    );
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Uploads `reward` for `user`'s decision 0, as a correction when `correction` says so.
fn upload(served: &Served, user: &str, decision: &Value, reward: f64, correction: bool) {
    let mut body = json!({
        "user_id": user,
        "timestamp": AT,
        "decision_idx": 0,
        "data": {
            "context": {},
            "action": decision["action"],
            "action_prob": decision["action_prob"],
            "state": decision["state"],
            "outcome": {"reward": reward},
        },
    });
    if correction {
        body["correction"] = json!(true);
    }
    let (status, answer) = served.post("/api/v1/upload_data", &body);
    assert_eq!(status, 201, "{answer}");
}

fn update(served: &Served, callbacks: &CallbackReceiver) {
    let (status, accepted) = served.post(
        "/api/v1/update",
        &json!({"timestamp": AT, "callback_url": callbacks.url()}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(callbacks.next()["status"], "completed");
}

#[test]
fn updates_around_corrections_replay_exactly_and_the_export_shows_the_value_in_force() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    std::fs::write(
        dir.path().join("priors.json"),
        r#"{"mean": [0, 0], "variance": 1.0, "noise_variance": 1.0}"#,
    )
    .unwrap();
    let mut env = env_for(&db);
    env.extend([
        ("JUSTIN_ALGORITHM__NAME", "thompson".to_owned()),
        ("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".to_owned()),
        ("JUSTIN_ALGORITHM__OPTIONS__FEATURES", "[]".to_owned()),
        ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
    ]);
    let served = Served::start(dir.path(), &env);
    let callbacks = CallbackReceiver::start();
    let mut decisions = Vec::new();
    for user in ["p1", "p2"] {
        let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": user}));
        assert_eq!(status, 201);
        let decision = decide(&served, user);
        upload(&served, user, &decision, 1.0, false);
        decisions.push(decision);
    }

    // Version 2 learns from the originals, version 3 from p1's correction, version 4 from
    // p1's second correction and p2's first.
    update(&served, &callbacks);
    upload(&served, "p1", &decisions[0], 5.0, true);
    let (_, after_first) = served.get("/api/v1/parameters");
    update(&served, &callbacks);
    let (_, after_second) = served.get("/api/v1/parameters");
    assert_ne!(
        after_first["parameters"], after_second["parameters"],
        "the correction changed what the update learned"
    );
    upload(&served, "p1", &decisions[0], -2.0, true);
    upload(&served, "p2", &decisions[1], 3.5, true);
    update(&served, &callbacks);

    let replay = run(justin(dir.path(), &env).args(["replay", "--updates"]));
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay.stdout.contains(
            "replayed 3 updates: 3 exact, 0 within tolerance (relative 1e-9), 0 mismatches, 0 unverifiable"
        ),
        "{}",
        replay.stdout
    );
    assert!(
        replay.stdout.contains("; 0 inconsistent records"),
        "{}",
        replay.stdout
    );

    let export = run(justin(dir.path(), &env).args(["export", "--out", "study.csv"]));
    assert!(export.status.success(), "{}", export.stderr);
    let table = std::fs::read(dir.path().join("study.csv")).unwrap();
    let mut reader = CsvReader::new(Cursor::new(table));
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .map(Option::unwrap)
        .collect();
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let mut rows = Vec::new();
    while let Some(record) = reader.next_record().unwrap() {
        rows.push((
            record[column("user_id")].clone().unwrap(),
            record[column("reward")].clone().unwrap(),
            record[column("corrections")].clone().unwrap(),
            record[column("used_in_version")].clone().unwrap(),
        ));
    }
    assert_eq!(
        rows,
        [
            ("p1".into(), "-2.0".into(), "2".into(), "2".into()),
            ("p2".into(), "3.5".into(), "1".into(), "2".into()),
        ]
    );
}
