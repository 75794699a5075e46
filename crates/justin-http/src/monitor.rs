//! The watchdog's wiring: `[monitor]` (what the study is expected to do, read and checked at
//! start-up) and the background check every instance runs. The check itself, the shared
//! verdict and the alerts are the core's (`Service::run_monitor_check`); what
//! `GET /api/v1/monitor` and `justin monitor` answer is `Service::monitor_report`.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::TimeDelta;
use justin_core::monitor::ShareThresholds;
use justin_core::{MonitorSettings, MonitorSetup, Service};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError};

/// `[monitor]`; every key has a default, and the section is left out of the configuration's
/// fingerprint while it holds them all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Whether `justin serve` runs the background check (the route and `justin monitor`
    /// answer either way).
    pub enabled: bool,
    /// Seconds between two background checks.
    pub check_every_secs: u64,
    /// How long after its decision time an upload is due; one received later is late (the
    /// metrics count it, the watchdog reports decisions without one past this).
    pub outcome_due_mins: u64,
    /// How far back decisions without an upload are looked for.
    pub outcome_lookback_hours: u64,
    /// How long after a scheduled decision time a missing decision counts as missed.
    pub missed_grace_mins: u64,
    /// Missed decision times in a row (one participant, one type) that make a red finding.
    pub missed_red_after: u64,
    /// How often an update should complete; none: no expectation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_every_hours: Option<u64>,
    /// The window shares, failed updates and failed callbacks are counted over.
    pub window_hours: u64,
    /// Decisions (uploads) a share needs in the window before it is judged.
    pub min_share_count: u64,
    /// Share of fallback decisions from which a finding is yellow.
    pub fallback_share_yellow: f64,
    /// ... and red.
    pub fallback_share_red: f64,
    /// Share of refused uploads (409) from which a finding is yellow.
    pub refused_share_yellow: f64,
    /// ... and red.
    pub refused_share_red: f64,
    /// Share of algorithm decisions at a clip bound from which a finding is yellow.
    pub clip_share_yellow: f64,
    /// ... and red.
    pub clip_share_red: f64,
    /// Where alerts are POSTed when the state changes; none: no alerts. Its host must be in
    /// `update.callback_allowed_hosts` when that list is set; retries follow `update.callback_*`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert_url: Option<String>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        let core = MonitorSettings::default();
        Self {
            enabled: true,
            check_every_secs: 60,
            outcome_due_mins: 24 * 60,
            outcome_lookback_hours: 7 * 24,
            missed_grace_mins: 30,
            missed_red_after: core.missed_red_after,
            update_every_hours: None,
            window_hours: 24,
            min_share_count: core.min_share_count,
            fallback_share_yellow: core.fallback_share.yellow,
            fallback_share_red: core.fallback_share.red,
            refused_share_yellow: core.refused_share.yellow,
            refused_share_red: core.refused_share.red,
            clip_share_yellow: core.clip_share.yellow,
            clip_share_red: core.clip_share.red,
            alert_url: None,
        }
    }
}

fn hours(h: u64) -> TimeDelta {
    TimeDelta::hours(i64::try_from(h).unwrap_or(i64::MAX / 3_600_000))
}

fn minutes(m: u64) -> TimeDelta {
    TimeDelta::minutes(i64::try_from(m).unwrap_or(i64::MAX / 60_000))
}

impl MonitorConfig {
    /// Whether every setting is the default (the section is then left out of the
    /// configuration's fingerprint, which predates it).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Checks the section; the message names the key.
    ///
    /// # Errors
    /// For a zero interval or count, a share outside [0, 1] or a red threshold below its
    /// yellow one, an alert URL that is not an http(s) URL or whose host
    /// `allowed_hosts` (when not empty) does not list.
    pub fn check(&self, allowed_hosts: &[String]) -> Result<(), ConfigError> {
        let invalid =
            |key: &str, why: &str| Err(ConfigError::Invalid(format!("monitor.{key}: {why}")));
        // Ten years, in any unit: beyond it a setting is a mistake (and could overflow).
        const MAX_HOURS: u64 = 10 * 366 * 24;
        for (key, value, max) in [
            ("check_every_secs", self.check_every_secs, MAX_HOURS * 3600),
            ("outcome_due_mins", self.outcome_due_mins, MAX_HOURS * 60),
            (
                "outcome_lookback_hours",
                self.outcome_lookback_hours,
                MAX_HOURS,
            ),
            ("window_hours", self.window_hours, MAX_HOURS),
            ("missed_red_after", self.missed_red_after, u64::MAX),
            (
                "update_every_hours",
                self.update_every_hours.unwrap_or(1),
                MAX_HOURS,
            ),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
            if value > max {
                return invalid(key, &format!("must be at most {max}"));
            }
        }
        if self.missed_grace_mins > MAX_HOURS * 60 {
            return invalid("missed_grace_mins", "must be at most ten years");
        }
        for (name, yellow, red) in [
            (
                "fallback_share",
                self.fallback_share_yellow,
                self.fallback_share_red,
            ),
            (
                "refused_share",
                self.refused_share_yellow,
                self.refused_share_red,
            ),
            ("clip_share", self.clip_share_yellow, self.clip_share_red),
        ] {
            for (key, value) in [
                (format!("{name}_yellow"), yellow),
                (format!("{name}_red"), red),
            ] {
                if !(0.0..=1.0).contains(&value) {
                    return invalid(&key, "must be a share between 0 and 1");
                }
            }
            if red < yellow {
                return invalid(
                    &format!("{name}_red"),
                    &format!("must not be below {name}_yellow"),
                );
            }
        }
        if let Some(url) = &self.alert_url {
            let value = serde_json::Value::from(url.as_str());
            if crate::body::callback_url(&value).is_err() {
                return invalid("alert_url", "must be an absolute http:// or https:// URL");
            }
            let host = crate::body::url_host(url);
            if !allowed_hosts.is_empty()
                && !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
            {
                return invalid(
                    "alert_url",
                    &format!("its host {host:?} is not in update.callback_allowed_hosts"),
                );
            }
        }
        Ok(())
    }

