//! Callback delivery: a finished update's outcome is POSTed to its callback URL, retried with
//! exponential backoff, and how delivery ended is stored; callbacks a stopped process left
//! pending are delivered later.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{DomainError, Service};
use crate::domain::{CallbackStatus, UpdateRequest, UpdateStatus};
use crate::ports::CallbackPayload;

/// How callback delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackPolicy {
    /// POSTs at most (at least 1).
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for each one after.
    pub first_backoff: Duration,
    /// How long one attempt may take.
    pub attempt_timeout: Duration,
}

impl CallbackPolicy {
    /// The longest a delivery can take from first attempt to last: after this, a callback
    /// still pending was left behind by a process that stopped.
    pub fn longest_delivery(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut backoff = self.first_backoff;
        for attempt in 1..=self.attempts {
            if attempt > 1 {
                total = total.saturating_add(backoff);
                backoff = backoff.saturating_mul(2);
            }
            total = total.saturating_add(self.attempt_timeout);
        }
        total
    }
}

impl Service {
    /// Delivers the callbacks of finished updates that a stopped process did not deliver.
    ///
    /// # Errors
    /// On storage failure.
    pub fn deliver_pending_callbacks(&self) -> Result<usize, DomainError> {
        // A callback pending for less than the longest delivery may still be under way in the
        // process that ran the update; only older ones were left behind.
        let grace = chrono::Duration::from_std(self.settings.callbacks.longest_delivery())
            .unwrap_or(chrono::Duration::MAX)
            .checked_add(&chrono::Duration::seconds(5))
            .unwrap_or(chrono::Duration::MAX);
        let now = self.clock.now();
        let cutoff = now
            .checked_sub_signed(grace)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut delivered = 0;
        for request in self.store.undelivered_callbacks()? {
            if request.finished_at.is_some_and(|at| at < cutoff) {
                self.deliver_callback(&request)?;
                delivered += 1;
            }
        }
        Ok(delivered)
    }

    /// POSTs a finished update's outcome to its callback URL, retrying with exponential
    /// backoff, and records how delivery ended.
    pub(super) fn deliver_callback(&self, request: &UpdateRequest) -> Result<(), DomainError> {
        let payload = match request.status {
            UpdateStatus::Completed => CallbackPayload::Completed {
                update_id: request.id,
                timestamp: request.finished_at.unwrap_or_else(|| self.clock.now()),
            },
            UpdateStatus::Failed => CallbackPayload::Failed {
                update_id: request.id,
                message: "Model update failed.".into(),
            },
            UpdateStatus::Processing => return Ok(()),
        };
        let policy = &self.settings.callbacks;
        let mut delivery = request.callback.clone();
        let mut backoff = policy.first_backoff;
        for attempt in 1..=policy.attempts {
            if attempt > 1 {
                if self.is_stopping() {
                    // Left pending, not failed: a later poll, of the next process if need be,
                    // delivers it.
                    log::info!(
                        "callback for update {} left pending: the service is stopping",
                        request.id
                    );
                    delivery.status = CallbackStatus::Pending;
                    self.store.record_callback(request.id, &delivery)?;
                    self.telemetry.callback_ended(CallbackStatus::Pending);
                    return Ok(());
                }
                self.clock.sleep(backoff);
                backoff = backoff.saturating_mul(2);
                self.telemetry.callback_retried();
            }
            delivery.attempts += 1;
            match self.notifier.notify(&request.callback_url, &payload) {
                Ok(()) => {
                    delivery.status = CallbackStatus::Delivered;
                    delivery.last_error = None;
                    break;
                }
                Err(e) => {
                    log::warn!(
                        "callback for update {} failed (attempt {attempt} of {}): {e}",
                        request.id,
                        policy.attempts
                    );
                    delivery.status = CallbackStatus::Failed;
                    delivery.last_error = Some(e.to_string());
                }
            }
        }
        delivery.finished_at = Some(self.clock.now());
        self.store.record_callback(request.id, &delivery)?;
        self.telemetry.callback_ended(delivery.status);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_delivery_adds_timeouts_and_doubling_backoffs() {
        let policy = CallbackPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(1),
        };
        // 3 attempts of 1 s, waits of 100 ms and 200 ms between them.
        assert_eq!(policy.longest_delivery(), Duration::from_millis(3_300));
    }
}
