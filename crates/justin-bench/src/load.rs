//! The load generator: one thread per connection, each with its own keep-alive `ureq` agent,
//! sending one kind of request back to back until a deadline (or a request count), and timing
//! each request from before it is sent to after its whole answer is read.
//!
//! Every request is unique: `/action` asks for fresh `(user_id, decision_idx)` pairs (a shared
//! counter `seq` gives user `seq % users` and index `seq / users`), `/upload_data` reports on
//! decisions the service answered earlier, with the action and probability it answered, and
//! `/add_user` registers fresh ids. The request body is written into a buffer each thread keeps,
//! and latencies go into a fixed-size [`Histogram`], so measuring allocates nothing per request
//! beyond what the HTTP client itself does.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::error::{fail, Result};
use crate::hist::Histogram;

/// The request timeout: a request still unanswered after this long counts as a transport
/// error (a hang), and its thread carries on.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The `timestamp` every request sends (the service stores it; its value does not matter).
const TIMESTAMP: &str = "2025-01-01T12:00:00Z";
/// A thread gives up after this many transport errors in a row: the service is gone.
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
}

impl Route {
    /// The path, as printed and requested.
    pub fn path(self) -> &'static str {
        match self {
            Self::Action => "/api/v1/action",
            Self::UploadData => "/api/v1/upload_data",
            Self::AddUser => "/api/v1/add_user",
        }
    }

    /// The status every request of the benchmark must get: each one is new, so each one is
    /// created (a repeated `/action` would answer 200, and that would mean the pairs were not
    /// unique).
    pub fn expected_status(self) -> u16 {
        201
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

/// What one run sends.
pub enum Work<'a> {
    /// `/add_user` for `{prefix}{n}`, `n` taken from `next`, until `next` reaches `limit`
    /// (when given).
    AddUser {
        /// The id's prefix.
        prefix: &'static str,
        /// The next number to register.
        next: &'a AtomicU64,
        /// Stop once this number is reached.
        limit: Option<u64>,
    },
    /// `/action` for fresh pairs, `seq` taken from `next`, until it reaches `limit` (when
    /// given); the answers are kept for the uploads.
    Action {
        /// How many users are registered under [`USER_PREFIX`].
        users: u64,
        /// The next pair's sequence number.
        next: &'a AtomicU64,
        /// Stop once this sequence number is reached.
        limit: Option<u64>,
    },
    /// `/upload_data` for the decisions of `pool`, in order from `cursor`; a thread stops when
    /// the pool is used up.
    UploadData {
        /// Decisions the service answered and nobody uploaded yet (from `cursor` on).
        pool: &'a [Decision],
        /// The next decision to upload.
        cursor: &'a AtomicUsize,
    },
}

