//! The policies the algorithm prepares from parameter versions: prepared once per version
//! across many decisions, prepared again for every version published (here or by another
//! process), and never drawn from for a decision that stores another version.

use justin_core::{Clock, Enrollment, Store, TestingStore};
use serde_json::json;

use crate::support::{action_request, object, settings, Study};

#[test]
fn a_version_is_prepared_once_for_all_its_decisions_and_a_new_one_when_published() {
    let study = Study::new();
    let users: Vec<_> = (0..5).map(|n| study.add_user(&format!("u{n}"))).collect();
    let mut decisions = Vec::new();
    for i in 0..20 {
        for user in &users {
            decisions.push(study.decide(user, i));
        }
    }
    assert_eq!(
        study.algorithm.preparations(),
        [json!({ "p": 0.5, "n": 0 })]
    );
    assert!(decisions.iter().all(|d| d.parameter_version == 1));

    // This process publishes version 2 (p = 1, the mean reward).
    study.upload(&decisions[0], 1.0);
    study.run_update(1);
    let after: Vec<_> = users.iter().map(|u| study.decide(u, 100)).collect();
    assert_eq!(
        study.algorithm.preparations(),
        [json!({ "p": 0.5, "n": 0 }), json!({ "p": 1.0, "n": 1 })]
    );
    for d in &after {
        assert_eq!(d.parameter_version, 2);
        assert_eq!(d.action_prob.get(), 1.0, "drawn from version 2's policy");
    }

    // Reloading the current version (as every poll of the update worker does) gives a new copy
    // of the same version: its policy is kept.
    assert_eq!(study.service.refresh_parameters().unwrap(), 2);
    for user in &users {
        assert_eq!(study.decide(user, 101).parameter_version, 2);
    }
    assert_eq!(study.algorithm.preparations().len(), 2);
}

#[test]
fn a_decision_after_another_process_publishes_draws_from_the_version_it_stores() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let other = study.another_process(settings());
    other.initialise(&object(json!({ "p": 0.5 }))).unwrap();
    let first = study.decide(&alice, 0);
    assert_eq!(first.parameter_version, 1);
    study.upload(&first, 0.0);
    // The other process publishes version 2 (p = 0); this one still caches version 1 and
    // its policy (p = 0.5).
    study.request_update(1);
    other.run_next_update().unwrap().unwrap();
    assert_eq!(study.service.current_parameters().unwrap().version, 1);

    let next = study.decide(&alice, 1);
    assert_eq!(next.parameter_version, 2, "the store refused version 1");
    assert_eq!(
        next.action_prob.get(),
        0.0,
        "not version 1's policy (p = 0.5)"
    );
    let stored = study.store.decisions().unwrap().last().unwrap().unwrap();
    assert_eq!(
        (stored.parameter_version, stored.action_prob),
        (2, next.action_prob)
    );
    let prepared = study.algorithm.preparations();
    assert_eq!(prepared.last(), Some(&json!({ "p": 0.0, "n": 1 })));
}

/// A reset by another process can store a version with the number, the time (this clock does
/// not move) and the algorithm of the one this process prepared, but other values: once this
/// process reloads it, its decisions draw from the new values.
#[test]
fn a_version_stored_again_with_other_values_is_prepared_again() {
    let study = Study::new();
    let alice = study.add_user("alice");
    assert_eq!(study.decide(&alice, 0).action_prob.get(), 0.5);
    let before = study.service.current_parameters().unwrap();

    study.store.reset().unwrap();
    let other = study.another_process(settings());
    other.initialise(&object(json!({ "p": 0.0 }))).unwrap();
    other.add_user(&alice, &Enrollment::default()).unwrap();
    assert_eq!(study.service.refresh_parameters().unwrap(), 1);
    let now = study.service.current_parameters().unwrap();
    assert_eq!(
        (now.version, now.created_at, &now.algorithm),
        (before.version, before.created_at, &before.algorithm)
    );

    let d = study.decide(&alice, 1);
    assert_eq!(d.parameter_version, 1);
    assert_eq!(d.action_prob.get(), 0.0, "drawn from the values stored now");
    assert_eq!(
        study.algorithm.preparations(),
        [json!({ "p": 0.5, "n": 0 }), json!({ "p": 0.0, "n": 0 })]
    );
}

#[test]
fn an_algorithm_that_prepares_nothing_draws_from_the_parameters() {
    let study = Study::new();
    study.algorithm.prepare_nothing();
    let alice = study.add_user("alice");
    study
        .store
        .publish_parameters("coin", &json!({ "p": 1.0, "n": 3 }), study.clock.now())
        .unwrap();
    study.service.refresh_parameters().unwrap();
    let answered = study
        .service
        .request_action(action_request(&alice, 0, study.clock.now()))
        .unwrap();
    assert_eq!(answered.decision.parameter_version, 2);
    assert_eq!(answered.decision.action_prob.get(), 1.0);
    assert!(study.algorithm.preparations().is_empty());
}
