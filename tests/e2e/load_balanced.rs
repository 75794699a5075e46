//! Several instances behind a real load balancer: three `justin serve` processes on one
//! PostgreSQL database behind nginx, configured as docs/operations.md shows (the test reads its
//! configuration from there), while 64 clients ask for decisions through it and updates are
//! requested. Under that load one instance is killed with SIGKILL and another is restarted
//! (SIGTERM, then started again on its port).
//!
//! A client that gets nginx's own answer (502 or 504: no instance answered), a 503, or no
//! answer at all asks again for the same decision, as a study server should. At the end every
//! decision asked for was acknowledged (201, or 200 for a repeat) and is stored exactly once,
//! with the acknowledged action and probability; no answer was a 500 or anything else; each
//! accepted update completed once, with a parameter version of its own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use justin_e2e::nginx::{self, Nginx};
use justin_e2e::{free_ports, sql_lines, CallbackReceiver, ScratchDir, Served, TestDatabase, WAIT};
use serde_json::{json, Value};

const INSTANCES: usize = 3;
const CLIENTS: usize = 64;
/// Decisions acknowledged before each event of the run (an update requested, an instance
/// killed, one restarted) and after the last.
const PHASE: usize = 600;
/// Decisions the restarted instance acknowledges before the load stops: it serves again.
const AFTER_RESTART: usize = 50;
/// Asking for one decision (or an update) more often than this fails the test.
const MAX_TRIES: usize = 100;
/// The longest one request may take before the client counts it as unanswered.
const ANSWER_WITHIN: Duration = Duration::from_secs(30);
/// The message of nginx's own error answers, from the configuration in docs/operations.md.
const LB_MESSAGE: &str = "No JustIn instance answered. Try again shortly.";

/// The nginx configuration docs/operations.md shows, its example addresses replaced by the
/// test's ports.
fn documented_config(instance_ports: &[u16], listen: u16) -> String {
    let doc = include_str!("../../docs/operations.md");
    let opening = "```nginx\n";
    let start = doc
        .find(opening)
        .expect("docs/operations.md shows an nginx configuration")
        + opening.len();
    let end = start + doc[start..].find("```").expect("the nginx block ends");
    let mut config = doc[start..end].to_owned();
    let mut replace = |from: &str, to: &str| {
        assert_eq!(
            config.matches(from).count(),
            1,
            "the configuration in docs/operations.md names {from:?} once"
        );
        config = config.replace(from, to);
    };
    for (i, port) in instance_ports.iter().enumerate() {
        replace(
            &format!("10.0.0.{}:5000", 11 + i),
            &format!("127.0.0.1:{port}"),
        );
    }
    replace("listen 80;", &format!("listen 127.0.0.1:{listen};"));
    config
}

/// One answer a client got: its status (0 when none came) and its body, or the error.
#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    body: String,
}

/// One decision a client asked for and then uploaded data for, with every answer it got.
#[derive(Debug)]
struct Asked {
    user: String,
    idx: i64,
    answers: Vec<Answer>,
    /// The acknowledged action and probability, from the last answer when it was 200 or 201.
    acked: Option<(i64, f64)>,
    /// The answers to its upload, sent once the decision was acknowledged.
    upload_answers: Vec<Answer>,
    /// Its outcome's clicks, once the upload was acknowledged (see [`upload_acknowledged`]).
    uploaded: Option<i64>,
}

/// The answer a repeated upload gets when an earlier copy was stored.
const ALREADY_UPLOADED: &str = "Decision index already exists.";

/// Whether the last of an upload's answers acknowledges it: a 201, or the 400 a repeat gets
/// after an earlier copy, sent before a retry, was stored.
fn upload_acknowledged(answers: &[Answer]) -> bool {
    match answers.split_last() {
        Some((last, _)) if last.status == 201 => true,
        Some((last, earlier)) => {
            last.status == 400
                && is_envelope(&last.body, Some(ALREADY_UPLOADED))
                && earlier.iter().any(worth_retrying)
        }
        None => false,
    }
}

