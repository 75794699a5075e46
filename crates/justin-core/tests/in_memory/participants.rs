//! The participant's life in the study: a window of time in it, changes to that window, and
//! withdrawal. Decisions outside the window or after a withdrawal are stored without a draw,
//! so the participant × decision-time grid stays complete.

use std::time::Duration;

use chrono::{DateTime, Utc};
use justin_core::{
    Action, ActionRequest, Availability, Clock, DomainError, Enrollment, OutOfStudy,
    ParticipantStatus, Policy, Probability, Store, Withdrawal,
};

use crate::support::{action_request, upload_request, user, window, Study};

const HOUR: Duration = Duration::from_secs(3600);

fn hours(n: i64) -> chrono::Duration {
    chrono::Duration::hours(n)
}

/// A study with alice in it from one hour after the clock's start to three hours after.
fn study_with_alice() -> (Study, DateTime<Utc>) {
    let study = Study::new();
    let t0 = study.clock.now();
    study.enroll("alice", &window(Some(t0 + hours(1)), Some(t0 + hours(3))));
    (study, t0)
}

#[test]
fn a_participant_is_shown_with_their_window_counts_and_where_they_stand_now() {
    let (study, t0) = study_with_alice();
    let alice = user("alice");
    let view = study.service.participant(&alice).unwrap();
    assert_eq!(view.status, ParticipantStatus::NotStarted);
    assert_eq!(view.participant.created_at, t0);
    assert_eq!(
        view.participant.enrollment,
        window(Some(t0 + hours(1)), Some(t0 + hours(3)))
    );
    assert_eq!(
        (view.participant.decisions, view.participant.uploads),
        (0, 0)
    );

    study.clock.advance(HOUR);
    let d = study.decide(&alice, 0);
    study.upload(&d, 1.0);
    let view = study.service.participant(&alice).unwrap();
    assert_eq!(view.status, ParticipantStatus::Active);
    assert_eq!(
        (view.participant.decisions, view.participant.uploads),
        (1, 1)
    );

    study.clock.advance(2 * HOUR);
    assert_eq!(
        study.service.participant(&alice).unwrap().status,
        ParticipantStatus::Ended
    );
    let unknown = study.service.participant(&user("mallory"));
    assert!(
        matches!(unknown, Err(DomainError::UserNotFound)),
        "{unknown:?}"
    );
}

#[test]
fn decisions_outside_the_window_are_stored_without_a_draw() {
    let (study, t0) = study_with_alice();
    let alice = user("alice");
    let at = |i: i64, t: DateTime<Utc>| study.service.request_action(action_request(&alice, i, t));

    let before = at(0, t0 + hours(1) - chrono::Duration::microseconds(1)).unwrap();
    let first = at(1, t0 + hours(1)).unwrap();
    let last = at(2, t0 + hours(3) - chrono::Duration::microseconds(1)).unwrap();
    let after = at(3, t0 + hours(3)).unwrap();
    // The client's own unavailability gives way to the service's reason.
    let off = ActionRequest {
        availability: Availability::unavailable(Some("driving".into())).unwrap(),
        ..action_request(&alice, 4, t0 + hours(5))
    };
    let off = study.service.request_action(off).unwrap();

    for (what, answer) in [("before", &before), ("after", &after), ("off", &off)] {
        let d = &answer.decision;
        assert!(answer.created, "{what}");
        assert_eq!(
            d.availability,
            Availability::OutOfStudy(OutOfStudy::NotInStudy),
            "{what}"
        );
        assert_eq!((d.action, d.action_prob), (Action::Zero, Probability::ZERO));
        assert_eq!(d.policy, Policy::Algorithm);
        assert_eq!(d.availability.reason(), Some("not_in_study"));
    }
    for d in [&first.decision, &last.decision] {
        assert_eq!(d.availability, Availability::Available);
        assert_eq!(d.action_prob, Probability::new(0.5).unwrap());
    }
    // Every decision time has its row, flagged.
    let in_study: Vec<bool> = study
        .service
        .export()
        .unwrap()
        .map(|row| row.unwrap().decision.availability.in_study())
        .collect();
    assert_eq!(in_study, vec![false, true, true, false, false]);

    // A repeat returns the stored decision.
    let again = at(0, t0 + hours(2)).unwrap();
    assert!(!again.created);
    assert_eq!(again.decision, before.decision);
}

