//! The tests' side of the service's update callbacks: the receiver `justin simulate` uses
//! ([`justin_simulate::callback::Receiver`]), on a free loopback port, handing each request
//! over as JSON so a test can index into it. A request the receiver could not use arrives as
//! `{"receiver_error": "<why>"}`, so a malformed callback fails the test with its reason
//! rather than with a timeout.

use std::time::Duration;

use justin_simulate::callback::{Arrival, Receiver};
use serde_json::{json, Value};

use crate::WAIT;

/// A local HTTP server that receives callbacks and hands their JSON bodies to the test.
#[derive(Debug)]
pub struct CallbackReceiver(Receiver);

impl CallbackReceiver {
    /// Starts listening on a free loopback port, answering 200 to a callback (400 to anything
    /// else).
    ///
    /// # Panics
    /// When no loopback port can be listened on.
    pub fn start() -> Self {
        Self(Receiver::start("127.0.0.1:0", None).unwrap_or_else(|e| panic!("{e}")))
    }

    /// Starts listening on a free loopback port; answers `status` to the first `failures`
    /// requests and 200 to every one after (`usize::MAX` failures: always `status`).
    ///
    /// # Panics
    /// When no loopback port can be listened on.
    pub fn failing_first(failures: usize, status: u16) -> Self {
        let answer = move |before: usize, _: &Arrival| if before < failures { status } else { 200 };
        Self(
            Receiver::start_answering("127.0.0.1:0", None, answer)
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// Where to send callbacks.
    pub fn url(&self) -> &str {
        self.0.url()
    }

    /// The next callback body, waiting at most [`WAIT`].
    ///
    /// # Panics
    /// When none arrives in time.
    pub fn next(&self) -> Value {
        self.next_within(WAIT)
            .unwrap_or_else(|| panic!("no callback arrived within {WAIT:?}"))
    }

    /// The next callback body, waiting at most `wait`; `None` when none came.
    pub fn next_within(&self, wait: Duration) -> Option<Value> {
        self.0.next(wait).map(body)
    }

    /// A callback body received already and not taken yet, without waiting.
    pub fn try_next(&self) -> Option<Value> {
        self.0.try_next().map(body)
    }
}

/// The arrival's body, or the receiver's reason as `{"receiver_error": ...}`.
fn body(arrival: Arrival) -> Value {
    arrival
        .body
        .unwrap_or_else(|why| json!({ "receiver_error": why }))
}
