//! Erasure: a backup first, then the participant's identifiers, contexts, states and outcomes
//! removed in one unit, with an audit record; replay then reports their decisions as
//! unverifiable rather than as mismatches.

use std::path::Path;

use justin_core::{DomainError, ReplayMismatch, Store, TestingStore, Unverifiable};

use crate::support::{user, Study};

#[test]
fn erasure_backs_up_first_and_keeps_an_audit_record() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    for u in [&alice, &bob] {
        let d = study.decide(u, 0);
        study.upload(&d, 1.0);
    }
    study.decide(&alice, 1);
    let erasure = study.service.erase_participant(&alice).unwrap();

    assert_eq!(erasure.pseudonym, format!("erased-{}", erasure.id));
    assert_eq!(
        erasure.erased_at,
        justin_core::Clock::now(study.clock.as_ref())
    );
    assert_ne!(erasure.participant_number, 0);
    assert_eq!(
        erasure.row_counts,
        vec![
            ("actions".to_owned(), 2),
            ("study_data".to_owned(), 1),
            ("participant_events".to_owned(), 1),
            ("users".to_owned(), 1),
        ]
    );
    let backup = Path::new(&erasure.backup_file);
    assert!(backup.starts_with("/backups/erasures"), "{backup:?}");
    // The backup was taken before: it still holds alice's upload.
    let held: std::collections::BTreeMap<String, u64> = study
        .store
        .check_backup(backup)
        .unwrap()
        .row_counts
        .into_iter()
        .collect();
    assert_eq!(held["study_data"], 2);
    assert_eq!(held["erasures"], 0);

    let gone = study.service.participant(&alice);
    assert!(matches!(gone, Err(DomainError::UserNotFound)), "{gone:?}");
    assert!(study
        .store
        .decisions()
        .unwrap()
        .all(|d| d.unwrap().user_id != alice));
    assert_eq!(study.store.study_data().unwrap().count(), 1);
    assert_eq!(study.counts()["erasures"], 1);
    assert_eq!(study.counts()["actions"], 3);
}

#[test]
fn a_failed_backup_erases_nothing_and_an_unknown_participant_is_not_found() {
    let study = Study::new();
    let alice = study.add_user("alice");
    study.decide(&alice, 0);
    let before = study.counts();
    study.store.set_backups_failing(true);
    assert!(study.service.erase_participant(&alice).is_err());
    assert_eq!(study.counts(), before);
    assert!(study.service.participant(&alice).is_ok());

    study.store.set_backups_failing(false);
    let unknown = study.service.erase_participant(&user("mallory"));
    assert!(
        matches!(unknown, Err(DomainError::UserNotFound)),
        "{unknown:?}"
    );
    assert_eq!(study.counts(), before);
}

#[test]
fn replay_reports_an_erased_participants_decisions_as_unverifiable() {
    let study = Study::new();
    let alice = study.add_user("alice");
    let bob = study.add_user("bob");
    for i in 0..3 {
        study.decide(&alice, i);
        study.decide(&bob, i);
    }
    let erasure = study.service.erase_participant(&alice).unwrap();

    let mut mismatches: Vec<ReplayMismatch> = Vec::new();
    let mut unverifiable: Vec<Unverifiable> = Vec::new();
    let summary = study
        .service
        .replay(&mut |m| mismatches.push(m.clone()), &mut |u| {
            unverifiable.push(u.clone());
        })
        .unwrap();
    assert_eq!(mismatches, vec![]);
    assert_eq!((summary.checked, summary.unverifiable), (3, 3));
    assert_eq!(summary.mismatches, 0);
    assert!(unverifiable
        .iter()
        .all(|u| u.user_id.as_str() == erasure.pseudonym
            && u.reason == "the participant was erased; the decision's state is gone"));
}
