//! The participant's life in the study: enrollment windows, changes to them, withdrawal and
//! erasure.

use super::{DomainError, Service};
use crate::domain::{Enrollment, Erasure, Participant, ParticipantStatus, UserId};

/// A participant as the API shows them: as stored, with where they stand now.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantView {
    /// The participant as stored.
    pub participant: Participant,
    /// Where they stand at the service's clock.
    pub status: ParticipantStatus,
}

impl Service {
    /// Registers a participant with their time in the study.
    ///
    /// # Errors
    /// [`DomainError::UserExists`] for an id registered already.
    pub fn add_user(&self, user: &UserId, enrollment: &Enrollment) -> Result<(), DomainError> {
        let _ = (user, enrollment);
        todo!("issue 15 core")
    }

    /// A participant and where they stand now.
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`] for an unknown participant.
    pub fn participant(&self, user: &UserId) -> Result<ParticipantView, DomainError> {
        let _ = user;
        todo!("issue 15 core")
    }

    /// Replaces a participant's time in the study (recorded in their history).
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`] for an unknown participant.
    pub fn change_enrollment(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
    ) -> Result<ParticipantView, DomainError> {
        let _ = (user, enrollment);
        todo!("issue 15 core")
    }

    /// Withdraws a participant with a reason.
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`], or [`DomainError::AlreadyWithdrawn`].
    pub fn withdraw(&self, user: &UserId, reason: &str) -> Result<ParticipantView, DomainError> {
        let _ = (user, reason);
        todo!("issue 15 core")
    }

    /// Takes a backup into `erasure_backup_dir`, then erases the participant in one
    /// transaction and returns the audit record.
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`]; a failed backup erases nothing.
    pub fn erase_participant(&self, user: &UserId) -> Result<Erasure, DomainError> {
        let _ = user;
        todo!("issue 15 core")
    }
}
