//! [`MemoryStore`]: the storage ports held in memory, for tests.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    CallbackDelivery, Decision, DecisionIdx, DecisionType, ExportRow, ExportedUpload,
    ModelParameters, Provenance, StudyRecord, UpdateRequest, UpdateStatus, UserId,
};
use crate::ports::{
    BackupReport, DecisionStream, ExportStream, Recorded, RestoreReport, Store, StoreError,
    StudyDataStream, TestingStore, UpdateJob, UploadRecorded,
};
use crate::tables::TABLES;

/// The key of a decision and of its upload.
type Key = (UserId, DecisionType, DecisionIdx);

fn key(user_id: &UserId, decision_type: &DecisionType, decision_idx: DecisionIdx) -> Key {
    (user_id.clone(), decision_type.clone(), decision_idx)
}

/// The storage ports ([`Store`], [`TestingStore`]) over plain collections in memory, for
/// tests of the use cases that need no database.
///
/// It passes the store contract of the conformance suite
/// ([`store_contract_suite!`](crate::store_contract_suite)), so a use case tested over it
/// meets the same rules it meets over PostgreSQL or SQLite. Where it differs from them, it is
/// because it holds everything in memory:
///
/// - Every call holds one lock over all tables for its whole length, so calls happen one
///   after the other; racing calls end as if run in some order, as the port requires.
/// - Streams (`decisions`, `export`, `study_data`) copy the rows stored when they are called:
///   later rows never appear, and there is no cursor to page.
/// - An update job reads the study data stored when it was claimed (its snapshot) and, on
///   completion, marks the available records among them that no earlier update read.
/// - It keeps nothing in files, so `backup`, `check_backup` and `restore` refuse with
///   [`StoreError::Other`]: it does not run the conformance suite's durable-storage part
///   ([`durable_store_suite!`](crate::durable_store_suite)), which the database adapters run.
///
/// A test can make it fail the way a database does: [`MemoryStore::set_unavailable`] (no
/// connection), [`MemoryStore::set_disk_full`] (every write refused for want of space) and
/// [`MemoryStore::lose_connection_in_job_reads`] (the connection lost while an update reads
/// study data).
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    tables: Tables,
    /// Whether an update job is claimed: at most one runs at a time.
    claimed: bool,
    faults: Faults,
}

/// The rows, table by table.
#[derive(Debug, Default)]
struct Tables {
    users: HashSet<UserId>,
    /// Version `n` at index `n - 1`.
    parameters: Vec<ModelParameters>,
    /// In storage order.
    decisions: Vec<Decision>,
    decision_index: HashMap<Key, usize>,
    /// In upload order.
    uploads: Vec<Upload>,
    upload_index: HashMap<Key, usize>,
    /// In the order they were stored.
    updates: Vec<UpdateRequest>,
}

/// A stored study record and the first update that read it.
#[derive(Debug)]
struct Upload {
    record: StudyRecord,
    used_in_version: Option<i64>,
}

/// Failures a test has asked for.
#[derive(Debug, Default)]
struct Faults {
    unavailable: bool,
    disk_full: bool,
    /// Study-data reads of update jobs still to lose their connection partway.
    broken_job_reads: u32,
}

impl Tables {
    fn newest_parameters(&self) -> Option<&ModelParameters> {
        self.parameters.last()
    }

    fn push_parameters(
        &mut self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> ModelParameters {
        let stored = ModelParameters {
            version: self.next_version(),
            algorithm: algorithm.to_owned(),
            values: values.clone(),
            created_at,
        };
        self.parameters.push(stored.clone());
        stored
    }

    fn next_version(&self) -> i64 {
        self.newest_parameters().map_or(1, |p| p.version + 1)
    }

    fn update_mut(&mut self, id: Uuid) -> Option<&mut UpdateRequest> {
        self.updates.iter_mut().find(|r| r.id == id)
    }

    /// The request `id` while it is processing; a job's outcome cannot be stored otherwise.
    fn processing_mut(&mut self, id: Uuid) -> Result<&mut UpdateRequest, StoreError> {
        match self.update_mut(id) {
            Some(r) if r.status == UpdateStatus::Processing => Ok(r),
            _ => Err(StoreError::Other(
                format!("update request {id} is no longer processing (was the store reset?)")
                    .into(),
            )),
        }
    }
}

impl MemoryStore {
    /// An empty store: no participant, no parameter version.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `down` is true, every call fails with [`StoreError::Unavailable`], as when the
    /// database cannot be reached.
    pub fn set_unavailable(&self, down: bool) {
        self.lock().faults.unavailable = down;
    }

