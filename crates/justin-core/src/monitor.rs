//! The watchdog's report: what a running study should be doing by its schedule and its
//! `[monitor]` settings, against what it did, as findings of three severities.
//!
//! The report is what `GET /api/v1/monitor`, `justin monitor`, the alert webhook and the
//! dashboard show. Findings name participants by their study id and say what and since when;
//! they never carry contexts, outcomes or rewards.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::DecisionType;
use crate::schedule::Schedule;

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

impl Severity {
    /// The word reported: `green`, `yellow` or `red`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Green => "green",
            Self::Yellow => "yellow",
            Self::Red => "red",
        }
    }

    /// Reads a reported word back.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "green" => Some(Self::Green),
            "yellow" => Some(Self::Yellow),
            "red" => Some(Self::Red),
            _ => None,
        }
    }
}

impl FindingKind {
    /// The word reported (as serialized).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MissedDecisions => "missed_decisions",
            Self::OverdueOutcomes => "overdue_outcomes",
            Self::UpdateOverdue => "update_overdue",
            Self::UpdateFailed => "update_failed",
            Self::CallbackUndelivered => "callback_undelivered",
            Self::FallbackShare => "fallback_share",
            Self::RefusedUploadShare => "refused_upload_share",
            Self::ClipBoundShare => "clip_bound_share",
        }
    }
}

/// A share's thresholds: at or above `yellow` a finding is yellow, at or above `red` red.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareThresholds {
    /// The share (0 to 1) from which a finding is yellow.
    pub yellow: f64,
    /// The share (0 to 1) from which a finding is red.
    pub red: f64,
}

impl ShareThresholds {
    fn severity(self, share: f64) -> Severity {
        if share >= self.red {
            Severity::Red
        } else if share >= self.yellow {
            Severity::Yellow
        } else {
            Severity::Green
        }
    }
}

/// What the watchdog expects of the study (`[monitor]`, read once at start-up).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorSettings {
    /// How long after a scheduled decision time a missing decision counts as missed.
    pub missed_grace: TimeDelta,
    /// Missed decision times in a row (of one participant and type) that make a red finding;
    /// fewer are yellow.
    pub missed_red_after: u64,
    /// How long after its decision time an upload is due.
    pub outcome_due: TimeDelta,
    /// How far back overdue uploads are looked for (older ones are history, not news).
    pub outcome_lookback: TimeDelta,
    /// How often an update should complete; `None` when updates run on no fixed rhythm.
    pub update_every: Option<TimeDelta>,
    /// The window the shares, failed updates and failed callbacks are counted over.
    pub window: TimeDelta,
    /// Decisions (or uploads) a share needs in the window before it is judged.
    pub min_share_count: u64,
    /// Decisions drawn with the fallback probability, of those the service drew.
    pub fallback_share: ShareThresholds,
    /// Uploads refused for differing from the logged decision, of all uploads tried.
    pub refused_share: ShareThresholds,
    /// Algorithm decisions at a clip bound, of the available ones the algorithm drew.
    pub clip_share: ShareThresholds,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self {
            missed_grace: TimeDelta::minutes(30),
            missed_red_after: 3,
            outcome_due: TimeDelta::hours(24),
            outcome_lookback: TimeDelta::days(7),
            update_every: None,
            window: TimeDelta::hours(24),
            min_share_count: 20,
            fallback_share: ShareThresholds {
                yellow: 0.05,
                red: 0.2,
            },
            refused_share: ShareThresholds {
                yellow: 0.01,
                red: 0.05,
            },
            clip_share: ShareThresholds {
                yellow: 0.9,
                red: 0.99,
            },
        }
    }
}

/// What the store is asked for one check ([`crate::Store::monitor_facts`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorQuery {
    /// The check's time: participants active at it are listed.
    pub now: DateTime<Utc>,
    /// Uploads of decisions whose `request_timestamp` is before this are due.
    pub outcome_due_before: DateTime<Utc>,
    /// Overdue uploads are looked for among decisions whose `request_timestamp` is at or after
    /// this.
    pub outcome_lookback_from: DateTime<Utc>,
    /// The shares, failed updates and failed callbacks count what happened (was received,
    /// finished) at or after this.
    pub window_from: DateTime<Utc>,
    /// The clip bounds (low, high) decisions at which are counted; none when unknown.
    pub clip: Option<(f64, f64)>,
    /// The decision types whose latest decision is read for each active participant (the
    /// schedule's). Empty (no schedule): no participant is listed.
    pub decision_types: Vec<String>,
}

