//! The connection pool's waits, told to the core's [`Telemetry`] observer: how long each
//! checkout waited for a connection, and each wait that gave up at the pool's timeout.

use std::sync::Arc;

use justin_core::Telemetry;
use r2d2::event::{CheckoutEvent, HandleEvent, TimeoutEvent};

/// An r2d2 event handler forwarding checkouts and timeouts to a [`Telemetry`].
pub(crate) struct PoolEvents(pub(crate) Arc<dyn Telemetry>);

impl std::fmt::Debug for PoolEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolEvents")
    }
}

impl HandleEvent for PoolEvents {
    fn handle_checkout(&self, event: CheckoutEvent) {
        self.0.pool_checkout(event.duration());
    }

    fn handle_timeout(&self, _event: TimeoutEvent) {
        self.0.pool_timeout();
    }
}