    /// While `full` is true, every write fails as one on a database whose disk is full
    /// ([`StoreError::Other`] saying "database or disk is full"); reads still answer.
    pub fn set_disk_full(&self, full: bool) {
        self.lock().faults.disk_full = full;
    }

    /// The next `reads` times an update job reads study data, the connection is lost partway:
    /// the stream yields the first record (if any), then [`StoreError::Unavailable`].
    pub fn lose_connection_in_job_reads(&self, reads: u32) {
        self.lock().faults.broken_job_reads = reads;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store for a read, unless a test made it unavailable.
    fn read(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let inner = self.lock();
        if inner.faults.unavailable {
            return Err(StoreError::Unavailable(
                "the database cannot be reached".into(),
            ));
        }
        Ok(inner)
    }

    /// The store for a write, unless a test made it unavailable or full.
    fn write(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let inner = self.read()?;
        if inner.faults.disk_full {
            return Err(StoreError::Other("database or disk is full".into()));
        }
        Ok(inner)
    }
}

impl Store for MemoryStore {
    fn add_user(&self, user: &UserId, _created_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        if !inner.tables.users.insert(user.clone()) {
            return Err(StoreError::UserExists);
        }
        Ok(())
    }

    fn record_decision(&self, decision: &Decision) -> Result<Recorded, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        if !tables.users.contains(&decision.user_id) {
            return Err(StoreError::UnknownUser);
        }
        let k = key(
            &decision.user_id,
            &decision.decision_type,
            decision.decision_idx,
        );
        // Study data for the key closes it, whether or not a decision was stored.
        if tables.upload_index.contains_key(&k) {
            return Err(StoreError::StudyDataExists);
        }
        if let Some(&i) = tables.decision_index.get(&k) {
            return Ok(Recorded::Existing(tables.decisions[i].clone()));
        }
        let version = decision.parameter_version;
        if !tables.parameters.iter().any(|p| p.version == version) {
            return Err(StoreError::UnknownParameterVersion);
        }
        tables.decision_index.insert(k, tables.decisions.len());
        tables.decisions.push(decision.clone());
        Ok(Recorded::Inserted)
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        if !tables.users.contains(&record.user_id) {
            return Err(StoreError::UnknownUser);
        }
        let k = key(&record.user_id, &record.decision_type, record.decision_idx);
        if tables.upload_index.contains_key(&k) {
            return Err(StoreError::StudyDataExists);
        }
        let logged = tables.decision_index.get(&k).map(|&i| &tables.decisions[i]);
        if let Some(d) = logged {
            if d.action != record.action || !d.action_prob.agrees_with(record.action_prob) {
                return Err(StoreError::UploadMismatch {
                    logged_action: d.action,
                    logged_prob: d.action_prob,
                });
            }
        }
        let stored = StudyRecord {
            available: logged.is_none_or(|d| d.availability.is_available()),
            ..record.clone()
        };
        tables.upload_index.insert(k, tables.uploads.len());
        tables.uploads.push(Upload {
            record: stored,
            used_in_version: None,
        });
        Ok(UploadRecorded {
            action_logged: logged.is_some(),
        })
    }

    fn decisions(&self) -> Result<DecisionStream, StoreError> {
        let rows = self.read()?.tables.decisions.clone();
        Ok(Box::new(rows.into_iter().map(Ok)))
    }

