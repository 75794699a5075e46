//! Update replay: `justin replay --updates` recomputes every parameter version of a real
//! `thompson` study from the version before it and the records its update read, reports a
//! study record changed in the database afterwards with the versions it affects, and the
//! versions that read an erased participant's records as unverifiable.

use justin_e2e::{
    env_for, execute, justin, run, sql_lines, CallbackReceiver, Finished, ScratchDir, Served,
    TestDatabase,
};
use serde_json::{json, Value};

const AT: &str = "2025-01-01T12:00:00Z";

fn replay_updates(dir: &std::path::Path, env: &[(&str, String)]) -> Finished {
    run(justin(dir, env).args(["replay", "--updates"]))
}

fn decide(served: &Served, user: &str, idx: i64) -> Value {
    let (status, answer) = served.post(
        "/api/v1/action",
        &json!({
            "user_id": user,
            "timestamp": AT,
            "decision_idx": idx,
            "context": {"mood": "ok"},
        }),
    );
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Uploads the outcome of `decision`: reward 1 after action 1, 0.25 after action 0.
fn upload(served: &Served, user: &str, idx: i64, decision: &Value) {
    let action = decision["action"].as_i64().unwrap();
    let reward = if action == 1 { 1.0 } else { 0.25 };
    let (status, answer) = served.post(
        "/api/v1/upload_data",
        &json!({
            "user_id": user,
            "timestamp": AT,
            "decision_idx": idx,
            "data": {
                "context": {"mood": "ok"},
                "action": action,
                "action_prob": decision["action_prob"],
                "state": decision["state"],
                "outcome": {"reward": reward},
            },
        }),
    );
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

/// Three participants, three rounds of decisions, an update after each: p3's first upload
/// arrives only after the first update (a late upload), and p2 withdraws after the second.
fn run_study(served: &Served) {
    let callbacks = CallbackReceiver::start();
    for user in ["p1", "p2", "p3"] {
        let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": user}));
        assert_eq!(status, 201);
    }
    let mut late = None;
    for round in 0..3 {
        for user in ["p1", "p2", "p3"] {
            if round == 2 && user == "p2" {
                continue;
            }
            let decision = decide(served, user, round);
            if round == 0 && user == "p3" {
                late = Some(decision);
            } else {
                upload(served, user, round, &decision);
            }
        }
        update(served, &callbacks);
        if let Some(decision) = late.take() {
            upload(served, "p3", 0, &decision);
        }
        if round == 1 {
            let (status, answer) = served.post(
                "/api/v1/users/p2/withdraw",
                &json!({"reason": "moved away"}),
            );
            assert_eq!(status, 200, "{answer}");
        }
    }
}

fn thompson_env(db: &TestDatabase, dir: &std::path::Path) -> Vec<(&'static str, String)> {
    std::fs::write(
        dir.join("priors.json"),
        r#"{"mean": [0, 0], "variance": 1.0, "noise_variance": 1.0}"#,
    )
    .unwrap();
    let mut env = env_for(db);
    env.extend([
        ("JUSTIN_ALGORITHM__NAME", "thompson".to_owned()),
        ("JUSTIN_ALGORITHM__PRIORS_FILE", "priors.json".to_owned()),
        ("JUSTIN_ALGORITHM__OPTIONS__FEATURES", "[]".to_owned()),
    ]);
    env
}

fn assert_line(out: &Finished, line: &str) {
    assert!(
        out.stdout.lines().any(|l| l.starts_with(line)),
        "no line starting with {line:?} in\n{}\n{}",
        out.stdout,
        out.stderr
    );
}

#[test]
fn updates_replay_exactly_and_a_changed_record_is_named_with_its_versions() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = thompson_env(&db, dir.path());
    let served = Served::start(dir.path(), &env);
    run_study(&served);

    // Update 1 read p1, p2 (round 0); update 2 also p3's late upload and round 1; update 3
    // round 2 and everything before but p2's.
    let clean = replay_updates(dir.path(), &env);
    assert!(clean.status.success(), "{}\n{}", clean.stdout, clean.stderr);
    for (version, rows) in [(2, 2), (3, 6), (4, 6)] {
        assert_line(&clean, &format!("version {version} update_id="));
        assert!(
            clean
                .stdout
                .contains(&format!("rows_read={rows} rows_stored={rows}: OK")),
            "version {version}: {}",
            clean.stdout
        );
    }
    assert_line(
        &clean,
        "replayed 3 updates: 3 exact, 0 within tolerance (relative 1e-9), 0 mismatches, 0 unverifiable",
    );
    assert!(
        clean.stdout.contains("; 0 inconsistent records"),
        "{}",
        clean.stdout
    );

    // A reward changed alone: the record no longer agrees with its outcome, and every update
    // that read it (all three) no longer comes out as stored.
    execute(
        db.url(),
        "UPDATE study_data SET reward = reward + 0.5 WHERE user_id = 'p1' AND decision_idx = 0",
    );
    let reward = replay_updates(dir.path(), &env);
    assert_eq!(
        reward.status.code(),
        Some(1),
        "{}\n{}",
        reward.stdout,
        reward.stderr
    );
    assert_line(
        &reward,
        "INCONSISTENT user_id=p1 decision_type=default decision_idx=0 read_by_versions=2,3,4: its reward is not the one the algorithm gives its outcome",
    );
    for version in [2, 3, 4] {
        let line = reward
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("version {version} ")))
            .unwrap();
        assert!(line.contains(": MISMATCH: "), "{line}");
    }
    assert!(reward.stdout.contains("3 mismatches"), "{}", reward.stdout);
    assert!(
        reward.stdout.contains("; 1 inconsistent records"),
        "{}",
        reward.stdout
    );
    execute(
        db.url(),
        "UPDATE study_data SET reward = reward - 0.5 WHERE user_id = 'p1' AND decision_idx = 0",
    );
    assert!(replay_updates(dir.path(), &env).status.success());

    // The late upload's outcome and reward changed together: the record agrees with itself,
    // but the updates that read it (from the second on) no longer come out as stored.
    let late = "FROM study_data WHERE user_id = 'p3' AND decision_idx = 0";
    let outcome = sql_lines(
        db.url(),
        &format!("SELECT CAST(outcome AS TEXT) AS out {late}"),
    );
    let reward = sql_lines(
        db.url(),
        &format!("SELECT CAST(reward AS TEXT) AS out {late}"),
    );
    execute(
        db.url(),
        "UPDATE study_data SET outcome = '{\"reward\":7.5}', reward = 7.5 \
         WHERE user_id = 'p3' AND decision_idx = 0",
    );
    let both = replay_updates(dir.path(), &env);
    assert_eq!(
        both.status.code(),
        Some(1),
        "{}\n{}",
        both.stdout,
        both.stderr
    );
    assert!(
        both.stdout
            .lines()
            .any(|l| l.starts_with("version 2 ") && l.ends_with(": OK")),
        "{}",
        both.stdout
    );
    for version in [3, 4] {
        let line = both
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("version {version} ")))
            .unwrap();
        assert!(line.contains(": MISMATCH: "), "{line}");
    }
    assert!(
        both.stdout.contains("; 0 inconsistent records"),
        "{}",
        both.stdout
    );

    execute(
        db.url(),
        &format!(
            "UPDATE study_data SET outcome = '{}', reward = {} \
             WHERE user_id = 'p3' AND decision_idx = 0",
            outcome[0], reward[0]
        ),
    );
    assert!(replay_updates(dir.path(), &env).status.success());

    // p2 erased: the first two updates read records that are gone, the third none of p2's.
    let (status, answer) = served.post("/api/v1/users/p2/erase", &json!({}));
    assert_eq!(status, 200, "{answer}");
    let erased = replay_updates(dir.path(), &env);
    assert!(
        erased.status.success(),
        "{}\n{}",
        erased.stdout,
        erased.stderr
    );
    for (version, stored) in [(2, 1), (3, 4)] {
        let line = erased
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("version {version} ")))
            .unwrap();
        assert!(
            line.contains(&format!(
                "rows_stored={stored}: UNVERIFIABLE: the update read"
            )),
            "{line}"
        );
    }
    assert_line(&erased, "version 4 ");
    assert!(
        erased
            .stdout
            .contains("replayed 3 updates: 1 exact, 0 within tolerance (relative 1e-9), 0 mismatches, 2 unverifiable"),
        "{}",
        erased.stdout
    );
}
