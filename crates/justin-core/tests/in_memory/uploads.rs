//! Uploading study data: stored once per key with the reward the algorithm derives, checked
//! against the logged decision, and refused whole (nothing stored) for any reason.

use justin_core::{Action, DomainError, Probability, TestingStore, UploadRecorded, UploadRequest};
use serde_json::json;

use crate::support::{idx, object, upload_request, user, Study};

/// Asserts that nothing was uploaded.
fn nothing_stored(study: &Study) {
    assert_eq!(study.counts()["study_data"], 0);
}

#[test]
fn an_upload_agreeing_with_its_decision_is_stored_with_its_reward_as_logged() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    assert_eq!(
        study.upload(&d, 0.75),
        UploadRecorded {
            action_logged: true
        }
    );
    let stored: Vec<_> = study
        .store
        .study_data()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reward, 0.75);
    assert_eq!(stored[0].action, d.action);
    assert_eq!(stored[0].outcome, object(json!({ "r": 0.75 })));
}

#[test]
fn an_upload_without_a_decision_is_stored_as_not_logged() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    let elsewhere = UploadRequest {
        decision_idx: idx(7),
        ..upload_request(&d, 1.0)
    };
    assert_eq!(
        study.service.upload_data(elsewhere).unwrap(),
        UploadRecorded {
            action_logged: false
        }
    );
}

#[test]
fn an_upload_contradicting_the_logged_action_is_refused_naming_both() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    let other = match d.action {
        Action::Zero => Action::One,
        Action::One => Action::Zero,
    };
    let refused = study.service.upload_data(UploadRequest {
        action: other,
        ..upload_request(&d, 1.0)
    });
    match refused {
        Err(DomainError::UploadMismatch {
            uploaded_action,
            uploaded_prob,
            logged_action,
            logged_prob,
        }) => {
            assert_eq!(uploaded_action, other.as_i16());
            assert_eq!(logged_action, d.action.as_i16());
            assert_eq!(uploaded_prob, d.action_prob.get());
            assert_eq!(logged_prob, d.action_prob.get());
        }
        other => panic!("expected UploadMismatch, got {other:?}"),
    }
    nothing_stored(&study);
}

#[test]
fn an_upload_is_checked_against_the_logged_probability_within_the_tolerance() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    let p = d.action_prob.get();
    let off = study.service.upload_data(UploadRequest {
        action_prob: Probability::new(p + 1e-6).unwrap(),
        ..upload_request(&d, 1.0)
    });
    assert!(
        matches!(off, Err(DomainError::UploadMismatch { .. })),
        "{off:?}"
    );
    nothing_stored(&study);

    let rounded = study.service.upload_data(UploadRequest {
        action_prob: Probability::new(p + Probability::TOLERANCE / 10.0).unwrap(),
        ..upload_request(&d, 1.0)
    });
    assert_eq!(
        rounded.unwrap(),
        UploadRecorded {
            action_logged: true
        }
    );
}

#[test]
fn a_second_upload_of_one_decision_is_refused() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    study.upload(&d, 1.0);
    let again = study.service.upload_data(upload_request(&d, 0.0));
    assert!(
        matches!(again, Err(DomainError::DecisionExists)),
        "{again:?}"
    );
    let stored: Vec<_> = study
        .store
        .study_data()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].reward, 1.0, "the first upload stands");
}

#[test]
fn an_upload_of_an_unknown_participant_is_refused() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    let refused = study.service.upload_data(UploadRequest {
        user_id: user("mallory"),
        ..upload_request(&d, 1.0)
    });
    assert!(
        matches!(refused, Err(DomainError::UserNotFound)),
        "{refused:?}"
    );
    nothing_stored(&study);
}

#[test]
fn an_upload_the_algorithm_cannot_use_is_refused_with_its_message() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    let bad_context = UploadRequest {
        context: object(json!({})),
        ..upload_request(&d, 1.0)
    };
    let bad_outcome = UploadRequest {
        outcome: object(json!({ "r": "high" })),
        ..upload_request(&d, 1.0)
    };
    for (request, message) in [
        (bad_context, "context.x must be a number."),
        (bad_outcome, "outcome.r must be a number."),
    ] {
        let refused = study.service.upload_data(request);
        assert!(
            matches!(&refused, Err(DomainError::InvalidInput(m)) if m == message),
            "expected {message:?}, got {refused:?}"
        );
    }
    nothing_stored(&study);
}

#[test]
fn an_upload_whose_reward_is_not_finite_is_refused() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let d = study.decide(&alice, 0);
    study.algorithm.give_infinite_rewards();
    let refused = study.service.upload_data(upload_request(&d, 1.0));
    assert!(
        matches!(&refused, Err(DomainError::InvalidInput(m)) if m.contains("not a finite number")),
        "{refused:?}"
    );
    nothing_stored(&study);
}
