//! The watchdog's use cases: checking the study against its schedule and settings, sharing the
//! verdict between instances, and alerting when it changes.
//!
//! (Being built for issue 17.)

use super::{DomainError, Service};
use crate::monitor::{MonitorReport, Severity};

impl Service {
    /// The watchdog's report as of now. (Being built for issue 17: answers green with no
    /// findings until then.)
    ///
    /// # Errors
    /// On storage failure.
    pub fn monitor_report(&self) -> Result<MonitorReport, DomainError> {
        Ok(MonitorReport {
            state: Severity::Green,
            checked_at: self.clock.now(),
            findings: Vec::new(),
        })
    }
}