    fn export(&self) -> Result<ExportStream, StoreError> {
        let inner = self.read()?;
        let tables = &inner.tables;
        let rows: Vec<ExportRow> = tables
            .decisions
            .iter()
            .map(|d| {
                let k = key(&d.user_id, &d.decision_type, d.decision_idx);
                let upload = tables.upload_index.get(&k).map(|&i| {
                    let u = &tables.uploads[i];
                    ExportedUpload {
                        requested_at: u.record.requested_at,
                        sent_timestamp: u.record.sent_timestamp.clone(),
                        received_at: u.record.received_at,
                        outcome: u.record.outcome.clone(),
                        reward: u.record.reward,
                        used_in_version: u.used_in_version,
                    }
                });
                ExportRow {
                    decision: d.clone(),
                    upload,
                }
            })
            .collect();
        Ok(Box::new(rows.into_iter().map(Ok)))
    }

    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError> {
        Ok(self.read()?.tables.newest_parameters().cloned())
    }

    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError> {
        let inner = self.read()?;
        Ok(inner
            .tables
            .parameters
            .iter()
            .find(|p| p.version == version)
            .cloned())
    }

    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        match tables.newest_parameters() {
            Some(current) => Ok(current.clone()),
            None => Ok(tables.push_parameters(algorithm, values, created_at)),
        }
    }

    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        if inner.tables.update_mut(request.id).is_some() {
            return Err(StoreError::Other(
                format!("update request {} is stored already", request.id).into(),
            ));
        }
        inner.tables.updates.push(request.clone());
        Ok(())
    }

    fn claim_update(
        &self,
        started_at: DateTime<Utc>,
    ) -> Result<Option<Box<dyn UpdateJob + '_>>, StoreError> {
        let mut inner = self.write()?;
        if inner.claimed {
            return Ok(None);
        }
        // The first of the oldest, as `min_by_key` keeps the first of equal keys.
        let oldest = inner
            .tables
            .updates
            .iter_mut()
            .filter(|r| r.status == UpdateStatus::Processing)
            .min_by_key(|r| r.received_at);
        let Some(request) = oldest else {
            return Ok(None);
        };
        request.attempts += 1;
        request.started_at = Some(started_at);
        let request = request.clone();
        inner.claimed = true;
        let snapshot = inner.tables.uploads.len();
        Ok(Some(Box::new(MemoryJob {
            store: self,
            request,
            snapshot,
        })))
    }

    fn record_callback(&self, id: Uuid, delivery: &CallbackDelivery) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        let request = inner
            .tables
            .update_mut(id)
            .ok_or(StoreError::UnknownUpdate)?;
        request.callback = delivery.clone();
        Ok(())
    }

    fn undelivered_callbacks(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        let inner = self.read()?;
        let mut pending: Vec<UpdateRequest> = inner
            .tables
            .updates
            .iter()
            .filter(|r| {
                r.status != UpdateStatus::Processing
                    && r.callback.status == crate::domain::CallbackStatus::Pending
            })
            .cloned()
            .collect();
        // Stable: requests received at one instant stay in the order they were stored.
        pending.sort_by_key(|r| r.received_at);
        Ok(pending)
    }

    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError> {
        let inner = self.read()?;
        Ok(inner.tables.updates.iter().find(|r| r.id == id).cloned())
    }

    fn backup(&self, _dir: &Path, _taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
        Err(keeps_no_files())
    }

    fn restore(&self, _file: &Path) -> Result<RestoreReport, StoreError> {
        Err(keeps_no_files())
    }

    fn check_backup(&self, _file: &Path) -> Result<RestoreReport, StoreError> {
        Err(keeps_no_files())
    }

    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let inner = self.read()?;
        let t = &inner.tables;
        let provenance = t.updates.iter().filter(|r| r.provenance.is_some()).count();
        let rows = [
            t.users.len(),
            t.parameters.len(),
            t.decisions.len(),
            t.uploads.len(),
            t.updates.len(),
            provenance,
        ];
        Ok(TABLES
            .iter()
            .zip(rows)
            .map(|(table, rows)| ((*table).to_owned(), rows as u64))
            .collect())
    }

    fn reset(&self) -> Result<(), StoreError> {
        self.write()?.tables = Tables::default();
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read().map(drop)
    }
}

