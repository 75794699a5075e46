//! [`ManualClock`]: a clock whose time moves only when a test or a sleep moves it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::ports::Clock;

/// A [`Clock`] for tests: [`Clock::now`] answers a time the test sets, and [`Clock::sleep`]
/// returns at once, having moved that time on by the duration and recorded it, so a test of
/// retries with backoff runs in no time and can assert the waits ([`ManualClock::sleeps`]).
#[derive(Debug)]
pub struct ManualClock {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    now: DateTime<Utc>,
    sleeps: Vec<Duration>,
}

impl ManualClock {
    /// The time a [`ManualClock::default`] starts at: 2025-01-01T00:00:00Z.
    pub const START: i64 = 1_735_689_600;

    /// A clock showing `now`.
    pub fn starting_at(now: DateTime<Utc>) -> Self {
        Self {
            state: Mutex::new(State {
                now,
                sleeps: Vec::new(),
            }),
        }
    }

    /// Sets the time, forwards or backwards.
    pub fn set(&self, now: DateTime<Utc>) {
        self.lock().now = now;
    }

    /// Moves the time on by `by`, as a wait would, without recording a sleep.
    pub fn advance(&self, by: Duration) {
        let mut state = self.lock();
        state.now = later(state.now, by);
    }

    /// Every sleep so far, in order.
    pub fn sleeps(&self) -> Vec<Duration> {
        self.lock().sleeps.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        let start = DateTime::from_timestamp(Self::START, 0).unwrap_or(DateTime::UNIX_EPOCH);
        Self::starting_at(start)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep(&self, duration: Duration) {
        let mut state = self.lock();
        state.now = later(state.now, duration);
        state.sleeps.push(duration);
    }
}

/// `at` plus `by`, or the latest time there is when that lies beyond it.
fn later(at: DateTime<Utc>, by: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(by)
        .ok()
        .and_then(|by| at.checked_add_signed(by))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
