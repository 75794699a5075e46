//! PostgreSQL restarting while the service is idle or running an update: every pooled
//! connection is then one the server closed. No route answers 500 for it (each retries on a
//! fresh connection, or checks its connection before a write it must not send twice), and an
//! update the restart interrupted, or that meets closed connections afterwards, completes
//! instead of failing for good.

use std::time::Instant;

use diesel::connection::SimpleConnection;
use diesel::{Connection, PgConnection};
use justin_e2e::cluster::PrivateCluster;
use justin_e2e::{sql_lines, CallbackReceiver, ScratchDir, Served, WAIT};
use serde_json::{json, Value};

const POOL_SIZE: usize = 4;

/// The service's settings; the update worker polls every `poll_ms` (a request wakes it at
/// once in any case).
fn env(url: &str, poll_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("JUSTIN_DATABASE__URL", url.to_owned()),
        ("JUSTIN_DATABASE__POOL_SIZE", POOL_SIZE.to_string()),
        ("JUSTIN_DATABASE__CONNECT_TIMEOUT_SECS", "1".to_owned()),
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", poll_ms.to_string()),
        ("JUSTIN_UPDATE__CALLBACK_BACKOFF_MS", "10".to_owned()),
        // The watchdog's background check reads `users`: while the test holds that table
        // locked, a check would be a second waiter beside the update's backup, which the test
        // counts as the only one.
        ("JUSTIN_MONITOR__ENABLED", "false".to_owned()),
    ]
}

/// The service's connections to `database`, as the server counts them.
fn connections(cluster: &PrivateCluster, database: &str) -> usize {
    sql_lines(
        &cluster.url("postgres"),
        &format!(
            "SELECT CAST(count(*) AS TEXT) AS out FROM pg_stat_activity \
             WHERE datname = '{database}' AND application_name = ''"
        ),
    )[0]
    .parse()
    .unwrap()
}

/// Sends bursts of concurrent `/readyz` until the pool holds all its connections, so that a
/// restart leaves every one of them closed.
fn fill_pool(served: &Served, cluster: &PrivateCluster, database: &str) {
    let deadline = Instant::now() + WAIT;
    while connections(cluster, database) < POOL_SIZE {
        assert!(Instant::now() < deadline, "the pool did not fill up");
        std::thread::scope(|s| {
            for _ in 0..2 * POOL_SIZE {
                s.spawn(|| {
                    let (status, body) = served.get("/readyz");
                    assert_eq!(status, 200, "{body}");
                });
            }
        });
    }
}

fn restart(cluster: &PrivateCluster) {
    cluster.halt();
    cluster.resume();
}

