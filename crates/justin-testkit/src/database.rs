//! The test database of the backend the run asks for. `make test` runs the HTTP and the
//! end-to-end suites once per backend by setting [`BACKEND_VAR`]; each test creates its own
//! database, so tests run in parallel without seeing each other's rows. Creating one is the
//! business of each adapter's `testing` module; this only chooses between them.

use std::sync::Arc;

/// The environment variable choosing the storage backend: `postgres` (the default) or
/// `sqlite`.
pub const BACKEND_VAR: &str = "JUSTIN_TEST_BACKEND";

/// A storage backend the service can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL, on the test server `JUSTIN_TEST_DATABASE_URL` names.
    Postgres,
    /// SQLite, in a file of a scratch directory.
    Sqlite,
}

/// A fresh, migrated database, dropped with the value.
#[derive(Debug)]
pub enum TestDatabase {
    /// A database on the test PostgreSQL server.
    Postgres(justin_store::testing::TestDatabase),
    /// A SQLite file in a scratch directory.
    Sqlite(justin_store_sqlite::testing::TestDatabase),
}

impl TestDatabase {
    /// One of the backend [`BACKEND_VAR`] names.
    ///
    /// # Panics
    /// When the variable names no backend (the message names the variable), or the database
    /// cannot be created.
    pub fn create() -> Self {
        match std::env::var(BACKEND_VAR).as_deref() {
            Ok("sqlite") => Self::Sqlite(justin_store_sqlite::testing::TestDatabase::create()),
            Ok("postgres") | Err(_) => {
                Self::Postgres(justin_store::testing::TestDatabase::create())
            }
            Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected postgres or sqlite"),
        }
    }

    /// The database's URL, as `database.url` takes it.
    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(db) => db.url(),
        }
    }

    /// Its backend.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The storage port on this database, for tests that drive the core directly.
    pub fn store(&self) -> Arc<dyn justin_core::Store> {
        match self {
            Self::Postgres(db) => Arc::new(db.store().clone()),
            Self::Sqlite(db) => Arc::new(db.store().clone()),
        }
    }
}