/// What the clients have had acknowledged so far, for the test to wait on.
#[derive(Default)]
struct Progress {
    state: Mutex<Counts>,
    changed: Condvar,
}

#[derive(Default, Debug)]
struct Counts {
    acked: usize,
    /// Decisions acknowledged per instance (`127.0.0.1:<port>`, the one that answered).
    by_instance: HashMap<String, usize>,
}

impl Progress {
    fn acked(&self, instance: String) {
        let mut counts = self.state.lock().unwrap();
        counts.acked += 1;
        *counts.by_instance.entry(instance).or_default() += 1;
        self.changed.notify_all();
    }

    fn counts<T>(&self, read: impl FnOnce(&Counts) -> T) -> T {
        read(&self.state.lock().unwrap())
    }

    /// Waits until `done` holds, failing after [`WAIT`].
    fn wait_for(&self, what: &str, done: impl Fn(&Counts) -> bool) {
        let deadline = Instant::now() + WAIT;
        let mut counts = self.state.lock().unwrap();
        while !done(&counts) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}: {counts:?}");
            counts = self.changed.wait_timeout(counts, left).unwrap().0;
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(ANSWER_WITHIN))
        .build()
        .into()
}

/// POSTs `body`; the answer, and the instance that gave it (nginx's `X-Upstream` header: the
/// last address nginx tried).
fn post(agent: &ureq::Agent, url: &str, body: &Value) -> (Answer, String) {
    match agent.post(url).send_json(body) {
        Ok(mut response) => {
            let instance = response
                .headers()
                .get("x-upstream")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(", ").next())
                .unwrap_or_default()
                .to_owned();
            let status = response.status().as_u16();
            let body = response
                .body_mut()
                .read_to_string()
                .unwrap_or_else(|e| format!("(the body could not be read: {e})"));
            (Answer { status, body }, instance)
        }
        Err(e) => (
            Answer {
                status: 0,
                body: e.to_string(),
            },
            String::new(),
        ),
    }
}

/// GETs `url`, asking again after an answer worth retrying.
fn get(agent: &ureq::Agent, url: &str) -> Answer {
    let mut answer = Answer {
        status: 0,
        body: String::new(),
    };
    for _ in 0..MAX_TRIES {
        answer = match agent.get(url).call() {
            Ok(mut response) => Answer {
                status: response.status().as_u16(),
                body: response.body_mut().read_to_string().unwrap_or_default(),
            },
            Err(e) => Answer {
                status: 0,
                body: e.to_string(),
            },
        };
        if !worth_retrying(&answer) {
            break;
        }
    }
    answer
}

fn is_envelope(body: &str, message: Option<&str>) -> bool {
    serde_json::from_str::<Value>(body).is_ok_and(|v| {
        v["status"] == "failed"
            && v["message"].is_string()
            && message.is_none_or(|m| v["message"] == m)
    })
}

/// An answer the client asks again after: nginx's own 502 or 504 (no instance answered), a
/// 503 in the envelope, or no answer.
fn worth_retrying(answer: &Answer) -> bool {
    match answer.status {
        0 => true,
        502 | 504 => is_envelope(&answer.body, Some(LB_MESSAGE)),
        503 => is_envelope(&answer.body, None),
        _ => false,
    }
}

