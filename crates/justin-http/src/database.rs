//! Which storage adapter `database.url` names, and the maintenance operations whose setup
//! differs between adapters (connecting, creating, migrating). This is the one module that
//! knows the adapters' concrete types; everything past it holds an `Arc<dyn Store>`.

use std::sync::Arc;
use std::time::Duration;

use justin_core::{NoTelemetry, Store, Telemetry};
use justin_store::{PgConfig, PgStore};
use justin_store_sqlite::{SqliteConfig, SqliteStore};

use crate::config::DatabaseConfig;

/// The storage adapters this build holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL (`postgres://` or `postgresql://`): the production database.
    Postgres,
    /// SQLite (`sqlite://<path>` or `sqlite://:memory:`): the zero-setup default.
    Sqlite,
}

impl Backend {
    /// The adapter a URL names.
    ///
    /// # Errors
    /// A message naming the accepted schemes when the URL has none of them.
    pub fn of(url: &str) -> Result<Self, String> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite://") {
            Ok(Self::Sqlite)
        } else {
            Err("must start with sqlite:// (a file, or sqlite://:memory:) or postgres://".into())
        }
    }
}

/// What opening a database may do besides connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenMode {
    /// Create the database when it does not exist.
    pub create_if_missing: bool,
    /// Apply pending migrations.
    pub run_migrations: bool,
}

impl OpenMode {
    /// Connect to what is there and change nothing (backup, restore, reset, replay).
    pub const AS_IS: Self = Self {
        create_if_missing: false,
        run_migrations: false,
    };

    /// As configured (serving).
    pub fn configured(db: &DatabaseConfig) -> Self {
        Self {
            create_if_missing: db.create_if_missing,
            run_migrations: db.run_migrations,
        }
    }
}

/// An open database of either kind.
#[derive(Debug, Clone)]
pub enum Database {
    /// PostgreSQL.
    Postgres(PgStore),
    /// SQLite.
    Sqlite(SqliteStore),
}

impl Database {
    /// Opens the configured database.
    ///
    /// # Errors
    /// A message saying what could not be done and with which (password-masked) URL.
    pub fn open(db: &DatabaseConfig, mode: OpenMode) -> Result<Self, String> {
        Self::open_observed(db, mode, Arc::new(NoTelemetry))
    }

    /// Opens the configured database, telling `telemetry` how long the store's pool
    /// checkouts wait (the metrics).
    ///
    /// # Errors
    /// A message saying what could not be done and with which (password-masked) URL.
    pub fn open_observed(
        db: &DatabaseConfig,
        mode: OpenMode,
        telemetry: Arc<dyn Telemetry>,
    ) -> Result<Self, String> {
        let timeout = Duration::from_secs(db.connect_timeout_secs);
        match Backend::of(&db.url).map_err(|e| format!("database.url {e}"))? {
            Backend::Postgres => PgStore::connect_observed(
                &PgConfig {
                    url: db.url.clone(),
                    pool_size: db.pool_size,
                    connect_timeout: timeout,
                    create_if_missing: mode.create_if_missing,
                    run_migrations: mode.run_migrations,
                },
                telemetry,
            )
            .map(Self::Postgres)
            .map_err(|e| e.to_string()),
            Backend::Sqlite => SqliteStore::connect_observed(
                &SqliteConfig {
                    url: db.url.clone(),
                    pool_size: db.pool_size,
                    busy_timeout: timeout,
                    run_migrations: mode.run_migrations,
                    ..SqliteConfig::default()
                },
                telemetry,
            )
            .map(Self::Sqlite)
            .map_err(|e| e.to_string()),
        }
    }

    /// The storage port.
    pub fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Postgres(s) => Arc::new(s.clone()),
            Self::Sqlite(s) => Arc::new(s.clone()),
        }
    }

    /// Applies pending migrations; returns their names.
    ///
    /// # Errors
    /// The migration harness's message.
    pub fn run_migrations(&self) -> Result<Vec<String>, String> {
        match self {
            Self::Postgres(s) => s.run_migrations().map_err(|e| e.to_string()),
            Self::Sqlite(s) => s.run_migrations().map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_picks_the_adapter() {
        assert_eq!(Backend::of("sqlite://justin.db"), Ok(Backend::Sqlite));
        assert_eq!(Backend::of("sqlite://:memory:"), Ok(Backend::Sqlite));
        assert_eq!(Backend::of("postgres://u@h/d"), Ok(Backend::Postgres));
        assert_eq!(Backend::of("postgresql://u@h/d"), Ok(Backend::Postgres));
        assert!(Backend::of("mysql://u@h/d").is_err());
        assert!(Backend::of("justin.db").is_err());
    }
}
