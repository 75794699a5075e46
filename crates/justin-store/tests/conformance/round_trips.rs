//! The statements a decision costs, as the connections report them (Diesel's instrumentation):
//! an active participant outside warm-up is one statement, one round trip; only a guard that
//! fails reads more.

use std::sync::Mutex;

use diesel::connection::{Instrumentation, InstrumentationEvent};
use justin_core::builders::{at, decision, user, window};
use justin_core::{DecisionGuard, Enrollment, Recorded, Store};
use justin_store::testing::TestDatabase;

/// The participants of this test have this in their ids, so that only their statements count
/// (every connection of the test process reports here).
const MARKER: &str = "round-trip-participant";

/// The statements naming a participant with [`MARKER`], in the order they were sent.
static STATEMENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn statements() -> std::sync::MutexGuard<'static, Vec<String>> {
    STATEMENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn watch() -> Option<Box<dyn Instrumentation>> {
    Some(Box::new(|event: InstrumentationEvent<'_>| {
        if let InstrumentationEvent::StartQuery { query, .. } = event {
            let text = query.to_string();
            if text.contains(MARKER) {
                statements().push(text);
            }
        }
    }))
}

/// Runs `record` and returns the statements it sent.
fn sent_by(record: impl FnOnce()) -> Vec<String> {
    statements().clear();
    record();
    std::mem::take(&mut *statements())
}

#[test]
fn a_decision_of_an_active_participant_outside_warm_up_is_one_statement() {
    diesel::connection::set_default_instrumentation(watch).unwrap();
    let db = TestDatabase::create();
    let store = db.store();
    store
        .seed_parameters("algo", &serde_json::json!({}), at(0))
        .unwrap();
    let active = format!("{MARKER}-active");
    let later = format!("{MARKER}-later");
    store
        .add_user(&user(&active), &Enrollment::default(), at(0))
        .unwrap();
    store
        .add_user(&user(&later), &window(50, 100), at(0))
        .unwrap();
    let hot = DecisionGuard::InStudy {
        warmup_first_decisions: None,
        warmup_until_participants: None,
    };

    let sent = sent_by(|| {
        assert_eq!(
            store
                .record_decision(&decision(&active, 0, 1), hot)
                .unwrap(),
            Recorded::Inserted
        );
    });
    assert_eq!(sent.len(), 1, "{sent:#?}");
    assert!(sent[0].contains("INSERT INTO \"actions\""), "{sent:#?}");
    assert!(sent[0].contains("FROM \"users\""), "{sent:#?}");

    // With the warm-up's counts, still one statement when the guard holds.
    let counted = DecisionGuard::InStudy {
        warmup_first_decisions: Some(1),
        warmup_until_participants: Some(1),
    };
    let sent = sent_by(|| {
        assert_eq!(
            store
                .record_decision(&decision(&active, 1, 1), counted)
                .unwrap(),
            Recorded::Inserted
        );
    });
    assert_eq!(sent.len(), 1, "{sent:#?}");

    // A guard that fails costs one more statement, the read that says why.
    let sent = sent_by(|| {
        assert!(matches!(
            store.record_decision(&decision(&later, 0, 1), hot).unwrap(),
            Recorded::Ineligible(_)
        ));
    });
    assert_eq!(sent.len(), 2, "{sent:#?}");
}
