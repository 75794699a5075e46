//! The algorithm's unit tests: the probability against values worked out by hand, every
//! check of options, priors, outcomes and parameters, the update, and the draw.

use super::*;
use serde_json::json;

fn obj(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap()
}

/// The algorithm as `config.toml` configures it.
fn configured() -> BetaBernoulli {
    BetaBernoulli::from_options(&obj(json!({
        "reward": "engaged",
        "min_probability": 0.1,
        "max_probability": 0.9,
    })))
    .unwrap()
}

/// Version 1 under the uniform prior Beta(1, 1).
fn uniform_prior(algorithm: &BetaBernoulli) -> Value {
    algorithm
        .initial_parameters(&obj(json!({"alpha": 1, "beta": 1})))
        .unwrap()
}

/// A study record of `action` with `reward`, as an upload stores it.
fn record(action: i64, reward: f64) -> StudyRecord {
    serde_json::from_value(json!({
        "user_id": "p1",
        "decision_idx": 3,
        "requested_at": "2025-01-01T12:00:00Z",
        "sent_timestamp": "2025-01-01T12:00:00",
        "received_at": "2025-01-01T12:00:01Z",
        "context": {},
        "action": action,
        "action_prob": 0.5,
        "state": [],
        "outcome": {"engaged": reward},
        "reward": reward,
    }))
    .unwrap()
}

fn beta(alpha: u64, beta: u64) -> Beta {
    Beta { alpha, beta }
}

fn user() -> UserId {
    UserId::parse("p1").unwrap()
}

#[test]
fn the_probability_matches_hand_computation() {
    // Two uniform priors: 1/2 by symmetry.
    assert_eq!(probability_better(beta(1, 1), beta(1, 1)), 0.5);
    // θ1 has density 2x, θ0 is uniform: ∫ 2x · x dx = 2/3.
    let p = probability_better(beta(2, 1), beta(1, 1));
    assert!((p - 2.0 / 3.0).abs() < 1e-15, "{p}");
    // θ1 ~ Beta(3, 2), density 12x²(1 - x); θ0 ~ Beta(2, 2), distribution 3x² - 2x³:
    // ∫ 12x²(1 - x)(3x² - 2x³) dx = 12 (3/5 - 5/6 + 2/7) = 22/35.
    let p = probability_better(beta(3, 2), beta(2, 2));
    assert!((p - 22.0 / 35.0).abs() < 1e-15, "{p}");
    // θ1 ~ Beta(3, 1), θ0 ~ Beta(1, 2): 1 - 3! 2! / 5! = 0.9.
    let p = probability_better(beta(3, 1), beta(1, 2));
    assert!((p - 0.9).abs() < 1e-15, "{p}");
}

#[test]
fn the_probability_holds_up_over_a_long_study() {
    // The two orders sum different series; together they must make 1. Rounding grows with
    // the steps taken: about 2e-12 after the 10 000 of Beta(5000, 5000).
    for (x, y) in [
        (beta(401, 601), beta(451, 551)),
        (beta(5_000, 5_000), beta(5_000, 5_000)),
        (beta(20_001, 1), beta(1, 20_001)),
    ] {
        let (p, q) = (probability_better(x, y), probability_better(y, x));
        assert!(
            (0.0..=1.0).contains(&p) && (0.0..=1.0).contains(&q),
            "{p} {q}"
        );
        assert!((p + q - 1.0).abs() < 1e-10, "{x:?} {y:?}: {p} + {q}");
    }
    let even = probability_better(beta(5_000, 5_000), beta(5_000, 5_000));
    assert!((even - 0.5).abs() < 1e-10, "{even}");
    // 1 - 20001! 20001! / 40002! is 1 in doubles.
    assert_eq!(probability_better(beta(20_001, 1), beta(1, 20_001)), 1.0);
}

#[test]
fn options_are_checked() {
    let defaults = BetaBernoulli::from_options(&JsonObject::new()).unwrap();
    assert_eq!(
        defaults,
        BetaBernoulli {
            reward: DEFAULT_REWARD.into(),
            min_probability: DEFAULT_MIN_PROBABILITY,
            max_probability: DEFAULT_MAX_PROBABILITY,
        }
    );
    let refused = |options: Value| {
        BetaBernoulli::from_options(&obj(options))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        refused(json!({"features": []})),
        "invalid algorithm.options: unknown option \"features\"; beta_bernoulli takes reward, \
         min_probability and max_probability"
    );
    assert_eq!(
        refused(json!({"reward": ""})),
        "invalid algorithm.options: reward must be the name of an outcome field"
    );
    assert_eq!(
        refused(json!({"max_probability": 1.5})),
        "invalid algorithm.options: max_probability must be a number from 0 to 1"
    );
    assert_eq!(
        refused(json!({"min_probability": "low"})),
        "invalid algorithm.options: min_probability must be a number from 0 to 1"
    );
    assert_eq!(
        refused(json!({"min_probability": 0.6, "max_probability": 0.4})),
        "invalid algorithm.options: min_probability 0.6 is above max_probability 0.4"
    );
}

