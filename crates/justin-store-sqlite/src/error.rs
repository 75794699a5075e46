//! Errors of this adapter: [`SetupError`] for start-up (opening the file, configuring
//! connections, migrating), and the mapping of Diesel and pool failures onto the port's
//! [`StoreError`].
//!
//! SQLite names the columns of a broken UNIQUE constraint in its message but never the foreign
//! key that failed, so unique violations are told apart here while foreign-key failures are
//! classified by the caller, who knows which references the statement had and can look.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use justin_core::StoreError;

/// Why the store could not be set up. Messages name the database by its URL and end with the
/// underlying reason.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is out of range; the message says which.
    #[error("invalid database settings: {0}")]
    InvalidConfig(String),
    /// The configured URL is not a SQLite URL this adapter can work with.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The database file could not be opened or configured.
    #[error("cannot open the SQLite database at {url}: {reason}")]
    Connect {
        /// The URL as configured.
        url: String,
        /// SQLite's or the pool's reason.
        reason: String,
    },
    /// The embedded migrations could not be applied.
    #[error("cannot run the database migrations: {reason}")]
    Migrate {
        /// The migration harness's reason.
        reason: String,
    },
}

/// What SQLite says when a lock could not be had within the busy timeout.
fn is_busy(message: &str) -> bool {
    message.contains("database is locked") || message.contains("database table is locked")
}

/// Maps a Diesel error onto the port's error.
///
/// Unique violations are recognised by the columns SQLite names ("UNIQUE constraint failed:
/// users.user_id"), so that a duplicate in one table is not mistaken for one in another.
pub(crate) fn from_diesel(e: DieselError) -> StoreError {
    match &e {
        DieselError::DatabaseError(kind, info) => {
            let message = info.message();
            match kind {
                DatabaseErrorKind::UniqueViolation if message.contains("users.user_id") => {
                    StoreError::UserExists
                }
                DatabaseErrorKind::UniqueViolation
                    if message.contains(
                        "study_data.user_id, study_data.decision_type, study_data.decision_idx",
                    ) =>
                {
                    StoreError::StudyDataExists
                }
                DatabaseErrorKind::ClosedConnection => StoreError::Unavailable(Box::new(e)),
                // Contention longer than the busy timeout: as good as unreachable for the
                // caller, and worth retrying later.
                _ if is_busy(message) => StoreError::Unavailable(Box::new(e)),
                _ => StoreError::Other(Box::new(e)),
            }
        }
        DieselError::BrokenTransactionManager => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Other(Box::new(e)),
    }
}

/// Whether [`from_diesel`] makes `e` [`StoreError::Unavailable`]: worth retrying later.
pub(crate) fn is_unavailable(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => true,
        DieselError::DatabaseError(_, info) => is_busy(info.message()),
        DieselError::BrokenTransactionManager => true,
        _ => false,
    }
}

/// Whether `e` is a failed foreign-key check, which the caller classifies.
pub(crate) fn is_foreign_key_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::ForeignKeyViolation, _)
    )
}

/// Maps a failed pool checkout: no connection within the timeout means the database is, for
/// the caller's purposes, unavailable.
pub(crate) fn from_pool(e: r2d2::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// Wraps a failure that has no better home (file-system errors, stored data that no longer
/// parses) as [`StoreError::Other`].
pub(crate) fn other(e: impl Into<justin_core::BoxError>) -> StoreError {
    StoreError::Other(e.into())
}
