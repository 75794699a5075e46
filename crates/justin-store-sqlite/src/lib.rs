//! The Diesel + SQLite storage adapter of JustIn: [`SqliteStore`] implements the core's
//! [`justin_core::Store`] port over an r2d2 pool of connections to one database file, with
//! SQLite compiled into the binary. It is the zero-setup default; `justin-store` (PostgreSQL)
//! is the production adapter, and both pass the same conformance suite.
//!
//! The binary opens one with [`SqliteStore::connect`] from a [`SqliteConfig`] whose URL is
//! `sqlite://<path>` or `sqlite://:memory:`; it applies the migrations embedded from the
//! workspace's `migrations/sqlite/` directory, which the `migrate` subcommand also runs
//! through [`SqliteStore::run_migrations`]. Backups use the same file format as
//! `justin-store`'s, so a study moves between the adapters by backup and restore. With the
//! `testing` feature, [`testing::TestDatabase`] gives tests a fresh, migrated database file.

mod backup;
mod by_participant;
mod corrections;
mod dashboard;
mod error;
mod jobs;
mod models;
mod monitor;
mod pool_events;
mod restore;
mod schema;
mod setup;
mod store;
mod stream;
mod tables;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

pub use error::SetupError;
pub use setup::URL_PREFIX;
pub use store::{SqliteConfig, SqliteStore};
