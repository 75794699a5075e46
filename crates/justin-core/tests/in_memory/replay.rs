//! Replay: every decision the service drew comes out again from its stored state, parameter
//! version and seed; a stored decision that does not is reported with what differs.

use std::sync::Arc;

use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
use justin_core::{
    Action, ActionRequest, Availability, Clock, Decision, DecisionGuard, DecisionType, Enrollment,
    HostDecisionRequest, Probability, ReplayMismatch, ReplaySummary, Service, ServiceSettings,
    State, Store, TestingStore, TrialSettings, UpdateInclusion, Warmup,
};

use crate::support::{
    action_request, settings, settings_with, warmup, window, ActionFailure, Coin, Study,
};

fn replay(service: &Service) -> (ReplaySummary, Vec<ReplayMismatch>) {
    let mut mismatches = Vec::new();
    let summary = service
        .replay(&mut |m| mismatches.push(m.clone()), &mut |u| {
            panic!("nothing was erased, yet {u:?} is unverifiable")
        })
        .unwrap();
    (summary, mismatches)
}

/// A study where alice and bob have decisions under two parameter versions, one of them
/// unavailable.
fn study_with_decisions() -> Study {
    let study = Study::new();
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    for i in 0..4 {
        let d = study.decide(&alice, i);
        study.upload(&d, 0.25);
    }
    study.request_update(1);
    study.service.run_next_update().unwrap().unwrap();
    for i in 0..4 {
        study.decide(&bob, i);
    }
    let off = ActionRequest {
        availability: Availability::unavailable(Some("asleep".into())).unwrap(),
        ..action_request(&bob, 4, study.clock.now())
    };
    study.service.request_action(off).unwrap();
    study
}

#[test]
fn every_decision_the_service_drew_replays() {
    let study = study_with_decisions();
    let versions: Vec<i64> = study
        .store
        .decisions()
        .unwrap()
        .map(|d| d.unwrap().parameter_version)
        .collect();
    assert_eq!(versions, vec![1, 1, 1, 1, 2, 2, 2, 2, 2]);

    let (summary, mismatches) = replay(&study.service);
    assert_eq!(mismatches, vec![]);
    assert_eq!(
        summary,
        ReplaySummary {
            checked: 9,
            ..ReplaySummary::default()
        }
    );
}

