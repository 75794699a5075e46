//! Decisions the study server made itself while the service was unreachable, sent afterwards:
//! stored as sent, marked as the host's, checked against an upload sent before them, and kept
//! out of updates unless configured.

use justin_core::{
    Action, Availability, Clock, DecisionIdx, DecisionType, DomainError, HostDecisionRequest,
    Policy, Probability, State, TrialSettings, UpdateInclusion, UploadRecorded,
};
use serde_json::json;

use crate::support::{host_request, idx, object, settings_with, user, Study, SEED};

#[test]
fn a_host_decision_is_stored_as_sent_and_a_repeat_returns_it() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let answer = study
        .service
        .record_host_decision(host_request(&study, &alice, 3, Action::One, 0.4))
        .unwrap();
    assert!(answer.created);
    let d = &answer.decision;
    assert_eq!((d.action, d.action_prob.get()), (Action::One, 0.4));
    assert_eq!(
        d.policy,
        Policy::Host {
            decided_by: "fixed schedule".into()
        }
    );
    assert_eq!(
        d.rng_seed,
        justin_core::rng::decision_seed(SEED, &alice, &DecisionType::default(), idx(3))
    );
    assert_eq!(d.parameter_version, 1);
    assert_eq!(d.state, State::new(vec![3.0]).unwrap());

    let again = study
        .service
        .record_host_decision(host_request(&study, &alice, 3, Action::One, 0.4))
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.decision, answer.decision);

    let other =
        study
            .service
            .record_host_decision(host_request(&study, &alice, 3, Action::Zero, 0.4));
    match other {
        Err(DomainError::DecisionDiffers(stored)) => assert_eq!(*stored, answer.decision),
        other => panic!("expected DecisionDiffers, got {other:?}"),
    }
    // A decision the service drew differs from a host decision with other values too.
    let drawn = study.decide(&alice, 4);
    let action = if drawn.action == Action::One {
        Action::Zero
    } else {
        Action::One
    };
    let differs = study
        .service
        .record_host_decision(host_request(&study, &alice, 4, action, 0.5));
    assert!(
        matches!(differs, Err(DomainError::DecisionDiffers(_))),
        "{differs:?}"
    );
    assert_eq!(study.counts()["actions"], 2);
}

#[test]
fn a_host_decision_with_a_context_the_algorithm_cannot_use_is_stored_with_an_empty_state() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let request = HostDecisionRequest {
        context: object(json!({ "note": "offline" })),
        ..host_request(&study, &alice, 0, Action::Zero, 0.5)
    };
    let d = study
        .service
        .record_host_decision(request)
        .unwrap()
        .decision;
    assert_eq!(d.state, State::default());
    assert_eq!(d.context, object(json!({ "note": "offline" })));
}

#[test]
fn bad_host_decisions_are_refused() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let unknown = study.service.record_host_decision(host_request(
        &study,
        &user("mallory"),
        0,
        Action::One,
        0.5,
    ));
    assert!(
        matches!(unknown, Err(DomainError::UserNotFound)),
        "{unknown:?}"
    );
    let nobody = HostDecisionRequest {
        decided_by: String::new(),
        ..host_request(&study, &alice, 0, Action::One, 0.5)
    };
    let drawn_while_off = HostDecisionRequest {
        availability: Availability::unavailable(None).unwrap(),
        ..host_request(&study, &alice, 0, Action::One, 0.5)
    };
    for bad in [nobody, drawn_while_off] {
        let refused = study.service.record_host_decision(bad);
        assert!(
            matches!(refused, Err(DomainError::InvalidInput(_))),
            "{refused:?}"
        );
    }
    assert_eq!(study.counts()["actions"], 0);
    let _ = DecisionIdx::new(0);
}

#[test]
fn a_host_decision_after_its_upload_makes_the_upload_logged_or_is_refused() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let upload = justin_core::UploadRequest {
        user_id: alice.clone(),
        decision_type: DecisionType::default(),
        decision_idx: idx(0),
        requested_at: study.clock.now(),
        sent_timestamp: study.clock.now().to_rfc3339(),
        context: object(json!({ "x": 0 })),
        action: Action::One,
        action_prob: Probability::new(0.4).unwrap(),
        state: State::new(vec![0.0]).unwrap(),
        outcome: object(json!({ "r": 1.0 })),
    };
    assert_eq!(
        study.service.upload_data(upload.clone()).unwrap(),
        UploadRecorded {
            action_logged: false
        }
    );
    let mismatch =
        study
            .service
            .record_host_decision(host_request(&study, &alice, 0, Action::Zero, 0.4));
    match mismatch {
        Err(DomainError::UploadMismatch {
            uploaded_action,
            uploaded_prob,
            logged_action,
            logged_prob,
        }) => assert_eq!(
            (uploaded_action, uploaded_prob, logged_action, logged_prob),
            (1, 0.4, 0, 0.4)
        ),
        other => panic!("expected UploadMismatch, got {other:?}"),
    }
    let stored = study
        .service
        .record_host_decision(host_request(&study, &alice, 0, Action::One, 0.4))
        .unwrap();
    assert!(stored.created);
    let rows: Vec<_> = study
        .service
        .export()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].decision, stored.decision);
    assert!(rows[0].upload.is_some(), "the upload now has its decision");
}

#[test]
fn updates_leave_host_decisions_out_unless_configured() {
    for (include, rows) in [
        (UpdateInclusion::default(), 0),
        (
            UpdateInclusion {
                host: true,
                ..UpdateInclusion::default()
            },
            1,
        ),
    ] {
        let study = Study::with_settings(settings_with(TrialSettings {
            include,
            ..TrialSettings::default()
        }));
        let alice = study.add_user("alice");
        let d = study
            .service
            .record_host_decision(host_request(&study, &alice, 0, Action::One, 0.4))
            .unwrap()
            .decision;
        study.upload(&d, 1.0);
        assert_eq!(
            study.run_update(1).provenance.unwrap().rows_read,
            rows,
            "{include:?}"
        );
    }
}
