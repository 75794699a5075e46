//! The service's metrics, exposed at `GET /metrics` in the Prometheus text format.
//!
//! (Being built for issue 17: see docs/operations.md once it lands.)

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
