//! [`RecordingNotifier`]: callback delivery that records every attempt and fails on demand.

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::ports::{BoxError, CallbackNotifier, CallbackPayload};

/// One attempt to deliver a callback, as a [`RecordingNotifier`] saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Where it was sent.
    pub url: String,
    /// What was sent.
    pub payload: CallbackPayload,
    /// Whether the attempt succeeded.
    pub delivered: bool,
}

/// A [`CallbackNotifier`] for tests: it sends nothing, records every attempt, and fails the
/// attempts a test asks it to ([`RecordingNotifier::fail_next`],
/// [`RecordingNotifier::set_unreachable`]) as a receiver that cannot be reached would.
#[derive(Debug, Default)]
pub struct RecordingNotifier {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    attempts: Vec<Notification>,
    alerts: Vec<(String, serde_json::Value, bool)>,
    fail_next: u32,
    unreachable: bool,
}

impl RecordingNotifier {
    /// A receiver that takes every callback.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next `attempts` attempts fail; later ones succeed again.
    pub fn fail_next(&self, attempts: u32) {
        self.lock().fail_next = attempts;
    }

    /// While `unreachable` is true, every attempt fails.
    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    /// Every attempt so far, in order.
    pub fn attempts(&self) -> Vec<Notification> {
        self.lock().attempts.clone()
    }

    /// The payloads delivered so far, in order.
    pub fn delivered(&self) -> Vec<CallbackPayload> {
        self.lock()
            .attempts
            .iter()
            .filter(|n| n.delivered)
            .map(|n| n.payload.clone())
            .collect()
    }

    /// Every alert attempt so far, in order: (url, payload, delivered).
    pub fn alerts(&self) -> Vec<(String, serde_json::Value, bool)> {
        self.lock().alerts.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl CallbackNotifier for RecordingNotifier {
    fn notify(&self, url: &str, payload: &CallbackPayload) -> Result<(), BoxError> {
        let mut state = self.lock();
        let fails = if state.unreachable {
            true
        } else if state.fail_next > 0 {
            state.fail_next -= 1;
            true
        } else {
            false
        };
        state.attempts.push(Notification {
            url: url.to_owned(),
            payload: payload.clone(),
            delivered: !fails,
        });
        if fails {
            return Err(format!("{url} cannot be reached").into());
        }
        Ok(())
    }

    fn notify_alert(&self, url: &str, payload: &serde_json::Value) -> Result<(), BoxError> {
        let mut state = self.lock();
        let fails = if state.unreachable {
            true
        } else if state.fail_next > 0 {
            state.fail_next -= 1;
            true
        } else {
            false
        };
        state.alerts.push((url.to_owned(), payload.clone(), !fails));
        if fails {
            return Err(format!("{url} cannot be reached").into());
        }
        Ok(())
    }
}