/// Sends every kind of request once; returns (what, status, body) for each.
fn every_route(served: &Served, round: i64, update_id: &str) -> Vec<(String, u16, Value)> {
    let mut seen = Vec::new();
    let mut note = |what: &str, (status, body): (u16, Value)| {
        seen.push((what.to_owned(), status, body.clone()));
        body
    };
    note(
        "add_user",
        served.post(
            "/api/v1/add_user",
            &json!({"user_id": format!("new{round}")}),
        ),
    );
    let decision = note(
        "action",
        served.post(
            "/api/v1/action",
            &json!({
                "user_id": "p0",
                "timestamp": "2025-01-01T12:00:00Z",
                "decision_idx": 100 + round,
                "context": {"temperature": 20},
            }),
        ),
    );
    note(
        "upload_data",
        served.post(
            "/api/v1/upload_data",
            &json!({
                "user_id": "p0",
                "timestamp": "2025-01-01T13:00:00Z",
                "decision_idx": 100 + round,
                "data": {
                    "context": {"temperature": 20},
                    "action": decision["action"],
                    "action_prob": decision["action_prob"],
                    "state": decision["state"],
                    "outcome": {"clicks": 1},
                },
            }),
        ),
    );
    note(
        "update status",
        served.get(&format!("/api/v1/update/{update_id}")),
    );
    note("parameters", served.get("/api/v1/parameters"));
    note("parameters/1", served.get("/api/v1/parameters/1"));
    note("readyz", served.get("/readyz"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut export = agent
        .get(format!("{}/api/v1/export", served.base_url))
        .call()
        .expect("the server answers");
    let status = export.status().as_u16();
    let text = export.body_mut().read_to_string().unwrap_or_default();
    seen.push(("export".to_owned(), status, json!(text)));
    seen
}

fn request_update(served: &Served, callback_url: &str) -> String {
    let (status, body) = served.post(
        "/api/v1/update",
        &json!({"timestamp": "2025-01-01T14:00:00Z", "callback_url": callback_url}),
    );
    assert_eq!(status, 202, "POST /update: {body}");
    body["update_id"].as_str().unwrap().to_owned()
}

// PostgreSQL only: it stops and starts a PostgreSQL server of its own.
#[test]
fn pg_after_a_postgresql_restart_every_route_answers_and_updates_complete() {
    let cluster = PrivateCluster::start();
    let database = "justin_restart";
    let url = cluster.url(database);
    let dir = ScratchDir::new();
    // The worker's polls would find the closed connections before the requests do.
    let served = Served::start(dir.path(), &env(&url, 600_000));
    let receiver = CallbackReceiver::start();
    for user in ["p0", "p1"] {
        let (status, body) = served.post("/api/v1/add_user", &json!({ "user_id": user }));
        assert_eq!(status, 201, "{body}");
    }
    let first = request_update(&served, receiver.url());
    assert_eq!(receiver.next()["status"], "completed");

    // Every route, on a pool of connections the server closed.
    fill_pool(&served, &cluster, database);
    restart(&cluster);
    let mut seen = Vec::new();
    for round in 0..3 {
        seen.extend(every_route(&served, round, &first));
    }
    let wrong: Vec<_> = seen
        .iter()
        .filter(|(what, status, _)| match what.as_str() {
            "add_user" | "action" | "upload_data" => *status != 201,
            _ => *status != 200,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "after an idle restart every request is answered as before it: {wrong:#?}"
    );

    // An update requested on closed connections: it and its backup run on fresh ones.
    fill_pool(&served, &cluster, database);
    restart(&cluster);
    let second = request_update(&served, receiver.url());
    let callback = receiver.next();
    assert_eq!(callback["update_id"], second.as_str(), "{callback}");
    assert_eq!(callback["status"], "completed", "{callback}");

    // An update interrupted by a restart: its backup waits on a lock the test holds on
    // `users` when PostgreSQL stops (nothing else the service does meanwhile reads `users`).
    // It runs again at a poll, so the worker polls often now.
    drop(served);
    let served = Served::start(dir.path(), &env(&url, 20));
    let mut blocker = PgConnection::establish(&url).unwrap();
    blocker
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE;")
        .unwrap();
    let third = request_update(&served, receiver.url());
    let deadline = Instant::now() + WAIT;
    while sql_lines(
        &cluster.url("postgres"),
        &format!(
            "SELECT CAST(count(*) AS TEXT) AS out FROM pg_stat_activity \
             WHERE datname = '{database}' AND wait_event_type = 'Lock'"
        ),
    ) != ["1"]
    {
        assert!(
            Instant::now() < deadline,
            "the update's backup did not reach the lock"
        );
        std::thread::yield_now();
    }
    restart(&cluster);
    drop(blocker);
    let callback = receiver.next();
    assert_eq!(callback["update_id"], third.as_str(), "{callback}");
    assert_eq!(
        callback["status"], "completed",
        "the interrupted update ran again and completed: {callback}"
    );
    let (status, body) = served.get(&format!("/api/v1/update/{third}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["update_status"], "completed", "{body}");
    assert!(body["attempts"].as_i64().unwrap() >= 2, "{body}");
    assert_eq!(
        receiver.try_next(),
        None,
        "one callback per update, none saying failed"
    );
}
