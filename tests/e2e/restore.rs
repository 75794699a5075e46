//! Restore: a backup put back after a reset gives the same rows, the same parameters and the
//! same next decisions; restore refuses without `--yes` and refuses files that are not complete
//! backups, changing nothing either way.

use std::path::Path;

use justin_e2e::{
    env_for, justin, reported_backup, row_counts, run, CallbackReceiver, Finished, ScratchDir,
    Served, TestDatabase,
};
use serde_json::{json, Value};

const USERS: [&str; 2] = ["p1", "p2"];
const DECISIONS: i64 = 10;
/// A decision asked for after the backup, so not in it.
const LATER_DECISION: i64 = 100;

fn action_body(user: &str, idx: i64) -> Value {
    json!({
        "user_id": user,
        "timestamp": "2025-01-01T12:00:00Z",
        "decision_idx": idx,
        "context": {"temperature": 20 + idx},
    })
}

/// The parts of an `/action` answer that must come out the same again.
fn drawn(body: &Value) -> (Value, Value, Value) {
    (
        body["action"].clone(),
        body["action_prob"].clone(),
        body["state"].clone(),
    )
}

fn output(out: &Finished) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

#[test]
fn restore_puts_a_backup_back_exactly() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.extend([
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", "20".to_owned()),
        ("JUSTIN_UPDATE__CALLBACK_BACKOFF_MS", "10".to_owned()),
    ]);
    let served = Served::start(dir.path(), &env);
    let receiver = CallbackReceiver::start();
    let mut decisions = Vec::new();
    for user in USERS {
        let (status, body) = served.post("/api/v1/add_user", &json!({"user_id": user}));
        assert_eq!(status, 201, "{body}");
        for idx in 0..DECISIONS {
            let (status, body) = served.post("/api/v1/action", &action_body(user, idx));
            assert_eq!(status, 201, "{user}/{idx}: {body}");
            if idx % 2 == 0 {
                let upload = json!({
                    "user_id": user,
                    "timestamp": "2025-01-01T13:00:00Z",
                    "decision_idx": idx,
                    "data": {
                        "context": {"temperature": 20 + idx},
                        "action": body["action"],
                        "action_prob": body["action_prob"],
                        "state": body["state"],
                        "outcome": {"clicks": idx},
                    },
                });
                let (status, answer) = served.post("/api/v1/upload_data", &upload);
                assert_eq!(status, 201, "{user}/{idx}: {answer}");
            }
            decisions.push((user, idx, drawn(&body)));
        }
    }
    let (status, update) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T14:00:00Z", "callback_url": receiver.url()}),
    );
    assert_eq!(status, 202, "{update}");
    assert_eq!(receiver.next()["status"], "completed");
    let (_, parameters) = served.get("/api/v1/parameters");
    assert_eq!(parameters["version"], 2, "{parameters}");
    let counts_before = row_counts(db.url());

    let out = run(justin(dir.path(), &env).arg("backup"));
    assert!(out.status.success(), "{}", output(&out));
    let backup = reported_backup(dir.path(), &out);
    let (status, later) = served.post("/api/v1/action", &action_body("p1", LATER_DECISION));
    assert_eq!(status, 201, "{later}");
    served.terminate();
    let out = run(justin(dir.path(), &env).args(["reset-db", "--yes"]));
    assert!(out.status.success(), "{}", output(&out));
    let counts_after_reset = row_counts(db.url());
    assert_eq!(counts_after_reset["users"], 0, "{counts_after_reset:?}");

    let unconfirmed = run(justin(dir.path(), &env).arg("restore").arg(&backup));
    assert_eq!(
        unconfirmed.status.code(),
        Some(2),
        "{}",
        output(&unconfirmed)
    );
    assert!(
        unconfirmed.stdout.contains("Nothing was changed"),
        "{}",
        output(&unconfirmed)
    );
    assert_eq!(
        row_counts(db.url()),
        counts_after_reset,
        "restore without --yes changed nothing"
    );
    let out = run(justin(dir.path(), &env)
        .arg("restore")
        .arg(&backup)
        .arg("--yes"));
    assert!(out.status.success(), "{}", output(&out));
    assert_eq!(row_counts(db.url()), counts_before, "every row is back");

    let served = Served::start(dir.path(), &env);
    let (_, restored) = served.get("/api/v1/parameters");
    assert_eq!(
        restored, parameters,
        "the parameters in force are the backup's"
    );
    for (user, idx, before) in &decisions {
        let (status, body) = served.post("/api/v1/action", &action_body(user, *idx));
        if idx % 2 == 0 {
            // Study data was uploaded for it, and is back too.
            assert_eq!(
                (status, body["message"].as_str()),
                (400, Some("Decision index already exists.")),
                "{user}/{idx}: {body}"
            );
        } else {
            assert_eq!(status, 200, "{user}/{idx} is stored: {body}");
            assert_eq!(&drawn(&body), before, "{user}/{idx}");
        }
    }
    // A decision the backup does not hold is drawn again, from the same parameters, and gets
    // an id after the restored ones.
    let (status, again) = served.post("/api/v1/action", &action_body("p1", LATER_DECISION));
    assert_eq!(status, 201, "{again}");
    assert_eq!(drawn(&again), drawn(&later));
    let (status, body) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("User already exists.")),
        "{body}"
    );
    let (status, body) = served.post("/api/v1/add_user", &json!({"user_id": "p3"}));
    assert_eq!(
        status, 201,
        "a new user gets an id after the restored ones: {body}"
    );

    // Files that are not complete backups are refused before anything changes.
    let counts_now = row_counts(db.url());
    let bytes = std::fs::read(&backup).unwrap();
    let truncated = dir.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let not_a_tar = dir.path().join("not-a-tar.tar");
    std::fs::write(&not_a_tar, "user_id,created_at\np9,2025-01-01\n").unwrap();
    for bad in [&truncated, &not_a_tar] {
        assert_refused(dir.path(), &env, bad);
        assert_eq!(row_counts(db.url()), counts_now, "{}", bad.display());
    }
}

fn assert_refused(dir: &Path, env: &[(&str, String)], file: &Path) {
    let out = run(justin(dir, env).arg("restore").arg(file).arg("--yes"));
    assert!(
        !out.status.success(),
        "{}: {}",
        file.display(),
        output(&out)
    );
    assert!(
        output(&out).contains("not a complete backup"),
        "{}: {}",
        file.display(),
        output(&out)
    );
}
