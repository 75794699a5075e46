//! Corrected uploads: a study server that learns it uploaded a wrong value sends the upload
//! again as a correction. The original is kept; the correction is stored beside it and is the
//! value updates learn from once it is stored. A decision's history shows all of them.

use crate::domain::{CorrectionRecorded, DecisionHistory, DecisionIdx, DecisionType, UserId};
use crate::ports::StoreError;

use super::{DomainError, Service, UploadRequest};

impl Service {
    /// Stores a correction of the upload stored for the request's key, with the reward the
    /// algorithm derives from the corrected outcome (checked as an upload is).
    ///
    /// # Errors
    /// [`DomainError::InvalidInput`] for a context or outcome the algorithm cannot use,
    /// [`DomainError::NothingToCorrect`] when no upload is stored for the key, and
    /// [`DomainError::CorrectionMismatch`] when its action or probability differs from the
    /// original upload's.
    pub fn correct_upload(&self, req: UploadRequest) -> Result<CorrectionRecorded, DomainError> {
        let recorded = self.correct_upload_untracked(req);
        self.track_write(recorded)
    }

    fn correct_upload_untracked(
        &self,
        req: UploadRequest,
    ) -> Result<CorrectionRecorded, DomainError> {
        let record = self.study_record(req)?;
        match self.store.record_correction(&record) {
            Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }) => Err(DomainError::CorrectionMismatch {
                uploaded_action: record.action.as_i16(),
                uploaded_prob: record.action_prob.get(),
                original_action: logged_action.as_i16(),
                original_prob: logged_prob.get(),
            }),
            other => Ok(other?),
        }
    }

    /// Everything stored for one decision key: the decision, its upload and the upload's
    /// corrections; `None` when nothing is stored for the key.
    ///
    /// # Errors
    /// Only on storage failure.
    pub fn decision_history(
        &self,
        user: &UserId,
        decision_type: &DecisionType,
        decision_idx: DecisionIdx,
    ) -> Result<Option<DecisionHistory>, DomainError> {
        Ok(self
            .store
            .decision_history(user, decision_type, decision_idx)?)
    }
}