impl Work<'_> {
    fn route(&self) -> Route {
        match self {
            Self::AddUser { .. } => Route::AddUser,
            Self::Action { .. } => Route::Action,
            Self::UploadData { .. } => Route::UploadData,
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
    /// Connections (threads).
    pub concurrency: usize,
    /// The length of the measured window in seconds (for a count-limited run: the whole run).
    pub window_secs: f64,
    /// Latencies of the requests started in the window, in microseconds.
    pub latencies: Histogram,
    /// Requests sent in the whole run, warm-up included.
    pub total_requests: u64,
    /// Answers with the expected status (201: something was stored) in the whole run.
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
    /// An upload thread found the pool of decisions used up before its deadline.
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

/// Drives `work` against the service at `base_url` with `concurrency` threads.
pub fn run(
    base_url: &str,
    work: &Work<'_>,
    concurrency: usize,
    timing: Timing,
) -> Result<RunResult> {
    let route = work.route();
    let uri: ureq::http::Uri = match format!("{base_url}{}", route.path()).parse() {
        Ok(uri) => uri,
        Err(e) => return fail(format!("{base_url}{} is not a URL: {e}", route.path())),
    };
    let start = Instant::now();
    let warm_end = start + timing.warmup;
    let deadline = timing.measure.map(|m| warm_end + m);
    let outputs: Vec<Worker> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..concurrency)
            .map(|_| {
                let uri = uri.clone();
                scope.spawn(move || drive(uri, work, warm_end, deadline))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Worker::panicked()))
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

/// One thread's share of a run.
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

    /// A thread that panicked counts as one transport error, so the run fails.
    fn panicked() -> Self {
        let mut worker = Self::new();
        worker.transport_errors = 1;
        worker
            .samples
            .push("a load generator thread panicked".into());
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
}

fn claim(work: &Work<'_>) -> Option<Next> {
    match work {
        Work::AddUser { next, limit, .. } => {
            let n = next.fetch_add(1, Ordering::Relaxed);
            limit.is_none_or(|l| n < l).then_some(Next::AddUser(n))
        }
        Work::Action { users, next, limit } => {
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
    }
}

/// A temperature in tenths of a degree between 15.0 and 34.9, written without floating point.
fn write_temperature(body: &mut String, n: u64) {
    let tenths = 150 + n % 200;
    write!(body, "{}.{}", tenths / 10, tenths % 10).ok();
}

fn write_body(body: &mut String, work: &Work<'_>, next: &Next) {
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
    }
}

fn drive(
    uri: ureq::http::Uri,
    work: &Work<'_>,
    warm_end: Instant,
    deadline: Option<Instant>,
) -> Worker {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_idle_connections(1)
        .max_idle_connections_per_host(1)
        .build()
        .into();
    let expected = work.route().expected_status();
    let mut out = Worker::new();
    let mut body = String::with_capacity(512);
    let mut answer = Vec::with_capacity(1024);
    let mut failures_in_a_row = 0;
    loop {
        let started = Instant::now();
        if deadline.is_some_and(|d| started >= d) {
            break;
        }
        let Some(next) = claim(work) else {
            out.exhausted = matches!(work, Work::UploadData { .. }) && deadline.is_some();
            break;
        };
        write_body(&mut body, work, &next);
        answer.clear();
        let sent = agent
            .post(uri.clone())
            .header("content-type", "application/json")
            .send(body.as_bytes());
        let status = match sent {
            Ok(mut response) => {
                let status = response.status().as_u16();
                match response.body_mut().as_reader().read_to_end(&mut answer) {
                    Ok(_) => Some(status),
                    Err(e) => {
                        out.sample(format!("{} reading the answer: {e}", work.route().path()));
                        None
                    }
                }
            }
            Err(e) => {
                out.sample(format!("{} got no answer: {e}", work.route().path()));
                None
            }
        };
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        out.total += 1;
        if started >= warm_end || deadline.is_none() {
            out.latencies.record(micros);
        }
        let Some(status) = status else {
            out.transport_errors += 1;
            failures_in_a_row += 1;
            if failures_in_a_row >= GIVE_UP_AFTER {
                out.sample(format!(
                    "gave up after {GIVE_UP_AFTER} transport errors in a row"
                ));
                break;
            }
            continue;
        };
        failures_in_a_row = 0;
        if !(200..300).contains(&status) {
            *out.non_2xx.entry(status).or_default() += 1;
            let text = String::from_utf8_lossy(&answer);
            out.sample(format!("{} answered {status}: {text}", work.route().path()));
            continue;
        }
        if status != expected {
            out.unexpected += 1;
            let text = String::from_utf8_lossy(&answer);
            out.sample(format!(
                "{} answered {status} (expected {expected}): {text}",
                work.route().path()
            ));
            continue;
        }
        out.created += 1;
        if let Next::Action { user, idx } = next {
            match serde_json::from_slice::<ActionAnswer>(&answer) {
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
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_the_json_the_api_documents() {
        let next = AtomicU64::new(0);
        let work = Work::Action {
            users: 10,
            next: &next,
            limit: None,
        };
        let mut body = String::new();
        write_body(&mut body, &work, &Next::Action { user: 3, idx: 7 });
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["user_id"], "bench-user-3");
        assert_eq!(v["decision_idx"], 7);
        assert_eq!(v["context"]["temperature"], 16.0);

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
            next: &next,
            limit: None,
        };
        write_body(&mut body, &users, &Next::AddUser(12));
        assert_eq!(body, r#"{"user_id":"p-12"}"#);
    }

    #[test]
    fn action_pairs_are_unique_and_spread_over_the_users() {
        let next = AtomicU64::new(0);
        let work = Work::Action {
            users: 4,
            next: &next,
            limit: Some(12),
        };
        let mut pairs = std::collections::HashSet::new();
        while let Some(Next::Action { user, idx }) = claim(&work) {
            assert!(user < 4);
            assert!(pairs.insert((user, idx)));
        }
        assert_eq!(pairs.len(), 12);
    }

    #[test]
    fn uploads_stop_when_the_pool_is_used_up() {
        let pool = [Decision {
            user: 0,
            idx: 0,
            action: 0,
            action_prob: 0.5,
        }];
        let cursor = AtomicUsize::new(0);
        let work = Work::UploadData {
            pool: &pool,
            cursor: &cursor,
        };
        assert!(claim(&work).is_some());
        assert!(claim(&work).is_none());
    }
}
