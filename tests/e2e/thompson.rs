//! The `thompson` algorithm through the running service: priors from a file, decisions drawn
//! from the prior, uploads, an update whose posterior is the hand-computed one, decisions
//! drawn from it, and a replay of every decision.

use justin_e2e::{env_for, justin, run, CallbackReceiver, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

const AT: &str = "2025-01-01T12:00:00Z";

/// A service running `thompson` with no context features (an intercept-only model: the
/// reward's mean is β₀ + a·γ₀), a standard normal prior and unit noise variance.
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

fn action(served: &Served, idx: i64, extra: Value) -> Value {
    let mut body = json!({
        "user_id": "p1",
        "timestamp": AT,
        "decision_idx": idx,
        "context": {"mood": "ok"},
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, answer) = served.post("/api/v1/action", &body);
    assert_eq!(status, 201, "{answer}");
    answer
}

fn upload(served: &Served, idx: i64, action: i64, action_prob: f64, reward: f64) {
    let (status, answer) = served.post(
        "/api/v1/upload_data",
        &json!({
            "user_id": "p1",
            "timestamp": AT,
            "decision_idx": idx,
            "data": {
                "context": {"mood": "ok"},
                "action": action,
                "action_prob": action_prob,
                "state": [1],
                "outcome": {"reward": reward},
            },
        }),
    );
    assert_eq!(status, 201, "{answer}");
}

#[test]
fn thompson_learns_from_the_study_and_replays() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let env = thompson_env(&db, dir.path());
    let served = Served::start(dir.path(), &env);
    let callbacks = CallbackReceiver::start();
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);

    // Under the prior, γ₀ ~ N(0, 1): P(γ₀ > 0) = 1/2.
    let first = action(&served, 100, json!({}));
    assert_eq!(first["action_prob"], json!(0.5), "{first}");
    assert_eq!(first["state"], json!([1]), "{first}");
    // Study data: action 1 gave reward 1 and action 0 gave 0 (uploads of decisions made
    // elsewhere, so the data does not depend on the draws), plus an unavailable decision
    // whose large reward must not reach the update.
    upload(&served, 0, 1, 0.5, 1.0);
    upload(&served, 1, 0, 0.5, 0.0);
    action(
        &served,
        2,
        json!({"available": false, "unavailable_reason": "asleep"}),
    );
    upload(&served, 2, 0, 0.0, 100.0);

    let (status, accepted) = served.post(
        "/api/v1/update",
        &json!({"timestamp": AT, "callback_url": callbacks.url()}),
    );
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(callbacks.next()["status"], "completed");

    // By hand: Φ = [[1,1],[1,0]], r = [1,0]; precision I + Φ'Φ = [[3,1],[1,2]], covariance
    // 1/5·[[2,-1],[-1,3]], mean 1/5·[[2,-1],[-1,3]]·[1,1] = [0.2, 0.4].
    let (status, current) = served.get("/api/v1/parameters");
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["version"], 2, "{current}");
    let posterior = &current["parameters"];
    assert_eq!(
        posterior["n"], 2,
        "the unavailable record stays out: {posterior}"
    );
    let close = |got: &Value, want: f64| {
        let got = got.as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    };
    close(&posterior["mean"][0], 0.2);
    close(&posterior["mean"][1], 0.4);
    close(&posterior["covariance"][0][0], 0.4);
    close(&posterior["covariance"][0][1], -0.2);
    close(&posterior["covariance"][1][1], 0.6);

    // Now P(γ₀ > 0) = Φ(0.4 / √0.6) = 0.697211691832327 (inside the default clip).
    let second = action(&served, 101, json!({}));
    close(&second["action_prob"], 0.697_211_691_832_326_8);
    // A decision type and an unavailable decision go through the same path.
    let evening = action(&served, 101, json!({"decision_type": "evening"}));
    close(&evening["action_prob"], 0.697_211_691_832_326_8);

    // Every decision replays from its stored seed, state and parameters.
    let replay = run(justin(dir.path(), &env).arg("replay"));
    assert!(
        replay.status.success(),
        "{}\n{}",
        replay.stdout,
        replay.stderr
    );
    assert!(
        replay.stdout.contains("replayed 4 decisions: 0 mismatches"),
        "{}",
        replay.stdout
    );
}

#[test]
fn thompson_clips_a_confident_posterior() {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = thompson_env(&db, dir.path());
    env.extend([
        (
            "JUSTIN_ALGORITHM__OPTIONS__MIN_PROBABILITY",
            "0.1".to_owned(),
        ),
        (
            "JUSTIN_ALGORITHM__OPTIONS__MAX_PROBABILITY",
            "0.9".to_owned(),
        ),
    ]);
    let served = Served::start(dir.path(), &env);
    let callbacks = CallbackReceiver::start();
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    // Forty records in which action 1 always paid 5 more than action 0.
    for idx in 0..40 {
        upload(&served, idx, idx % 2, 0.5, 5.0 * (idx % 2) as f64);
    }
    let (status, _) = served.post(
        "/api/v1/update",
        &json!({"timestamp": AT, "callback_url": callbacks.url()}),
    );
    assert_eq!(status, 202);
    assert_eq!(callbacks.next()["status"], "completed");

    let decided = action(&served, 100, json!({}));

    assert_eq!(decided["action_prob"], json!(0.9), "{decided}");
}
