//! Fresh databases for tests (feature `testing`).
//!
//! [`TestDatabase::create`] makes a migrated database file of its own under the system's
//! temporary directory and removes it (with its WAL files) when the value goes out of scope.
//! Tests therefore run against real SQLite, in parallel, without seeing each other's rows, and
//! need nothing installed.

// Test support: a test that cannot get its database must stop with a message, not carry on.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{SqliteConfig, SqliteStore};

/// A database file that exists for one test.
pub struct TestDatabase {
    dir: PathBuf,
    url: String,
    store: Option<SqliteStore>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl TestDatabase {
    /// Creates and migrates a database in a new temporary directory, with the default
    /// settings but a pool of 8.
    ///
    /// # Panics
    /// When the database cannot be created: a test without its database must fail.
    pub fn create() -> Self {
        Self::with_config(|_| {})
    }

    /// Like [`TestDatabase::create`], with `adjust` applied to the configuration first (for
    /// a short update lease, say). The URL is set after `adjust`.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub fn with_config(adjust: impl FnOnce(&mut SqliteConfig)) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "justin-sqlite-test-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let url = format!("sqlite://{}", dir.join("study.db").display());
        let mut config = test_config(&url);
        adjust(&mut config);
        config.url.clone_from(&url);
        let store = SqliteStore::connect(&config)
            .unwrap_or_else(|e| panic!("cannot open the test database {url}: {e}"));
        Self {
            dir,
            url,
            store: Some(store),
        }
    }

    /// The URL of this database (for code under test that opens it on its own).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The directory holding the database file, removed with it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Another store on the same file, as a second process would open it.
    ///
    /// # Panics
    /// When it cannot be opened.
    pub fn open_again(&self, adjust: impl FnOnce(&mut SqliteConfig)) -> SqliteStore {
        let mut config = test_config(&self.url);
        adjust(&mut config);
        config.url.clone_from(&self.url);
        SqliteStore::connect(&config)
            .unwrap_or_else(|e| panic!("cannot open the test database again: {e}"))
    }

    /// Runs the newest migration's `down.sql`, leaving the schema one migration back, and
    /// returns that migration's version. [`SqliteStore::run_migrations`] applies it again.
    ///
    /// # Panics
    /// When the migration cannot be reverted.
    pub fn revert_last_migration(&self) -> String {
        use diesel::Connection;
        use diesel_migrations::MigrationHarness;
        let path = self.url.trim_start_matches(crate::setup::URL_PREFIX);
        let mut conn = diesel::SqliteConnection::establish(path).unwrap();
        diesel::connection::SimpleConnection::batch_execute(
            &mut conn,
            "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON;",
        )
        .unwrap();
        conn.revert_last_migration(crate::setup::MIGRATIONS)
            .unwrap_or_else(|e| panic!("cannot revert the newest migration: {e}"))
            .to_string()
    }

    /// A migrated store on this database.
    pub fn store(&self) -> &SqliteStore {
        self.store
            .as_ref()
            .expect("the store exists until the database is dropped")
    }
}

fn test_config(url: &str) -> SqliteConfig {
    SqliteConfig {
        url: url.to_owned(),
        pool_size: 8,
        // Generous: a loaded CI machine must not turn contention into failures.
        busy_timeout: Duration::from_secs(30),
        run_migrations: true,
        update_lease: Duration::from_secs(600),
    }
}

impl justin_core::conformance::StoreFixture for TestDatabase {
    fn store(&self) -> &dyn justin_core::TestingStore {
        TestDatabase::store(self)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Close the pool first, so the files are not in use when removed.
        drop(self.store.take());
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            // Never panic in Drop (it may run during unwinding); a leftover directory is
            // harmless and its name says where it came from.
            eprintln!("warning: could not remove {}: {e}", self.dir.display());
        }
    }
}
