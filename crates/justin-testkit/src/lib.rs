//! Test helpers shared by the workspace's test suites, each written once: a scratch directory
//! removed at drop ([`ScratchDir`]), a fresh database of the backend `JUSTIN_TEST_BACKEND`
//! names ([`TestDatabase`]), SQL on it in both dialects ([`sql`]), an HTTP client for the
//! service's JSON API ([`Client`]), the receiver of its update callbacks
//! ([`CallbackReceiver`]) and a WebDriver client of headless Chromium for its pages
//! ([`Browser`]).
//!
//! This crate is dev-only: the HTTP suite, the end-to-end suite and the stores' conformance
//! tests use it; no shipped binary does. What is specific to one storage adapter (creating a
//! PostgreSQL database, a SQLite file) stays in that adapter's `testing` module, which
//! [`TestDatabase`] chooses between. The callback receiver itself is production code of `justin simulate`
//! ([`justin_simulate::callback`]); [`CallbackReceiver`] only gives it the tests' shape.
//!
//! These helpers run inside tests only, so a failure to set up is a panic with a message saying
//! what to fix, never an error to handle.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod callback;
pub mod database;
pub mod http;
pub mod scratch;
pub mod sql;
pub mod webdriver;

use std::time::Duration;

pub use callback::CallbackReceiver;
pub use database::{Backend, TestDatabase, BACKEND_VAR};
pub use http::{Client, Reply};
pub use scratch::ScratchDir;
pub use sql::{connect, execute, row_counts, sql_lines, TestConnection, TABLES};
pub use webdriver::Browser;

/// The longest a test waits for something that should come (an answer, a callback, a process
/// starting) before it fails.
pub const WAIT: Duration = Duration::from_secs(60);
