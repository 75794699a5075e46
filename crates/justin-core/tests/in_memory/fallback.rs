//! The fallback: when the algorithm fails (an error or a panic) for a request the service
//! accepted, the decision is drawn from the configured fallback probability and stored with
//! the failure's reason; without a fallback the failure is the answer, as before.

use justin_core::{
    ActionRequest, AlgorithmError, Availability, DomainError, Policy, Probability, TrialSettings,
    UpdateInclusion,
};
use serde_json::json;

use crate::support::{action_request, fixed_draw, object, settings_with, ActionFailure, Study};

fn study_with_fallback(p: f64, include: UpdateInclusion) -> Study {
    Study::with_settings(settings_with(TrialSettings {
        fallback: Some(Probability::new(p).unwrap()),
        include,
        ..TrialSettings::default()
    }))
}

/// A request whose context holds a value no stored reason may repeat.
fn telling_request(study: &Study, user: &justin_core::UserId, i: i64) -> ActionRequest {
    ActionRequest {
        context: object(json!({ "x": 98765.4321 })),
        ..action_request(user, i, justin_core::Clock::now(study.clock.as_ref()))
    }
}

#[test]
fn a_failing_or_panicking_algorithm_falls_back_with_a_reason_free_of_request_values() {
    let study = study_with_fallback(0.3, UpdateInclusion::default());
    let alice = study.add_user("alice");
    for (i, failure, reason) in [
        (
            0,
            ActionFailure::Error,
            "the algorithm failed: invalid parameters: p is out of order",
        ),
        (1, ActionFailure::Panic, "the algorithm panicked"),
    ] {
        study.algorithm.fail_actions(Some(failure));
        let answer = study
            .service
            .request_action(telling_request(&study, &alice, i))
            .unwrap();
        assert!(answer.created);
        let d = answer.decision;
        assert_eq!(
            d.policy,
            Policy::Fallback {
                reason: reason.into()
            }
        );
        let expected = fixed_draw(d.rng_seed, 0.3);
        assert_eq!(
            (d.action, d.action_prob),
            (expected.action, expected.action_prob)
        );
        assert!(!format!("{:?}", d.policy).contains("98765"));
    }
    study.algorithm.fail_actions(None);
    assert_eq!(study.decide(&alice, 2).policy, Policy::Algorithm);
}

#[test]
fn an_unavailable_decision_needs_no_fallback() {
    let study = study_with_fallback(0.3, UpdateInclusion::default());
    let alice = study.add_user("alice");
    study.algorithm.fail_actions(Some(ActionFailure::Error));
    let off = ActionRequest {
        availability: Availability::unavailable(None).unwrap(),
        ..action_request(&alice, 0, justin_core::Clock::now(study.clock.as_ref()))
    };
    let d = study.service.request_action(off).unwrap().decision;
    assert_eq!(d.policy, Policy::Algorithm);
    assert_eq!(d.action_prob, Probability::ZERO);
}

#[test]
fn without_a_fallback_the_failure_is_the_answer() {
    let study = Study::new();
    let alice = study.add_user("alice");
    study.algorithm.fail_actions(Some(ActionFailure::Error));
    let failed = study
        .service
        .request_action(telling_request(&study, &alice, 0));
    assert!(
        matches!(
            failed,
            Err(DomainError::Algorithm(AlgorithmError::InvalidParameters(_)))
        ),
        "{failed:?}"
    );
    assert_eq!(study.counts()["actions"], 0);

    study.algorithm.fail_actions(Some(ActionFailure::Panic));
    let service = study.service.clone();
    let request = telling_request(&study, &alice, 0);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        service.request_action(request)
    }));
    assert!(panicked.is_err(), "the panic goes on as before");
    assert_eq!(study.counts()["actions"], 0);
}

#[test]
fn updates_leave_fallback_decisions_out_unless_configured() {
    for (include, rows) in [
        (UpdateInclusion::default(), 1),
        (
            UpdateInclusion {
                fallback: true,
                ..UpdateInclusion::default()
            },
            2,
        ),
    ] {
        let study = study_with_fallback(0.3, include);
        let alice = study.add_user("alice");
        let drawn = study.decide(&alice, 0);
        study.upload(&drawn, 1.0);
        study.algorithm.fail_actions(Some(ActionFailure::Error));
        let fallen_back = study.decide(&alice, 1);
        study.upload(&fallen_back, 1.0);
        study.algorithm.fail_actions(None);
        let provenance = study.run_update(1).provenance.unwrap();
        assert_eq!(provenance.rows_read, rows, "{include:?}");
        assert_eq!(provenance.included_policies, include.as_stored());
    }
}
