//! What every handler shares: the core service, the update queue and the request limits.

use std::sync::Arc;

use justin_core::Service;

use crate::routes::export::download::ExportSlot;
use crate::updates::UpdateQueue;

/// Shared by all workers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub service: Arc<Service>,
    /// Where `/action` runs its decisions.
    pub deciding: crate::blocking::Deciding,
    /// Wakes the update worker when a request is stored.
    pub updates: UpdateQueue,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The zone a `timestamp` without an offset is read in.
    pub naive_time_zone: chrono_tz::Tz,
    /// How long a request's body may take to arrive once its headers are in.
    pub body_timeout: std::time::Duration,
    /// Hosts callbacks may go to; empty means any.
    pub callback_allowed_hosts: Vec<String>,
    /// Taken by the export that runs.
    pub exports: ExportSlot,
    /// The zone the dashboard's days are in: the schedule's, UTC without a schedule.
    pub dashboard_zone: chrono_tz::Tz,
    /// What `/metrics` shows; `None` when `[metrics] enabled = false`.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}
