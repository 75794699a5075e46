//! The load generator: a few threads (`--generator-threads`, default 1), each running an event
//! loop that drives its share of the keep-alive connections, as wrk does. Each connection is a
//! task sending one kind of request back to back until a deadline (or a request count), and
//! timing each request from the start of its write to the last byte of its answer. One thread
//! per connection with a blocking client cost more CPU per request than the service itself,
//! taken from the service and PostgreSQL on the same machine; see [`crate::http1`].
//!
//! Every request is unique: `/action` asks for fresh `(user_id, decision_idx)` pairs (a shared
//! counter `seq` gives user `seq % users` and index `seq / users`), `/upload_data` reports on
//! decisions the service answered earlier, with the action and probability it answered, and
//! `/add_user` registers fresh ids. The request is written into a buffer each connection keeps,
//! its answer read into another, and latencies go into a fixed-size [`Histogram`], so measuring
//! allocates nothing per request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{BenchError, Result};
use crate::hist::Histogram;
use crate::http1::{Answer, Conn, Endpoint};

/// The request timeout: a request still unanswered after this long counts as a transport
/// error (a hang), and its connection is replaced.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The `timestamp` every request sends (the service stores it; its value does not matter).
const TIMESTAMP: &str = "2025-01-01T12:00:00Z";
/// A connection gives up after this many transport errors in a row: the service is gone.
const GIVE_UP_AFTER: u32 = 50;
/// Error answers kept, per run, to show what went wrong.
const SAMPLES: usize = 3;
/// The prefix of the users every `/action` and `/upload_data` request names.
pub const USER_PREFIX: &str = "bench-user-";
/// The prefix of the users the `/add_user` runs register.
pub const NEW_USER_PREFIX: &str = "bench-new-";

/// A route the benchmark drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `POST /api/v1/action`.
    Action,
    /// `POST /api/v1/upload_data`.
    UploadData,
    /// `POST /api/v1/add_user`.
    AddUser,
    /// `GET /api/v1/users/{user_id}`.
    ShowUser,
}

impl Route {
    /// The path, as printed and requested.
    pub fn path(self) -> &'static str {
        match self {
            Self::Action => "/api/v1/action",
            Self::UploadData => "/api/v1/upload_data",
            Self::AddUser => "/api/v1/add_user",
            Self::ShowUser => "/api/v1/users/{user_id}",
        }
    }

    /// The status every request of the benchmark must get: each write is new, so each one is
    /// created (a repeated `/action` would answer 200, and that would mean the pairs were not
    /// unique); a read of a registered participant is 200.
    pub fn expected_status(self) -> u16 {
        match self {
            Self::ShowUser => 200,
            _ => 201,
        }
    }
}

/// A decision the service answered: what `/upload_data` must repeat to be accepted.
#[derive(Debug, Clone, Copy)]
pub struct Decision {
    user: u64,
    idx: u64,
    action: u8,
    action_prob: f64,
}

/// What one run sends. Its counters are shared by every connection of the run (and with the
/// caller, which reads where they stopped).
#[derive(Clone)]
pub enum Work {
    /// `/add_user` for `{prefix}{n}`, `n` taken from `next`, until `next` reaches `limit`
    /// (when given).
    AddUser {
        /// The id's prefix.
        prefix: &'static str,
        /// The next number to register.
        next: Arc<AtomicU64>,
        /// Stop once this number is reached.
        limit: Option<u64>,
    },
    /// `/action` for fresh pairs, `seq` taken from `next`, until it reaches `limit` (when
    /// given); the answers are kept for the uploads.
    Action {
        /// How many users are registered under [`USER_PREFIX`].
        users: u64,
        /// The next pair's sequence number.
        next: Arc<AtomicU64>,
        /// Stop once this sequence number is reached.
        limit: Option<u64>,
        /// Numeric context fields sent after `temperature`: `f1` to `f{extra_features}`.
        extra_features: usize,
    },
    /// `/upload_data` for the decisions of `pool`, in order from `cursor`; a connection stops
    /// when the pool is used up.
    UploadData {
        /// Decisions the service answered and nobody uploaded yet (from `cursor` on).
        pool: Arc<[Decision]>,
        /// The next decision to upload.
        cursor: Arc<AtomicUsize>,
    },
    /// `GET /api/v1/users/{USER_PREFIX}{n % users}`, `n` taken from `next`, until the deadline.
    ShowUser {
        /// How many users are registered under [`USER_PREFIX`].
        users: u64,
        /// The next request's number.
        next: Arc<AtomicU64>,
    },
}

