//! Registering participants and requesting actions: one decision per key, drawn from the
//! decision's own generator, stored once and returned as stored to every repeat.

use justin_core::{
    Action, ActionRequest, Availability, Clock, DomainError, Enrollment, Probability, State,
    UploadRequest,
};
use serde_json::json;

use crate::support::{action_request, object, upload_request, user, Study, SEED};

#[test]
fn a_participant_is_registered_once() {
    let study = Study::new();
    study.add_user("alice");
    let again = study
        .service
        .add_user(&user("alice"), &Enrollment::default());
    assert!(matches!(again, Err(DomainError::UserExists)), "{again:?}");
    assert_eq!(study.counts()["users"], 1);
}

#[test]
fn a_repeated_request_returns_the_stored_decision_and_stores_nothing() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let first = study
        .service
        .request_action(action_request(&alice, 0, study.clock.now()))
        .unwrap();
    assert!(first.created);

    // The repeat comes later, with another context: what was decided stands.
    study.clock.advance(std::time::Duration::from_secs(60));
    let repeat = ActionRequest {
        context: object(json!({ "x": 99 })),
        ..action_request(&alice, 0, study.clock.now())
    };
    let again = study.service.request_action(repeat).unwrap();
    assert!(!again.created, "a repeat creates nothing");
    assert_eq!(again.decision, first.decision);
    assert_eq!(study.counts()["actions"], 1);
}

#[test]
fn a_decision_is_drawn_from_its_own_seed_whatever_the_order_of_requests() {
    let forwards = Study::new();
    let backwards = Study::new();
    let users = ["u1", "u2", "u3"];
    for name in users {
        forwards.add_user(name);
        backwards.add_user(name);
    }
    let keys: Vec<(&str, i64)> = users
        .iter()
        .flat_map(|u| (0..5).map(move |i| (*u, i)))
        .collect();
    let a: Vec<_> = keys
        .iter()
        .map(|(u, i)| forwards.decide(&user(u), *i))
        .collect();
    let mut b: Vec<_> = keys
        .iter()
        .rev()
        .map(|(u, i)| backwards.decide(&user(u), *i))
        .collect();
    b.reverse();
    for (a, b) in a.iter().zip(&b) {
        assert_eq!(
            (a.action, a.action_prob, a.rng_seed),
            (b.action, b.action_prob, b.rng_seed)
        );
        let derived =
            justin_core::rng::decision_seed(SEED, &a.user_id, &a.decision_type, a.decision_idx);
        assert_eq!(a.rng_seed, derived, "the stored seed is the derived one");
        assert_eq!(a.action_prob, Probability::new(0.5).unwrap());
        assert_eq!(a.parameter_version, 1);
    }
    // With p = 0.5, fifteen draws that all came out alike would mean no draw at all.
    assert!(a.iter().any(|d| d.action == Action::One));
    assert!(a.iter().any(|d| d.action == Action::Zero));
}

#[test]
fn an_unavailable_decision_is_stored_without_a_draw_whatever_its_context() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let request = ActionRequest {
        availability: Availability::unavailable(Some("driving".into())).unwrap(),
        context: object(json!({ "speed": "fast" })),
        ..action_request(&alice, 3, study.clock.now())
    };
    let answer = study.service.request_action(request).unwrap();
    assert!(answer.created);
    let d = answer.decision;
    assert_eq!(d.action, Action::Zero);
    assert_eq!(d.action_prob, Probability::ZERO);
    assert_eq!(
        d.state,
        State::default(),
        "no state from an unusable context"
    );
    assert_eq!(d.availability.reason(), Some("driving"));
    assert_eq!(
        d.rng_seed,
        justin_core::rng::decision_seed(SEED, &alice, &d.decision_type, d.decision_idx),
        "its seed is stored all the same"
    );
}

#[test]
fn a_decision_the_algorithm_declares_not_available_is_stored_without_a_draw() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let request = ActionRequest {
        context: object(json!({ "x": null })),
        ..action_request(&alice, 4, study.clock.now())
    };
    let answer = study.service.request_action(request.clone()).unwrap();
    assert!(answer.created);
    let d = answer.decision;
    assert_eq!((d.action, d.action_prob), (Action::Zero, Probability::ZERO));
    assert!(!d.availability.is_available());
    assert_eq!(d.availability.reason(), Some(justin_core::MISSING_CONTEXT));
    assert_eq!(d.policy, justin_core::Policy::Algorithm);
    assert_eq!(
        d.context,
        object(json!({ "x": null })),
        "the context as sent"
    );
    // A repeat gets the stored decision.
    let again = study.service.request_action(request).unwrap();
    assert!(!again.created);
    assert_eq!(again.decision, d);

    // The study server's own reason stands.
    let marked = ActionRequest {
        availability: Availability::unavailable(Some("asleep".into())).unwrap(),
        context: object(json!({ "x": null })),
        ..action_request(&alice, 5, study.clock.now())
    };
    let d5 = study.service.request_action(marked).unwrap().decision;
    assert_eq!(d5.availability.reason(), Some("asleep"));

    // Its upload is accepted (the context follows the same rule) and never reaches an update.
    study.upload(&d, 1.0);
    let mut mismatches = 0;
    let summary = study
        .service
        .replay(&mut |_| mismatches += 1, &mut |_| {})
        .unwrap();
    assert_eq!((summary.checked, mismatches), (2, 0));
}

#[test]
fn an_available_decision_needs_a_context_the_algorithm_can_use() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let request = ActionRequest {
        context: object(json!({ "x": "not a number" })),
        ..action_request(&alice, 0, study.clock.now())
    };
    let refused = study.service.request_action(request);
    assert!(
        matches!(&refused, Err(DomainError::InvalidInput(m)) if m == "context.x must be a number."),
        "{refused:?}"
    );
    assert_eq!(study.counts()["actions"], 0);
}

#[test]
fn a_decision_of_an_unknown_participant_is_refused() {
    let study = Study::new();
    let refused =
        study
            .service
            .request_action(action_request(&user("mallory"), 0, study.clock.now()));
    assert!(
        matches!(refused, Err(DomainError::UserNotFound)),
        "{refused:?}"
    );
    assert_eq!(study.counts()["actions"], 0);
}

#[test]
fn a_decision_whose_data_was_uploaded_is_closed() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let logged = study.decide(&alice, 0);
    study.upload(&logged, 1.0);
    let repeat = study
        .service
        .request_action(action_request(&alice, 0, study.clock.now()));
    assert!(
        matches!(repeat, Err(DomainError::DecisionExists)),
        "{repeat:?}"
    );

    // So is a key whose data came without a decision.
    let unlogged = UploadRequest {
        decision_idx: crate::support::idx(1),
        ..upload_request(&logged, 0.0)
    };
    study.service.upload_data(unlogged).unwrap();
    let late = study
        .service
        .request_action(action_request(&alice, 1, study.clock.now()));
    assert!(matches!(late, Err(DomainError::DecisionExists)), "{late:?}");
    assert_eq!(study.counts()["actions"], 1);
}