    /// The core's settings.
    pub fn settings(&self) -> MonitorSettings {
        MonitorSettings {
            missed_grace: minutes(self.missed_grace_mins),
            missed_red_after: self.missed_red_after,
            outcome_due: minutes(self.outcome_due_mins),
            outcome_lookback: hours(self.outcome_lookback_hours),
            update_every: self.update_every_hours.map(hours),
            window: hours(self.window_hours),
            min_share_count: self.min_share_count,
            fallback_share: ShareThresholds {
                yellow: self.fallback_share_yellow,
                red: self.fallback_share_red,
            },
            refused_share: ShareThresholds {
                yellow: self.refused_share_yellow,
                red: self.refused_share_red,
            },
            clip_share: ShareThresholds {
                yellow: self.clip_share_yellow,
                red: self.clip_share_red,
            },
        }
    }
}

/// What the service checks against: the settings, the schedule and the webhook.
///
/// # Errors
/// When `[monitor]` or `[schedule]` is invalid.
pub fn setup(config: &Config) -> Result<MonitorSetup, ConfigError> {
    config
        .monitor
        .check(&config.update.callback_allowed_hosts)?;
    Ok(MonitorSetup {
        settings: config.monitor.settings(),
        schedule: config.schedule()?,
        alert_url: config.monitor.alert_url.clone(),
        // The dashboard shows the background check's report while at most two of its
        // intervals old (one check may run long); without the background check it checks
        // on every page.
        reuse_for: if config.monitor.enabled {
            i64::try_from(config.monitor.check_every_secs.saturating_mul(2))
                .ok()
                .and_then(chrono::TimeDelta::try_seconds)
                .unwrap_or(chrono::TimeDelta::MAX)
        } else {
            chrono::TimeDelta::zero()
        },
    })
}

/// Stops the background check.
#[derive(Debug)]
pub struct Watchdog {
    stop: mpsc::Sender<()>,
    // Not joined: a check under way ends with the process (its transaction is rolled back,
    // an alert it held is delivered by another instance or the next start).
    _thread: JoinHandle<()>,
}

impl Watchdog {
    /// Asks the thread to stop; it does at its next wait.
    pub fn stop(&self) {
        // A thread that has ended needs no message.
        self.stop.send(()).ok();
    }
}

/// Starts the background check: one at once, then one every `every`. Failures are logged and
/// the next check tries again.
///
/// # Errors
/// When the thread cannot be started.
pub fn spawn(service: Arc<Service>, every: Duration) -> std::io::Result<Watchdog> {
    let (stop, stopped) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("justin-watchdog".into())
        .spawn(move || loop {
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                service.run_monitor_check()
            })) {
                Ok(Ok(outcome)) => log::debug!(
                    "watchdog check: {} with {} finding(s)",
                    outcome.report.state.as_str(),
                    outcome.report.findings.len()
                ),
                Ok(Err(e)) => log::warn!(
                    "watchdog check failed: {}",
                    justin_core::service::error_chain(&e)
                ),
                Err(_) => log::error!("watchdog check panicked; trying again at the next one"),
            }
            match stopped.recv_timeout(every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        })?;
    Ok(Watchdog {
        stop,
        _thread: thread,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl FnOnce(&mut MonitorConfig), allowed: &[&str], says: &str) {
        let mut config = MonitorConfig::default();
        change(&mut config);
        let allowed: Vec<String> = allowed.iter().map(|h| (*h).to_owned()).collect();
        let message = config.check(&allowed).unwrap_err().to_string();
        assert!(message.contains(says), "{message}");
    }

    #[test]
    fn the_defaults_are_the_cores_and_pass() {
        let config = MonitorConfig::default();
        assert!(config.check(&[]).is_ok());
        assert_eq!(config.settings(), MonitorSettings::default());
        assert!(config.is_default());
    }

    #[test]
    fn bad_settings_stop_start_up_naming_the_key() {
        refused(
            |c| c.check_every_secs = 0,
            &[],
            "monitor.check_every_secs: must be at least 1",
        );
        refused(|c| c.missed_red_after = 0, &[], "monitor.missed_red_after");
        refused(
            |c| c.update_every_hours = Some(0),
            &[],
            "monitor.update_every_hours",
        );
        refused(
            |c| c.window_hours = u64::MAX,
            &[],
            "monitor.window_hours: must be at most",
        );
        refused(
            |c| c.fallback_share_red = 1.5,
            &[],
            "monitor.fallback_share_red: must be a share",
        );
        refused(
            |c| c.clip_share_red = 0.5,
            &[],
            "monitor.clip_share_red: must not be below clip_share_yellow",
        );
        refused(
            |c| c.alert_url = Some("ftp://x".into()),
            &[],
            "monitor.alert_url: must be an absolute http",
        );
        refused(
            |c| c.alert_url = Some("https://evil.example/hook".into()),
            &["alerts.example"],
            "monitor.alert_url: its host \"evil.example\" is not in update.callback_allowed_hosts",
        );
        let config = MonitorConfig {
            alert_url: Some("https://ALERTS.example/hook".into()),
            ..MonitorConfig::default()
        };
        assert!(config.check(&["alerts.example".to_owned()]).is_ok());
    }
}
