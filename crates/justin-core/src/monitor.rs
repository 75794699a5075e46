//! The watchdog's report: what a running study should be doing by its schedule and its
//! `[monitor]` settings, against what it did, as findings of three severities.
//!
//! The report is what `GET /api/v1/monitor`, `justin monitor`, the alert webhook and the
//! dashboard show. Findings name participants by their study id and say what and since when;
//! they never carry contexts, outcomes or rewards.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How bad a finding, or the study as a whole, is. Ordered: green < yellow < red.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Nothing to act on.
    Green,
    /// Worth a look: something is late or unusual, nothing is lost yet.
    Yellow,
    /// Act now: decisions are being missed, updates fail or stopped, callbacks are not
    /// delivered.
    Red,
}

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// Scheduled decision times passed without a decision for an active participant.
    MissedDecisions,
    /// Decisions whose upload is past due.
    OverdueOutcomes,
    /// No update completed within the expected interval.
    UpdateOverdue,
    /// An update failed.
    UpdateFailed,
    /// An update's callback was not delivered.
    CallbackUndelivered,
    /// An unusual share of decisions were drawn with the fallback probability.
    FallbackShare,
    /// An unusual share of uploads were refused (409, differing from the logged decision).
    RefusedUploadShare,
    /// An unusual share of decisions had a probability at the algorithm's clip bounds.
    ClipBoundShare,
}

/// One thing the watchdog found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// What it is about.
    pub kind: FindingKind,
    /// The participant it concerns, for findings about one participant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant: Option<String>,
    /// The decision type it concerns, where it concerns one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision_type: Option<String>,
    /// Since when it holds (the first missed decision time, the oldest overdue upload's due
    /// time, the failed update's end, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// How many (missed decision times, overdue uploads, ...), where it counts something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// One sentence for an operator, naming no health data.
    pub message: String,
}

/// The watchdog's verdict at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorReport {
    /// The worst severity among the findings; green without any.
    pub state: Severity,
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// Every finding, worst first.
    pub findings: Vec<Finding>,
}
