//! The warm-up: decisions drawn with a fixed probability from the decision's own generator
//! while any configured condition holds (a date, each participant's first decisions, the size
//! of the cohort, the first update), flagged as such, and learned from by default.

use std::time::Duration;

use justin_core::testing::ManualClock;
use justin_core::{
    ActionRequest, Availability, Clock, DecisionType, Policy, Probability, TrialSettings,
    UpdateInclusion,
};

use crate::support::{action_request, fixed_draw, settings_with, warmup, window, Study};

fn study_with(w: justin_core::Warmup) -> Study {
    Study::with_settings(settings_with(TrialSettings {
        warmup: Some(w),
        ..TrialSettings::default()
    }))
}

fn assert_warmup(d: &justin_core::Decision, p: f64) {
    assert_eq!(d.policy, Policy::Warmup, "{d:?}");
    let expected = fixed_draw(d.rng_seed, p);
    assert_eq!(
        (d.action, d.action_prob),
        (expected.action, expected.action_prob)
    );
}

fn assert_algorithm(d: &justin_core::Decision) {
    assert_eq!(d.policy, Policy::Algorithm, "{d:?}");
    assert_eq!(d.action_prob, Probability::new(0.5).unwrap());
}

#[test]
fn warm_up_holds_until_its_date() {
    let until = ManualClock::default().now() + chrono::Duration::days(1);
    let study = study_with(justin_core::Warmup {
        until: Some(until),
        ..warmup(0.9)
    });
    let alice = study.add_user("alice");
    let calls = study.store.calls();
    let early = study.decide(&alice, 0);
    assert_eq!(
        study.store.calls() - calls,
        1,
        "the date needs no store answer"
    );
    assert_warmup(&early, 0.9);

    study.clock.set(until);
    let late = study.decide(&alice, 1);
    assert_algorithm(&late);
}

#[test]
fn warm_up_holds_for_each_participants_first_decisions_of_each_type() {
    let study = study_with(justin_core::Warmup {
        first_decisions: Some(2),
        ..warmup(0.8)
    });
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    // An unavailable decision gets no draw and does not count.
    let off = ActionRequest {
        availability: Availability::unavailable(None).unwrap(),
        ..action_request(&alice, 0, study.clock.now())
    };
    let off = study.service.request_action(off).unwrap().decision;
    assert_eq!(off.policy, Policy::Warmup);
    assert_eq!(off.action_prob, Probability::ZERO);

    assert_warmup(&study.decide(&alice, 1), 0.8);
    assert_warmup(&study.decide(&alice, 2), 0.8);
    let calls = study.store.calls();
    assert_algorithm(&study.decide(&alice, 3));
    assert_eq!(
        study.store.calls() - calls,
        1,
        "past the warm-up: one store call"
    );
    // Bob and another type of alice's count on their own.
    assert_warmup(&study.decide(&bob, 7), 0.8);
    let evening = ActionRequest {
        decision_type: DecisionType::parse("evening").unwrap(),
        ..action_request(&alice, 4, study.clock.now())
    };
    let evening = study.service.request_action(evening).unwrap().decision;
    assert_warmup(&evening, 0.8);
}

#[test]
fn warm_up_holds_until_the_cohort_has_started_and_stays_over_once_it_has() {
    let study = study_with(justin_core::Warmup {
        until_participants: Some(2),
        ..warmup(0.7)
    });
    let t0 = study.clock.now();
    let alice = study.add_user("alice");
    let bob = study.enroll("bob", &window(Some(t0 + chrono::Duration::hours(1)), None));
    assert_warmup(&study.decide(&alice, 0), 0.7);

    study.clock.advance(Duration::from_secs(3600));
    assert_algorithm(&study.decide(&alice, 1));
    // Once the store has shown the cohort reached, later decisions do not count again,
    // even if a window moves.
    study
        .service
        .change_enrollment(&bob, &window(Some(t0 + chrono::Duration::days(9)), None))
        .unwrap();
    let calls = study.store.calls();
    assert_algorithm(&study.decide(&alice, 2));
    assert_eq!(study.store.calls() - calls, 1);
    // Earlier decision times are still counted.
    let earlier = study
        .service
        .request_action(action_request(&alice, 3, t0))
        .unwrap()
        .decision;
    assert_warmup(&earlier, 0.7);
}

#[test]
fn warm_up_holds_until_the_first_update_and_updates_learn_from_it_by_default() {
    let study = study_with(justin_core::Warmup {
        until_first_update: true,
        ..warmup(0.6)
    });
    let alice = study.add_user("alice");
    for i in 0..3 {
        let d = study.decide(&alice, i);
        assert_warmup(&d, 0.6);
        study.upload(&d, 0.25);
    }
    let update = study.run_update(1);
    let provenance = update.provenance.unwrap();
    assert_eq!(provenance.rows_read, 3);
    assert_eq!(provenance.included_policies, "algorithm,warmup");
    let after = study.decide(&alice, 3);
    assert_eq!(after.policy, Policy::Algorithm);
    assert_eq!(after.parameter_version, 2);
    assert_eq!(after.action_prob, Probability::new(0.25).unwrap());
}

#[test]
fn updates_leave_warm_up_decisions_out_when_configured() {
    let study = Study::with_settings(settings_with(TrialSettings {
        warmup: Some(justin_core::Warmup {
            first_decisions: Some(2),
            ..warmup(0.6)
        }),
        include: UpdateInclusion {
            warmup: false,
            ..UpdateInclusion::default()
        },
        ..TrialSettings::default()
    }));
    let alice = study.add_user("alice");
    for i in 0..3 {
        let d = study.decide(&alice, i);
        study.upload(&d, 1.0);
    }
    let provenance = study.run_update(1).provenance.unwrap();
    assert_eq!(provenance.rows_read, 1, "only the algorithm's decision");
    assert_eq!(provenance.included_policies, "algorithm");
    let used: Vec<Option<i64>> = study
        .service
        .export()
        .unwrap()
        .map(|row| row.unwrap().upload.unwrap().used_in_version)
        .collect();
    assert_eq!(used, vec![None, None, Some(2)]);
}

#[test]
fn a_participant_out_of_the_study_gets_no_warm_up_draw() {
    let study = study_with(justin_core::Warmup {
        first_decisions: Some(3),
        ..warmup(0.8)
    });
    let t0 = study.clock.now();
    let later = study.enroll("later", &window(Some(t0 + chrono::Duration::days(1)), None));
    let d = study.decide(&later, 0);
    assert_eq!(
        d.availability,
        Availability::OutOfStudy(justin_core::OutOfStudy::NotInStudy)
    );
    assert_eq!(d.policy, Policy::Algorithm);
    assert_eq!(d.action_prob, Probability::ZERO);
    // Decisions out of the study do not use up the warm-up.
    study.clock.advance(Duration::from_secs(2 * 86_400));
    assert_warmup(&study.decide(&later, 1), 0.8);
}

#[test]
fn a_refused_decision_that_shows_the_cohort_reached_ends_the_counting() {
    let study = study_with(justin_core::Warmup {
        until_participants: Some(2),
        ..warmup(0.7)
    });
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    study.service.withdraw(&alice, "left").unwrap();
    // Alice's refused decision tells the service that two participants had started.
    let withdrawn = study.decide(&alice, 0);
    assert!(!withdrawn.availability.in_study());
    study
        .service
        .change_enrollment(
            &alice,
            &window(Some(study.clock.now() + chrono::Duration::days(9)), None),
        )
        .unwrap();
    let calls = study.store.calls();
    assert_algorithm(&study.decide(&bob, 0));
    assert_eq!(study.store.calls() - calls, 1);
}
