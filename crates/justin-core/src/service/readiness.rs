//! Readiness: whether storage answers and can write. A write that fails because the
//! database's disk is full holds readiness off until a write succeeds again or
//! [`DISK_FULL_HOLD`] has passed.

use std::sync::atomic::Ordering;

use super::{error_chain, DomainError, Service};
use crate::ports::StoreError;

/// How long after a write failed for want of disk space readiness stays 503 when no write
/// succeeds meanwhile. Behind a load balancer that stops sending requests to an instance that
/// is not ready, no write would clear it; after this long the instance is offered traffic
/// again, and the next failed write holds it off for as long again.
pub const DISK_FULL_HOLD: chrono::Duration = chrono::Duration::seconds(30);

/// Whether `e` says the database could not write for want of disk space: SQLite's
/// `SQLITE_FULL` ("database or disk is full") and PostgreSQL's `disk_full` errors and the
/// operating system's `ENOSPC` ("No space left on device"), as their messages say.
pub fn is_disk_full(e: &dyn std::error::Error) -> bool {
    let text = error_chain(e);
    [
        "database or disk is full",
        "No space left on device",
        "could not extend file",
    ]
    .iter()
    .any(|marker| text.contains(marker))
}

impl Service {
    /// Notes how a write request ended for readiness: a failure for want of disk space marks
    /// the database as full, a success clears the mark; other failures change nothing.
    pub(super) fn track_write<T>(&self, result: Result<T, DomainError>) -> Result<T, DomainError> {
        let full = match &result {
            Ok(_) => Some(false),
            Err(e) if is_disk_full(e) => Some(true),
            Err(_) => None,
        };
        // The common case, a write that succeeds while nothing is marked, takes no lock.
        if let Some(full) =
            full.filter(|&full| full || self.disk_full_marked.load(Ordering::Acquire))
        {
            let mut since = self
                .disk_full_since
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            *since = full.then(|| self.clock.now());
            self.disk_full_marked.store(full, Ordering::Release);
        }
        result
    }

    /// Answers when storage does and can write: not while the most recent write request
    /// failed because the database's disk is full (see [`is_disk_full`]) and no write has
    /// succeeded since, for at most [`DISK_FULL_HOLD`] after that failure.
    ///
    /// # Errors
    /// [`DomainError::Unavailable`] when storage does not answer or its disk is full.
    pub fn ready(&self) -> Result<(), DomainError> {
        let since = *self
            .disk_full_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = since {
            if self.clock.now() - at < DISK_FULL_HOLD {
                return Err(DomainError::Unavailable(StoreError::Unavailable(
                    "the database cannot write: its disk is full (the most recent write failed \
                     for want of space)"
                        .into(),
                )));
            }
        }
        Ok(self.store.ping()?)
    }
}