/// One client: decision after decision for its own participant until `stop`, each asked until
/// it is acknowledged (or answered with something other than an answer worth retrying), then
/// its data uploaded in the same way.
fn client(number: usize, base_url: &str, stop: &AtomicBool, progress: &Progress) -> Vec<Asked> {
    let agent = agent();
    let url = format!("{base_url}/api/v1/action");
    let upload_url = format!("{base_url}/api/v1/upload_data");
    let user = format!("c{number}");
    let mut asked = Vec::new();
    let mut idx = 0_i64;
    while !stop.load(Ordering::Relaxed) {
        let body = json!({
            "user_id": user,
            "timestamp": "2025-01-01T12:00:00Z",
            "decision_idx": idx,
            "context": { "temperature": 20 + (idx % 7) },
        });
        let mut decision = Asked {
            user: user.clone(),
            idx,
            answers: Vec::new(),
            acked: None,
            upload_answers: Vec::new(),
            uploaded: None,
        };
        let mut answered = Value::Null;
        for _ in 0..MAX_TRIES {
            let (answer, instance) = post(&agent, &url, &body);
            decision.answers.push(answer.clone());
            if matches!(answer.status, 200 | 201) {
                answered = serde_json::from_str(&answer.body).unwrap_or_default();
                if let (Some(action), Some(prob)) = (
                    answered["action"].as_i64(),
                    answered["action_prob"].as_f64(),
                ) {
                    decision.acked = Some((action, prob));
                    progress.acked(instance);
                }
                break;
            }
            if !worth_retrying(&answer) {
                break;
            }
        }
        if decision.acked.is_some() {
            let clicks = idx % 3;
            let upload = json!({
                "user_id": user,
                "timestamp": "2025-01-01T12:00:00Z",
                "decision_idx": idx,
                "data": {
                    "context": body["context"],
                    "action": answered["action"],
                    "action_prob": answered["action_prob"],
                    "state": answered["state"],
                    "outcome": { "clicks": clicks },
                },
            });
            for _ in 0..MAX_TRIES {
                let (answer, _) = post(&agent, &upload_url, &upload);
                decision.upload_answers.push(answer.clone());
                if !worth_retrying(&answer) {
                    break;
                }
            }
            if upload_acknowledged(&decision.upload_answers) {
                decision.uploaded = Some(clicks);
            }
        }
        asked.push(decision);
        idx += 1;
    }
    asked
}