impl TestingStore for MemoryStore {
    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        Ok(self
            .write()?
            .tables
            .push_parameters(algorithm, values, created_at))
    }

    fn study_data(&self) -> Result<StudyDataStream, StoreError> {
        let inner = self.read()?;
        let rows: Vec<StudyRecord> = inner
            .tables
            .uploads
            .iter()
            .map(|u| u.record.clone())
            .collect();
        Ok(Box::new(rows.into_iter().map(Ok)))
    }
}

fn keeps_no_files() -> StoreError {
    StoreError::Other("the in-memory store keeps no files: it cannot back up or restore".into())
}

/// A claimed update request of a [`MemoryStore`]. Dropping it releases the claim.
struct MemoryJob<'a> {
    store: &'a MemoryStore,
    request: UpdateRequest,
    /// How many study records were stored when the job was claimed: it reads those.
    snapshot: usize,
}

impl UpdateJob for MemoryJob<'_> {
    fn request(&self) -> &UpdateRequest {
        &self.request
    }

    fn current_parameters(&mut self) -> Result<ModelParameters, StoreError> {
        let inner = self.store.read()?;
        inner.tables.newest_parameters().cloned().ok_or_else(|| {
            StoreError::Other("no model parameters are stored; nothing to update".into())
        })
    }

    fn study_data(
        &mut self,
    ) -> Result<Box<dyn Iterator<Item = Result<StudyRecord, StoreError>> + '_>, StoreError> {
        let mut inner = self.store.read()?;
        let mut rows: Vec<Result<StudyRecord, StoreError>> = inner
            .tables
            .uploads
            .iter()
            .take(self.snapshot)
            .filter(|u| u.record.available)
            .map(|u| Ok(u.record.clone()))
            .collect();
        if inner.faults.broken_job_reads > 0 {
            inner.faults.broken_job_reads -= 1;
            rows.truncate(1);
            rows.push(Err(StoreError::Unavailable(
                "the connection was lost while reading study data".into(),
            )));
        }
        Ok(Box::new(rows.into_iter()))
    }

    fn complete(
        self: Box<Self>,
        algorithm: &str,
        values: &serde_json::Value,
        provenance: &Provenance,
        finished_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let mut inner = self.store.write()?;
        let tables = &mut inner.tables;
        let version = tables.next_version();
        let request = tables.processing_mut(self.request.id)?;
        request.status = UpdateStatus::Completed;
        request.finished_at = Some(finished_at);
        request.error = None;
        request.parameter_version = Some(version);
        request.provenance = Some(provenance.clone());
        for upload in tables.uploads.iter_mut().take(self.snapshot) {
            if upload.record.available && upload.used_in_version.is_none() {
                upload.used_in_version = Some(version);
            }
        }
        Ok(tables.push_parameters(algorithm, values, finished_at))
    }

    fn fail(self: Box<Self>, error: &str, finished_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut inner = self.store.write()?;
        let request = inner.tables.processing_mut(self.request.id)?;
        request.status = UpdateStatus::Failed;
        request.finished_at = Some(finished_at);
        request.error = Some(error.to_owned());
        request.parameter_version = None;
        Ok(())
    }

    fn requeue(self: Box<Self>) -> Result<(), StoreError> {
        let mut inner = self.store.write()?;
        if let Some(request) = inner.tables.update_mut(self.request.id) {
            if request.status == UpdateStatus::Processing && request.attempts > 0 {
                request.attempts -= 1;
                request.started_at = None;
            }
        }
        Ok(())
    }
}

impl Drop for MemoryJob<'_> {
    fn drop(&mut self) {
        self.store.lock().claimed = false;
    }
}

/// A fresh memory store is its own fixture: it holds nothing else that must stay alive.
#[cfg(feature = "conformance")]
impl crate::conformance::StoreFixture for MemoryStore {
    fn store(&self) -> &dyn TestingStore {
        self
    }
}
