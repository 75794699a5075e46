//! The parameter versions and the service's copy of the current one: decisions are drawn from
//! the current version as soon as this process publishes it, after a refresh when another
//! process did, and again from the current version when the cached one has gone.

use std::sync::Arc;

use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
use justin_core::{
    Action, Availability, Clock, DecisionType, DomainError, Enrollment, HostDecisionRequest,
    Probability, Service, Store, TestingStore,
};
use serde_json::json;

use crate::support::{action_request, host_request, idx, object, settings, Coin, Study, Update};

#[test]
fn the_priors_become_version_1_once() {
    let study = Study::new();
    let first = study.service.current_parameters().unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(first.values, json!({ "p": 0.5, "n": 0 }));

    // A second process with other priors finds version 1 in place.
    let other = study.another_process(settings());
    let current = other.initialise(&object(json!({ "p": 0.9 }))).unwrap();
    assert_eq!(current, *first);
    assert_eq!(study.counts()["model_parameters"], 1);
}

#[test]
fn stored_parameters_of_another_algorithm_are_refused_at_start() {
    let store = Arc::new(MemoryStore::new());
    store
        .seed_parameters("dice", &json!({ "faces": 6 }), ManualClock::default().now())
        .unwrap();
    let service = Service::new(
        store,
        Arc::new(Coin::default()),
        Arc::new(ManualClock::default()),
        Arc::new(RecordingNotifier::new()),
        settings(),
    );
    let refused = service.initialise(&object(json!({ "p": 0.5 })));
    assert!(
        matches!(&refused, Err(DomainError::Setup(m)) if m.contains("\"dice\"")),
        "{refused:?}"
    );
}

#[test]
fn without_any_version_there_is_nothing_to_draw_from() {
    let service = Service::new(
        Arc::new(MemoryStore::new()),
        Arc::new(Coin::default()),
        Arc::new(ManualClock::default()),
        Arc::new(RecordingNotifier::new()),
        settings(),
    );
    let none = service.current_parameters();
    assert!(matches!(none, Err(DomainError::Setup(_))), "{none:?}");
    let missing = service.parameters(1);
    assert!(
        matches!(missing, Err(DomainError::ParametersNotFound)),
        "{missing:?}"
    );
}

#[test]
fn decisions_use_the_version_this_process_publishes_at_once() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let first = study.decide(&alice, 0);
    study.upload(&first, 1.0);
    study.request_update(1);
    study.service.run_next_update().unwrap().unwrap();

    let current = study.service.current_parameters().unwrap();
    assert_eq!(current.version, 2);
    assert_eq!(current.values, json!({ "p": 1.0, "n": 1 }));
    let next = study.decide(&alice, 1);
    assert_eq!(next.parameter_version, 2);
    assert_eq!(next.action_prob.get(), 1.0, "drawn from the new version");
}

#[test]
fn a_failed_update_leaves_the_current_version_in_force() {
    let study = Study::new();
    let alice = study.add_user("alice");
    study.algorithm.set_update(Update::Fail);
    study.request_update(1);
    study.service.run_next_update().unwrap().unwrap();
    assert_eq!(study.service.current_parameters().unwrap().version, 1);
    assert_eq!(study.decide(&alice, 0).parameter_version, 1);
    assert_eq!(study.stored_version(), 1);
}

#[test]
fn a_version_another_process_publishes_is_used_after_a_refresh() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let other = study.another_process(settings());
    other.initialise(&object(json!({ "p": 0.5 }))).unwrap();
    let d = study.decide(&alice, 0);
    study.upload(&d, 0.0);
    study.request_update(1);
    other.run_next_update().unwrap().unwrap();
    assert_eq!(other.current_parameters().unwrap().version, 2);

    assert_eq!(study.service.refresh_parameters().unwrap(), 2);
    let next = study.decide(&alice, 1);
    assert_eq!(next.parameter_version, 2);
    assert_eq!(next.action_prob.get(), 0.0, "drawn from version 2 (p = 0)");
}

/// An instance behind on parameters (another process published a newer version, and this one
/// has not refreshed yet) never stores a decision under its older version: the store refuses
/// it, and the service reloads the newest version and decides again from it; a participant's
/// versions never go down. A host decision records the newest version too.
#[test]
fn a_process_behind_on_parameters_decides_again_from_the_newest_version() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let other = study.another_process(settings());
    other.initialise(&object(json!({ "p": 0.5 }))).unwrap();
    // A third process caches version 1 too.
    let third = study.another_process(settings());
    assert_eq!(third.current_parameters().unwrap().version, 1);
    let d = study.decide(&alice, 0);
    assert_eq!(d.parameter_version, 1);
    study.upload(&d, 0.0);
    study.request_update(1);
    other.run_next_update().unwrap().unwrap();
    let answered = other.request_action(action_request(&alice, 1, study.clock.now()));
    assert_eq!(answered.unwrap().decision.parameter_version, 2);

    // This process still caches version 1 (p = 0.5).
    assert_eq!(study.service.current_parameters().unwrap().version, 1);
    let next = study.decide(&alice, 2);
    assert_eq!(next.parameter_version, 2, "not the cached version 1");
    assert_eq!(next.action_prob.get(), 0.0, "drawn from version 2 (p = 0)");
    assert_eq!(study.service.current_parameters().unwrap().version, 2);

    // A host decision sent to a process behind records the newest version as well.
    let host = third
        .record_host_decision(HostDecisionRequest {
            user_id: alice.clone(),
            decision_type: DecisionType::default(),
            decision_idx: idx(3),
            requested_at: study.clock.now(),
            sent_timestamp: study.clock.now().to_rfc3339(),
            availability: Availability::Available,
            context: object(json!({ "x": 3 })),
            action: Action::One,
            action_prob: Probability::new(0.4).unwrap(),
            decided_by: "fixed schedule".into(),
        })
        .unwrap();
    assert_eq!(host.decision.parameter_version, 2);
    let versions: Vec<i64> = study
        .store
        .decisions()
        .unwrap()
        .map(|d| d.unwrap().parameter_version)
        .collect();
    assert_eq!(versions, [1, 2, 2, 2]);
}