impl Work {
    fn route(&self) -> Route {
        match self {
            Self::AddUser { .. } => Route::AddUser,
            Self::Action { .. } => Route::Action,
            Self::UploadData { .. } => Route::UploadData,
            Self::ShowUser { .. } => Route::ShowUser,
        }
    }
}

/// How long a run lasts.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Requests started before this much time has passed are not counted in the figures.
    pub warmup: Duration,
    /// Requests started in this window after the warm-up are the figures; none starts after.
    /// `None`: run until the work's limit instead, counting everything.
    pub measure: Option<Duration>,
}

/// What a run measured.
#[derive(Debug)]
pub struct RunResult {
    /// The route driven.
    pub route: Route,
    /// Connections.
    pub concurrency: usize,
    /// The length of the measured window in seconds (for a count-limited run: the whole run).
    pub window_secs: f64,
    /// Latencies of the requests started in the window, in microseconds.
    pub latencies: Histogram,
    /// Requests sent in the whole run, warm-up included.
    pub total_requests: u64,
    /// Answers with the expected status (201: something was stored; 200 for a read) in the
    /// whole run.
    pub created: u64,
    /// Answers outside 2xx, by status, over the whole run.
    pub non_2xx: BTreeMap<u16, u64>,
    /// 2xx answers other than the expected status, or expected ones that could not be read.
    pub unexpected: u64,
    /// Requests that got no answer (connection refused or reset, timeout).
    pub transport_errors: u64,
    /// The first few failures, for the report.
    pub samples: Vec<String>,
    /// The decisions `/action` answered.
    pub decisions: Vec<Decision>,
    /// An upload connection found the pool of decisions used up before its deadline.
    pub exhausted: bool,
}

impl RunResult {
    /// Requests per second in the measured window.
    pub fn rate(&self) -> f64 {
        if self.window_secs > 0.0 {
            self.latencies.count() as f64 / self.window_secs
        } else {
            0.0
        }
    }

    /// Non-2xx answers over the whole run.
    pub fn non_2xx_count(&self) -> u64 {
        self.non_2xx.values().sum()
    }
}

/// What `/action` answers that the uploads need.
#[derive(Deserialize)]
struct ActionAnswer {
    action: u8,
    action_prob: f64,
}

/// Drives `work` against the service at `base_url` over `concurrency` connections, shared out
/// among `threads` event loops (at most one per connection).
///
/// # Errors
///
/// When `base_url` is not a plain `http://host:port` URL; failed requests are counted in the
/// result instead.
pub fn run(
    base_url: &str,
    work: &Work,
    concurrency: usize,
    threads: usize,
    timing: Timing,
) -> Result<RunResult> {
    let route = work.route();
    let endpoint = Arc::new(Endpoint::new(base_url, route.path()).map_err(BenchError)?);
    let threads = threads.clamp(1, concurrency.max(1));
    let start = Instant::now();
    let warm_end = start + timing.warmup;
    let deadline = timing.measure.map(|m| warm_end + m);
    let endpoint = &endpoint;
    let outputs: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let connections = concurrency / threads + usize::from(t < concurrency % threads);
                scope.spawn(move || event_loop(endpoint, work, connections, warm_end, deadline))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join().unwrap_or_else(|_| {
                    vec![Worker::failed("a load generator thread panicked".into())]
                })
            })
            .collect()
    });
    let finished = Instant::now();
    let window_secs = match timing.measure {
        Some(m) => m.as_secs_f64(),
        None => finished.duration_since(start).as_secs_f64(),
    };
    let mut result = RunResult {
        route,
        concurrency,
        window_secs,
        latencies: Histogram::new(),
        total_requests: 0,
        created: 0,
        non_2xx: BTreeMap::new(),
        unexpected: 0,
        transport_errors: 0,
        samples: Vec::new(),
        decisions: Vec::new(),
        exhausted: false,
    };
    for out in outputs {
        result.latencies.merge(&out.latencies);
        result.total_requests += out.total;
        result.created += out.created;
        for (status, count) in out.non_2xx {
            *result.non_2xx.entry(status).or_default() += count;
        }
        result.unexpected += out.unexpected;
        result.transport_errors += out.transport_errors;
        for sample in out.samples {
            if result.samples.len() < SAMPLES {
                result.samples.push(sample);
            }
        }
        result.decisions.extend(out.decisions);
        result.exhausted |= out.exhausted;
    }
    Ok(result)
}

