//! `GET /api/v1/monitor`: the watchdog's report, green, yellow or red with each finding.

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use justin_core::monitor::{Finding, MonitorReport};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::Success;
use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

/// A severity: `green` (nothing to act on), `yellow` (worth a look) or `red` (act now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SeverityWord {
    /// Nothing to act on.
    Green,
    /// Worth a look.
    Yellow,
    /// Act now.
    Red,
}

impl From<justin_core::Severity> for SeverityWord {
    fn from(s: justin_core::Severity) -> Self {
        match s {
            justin_core::Severity::Green => Self::Green,
            justin_core::Severity::Yellow => Self::Yellow,
            justin_core::Severity::Red => Self::Red,
        }
    }
}

/// One finding of the watchdog.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FindingResponse {
    /// How bad it is.
    pub severity: SeverityWord,
    /// What it is about: `missed_decisions`, `overdue_outcomes`, `update_overdue`,
    /// `update_failed`, `callback_undelivered`, `fallback_share`, `refused_upload_share` or
    /// `clip_bound_share`.
    pub kind: String,
    /// The participant, for findings about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub participant: Option<String>,
    /// The decision type, for findings about one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub decision_type: Option<String>,
    /// Since when it holds (the first missed decision time, the first overdue upload's due
    /// time, the first failed update's end, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub since: Option<DateTime<Utc>>,
    /// How many (missed decision times, overdue uploads, failed updates, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub count: Option<u64>,
    /// One sentence for an operator.
    pub message: String,
}

impl From<&Finding> for FindingResponse {
    fn from(f: &Finding) -> Self {
        Self {
            severity: f.severity.into(),
            kind: f.kind.as_str().to_owned(),
            participant: f.participant.clone(),
            decision_type: f.decision_type.clone(),
            since: f.since,
            count: f.count,
            message: f.message.clone(),
        }
    }
}

/// The watchdog's report.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(examples(json!({
    "status": "success",
    "state": "red",
    "checked_at": "2026-12-06T14:00:00Z",
    "findings": [{
        "severity": "red",
        "kind": "missed_decisions",
        "participant": "p-17",
        "decision_type": "default",
        "since": "2026-12-06T09:00:00Z",
        "count": 5,
        "message": "5 scheduled decision times of type default passed without a decision"
    }]
})))]
pub struct MonitorResponse {
    /// Always `success` (the report itself is in `state`).
    pub status: Success,
    /// The worst severity among the findings; `green` without any.
    pub state: SeverityWord,
    /// When the check ran.
    #[schema(value_type = String, format = DateTime)]
    pub checked_at: DateTime<Utc>,
    /// Every finding, worst first.
    pub findings: Vec<FindingResponse>,
}

impl From<&MonitorReport> for MonitorResponse {
    fn from(r: &MonitorReport) -> Self {
        Self {
            status: Success::Success,
            state: r.state.into(),
            checked_at: r.checked_at,
            findings: r.findings.iter().map(FindingResponse::from).collect(),
        }
    }
}

/// The watchdog's report.
///
/// Checks the study now against its `[schedule]` and `[monitor]` settings: participants with
/// missed decisions, overdue outcomes, overdue or failed updates, undelivered callbacks, and
/// unusual shares of fallbacks, refused uploads or decisions at the clip bounds. A read key
/// is enough.
///
/// # Errors
/// 503 when the database is unavailable.
#[utoipa::path(
    get,
    path = "/api/v1/monitor",
    operation_id = "get_monitor",
    tag = "monitor",
    responses(
        (status = 200, description = "The report (whatever its state).", body = MonitorResponse),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let report = run_blocking(move || service.monitor_report()).await?;
    Ok(HttpResponse::Ok().json(MonitorResponse::from(&report)))
}
