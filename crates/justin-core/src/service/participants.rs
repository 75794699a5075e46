//! The participant's life in the study: enrollment windows, changes to them, withdrawal and
//! erasure.

use uuid::Uuid;

use super::{DomainError, Service};
use crate::domain::{
    Enrollment, Erasure, Participant, ParticipantStatus, UserId, MAX_WITHDRAWAL_REASON_LEN,
};

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
        let added = self.store.add_user(user, enrollment, self.clock.now());
        self.track_write(added.map_err(DomainError::from))
    }

    /// A participant and where they stand now.
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`] for an unknown participant.
    pub fn participant(&self, user: &UserId) -> Result<ParticipantView, DomainError> {
        let participant = self
            .store
            .participant(user)?
            .ok_or(DomainError::UserNotFound)?;
        Ok(self.view(participant))
    }

    /// `participant` with where they stand at the service's clock.
    fn view(&self, participant: Participant) -> ParticipantView {
        let status = participant.status_at(self.clock.now());
        ParticipantView {
            participant,
            status,
        }
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
        let changed = self
            .store
            .change_enrollment(user, enrollment, self.clock.now());
        let changed = self.track_write(changed.map_err(DomainError::from))?;
        Ok(self.view(changed))
    }

    /// Withdraws a participant with a reason.
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a reason longer than
    /// [`MAX_WITHDRAWAL_REASON_LEN`] bytes, [`DomainError::UserNotFound`], or
    /// [`DomainError::AlreadyWithdrawn`].
    pub fn withdraw(&self, user: &UserId, reason: &str) -> Result<ParticipantView, DomainError> {
        if reason.len() > MAX_WITHDRAWAL_REASON_LEN {
            return Err(DomainError::InvalidInput(format!(
                "reason must be at most {MAX_WITHDRAWAL_REASON_LEN} bytes long."
            )));
        }
        let withdrawn = self.store.withdraw(user, reason, self.clock.now());
        let withdrawn = self.track_write(withdrawn.map_err(DomainError::from))?;
        Ok(self.view(withdrawn))
    }

    /// Takes a backup into `erasure_backup_dir`, then erases the participant in one
    /// transaction and returns the audit record.
    ///
    /// # Errors
    /// [`DomainError::UserNotFound`]; a failed backup erases nothing.
    pub fn erase_participant(&self, user: &UserId) -> Result<Erasure, DomainError> {
        // An unknown participant needs no backup.
        if self.store.participant(user)?.is_none() {
            return Err(DomainError::UserNotFound);
        }
        let backup = self.backup_to(&self.settings.erasure_backup_dir)?;
        log::info!(
            "backup before an erasure written to {}",
            backup.path.display()
        );
        let id = Uuid::new_v4();
        let erasure = Erasure {
            id,
            erased_at: self.clock.now(),
            // The store fills in the participant's row number and the counts.
            participant_number: 0,
            pseudonym: format!("erased-{id}"),
            row_counts: vec![],
            backup_file: backup.path.display().to_string(),
        };
        let erased = self.store.erase_participant(user, &erasure);
        let erased = self.track_write(erased.map_err(DomainError::from))?;
        log::info!(
            "participant erased (erasure {}, {} rows)",
            erased.id,
            erased.row_counts.iter().map(|(_, n)| n).sum::<u64>()
        );
        Ok(erased)
    }
}