#[test]
fn version_one_holds_the_settings_the_prior_and_a_half() {
    let version_one = uniform_prior(&configured());
    assert_eq!(
        version_one,
        json!({
            "min_probability": 0.1,
            "max_probability": 0.9,
            "prior": {"alpha": 1, "beta": 1},
            "successes": [0, 0],
            "failures": [0, 0],
            "probability": 0.5,
        })
    );
    assert!(configured().validate_parameters(&version_one).is_ok());
}

#[test]
fn priors_are_checked() {
    let refused = |priors: Value| {
        configured()
            .initial_parameters(&obj(priors))
            .unwrap_err()
            .to_string()
    };
    let needs = |key: &str| {
        format!("invalid priors: {key} is required and must be a whole number from 1 to 1000000")
    };
    assert_eq!(refused(json!({"beta": 1})), needs("alpha"));
    assert_eq!(refused(json!({"alpha": 0, "beta": 1})), needs("alpha"));
    assert_eq!(refused(json!({"alpha": 1.5, "beta": 1})), needs("alpha"));
    assert_eq!(
        refused(json!({"alpha": 1, "beta": 1_000_001})),
        needs("beta")
    );
    assert_eq!(
        refused(json!({"probability_of_action": 0.5})),
        "invalid priors: unknown prior \"probability_of_action\"; beta_bernoulli takes alpha \
         and beta"
    );
}

#[test]
fn the_reward_is_the_configured_binary_field() {
    let algorithm = configured();
    let state = algorithm.make_state(&obj(json!({"mood": 3}))).unwrap();
    assert_eq!(state.values(), &[] as &[f64]);
    let reward =
        |outcome: Value| algorithm.make_reward(&user(), &state, Action::One, &obj(outcome));
    assert_eq!(reward(json!({"engaged": 1})), Ok(1.0));
    assert_eq!(reward(json!({"engaged": 0.0})), Ok(0.0));
    for wrong in [json!(2), json!(0.5), json!("yes"), json!(true)] {
        assert_eq!(
            reward(json!({ "engaged": wrong })).unwrap_err().to_string(),
            "engaged must be 0 or 1."
        );
    }
    let missing = "Invalid outcome. engaged is required.";
    assert_eq!(
        reward(json!({"reward": 1})).unwrap_err().to_string(),
        missing
    );
    assert_eq!(
        reward(json!({"engaged": null})).unwrap_err().to_string(),
        missing
    );
    assert!(algorithm
        .check_outcome_names(&json!({"engaged": 1}))
        .is_ok());
    assert_eq!(
        algorithm
            .check_outcome_names(&json!({"reward": 1}))
            .unwrap_err()
            .to_string(),
        missing
    );
}

#[test]
fn an_update_counts_each_action_from_the_prior() {
    let algorithm = configured();
    let prior = uniform_prior(&algorithm);
    // Action 1: two successes, one failure; action 0: one of each. Posteriors Beta(3, 2) and
    // Beta(2, 2): P(action = 1) = 22/35 (see the_probability_matches_hand_computation).
    let data = || {
        [(1, 1.0), (0, 0.0), (1, 1.0), (0, 1.0), (1, 0.0)]
            .into_iter()
            .map(|(action, reward)| record(action, reward))
    };
    let next = algorithm.update(&prior, &mut data()).unwrap();
    assert_eq!(next["successes"], json!([1, 2]));
    assert_eq!(next["failures"], json!([1, 1]));
    assert_eq!(next["prior"], prior["prior"]);
    let p = next["probability"].as_f64().unwrap();
    assert!((p - 22.0 / 35.0).abs() < 1e-15, "{p}");
    assert!(algorithm.validate_parameters(&next).is_ok());
    // Every update gets all the data: updating the result with it again changes nothing.
    assert_eq!(algorithm.update(&next, &mut data()).unwrap(), next);
    // No data: the prior's version again.
    assert_eq!(
        algorithm.update(&next, &mut std::iter::empty()).unwrap(),
        prior
    );
}

#[test]
fn an_update_names_a_record_whose_reward_is_not_binary() {
    let algorithm = configured();
    let err = algorithm
        .update(
            &uniform_prior(&algorithm),
            &mut [record(1, 0.5)].into_iter(),
        )
        .unwrap_err();
    assert_eq!(
        err,
        AlgorithmError::UpdateFailed(
            "the reward of user p1 at decision_idx 3 is neither 0 nor 1".into()
        )
    );
}

#[test]
fn the_probability_is_clipped_to_the_bounds() {
    let algorithm = configured();
    let prior = uniform_prior(&algorithm);
    let lopsided = |winner: i64| {
        let mut data = (0..50).flat_map(|_| [record(winner, 1.0), record(1 - winner, 0.0)]);
        let next = algorithm.update(&prior, &mut data).unwrap();
        next["probability"].as_f64().unwrap()
    };
    assert_eq!(lopsided(1), 0.9);
    assert_eq!(lopsided(0), 0.1);
}

