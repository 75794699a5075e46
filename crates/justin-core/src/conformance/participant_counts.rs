//! The conformance checks of a participant's counts (`Participant::decisions` and
//! `Participant::uploads`): every write that stores or removes a decision or an upload moves
//! them, every write that stores nothing leaves them, concurrent writes add up exactly, and a
//! restore gives them back.

use std::sync::Barrier;

use super::{
    at, decision, erasure, out_of_study, seeded, study_record, upload_for, user, with_policy,
    ScratchDir,
};
use crate::domain::{Action, Decision, Enrollment, OutOfStudy, Policy, StudyRecord, UserId};
use crate::ports::{DecisionGuard, Recorded, Store, StoreError, TestingStore};

/// Expands to one `#[test]` per check of the participant counts (part of the store contract:
/// [`store_contract_suite!`](crate::store_contract_suite) runs them).
#[macro_export]
macro_rules! participant_counts_store_suite {
    ($make_fixture:expr) => {
        $crate::participant_counts_store_suite!(@tests $make_fixture;
            participant_counts_follow_every_write,
            participant_counts_add_up_under_concurrent_writes,
        );
    };
    (@tests $make_fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                let fixture = ($make_fixture)();
                $crate::conformance::participant_counts::$check(
                    $crate::conformance::StoreFixture::store(&fixture),
                );
            }
        )+
    };
}

/// Expands to the checks of the participant counts across a backup (part of
/// [`durable_store_suite!`](crate::durable_store_suite)).
#[macro_export]
macro_rules! participant_counts_durable_suite {
    ($make_fixture:expr) => {
        $crate::participant_counts_store_suite!(@tests $make_fixture;
            participant_counts_come_back_with_a_restore,
        );
    };
}

/// The participant's (decisions, uploads) as `participant` answers them.
fn counts_of(store: &dyn Store, user: &UserId) -> (u64, u64) {
    let p = store
        .participant(user)
        .unwrap()
        .unwrap_or_else(|| panic!("{user:?} is not registered"));
    (p.decisions, p.uploads)
}

