//! The conformance checks of corrected uploads: `record_correction`, `decision_history`, and
//! what updates, `update_rows`, the export, an erasure and a backup make of corrections.

use serde_json::json;

use super::{
    at, claim, count, decision, erasure, object, run_update, seeded, update_request, update_rows,
    upload_for, user, ScratchDir, ALGORITHM_ONLY,
};
use crate::domain::{
    Action, Correction, CorrectionRecorded, Decision, DecisionHistory, Enrollment, ExportRow,
    State, StudyRecord,
};
use crate::ports::{DecisionGuard, Store, StoreError, TestingStore};

/// Expands to one `#[test]` per check of corrections (part of the store contract:
/// [`store_contract_suite!`](crate::store_contract_suite) runs them).
#[macro_export]
macro_rules! corrections_store_suite {
    ($make_fixture:expr) => {
        $crate::corrections_store_suite!(@tests $make_fixture;
            a_correction_is_stored_beside_the_original,
            a_correction_needs_an_upload_with_the_same_draw,
            concurrent_corrections_get_different_numbers,
            updates_read_the_value_in_force_when_they_started,
            erasing_a_participant_erases_their_corrections,
            dashboard_reward_sums_follow_corrections,
        );
    };
    (@tests $make_fixture:expr; $($check:ident),+ $(,)?) => {
        $(
            #[test]
            fn $check() {
                let fixture = ($make_fixture)();
                $crate::conformance::corrections::$check(
                    $crate::conformance::StoreFixture::store(&fixture),
                );
            }
        )+
    };
}

/// Expands to the checks of corrections in backup files (part of
/// [`durable_store_suite!`](crate::durable_store_suite)).
#[macro_export]
macro_rules! corrections_durable_suite {
    ($make_fixture:expr) => {
        $crate::corrections_store_suite!(@tests $make_fixture;
            backup_and_restore_keep_corrections,
        );
    };
}

/// A correction of `original`: other context, state, outcome and reward, sent at `seconds`.
pub(super) fn correction_of(original: &StudyRecord, seconds: i64, n: i64) -> StudyRecord {
    StudyRecord {
        requested_at: at(seconds, 7),
        sent_timestamp: format!("2025-02-0{n}T10:00:00+01:00 (correction {n})"),
        received_at: at(seconds + 1, 8),
        context: object(json!({"i": n, "mood": "corrected", "extra": [1, 2.5]})),
        state: State::new(vec![1.0, -0.0, 0.1 + f64::from(u8::try_from(n).unwrap())]).unwrap(),
        outcome: object(json!({"steps": 1000 * n, "ratio": 0.1})),
        reward: 0.1 + 1.0 / 3.0 * n as f64,
        ..original.clone()
    }
}

/// What the history shows of a correction stored from `record` as number `number`.
fn stored(record: &StudyRecord, number: u32) -> Correction {
    Correction {
        number,
        requested_at: record.requested_at,
        sent_timestamp: record.sent_timestamp.clone(),
        received_at: record.received_at,
        context: record.context.clone(),
        state: record.state.clone(),
        outcome: record.outcome.clone(),
        reward: record.reward,
    }
}

/// `record` with the values of correction `c` in force.
fn in_force(record: &StudyRecord, c: &StudyRecord) -> StudyRecord {
    StudyRecord {
        context: c.context.clone(),
        state: c.state.clone(),
        outcome: c.outcome.clone(),
        reward: c.reward,
        ..record.clone()
    }
}

fn logged(store: &dyn Store, d: &Decision) -> StudyRecord {
    store.record_decision(d, DecisionGuard::None).unwrap();
    let upload = upload_for(d);
    store.record_study_data(&upload).unwrap();
    upload
}

fn history(store: &dyn Store, d: &Decision) -> Option<DecisionHistory> {
    store
        .decision_history(&d.user_id, &d.decision_type, d.decision_idx)
        .unwrap()
}

/// `record_correction` MUST store a correction linked to the upload of its key, numbered in
/// order, leaving the original as it was; `decision_history` MUST show the decision, the
/// original and every correction, oldest first, with their times and values exactly as given;
/// a second plain upload is still `StudyDataExists`.
pub fn a_correction_is_stored_beside_the_original(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let d = decision(&alice, 0, 1, params.version);
    let original = logged(store, &d);
    let first = correction_of(&original, 20, 1);
    let second = correction_of(&original, 30, 2);

    assert_eq!(
        store.record_correction(&first).unwrap(),
        CorrectionRecorded { number: 1 }
    );
    assert_eq!(
        store.record_correction(&second).unwrap(),
        CorrectionRecorded { number: 2 }
    );

    assert_eq!(
        history(store, &d),
        Some(DecisionHistory {
            decision: Some(d.clone()),
            upload: Some(original.clone()),
            corrections: vec![stored(&first, 1), stored(&second, 2)],
        })
    );
    let records: Vec<StudyRecord> = store.study_data().unwrap().map(Result::unwrap).collect();
    assert_eq!(records, vec![original.clone()], "the original is kept");
    assert_eq!(count(store, "study_data_corrections"), 2);
    assert!(matches!(
        store.record_study_data(&original),
        Err(StoreError::StudyDataExists)
    ));
    let other = decision(&alice, 1, 3, params.version);
    store.record_decision(&other, DecisionGuard::None).unwrap();
    assert_eq!(
        history(store, &other),
        Some(DecisionHistory {
            decision: Some(other.clone()),
            upload: None,
            corrections: vec![],
        }),
        "a decision without an upload"
    );
    assert_eq!(history(store, &decision(&alice, 9, 1, 1)), None);
}

