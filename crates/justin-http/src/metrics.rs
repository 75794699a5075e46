//! The service's metrics, exposed at `GET /metrics` in the Prometheus text format (the
//! OpenMetrics text that Prometheus scrapes), through the Prometheus project's own Rust client.
//!
//! [`Metrics`] holds every family. The HTTP layer counts requests (`request_metrics.rs`),
//! decisions and uploads (their handlers); the core tells it how updates and callbacks went, and
//! the store how long pool checkouts waited, through the [`Telemetry`] port it implements. With
//! `[metrics] enabled = false` none of this exists: nothing is counted and `/metrics` answers
//! 404.
//!
//! No label or value identifies a participant or holds study data: routes are their matched
//! patterns (`/api/v1/users/{user_id}`, never the path sent), and the other labels are fixed
//! words.

use std::time::Duration;

use chrono::{DateTime, Utc};
use justin_core::{ActionResponse, Availability, CallbackStatus, Policy, Telemetry, UpdateEnd};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};

/// `[metrics]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether the service counts and serves `/metrics`.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl MetricsConfig {
    /// Whether every setting is the default (the section is then left out of the
    /// configuration's fingerprint, which predates it).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The media type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request's labels: method, matched route pattern and status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// A request's latency labels: method and matched route pattern.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

/// One fixed word: a decision's kind, an upload's, update's or callback's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    // 0.5 ms to about 4 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 14))
}

fn update_histogram() -> Histogram {
    // 0.1 s to about 27 min.
    Histogram::new(exponential_buckets(0.1, 4.0, 8))
}

