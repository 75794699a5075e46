//! What the use cases fail with: [`DomainError`], with the mapping of the ports' errors onto
//! it, and [`error_chain`], the text of an error with its sources.

use crate::algorithm::AlgorithmError;
use crate::ports::StoreError;

/// Everything a use case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// The participant id is registered already.
    #[error("User already exists.")]
    UserExists,
    /// The participant id is not registered.
    #[error("User not found.")]
    UserNotFound,
    /// Study data exists for this decision already.
    #[error("Decision index already exists.")]
    DecisionExists,
    /// An upload's action or probability differs from the logged decision.
    #[error("The uploaded action ({uploaded_action}) and action_prob ({uploaded_prob}) must match the logged decision (action {logged_action}, action_prob {logged_prob}).")]
    UploadMismatch {
        /// The uploaded action.
        uploaded_action: i16,
        /// The uploaded probability.
        uploaded_prob: f64,
        /// The logged action.
        logged_action: i16,
        /// The logged probability.
        logged_prob: f64,
    },
    /// A correction names a decision with no upload to correct.
    #[error("No upload to correct for this decision index.")]
    NothingToCorrect,
    /// A correction's action or probability differs from the original upload's.
    #[error("A correction's action ({uploaded_action}) and action_prob ({uploaded_prob}) must match the original upload (action {original_action}, action_prob {original_prob}).")]
    CorrectionMismatch {
        /// The correction's action.
        uploaded_action: i16,
        /// The correction's probability.
        uploaded_prob: f64,
        /// The original upload's action.
        original_action: i16,
        /// The original upload's probability.
        original_prob: f64,
    },
    /// The participant has withdrawn already.
    #[error("User already withdrawn.")]
    AlreadyWithdrawn,
    /// A host decision was sent for a key that holds a different decision (the stored one).
    #[error("A different decision is stored for this decision index.")]
    DecisionDiffers(Box<crate::domain::Decision>),
    /// A file given to restore is not a complete backup; nothing was changed.
    #[error("{0}")]
    InvalidBackup(String),
    /// No update request has this id.
    #[error("Update not found.")]
    UpdateNotFound,
    /// No parameter version has this number.
    #[error("Parameter version not found.")]
    ParametersNotFound,
    /// The client's context or outcome is unusable; the message says why.
    #[error("{0}")]
    InvalidInput(String),
    /// The database cannot be reached, or cannot take the write now (a decision outrun by
    /// new parameter versions on every try); a retry a moment later may succeed.
    #[error(transparent)]
    Unavailable(StoreError),
    /// The service is misconfigured or its stored state is inconsistent.
    #[error("{0}")]
    Setup(String),
    /// The algorithm failed on input that was not the client's fault.
    #[error("algorithm failed")]
    Algorithm(#[source] AlgorithmError),
    /// Storage failed.
    #[error(transparent)]
    Store(StoreError),
}

impl From<StoreError> for DomainError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UserExists => Self::UserExists,
            StoreError::UnknownUser => Self::UserNotFound,
            StoreError::StudyDataExists => Self::DecisionExists,
            StoreError::NothingToCorrect => Self::NothingToCorrect,
            StoreError::UnknownUpdate => Self::UpdateNotFound,
            StoreError::AlreadyWithdrawn => Self::AlreadyWithdrawn,
            StoreError::DecisionDiffers(stored) => Self::DecisionDiffers(stored),
            StoreError::InvalidBackup(why) => {
                Self::InvalidBackup(format!("not a complete backup: {why}"))
            }
            // Only upload_data can meet this, and it maps it with the uploaded values itself.
            e @ StoreError::UploadMismatch { .. } => Self::Store(e),
            e @ StoreError::Unavailable(_) => Self::Unavailable(e),
            e @ (StoreError::Other(_) | StoreError::UnknownParameterVersion) => Self::Store(e),
        }
    }
}

impl From<AlgorithmError> for DomainError {
    fn from(e: AlgorithmError) -> Self {
        match e {
            AlgorithmError::InvalidInput(msg) => Self::InvalidInput(msg),
            other => Self::Algorithm(other),
        }
    }
}

/// An error and its sources, joined with ": ", for stored and logged failure reasons.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