/// The counts MUST move with every decision and upload stored, and only with those: a
/// repeated decision (`Existing`), a refused decision or upload, and another participant's
/// writes leave them as they were. A host decision over an upload counts as a decision. After
/// an erasure the id is free, and a participant registered again under it starts from none.
pub fn participant_counts_follow_every_write(store: &dyn Store) {
    let params = seeded(store);
    let v = params.version;
    let (alice, bob) = (user("alice"), user("bob"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    assert_eq!(counts_of(store, &alice), (0, 0));

    let first = decision(&alice, 0, 1, v);
    assert_eq!(
        store.record_decision(&first, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
    assert_eq!(counts_of(store, &alice), (1, 0));
    assert_eq!(
        store
            .record_decision(&decision(&alice, 0, 2, v), DecisionGuard::None)
            .unwrap(),
        Recorded::Existing(first.clone())
    );
    assert_eq!(counts_of(store, &alice), (1, 0), "a repeat stores nothing");

    store.record_study_data(&upload_for(&first)).unwrap();
    assert_eq!(counts_of(store, &alice), (1, 1));
    let again = StudyRecord {
        reward: -1.0,
        ..upload_for(&first)
    };
    assert!(matches!(
        store.record_study_data(&again),
        Err(StoreError::StudyDataExists)
    ));
    assert_eq!(
        counts_of(store, &alice),
        (1, 1),
        "a second upload is refused"
    );

    // A decision an upload contradicts: the decision counts, the refused upload does not.
    let second = decision(&alice, 1, 3, v);
    store.record_decision(&second, DecisionGuard::None).unwrap();
    let contradicting = StudyRecord {
        action: match second.action {
            Action::Zero => Action::One,
            Action::One => Action::Zero,
        },
        ..upload_for(&second)
    };
    assert!(matches!(
        store.record_study_data(&contradicting),
        Err(StoreError::UploadMismatch { .. })
    ));
    assert_eq!(counts_of(store, &alice), (2, 1));

    // An upload without a decision counts; a drawn decision for its key is refused; a host
    // decision that agrees with it is stored and counts.
    let orphan = study_record(&alice, 5);
    store.record_study_data(&orphan).unwrap();
    assert_eq!(counts_of(store, &alice), (2, 2));
    assert!(matches!(
        store.record_decision(&decision(&alice, 5, 4, v), DecisionGuard::None),
        Err(StoreError::StudyDataExists)
    ));
    assert_eq!(counts_of(store, &alice), (2, 2));
    let host = Decision {
        action: orphan.action,
        action_prob: orphan.action_prob,
        ..with_policy(
            decision(&alice, 5, 5, v),
            Policy::Host {
                decided_by: "schedule".into(),
            },
        )
    };
    assert_eq!(
        store.record_decision(&host, DecisionGuard::None).unwrap(),
        Recorded::Inserted
    );
    assert_eq!(counts_of(store, &alice), (3, 2));
    // A decision out of the study is stored, and counted, too.
    store
        .record_decision(
            &out_of_study(decision(&alice, 6, 6, v), OutOfStudy::NotInStudy),
            DecisionGuard::None,
        )
        .unwrap();
    assert_eq!(counts_of(store, &alice), (4, 2));
    assert_eq!(counts_of(store, &bob), (0, 0), "alice's rows are not bob's");

    let bobs = decision(&bob, 0, 7, v);
    store.record_decision(&bobs, DecisionGuard::None).unwrap();
    store.record_study_data(&upload_for(&bobs)).unwrap();
    store
        .erase_participant(&alice, &erasure(at(20, 0)))
        .unwrap();
    assert_eq!(store.participant(&alice).unwrap(), None);
    assert_eq!(counts_of(store, &bob), (1, 1), "an erasure leaves others");
    store
        .add_user(&alice, &Enrollment::default(), at(30, 0))
        .unwrap();
    assert_eq!(
        counts_of(store, &alice),
        (0, 0),
        "the erased rows are not the new participant's"
    );
    store
        .record_decision(&decision(&alice, 0, 8, v), DecisionGuard::None)
        .unwrap();
    assert_eq!(counts_of(store, &alice), (1, 0));
}

/// Decisions and uploads recorded at once from many threads, for one participant they all
/// share and for one participant each, with every thread also racing the others for the same
/// keys, MUST leave every participant's counts at exactly the rows stored.
pub fn participant_counts_add_up_under_concurrent_writes(store: &dyn Store) {
    const THREADS: i64 = 8;
    const ROUNDS: i64 = 12;
    let v = seeded(store).version;
    let shared = user("shared");
    let own: Vec<UserId> = (0..THREADS).map(|t| user(&format!("own-{t}"))).collect();
    for u in std::iter::once(&shared).chain(&own) {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let barrier = Barrier::new(usize::try_from(THREADS).unwrap());
    let inserted: i64 = std::thread::scope(|s| {
        let handles: Vec<_> = own
            .iter()
            .enumerate()
            .map(|(t, mine)| {
                let (barrier, shared) = (&barrier, &shared);
                let t = i64::try_from(t).unwrap();
                s.spawn(move || {
                    let variant = u32::try_from(t).unwrap();
                    let mut raced = 0;
                    barrier.wait();
                    for r in 0..ROUNDS {
                        // A key of the shared participant's that only this thread writes.
                        let alone = decision(shared, t * ROUNDS + r, variant, v);
                        store.record_decision(&alone, DecisionGuard::None).unwrap();
                        store.record_study_data(&upload_for(&alone)).unwrap();
                        let theirs = decision(mine, r, variant, v);
                        store.record_decision(&theirs, DecisionGuard::None).unwrap();
                        store.record_study_data(&upload_for(&theirs)).unwrap();
                        // A key of the shared participant's that every thread writes: one wins.
                        let contested = decision(shared, 10_000 + r, variant, v);
                        if store
                            .record_decision(&contested, DecisionGuard::None)
                            .unwrap()
                            == Recorded::Inserted
                        {
                            raced += 1;
                        }
                    }
                    raced
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(inserted, ROUNDS, "one thread wins each contested key");
    let per_thread = u64::try_from(ROUNDS).unwrap();
    let threads = u64::try_from(THREADS).unwrap();
    assert_eq!(
        counts_of(store, &shared),
        (threads * per_thread + per_thread, threads * per_thread)
    );
    for u in &own {
        assert_eq!(counts_of(store, u), (per_thread, per_thread), "{u:?}");
    }
}

/// After a backup and a restore, each participant MUST have the counts they had when the
/// backup was taken (not those of rows stored since, nor twice those of the restored rows).
pub fn participant_counts_come_back_with_a_restore(store: &dyn TestingStore) {
    let v = seeded(store).version;
    let (alice, bob) = (user("alice"), user("bob"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    for i in 0..3 {
        let d = decision(&alice, i, 1, v);
        store.record_decision(&d, DecisionGuard::None).unwrap();
        if i < 2 {
            store.record_study_data(&upload_for(&d)).unwrap();
        }
    }
    store.record_study_data(&study_record(&bob, 0)).unwrap();
    let dir = ScratchDir::new();
    let backup = store.backup(&dir.0, at(10, 0)).unwrap().path;
    store
        .record_decision(&decision(&bob, 1, 2, v), DecisionGuard::None)
        .unwrap();
    assert_eq!(counts_of(store, &bob), (1, 1));

    store.restore(&backup).unwrap();
    assert_eq!(counts_of(store, &alice), (3, 2));
    assert_eq!(counts_of(store, &bob), (0, 1));
    // Writes after the restore count on from there.
    store
        .record_decision(&decision(&alice, 3, 3, v), DecisionGuard::None)
        .unwrap();
    assert_eq!(counts_of(store, &alice), (4, 2));
}
