//! The ports: what the core needs from the outside world, as traits with written contracts.
//!
//! Adapters implement them (`justin-store` for [`Store`], `justin-http` for [`Clock`] and
//! [`CallbackNotifier`]). Every storage adapter passes the conformance suite in
//! [`crate::conformance`] (feature `conformance`), which checks the `MUST`s written here.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::domain::{Decision, ModelParameters, StudyRecord, UpdateRequest, UserId};

/// A boxed error from an adapter, kept as the `source` of a domain error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a storage adapter can report.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The participant id is registered already.
    #[error("user already exists")]
    UserExists,
    /// The participant id is not registered.
    #[error("user not found")]
    UnknownUser,
    /// Study data was already uploaded for this (user, decision index).
    #[error("study data already uploaded for this decision")]
    StudyDataExists,
    /// No update request has this id.
    #[error("update request not found")]
    UnknownUpdate,
    /// The decision names a parameter version that is not stored (for instance after a reset
    /// by another process): the caller's view of the current parameters is stale.
    #[error("parameter version not found")]
    UnknownParameterVersion,
    /// The database cannot be reached or gave no connection in time.
    #[error("storage unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else; the source says what.
    #[error("storage failed")]
    Other(#[source] BoxError),
}

/// The outcome of recording a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The decision was new and is now stored.
    Inserted,
    /// A decision for this (user, decision index) was stored before; here it is, unchanged.
    Existing(Decision),
}

/// How an update request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateOutcome {
    /// A new parameter version was stored.
    Completed {
        /// The version produced.
        parameter_version: i64,
    },
    /// No new parameters; the reason.
    Failed {
        /// What went wrong, for operators.
        error: String,
    },
}

/// A backup written to disk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupReport {
    /// The backup file.
    pub path: PathBuf,
    /// Rows written, per table.
    pub row_counts: Vec<(String, u64)>,
}

/// Study data, streamed. Errors end the stream.
pub type StudyDataStream = Box<dyn Iterator<Item = Result<StudyRecord, StoreError>> + Send>;

/// Durable storage of a study.
///
/// Every method is one unit of work: it either happens whole or not at all.
pub trait Store: Send + Sync {
    /// Registers a participant.
    ///
    /// # Errors
    /// MUST return [`StoreError::UserExists`] when the id is registered already.
    fn add_user(&self, user: &UserId, created_at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Stores a decision exactly once per (user, decision index).
    ///
    /// MUST return [`Recorded::Existing`] with the stored decision, and store nothing, when a
    /// decision for the pair exists; concurrent calls for one pair MUST store exactly one.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] when the participant is not registered,
    /// [`StoreError::StudyDataExists`] when study data was uploaded for the pair already, and
    /// [`StoreError::UnknownParameterVersion`] when the decision's parameter version is not
    /// stored.
    fn record_decision(&self, decision: &Decision) -> Result<Recorded, StoreError>;

    /// Stores uploaded study data, once per (user, decision index).
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUser`] when the participant is not registered and
    /// [`StoreError::StudyDataExists`] when data for the pair was uploaded already.
    fn record_study_data(&self, record: &StudyRecord) -> Result<(), StoreError>;

    /// The newest parameter version, or `None` before any was stored.
    ///
    /// # Errors
    /// Only on storage failure.
    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError>;

    /// Parameter version `version`, if it exists.
    ///
    /// # Errors
    /// Only on storage failure.
    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError>;

    /// Stores parameters as version 1 when no version exists yet, and returns the current
    /// version either way. Concurrent calls MUST leave exactly one version 1.
    ///
    /// # Errors
    /// Only on storage failure.
    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError>;

    /// Stores parameters as the next version (the newest plus one) and returns it. Versions
    /// MUST increase by one with no gaps.
    ///
    /// # Errors
    /// Only on storage failure.
    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError>;

    /// Every study record stored when the call starts, in upload order, without loading them
    /// all into memory. Records stored after the call starts MUST NOT appear.
    ///
    /// # Errors
    /// On storage failure, here or as an item of the stream.
    fn study_data(&self) -> Result<StudyDataStream, StoreError>;

    /// Stores a new update request (status `processing`).
    ///
    /// # Errors
    /// Only on storage failure.
    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError>;

    /// Records how an update request ended.
    ///
    /// # Errors
    /// MUST return [`StoreError::UnknownUpdate`] when no request has this id.
    fn finish_update_request(
        &self,
        id: Uuid,
        outcome: &UpdateOutcome,
        finished_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// An update request, if it exists.
    ///
    /// # Errors
    /// Only on storage failure.
    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError>;

    /// Writes one consistent snapshot of every table into a new file in `dir` (created when
    /// missing) and returns where. A failed backup MUST leave no partial file under the final
    /// name.
    ///
    /// # Errors
    /// On storage or file-system failure.
    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError>;

    /// Rows per table, for reports such as what a reset would delete.
    ///
    /// # Errors
    /// Only on storage failure.
    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError>;

    /// Deletes every row of every table and restarts the identity sequences.
    ///
    /// # Errors
    /// Only on storage failure.
    fn reset(&self) -> Result<(), StoreError>;

    /// Answers when the database does.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when it does not.
    fn ping(&self) -> Result<(), StoreError>;
}

/// The time, as the service sees it.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// What a callback receiver is told when an update ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum CallbackPayload {
    /// The update stored a new parameter version.
    Completed {
        /// The update's id.
        update_id: Uuid,
        /// When it finished.
        timestamp: DateTime<Utc>,
    },
    /// The update failed; the parameters are unchanged.
    Failed {
        /// The update's id.
        update_id: Uuid,
        /// Always "Model update failed."; the reason is stored, not sent.
        message: String,
    },
}

/// Delivers callbacks to the study server.
pub trait CallbackNotifier: Send + Sync {
    /// POSTs `payload` as JSON to `url`.
    ///
    /// # Errors
    /// MUST return an error when the receiver cannot be reached or answers with a non-2xx
    /// status.
    fn notify(&self, url: &str, payload: &CallbackPayload) -> Result<(), BoxError>;
}