/// `record_correction` MUST return `NothingToCorrect` for a key without an upload (a logged
/// decision alone, an unregistered participant) and `UploadMismatch` with the original's values
/// for another action or probability, storing nothing either way.
pub fn a_correction_needs_an_upload_with_the_same_draw(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let without_upload = decision(&alice, 0, 1, params.version);
    store
        .record_decision(&without_upload, DecisionGuard::None)
        .unwrap();
    let no_upload = store.record_correction(&correction_of(&upload_for(&without_upload), 5, 1));
    assert!(
        matches!(no_upload, Err(StoreError::NothingToCorrect)),
        "{no_upload:?}"
    );
    let stranger = upload_for(&decision(&user("mallory"), 0, 1, params.version));
    let unknown = store.record_correction(&correction_of(&stranger, 5, 1));
    assert!(
        matches!(unknown, Err(StoreError::NothingToCorrect)),
        "{unknown:?}"
    );

    let d = decision(&alice, 1, 1, params.version);
    let original = logged(store, &d);
    let other_action = StudyRecord {
        action: if original.action == Action::Zero {
            Action::One
        } else {
            Action::Zero
        },
        ..correction_of(&original, 5, 1)
    };
    let refused = store.record_correction(&other_action);
    assert!(
        matches!(refused, Err(StoreError::UploadMismatch { logged_action, logged_prob })
            if logged_action == original.action && logged_prob == original.action_prob),
        "{refused:?}"
    );
    let other_prob = StudyRecord {
        action_prob: crate::domain::Probability::new(original.action_prob.get() / 2.0).unwrap(),
        ..correction_of(&original, 5, 1)
    };
    assert!(matches!(
        store.record_correction(&other_prob),
        Err(StoreError::UploadMismatch { .. })
    ));
    assert_eq!(count(store, "study_data_corrections"), 0);
    assert_eq!(history(store, &d).unwrap().corrections, vec![]);
}

