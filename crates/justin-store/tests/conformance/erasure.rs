//! Erasure, as only this adapter can check it: after a participant is erased, no row of any
//! table holds their id, contexts, states, outcomes or reasons, read straight from the
//! database; their decisions stay under the pseudonym, in place, with the users row's id.

use diesel::sql_types::{BigInt, Text};
use diesel::RunQueryDsl;
use justin_core::builders::{at, decision, out_of_study, unavailable, upload_for, user, window};
use justin_core::tables::TABLES;
use justin_core::{DecisionGuard, Erasure, OutOfStudy, Store};
use justin_store::testing::TestDatabase;

use crate::support::connect;

/// Every row of every table as JSON text.
fn every_row(db: &TestDatabase) -> Vec<String> {
    let mut conn = connect(db);
    TABLES
        .iter()
        .flat_map(|t| {
            diesel::dsl::sql::<Text>(&format!("SELECT row_to_json(x)::text FROM {t} x"))
                .load::<String>(&mut conn)
                .unwrap()
        })
        .collect()
}

#[test]
fn erasure_leaves_no_row_holding_the_participant() {
    let db = TestDatabase::create();
    let store = db.store();
    store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    let alice = user("participant-7f3a");
    store.add_user(&alice, &window(0, 100), at(0)).unwrap();
    store
        .add_user(&user("bob"), &justin_core::Enrollment::default(), at(0))
        .unwrap();
    store
        .change_enrollment(&alice, &window(0, 50), at(1))
        .unwrap();
    let secret = |d: justin_core::Decision| justin_core::Decision {
        context: serde_json::json!({"heart_rate_marker": 4242})
            .as_object()
            .unwrap()
            .clone(),
        ..d
    };
    let drawn = secret(decision("participant-7f3a", 0, 1));
    let off = secret(unavailable(
        decision("participant-7f3a", 1, 1),
        "default",
        Some("driving-marker"),
    ));
    let outside = out_of_study(decision("participant-7f3a", 2, 1), OutOfStudy::Withdrawn);
    for d in [&drawn, &off] {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    let mut upload = upload_for(&drawn);
    upload.outcome = serde_json::json!({"mood_marker": 99})
        .as_object()
        .unwrap()
        .clone();
    store.record_study_data(&upload).unwrap();
    store.withdraw(&alice, "reason-marker", at(3)).unwrap();
    store
        .record_decision(&outside, DecisionGuard::None)
        .unwrap();
    store
        .record_decision(&decision("bob", 0, 1), DecisionGuard::None)
        .unwrap();
    let number: i64 =
        diesel::dsl::sql::<BigInt>("SELECT id FROM users WHERE user_id = 'participant-7f3a'")
            .get_result(&mut connect(&db))
            .unwrap();
    let before = every_row(&db).join("\n");
    for marker in [
        "participant-7f3a",
        "4242",
        "driving-marker",
        "99",
        "reason-marker",
    ] {
        assert!(before.contains(marker), "{marker} is stored before");
    }

    let id = uuid::Uuid::new_v4();
    let erased = store
        .erase_participant(
            &alice,
            &Erasure {
                id,
                erased_at: at(10),
                participant_number: 0,
                pseudonym: format!("erased-{id}"),
                row_counts: vec![],
                backup_file: "/backups/justin-backup-x.tar".into(),
            },
        )
        .unwrap();

    let after = every_row(&db).join("\n");
    for marker in [
        "participant-7f3a",
        "4242",
        "driving-marker",
        "mood_marker",
        "reason-marker",
    ] {
        assert!(!after.contains(marker), "{marker} is gone:\n{after}");
    }
    assert_eq!(erased.participant_number, number);
    assert_eq!(
        erased.row_counts,
        vec![
            ("actions".to_owned(), 3),
            ("study_data".to_owned(), 1),
            ("participant_events".to_owned(), 3),
            ("users".to_owned(), 1),
        ]
    );
    let renamed: i64 = diesel::dsl::sql::<BigInt>(&format!(
        "SELECT id FROM users WHERE user_id = 'erased-{id}' AND erased_at IS NOT NULL \
         AND withdrawn_at IS NOT NULL AND study_start IS NULL AND study_end IS NULL"
    ))
    .get_result(&mut connect(&db))
    .unwrap();
    assert_eq!(renamed, number, "the users row is renamed in place");
    let kept: Vec<_> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(kept.len(), 4);
    let pseudonym = &erased.pseudonym;
    let theirs: Vec<_> = kept
        .iter()
        .filter(|d| d.user_id.as_str() == pseudonym)
        .collect();
    assert_eq!(theirs.len(), 3);
    assert!(theirs
        .iter()
        .all(|d| d.context.is_empty() && d.state.values().is_empty()));
    // The draws stay; the service's reason for a decision out of the study stays too.
    assert_eq!(theirs[0].action_prob, drawn.action_prob);
    assert_eq!(theirs[2].availability, outside.availability);
    assert_eq!(store.erased_pseudonyms().unwrap(), vec![pseudonym.clone()]);
    assert_eq!(store.participant(&alice).unwrap(), None);
    // The id is free again, and bob's rows were not touched.
    store
        .add_user(&alice, &justin_core::Enrollment::default(), at(20))
        .unwrap();
    assert_eq!(
        store.participant(&user("bob")).unwrap().unwrap().decisions,
        1
    );
}

/// Decisions and uploads of a participant recorded while they are erased either land before
/// the erasure (and are erased with the rest) or find the participant gone: whatever the
/// interleaving, no row holds their id afterwards.
#[test]
fn writes_racing_an_erasure_leave_no_row_holding_the_participant() {
    let db = TestDatabase::create();
    let store = db.store().clone();
    store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    let alice = user("participant-racing");
    store
        .add_user(&alice, &justin_core::Enrollment::default(), at(0))
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut outcomes = Vec::new();
                for i in 0..25 {
                    let d = decision("participant-racing", w * 100 + i, 1);
                    let guard = if i % 2 == 0 {
                        DecisionGuard::None
                    } else {
                        DecisionGuard::InStudy {
                            warmup_first_decisions: None,
                            warmup_until_participants: None,
                        }
                    };
                    outcomes.push(store.record_decision(&d, guard).map(|_| ()));
                    outcomes.push(store.record_study_data(&upload_for(&d)).map(|_| ()));
                }
                outcomes
            })
        })
        .collect();
    let id = uuid::Uuid::new_v4();
    let erased = store
        .erase_participant(
            &alice,
            &Erasure {
                id,
                erased_at: at(10),
                participant_number: 0,
                pseudonym: format!("erased-{id}"),
                row_counts: vec![],
                backup_file: "/backups/x.tar".into(),
            },
        )
        .unwrap();
    for writer in writers {
        for outcome in writer.join().unwrap() {
            assert!(
                matches!(outcome, Ok(()) | Err(justin_core::StoreError::UnknownUser)),
                "{outcome:?}"
            );
        }
    }

    let rows = every_row(&db).join("\n");
    assert!(!rows.contains("participant-racing"), "{rows}");
    assert!(!rows.contains("steps"), "no context or outcome is left");
    let kept = store.decisions().unwrap().count() as u64;
    assert_eq!(erased.row_counts[0], ("actions".to_owned(), kept));
}
