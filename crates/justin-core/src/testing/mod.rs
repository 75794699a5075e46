//! In-memory implementations of the ports (feature `testing`), so that the use cases can be
//! tested without a database and without waiting on real time: [`MemoryStore`] for
//! [`Store`](crate::ports::Store) and [`TestingStore`](crate::ports::TestingStore),
//! [`ManualClock`] for [`Clock`](crate::ports::Clock) and [`RecordingNotifier`] for
//! [`CallbackNotifier`](crate::ports::CallbackNotifier). Like the rest of the core, they do no
//! IO.
//!
//! The memory store passes the store contract of the conformance suite, as the database
//! adapters do; each fake can also be told to fail the way its real counterpart does (a lost
//! connection, a full disk, an unreachable receiver), so that tests can drive the use cases
//! through their error paths deterministically.

mod clock;
mod memory;
mod notifier;

pub use clock::ManualClock;
pub use memory::MemoryStore;
pub use notifier::{Notification, RecordingNotifier};