/// Every metric the service keeps, and the registry that writes them out.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RouteLabels>,
    decisions: Family<KindLabel, Counter>,
    uploads: Family<OutcomeLabel, Counter>,
    late_uploads: Counter,
    updates: Family<OutcomeLabel, Counter>,
    update_seconds: HistogramFamily<OutcomeLabel>,
    update_rows_read: Counter,
    callback_deliveries: Family<OutcomeLabel, Counter>,
    callback_retries: Counter,
    pool_wait: Histogram,
    pool_timeouts: Counter,
    parameter_version: Gauge,
    decisions_in_progress: Gauge,
    /// An upload received later than this after its decision time is late.
    outcome_due: chrono::Duration,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("outcome_due", &self.outcome_due)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every family, registered, at zero; an upload more than `outcome_due` after its
    /// decision time counts as late.
    pub fn new(outcome_due: Duration) -> Self {
        let mut registry = Registry::with_prefix("justin");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, matched route pattern and status",
            requests.clone(),
        );
        let request_seconds: HistogramFamily<RouteLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register_with_unit(
            "http_request_duration",
            "Time from a request's arrival to its response's head, by method and route",
            Unit::Seconds,
            request_seconds.clone(),
        );
        let decisions = Family::<KindLabel, Counter>::default();
        registry.register(
            "decisions",
            "Decisions answered by /action and /host_decision, by kind: learned (the \
             algorithm), warmup, fallback, host, unavailable (no draw), repeated (the stored \
             decision returned again)",
            decisions.clone(),
        );
        let uploads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "uploads",
            "Uploads by outcome: stored, or refused (409: they contradict the logged decision)",
            uploads.clone(),
        );
        let late_uploads = Counter::default();
        registry.register(
            "late_uploads",
            "Uploads stored more than monitor.outcome_due_mins after the decision time they name",
            late_uploads.clone(),
        );
        let updates = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "updates",
            "Model updates run by this instance, by outcome: completed, failed, requeued (put \
             back at shutdown), interrupted (the database was lost; claimed again later)",
            updates.clone(),
        );
        let update_seconds: HistogramFamily<OutcomeLabel> =
            Family::new_with_constructor(update_histogram);
        registry.register_with_unit(
            "update_duration",
            "Time from an update's claim to its outcome stored, by outcome",
            Unit::Seconds,
            update_seconds.clone(),
        );
        let update_rows_read = Counter::default();
        registry.register(
            "update_rows_read",
            "Study records read by the updates this instance ran",
            update_rows_read.clone(),
        );
        let callback_deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "callback_deliveries",
            "Update callbacks whose delivery ended, by outcome: delivered, failed (every \
             attempt failed), pending (left for a later pass at shutdown)",
            callback_deliveries.clone(),
        );
        let callback_retries = Counter::default();
        registry.register(
            "callback_retries",
            "Callback POSTs after a delivery's first attempt",
            callback_retries.clone(),
        );
        let pool_wait = Histogram::new(exponential_buckets(0.0001, 4.0, 8));
        registry.register_with_unit(
            "pool_wait",
            "Time a caller waited for a database connection from the pool",
            Unit::Seconds,
            pool_wait.clone(),
        );
        let pool_timeouts = Counter::default();
        registry.register(
            "pool_timeouts",
            "Waits for a pooled database connection that gave up at the pool's timeout",
            pool_timeouts.clone(),
        );
        let parameter_version = Gauge::default();
        registry.register(
            "parameter_version",
            "The parameter version this instance draws decisions from",
            parameter_version.clone(),
        );
        let decisions_in_progress = Gauge::default();
        registry.register(
            "decisions_in_progress",
            "Requests to /action waiting for their decision: being decided, waiting for a \
             decision thread, or waiting for the transaction that writes it",
            decisions_in_progress.clone(),
        );
        // The fixed outcomes are shown from the start, at zero, so a rate is defined before
        // the first one happens.
        for kind in ["stored", "refused"] {
            uploads
                .get_or_create(&OutcomeLabel { outcome: kind })
                .inc_by(0);
        }
        for end in [
            UpdateEnd::Completed,
            UpdateEnd::Failed,
            UpdateEnd::Requeued,
            UpdateEnd::Interrupted,
        ] {
            updates
                .get_or_create(&OutcomeLabel {
                    outcome: end.as_str(),
                })
                .inc_by(0);
        }
        for kind in DECISION_KINDS {
            decisions.get_or_create(&KindLabel { kind }).inc_by(0);
        }
        Self {
            registry,
            requests,
            request_seconds,
            decisions,
            uploads,
            late_uploads,
            updates,
            update_seconds,
            update_rows_read,
            callback_deliveries,
            callback_retries,
            pool_wait,
            pool_timeouts,
            parameter_version,
            decisions_in_progress,
            outcome_due: chrono::Duration::from_std(outcome_due).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Counts one answered request; `route` is the matched route's pattern (empty when none
    /// matched).
    pub fn request(
        &self,
        method: &actix_web::http::Method,
        route: &str,
        status: u16,
        took: Duration,
    ) {
        let method = method_label(method);
        let route = if route.is_empty() { UNMATCHED } else { route };
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method,
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a decision answered by `/action` or `/host_decision`.
    pub fn decision(&self, answer: &ActionResponse) {
        self.decisions
            .get_or_create(&KindLabel {
                kind: decision_kind(answer),
            })
            .inc();
    }

    /// Counts a request to `/action` in progress until the returned value is dropped (also
    /// when its client goes away first).
    pub fn decision_in_progress(&self) -> InProgress {
        self.decisions_in_progress.inc();
        InProgress(self.decisions_in_progress.clone())
    }

    /// Counts an upload stored at `received_at` for the decision time `decision_time`.
    pub fn upload_stored(&self, decision_time: DateTime<Utc>, received_at: DateTime<Utc>) {
        self.uploads
            .get_or_create(&OutcomeLabel { outcome: "stored" })
            .inc();
        if received_at.signed_duration_since(decision_time) > self.outcome_due {
            self.late_uploads.inc();
        }
    }

    /// Counts an upload refused with 409.
    pub fn upload_refused(&self) {
        self.uploads
            .get_or_create(&OutcomeLabel { outcome: "refused" })
            .inc();
    }

    /// Sets the parameter version this instance draws from.
    pub fn set_parameter_version(&self, version: i64) {
        self.parameter_version.set(version);
    }

    /// Every metric in the text format.
    ///
    /// # Errors
    /// Only when writing into the string fails, which it does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

impl Telemetry for Metrics {
    fn update_ended(&self, end: UpdateEnd, duration: Duration, rows_read: u64) {
        let label = OutcomeLabel {
            outcome: end.as_str(),
        };
        self.updates.get_or_create(&label).inc();
        self.update_seconds
            .get_or_create(&label)
            .observe(duration.as_secs_f64());
        self.update_rows_read.inc_by(rows_read);
    }

    fn callback_retried(&self) {
        self.callback_retries.inc();
    }

    fn callback_ended(&self, status: CallbackStatus) {
        self.callback_deliveries
            .get_or_create(&OutcomeLabel {
                outcome: status.as_str(),
            })
            .inc();
    }

    fn pool_checkout(&self, waited: Duration) {
        self.pool_wait.observe(waited.as_secs_f64());
    }

    fn pool_timeout(&self) {
        self.pool_timeouts.inc();
    }
}

/// The route label of a request that matched no route.
const UNMATCHED: &str = "unmatched";

/// The decision kinds, as labelled.
const DECISION_KINDS: [&str; 6] = [
    "learned",
    "warmup",
    "fallback",
    "host",
    "unavailable",
    "repeated",
];

/// What kind of decision an answer is: a repeat first, then no draw, then the policy.
fn decision_kind(answer: &ActionResponse) -> &'static str {
    if !answer.created {
        return "repeated";
    }
    if answer.decision.availability != Availability::Available {
        return "unavailable";
    }
    match answer.decision.policy {
        Policy::Algorithm => "learned",
        Policy::Warmup => "warmup",
        Policy::Fallback { .. } => "fallback",
        Policy::Host { .. } => "host",
    }
}

/// The method as a label: the standard ones by name, any other as `other` (a client can send
/// any token as a method, and labels must stay few).
fn method_label(method: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// One request counted in `justin_decisions_in_progress` while it lives.
#[derive(Debug)]
pub struct InProgress(Gauge);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_late_upload_is_one_received_after_the_due_time() {
        let metrics = Metrics::new(Duration::from_secs(60 * 60));
        let decided = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        metrics.upload_stored(decided, decided + chrono::Duration::minutes(60));
        metrics.upload_stored(decided, decided + chrono::Duration::minutes(61));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains("justin_uploads_total{outcome=\"stored\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("justin_late_uploads_total 1\n"), "{text}");
    }

    #[test]
    fn unknown_methods_and_unmatched_routes_get_fixed_labels() {
        let metrics = Metrics::new(Duration::from_secs(60));
        let odd = actix_web::http::Method::from_bytes(b"BREW").unwrap();
        metrics.request(&odd, "", 404, Duration::from_millis(1));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                "justin_http_requests_total{method=\"other\",route=\"unmatched\",status=\"404\"} 1"
            ),
            "{text}"
        );
    }
}
