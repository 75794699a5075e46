//! Update requests as durable jobs: several processes sharing one database run each request
//! exactly once, one at a time, and a process killed during an update leaves the parameters as
//! they were and the request to be run again after a restart.

use std::collections::BTreeSet;
use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use justin_e2e::{
    env_for, execute, sql_lines, CallbackReceiver, ScratchDir, Served, TestDatabase, WAIT,
};
use serde_json::{json, Value};

const UPDATES: usize = 12;

/// The environment for quick updates: no backups, polling every 20 ms, short callback backoff.
fn quick_env(db: &TestDatabase) -> Vec<(&'static str, String)> {
    let mut env = env_for(db);
    env.extend([
        ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", "20".to_owned()),
        ("JUSTIN_UPDATE__CALLBACK_BACKOFF_MS", "10".to_owned()),
    ]);
    env
}

/// Asks `served` for an update; the id it answered 202 with.
fn request_update(served: &Served, callback_url: &str) -> String {
    let (status, body) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T12:00:00Z", "callback_url": callback_url}),
    );
    assert_eq!(status, 202, "{body}");
    body["update_id"].as_str().expect("update_id").to_owned()
}

fn update_status(served: &Served, id: &str) -> Value {
    let (status, body) = served.get(&format!("/api/v1/update/{id}"));
    assert_eq!(status, 200, "update {id}: {body}");
    body
}

/// GETs `path` until `done` holds for the answer, for at most [`WAIT`].
fn poll(served: &Served, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = served.get(path);
        assert_eq!(status, 200, "{path}: {body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{path} did not reach the expected state within {WAIT:?}; last: {body}"
        );
        std::thread::yield_now();
    }
}

#[test]
fn two_processes_run_each_of_many_concurrent_updates_exactly_once() {
    let db = TestDatabase::create();
    let (dir_a, dir_b) = (ScratchDir::new(), ScratchDir::new());
    let env = quick_env(&db);
    let a = Served::start(dir_a.path(), &env);
    let b = Served::start(dir_b.path(), &env);
    let receiver = CallbackReceiver::start();

    let ids: Vec<String> = std::thread::scope(|scope| {
        let requests: Vec<_> = (0..UPDATES)
            .map(|i| {
                let served = if i % 2 == 0 { &a } else { &b };
                let url = receiver.url().to_owned();
                scope.spawn(move || request_update(served, &url))
            })
            .collect();
        requests
            .into_iter()
            .map(|r| r.join().expect("the request thread ends"))
            .collect()
    });

    let callbacks: Vec<Value> = (0..UPDATES).map(|_| receiver.next()).collect();
    let requested: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    assert_eq!(requested.len(), UPDATES, "every request got its own id");
    assert!(
        callbacks.iter().all(|c| c["status"] == "completed"),
        "{callbacks:?}"
    );
    let called_back: BTreeSet<&str> = callbacks
        .iter()
        .filter_map(|c| c["update_id"].as_str())
        .collect();
    assert_eq!(
        called_back, requested,
        "one callback per request, none twice"
    );
    let mut versions = BTreeSet::new();
    for id in &ids {
        let status = update_status(&a, id);
        assert_eq!(status["update_status"], "completed", "{status}");
        assert_eq!(status["attempts"], 1, "run once: {status}");
        versions.insert(status["parameter_version"].as_i64().expect("a version"));
    }
    let expected: BTreeSet<i64> = (2..=13).collect();
    assert_eq!(versions, expected, "one version each, no gaps");
    for served in [&a, &b] {
        poll(served, "/api/v1/parameters", |p| p["version"] == 13);
    }
    assert_eq!(
        receiver.try_next(),
        None,
        "no callback beyond the {UPDATES}"
    );
}