#[test]
fn parameters_are_checked() {
    let algorithm = configured();
    let version_one = uniform_prior(&algorithm);
    let refused = |change: &dyn Fn(&mut Value)| {
        let mut values = version_one.clone();
        change(&mut values);
        match algorithm.validate_parameters(&values) {
            Err(AlgorithmError::InvalidParameters(why)) => why,
            other => panic!("{values} was not refused: {other:?}"),
        }
    };
    assert_eq!(
        refused(&|v| v["max_probability"] = json!(0.8)),
        "the parameters were made for min_probability 0.1 and max_probability 0.8, but \
         algorithm.options says 0.1 and 0.9; the bounds cannot change within a study"
    );
    assert_eq!(
        refused(&|v| v["probability"] = json!(0.95)),
        "probability 0.95 lies outside [0.1, 0.9]"
    );
    assert_eq!(
        refused(&|v| v["min_probability"] = json!(0.95)),
        "min_probability 0.95 and max_probability 0.9 must satisfy 0 <= min <= max <= 1"
    );
    assert_eq!(
        refused(&|v| v["prior"]["alpha"] = json!(0)),
        "the prior's alpha and beta must be from 1 to 1000000"
    );
    assert!(refused(&|v| v["successes"] = json!([1])).contains("invalid length 1"));
    assert!(refused(&|v| v["extra"] = json!(1)).contains("extra"));
    // A stored version that is not of this shape cannot draw or update either.
    let mut rng = DecisionRng::from_seed(1);
    let state = State::new(Vec::new()).unwrap();
    let idx = DecisionIdx::new(0).unwrap();
    assert!(matches!(
        algorithm.get_action(&user(), &state, &json!({}), idx, &mut rng),
        Err(AlgorithmError::InvalidParameters(_))
    ));
    assert!(matches!(
        algorithm.update(&json!({}), &mut std::iter::empty()),
        Err(AlgorithmError::InvalidParameters(_))
    ));
}

#[test]
fn a_replay_repeats_the_draw_bit_for_bit() {
    let algorithm = configured();
    let prior = uniform_prior(&algorithm);
    let mut data = [record(1, 1.0), record(0, 0.0)].into_iter();
    let parameters = algorithm.update(&prior, &mut data).unwrap();
    let state = State::new(Vec::new()).unwrap();
    let idx = DecisionIdx::new(5).unwrap();
    for seed in 0..100 {
        let mut first = DecisionRng::from_seed(seed);
        let mut again = DecisionRng::from_seed(seed);
        let a = algorithm
            .get_action(&user(), &state, &parameters, idx, &mut first)
            .unwrap();
        let b = algorithm
            .get_action(&user(), &state, &parameters, idx, &mut again)
            .unwrap();
        assert_eq!(a.action, b.action);
        assert_eq!(a.action_prob.get().to_bits(), b.action_prob.get().to_bits());
        // Exactly one uniform draw was taken: the next one is a fresh generator's second.
        let mut fresh = DecisionRng::from_seed(seed);
        let drawn = fresh.uniform();
        assert_eq!(first.uniform().to_bits(), fresh.uniform().to_bits());
        assert_eq!(a.action == Action::One, drawn < a.action_prob.get());
    }
}

#[test]
fn draws_follow_the_probability() {
    let algorithm = configured();
    let prior = uniform_prior(&algorithm);
    let mut data = [record(1, 1.0), record(0, 0.0)].into_iter();
    // Beta(2, 1) against Beta(1, 2): P(action = 1) = 5/6.
    let parameters = algorithm.update(&prior, &mut data).unwrap();
    let p = parameters["probability"].as_f64().unwrap();
    assert!((p - 5.0 / 6.0).abs() < 1e-15, "{p}");
    let state = State::new(Vec::new()).unwrap();
    let idx = DecisionIdx::new(0).unwrap();
    let n = 20_000;
    let ones = (0..n)
        .filter(|seed| {
            let mut rng = DecisionRng::from_seed(*seed);
            let choice = algorithm
                .get_action(&user(), &state, &parameters, idx, &mut rng)
                .unwrap();
            choice.action == Action::One
        })
        .count();
    let share = ones as f64 / n as f64;
    // The standard error over 20 000 draws is about 0.0026.
    assert!((share - 5.0 / 6.0).abs() < 0.013, "share of ones {share}");
}

#[test]
fn it_registers_next_to_the_built_in_algorithms() {
    let registration = registration();
    assert_eq!(registration.name(), NAME);
    assert_eq!(registration.log_target(), "justin_beta_bernoulli");
    let mut algorithms = justin_algos::builtin();
    algorithms.register(registration.clone()).unwrap();
    assert_eq!(
        algorithms.names().collect::<Vec<_>>(),
        ["flat_prob", "thompson", NAME]
    );
    let built = algorithms
        .build(NAME, &obj(json!({"reward": "engaged"})))
        .unwrap();
    assert_eq!(built.name(), NAME);
    let refused = algorithms
        .build(NAME, &obj(json!({"features": []})))
        .unwrap_err();
    assert!(refused.to_string().contains("unknown option"), "{refused}");
    assert_eq!(
        algorithms.register(registration).unwrap_err().to_string(),
        "two algorithms are registered as \"beta_bernoulli\"; each algorithm needs a name of \
         its own (rename one of them: the name is what algorithm.name selects)"
    );
}