/// A service over a copy of `study`'s users and parameters, whose decisions are `decisions`.
fn copy_with(study: &Study, decisions: &[Decision], settings: ServiceSettings) -> Service {
    let store = Arc::new(MemoryStore::new());
    for name in ["alice", "bob"] {
        store
            .add_user(
                &crate::support::user(name),
                &Enrollment::default(),
                study.clock.now(),
            )
            .unwrap();
    }
    let first = study.store.parameters(1).unwrap().unwrap();
    store
        .seed_parameters(&first.algorithm, &first.values, first.created_at)
        .unwrap();
    // Version 2 is published before the first decision drawn under it, as in the study: no
    // decision is stored under a version older than the newest.
    let second = study.store.parameters(2).unwrap().unwrap();
    let publish = || {
        store
            .publish_parameters(&second.algorithm, &second.values, second.created_at)
            .unwrap();
    };
    let mut published = false;
    for d in decisions {
        if d.parameter_version == 2 && !published {
            publish();
            published = true;
        }
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    if !published {
        publish();
    }
    Service::new(
        store,
        Arc::new(Coin::default()),
        Arc::new(ManualClock::default()),
        Arc::new(RecordingNotifier::new()),
        settings,
    )
}

#[test]
fn a_stored_decision_that_differs_from_its_replay_is_reported() {
    let study = study_with_decisions();
    let stored: Vec<Decision> = study
        .store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut altered = stored.clone();
    // Decision 0: the other action.
    altered[0].action = match altered[0].action {
        Action::Zero => Action::One,
        Action::One => Action::Zero,
    };
    // Decision 1: a probability off by more than the tolerance; decision 2 within it.
    altered[1].action_prob = Probability::new(stored[1].action_prob.get() + 1e-6).unwrap();
    altered[2].action_prob = Probability::new(stored[2].action_prob.get() + 1e-12).unwrap();
    // Decision 4: a seed that is not the derived one.
    altered[4].rng_seed ^= 1;
    // Decision 5: a state the algorithm cannot draw from.
    altered[5].state = State::new(vec![1.0, 2.0]).unwrap();
    // Decision 6: a state the algorithm draws from, but not the one it makes of the context.
    altered[6].state = State::new(vec![stored[6].state.values()[0] + 0.5]).unwrap();
    let service = copy_with(&study, &altered, settings());

    let (summary, mismatches) = replay(&service);
    assert_eq!(
        summary,
        ReplaySummary {
            checked: 9,
            mismatches: 5,
            ..ReplaySummary::default()
        }
    );
    let reported: Vec<(i64, &str)> = mismatches
        .iter()
        .map(|m| {
            let d = altered
                .iter()
                .position(|d| d.user_id == m.user_id && d.decision_idx == m.decision_idx)
                .unwrap();
            (i64::try_from(d).unwrap(), m.reason.as_str())
        })
        .collect();
    assert_eq!(
        reported,
        vec![
            (0, "the action differs"),
            (1, "the probability differs"),
            (
                4,
                "the stored seed is not the one derived from algorithm.seed, user, decision type and index"
            ),
            (
                5,
                "the algorithm cannot replay it: the state must hold one number"
            ),
            (
                6,
                "the state made from the stored context differs from the stored state"
            ),
        ]
    );
    // Each names what was stored and, when it could draw, what the replay drew.
    assert_eq!(mismatches[0].stored_action, altered[0].action);
    assert_eq!(mismatches[0].replayed_action, Some(stored[0].action));
    assert_eq!(mismatches[1].stored_prob, altered[1].action_prob);
    assert_eq!(mismatches[1].replayed_prob, Some(stored[1].action_prob));
    assert_eq!(mismatches[3].replayed_action, None);
    assert_eq!(mismatches[3].replayed_prob, None);
}

#[test]
fn decisions_replayed_with_another_study_seed_all_differ() {
    let study = study_with_decisions();
    let stored: Vec<Decision> = study
        .store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let other_seed = ServiceSettings {
        seed: crate::support::SEED + 1,
        ..settings()
    };
    let (summary, mismatches) = replay(&copy_with(&study, &stored, other_seed));
    assert_eq!(summary.mismatches, 9);
    assert!(mismatches
        .iter()
        .all(|m| m.reason.starts_with("the stored seed is not")));
}

/// A study with decisions of every kind: warm-up and algorithm draws, fallback draws after an
/// error and a panic, decisions out of the study and after a withdrawal, an unavailable one,
/// a host decision, under two parameter versions.
fn study_of_every_kind() -> Study {
    let study = Study::with_settings(settings_with(trial()));
    let t0 = study.clock.now();
    let alice = study.add_user("alice");
    let bob = study.enroll("bob", &window(Some(t0 + chrono::Duration::hours(1)), None));
    for i in 0..3 {
        let d = study.decide(&alice, i);
        study.upload(&d, 0.75);
    }
    for (i, failure) in [(3, ActionFailure::Error), (4, ActionFailure::Panic)] {
        study.algorithm.fail_actions(Some(failure));
        study.decide(&alice, i);
    }
    study.algorithm.fail_actions(None);
    study.decide(&bob, 0);
    study.run_update(1);
    study.clock.advance(std::time::Duration::from_secs(7200));
    for i in 1..4 {
        study.decide(&bob, i);
    }
    let off = ActionRequest {
        availability: Availability::unavailable(Some("asleep".into())).unwrap(),
        ..action_request(&bob, 4, study.clock.now())
    };
    study.service.request_action(off).unwrap();
    study.service.withdraw(&alice, "left").unwrap();
    study.decide(&alice, 5);
    let now = study.clock.now();
    study
        .service
        .record_host_decision(HostDecisionRequest {
            user_id: bob.clone(),
            decision_type: DecisionType::default(),
            decision_idx: crate::support::idx(9),
            requested_at: now,
            sent_timestamp: now.to_rfc3339(),
            availability: Availability::Available,
            context: crate::support::object(serde_json::json!({ "x": 9 })),
            action: Action::One,
            action_prob: Probability::new(0.9).unwrap(),
            decided_by: "schedule".into(),
        })
        .unwrap();
    study
}

fn trial() -> TrialSettings {
    TrialSettings {
        warmup: Some(Warmup {
            first_decisions: Some(2),
            ..warmup(0.8)
        }),
        fallback: Some(Probability::new(0.3).unwrap()),
        include: UpdateInclusion::default(),
        missing_outcomes: None,
    }
}

#[test]
fn replay_is_exact_across_warm_up_fallback_out_of_study_withdrawn_and_host_decisions() {
    let study = study_of_every_kind();
    let kinds: Vec<(String, Option<&'static str>, i64)> = study
        .store
        .decisions()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            let out = match d.availability {
                Availability::OutOfStudy(why) => Some(why.as_str()),
                _ => None,
            };
            (d.policy.as_str().to_owned(), out, d.parameter_version)
        })
        .collect();
    let k = |policy: &str, out: Option<&'static str>, v: i64| (policy.to_owned(), out, v);
    assert_eq!(
        kinds,
        vec![
            k("warmup", None, 1),
            k("warmup", None, 1),
            k("algorithm", None, 1),
            k("fallback", None, 1),
            k("fallback", None, 1),
            k("algorithm", Some("not_in_study"), 1),
            k("warmup", None, 2),
            k("warmup", None, 2),
            k("algorithm", None, 2),
            k("algorithm", None, 2),
            k("algorithm", Some("withdrawn"), 2),
            k("host", None, 2),
        ]
    );

    let (summary, mismatches) = replay(&study.service);
    assert_eq!(mismatches, vec![]);
    assert_eq!(
        summary,
        ReplaySummary {
            checked: 11,
            host_decided: 1,
            ..ReplaySummary::default()
        }
    );
}

#[test]
fn warm_up_and_fallback_decisions_do_not_replay_without_their_settings() {
    let study = study_of_every_kind();
    let without = study.another_process(settings());
    let (summary, mismatches) = replay(&without);
    let reasons: Vec<&str> = mismatches.iter().map(|m| m.reason.as_str()).collect();
    assert_eq!(
        reasons,
        vec![
            "warm-up is not configured",
            "warm-up is not configured",
            "the fallback is not configured",
            "the fallback is not configured",
            "warm-up is not configured",
            "warm-up is not configured",
        ]
    );
    assert_eq!(summary.mismatches, 6);

    // Another warm-up probability draws other decisions.
    let changed = study.another_process(settings_with(TrialSettings {
        warmup: Some(Warmup {
            first_decisions: Some(2),
            ..warmup(0.2)
        }),
        ..trial()
    }));
    let (_, mismatches) = replay(&changed);
    assert_eq!(mismatches.len(), 4);
    assert!(mismatches
        .iter()
        .all(|m| m.reason == "the probability differs" || m.reason == "the action differs"));
}
