//! The watchdog's use cases: checking the study against its schedule and settings
//! ([`Service::monitor_report`]), sharing the verdict between instances and alerting when it
//! changes ([`Service::run_monitor_check`]), and delivering alerts a stopped instance left.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::{DomainError, Service};
use crate::monitor::{
    evaluate, Alert, AlertDelivery, MonitorQuery, MonitorReport, MonitorSettings, RefusedUpload,
    StateChange,
};
use crate::schedule::Schedule;

/// What the watchdog checks against, and where it alerts.
#[derive(Debug, Clone, Default)]
pub struct MonitorSetup {
    /// Thresholds and due times.
    pub settings: MonitorSettings,
    /// The study's schedule; without one no decision is expected.
    pub schedule: Option<Schedule>,
    /// The alert webhook, if any.
    pub alert_url: Option<String>,
    /// How old the latest background check's report may be for
    /// [`Service::recent_monitor_report`] to answer it instead of checking again; zero (the
    /// default, and what a service without the background check gets) always checks again.
    pub reuse_for: TimeDelta,
}

/// What one background check did.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// The report.
    pub report: MonitorReport,
    /// Whether this instance moved the shared state (and so alerted, with a webhook).
    pub changed: bool,
    /// Alerts delivered by this check (its own and ones left by others).
    pub alerts_delivered: usize,
}

impl Service {
    /// The same service checking against `setup` (the default expects nothing and alerts
    /// nowhere).
    #[must_use]
    pub fn with_monitor(mut self, setup: MonitorSetup) -> Self {
        self.monitor = Arc::new(setup);
        self
    }