/// A participant the watchdog expects decisions of: registered, not withdrawn, not erased,
/// and inside their time in the study at the check's time (started, or without a start; not
/// ended).
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveParticipant {
    /// Their study id.
    pub user_id: String,
    /// When their time in the study started (their registration when it has no start).
    pub since: DateTime<Utc>,
    /// Per decision type asked for that they have decisions of, by type: the
    /// `request_timestamp` of their latest decision of that type (the one with the highest
    /// `decision_idx`, found through the decision key's index).
    pub latest: Vec<(String, DateTime<Utc>)>,
}

/// A participant's decisions whose upload is past due.
#[derive(Debug, Clone, PartialEq)]
pub struct OverdueOutcomes {
    /// Their study id.
    pub user_id: String,
    /// How many (available, in-study decisions in the lookback, with no upload).
    pub count: u64,
    /// The oldest such decision's `request_timestamp`.
    pub oldest: DateTime<Utc>,
}

/// What the store says about updates and callbacks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UpdateFacts {
    /// When the latest completed update finished.
    pub last_completed: Option<DateTime<Utc>>,
    /// When parameter version 1 was stored (the study's start, for the first update's due
    /// time).
    pub first_version_at: Option<DateTime<Utc>>,
    /// Updates that failed after the latest completed one (within the window).
    pub failed_since_completed: u64,
    /// The first of them's finish.
    pub first_failed_at: Option<DateTime<Utc>>,
    /// When the oldest unfinished update request was received.
    pub oldest_unfinished: Option<DateTime<Utc>>,
    /// Callbacks whose delivery failed, of updates finished in the window.
    pub callbacks_failed: u64,
    /// The first such update's finish.
    pub first_callback_failed_at: Option<DateTime<Utc>>,
}

/// Counts over the window, for the shares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowFacts {
    /// Decisions the service drew (available, policy algorithm, warm-up or fallback) stored in
    /// the window.
    pub drawn: u64,
    /// Of them, those drawn with the fallback probability.
    pub fallbacks: u64,
    /// Available decisions of the algorithm policy stored in the window.
    pub algorithm: u64,
    /// Of them, those whose probability is at a clip bound (within 1e-9).
    pub at_clip: u64,
    /// Uploads stored in the window.
    pub uploads: u64,
    /// Uploads refused in the window for differing from the logged decision.
    pub refused: u64,
}

/// Everything one check reads from the store, in aggregate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MonitorFacts {
    /// The active participants, by id; none when the query asked for no decision type.
    pub participants: Vec<ActiveParticipant>,
    /// Participants (not withdrawn, not erased) with uploads past due, by id.
    pub overdue: Vec<OverdueOutcomes>,
    /// Updates and callbacks.
    pub updates: UpdateFacts,
    /// The window's counts.
    pub window: WindowFacts,
}

/// An upload refused for differing from the logged decision: counted (by its decision type
/// and time, without its participant or values, so an erasure has nothing to remove here)
/// so that every instance counts the refusals of all.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusedUpload {
    /// The decision type.
    pub decision_type: String,
    /// When it was refused.
    pub refused_at: DateTime<Utc>,
}

/// A change of the shared verdict to record ([`crate::Store::advance_monitor_state`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StateChange {
    /// The state just found.
    pub state: Severity,
    /// When.
    pub at: DateTime<Utc>,
    /// The alert to queue when the state changes (the JSON POSTed), `None` without a webhook.
    pub alert: Option<serde_json::Value>,
    /// The queued alert is held by the caller until then (others leave it alone meanwhile).
    pub lease_until: DateTime<Utc>,
}