/// Requests an update through the load balancer, asking again after an answer worth
/// retrying. Its id, and how many requests got no answer from an instance (each may or may
/// not have been stored: `/update` is not idempotent, and nginx does not resend it).
fn request_update(agent: &ureq::Agent, base_url: &str, callback_url: &str) -> (String, usize) {
    let body = json!({"timestamp": "2025-01-01T12:00:00Z", "callback_url": callback_url});
    let mut unknown = 0;
    for _ in 0..MAX_TRIES {
        let (answer, _) = post(agent, &format!("{base_url}/api/v1/update"), &body);
        if answer.status == 202 {
            let json: Value = serde_json::from_str(&answer.body).expect("the answer is JSON");
            let id = json["update_id"].as_str().expect("an update_id").to_owned();
            return (id, unknown);
        }
        assert!(worth_retrying(&answer), "/update answered {answer:?}");
        if answer.status != 503 {
            unknown += 1;
        }
    }
    panic!("/update was not accepted in {MAX_TRIES} tries");
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A `justin serve` process with its own directory and port, which it keeps across a restart.
struct Instance {
    dir: ScratchDir,
    port: u16,
    served: Option<Served>,
}

impl Instance {
    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

// PostgreSQL only: several processes share one database, which SQLite does not support.
#[test]
fn pg_three_instances_behind_nginx_lose_no_decision_when_one_is_killed_and_one_restarted() {
    // Before anything is set up: without nginx the test fails saying how to install it.
    nginx::binary();
    let db = TestDatabase::Postgres(justin_store::testing::TestDatabase::create());
    let url = db.url().to_owned();
    let env = [
        ("JUSTIN_DATABASE__URL", url.clone()),
        // Three pools on the shared test server.
        ("JUSTIN_DATABASE__POOL_SIZE", "6".to_owned()),
        // Start-up lines, warnings and errors; not one line per request.
        (
            "JUSTIN_LOGGING__LEVEL",
            "info,justin::access=warn".to_owned(),
        ),
        ("JUSTIN_BACKUP__ENABLED", "false".to_owned()),
        ("JUSTIN_UPDATE__POLL_INTERVAL_MS", "50".to_owned()),
        ("JUSTIN_UPDATE__CALLBACK_BACKOFF_MS", "10".to_owned()),
        // A callback a killed process left pending is delivered again within seconds.
        ("JUSTIN_UPDATE__CALLBACK_TIMEOUT_SECS", "1".to_owned()),
        ("JUSTIN_UPDATE__CALLBACK_ATTEMPTS", "2".to_owned()),
        ("JUSTIN_SERVER__SHUTDOWN_GRACE_SECS", "10".to_owned()),
    ];
    let mut ports = free_ports(INSTANCES + 1);
    let listen = ports.pop().unwrap();
    let mut instances: Vec<Instance> = ports
        .iter()
        .map(|&port| Instance {
            dir: ScratchDir::new(),
            port,
            served: None,
        })
        .collect();
    // All three start at once, as a deployment's would.
    std::thread::scope(|scope| {
        for instance in &mut instances {
            let env = &env;
            scope.spawn(move || {
                instance.served = Some(Served::start_on(instance.dir.path(), env, instance.port));
            });
        }
    });

    let http = format!(
        "add_header X-Upstream $upstream_addr always;\n{}",
        documented_config(&ports, listen)
    );
    let lb = Nginx::start(
        listen,
        &http,
        "$status $request_method $request_uri upstream=$upstream_addr upstream_status=$upstream_status",
    );
    let base_url = lb.base_url.clone();
    let receiver = CallbackReceiver::start();
    let control = agent();
    for number in 0..CLIENTS {
        let (answer, _) = post(
            &control,
            &format!("{base_url}/api/v1/add_user"),
            &json!({ "user_id": format!("c{number}") }),
        );
        assert_eq!(answer.status, 201, "{answer:?}");
    }

    let progress = Progress::default();
    let stop = AtomicBool::new(false);
    let mut updates = Vec::new();
    let mut unknown_updates = 0;
    let mut update = || {
        let (id, unknown) = request_update(&control, &base_url, receiver.url());
        updates.push(id);
        unknown_updates += unknown;
    };
    let (killed, restarted) = (instances[0].address(), instances[1].address());
    let asked: Vec<Asked> = std::thread::scope(|scope| {
        // The clients stop however this ends: the scope waits for them before a failure here
        // is reported.
        let _stop = StopOnDrop(&stop);
        let clients: Vec<_> = (0..CLIENTS)
            .map(|number| {
                let (base_url, stop, progress) = (&base_url, &stop, &progress);
                scope.spawn(move || client(number, base_url, stop, progress))
            })
            .collect();

        progress.wait_for("the first decisions", |c| c.acked >= PHASE);
        update();
        progress.wait_for("decisions before the kill", |c| c.acked >= 2 * PHASE);
        // An update is likely under way or waiting when the instance dies.
        update();
        let status = instances[0].served.take().unwrap().kill_hard();
        assert!(!status.success(), "SIGKILL ends the process: {status}");

        progress.wait_for("decisions after the kill", |c| c.acked >= 3 * PHASE);
        update();
        let status = instances[1].served.take().unwrap().terminate();
        assert!(status.success(), "a SIGTERM'd instance exits 0: {status}");
        let before_restart = progress.counts(|c| c.by_instance.get(&restarted).copied());
        instances[1].served = Some(Served::start_on(
            instances[1].dir.path(),
            &env,
            instances[1].port,
        ));
        update();

        let target = progress.counts(|c| c.acked) + PHASE;
        progress.wait_for("decisions after the restart", |c| {
            c.acked >= target
                && c.by_instance.get(&restarted).copied().unwrap_or(0)
                    >= before_restart.unwrap_or(0) + AFTER_RESTART
        });
        stop.store(true, Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().expect("a client thread ends"))
            .collect()
    });

    // Every answer was a decision or a stored upload, nginx's own 502 or 504, a 503 in the
    // envelope or no answer (the last three asked again): never a 500, never anything else.
    let odd: Vec<&Asked> = asked
        .iter()
        .filter(|a| {
            a.answers
                .iter()
                .any(|answer| !matches!(answer.status, 200 | 201) && !worth_retrying(answer))
                || a.uploaded.is_none()
                || a.upload_answers.split_last().is_some_and(|(_, earlier)| {
                    earlier.iter().any(|answer| !worth_retrying(answer))
                })
        })
        .collect();
    assert!(odd.is_empty(), "unexpected answers: {odd:#?}");
    let unacked: Vec<&Asked> = asked.iter().filter(|a| a.acked.is_none()).collect();
    assert!(
        unacked.is_empty(),
        "decisions never acknowledged: {unacked:#?}"
    );

    // Every acknowledged decision is stored exactly once, as acknowledged, and nothing else is.
    let rows = sql_lines(
        &url,
        "SELECT user_id || ' ' || decision_idx || ' ' || action || ' ' || action_prob AS out \
         FROM actions",
    );
    let mut stored: HashMap<(String, i64), (i64, f64)> = HashMap::new();
    for row in &rows {
        let parts: Vec<&str> = row.split(' ').collect();
        let key = (parts[0].to_owned(), parts[1].parse().unwrap());
        let value = (parts[2].parse().unwrap(), parts[3].parse().unwrap());
        assert!(stored.insert(key, value).is_none(), "stored twice: {row}");
    }
    for a in &asked {
        assert_eq!(
            stored.get(&(a.user.clone(), a.idx)),
            a.acked.as_ref(),
            "decision ({}, {}) was acknowledged as {:?}; answers: {:?}",
            a.user,
            a.idx,
            a.acked,
            a.answers
        );
    }
    assert_eq!(
        stored.len(),
        asked.len(),
        "only decisions asked for are stored"
    );

    // Every acknowledged upload is stored exactly once, checked against its logged decision.
    let rows = sql_lines(
        &url,
        "SELECT user_id || ' ' || decision_idx || ' ' || CAST(action_logged AS TEXT) || ' ' \
         || (outcome ->> 'clicks') AS out FROM study_data",
    );
    let mut uploads: HashMap<(String, i64), i64> = HashMap::new();
    for row in &rows {
        let parts: Vec<&str> = row.split(' ').collect();
        assert_eq!(
            parts[2], "true",
            "an upload stored without its decision: {row}"
        );
        let key = (parts[0].to_owned(), parts[1].parse().unwrap());
        assert!(
            uploads.insert(key, parts[3].parse().unwrap()).is_none(),
            "uploaded twice: {row}"
        );
    }
    for a in &asked {
        assert_eq!(
            uploads.get(&(a.user.clone(), a.idx)),
            a.uploaded.as_ref(),
            "upload ({}, {}): {:?}",
            a.user,
            a.idx,
            a.upload_answers
        );
    }
    assert_eq!(uploads.len(), asked.len(), "only uploads sent are stored");

    // Each update accepted completed once, with its own parameter version, and said so in its
    // callback and in GET /update/{id}. Requests nginx answered for itself may have been stored
    // too: they are updates like the others.
    let mut called_back: BTreeMap<String, usize> = BTreeMap::new();
    let running = || {
        let unfinished = sql_lines(
            &url,
            "SELECT id || ' ' || status || ' ' || coalesce(error, '') AS out \
             FROM model_update_requests WHERE status <> 'completed'",
        );
        let failed: Vec<&String> = unfinished
            .iter()
            .filter(|line| !line.contains(" processing "))
            .collect();
        assert!(
            failed.is_empty(),
            "updates that did not complete: {failed:?}"
        );
        !unfinished.is_empty()
    };
    while updates.iter().any(|id| !called_back.contains_key(id)) || running() {
        let callback = receiver.next();
        assert_eq!(callback["status"], "completed", "{callback}");
        let id = callback["update_id"]
            .as_str()
            .expect("an update_id")
            .to_owned();
        *called_back.entry(id).or_default() += 1;
    }
    let requests: BTreeMap<String, i64> = sql_lines(
        &url,
        "SELECT id || ' ' || CAST(parameter_version AS TEXT) AS out FROM model_update_requests",
    )
    .iter()
    .map(|line| {
        let (id, version) = line.split_once(' ').unwrap();
        (id.to_owned(), version.parse().unwrap())
    })
    .collect();
    assert!(
        requests.len() <= updates.len() + unknown_updates,
        "{} update requests stored, {} accepted and {unknown_updates} unanswered",
        requests.len(),
        updates.len()
    );
    for id in &updates {
        let answer = get(&control, &format!("{base_url}/api/v1/update/{id}"));
        assert_eq!(answer.status, 200, "GET /update/{id}: {answer:?}");
        let status: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(status["update_status"], "completed", "{status}");
        assert_eq!(
            status["parameter_version"].as_i64(),
            requests.get(id).copied(),
            "{status}"
        );
    }
    let versions: BTreeSet<i64> = requests.values().copied().collect();
    let expected: BTreeSet<i64> = (2..=requests.len() as i64 + 1).collect();
    assert_eq!(versions, expected, "one version per update, no gaps");
    let published = sql_lines(
        &url,
        "SELECT CAST(version AS TEXT) AS out FROM model_parameters ORDER BY version",
    );
    assert_eq!(published.len(), requests.len() + 1, "{published:?}");
    let extra: Vec<&String> = called_back
        .keys()
        .filter(|id| !requests.contains_key(*id))
        .collect();
    assert!(extra.is_empty(), "callbacks for unknown updates: {extra:?}");

    // The load was shared: each instance acknowledged decisions.
    let by_instance = progress.counts(|c| c.by_instance.clone());
    for instance in &instances {
        assert!(
            by_instance.get(&instance.address()).copied().unwrap_or(0) > 0,
            "{} acknowledged no decision: {by_instance:?}",
            instance.address()
        );
    }

    let logs = lb.stop();
    let count = |status: u16| {
        asked
            .iter()
            .flat_map(|a| a.answers.iter().chain(&a.upload_answers))
            .filter(|answer| answer.status == status)
            .count()
    };
    let repeated_uploads = asked
        .iter()
        .filter(|a| a.upload_answers.last().is_some_and(|l| l.status == 400))
        .count();
    let resent = logs
        .access
        .lines()
        .filter(|line| line.contains("upstream=") && line.contains(", "))
        .count();
    let upstream_errors: BTreeMap<&str, usize> = logs
        .error
        .lines()
        .filter(|line| line.contains("[error]"))
        .filter_map(|line| line.split("upstream: \"http://").nth(1))
        .filter_map(|rest| rest.split('/').next())
        .fold(BTreeMap::new(), |mut counts, instance| {
            *counts.entry(instance).or_default() += 1;
            counts
        });
    let attempts = sql_lines(
        &url,
        "SELECT CAST(attempts AS TEXT) AS out FROM model_update_requests ORDER BY created_at",
    );
    eprintln!(
        "load balanced: {} decisions and their uploads: {} answered 201, {} 200, {} 502, \
         {} 503, {} 504, {} unanswered, {repeated_uploads} uploads stored by an earlier copy; \
         {resent} requests nginx passed to another instance, upstream errors nginx logged \
         {upstream_errors:?}; decisions per instance \
         (killed {killed}, restarted {restarted}): {by_instance:?}; {} updates accepted, \
         {unknown_updates} unanswered, attempts {attempts:?}, callbacks {called_back:?}",
        asked.len(),
        count(201),
        count(200),
        count(502),
        count(503),
        count(504),
        count(0),
        updates.len(),
    );
}
