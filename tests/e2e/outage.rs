//! PostgreSQL restarting under traffic: while it is down, every request gets a prompt 503 in
//! the JSON envelope (and `/readyz` says so) instead of hanging or crashing; once it is back,
//! the service serves again without a restart. No decision is answered unless it is stored,
//! and every stored one is whole: it replays from its stored state, seed and parameters.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use justin_e2e::cluster::PrivateCluster;
use justin_e2e::{justin, run, sql_lines, ScratchDir, Served};
use serde_json::{json, Value};

const USERS: usize = 8;
const CLIENTS: usize = 4;
/// The longest any one answer may take: the pool waits at most 1 s for a connection.
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// One answer the load got.
#[derive(Debug, Clone)]
struct Seen {
    user: String,
    idx: i64,
    status: u16,
    body: Value,
    /// Set when no HTTP answer came (timeout, reset): a failure in itself.
    transport_error: Option<String>,
}

struct Load {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `CLIENTS` threads, each posting `/action` for its own users with ever new indices.
    fn start(base_url: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..CLIENTS)
            .map(|client| {
                let (seen, stop, base_url) = (seen.clone(), stop.clone(), base_url.to_owned());
                std::thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(ANSWER_WITHIN))
                        .build()
                        .into();
                    let mut idx = 0_i64;
                    while !stop.load(Ordering::Relaxed) {
                        let user = format!("u{}", (idx as usize * CLIENTS + client) % USERS);
                        let body = json!({
                            "user_id": user,
                            "timestamp": "2025-01-01T12:00:00Z",
                            "decision_idx": idx,
                            "context": { "temperature": 20 + client },
                        });
                        let answer = agent
                            .post(format!("{base_url}/api/v1/action"))
                            .send_json(&body)
                            .map_err(|e| e.to_string())
                            .and_then(|mut r| {
                                let status = r.status().as_u16();
                                let text =
                                    r.body_mut().read_to_string().map_err(|e| e.to_string())?;
                                Ok((status, serde_json::from_str(&text).unwrap_or(json!(text))))
                            });
                        let seen_now = match answer {
                            Ok((status, body)) => Seen {
                                user,
                                idx,
                                status,
                                body,
                                transport_error: None,
                            },
                            Err(e) => Seen {
                                user,
                                idx,
                                status: 0,
                                body: Value::Null,
                                transport_error: Some(e),
                            },
                        };
                        seen.lock().unwrap().push(seen_now);
                        idx += 1;
                    }
                })
            })
            .collect();
        Self {
            seen,
            stop,
            threads,
        }
    }

    fn count(&self, status: u16) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.status == status)
            .count()
    }

    /// Waits until `done` holds for what was seen, failing after a generous deadline.
    fn wait_for(&self, what: &str, done: impl Fn(&[Seen]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if done(&self.seen.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        Arc::try_unwrap(self.seen).unwrap().into_inner().unwrap()
    }
}

// PostgreSQL only: it stops and starts a PostgreSQL server of its own.
#[test]
fn pg_a_postgresql_restart_under_load_gives_503_then_recovers_without_a_restart() {
    let cluster = PrivateCluster::start();
    let url = cluster.url("justin_outage");
    let dir = ScratchDir::new();
    let env = [
        ("JUSTIN_DATABASE__URL", url.clone()),
        ("JUSTIN_DATABASE__POOL_SIZE", "4".to_owned()),
        ("JUSTIN_DATABASE__CONNECT_TIMEOUT_SECS", "1".to_owned()),
        // The update worker's polls would find closed connections before the requests do.
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", "600000".to_owned()),
    ];
    let served = Served::start(dir.path(), &env);
    for user in 0..USERS {
        let (status, body) = served.post(
            "/api/v1/add_user",
            &json!({ "user_id": format!("u{user}") }),
        );
        assert_eq!(status, 201, "{body}");
    }

    let load = Load::start(&served.base_url);
    load.wait_for("decisions before the outage", |seen| {
        seen.iter().filter(|s| s.status == 201).count() >= 40
    });

    cluster.halt();
    let before_outage = load.count(201);
    load.wait_for("503 answers during the outage", |seen| {
        seen.iter().filter(|s| s.status == 503).count() >= 2 * CLIENTS
    });
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 503, "/readyz reports the outage: {body}");
    let (status, _) = served.get("/healthz");
    assert_eq!(status, 200, "the process itself stays alive");

    cluster.resume();
    load.wait_for("decisions after the outage", |seen| {
        seen.iter().filter(|s| s.status == 201).count() >= before_outage + 40
    });
    // Recovered: from some point on, every answer is a success again.
    load.wait_for("40 successes in a row", |seen| {
        seen.len() >= 40 && seen[seen.len() - 40..].iter().all(|s| s.status == 201)
    });
    let mut seen = load.finish();
    let (status, body) = served.get("/readyz");
    assert_eq!(status, 200, "/readyz is ready again: {body}");

    // A restart while the service is idle leaves every pooled connection closed by the
    // server; the next decisions are still answered, none with a 503.
    cluster.halt();
    cluster.resume();
    for idx in 0..20_i64 {
        let user = format!("u{}", idx % USERS as i64);
        let body = json!({
            "user_id": user,
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": 1_000_000 + idx,
            "context": { "temperature": 30 },
        });
        let (status, answer) = served.post("/api/v1/action", &body);
        assert_eq!(
            status, 201,
            "decision {idx} after an idle restart: {answer}"
        );
        seen.push(Seen {
            user,
            idx: 1_000_000 + idx,
            status,
            body: answer,
            transport_error: None,
        });
    }

    // Every answer was a decision or a prompt 503 in the envelope: no 500, no hang, no reset.
    let odd: Vec<&Seen> = seen
        .iter()
        .filter(|s| match s.status {
            _ if s.transport_error.is_some() => true,
            201 => false,
            503 => !(s.body["status"] == "failed" && s.body["message"].is_string()),
            _ => true,
        })
        .collect();
    assert!(
        odd.is_empty(),
        "answers other than 201 or a 503 envelope: {odd:#?}"
    );
    let unavailable = seen.iter().filter(|s| s.status == 503).count();
    eprintln!(
        "outage under load: {} requests, {} decisions, {unavailable} answered 503",
        seen.len(),
        seen.len() - unavailable
    );

    // Every decision answered is stored, exactly as answered.
    let stored: std::collections::HashMap<(String, i64), (i64, f64)> = sql_lines(
        &url,
        "SELECT user_id || ' ' || decision_idx || ' ' || action || ' ' || action_prob AS out FROM actions",
    )
    .into_iter()
    .map(|line| {
        let parts: Vec<&str> = line.split(' ').collect();
        (
            (parts[0].to_owned(), parts[1].parse().unwrap()),
            (parts[2].parse().unwrap(), parts[3].parse().unwrap()),
        )
    })
    .collect();
    let answered: Vec<&Seen> = seen.iter().filter(|s| s.status == 201).collect();
    for s in &answered {
        let stored = stored.get(&(s.user.clone(), s.idx));
        assert_eq!(
            stored,
            Some(&(
                s.body["action"].as_i64().unwrap(),
                s.body["action_prob"].as_f64().unwrap()
            )),
            "decision ({}, {}) was answered {} but stored as {stored:?}",
            s.user,
            s.idx,
            s.body
        );
    }
    assert!(stored.len() >= answered.len());

    // The pool's connection errors during the outage are logged one line each: libpq's
    // second line ("Is the server running ...") never stands on a line of its own.
    let log = served.terminate_with_output();
    let logged = format!("{}{}", log.stdout, log.stderr);
    assert!(
        logged.contains("connection pool: "),
        "the outage's pool errors are logged: {logged}"
    );
    let lines: Vec<&str> = logged.lines().collect();
    let stray: Vec<&[&str]> = lines
        .windows(2)
        .filter(|w| w[1].trim_start().starts_with("Is the server running"))
        .collect();
    assert!(stray.is_empty(), "multi-line pool errors: {stray:#?}");

    // Every stored decision is whole: it replays from what was stored with it.
    let replay = run(justin(dir.path(), &env).arg("replay"));
    assert!(
        replay.status.success(),
        "replay found a decision that does not re-derive: {}{}",
        replay.stdout,
        replay.stderr
    );
}
