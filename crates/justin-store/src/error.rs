//! Errors of this adapter: [`SetupError`] for start-up (connecting, creating the database,
//! migrating), and the mapping of Diesel and pool failures onto the port's
//! [`StoreError`], which names what the core can act on (a duplicate user, an unknown user,
//! study data uploaded already, an unreachable database) and keeps everything else as a source.

use diesel::result::{DatabaseErrorKind, Error as DieselError};
use justin_core::StoreError;

/// Why the store could not be set up. Messages name the database by its URL with any password
/// masked, and end with the underlying reason.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A setting is out of range; the message says which.
    #[error("invalid database settings: {0}")]
    InvalidConfig(String),
    /// The configured URL is not a PostgreSQL URL this adapter can work with.
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl {
        /// The URL, password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No connection could be made.
    #[error("cannot connect to the database at {url}: {reason}")]
    Connect {
        /// The URL, password masked.
        url: String,
        /// The driver's or pool's reason.
        reason: String,
    },
    /// The database did not exist and could not be created.
    #[error("cannot create the database {database:?} at {url}: {reason}")]
    CreateDatabase {
        /// The database that was to be created.
        database: String,
        /// The maintenance URL used, password masked.
        url: String,
        /// The server's reason.
        reason: String,
    },
    /// The embedded migrations could not be applied.
    #[error("cannot run the database migrations: {reason}")]
    Migrate {
        /// The migration harness's reason.
        reason: String,
    },
}

/// Constraint names from `migrations/`, for telling which rule a write broke.
mod constraint {
    pub const USERS_USER_ID: &str = "users_user_id_key";
    pub const STUDY_DATA_USER_DECISION: &str = "study_data_user_decision_key";
    pub const ACTIONS_USER_FK: &str = "actions_user_id_fkey";
    pub const STUDY_DATA_USER_FK: &str = "study_data_user_id_fkey";
    pub const ACTIONS_PARAMETER_VERSION_FK: &str = "actions_parameter_version_fkey";
}

/// Maps a Diesel error onto the port's error.
///
/// Named cases are recognised by constraint name, not just by kind, so that (say) a foreign
/// key violation on `parameter_version` is not mistaken for an unknown user.
pub(crate) fn from_diesel(e: DieselError) -> StoreError {
    match &e {
        DieselError::DatabaseError(kind, info) => {
            let constraint = info.constraint_name();
            match (kind, constraint) {
                (DatabaseErrorKind::UniqueViolation, Some(constraint::USERS_USER_ID)) => {
                    StoreError::UserExists
                }
                (
                    DatabaseErrorKind::UniqueViolation,
                    Some(constraint::STUDY_DATA_USER_DECISION),
                ) => StoreError::StudyDataExists,
                (
                    DatabaseErrorKind::ForeignKeyViolation,
                    Some(constraint::ACTIONS_USER_FK | constraint::STUDY_DATA_USER_FK),
                ) => StoreError::UnknownUser,
                (
                    DatabaseErrorKind::ForeignKeyViolation,
                    Some(constraint::ACTIONS_PARAMETER_VERSION_FK),
                ) => StoreError::UnknownParameterVersion,
                _ if is_lost_connection(&e) => StoreError::Unavailable(Box::new(e)),
                _ => StoreError::Other(Box::new(e)),
            }
        }
        _ if is_lost_connection(&e) => StoreError::Unavailable(Box::new(e)),
        _ => StoreError::Other(Box::new(e)),
    }
}

/// Whether Diesel says the connection itself is gone, not that the statement failed: libpq
/// found it closed (`ClosedConnection`), could not send on it (`UnableToSendCommand`, "no
/// connection to the server": nothing was sent), or the transaction manager gave up on a
/// connection whose socket died mid-transaction.
pub(crate) fn is_lost_connection(e: &DieselError) -> bool {
    match e {
        DieselError::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _,
        )
        | DieselError::BrokenTransactionManager => true,
        DieselError::RollbackErrorOnCommit { commit_error, .. } => is_lost_connection(commit_error),
        _ => false,
    }
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