#[test]
fn a_changed_window_is_recorded_and_applies_to_later_decisions_only() {
    let (study, t0) = study_with_alice();
    let alice = user("alice");
    let early = study
        .service
        .request_action(action_request(&alice, 0, t0))
        .unwrap()
        .decision;
    assert!(!early.availability.in_study());

    let wider = window(Some(t0), None);
    let view = study.service.change_enrollment(&alice, &wider).unwrap();
    assert_eq!(view.participant.enrollment, wider);
    assert_eq!(view.status, ParticipantStatus::Active);
    assert_eq!(study.counts()["participant_events"], 2);

    let later = study
        .service
        .request_action(action_request(&alice, 1, t0))
        .unwrap()
        .decision;
    assert!(later.availability.is_available());
    let stored: Vec<_> = study
        .store
        .decisions()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        stored[0], early,
        "decisions stored before keep what they got"
    );

    let unknown = study
        .service
        .change_enrollment(&user("mallory"), &Enrollment::default());
    assert!(
        matches!(unknown, Err(DomainError::UserNotFound)),
        "{unknown:?}"
    );
}

#[test]
fn a_withdrawn_participant_gets_no_draw_and_reaches_no_update() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    for u in [&alice, &bob] {
        let d = study.decide(u, 0);
        study.upload(&d, 1.0);
    }
    study.clock.advance(HOUR);
    let view = study.service.withdraw(&alice, "moved away").unwrap();
    assert_eq!(view.status, ParticipantStatus::Withdrawn);
    assert_eq!(
        view.participant.withdrawal,
        Some(Withdrawal {
            at: study.clock.now(),
            reason: "moved away".into(),
        })
    );
    let again = study.service.withdraw(&alice, "twice");
    assert!(
        matches!(again, Err(DomainError::AlreadyWithdrawn)),
        "{again:?}"
    );
    let unknown = study.service.withdraw(&user("mallory"), "why");
    assert!(
        matches!(unknown, Err(DomainError::UserNotFound)),
        "{unknown:?}"
    );
    let overlong = study.service.withdraw(&bob, &"x".repeat(1025));
    assert!(
        matches!(overlong, Err(DomainError::InvalidInput(_))),
        "{overlong:?}"
    );

    let after = study.decide(&alice, 1);
    assert_eq!(
        after.availability,
        Availability::OutOfStudy(OutOfStudy::Withdrawn)
    );
    assert_eq!(
        (after.action, after.action_prob),
        (Action::Zero, Probability::ZERO)
    );
    // Its upload is stored, but no update learns from alice.
    study
        .service
        .upload_data(upload_request(&after, 1.0))
        .unwrap();
    let update = study.run_update(1);
    assert_eq!(update.provenance.unwrap().rows_read, 1, "bob's upload only");
}

#[test]
fn a_decision_of_an_active_participant_costs_one_store_call() {
    let (study, t0) = study_with_alice();
    let alice = user("alice");
    let before = study.store.calls();
    let d = study
        .service
        .request_action(action_request(&alice, 0, t0 + hours(2)))
        .unwrap();
    assert!(d.decision.availability.is_available());
    assert_eq!(study.store.calls() - before, 1);

    // Out of the study, the store is asked again: the guarded insert, then the plain one.
    let before = study.store.calls();
    let out = study
        .service
        .request_action(action_request(&alice, 1, t0 + hours(4)))
        .unwrap();
    assert!(!out.decision.availability.in_study());
    assert_eq!(study.store.calls() - before, 2);
}
