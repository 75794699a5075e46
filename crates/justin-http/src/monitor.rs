//! The watchdog: a background check of the running study against its schedule, its alert
//! webhook, and what `GET /api/v1/monitor` and `justin monitor` answer.
//!
//! (Being built for issue 17.)

use serde::{Deserialize, Serialize};

/// `[monitor]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How long after its decision time an upload is due; one received later is late (the
    /// metrics count it, the watchdog reports decisions without one past this).
    pub outcome_due_mins: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            outcome_due_mins: 24 * 60,
        }
    }
}

impl MonitorConfig {
    /// Whether every setting is the default (the section is then left out of the
    /// configuration's fingerprint, which predates it).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}