/// One connection's share of a run.
struct Worker {
    latencies: Histogram,
    total: u64,
    created: u64,
    non_2xx: BTreeMap<u16, u64>,
    unexpected: u64,
    transport_errors: u64,
    samples: Vec<String>,
    decisions: Vec<Decision>,
    exhausted: bool,
}

impl Worker {
    fn new() -> Self {
        Self {
            latencies: Histogram::new(),
            total: 0,
            created: 0,
            non_2xx: BTreeMap::new(),
            unexpected: 0,
            transport_errors: 0,
            samples: Vec::new(),
            decisions: Vec::new(),
            exhausted: false,
        }
    }

    /// A connection or thread that could not run (it panicked, or its event loop could not
    /// start) counts as one transport error, so the run fails.
    fn failed(why: String) -> Self {
        let mut worker = Self::new();
        worker.transport_errors = 1;
        worker.samples.push(why);
        worker
    }

    fn sample(&mut self, text: String) {
        if self.samples.len() < SAMPLES {
            self.samples.push(text);
        }
    }
}

/// What the next request is about.
enum Next {
    AddUser(u64),
    Action { user: u64, idx: u64 },
    Upload(Decision),
    ShowUser(u64),
}

fn claim(work: &Work) -> Option<Next> {
    match work {
        Work::AddUser { next, limit, .. } => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            limit.is_none_or(|l| n < l).then_some(Next::AddUser(n))
        }
        Work::Action {
            users, next, limit, ..
        } => {
            let seq = next.fetch_add(1, Ordering::Relaxed);
            let users = (*users).max(1);
            limit.is_none_or(|l| seq < l).then_some(Next::Action {
                user: seq % users,
                idx: seq / users,
            })
        }
        Work::UploadData { pool, cursor } => {
            let at = cursor.fetch_add(1, Ordering::Relaxed);
            pool.get(at).copied().map(Next::Upload)
        }
        Work::ShowUser { users, next } => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            Some(Next::ShowUser(n % (*users).max(1)))
        }
    }
}

/// A temperature in tenths of a degree between 15.0 and 34.9, written without floating point.
fn write_temperature(body: &mut String, n: u64) {
    let tenths = 150 + n % 200;
    write!(body, "{}.{}", tenths / 10, tenths % 10).ok();
}

fn write_body(body: &mut String, work: &Work, next: &Next) {
    body.clear();
    match next {
        Next::AddUser(n) => {
            let prefix = match work {
                Work::AddUser { prefix, .. } => prefix,
                _ => NEW_USER_PREFIX,
            };
            write!(body, r#"{{"user_id":"{prefix}{n}"}}"#).ok();
        }
        Next::Action { user, idx } => {
            write!(
                body,
                r#"{{"user_id":"{USER_PREFIX}{user}","timestamp":"{TIMESTAMP}","decision_idx":{idx},"context":{{"temperature":"#
            )
            .ok();
            write_temperature(body, user + idx);
            let extra = match work {
                Work::Action { extra_features, .. } => *extra_features,
                _ => 0,
            };
            for k in 1..=extra {
                write!(body, r#","f{k}":"#).ok();
                write_temperature(body, user + idx + 7 * k as u64);
            }
            body.push_str("}}");
        }
        Next::Upload(d) => {
            write!(
                body,
                r#"{{"user_id":"{USER_PREFIX}{}","timestamp":"{TIMESTAMP}","decision_idx":{},"data":{{"context":{{"temperature":"#,
                d.user, d.idx
            )
            .ok();
            write_temperature(body, d.user + d.idx);
            // The logged action and probability, exactly as answered (`{}` on f64 writes the
            // shortest text that reads back as the same number).
            write!(
                body,
                r#"}},"action":{},"action_prob":{},"state":["#,
                d.action, d.action_prob
            )
            .ok();
            write_temperature(body, d.user + d.idx);
            write!(body, r#"],"outcome":{{"clicks":{}}}}}}}"#, d.idx % 10).ok();
        }
        // A GET has no body: this is its path (the ids need no percent-encoding).
        Next::ShowUser(user) => {
            write!(body, "/api/v1/users/{USER_PREFIX}{user}").ok();
        }
    }
}

/// One generator thread: an event loop driving `connections` connections until they all stop.
fn event_loop(
    endpoint: &Arc<Endpoint>,
    work: &Work,
    connections: usize,
    warm_end: Instant,
    deadline: Option<Instant>,
) -> Vec<Worker> {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return vec![Worker::failed(format!("cannot start an event loop: {e}"))],
    };
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..connections {
            tasks.spawn(drive(
                Arc::clone(endpoint),
                work.clone(),
                warm_end,
                deadline,
            ));
        }
        let mut outputs = Vec::with_capacity(connections);
        while let Some(joined) = tasks.join_next().await {
            outputs.push(joined.unwrap_or_else(|e| {
                Worker::failed(format!("a load generator connection failed: {e}"))
            }));
        }
        outputs
    })
}

