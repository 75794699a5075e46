//! Every finite double a client sends comes back bit for bit: in the `/action` answer's state
//! (flat_prob's state is [temperature]) and its repeat, in the export (`justin export` and
//! `GET /api/v1/export`), and after `justin backup` and `justin restore` into the other
//! backend, in that backend's export and repeats.

use std::collections::BTreeMap;

use justin_backup::csv::CsvReader;
use justin_core::conformance::{finite_doubles, same_json_bits};
use justin_e2e::{justin, reported_backup, run, ScratchDir, Served, TestDatabase};
use serde_json::{json, Value};

/// Decisions per study; each carries 8 doubles in its context, every other one an upload with
/// 5 more in its outcome.
const DECISIONS: usize = 40;
const SEED: u64 = 0x6532_6532;

/// What the study server sent for one decision.
struct Sent {
    context: Value,
    /// The upload's outcome, for every other decision.
    outcome: Option<Value>,
}

fn bits(value: &Value) -> u64 {
    value
        .as_f64()
        .unwrap_or_else(|| panic!("{value} is a number"))
        .to_bits()
}

/// Checks an answer's state against the temperature sent.
fn assert_state(what: &str, answer: &Value, context: &Value) {
    let state = answer["state"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {answer}"));
    assert_eq!(state.len(), 1, "{what}: {answer}");
    assert_eq!(
        bits(&state[0]),
        bits(&context["temperature"]),
        "{what}: sent {}, answered {answer}",
        context["temperature"]
    );
}

fn action(idx: usize, context: &Value) -> Value {
    json!({
        "user_id": "p1",
        "timestamp": "2025-01-01T12:00:00Z",
        "decision_idx": idx,
        "context": context,
    })
}

/// Runs the study: each decision asked for twice, every other one uploaded.
fn run_study(served: &Served) -> Vec<Sent> {
    // The special values come first: each is a temperature, hence a state, and a click count.
    let values = finite_doubles(SEED, DECISIONS * 12);
    let (temperatures, others) = values.split_at(DECISIONS);
    let (status, _) = served.post("/api/v1/add_user", &json!({"user_id": "p1"}));
    assert_eq!(status, 201);
    let mut sent = Vec::new();
    for (idx, chunk) in others.chunks(11).enumerate() {
        let context = json!({"temperature": temperatures[idx], "more": &chunk[..7]});
        let (status, answer) = served.post("/api/v1/action", &action(idx, &context));
        assert_eq!(status, 201, "{answer}");
        assert_state("the answer", &answer, &context);
        let (status, repeat) = served.post("/api/v1/action", &action(idx, &context));
        assert_eq!(status, 200, "{repeat}");
        assert_state("the repeat", &repeat, &context);
        let outcome = (idx % 2 == 0).then(|| {
            let clicks = temperatures[(idx + 1) % DECISIONS];
            let outcome = json!({"clicks": clicks, "more": &chunk[7..]});
            let upload = json!({
                "user_id": "p1",
                "timestamp": "2025-01-01T13:00:00Z",
                "decision_idx": idx,
                "data": {
                    "context": context,
                    "action": answer["action"],
                    "action_prob": answer["action_prob"],
                    "state": answer["state"],
                    "outcome": outcome,
                },
            });
            let (status, body) = served.post("/api/v1/upload_data", &upload);
            assert_eq!(status, 201, "{body}");
            outcome
        });
        sent.push(Sent { context, outcome });
    }
    sent
}

/// Checks an export's rows against what was sent.
fn assert_export(what: &str, csv: &str, sent: &[Sent]) {
    let mut reader = CsvReader::new(csv.as_bytes());
    let header: Vec<String> = reader
        .next_record()
        .unwrap()
        .unwrap()
        .into_iter()
        .flatten()
        .collect();
    let column = |name: &str| header.iter().position(|c| c == name).unwrap();
    let mut rows = 0;
    while let Some(record) = reader.next_record().unwrap() {
        let field = |name: &str| record[column(name)].clone();
        let json = |name: &str| -> Value { serde_json::from_str(&field(name).unwrap()).unwrap() };
        let idx: usize = field("decision_idx").unwrap().parse().unwrap();
        let s = &sent[idx];
        let context = json("context");
        if let Err(e) = same_json_bits(&s.context, &context) {
            panic!("{what}, decision {idx}, context: {e}");
        }
        assert_state(
            &format!("{what}, decision {idx}"),
            &json!({"state": json("state")}),
            &s.context,
        );
        match &s.outcome {
            Some(outcome) => {
                if let Err(e) = same_json_bits(outcome, &json("outcome")) {
                    panic!("{what}, decision {idx}, outcome: {e}");
                }
                let reward: f64 = field("reward").unwrap().parse().unwrap();
                let clicks = outcome["clicks"].as_f64().unwrap();
                // The reward is derived, and SQLite keeps a REAL -0.0 as 0: its value is kept.
                if clicks == 0.0 {
                    assert_eq!(reward, 0.0, "{what}, decision {idx}");
                } else {
                    assert_eq!(reward.to_bits(), clicks.to_bits(), "{what}, decision {idx}");
                }
            }
            None => assert_eq!(field("outcome"), None, "{what}, decision {idx}"),
        }
        rows += 1;
    }
    assert_eq!(rows, sent.len(), "{what}");
}

/// Both exports of the database behind `env`: the command's file and the API's body.
fn assert_exports(what: &str, dir: &std::path::Path, env: &[(&str, String)], sent: &[Sent]) {
    let out = run(justin(dir, env).args(["export", "--out", "study.csv"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let file = std::fs::read_to_string(dir.join("study.csv")).unwrap();
    assert_export(&format!("{what}, justin export"), &file, sent);
    let served = Served::start(dir, env);
    let body = ureq::get(format!("{}/api/v1/export", served.base_url))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_export(&format!("{what}, GET /api/v1/export"), &body, sent);
    // The decisions left open answer their repeats as before.
    for (idx, s) in sent.iter().enumerate().filter(|(_, s)| s.outcome.is_none()) {
        let (status, answer) = served.post("/api/v1/action", &action(idx, &s.context));
        assert_eq!(status, 200, "{answer}");
        assert_state(&format!("{what}, a repeat"), &answer, &s.context);
    }
    assert!(served.terminate().success());
}

fn env(db: &TestDatabase) -> Vec<(&'static str, String)> {
    vec![("JUSTIN_DATABASE__URL", db.url().to_owned())]
}

/// The study on `from`, checked there, then backed up and restored into `to` and checked again.
fn every_double_survives_the_move(from: &TestDatabase, to: &TestDatabase) {
    let dir = ScratchDir::new();
    let from_env = env(from);
    let served = Served::start(dir.path(), &from_env);
    let sent = run_study(&served);
    assert!(served.terminate().success());
    assert_exports("before the move", dir.path(), &from_env, &sent);

    let out = run(justin(dir.path(), &from_env).arg("backup"));
    assert!(out.status.success(), "{}", out.stderr);
    let backup = reported_backup(dir.path(), &out);
    let to_env = env(to);
    let out =
        run(justin(dir.path(), &to_env).args(["restore", &backup.display().to_string(), "--yes"]));
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    assert_exports("after the move", dir.path(), &to_env, &sent);
}

fn postgres() -> TestDatabase {
    TestDatabase::Postgres(justin_store::testing::TestDatabase::create())
}

fn sqlite() -> TestDatabase {
    TestDatabase::Sqlite(justin_store_sqlite::testing::TestDatabase::create())
}

// Both use both backends, so PostgreSQL-only: the `pg_` prefix lets the SQLite run skip them.
#[test]
fn pg_every_double_survives_a_move_from_postgres_to_sqlite() {
    every_double_survives_the_move(&postgres(), &sqlite());
}

#[test]
fn pg_every_double_survives_a_move_from_sqlite_to_postgres() {
    every_double_survives_the_move(&sqlite(), &postgres());
}

#[test]
fn the_values_cover_the_extremes() {
    let values = finite_doubles(SEED, DECISIONS);
    let kinds: BTreeMap<&str, bool> = [
        (
            "-0.0",
            values.iter().any(|v| v.to_bits() == (-0.0_f64).to_bits()),
        ),
        ("5e-324", values.contains(&5e-324)),
        ("f64::MAX", values.contains(&f64::MAX)),
        ("f64::MIN_POSITIVE", values.contains(&f64::MIN_POSITIVE)),
    ]
    .into_iter()
    .collect();
    assert!(kinds.values().all(|&found| found), "{kinds:?}");
}
