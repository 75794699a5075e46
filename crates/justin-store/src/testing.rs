//! Fresh databases for tests (feature `testing`).
//!
//! [`TestDatabase::create`] makes a uniquely named database on the server that
//! `JUSTIN_TEST_DATABASE_URL` points at (default: the local `postgres` database), applies the
//! migrations, and drops the database again when the value goes out of scope. Tests therefore
//! run against real PostgreSQL, in parallel, without seeing each other's rows.

// Test support: a test that cannot get its database must stop with a message, not carry on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use diesel::connection::SimpleConnection;

use crate::pg::{PgConfig, PgStore};
use crate::setup::{self, quote_identifier, PgUrl};

/// The environment variable naming the server tests use, as the URL of a database on it that
/// the user may connect to and create databases from.
pub const DATABASE_URL_VAR: &str = "JUSTIN_TEST_DATABASE_URL";

/// Where tests look when [`DATABASE_URL_VAR`] is not set.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

const TIMEOUT: Duration = Duration::from_secs(5);

/// A database that exists for one test.
pub struct TestDatabase {
    /// The server's URL, as configured (used again to drop the database).
    server_url: String,
    name: String,
    url: String,
    store: Option<PgStore>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates and migrates a database named `justin_test_<uuid>`.
    ///
    /// # Panics
    /// When the server cannot be reached or refuses: a test without its database must fail,
    /// never pass by skipping. The message says how to point the tests at a server.
    pub fn create() -> Self {
        let server_url =
            std::env::var(DATABASE_URL_VAR).unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
        let parsed = PgUrl::parse(&server_url)
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} must be a postgres:// URL: {e}"));
        let name = format!("justin_test_{}", uuid::Uuid::new_v4().simple());
        if let Err(e) = setup::create_database(&server_url, &name, TIMEOUT) {
            panic!(
                "cannot create a test database: {e}\n\
                 The store tests need a PostgreSQL server. Start one, or set \
                 {DATABASE_URL_VAR} to the URL of a database on a server where this user may \
                 CREATE DATABASE (default: {DEFAULT_DATABASE_URL})."
            );
        }
        let url = parsed.with_database(&name);
        let mut db = Self {
            server_url,
            name,
            url,
            store: None,
        };
        // Test data need not survive a crash; not waiting for the WAL flush on every commit
        // keeps suites that insert many rows fast.
        if let Err(e) = admin(
            &db.server_url,
            &format!(
                "ALTER DATABASE {} SET synchronous_commit = off",
                quote_identifier(&db.name)
            ),
        ) {
            panic!("cannot configure the test database {}: {e}", db.name);
        }
        let store = PgStore::connect(&PgConfig {
            url: db.url.clone(),
            pool_size: 4,
            connect_timeout: TIMEOUT,
            create_if_missing: false,
            run_migrations: true,
        })
        .unwrap_or_else(|e| panic!("cannot open the test database {}: {e}", db.name));
        db.store = Some(store);
        db
    }

    /// The URL of this database (for code under test that connects on its own).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs the newest migration's `down.sql`, leaving the schema one migration back, and
    /// returns that migration's version. [`PgStore::run_migrations`] applies it again.
    ///
    /// # Panics
    /// When the migration cannot be reverted.
    pub fn revert_last_migration(&self) -> String {
        use diesel_migrations::MigrationHarness;
        let mut conn = setup::connect_once(&self.url, TIMEOUT).unwrap();
        conn.revert_last_migration(setup::MIGRATIONS)
            .unwrap_or_else(|e| panic!("cannot revert the newest migration: {e}"))
            .to_string()
    }

    /// A migrated store on this database (pool of 4 connections).
    pub fn store(&self) -> &PgStore {
        self.store
            .as_ref()
            .expect("the store exists until the database is dropped")
    }
}

impl justin_core::conformance::StoreFixture for TestDatabase {
    fn store(&self) -> &dyn justin_core::TestingStore {
        TestDatabase::store(self)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Close the pool first so the drop rarely has to force anything.
        drop(self.store.take());
        let dropped = admin(
            &self.server_url,
            &format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_identifier(&self.name)
            ),
        );
        if let Err(e) = dropped {
            // Never panic in Drop (it may run during unwinding); a leftover database is
            // harmless and its name says where it came from.
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one statement on the server's own database, outside any pool.
fn admin(server_url: &str, sql: &str) -> Result<(), String> {
    let mut conn = setup::connect_once(server_url, TIMEOUT).map_err(|e| e.to_string())?;
    conn.batch_execute(sql).map_err(|e| e.to_string())
}