/// Sends `request` on `conn`, opening a connection first when there is none.
async fn send(
    endpoint: &Endpoint,
    conn: &mut Option<Conn>,
    request: &[u8],
) -> std::result::Result<Answer, String> {
    let open = match conn {
        Some(open) => open,
        None => conn.insert(
            Conn::open(endpoint.addr)
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", endpoint.addr))?,
        ),
    };
    open.exchange(request).await
}

/// One connection: requests back to back until the deadline, the work's end, or too many
/// transport errors in a row.
async fn drive(
    endpoint: Arc<Endpoint>,
    work: Work,
    warm_end: Instant,
    deadline: Option<Instant>,
) -> Worker {
    let route = work.route();
    let mut out = Worker::new();
    let mut body = String::with_capacity(512);
    let mut request = Vec::with_capacity(1024);
    let mut conn = None;
    let mut failures_in_a_row = 0;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let Some(next) = claim(&work) else {
            out.exhausted = matches!(work, Work::UploadData { .. }) && deadline.is_some();
            break;
        };
        write_body(&mut body, &work, &next);
        match next {
            Next::ShowUser(_) => endpoint.get(body.as_bytes(), &mut request),
            _ => endpoint.request(body.as_bytes(), &mut request),
        }
        let started = Instant::now();
        let sent = tokio::time::timeout(REQUEST_TIMEOUT, send(&endpoint, &mut conn, &request))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())));
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.total += 1;
        if started >= warm_end || deadline.is_none() {
            out.latencies.record(micros);
        }
        match sent {
            Ok(answer) => {
                failures_in_a_row = 0;
                let answer_body = conn.as_ref().map_or(&[][..], Conn::body);
                tally(&mut out, route, &next, answer.status, answer_body);
                if answer.closes {
                    conn = None;
                }
            }
            Err(e) => {
                // The connection is in an unknown state (a timeout may have left it halfway
                // through an answer): the next request opens a new one.
                conn = None;
                out.transport_errors += 1;
                out.sample(format!("{} failed: {e}", route.path()));
                failures_in_a_row += 1;
                if failures_in_a_row >= GIVE_UP_AFTER {
                    out.sample(format!(
                        "gave up after {GIVE_UP_AFTER} transport errors in a row"
                    ));
                    break;
                }
            }
        }
    }
    out
}

