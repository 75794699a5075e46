//! Backups move between the adapters: a trial with every part of a participant's life
//! (windows, changes, withdrawal, erasure, decisions of every policy and out of the study, a
//! host decision over an upload, an update that learned from some policies, corrections before
//! and after it) backed up on one adapter restores on the other with every row read back the
//! same.

use justin_core::builders::{
    at, decision, out_of_study, provenance, unavailable, update_request, upload_for, user, window,
};
use justin_core::{
    Action, DecisionGuard, Enrollment, Erasure, ExportRow, OutOfStudy, Participant, Policy,
    Probability, Store,
};

use crate::support::ScratchDir;

fn a_trial(store: &dyn Store) {
    store
        .seed_parameters("algo", &serde_json::json!({"mu": [0.5, -0.0]}), at(0))
        .unwrap();
    let (alice, bob, carol) = (user("alice"), user("bob"), user("carol"));
    store.add_user(&alice, &window(0, 100), at(0)).unwrap();
    store.add_user(&bob, &Enrollment::default(), at(0)).unwrap();
    store.add_user(&carol, &window(5, 50), at(1)).unwrap();
    store
        .change_enrollment(&alice, &window(0, 80), at(2))
        .unwrap();
    let decisions = [
        decision("alice", 0, 1),
        justin_core::Decision {
            policy: Policy::Warmup,
            ..decision("alice", 1, 1)
        },
        justin_core::Decision {
            policy: Policy::Fallback {
                reason: "the \"model\", failed,\nbadly".into(),
            },
            ..decision("alice", 2, 1)
        },
        unavailable(decision("alice", 3, 1), "morning", Some("driving, fast")),
        out_of_study(decision("alice", 4, 1), OutOfStudy::NotInStudy),
    ];
    for d in &decisions {
        store.record_decision(d, DecisionGuard::None).unwrap();
    }
    for d in &decisions[..2] {
        store.record_study_data(&upload_for(d)).unwrap();
    }
    // A host decision sent after its upload.
    let host = justin_core::Decision {
        policy: Policy::Host {
            decided_by: "study server".into(),
        },
        action: Action::One,
        action_prob: Probability::new(0.5).unwrap(),
        ..decision("bob", 0, 1)
    };
    let mut upload = upload_for(&host);
    upload.action = host.action;
    upload.action_prob = host.action_prob;
    store.record_study_data(&upload).unwrap();
    store.record_decision(&host, DecisionGuard::None).unwrap();
    store.withdraw(&carol, "moved, away", at(6)).unwrap();
    store
        .record_decision(
            &out_of_study(decision("carol", 0, 1), OutOfStudy::Withdrawn),
            DecisionGuard::None,
        )
        .unwrap();
    store
        .record_study_data(&upload_for(&decision("carol", 1, 1)))
        .unwrap();
    // A correction the update reads, with text that needs quoting and exact doubles.
    let corrected = |n: i64, reward: f64| justin_core::StudyRecord {
        sent_timestamp: format!("2025-01-0{n} 10:00:00,5+01:00, \"again\"\n"),
        received_at: at(6 + n),
        outcome: serde_json::json!({"steps": -0.0, "ratio": 0.1 + 0.2})
            .as_object()
            .unwrap()
            .clone(),
        reward,
        ..upload_for(&decisions[0])
    };
    store.record_correction(&corrected(1, 0.1 + 0.2)).unwrap();
    store.create_update_request(&update_request(1)).unwrap();
    let job = store.claim_update(at(7)).unwrap().unwrap();
    job.complete(
        "algo",
        &serde_json::json!({"mu": [1]}),
        &provenance(),
        at(8),
    )
    .unwrap();
    // One the update did not read.
    store.record_correction(&corrected(2, -1e-300)).unwrap();
    let id = uuid::Uuid::from_u128(42);
    store
        .erase_participant(
            &carol,
            &Erasure {
                id,
                erased_at: at(9),
                participant_number: 0,
                pseudonym: format!("erased-{id}"),
                row_counts: vec![],
                backup_file: "/backups/before-erasure.tar".into(),
            },
        )
        .unwrap();
}

/// What a store holds, as read through the port.
#[derive(Debug, PartialEq)]
struct Read {
    counts: Vec<(String, u64)>,
    decisions: Vec<justin_core::Decision>,
    export: Vec<ExportRow>,
    participants: Vec<Option<Participant>>,
    erased: Vec<String>,
    update: Option<justin_core::UpdateRequest>,
    history: Option<justin_core::DecisionHistory>,
    update_rows: Vec<justin_core::StudyRecord>,
}

fn read(store: &dyn Store) -> Read {
    Read {
        counts: store.row_counts().unwrap(),
        decisions: store.decisions().unwrap().map(Result::unwrap).collect(),
        export: store.export().unwrap().map(Result::unwrap).collect(),
        participants: ["alice", "bob", "carol"]
            .iter()
            .map(|n| store.participant(&user(n)).unwrap())
            .collect(),
        erased: store.erased_pseudonyms().unwrap(),
        update: store.update_request(update_request(1).id).unwrap(),
        history: store
            .decision_history(
                &user("alice"),
                &justin_core::DecisionType::default(),
                justin_core::DecisionIdx::new(0).unwrap(),
            )
            .unwrap(),
        update_rows: store
            .update_rows(2)
            .unwrap()
            .map(|r| r.unwrap().into_record())
            .collect(),
    }
}

fn moves(from: &dyn Store, to: &dyn Store) {
    a_trial(from);
    let before = read(from);
    assert_eq!(before.erased.len(), 1);
    assert_eq!(before.decisions.len(), 7);
    assert_eq!(before.history.as_ref().unwrap().corrections.len(), 2);
    assert!(
        before.update_rows.iter().any(|r| r.reward == 0.1 + 0.2),
        "the update read the first correction"
    );
    let dir = ScratchDir::new();
    let backup = from.backup(&dir, at(100)).unwrap();

    to.restore(&backup.path).unwrap();

    assert_eq!(read(to), before);
}

#[test]
fn a_trial_moves_from_sqlite_to_postgres() {
    let sqlite = justin_store_sqlite::testing::TestDatabase::create();
    let pg = justin_store::testing::TestDatabase::create();
    moves(sqlite.store(), pg.store());
}

#[test]
fn a_trial_moves_from_postgres_to_sqlite() {
    let pg = justin_store::testing::TestDatabase::create();
    let sqlite = justin_store_sqlite::testing::TestDatabase::create();
    moves(pg.store(), sqlite.store());
}