    /// The watchdog's report as of now: the store's aggregate facts judged by
    /// [`crate::monitor::evaluate`].
    ///
    /// # Errors
    /// On storage failure.
    pub fn monitor_report(&self) -> Result<MonitorReport, DomainError> {
        let now = self.clock.now();
        let settings = &self.monitor.settings;
        let back = |d: TimeDelta| {
            now.checked_sub_signed(d)
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        let query = MonitorQuery {
            now,
            outcome_due_before: back(settings.outcome_due),
            outcome_lookback_from: back(settings.outcome_lookback),
            window_from: back(settings.window),
            clip: self.clip_bounds(),
            decision_types: self.monitor.schedule.as_ref().map_or_else(Vec::new, |s| {
                let mut types: Vec<String> = Vec::new();
                for t in s.times() {
                    if !types.iter().any(|x| x == t.decision_type.as_str()) {
                        types.push(t.decision_type.as_str().to_owned());
                    }
                }
                types
            }),
        };
        let facts = self.store.monitor_facts(&query)?;
        Ok(evaluate(
            &facts,
            self.monitor.schedule.as_ref(),
            settings,
            now,
        ))
    }

    /// The report of this instance's latest background check when it is at most
    /// [`MonitorSetup::reuse_for`] old, else a new report ([`Service::monitor_report`]). The
    /// dashboard shows this: over a large study a check reads every recent decision, and a
    /// page should not wait for one. The report's `checked_at` says how old it is.
    ///
    /// # Errors
    /// On storage failure.
    pub fn recent_monitor_report(&self) -> Result<MonitorReport, DomainError> {
        let now = self.clock.now();
        let reuse_for = self.monitor.reuse_for;
        if reuse_for > TimeDelta::zero() {
            let recent = self
                .last_check
                .read()
                .ok()
                .and_then(|last| last.clone())
                .filter(|report| {
                    report.checked_at <= now
                        && now.signed_duration_since(report.checked_at) <= reuse_for
                });
            if let Some(report) = recent {
                return Ok(report);
            }
        }
        self.monitor_report()
    }

    /// The bounds the algorithm clips P(action = 1) to ([`crate::Algorithm::clip_bounds`],
    /// `thompson`'s `min_probability` and `max_probability`), as the dashboard uses them; for
    /// an algorithm that declares none, the current parameters' `min_probability` and
    /// `max_probability` when they hold both.
    fn clip_bounds(&self) -> Option<(f64, f64)> {
        if let Some(bounds) = self.algorithm.clip_bounds() {
            return Some(bounds);
        }
        let current = self.current_parameters().ok()?;
        let low = current.values.get("min_probability")?.as_f64()?;
        let high = current.values.get("max_probability")?.as_f64()?;
        Some((low, high))
    }

    /// One background check: the report, the shared state moved to its state in one
    /// transaction (so among instances checking at once only one sees the change), the alert
    /// queued with the change delivered with retries, then any alert another instance left
    /// undelivered.
    ///
    /// # Errors
    /// On storage failure.
    pub fn run_monitor_check(&self) -> Result<CheckOutcome, DomainError> {
        let report = self.monitor_report()?;
        if let Ok(mut last) = self.last_check.write() {
            *last = Some(report.clone());
        }
        let now = self.clock.now();
        let alert = self
            .monitor
            .alert_url
            .as_ref()
            .map(|_| alert_payload(&report))
            .transpose()?;
        let advance = self.store.advance_monitor_state(&StateChange {
            state: report.state,
            at: now,
            alert,
            lease_until: now + self.alert_lease(),
        })?;
        if advance.changed {
            log::info!(
                "watchdog: the study is {} (was {})",
                report.state.as_str(),
                advance.previous.map_or("unknown", |p| p.as_str())
            );
        }
        let mut alerts_delivered = 0;
        if let Some(alert) = advance.alert {
            alerts_delivered += usize::from(self.deliver_alert(&alert)?);
        }
        alerts_delivered += self.deliver_pending_alerts()?;
        Ok(CheckOutcome {
            report,
            changed: advance.changed,
            alerts_delivered,
        })
    }

    /// How long an instance holds an alert it delivers: the longest delivery, with a margin.
    fn alert_lease(&self) -> TimeDelta {
        TimeDelta::from_std(self.settings.callbacks.longest_delivery())
            .unwrap_or(TimeDelta::MAX)
            .checked_add(&TimeDelta::seconds(5))
            .unwrap_or(TimeDelta::MAX)
    }

    /// Delivers alerts queued by any instance and not delivered (the instance stopped, or
    /// its hold ran out); returns how many were delivered.
    ///
    /// # Errors
    /// On storage failure.
    pub fn deliver_pending_alerts(&self) -> Result<usize, DomainError> {
        if self.monitor.alert_url.is_none() {
            return Ok(0);
        }
        let mut delivered = 0;
        loop {
            let now = self.clock.now();
            let Some(alert) = self.store.claim_alert(now, now + self.alert_lease())? else {
                return Ok(delivered);
            };
            delivered += usize::from(self.deliver_alert(&alert)?);
            if self.is_stopping() {
                return Ok(delivered);
            }
        }
    }

    /// POSTs an alert with the callbacks' retries and backoff, and records how it ended.
    /// Returns whether it was delivered.
    fn deliver_alert(&self, alert: &Alert) -> Result<bool, DomainError> {
        let Some(url) = self.monitor.alert_url.as_deref() else {
            return Ok(false);
        };
        let policy = &self.settings.callbacks;
        let mut backoff = policy.first_backoff;
        let mut attempts = alert.attempts;
        let mut error = None;
        for attempt in 1..=policy.attempts {
            if attempt > 1 {
                if self.is_stopping() {
                    // Left queued: the hold runs out and another instance delivers it.
                    return Ok(false);
                }
                self.clock.sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
            attempts += 1;
            match self.notifier.notify_alert(url, &alert.payload) {
                Ok(()) => {
                    error = None;
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "watchdog alert {} failed (attempt {attempt} of {}): {e}",
                        alert.id,
                        policy.attempts
                    );
                    error = Some(e.to_string());
                }
            }
        }
        let delivered = error.is_none();
        self.store.record_alert(
            alert.id,
            &AlertDelivery {
                delivered,
                attempts,
                error,
                finished_at: self.clock.now(),
            },
        )?;
        Ok(delivered)
    }

    /// Keeps a refused upload's key and time for the watchdog's share of refusals. A failure
    /// is logged, not returned: the upload's answer (409) does not depend on it.
    pub(super) fn note_refused_upload(&self, refusal: &RefusedUpload) {
        if let Err(e) = self.store.record_refused_upload(refusal) {
            log::warn!("watchdog: a refused upload could not be recorded: {e}");
        }
    }
}

/// The JSON an alert POSTs: `{"event":"monitor_state_changed","state":...,"previous":...,
/// "checked_at":...,"findings":[...]}`, the findings without their participant. The alert is
/// stored until delivered and sent wherever the webhook points; an erasure must leave no
/// participant id in any table, so who is concerned is for `GET /api/v1/monitor` to say.
fn alert_payload(report: &MonitorReport) -> Result<serde_json::Value, DomainError> {
    let mut value = serde_json::to_value(report)
        .map_err(|e| DomainError::Store(crate::ports::StoreError::Other(Box::new(e))))?;
    if let Some(findings) = value["findings"].as_array_mut() {
        for finding in findings {
            if let Some(fields) = finding.as_object_mut() {
                fields.remove("participant");
            }
        }
    }
    value["event"] = serde_json::Value::from("monitor_state_changed");
    Ok(value)
}
