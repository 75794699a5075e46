//! The same seed and requests give the same actions on another run, in another database, in
//! another order; another seed gives other actions.

use justin_e2e::{env_for, ScratchDir, Served, TestDatabase};
use serde_json::json;

const DECISIONS: i64 = 40;

/// Runs a fresh service with `seed` and returns the actions of decisions 0..DECISIONS for one
/// participant, requested in `order`.
fn actions(seed: u64, order: &[i64]) -> Vec<i64> {
    let db = TestDatabase::create();
    let dir = ScratchDir::new();
    let mut env = env_for(&db);
    env.push(("JUSTIN_ALGORITHM__SEED", seed.to_string()));
    let served = Served::start(dir.path(), &env);
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    let mut by_idx = vec![-1; order.len()];
    for &idx in order {
        let (status, body) = served.post(
            "/api/v1/action",
            &json!({
                "user_id": "p1",
                "timestamp": "2025-01-01T12:00:00Z",
                "decision_idx": idx,
                "context": {"temperature": 20},
            }),
        );
        assert_eq!(status, 201, "{body}");
        by_idx[usize::try_from(idx).unwrap()] = body["action"].as_i64().unwrap();
    }
    by_idx
}

#[test]
fn same_seed_same_actions_other_seed_other_actions() {
    let forward: Vec<i64> = (0..DECISIONS).collect();
    let backward: Vec<i64> = (0..DECISIONS).rev().collect();
    let first = actions(42, &forward);
    let second = actions(42, &backward);
    assert_eq!(first, second, "same seed, same actions, whatever the order");
    // With p = 0.5, two independent sequences of 40 draws agree with probability 2^-40.
    let other = actions(7, &forward);
    assert_ne!(first, other, "another seed draws other actions");
}
