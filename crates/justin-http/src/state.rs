//! What every handler shares: the core service, the update queue and the request limits.

use std::sync::Arc;

use justin_core::Service;

use crate::updates::UpdateQueue;

/// Shared by all workers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// The use cases.
    pub service: Arc<Service>,
    /// Where accepted update requests go to be run.
    pub updates: UpdateQueue,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
}
