//! The replay audit: `justin replay` re-derives every stored decision and reports each one
//! that does not come out as stored.

use justin_e2e::{
    env_for, execute, justin, run, sql_lines, Finished, ScratchDir, Served, TestDatabase,
};
use serde_json::json;

fn replay(dir: &std::path::Path, env: &[(&str, String)]) -> Finished {
    run(justin(dir, env).arg("replay"))
}

#[test]
fn replay_reports_each_tampered_decision() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    let mut actions = std::collections::BTreeMap::new();
    for user in ["p1", "p2"] {
        let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": user}));
        assert_eq!(status, 201);
        for idx in 0..10 {
            let (status, body) = served.post(
                "/api/v1/action",
                &json!({
                    "user_id": user,
                    "timestamp": "2025-01-01T12:00:00Z",
                    "decision_idx": idx,
                    "context": {"temperature": 25},
                }),
            );
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["action_prob"], json!(0.5), "{body}");
            actions.insert((user, idx), body["action"].as_i64().unwrap());
        }
    }

    let clean = replay(dir.path(), &env);
    assert!(clean.status.success(), "{}\n{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("replayed 20 decisions: 0 mismatches"),
        "{}",
        clean.stdout
    );

    execute(
        db.url(),
        "UPDATE actions SET action = 1 - action WHERE user_id = 'p1' AND decision_idx = 3",
    );
    let one = replay(dir.path(), &env);
    let drawn = actions[&("p1", 3)];
    let tampered_action = format!(
        "user_id=p1 decision_type=default decision_idx=3 stored action={} action_prob=0.5 replayed action={drawn} action_prob=0.5",
        1 - drawn
    );
    assert_eq!(one.status.code(), Some(1), "{}\n{}", one.stdout, one.stderr);
    assert!(one.stdout.contains(&tampered_action), "{}", one.stdout);
    assert!(
        one.stdout.contains("replayed 20 decisions: 1 mismatches"),
        "{}",
        one.stdout
    );

    execute(
        db.url(),
        "UPDATE actions SET action_prob = 0.25 WHERE user_id = 'p2' AND decision_idx = 7",
    );
    let two = replay(dir.path(), &env);
    let drawn = actions[&("p2", 7)];
    let tampered_prob = format!(
        "user_id=p2 decision_type=default decision_idx=7 stored action={drawn} action_prob=0.25 replayed action={drawn} action_prob=0.5"
    );
    assert_eq!(two.status.code(), Some(1), "{}\n{}", two.stdout, two.stderr);
    assert!(two.stdout.contains(&tampered_action), "{}", two.stdout);
    assert!(two.stdout.contains(&tampered_prob), "{}", two.stdout);
    assert!(
        two.stdout.contains("replayed 20 decisions: 2 mismatches"),
        "{}",
        two.stdout
    );
}

#[test]
fn typed_and_unavailable_decisions_replay_as_stored() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = env_for(&db);
    let served = Served::start(dir.path(), &env);
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    for idx in 0..6 {
        for decision_type in ["default", "morning", "evening"] {
            let mut body = json!({
                "user_id": "p1",
                "timestamp": "2025-01-01T12:00:00Z",
                "decision_idx": idx,
                "decision_type": decision_type,
                "context": {"temperature": 25},
            });
            if idx % 3 == 2 {
                body["available"] = json!(false);
                body["unavailable_reason"] = json!("asleep");
            }
            let (status, answer) = served.post("/api/v1/action", &body);
            assert_eq!(status, 201, "{answer}");
        }
    }
    // Each type's decision at one index is its own draw, from its own seed.
    let seeds = sql_lines(
        db.url(),
        "SELECT CAST(count(DISTINCT rng_seed) AS TEXT) AS out FROM actions",
    );
    assert_eq!(seeds, ["18"]);

    let clean = replay(dir.path(), &env);
    assert!(clean.status.success(), "{}\n{}", clean.stdout, clean.stderr);
    assert!(
        clean.stdout.contains("replayed 18 decisions: 0 mismatches"),
        "{}",
        clean.stdout
    );

    // The seed of a typed decision is derived from its type too.
    execute(
        db.url(),
        "UPDATE actions SET rng_seed = rng_seed + 1 WHERE decision_type = 'morning' AND decision_idx = 2",
    );
    let tampered = replay(dir.path(), &env);
    assert_eq!(tampered.status.code(), Some(1), "{}", tampered.stdout);
    assert!(
        tampered
            .stdout
            .contains("user_id=p1 decision_type=morning decision_idx=2"),
        "{}",
        tampered.stdout
    );
    assert!(
        tampered
            .stdout
            .contains("the stored seed is not the one derived"),
        "{}",
        tampered.stdout
    );
    assert!(
        tampered
            .stdout
            .contains("replayed 18 decisions: 1 mismatches"),
        "{}",
        tampered.stdout
    );
}
