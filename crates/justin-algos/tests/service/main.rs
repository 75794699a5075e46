//! The algorithms through the core's service over its in-memory ports: what the service draws
//! through a policy prepared once per parameter version is what the algorithm draws from the
//! version's JSON, and what a replay draws again.

// A test binary: helpers outside `#[test]` functions report failures by panicking too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use justin_algos::Thompson;
use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
use justin_core::{
    ActionRequest, Algorithm, Availability, CallbackPolicy, Clock, DecisionIdx, DecisionRng,
    DecisionType, Enrollment, JsonObject, Service, ServiceSettings, Store, TrialSettings,
    UploadRequest, UserId,
};
use serde_json::{json, Value};

fn object(value: Value) -> JsonObject {
    value.as_object().cloned().unwrap()
}

fn settings() -> ServiceSettings {
    ServiceSettings {
        seed: 42,
        backup_dir: None,
        update_attempts: 3,
        callbacks: CallbackPolicy {
            attempts: 1,
            first_backoff: Duration::from_millis(1),
            attempt_timeout: Duration::from_secs(1),
        },
        service_version: "0.0.0-test".into(),
        config_hash: "c0ffee".into(),
        trial: TrialSettings::default(),
        erasure_backup_dir: "/backups/erasures".into(),
    }
}

/// A context of the ten features `f0` to `f9`, between -3 and 3.
fn context(values: &mut DecisionRng) -> JsonObject {
    let mut context = JsonObject::new();
    for i in 0..10 {
        context.insert(format!("f{i}"), json!(6.0 * values.uniform() - 3.0));
    }
    context
}

/// `thompson` with ten features, through the service: decisions from the prior, an update,
/// decisions from the posterior. Every stored decision is what `get_action` draws from its
/// version's JSON with its seed, bit for bit, and the replay finds no mismatch.
#[test]
fn thompson_draws_through_the_service_what_it_draws_from_the_parameters() {
    let features: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
    let algorithm =
        Arc::new(Thompson::from_options(&object(json!({ "features": features }))).unwrap());
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::default());
    let service = Service::new(
        store.clone(),
        algorithm.clone(),
        clock.clone(),
        Arc::new(RecordingNotifier::new()),
        settings(),
    );
    service
        .initialise(&object(json!({ "variance": 4, "noise_variance": 1 })))
        .unwrap();
    let users: Vec<UserId> = (0..4)
        .map(|n| UserId::parse(format!("u{n}")).unwrap())
        .collect();
    for user in &users {
        service.add_user(user, &Enrollment::default()).unwrap();
    }
    let mut values = DecisionRng::from_seed(5);
    let mut decide = |i: i64| {
        for user in &users {
            let answered = service
                .request_action(ActionRequest {
                    user_id: user.clone(),
                    decision_type: DecisionType::default(),
                    decision_idx: DecisionIdx::new(i).unwrap(),
                    requested_at: clock.now(),
                    sent_timestamp: clock.now().to_rfc3339(),
                    availability: Availability::Available,
                    context: context(&mut values),
                })
                .unwrap();
            assert!(answered.created);
        }
    };
    for i in 0..25 {
        decide(i);
    }
    // Noisy rewards with a small treatment effect that grows with f1, then an update.
    let mut noise = DecisionRng::from_seed(6);
    for d in store.decisions().unwrap().map(Result::unwrap) {
        let x = d.state.values();
        let effect = if d.action.as_i16() == 1 {
            0.1 * x[2]
        } else {
            0.0
        };
        let reward = x[3] + effect + 4.0 * (noise.uniform() - 0.5);
        service
            .upload_data(UploadRequest {
                user_id: d.user_id.clone(),
                decision_type: d.decision_type.clone(),
                decision_idx: d.decision_idx,
                requested_at: d.requested_at,
                sent_timestamp: d.sent_timestamp.clone(),
                context: d.context.clone(),
                action: d.action,
                action_prob: d.action_prob,
                state: d.state.clone(),
                outcome: object(json!({ "reward": reward })),
            })
            .unwrap();
    }
    service
        .request_update(
            clock.now(),
            clock.now().to_rfc3339(),
            "http://study.example/cb".into(),
        )
        .unwrap();
    service.run_next_update().unwrap().unwrap();
    assert_eq!(service.current_parameters().unwrap().version, 2);
    for i in 25..50 {
        decide(i);
    }

    let decisions: Vec<_> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(decisions.len(), 200);
    let mut probabilities = std::collections::BTreeSet::new();
    for d in &decisions {
        let params = service.parameters(d.parameter_version).unwrap();
        let mut rng = DecisionRng::from_seed(d.rng_seed);
        let drawn = algorithm
            .get_action(
                &d.user_id,
                &d.state,
                &params.values,
                d.decision_idx,
                &mut rng,
            )
            .unwrap();
        assert_eq!(drawn.action, d.action, "{d:?}");
        assert_eq!(
            drawn.action_prob.get().to_bits(),
            d.action_prob.get().to_bits(),
            "{d:?}"
        );
        probabilities.insert(d.action_prob.get().to_bits());
    }
    assert!(
        probabilities.len() > 50,
        "the posterior's probabilities vary: {} distinct",
        probabilities.len()
    );
    assert_eq!(
        decisions
            .iter()
            .filter(|d| d.parameter_version == 2)
            .count(),
        100
    );
    let summary = service
        .replay(&mut |m| panic!("{m:?}"), &mut |u| panic!("{u:?}"))
        .unwrap();
    assert_eq!((summary.checked, summary.mismatches), (200, 0));
}