/// Counts an answer with `status` and `answer` as its body, and keeps the decision `/action`
/// made.
fn tally(out: &mut Worker, route: Route, next: &Next, status: u16, answer: &[u8]) {
    let expected = route.expected_status();
    if !(200..300).contains(&status) {
        *out.non_2xx.entry(status).or_default() += 1;
        let text = String::from_utf8_lossy(answer);
        out.sample(format!("{} answered {status}: {text}", route.path()));
        return;
    }
    if status != expected {
        out.unexpected += 1;
        let text = String::from_utf8_lossy(answer);
        out.sample(format!(
            "{} answered {status} (expected {expected}): {text}",
            route.path()
        ));
        return;
    }
    out.created += 1;
    if let Next::Action { user, idx } = *next {
        match serde_json::from_slice::<ActionAnswer>(answer) {
            Ok(a) => out.decisions.push(Decision {
                user,
                idx,
                action: a.action,
                action_prob: a.action_prob,
            }),
            Err(e) => {
                out.unexpected += 1;
                out.sample(format!(
                    "/action answered {status} without action and action_prob ({e})"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_json_the_api_documents() {
        let next = Arc::new(AtomicU64::new(0));
        let work = Work::Action {
            users: 10,
            next: Arc::clone(&next),
            limit: None,
            extra_features: 0,
        };
        let mut body = String::new();
        write_body(&mut body, &work, &Next::Action { user: 3, idx: 7 });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["user_id"], "bench-user-3");
        assert_eq!(v["decision_idx"], 7);
        assert_eq!(v["context"], serde_json::json!({ "temperature": 16.0 }));
        let wide = Work::Action {
            users: 10,
            next: Arc::clone(&next),
            limit: None,
            extra_features: 9,
        };
        write_body(&mut body, &wide, &Next::Action { user: 3, idx: 7 });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let context = v["context"].as_object().unwrap();
        assert_eq!(context.len(), 10);
        assert_eq!(context["temperature"], 16.0);
        assert_eq!(context["f1"], 16.7);
        assert_eq!(context["f9"], 22.3);

        let upload = Decision {
            user: 3,
            idx: 7,
            action: 1,
            action_prob: 0.30000000000000004,
        };
        write_body(&mut body, &work, &Next::Upload(upload));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["action"], 1);
        assert_eq!(v["data"]["action_prob"].as_f64(), Some(0.30000000000000004));
        assert_eq!(v["data"]["state"][0], 16.0);
        assert_eq!(v["data"]["outcome"]["clicks"], 7);

        let users = Work::AddUser {
            prefix: "p-",
            next,
            limit: None,
        };
        write_body(&mut body, &users, &Next::AddUser(12));
        assert_eq!(body, r#"{"user_id":"p-12"}"#);

        let reads = Work::ShowUser {
            users: 10,
            next: Arc::new(AtomicU64::new(0)),
        };
        write_body(&mut body, &reads, &Next::ShowUser(4));
        assert_eq!(body, "/api/v1/users/bench-user-4");
    }

    #[test]
    fn reads_cycle_over_the_registered_users() {
        let work = Work::ShowUser {
            users: 3,
            next: Arc::new(AtomicU64::new(2)),
        };
        let users: Vec<u64> = (0..4)
            .filter_map(|_| match claim(&work) {
                Some(Next::ShowUser(user)) => Some(user),
                _ => None,
            })
            .collect();
        assert_eq!(users, [2, 0, 1, 2]);
        assert_eq!(Route::ShowUser.expected_status(), 200);
        assert_eq!(Route::Action.expected_status(), 201);
    }

    #[test]
    fn action_pairs_are_unique_and_spread_over_the_users() {
        let work = Work::Action {
            users: 4,
            next: Arc::new(AtomicU64::new(0)),
            limit: Some(12),
            extra_features: 0,
        };
        let mut pairs = std::collections::HashSet::new();
        while let Some(Next::Action { user, idx }) = claim(&work) {
            assert!(user < 4);
            assert!(pairs.insert((user, idx)));
        }
        assert_eq!(pairs.len(), 12);
    }

    #[test]
    fn answers_are_counted_as_now_and_decisions_kept_from_action() {
        let mut out = Worker::new();
        let pair = Next::Action { user: 2, idx: 5 };
        tally(
            &mut out,
            Route::Action,
            &pair,
            201,
            br#"{"action":1,"action_prob":0.25}"#,
        );
        tally(&mut out, Route::Action, &pair, 201, br#"{"status":"ok"}"#);
        tally(&mut out, Route::Action, &pair, 200, b"{}");
        tally(&mut out, Route::Action, &pair, 503, b"busy");
        assert_eq!(out.created, 2);
        assert_eq!(out.unexpected, 2);
        assert_eq!(out.non_2xx.get(&503), Some(&1));
        assert_eq!(out.decisions.len(), 1);
        assert_eq!(
            (out.decisions[0].action, out.decisions[0].action_prob),
            (1, 0.25)
        );
        assert_eq!(out.samples.len(), SAMPLES);
    }

    #[test]
    fn a_service_that_is_gone_gives_transport_errors_not_a_hang() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let work = Work::AddUser {
            prefix: "p-",
            next: Arc::new(AtomicU64::new(0)),
            limit: Some(10),
        };
        let timing = Timing {
            warmup: Duration::ZERO,
            measure: None,
        };
        let result = run(&format!("http://{addr}"), &work, 3, 2, timing).unwrap();
        assert_eq!((result.total_requests, result.transport_errors), (10, 10));
        assert_eq!(result.created, 0);
        assert!(
            result.samples[0].contains("cannot connect"),
            "{:?}",
            result.samples
        );
    }

    #[test]
    fn uploads_stop_when_the_pool_is_used_up() {
        let work = Work::UploadData {
            pool: Arc::new([Decision {
                user: 0,
                idx: 0,
                action: 0,
                action_prob: 0.5,
            }]),
            cursor: Arc::new(AtomicUsize::new(0)),
        };
        assert!(claim(&work).is_some());
        assert!(claim(&work).is_none());
    }
}