/// Whether `answer` is the refusal of a decision outrun by new versions on every try: a 503
/// (the client may try again), not a failure of the store.
fn outrun<T: std::fmt::Debug>(answer: &Result<T, DomainError>) -> bool {
    matches!(
        answer,
        Err(DomainError::Unavailable(
            justin_core::StoreError::Unavailable(_)
        ))
    )
}

/// A request that finds a newer version after each of many reloads, as under updates
/// published back to back, still stores its decision, under the newest version.
#[test]
fn a_request_outrun_by_many_new_versions_stores_its_decision_under_the_newest() {
    let study = Study::new();
    let alice = study.add_user("alice");
    study.store.publish_before_decisions(20);
    let answered = study
        .service
        .request_action(action_request(&alice, 0, study.clock.now()))
        .unwrap();
    assert_eq!(
        study.algorithm.draws(),
        21,
        "the first draw and one per reload"
    );
    assert_eq!(
        study.stored_version(),
        21,
        "version 1 and the 20 published meanwhile"
    );
    assert_eq!(answered.decision.parameter_version, 21);
    let stored: Vec<_> = study
        .store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored, vec![answered.decision]);
}

/// A request that finds a newer version every time it reloads gives up after 32 reloads, as
/// unavailable (the client may try again), and stores nothing.
#[test]
fn a_request_chasing_a_stream_of_new_versions_gives_up_as_unavailable() {
    let study = Study::new();
    let alice = study.add_user("alice");
    study.algorithm.publish_on_every_draw(study.store.clone());
    let refused = study
        .service
        .request_action(action_request(&alice, 0, study.clock.now()));
    assert!(outrun(&refused), "{refused:?}");
    assert_eq!(study.algorithm.draws(), 33, "the first draw and 32 more");
    assert_eq!(study.counts()["actions"], 0);
}

/// A host decision outrun by new versions is stored under the newest one after as many
/// reloads; outrun on every one of its 33 tries, it is refused as unavailable, storing
/// nothing.
#[test]
fn a_host_decision_outrun_by_new_versions_is_stored_under_the_newest_or_refused_as_unavailable() {
    let study = Study::new();
    let alice = study.add_user("alice");

    study.store.publish_before_decisions(20);
    let stored = study
        .service
        .record_host_decision(host_request(&study, &alice, 0, Action::One, 0.4))
        .unwrap();
    assert_eq!(
        stored.decision.parameter_version, 21,
        "version 1 and 20 more"
    );
    assert_eq!(study.counts()["actions"], 1);

    study.store.publish_before_decisions(33);
    let refused =
        study
            .service
            .record_host_decision(host_request(&study, &alice, 1, Action::One, 0.4));
    assert!(outrun(&refused), "{refused:?}");
    assert_eq!(study.counts()["actions"], 1, "nothing more stored");
    assert_eq!(
        study.stored_version(),
        54,
        "one version before each of the 33 tries"
    );
}

#[test]
fn a_cached_version_that_is_gone_is_replaced_by_the_current_one_before_the_draw() {
    let study = Study::new();
    let alice = study.add_user("alice");
    // This process publishes versions 2 and 3 (p = 1) and caches version 3.
    for n in 0..2 {
        let d = study.decide(&alice, n);
        study.upload(&d, 1.0);
        study.request_update(u32::try_from(n).unwrap());
        study.service.run_next_update().unwrap().unwrap();
    }
    assert_eq!(study.service.current_parameters().unwrap().version, 3);

    // Another process resets the study and starts it again from priors p = 0.
    study.store.reset().unwrap();
    let other = study.another_process(settings());
    other.initialise(&object(json!({ "p": 0.0 }))).unwrap();
    other.add_user(&alice, &Enrollment::default()).unwrap();

    let d = study.decide(&alice, 5);
    assert_eq!(d.parameter_version, 1, "not the cached version 3");
    assert_eq!(d.action_prob.get(), 0.0, "drawn from the current version");
    let stored: Vec<_> = study
        .store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored, vec![d]);
    assert_eq!(study.service.current_parameters().unwrap().version, 1);
}

#[test]
fn every_stored_version_can_be_read_back() {
    let study = Study::new();
    study
        .store
        .publish_parameters("coin", &json!({ "p": 0.25, "n": 4 }), study.clock.now())
        .unwrap();
    assert_eq!(study.service.parameters(2).unwrap().values["p"], 0.25);
    assert_eq!(study.service.parameters(1).unwrap().values["p"], 0.5);
    let missing = study.service.parameters(3);
    assert!(
        matches!(missing, Err(DomainError::ParametersNotFound)),
        "{missing:?}"
    );
}