/// Concurrent corrections of one upload MUST all be stored, numbered 1 to n with no number
/// twice, in the order of their ids (which the history shows).
pub fn concurrent_corrections_get_different_numbers(store: &dyn TestingStore) {
    const THREADS: i64 = 6;
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let d = decision(&alice, 0, 1, params.version);
    let original = logged(store, &d);
    let barrier = std::sync::Barrier::new(THREADS as usize);

    let mut numbers: Vec<(u32, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..=THREADS)
            .map(|t| {
                let (barrier, original) = (&barrier, &original);
                s.spawn(move || {
                    let mine = correction_of(original, 10 + t, t);
                    barrier.wait();
                    let recorded = store.record_correction(&mine).unwrap();
                    (recorded.number, mine.reward)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    numbers.sort_by_key(|(n, _)| *n);
    assert_eq!(
        numbers.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (1..=6).collect::<Vec<u32>>()
    );
    let shown: Vec<(u32, f64)> = history(store, &d)
        .unwrap()
        .corrections
        .iter()
        .map(|c| (c.number, c.reward))
        .collect();
    assert_eq!(
        shown, numbers,
        "each answer's number is its place in the history"
    );
}

/// An update's job MUST read each upload's newest correction stored before it started, not
/// one stored while it runs; `update_rows(v)` MUST stream what the job of `v` read (the value in
/// force at its start), whatever corrections came later; the export MUST show the value in
/// force now with the number of corrections.
pub fn updates_read_the_value_in_force_when_they_started(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let d0 = decision(&alice, 0, 1, params.version);
    let d1 = decision(&alice, 1, 2, params.version);
    let original0 = logged(store, &d0);
    let original1 = logged(store, &d1);
    let first = correction_of(&original0, 20, 1);
    let late = correction_of(&original1, 22, 2);
    let second = correction_of(&original0, 40, 3);

    let (before, read_before) = run_update(store, 1, ALGORITHM_ONLY, at(10, 0), at(11, 0), || {});
    assert_eq!(read_before, vec![original0.clone(), original1.clone()]);
    store.record_correction(&first).unwrap();
    let (after, read_after) = run_update(store, 2, ALGORITHM_ONLY, at(30, 0), at(31, 0), || {
        store.record_correction(&late).unwrap();
    });
    assert_eq!(
        read_after,
        vec![in_force(&original0, &first), original1.clone()],
        "the correction stored before the update, not the one stored while it ran"
    );
    store.record_correction(&second).unwrap();

    assert_eq!(update_rows(store, before.parameter_version), read_before);
    assert_eq!(update_rows(store, after.parameter_version), read_after);

    let rows: Vec<ExportRow> = store.export().unwrap().map(Result::unwrap).collect();
    let uploads: Vec<_> = rows.iter().map(|r| r.upload.clone().unwrap()).collect();
    assert_eq!(uploads[0].outcome, second.outcome);
    assert_eq!(uploads[0].reward, second.reward);
    assert_eq!(uploads[0].corrections, 2);
    assert_eq!(
        uploads[0].received_at, original0.received_at,
        "the original's times"
    );
    assert_eq!(uploads[1].outcome, late.outcome);
    assert_eq!(uploads[1].corrections, 1);
    let by_participant: Vec<ExportRow> = store
        .export_by_participant()
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(by_participant, rows);

    // A third update reads the newest of each.
    store.create_update_request(&update_request(3)).unwrap();
    let mut job = claim(store, at(50, 0));
    let read: Vec<StudyRecord> = job
        .study_data(ALGORITHM_ONLY)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        read,
        vec![in_force(&original0, &second), in_force(&original1, &late)]
    );
}

/// An erasure MUST delete the participant's corrections with their uploads.
pub fn erasing_a_participant_erases_their_corrections(store: &dyn TestingStore) {
    let params = seeded(store);
    let (alice, bob) = (user("alice"), user("bob"));
    for u in [&alice, &bob] {
        store.add_user(u, &Enrollment::default(), at(0, 0)).unwrap();
    }
    let a = decision(&alice, 0, 1, params.version);
    let b = decision(&bob, 0, 1, params.version);
    let upload_a = logged(store, &a);
    let upload_b = logged(store, &b);
    store
        .record_correction(&correction_of(&upload_a, 5, 1))
        .unwrap();
    let kept = correction_of(&upload_b, 6, 2);
    store.record_correction(&kept).unwrap();

    let erased = store
        .erase_participant(&alice, &erasure(at(10, 0)))
        .unwrap();

    assert_eq!(
        erased.row_counts,
        [
            ("actions".to_owned(), 1),
            ("study_data".to_owned(), 1),
            ("study_data_corrections".to_owned(), 1),
            ("participant_events".to_owned(), 1),
            ("users".to_owned(), 1),
        ],
        "the audit record counts the corrections"
    );
    assert_eq!(count(store, "study_data_corrections"), 1);
    assert_eq!(history(store, &a), None);
    assert_eq!(
        history(store, &b).unwrap().corrections,
        vec![stored(&kept, 1)]
    );
}

/// A backup MUST hold the corrections and a restore put them back, numbering and ids
/// continuing after them.
pub fn backup_and_restore_keep_corrections(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let d = decision(&alice, 0, 1, params.version);
    let original = logged(store, &d);
    store
        .record_correction(&correction_of(&original, 5, 1))
        .unwrap();
    let (update, read) = run_update(store, 1, ALGORITHM_ONLY, at(10, 0), at(11, 0), || {});
    store
        .record_correction(&correction_of(&original, 20, 2))
        .unwrap();
    let before = history(store, &d);
    let scratch = ScratchDir::new();
    let backup = store.backup(&scratch.0, at(30, 0)).unwrap().path;

    store.reset().unwrap();
    assert_eq!(count(store, "study_data_corrections"), 0);
    let report = store.restore(&backup).unwrap();

    assert!(report
        .row_counts
        .contains(&("study_data_corrections".to_owned(), 2)));
    assert_eq!(history(store, &d), before);
    assert_eq!(update_rows(store, update.parameter_version), read);
    assert_eq!(
        store
            .record_correction(&correction_of(&original, 40, 3))
            .unwrap(),
        CorrectionRecorded { number: 3 }
    );
}

/// The dashboard's reward sums MUST count each upload's value in force once: a correction
/// changes its day's sum by the difference, once however often the figures are read.
pub fn dashboard_reward_sums_follow_corrections(store: &dyn TestingStore) {
    let params = seeded(store);
    let alice = user("alice");
    store
        .add_user(&alice, &Enrollment::default(), at(0, 0))
        .unwrap();
    let settings = super::dashboard_settings(chrono_tz::UTC);
    let first = logged(store, &decision(&alice, 0, 1, params.version));
    let second = logged(store, &decision(&alice, 1, 2, params.version));
    let figures = |seconds: i64| {
        let days = store.dashboard_days(&settings, at(seconds, 0)).unwrap();
        let uploads: u64 = days.uploads.iter().map(|u| u.uploads).sum();
        let sum: f64 = days.uploads.iter().map(|u| u.reward_sum).sum();
        (uploads, sum)
    };
    let close = |(uploads, sum): (u64, f64), want: f64| {
        assert_eq!(uploads, 2);
        assert!((sum - want).abs() < 1e-9, "{sum} != {want}");
    };
    let original = first.reward + second.reward;
    close(figures(100), original);

    store
        .record_correction(&StudyRecord {
            reward: first.reward + 10.0,
            ..correction_of(&first, 5, 1)
        })
        .unwrap();
    close(figures(101), original + 10.0);
    close(figures(102), original + 10.0);
    store
        .record_correction(&StudyRecord {
            reward: first.reward + 1.0,
            ..correction_of(&first, 6, 2)
        })
        .unwrap();
    close(figures(103), original + 1.0);
}