// PostgreSQL-only: it stops the update with `LOCK TABLE`, which SQLite lacks; its SQLite
// counterpart is the next test.
#[test]
fn pg_an_update_killed_half_way_changes_nothing_and_runs_again_after_a_restart() {
    let db = TestDatabase::Postgres(justin_store::testing::TestDatabase::create());
    let dir = ScratchDir::new();
    let env = quick_env(&db);
    let receiver = CallbackReceiver::start();
    let served = Served::start(dir.path(), &env);
    // The update reads the study data after claiming the request and reading the parameters;
    // holding this lock stops it right there. (The worker's poll reads model_parameters and
    // model_update_requests, never study_data, so only the update waits.)
    let mut blocker = PgConnection::establish(db.url()).unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE study_data IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let id = request_update(&served, receiver.url());
    poll(&served, &format!("/api/v1/update/{id}"), |s| {
        s["started_at"].is_string()
    });

    served.kill_hard();
    blocker.batch_execute("ROLLBACK").unwrap();

    let versions = sql_lines(
        db.url(),
        "SELECT CAST(version AS TEXT) AS out FROM model_parameters ORDER BY version",
    );
    assert_eq!(versions, ["1"], "the killed update published nothing");
    let request = sql_lines(
        db.url(),
        &format!(
            "SELECT status || ' ' || CAST(attempts AS TEXT) AS out \
             FROM model_update_requests WHERE id = '{id}'"
        ),
    );
    assert_eq!(request, ["processing 1"]);
    assert_eq!(
        receiver.try_next(),
        None,
        "the killed process called nobody"
    );

    let restarted = Served::start(dir.path(), &env);

    let callback = receiver.next();
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], id.as_str(), "{callback}");
    let status = update_status(&restarted, &id);
    assert_eq!(status["update_status"], "completed", "{status}");
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(status["parameter_version"], 2, "{status}");
}

/// Rows of the `spin` table the SQLite hold below joins with itself four times: 10^12 row
/// combinations, hours of work for a trigger that is killed within moments.
const SPIN_ROWS: u32 = 1000;

// SQLite whatever the backend variable says: the lease and its lease file are SQLite's. The
// update is held by a trigger that keeps its completion busy (SQLite has no `LOCK TABLE`, and
// in WAL mode no reader waits for anyone); it cannot publish before the kill, whenever that is.
#[test]
fn sqlite_a_restarted_process_takes_over_at_once_the_update_a_killed_one_held() {
    let sqlite = justin_store_sqlite::testing::TestDatabase::create();
    let db_dir = sqlite.dir().to_owned();
    let db = TestDatabase::Sqlite(sqlite);
    let dir = ScratchDir::new();
    let env = quick_env(&db);
    let receiver = CallbackReceiver::start();
    let served = Served::start(dir.path(), &env);
    poll(&served, "/api/v1/parameters", |p| p["version"] == 1);
    execute(
        db.url(),
        &format!(
            "CREATE TABLE spin (x INTEGER); \
             INSERT INTO spin WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
             WHERE x < {SPIN_ROWS}) SELECT x FROM n; \
             CREATE TRIGGER hold_update BEFORE INSERT ON model_parameters BEGIN \
             SELECT count(*) FROM spin a, spin b, spin c, spin d; END;"
        ),
    );
    let id = request_update(&served, receiver.url());
    poll(&served, &format!("/api/v1/update/{id}"), |s| {
        s["started_at"].is_string()
    });

    served.kill_hard();
    execute(db.url(), "DROP TRIGGER hold_update; DROP TABLE spin;");
    let versions = sql_lines(
        db.url(),
        "SELECT CAST(version AS TEXT) AS out FROM model_parameters ORDER BY version",
    );
    assert_eq!(versions, ["1"], "the killed update published nothing");
    let holder = sql_lines(
        db.url(),
        "SELECT COALESCE(update_id, 'none') AS out FROM update_lease",
    );
    assert_eq!(holder, [id.as_str()], "the killed process left its lease");

    // The lease is 10 minutes; the callback wait is far shorter.
    let restarted = Served::start(dir.path(), &env);
    let callback = receiver.next();
    assert_eq!(callback["status"], "completed", "{callback}");
    assert_eq!(callback["update_id"], id.as_str(), "{callback}");
    let status = update_status(&restarted, &id);
    assert_eq!(status["attempts"], 2, "{status}");
    assert_eq!(status["parameter_version"], 2, "{status}");
    let out = restarted.terminate_with_output();
    let log = format!("{}{}", out.stdout, out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains(&format!("taking over update {id}")))
        .unwrap_or_else(|| panic!("no line says the update was taken over:\n{log}"));
    assert!(line.contains("the process that held it is gone"), "{line}");
    let left: Vec<_> = std::fs::read_dir(&db_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("-lease-"))
        .collect();
    assert!(left.is_empty(), "lease files left behind: {left:?}");
}
