//! Decisions that arrive while another is being written are written together: one statement,
//! one transaction, each answered after its commit.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use justin_core::builders::{at, decision, user};
use justin_core::{DecisionGuard, Enrollment, Recorded, Store};
use justin_store::testing::TestDatabase;

const QUEUED: i64 = 8;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[test]
fn decisions_queued_behind_a_write_are_stored_by_one_transaction() {
    let db = TestDatabase::create();
    let store = db.store();
    let version = store
        .seed_parameters("algo", &serde_json::json!({"mu": 0}), at(0))
        .unwrap()
        .version;
    let names: Vec<String> = (0..=QUEUED).map(|i| format!("p{i}")).collect();
    for name in &names {
        store
            .add_user(&user(name), &Enrollment::default(), at(0))
            .unwrap();
    }
    let guard = DecisionGuard::InStudy {
        warmup_first_decisions: None,
        warmup_until_participants: None,
    };
    // Another session holds the first decision's key, so its write waits while the others
    // queue behind it.
    let mut holder = PgConnection::establish(db.url()).unwrap();
    holder
        .batch_execute("BEGIN; SELECT justin_lock_decision_key('p0', 'default', 1)")
        .unwrap();
    let decisions: Vec<_> = names.iter().map(|n| decision(n, 1, version)).collect();
    let answers = std::thread::scope(|s| {
        let first = s.spawn(|| store.record_decision(&decisions[0], guard));
        // The first is writing once it waits for the key's lock (or it failed, which its
        // answer shows): the rest queue behind it.
        let mut watcher = PgConnection::establish(db.url()).unwrap();
        while !first.is_finished()
            && diesel::sql_query(
                "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
            )
            .get_result::<Count>(&mut watcher)
            .unwrap()
            .n == 0
        {
            std::thread::yield_now();
        }
        let rest: Vec<_> = decisions[1..]
            .iter()
            .map(|d| s.spawn(move || store.record_decision(d, guard)))
            .collect();
        while store.decisions_waiting() < usize::try_from(QUEUED).unwrap()
            && rest.iter().all(|h| !h.is_finished())
        {
            std::thread::yield_now();
        }
        holder.batch_execute("COMMIT").unwrap();
        let mut answers = vec![first.join().unwrap()];
        answers.extend(rest.into_iter().map(|h| h.join().unwrap()));
        answers
    });
    for (d, answer) in decisions.iter().zip(&answers) {
        assert!(
            matches!(answer, Ok(Recorded::Inserted)),
            "{}: {answer:?}",
            d.user_id
        );
    }
    let stored: Vec<_> = store.decisions().unwrap().map(Result::unwrap).collect();
    assert_eq!(stored.len(), decisions.len());
    for d in &decisions {
        assert!(stored.contains(d), "{} stored as sent", d.user_id);
    }
    // The first alone, the queued ones in one transaction.
    let mut conn = PgConnection::establish(db.url()).unwrap();
    let transactions = diesel::sql_query(
        "SELECT count(DISTINCT xmin::text)::bigint AS n FROM actions WHERE user_id <> 'p0'",
    )
    .get_result::<Count>(&mut conn)
    .unwrap();
    assert_eq!(
        transactions.n, 1,
        "the queued decisions share one transaction"
    );
}