/// What [`crate::Store::advance_monitor_state`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct StateAdvance {
    /// The state stored before (`None` before the first check).
    pub previous: Option<Severity>,
    /// Whether this call changed the state (only one caller does per change).
    pub changed: bool,
    /// The alert queued with the change, held by the caller.
    pub alert: Option<Alert>,
}

/// A queued alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Its id.
    pub id: i64,
    /// The JSON body to POST.
    pub payload: serde_json::Value,
    /// Delivery attempts so far.
    pub attempts: u32,
}

/// How an alert's delivery ended.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertDelivery {
    /// Delivered (true) or given up (false).
    pub delivered: bool,
    /// POSTs tried.
    pub attempts: u32,
    /// The last attempt's error, when it failed.
    pub error: Option<String>,
    /// When delivery ended.
    pub finished_at: DateTime<Utc>,
}

/// Judges the study: facts from the store, the schedule (no missed-decision findings without
/// one), the settings and the time of the check. Pure: the same inputs give the same report.
pub fn evaluate(
    facts: &MonitorFacts,
    schedule: Option<&Schedule>,
    settings: &MonitorSettings,
    now: DateTime<Utc>,
) -> MonitorReport {
    let mut findings = Vec::new();
    if let Some(schedule) = schedule {
        for participant in &facts.participants {
            missed_decisions(participant, schedule, settings, now, &mut findings);
        }
    }
    for overdue in &facts.overdue {
        findings.push(Finding {
            severity: Severity::Yellow,
            kind: FindingKind::OverdueOutcomes,
            participant: Some(overdue.user_id.clone()),
            decision_type: None,
            since: Some(overdue.oldest + settings.outcome_due),
            count: Some(overdue.count),
            message: format!(
                "{} decision{} without an upload more than {} after the decision time",
                overdue.count,
                plural(overdue.count),
                span(settings.outcome_due)
            ),
        });
    }
    update_findings(&facts.updates, settings, now, &mut findings);
    share_findings(&facts.window, settings, &mut findings);
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.kind.as_str().cmp(b.kind.as_str()))
            .then_with(|| a.participant.cmp(&b.participant))
            .then_with(|| a.decision_type.cmp(&b.decision_type))
    });
    MonitorReport {
        state: findings
            .iter()
            .map(|f| f.severity)
            .max()
            .unwrap_or(Severity::Green),
        checked_at: now,
        findings,
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// A duration in the largest whole unit that fits it.
fn span(d: TimeDelta) -> String {
    let mins = d.num_minutes();
    if mins % (24 * 60) == 0 && mins > 0 {
        format!("{} d", mins / (24 * 60))
    } else if mins % 60 == 0 && mins > 0 {
        format!("{} h", mins / 60)
    } else {
        format!("{mins} min")
    }
}

/// The scheduled decision times of one type that passed (more than the grace ago) since the
/// participant's latest decision of that type, or since their start without one.
fn missed_decisions(
    participant: &ActiveParticipant,
    schedule: &Schedule,
    settings: &MonitorSettings,
    now: DateTime<Utc>,
    findings: &mut Vec<Finding>,
) {
    let mut types: Vec<&DecisionType> = Vec::new();
    for t in schedule.times() {
        if !types.contains(&&t.decision_type) {
            types.push(&t.decision_type);
        }
    }
    let Some(due_before) = now.checked_sub_signed(settings.missed_grace) else {
        return;
    };
    for decision_type in types {
        let Some(first_in_study) = schedule.first_cell_at_or_after(participant.since, None) else {
            continue;
        };
        let latest = participant
            .latest
            .iter()
            .find(|(t, _)| t == decision_type.as_str())
            .map(|(_, at)| *at);
        // The first cell that could be missed: after the latest decision's cell (placed by
        // its request time), and never before the participant's start.
        let from = match latest.and_then(|at| schedule.nearest_cell(decision_type, at)) {
            Some(cell) => cell.saturating_add(1).max(first_in_study),
            None => first_in_study,
        };
        // Cells whose nominal instant is at or before `due_before` are due.
        let Some(until) = schedule.first_cell_after(due_before) else {
            continue;
        };
        let count = schedule.count_cells(decision_type, from, until);
        if count == 0 {
            continue;
        }
        let since = schedule
            .first_cell_from(from, decision_type)
            .and_then(|c| schedule.instant(c));
        let severity = if count >= settings.missed_red_after {
            Severity::Red
        } else {
            Severity::Yellow
        };
        findings.push(Finding {
            severity,
            kind: FindingKind::MissedDecisions,
            participant: Some(participant.user_id.clone()),
            decision_type: Some(decision_type.as_str().to_owned()),
            since,
            count: Some(count),
            message: format!(
                "{count} scheduled decision time{} of type {} passed without a decision",
                plural(count),
                decision_type.as_str()
            ),
        });
    }
}

fn update_findings(
    updates: &UpdateFacts,
    settings: &MonitorSettings,
    now: DateTime<Utc>,
    findings: &mut Vec<Finding>,
) {
    if updates.failed_since_completed > 0 {
        let n = updates.failed_since_completed;
        findings.push(Finding {
            severity: Severity::Red,
            kind: FindingKind::UpdateFailed,
            participant: None,
            decision_type: None,
            since: updates.first_failed_at,
            count: Some(n),
            message: format!(
                "{n} update{} failed since the last completed one",
                plural(n)
            ),
        });
    }
    if let Some(every) = settings.update_every {
        let reference = updates.last_completed.or(updates.first_version_at);
        if let Some(reference) = reference {
            let due = reference + every;
            if now > due {
                let severity = if now > due + every {
                    Severity::Red
                } else {
                    Severity::Yellow
                };
                findings.push(Finding {
                    severity,
                    kind: FindingKind::UpdateOverdue,
                    participant: None,
                    decision_type: None,
                    since: Some(due),
                    count: None,
                    message: format!(
                        "no update completed in the last {} (expected every {})",
                        span(now - reference),
                        span(every)
                    ),
                });
            }
        }
        if let Some(oldest) = updates.oldest_unfinished {
            if now - oldest > every {
                findings.push(Finding {
                    severity: Severity::Yellow,
                    kind: FindingKind::UpdateOverdue,
                    participant: None,
                    decision_type: None,
                    since: Some(oldest),
                    count: None,
                    message: format!(
                        "an update requested {} ago has not finished",
                        span(now - oldest)
                    ),
                });
            }
        }
    }
    if updates.callbacks_failed > 0 {
        let n = updates.callbacks_failed;
        findings.push(Finding {
            severity: Severity::Red,
            kind: FindingKind::CallbackUndelivered,
            participant: None,
            decision_type: None,
            since: updates.first_callback_failed_at,
            count: Some(n),
            message: format!(
                "{n} update callback{} could not be delivered in the last {}",
                plural(n),
                span(settings.window)
            ),
        });
    }
}

fn share_findings(window: &WindowFacts, settings: &MonitorSettings, findings: &mut Vec<Finding>) {
    let shares = [
        (
            FindingKind::FallbackShare,
            window.fallbacks,
            window.drawn,
            settings.fallback_share,
            "decisions drawn with the fallback probability",
        ),
        (
            FindingKind::RefusedUploadShare,
            window.refused,
            window.uploads + window.refused,
            settings.refused_share,
            "uploads refused for differing from the logged decision",
        ),
        (
            FindingKind::ClipBoundShare,
            window.at_clip,
            window.algorithm,
            settings.clip_share,
            "available algorithm decisions at a clip bound",
        ),
    ];
    for (kind, part, whole, thresholds, what) in shares {
        if whole == 0 || whole < settings.min_share_count {
            continue;
        }
        // Counts far below 2^52 convert exactly.
        #[allow(clippy::cast_precision_loss)]
        let share = part as f64 / whole as f64;
        let severity = thresholds.severity(share);
        if severity == Severity::Green {
            continue;
        }
        findings.push(Finding {
            severity,
            kind,
            participant: None,
            decision_type: None,
            since: None,
            count: Some(part),
            message: format!(
                "{part} of {whole} {what} in the last {} ({:.1} %)",
                span(settings.window),
                share * 100.0
            ),
        });
    }
}
