//! The example algorithm crate (examples/beta-bernoulli) through its own binary, configured by
//! its own config.toml: a study whose decisions come from an algorithm registered outside
//! this workspace, an update whose probability is the hand-computed one, a replay without
//! mismatches, the analysis table, and the algorithm's log records in rl.log.

use justin_e2e::{
    command, env_for, example_bin, example_dir, run, CallbackReceiver, ScratchDir, Served,
    TestDatabase,
};
use serde_json::{json, Value};

const AT: &str = "2025-01-01T12:00:00Z";

fn action(served: &Served, idx: i64) -> Value {
    let (status, answer) = served.post(
        "/api/v1/action",
        &json!({
            "user_id": "p1",
            "timestamp": AT,
            "decision_idx": idx,
            "context": {"mood": 3},
        }),
    );
    assert_eq!(status, 201, "{answer}");
    answer
}

/// Uploads the outcome of decision `idx`, at which `action` was given and engaged was
/// `engaged`; the status and the answer.
fn upload(served: &Served, idx: i64, action: &Value, engaged: Value) -> (u16, Value) {
    served.post(
        "/api/v1/upload_data",
        &json!({
            "user_id": "p1",
            "timestamp": AT,
            "decision_idx": idx,
            "data": {
                "context": {"mood": 3},
                "action": action,
                "action_prob": 0.5,
                "state": [],
                "outcome": {"engaged": engaged},
            },
        }),
    )
}

#[test]
fn a_study_runs_through_the_example_algorithm_crate_and_replays() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let bin = example_bin();
    let config = example_dir().join("config.toml");
    let mut env = env_for(&db);
    env.push(("JUSTIN_CONFIG", config.display().to_string()));
    let served = Served::start_bin(&bin, dir.path(), &env, 0);
    let callbacks = CallbackReceiver::start();
    let (status, answer) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201, "{answer}");

    // Version 1: Beta(1, 1) for both actions, so P(action = 1) = 1/2; the state is empty.
    let first = action(&served, 100);
    assert_eq!(first["action_prob"], json!(0.5), "{first}");
    assert_eq!(first["state"], json!([]), "{first}");
    // The algorithm checks the outcome, through the service.
    let (status, refused) = upload(&served, 1, &json!(1), json!(2));
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["message"], "engaged must be 0 or 1.", "{refused}");
    // Study data of decisions made elsewhere, so that it does not depend on the draws:
    // action 1 engaged twice out of three, action 0 once out of two.
    for (idx, given, engaged) in [(1, 1, 1), (2, 0, 0), (3, 1, 1), (4, 0, 1), (5, 1, 0)] {
        let (status, answer) = upload(&served, idx, &json!(given), json!(engaged));
        assert_eq!(status, 201, "{answer}");
    }

    let (status, accepted) = served.post(
        "/api/v1/update",
        &json!({"timestamp": AT, "callback_url": callbacks.url()}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(callbacks.next()["status"], "completed");

    // Posteriors Beta(3, 2) for action 1 and Beta(2, 2) for action 0:
    // P(θ1 > θ0) = ∫ 12x²(1 - x)(3x² - 2x³) dx = 22/35.
    let (status, current) = served.get("/api/v1/parameters");
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["version"], 2, "{current}");
    let parameters = &current["parameters"];
    assert_eq!(parameters["successes"], json!([1, 2]), "{parameters}");
    assert_eq!(parameters["failures"], json!([1, 1]), "{parameters}");
    let probability = parameters["probability"].as_f64().unwrap();
    assert!((probability - 22.0 / 35.0).abs() < 1e-15, "{probability}");
    let second = action(&served, 101);
    assert_eq!(
        second["action_prob"].as_f64(),
        Some(probability),
        "{second}"
    );
    // The first decision's outcome arrives after the update: in the table, not in version 2.
    let (status, answer) = upload(&served, 100, &first["action"], json!(1));
    assert_eq!(status, 201, "{answer}");
    let stopped = served.terminate();
    assert!(stopped.success(), "{stopped:?}");

    // Every decision replays from its stored seed, state and parameters.
    let replay = run(command(&bin, dir.path(), &env).arg("replay"));
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay.stdout.contains("replayed 2 decisions: 0 mismatches"),
        "{}",
        replay.stdout
    );

    let export = run(command(&bin, dir.path(), &env).args(["export", "--out", "study.csv"]));
    assert!(
        export.status.success(),
        "{}\n{}",
        export.stdout,
        export.stderr
    );
    let table = std::fs::read_to_string(dir.path().join("study.csv")).unwrap();
    let rows: Vec<&str> = table.lines().collect();
    assert_eq!(rows.len(), 3, "{table}");
    assert!(
        rows[0].starts_with("user_id,decision_type,decision_idx,"),
        "{table}"
    );
    assert!(rows[1].starts_with("p1,default,100,"), "{table}");
    assert!(rows[1].contains(r#""{""engaged"":1}",1.0,"#), "{table}");
    assert!(rows[2].starts_with("p1,default,101,"), "{table}");

    // The algorithm's own records (its registration's log target) and the service's record
    // of the update go to rl.log.
    let rl = std::fs::read_to_string(dir.path().join("logs/rl.log")).unwrap();
    assert!(
        rl.contains(
            "justin_beta_bernoulli: beta_bernoulli: reward from the outcome field \"engaged\""
        ),
        "{rl}"
    );
    assert!(
        rl.contains("stored beta_bernoulli parameters version 2 from 5 records\n"),
        "{rl}"
    );
    assert!(
        !rl.contains("justin_http"),
        "only the algorithm's records: {rl}"
    );
}
