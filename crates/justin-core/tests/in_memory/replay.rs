//! Replay: every decision the service drew comes out again from its stored state, parameter
//! version and seed; a stored decision that does not is reported with what differs.

use std::sync::Arc;

use justin_core::testing::{ManualClock, MemoryStore, RecordingNotifier};
use justin_core::{
    Action, ActionRequest, Availability, Clock, Decision, DecisionGuard, Enrollment, Probability,
    ReplayMismatch, ReplaySummary, Service, ServiceSettings, State, Store, TestingStore,
};

use crate::support::{action_request, settings, Coin, Study};

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
    let second = study.store.parameters(2).unwrap().unwrap();
    store
        .publish_parameters(&second.algorithm, &second.values, second.created_at)
        .unwrap();
    for d in decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
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
    let service = copy_with(&study, &altered, settings());

    let (summary, mismatches) = replay(&service);
    assert_eq!(
        summary,
        ReplaySummary {
            checked: 9,
            mismatches: 4,
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
