//! The Diesel + PostgreSQL storage adapter of JustIn: [`PgStore`] implements the core's
//! [`justin_core::Store`] port over an r2d2 connection pool.
//!
//! The binary builds one with [`PgStore::connect`] from a [`PgConfig`], which can create the
//! database and apply the migrations embedded from the workspace's `migrations/postgres` directory;
//! the `migrate` subcommand calls [`PgStore::run_migrations`]. With the `testing` feature,
//! [`testing::TestDatabase`] gives tests a fresh, migrated database of their own.

mod backup;
mod by_participant;
mod corrections;
mod dashboard;
mod error;
mod group;
mod jobs;
mod models;
mod monitor;
mod pg;
mod pool_events;
mod pool_log;
mod restore;
mod schema;
mod setup;
mod stream;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::SetupError;
pub use pg::{PgConfig, PgStore};
pub use setup::mask_password;
