//! [`MemoryStore`]: the storage ports held in memory, for tests.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{
    Availability, CallbackDelivery, CompletedUpdate, Correction, CorrectionRecorded, Decision,
    DecisionHistory, DecisionIdx, DecisionType, Enrollment, Erasure, ExportRow, ExportedUpload,
    Imputation, ImputedReward, ModelParameters, Participant, ParticipantFacts, Policy, Provenance,
    State, StudyRecord, UpdateInclusion, UpdateRecord, UpdateRequest, UpdateStatus, UserId,
    Withdrawal,
};
use crate::monitor::{
    ActiveParticipant, Alert, AlertDelivery, MonitorFacts, MonitorQuery, OverdueOutcomes,
    RefusedUpload, Severity, StateAdvance, StateChange,
};
use crate::ports::{
    BackupReport, DecisionGuard, DecisionStream, ExportStream, Recorded, RestoreReport, Store,
    StoreError, StudyDataStream, TestingStore, UpdateJob, UpdateRecordStream, UploadRecorded,
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
/// - Streams (`decisions`, `export`, `export_by_participant`, `update_rows`, `study_data`) copy
///   the rows stored when they are called: later rows never appear, and there is no cursor to
///   page.
/// - An update job reads the study data stored when it was claimed (its snapshot), leaving
///   out participants withdrawn at or before its start; on completion it keeps where its snapshot
///   ended, and `export` names for each upload the first completed update whose snapshot
///   held it, that learns from its policy and that started before its participant withdrew.
/// - It keeps nothing in files: `backup` keeps a copy of every table in memory under the path
///   it reports (no file is written there), and `check_backup` and `restore` read only such
///   copies, refusing any other path with [`StoreError::InvalidBackup`]. It therefore does not
///   run the conformance suite's durable-storage part
///   ([`durable_store_suite!`](crate::durable_store_suite)), which the database adapters run.
///
/// A test can make it fail the way a database does: [`MemoryStore::set_unavailable`] (no
/// connection), [`MemoryStore::set_disk_full`] (every write refused for want of space),
/// [`MemoryStore::lose_connection_in_job_reads`] (the connection lost while an update reads
/// study data) and [`MemoryStore::set_backups_failing`] (no backup can be written).
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
    /// The copies `backup` took, by the path it reported; a reset keeps them, as files would
    /// stay on disk.
    backups: HashMap<PathBuf, Tables>,
    /// Calls of the ports so far (each a round trip to a database).
    calls: u64,
}

/// The rows, table by table.
#[derive(Debug, Default, Clone)]
struct Tables {
    /// Registered participants, by id (an erased one under their pseudonym).
    users: HashMap<UserId, UserRow>,
    /// The row number the next participant gets.
    next_user_number: i64,
    /// Version `n` at index `n - 1`.
    parameters: Vec<ModelParameters>,
    /// In storage order.
    decisions: Vec<Decision>,
    decision_index: HashMap<Key, usize>,
    /// In upload order.
    uploads: Vec<Upload>,
    upload_index: HashMap<Key, usize>,
    /// The id the next upload gets.
    next_upload_id: i64,
    /// In the order they were stored.
    updates: Vec<UpdateRequest>,
    /// For each completed update, the ids of the uploads its job could read: those below this.
    watermarks: HashMap<Uuid, i64>,
    /// For each completed update that imputed rewards, how many decisions its job could read
    /// (the first this many of `decisions`).
    decision_watermarks: HashMap<Uuid, usize>,
    /// Participants' histories, in the order they were recorded.
    events: Vec<Event>,
    /// The audit records of erasures, in the order they happened.
    erasures: Vec<Erasure>,
    /// Corrections of uploads, in the order they were stored.
    corrections: Vec<StoredCorrection>,
    /// The id the next correction gets.
    next_correction_id: i64,
    /// For each completed update, the ids of the corrections its job could read: those below
    /// this (none for an update without an entry).
    correction_watermarks: HashMap<Uuid, i64>,
    /// The watchdog's rows (see the section at the end).
    monitor: MonitorTables,
}

/// A registered participant.
#[derive(Debug, Clone)]
struct UserRow {
    /// The participant's row number, which an erasure records.
    number: i64,
    created_at: DateTime<Utc>,
    enrollment: Enrollment,
    withdrawal: Option<Withdrawal>,
    erased_at: Option<DateTime<Utc>>,
}

/// One entry of a participant's history.
#[derive(Debug, Clone)]
struct Event {
    user_id: UserId,
    // Kept as a real history keeps them, though only their number is read back.
    #[allow(dead_code)]
    kind: &'static str,
    #[allow(dead_code)]
    recorded_at: DateTime<Utc>,
    #[allow(dead_code)]
    enrollment: Enrollment,
    #[allow(dead_code)]
    reason: Option<String>,
}

/// A stored study record, its id (upload order) and the policy of the decision logged for it.
#[derive(Debug, Clone)]
struct Upload {
    id: i64,
    record: StudyRecord,
    /// The logged decision's policy word, `None` while no decision is logged for the key.
    policy: Option<&'static str>,
}

/// A stored correction: its id (storage order) and the id of the upload it corrects.
#[derive(Debug, Clone)]
struct StoredCorrection {
    id: i64,
    upload_id: i64,
    correction: Correction,
}

/// Failures a test has asked for.
#[derive(Debug, Default)]
struct Faults {
    unavailable: bool,
    disk_full: bool,
    /// Study-data reads of update jobs still to lose their connection partway.
    broken_job_reads: u32,
    /// Whether `backup` fails.
    backups_failing: bool,
    /// Decision inserts still to find a newer parameter version published just before them.
    outrun_decisions: u32,
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

    fn row_counts(&self) -> Vec<(String, u64)> {
        let provenance = self
            .updates
            .iter()
            .filter(|r| r.provenance.is_some())
            .count();
        let rows = [
            self.users.len(),
            self.parameters.len(),
            self.decisions.len(),
            self.uploads.len(),
            self.updates.len(),
            provenance,
            self.events.len(),
            self.erasures.len(),
            self.corrections.len(),
        ];
        TABLES
            .iter()
            .zip(rows)
            .map(|(table, rows)| ((*table).to_owned(), rows as u64))
            .collect()
    }

    fn participant(&self, user: &UserId) -> Option<Participant> {
        let row = self.users.get(user).filter(|row| row.erased_at.is_none())?;
        Some(Participant {
            user_id: user.clone(),
            created_at: row.created_at,
            enrollment: row.enrollment.clone(),
            withdrawal: row.withdrawal.clone(),
            decisions: self.decisions.iter().filter(|d| d.user_id == *user).count() as u64,
            uploads: self
                .uploads
                .iter()
                .filter(|u| u.record.user_id == *user)
                .count() as u64,
        })
    }

    /// A registered participant's row; an erased one is not registered.
    fn live_user_mut(&mut self, user: &UserId) -> Result<&mut UserRow, StoreError> {
        self.users
            .get_mut(user)
            .filter(|row| row.erased_at.is_none())
            .ok_or(StoreError::UnknownUser)
    }

    fn record_event(&mut self, user: &UserId, kind: &'static str, at: DateTime<Utc>) {
        let Some(row) = self.users.get(user) else {
            return;
        };
        let event = Event {
            user_id: user.clone(),
            kind,
            recorded_at: at,
            enrollment: row.enrollment.clone(),
            reason: row.withdrawal.as_ref().map(|w| w.reason.clone()),
        };
        self.events.push(event);
    }

    /// What the guard of `decision` finds: the participant's facts, and whether it holds.
    fn check_guard(
        &self,
        row: &UserRow,
        decision: &Decision,
        guard: DecisionGuard,
    ) -> (ParticipantFacts, bool) {
        let DecisionGuard::InStudy {
            warmup_first_decisions,
            warmup_until_participants,
        } = guard
        else {
            return (
                ParticipantFacts {
                    enrollment: row.enrollment.clone(),
                    withdrawn: row.withdrawal.is_some(),
                    earlier_in_study: 0,
                    started_participants: 0,
                },
                true,
            );
        };
        let earlier = warmup_first_decisions.map_or(0, |n| {
            let found = self
                .decisions
                .iter()
                .filter(|d| {
                    d.user_id == decision.user_id
                        && d.decision_type == decision.decision_type
                        && d.decision_idx < decision.decision_idx
                        && d.availability.is_available()
                        && !matches!(d.policy, Policy::Host { .. })
                })
                .count() as u64;
            found.min(u64::from(n))
        });
        let started = warmup_until_participants.map_or(0, |k| {
            let found = self
                .users
                .values()
                .filter(|u| {
                    u.enrollment.start.as_ref().map_or(u.created_at, |s| s.at)
                        <= decision.requested_at
                })
                .count() as u64;
            found.min(u64::from(k))
        });
        let holds = row.enrollment.contains(decision.requested_at)
            && row.withdrawal.is_none()
            && row.erased_at.is_none()
            && warmup_first_decisions.is_none_or(|n| earlier >= u64::from(n))
            && warmup_until_participants.is_none_or(|k| started >= u64::from(k));
        let facts = ParticipantFacts {
            enrollment: row.enrollment.clone(),
            withdrawn: row.withdrawal.is_some(),
            earlier_in_study: earlier,
            started_participants: started,
        };
        (facts, holds)
    }

    /// Whether the update `r` (completed or being run, reading the uploads below `uploads` and
    /// the first `decisions` decisions) learns from the decision at `index` with the default
    /// reward of `imputation`; see [`UpdateJob::update_data`]. `live` leaves out erased
    /// participants' decisions, as a job and `update_rows` do (their rows are gone).
    fn imputes(
        &self,
        r: &UpdateRequest,
        include: UpdateInclusion,
        (uploads, decisions): (i64, usize),
        decided_by: DateTime<Utc>,
        index: usize,
        live: bool,
    ) -> bool {
        let Some(d) = self.decisions.get(index) else {
            return false;
        };
        if index >= decisions || !d.availability.is_available() || d.decided_at > decided_by {
            return false;
        }
        if !include.includes(Some(d.policy.as_str())) {
            return false;
        }
        let Some(user) = self.users.get(&d.user_id) else {
            return false;
        };
        if live && user.erased_at.is_some() {
            return false;
        }
        let withdrawn = match (&user.withdrawal, r.started_at) {
            (None, _) => false,
            (Some(w), Some(started)) => w.at <= started,
            (Some(_), None) => true,
        };
        let k = key(&d.user_id, &d.decision_type, d.decision_idx);
        let uploaded = self
            .upload_index
            .get(&k)
            .is_some_and(|&i| self.uploads[i].id < uploads);
        !withdrawn && !uploaded
    }

    /// The first completed update that imputed the reward of the decision at `index`, and the
    /// reward it gave.
    fn imputed_in(&self, index: usize) -> Option<ImputedReward> {
        self.updates
            .iter()
            .filter(|r| r.status == UpdateStatus::Completed)
            .filter_map(|r| {
                let provenance = r.provenance.as_ref()?;
                let imputed = provenance.imputed?;
                let bounds = (
                    *self.watermarks.get(&r.id)?,
                    *self.decision_watermarks.get(&r.id)?,
                );
                let include = UpdateInclusion::from_stored(&provenance.included_policies);
                self.imputes(r, include, bounds, imputed.decided_by, index, false)
                    .then_some(ImputedReward {
                        version: r.parameter_version?,
                        reward: imputed.default_reward,
                    })
            })
            .min_by_key(|i| i.version)
    }

    /// The first completed update that used upload `u`: the one of smallest version whose job
    /// could read it, that learns from its decision's policy, and that started before its
    /// participant withdrew.
    fn used_in_version(&self, u: &Upload) -> Option<i64> {
        if !u.record.available {
            return None;
        }
        let withdrawn_at = self
            .users
            .get(&u.record.user_id)
            .and_then(|row| row.withdrawal.as_ref())
            .map(|w| w.at);
        self.updates
            .iter()
            .filter(|r| r.status == UpdateStatus::Completed)
            .filter(|r| self.watermarks.get(&r.id).is_some_and(|&w| u.id < w))
            .filter(|r| {
                let included = r
                    .provenance
                    .as_ref()
                    .map_or("algorithm", |p| p.included_policies.as_str());
                UpdateInclusion::from_stored(included).includes(u.policy)
            })
            .filter(|r| match (withdrawn_at, r.started_at) {
                (None, _) => true,
                (Some(withdrawn), Some(started)) => withdrawn > started,
                (Some(_), None) => false,
            })
            .filter_map(|r| r.parameter_version)
            .min()
    }

    /// Upload `u` with the value in force among its corrections with ids below `below` (the
    /// newest of them, else the original), and how many of them there are.
    fn in_force(&self, u: &Upload, below: i64) -> (StudyRecord, u32) {
        let mut record = u.record.clone();
        let mut count = 0;
        for c in self
            .corrections
            .iter()
            .filter(|c| c.upload_id == u.id && c.id < below)
        {
            count += 1;
            record.context = c.correction.context.clone();
            record.state = c.correction.state.clone();
            record.outcome = c.correction.outcome.clone();
            record.reward = c.correction.reward;
        }
        (record, count)
    }

    fn rebuild_upload_index(&mut self) {
        self.upload_index = self
            .uploads
            .iter()
            .enumerate()
            .map(|(i, u)| {
                (
                    key(
                        &u.record.user_id,
                        &u.record.decision_type,
                        u.record.decision_idx,
                    ),
                    i,
                )
            })
            .collect();
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

    /// How many calls of the ports (of the store and of its update jobs) have reached it so
    /// far, failed ones included: what a database would see as round trips.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// While `failing` is true, every backup fails (as on a full or unwritable backup disk).
    pub fn set_backups_failing(&self, failing: bool) {
        self.lock().faults.backups_failing = failing;
    }

    /// The next `reads` times an update job reads study data, the connection is lost partway:
    /// the stream yields the first record (if any), then [`StoreError::Unavailable`].
    pub fn lose_connection_in_job_reads(&self, reads: u32) {
        self.lock().faults.broken_job_reads = reads;
    }

    /// The next `inserts` decision inserts each find a new parameter version (a copy of the
    /// newest) published just before them, as if another process's update kept finishing
    /// between the service's reload and its insert.
    pub fn publish_before_decisions(&self, inserts: u32) {
        self.lock().faults.outrun_decisions = inserts;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The store for a read, unless a test made it unavailable.
    fn read(&self) -> Result<MutexGuard<'_, Inner>, StoreError> {
        let mut inner = self.lock();
        inner.calls += 1;
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
    fn add_user(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        if tables.users.contains_key(user) {
            return Err(StoreError::UserExists);
        }
        tables.next_user_number += 1;
        let row = UserRow {
            number: tables.next_user_number,
            created_at,
            enrollment: enrollment.clone(),
            withdrawal: None,
            erased_at: None,
        };
        tables.users.insert(user.clone(), row);
        tables.record_event(user, "enrolled", created_at);
        Ok(())
    }

    fn participant(&self, user: &UserId) -> Result<Option<Participant>, StoreError> {
        Ok(self.read()?.tables.participant(user))
    }

    fn change_enrollment(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        changed_at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        let row = tables.live_user_mut(user)?;
        row.enrollment = enrollment.clone();
        tables.record_event(user, "enrollment_changed", changed_at);
        tables.participant(user).ok_or(StoreError::UnknownUser)
    }

    fn withdraw(
        &self,
        user: &UserId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        let row = tables.live_user_mut(user)?;
        if row.withdrawal.is_some() {
            return Err(StoreError::AlreadyWithdrawn);
        }
        row.withdrawal = Some(Withdrawal {
            at,
            reason: reason.to_owned(),
        });
        tables.record_event(user, "withdrawn", at);
        tables.participant(user).ok_or(StoreError::UnknownUser)
    }

    fn erase_participant(&self, user: &UserId, erasure: &Erasure) -> Result<Erasure, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        let mut row = tables.live_user_mut(user)?.clone();
        let pseudonym = UserId::parse(erasure.pseudonym.clone())
            .map_err(|e| StoreError::Other(format!("unusable pseudonym: {e}").into()))?;
        if tables.users.contains_key(&pseudonym) {
            return Err(StoreError::Other("the pseudonym is taken".into()));
        }
        let uploads_before = tables.uploads.len();
        tables.uploads.retain(|u| u.record.user_id != *user);
        let uploads = uploads_before - tables.uploads.len();
        let kept: std::collections::HashSet<i64> = tables.uploads.iter().map(|u| u.id).collect();
        let corrections_before = tables.corrections.len();
        tables.corrections.retain(|c| kept.contains(&c.upload_id));
        let corrections = corrections_before - tables.corrections.len();
        tables.rebuild_upload_index();
        let events_before = tables.events.len();
        tables.events.retain(|e| e.user_id != *user);
        let events = events_before - tables.events.len();
        let mut actions = 0_u64;
        for (i, d) in tables.decisions.iter_mut().enumerate() {
            if d.user_id != *user {
                continue;
            }
            actions += 1;
            tables
                .decision_index
                .remove(&key(&d.user_id, &d.decision_type, d.decision_idx));
            d.user_id = pseudonym.clone();
            d.context = crate::domain::JsonObject::new();
            d.state = State::default();
            if let Availability::Unavailable { reason } = &mut d.availability {
                *reason = None;
            }
            tables
                .decision_index
                .insert(key(&d.user_id, &d.decision_type, d.decision_idx), i);
        }
        tables.users.remove(user);
        row.enrollment = Enrollment::default();
        if let Some(w) = &mut row.withdrawal {
            w.reason = String::new();
        }
        row.erased_at = Some(erasure.erased_at);
        let number = row.number;
        tables.users.insert(pseudonym, row);
        let mut row_counts = vec![
            ("actions".to_owned(), actions),
            ("study_data".to_owned(), uploads as u64),
            ("participant_events".to_owned(), events as u64),
            ("users".to_owned(), 1),
        ];
        crate::tables::count_erased_corrections(&mut row_counts, corrections as u64);
        let filled = Erasure {
            participant_number: number,
            row_counts,
            ..erasure.clone()
        };
        tables.erasures.push(filled.clone());
        Ok(filled)
    }

    fn erased_pseudonyms(&self) -> Result<Vec<String>, StoreError> {
        let inner = self.read()?;
        Ok(inner
            .tables
            .erasures
            .iter()
            .map(|e| e.pseudonym.clone())
            .collect())
    }

    fn record_decision(
        &self,
        decision: &Decision,
        guard: DecisionGuard,
    ) -> Result<Recorded, StoreError> {
        let mut inner = self.write()?;
        if inner.faults.outrun_decisions > 0 {
            inner.faults.outrun_decisions -= 1;
            if let Some(newest) = inner.tables.newest_parameters().cloned() {
                inner
                    .tables
                    .push_parameters(&newest.algorithm, &newest.values, newest.created_at);
            }
        }
        let tables = &mut inner.tables;
        let k = key(
            &decision.user_id,
            &decision.decision_type,
            decision.decision_idx,
        );
        let host = matches!(decision.policy, Policy::Host { .. });
        let uploaded = tables.upload_index.get(&k).copied();
        if let Some(&i) = tables.decision_index.get(&k) {
            // Study data for the key closes it to the service's decisions, logged or not; a
            // host decision is compared with the stored one by the caller.
            if uploaded.is_some() && !host {
                return Err(StoreError::StudyDataExists);
            }
            return Ok(Recorded::Existing(tables.decisions[i].clone()));
        }
        let Some(row) = tables.users.get(&decision.user_id) else {
            return Err(StoreError::UnknownUser);
        };
        if let Some(u) = uploaded {
            let upload = &tables.uploads[u].record;
            if !host {
                return Err(StoreError::StudyDataExists);
            }
            if upload.action != decision.action
                || !upload.action_prob.agrees_with(decision.action_prob)
            {
                return Err(StoreError::UploadMismatch {
                    logged_action: upload.action,
                    logged_prob: upload.action_prob,
                });
            }
        }
        // The version must be stored and the newest: an instance behind on parameters is
        // refused before the guard is looked at, so that it catches up whatever the guard says.
        let version = decision.parameter_version;
        let newest = tables.parameters.iter().map(|p| p.version).max();
        if !tables.parameters.iter().any(|p| p.version == version)
            || newest.is_some_and(|n| n > version)
        {
            return Err(StoreError::UnknownParameterVersion);
        }
        let (facts, holds) = tables.check_guard(row, decision, guard);
        if !holds {
            return Ok(Recorded::Ineligible(facts));
        }
        if let Some(u) = uploaded {
            let upload = &mut tables.uploads[u];
            upload.policy = Some(decision.policy.as_str());
            upload.record.available = decision.availability.is_available();
        }
        tables.decision_index.insert(k, tables.decisions.len());
        tables.decisions.push(decision.clone());
        Ok(Recorded::Inserted)
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        if !tables.users.contains_key(&record.user_id) {
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
        let policy = logged.map(|d| d.policy.as_str());
        let action_logged = logged.is_some();
        tables.upload_index.insert(k, tables.uploads.len());
        let id = tables.next_upload_id;
        tables.next_upload_id += 1;
        tables.uploads.push(Upload {
            id,
            record: stored,
            policy,
        });
        Ok(UploadRecorded { action_logged })
    }

    fn record_correction(&self, record: &StudyRecord) -> Result<CorrectionRecorded, StoreError> {
        let mut inner = self.write()?;
        let tables = &mut inner.tables;
        let k = key(&record.user_id, &record.decision_type, record.decision_idx);
        let Some(&i) = tables.upload_index.get(&k) else {
            return Err(StoreError::NothingToCorrect);
        };
        let original = &tables.uploads[i];
        if original.record.action != record.action
            || !original.record.action_prob.agrees_with(record.action_prob)
        {
            return Err(StoreError::UploadMismatch {
                logged_action: original.record.action,
                logged_prob: original.record.action_prob,
            });
        }
        let upload_id = original.id;
        let number = tables
            .corrections
            .iter()
            .filter(|c| c.upload_id == upload_id)
            .count() as u32
            + 1;
        let id = tables.next_correction_id;
        tables.next_correction_id += 1;
        tables.corrections.push(StoredCorrection {
            id,
            upload_id,
            correction: Correction {
                number,
                requested_at: record.requested_at,
                sent_timestamp: record.sent_timestamp.clone(),
                received_at: record.received_at,
                context: record.context.clone(),
                state: record.state.clone(),
                outcome: record.outcome.clone(),
                reward: record.reward,
            },
        });
        Ok(CorrectionRecorded { number })
    }

    fn decision_history(
        &self,
        user: &UserId,
        decision_type: &DecisionType,
        decision_idx: DecisionIdx,
    ) -> Result<Option<DecisionHistory>, StoreError> {
        let inner = self.read()?;
        let tables = &inner.tables;
        let k = key(user, decision_type, decision_idx);
        let decision = tables
            .decision_index
            .get(&k)
            .map(|&i| tables.decisions[i].clone());
        let upload = tables.upload_index.get(&k).map(|&i| &tables.uploads[i]);
        if decision.is_none() && upload.is_none() {
            return Ok(None);
        }
        let corrections = upload.map_or_else(Vec::new, |u| {
            tables
                .corrections
                .iter()
                .filter(|c| c.upload_id == u.id)
                .map(|c| c.correction.clone())
                .collect()
        });
        Ok(Some(DecisionHistory {
            decision,
            upload: upload.map(|u| u.record.clone()),
            corrections,
        }))
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
            .enumerate()
            .map(|(index, d)| {
                let k = key(&d.user_id, &d.decision_type, d.decision_idx);
                let upload = tables.upload_index.get(&k).map(|&i| {
                    let u = &tables.uploads[i];
                    let (now, corrections) = tables.in_force(u, i64::MAX);
                    ExportedUpload {
                        requested_at: u.record.requested_at,
                        sent_timestamp: u.record.sent_timestamp.clone(),
                        received_at: u.record.received_at,
                        outcome: now.outcome,
                        reward: now.reward,
                        used_in_version: tables.used_in_version(u),
                        corrections,
                    }
                });
                ExportRow {
                    decision: d.clone(),
                    upload,
                    imputed: tables.imputed_in(index),
                }
            })
            .collect();
        Ok(Box::new(rows.into_iter().map(Ok)))
    }

    fn export_by_participant(&self) -> Result<ExportStream, StoreError> {
        let mut rows: Vec<ExportRow> = self.export()?.collect::<Result<_, _>>()?;
        // Stable: within a participant, storage order stays.
        rows.sort_by(|a, b| {
            a.decision
                .user_id
                .as_str()
                .as_bytes()
                .cmp(b.decision.user_id.as_str().as_bytes())
        });
        Ok(Box::new(rows.into_iter().map(Ok)))
    }

    fn completed_updates(&self) -> Result<Vec<CompletedUpdate>, StoreError> {
        let inner = self.read()?;
        let mut done: Vec<CompletedUpdate> = inner
            .tables
            .updates
            .iter()
            .filter(|r| r.status == UpdateStatus::Completed)
            .filter_map(|r| {
                Some(CompletedUpdate {
                    update_id: r.id,
                    parameter_version: r.parameter_version?,
                    started_at: r.started_at,
                    finished_at: r.finished_at,
                    provenance: r.provenance.clone()?,
                })
            })
            .collect();
        done.sort_by_key(|u| u.parameter_version);
        Ok(done)
    }

    fn update_rows(&self, version: i64) -> Result<UpdateRecordStream, StoreError> {
        let inner = self.read()?;
        let tables = &inner.tables;
        let Some(request) = tables
            .updates
            .iter()
            .find(|r| r.status == UpdateStatus::Completed && r.parameter_version == Some(version))
        else {
            return Ok(Box::new(std::iter::empty()));
        };
        let Some(&watermark) = tables.watermarks.get(&request.id) else {
            return Ok(Box::new(std::iter::empty()));
        };
        let corrections_below = tables
            .correction_watermarks
            .get(&request.id)
            .copied()
            .unwrap_or(0);
        let include = UpdateInclusion::from_stored(
            request
                .provenance
                .as_ref()
                .map_or("algorithm", |p| p.included_policies.as_str()),
        );
        let mut rows: Vec<UpdateRecord> = tables
            .uploads
            .iter()
            .filter(|u| u.id < watermark && u.record.available)
            .filter(|u| include.includes(u.policy))
            .filter(|u| {
                let withdrawn = tables
                    .users
                    .get(&u.record.user_id)
                    .and_then(|row| row.withdrawal.as_ref())
                    .map(|w| w.at);
                match (withdrawn, request.started_at) {
                    (Some(withdrawn), Some(started)) => withdrawn > started,
                    _ => true,
                }
            })
            .map(|u| UpdateRecord::Uploaded(tables.in_force(u, corrections_below).0))
            .collect();
        let imputed = request.provenance.as_ref().and_then(|p| p.imputed);
        if let (Some(imputed), Some(&decisions)) =
            (imputed, tables.decision_watermarks.get(&request.id))
        {
            for index in 0..decisions {
                if tables.imputes(
                    request,
                    include,
                    (watermark, decisions),
                    imputed.decided_by,
                    index,
                    true,
                ) {
                    rows.push(UpdateRecord::Imputed(StudyRecord::imputed(
                        tables.decisions[index].clone(),
                        imputed.default_reward,
                    )));
                }
            }
        }
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
        request.started_at = Some(started_at.max(request.received_at));
        let request = request.clone();
        inner.claimed = true;
        let snapshot = inner.tables.next_upload_id;
        let decisions = inner.tables.decisions.len();
        let corrections_snapshot = inner.tables.next_correction_id;
        Ok(Some(Box::new(MemoryJob {
            store: self,
            request,
            snapshot,
            decisions,
            corrections_snapshot,
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

    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
        let mut inner = self.read()?;
        if inner.faults.backups_failing {
            return Err(StoreError::Other("the backup could not be written".into()));
        }
        let name = format!(
            "justin-backup-{}-{}.memory",
            taken_at.format("%Y%m%dT%H%M%S%.6fZ"),
            inner.backups.len() + 1
        );
        let path = dir.join(name);
        let copy = inner.tables.clone();
        let row_counts = copy.row_counts();
        inner.backups.insert(path.clone(), copy);
        Ok(BackupReport { path, row_counts })
    }

    fn restore(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        let mut inner = self.write()?;
        let copy = inner
            .backups
            .get(file)
            .cloned()
            .ok_or_else(|| no_backup(file))?;
        let row_counts = copy.row_counts();
        inner.tables = copy;
        Ok(RestoreReport { row_counts })
    }

    fn check_backup(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        let inner = self.read()?;
        let copy = inner.backups.get(file).ok_or_else(|| no_backup(file))?;
        Ok(RestoreReport {
            row_counts: copy.row_counts(),
        })
    }

    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self.read()?.tables.row_counts())
    }

    fn reset(&self) -> Result<(), StoreError> {
        self.write()?.tables = Tables::default();
        Ok(())
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.read().map(drop)
    }

    // ---- The dashboard (figures computed from the rows; no rollup in memory). ----

    fn dashboard_days(
        &self,
        settings: &crate::dashboard::DashboardSettings,
        _now: DateTime<Utc>,
    ) -> Result<crate::dashboard::DashboardDays, StoreError> {
        let inner = self.read()?;
        Ok(dashboard::days(&inner.tables, settings))
    }

    fn dashboard_participants(
        &self,
        _settings: &crate::dashboard::DashboardSettings,
        _now: DateTime<Utc>,
    ) -> Result<Vec<crate::dashboard::ParticipantActivity>, StoreError> {
        let inner = self.read()?;
        Ok(dashboard::participants(&inner.tables))
    }

    fn dashboard_participant_counts(&self) -> Result<(u64, u64), StoreError> {
        let inner = self.read()?;
        let users = &inner.tables.users;
        let erased = users.values().filter(|p| p.erased_at.is_some()).count();
        Ok((users.len() as u64, erased as u64))
    }

    fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        let inner = self.read()?;
        let mut updates = inner.tables.updates.clone();
        updates.reverse();
        updates.sort_by_key(|u| std::cmp::Reverse(u.received_at));
        Ok(updates)
    }

    fn dashboard_recent_decisions(
        &self,
        version: i64,
        limit: u32,
    ) -> Result<Vec<Decision>, StoreError> {
        let inner = self.read()?;
        Ok(inner
            .tables
            .decisions
            .iter()
            .rev()
            .filter(|d| d.parameter_version == version && d.availability.is_available())
            .take(limit as usize)
            .cloned()
            .collect())
    }

    fn monitor_facts(&self, query: &MonitorQuery) -> Result<MonitorFacts, StoreError> {
        Ok(self.read()?.tables.monitor_facts(query))
    }

    fn record_refused_upload(&self, refusal: &RefusedUpload) -> Result<(), StoreError> {
        self.write()?.tables.monitor.refusals.push(refusal.clone());
        Ok(())
    }

    fn advance_monitor_state(&self, change: &StateChange) -> Result<StateAdvance, StoreError> {
        Ok(self.write()?.tables.monitor.advance(change))
    }

    fn claim_alert(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<Alert>, StoreError> {
        Ok(self.write()?.tables.monitor.claim(now, lease_until))
    }

    fn record_alert(&self, id: i64, delivery: &AlertDelivery) -> Result<(), StoreError> {
        let mut inner = self.write()?;
        if let Some(alert) = inner.tables.monitor.alerts.iter_mut().find(|a| a.id == id) {
            alert.done = true;
            alert.attempts = delivery.attempts;
        }
        Ok(())
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

fn no_backup(file: &Path) -> StoreError {
    StoreError::InvalidBackup(format!(
        "{} is not a backup this in-memory store took",
        file.display()
    ))
}

/// A claimed update request of a [`MemoryStore`]. Dropping it releases the claim.
struct MemoryJob<'a> {
    store: &'a MemoryStore,
    request: UpdateRequest,
    /// The id the next upload got when the job was claimed: it reads the uploads below it.
    snapshot: i64,
    /// How many decisions were stored when the job was claimed: it reads the first this many.
    decisions: usize,
    /// The id the next correction got when the job was claimed: it reads the corrections
    /// below it.
    corrections_snapshot: i64,
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

    fn update_data(
        &mut self,
        include: UpdateInclusion,
        imputation: Option<Imputation>,
    ) -> Result<Box<dyn Iterator<Item = Result<UpdateRecord, StoreError>> + '_>, StoreError> {
        let mut inner = self.store.read()?;
        let tables = &inner.tables;
        let mut rows: Vec<Result<UpdateRecord, StoreError>> = tables
            .uploads
            .iter()
            .filter(|u| u.id < self.snapshot && u.record.available)
            .filter(|u| include.includes(u.policy))
            .filter(|u| {
                tables.users.get(&u.record.user_id).is_some_and(|row| {
                    match (&row.withdrawal, self.request.started_at) {
                        (None, _) => true,
                        (Some(w), Some(started)) => w.at > started,
                        (Some(_), None) => false,
                    }
                })
            })
            .map(|u| {
                Ok(UpdateRecord::Uploaded(
                    tables.in_force(u, self.corrections_snapshot).0,
                ))
            })
            .collect();
        if let Some(imputation) = imputation {
            for index in 0..self.decisions {
                if tables.imputes(
                    &self.request,
                    include,
                    (self.snapshot, self.decisions),
                    imputation.decided_by,
                    index,
                    true,
                ) {
                    rows.push(Ok(UpdateRecord::Imputed(StudyRecord::imputed(
                        tables.decisions[index].clone(),
                        imputation.reward,
                    ))));
                }
            }
        }
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
        tables.watermarks.insert(self.request.id, self.snapshot);
        if provenance.imputed.is_some() {
            tables
                .decision_watermarks
                .insert(self.request.id, self.decisions);
        }
        tables
            .correction_watermarks
            .insert(self.request.id, self.corrections_snapshot);
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

/// The dashboard's reads over the rows in memory.
mod dashboard {
    use std::collections::HashMap;

    use chrono::{DateTime, Utc};

    use super::Tables;
    use crate::dashboard::{
        days_of, DashboardDays, DashboardSettings, DecisionFact, ParticipantActivity, UploadFact,
    };

    pub(super) fn days(tables: &Tables, settings: &DashboardSettings) -> DashboardDays {
        let decisions = tables.decisions.iter().map(|d| DecisionFact {
            id: 0,
            user_id: d.user_id.as_str().to_owned(),
            decision_type: d.decision_type.as_str().to_owned(),
            parameter_version: d.parameter_version,
            requested_at: d.requested_at,
            probability: d.action_prob.get(),
            available: d.availability.is_available(),
        });
        let uploads = tables.uploads.iter().map(|u| UploadFact {
            id: u.id,
            user_id: u.record.user_id.as_str().to_owned(),
            decision_type: u.record.decision_type.as_str().to_owned(),
            requested_at: u.record.requested_at,
            received_at: u.record.received_at,
            reward: tables.in_force(u, i64::MAX).0.reward,
        });
        days_of(settings, decisions, uploads)
    }

    pub(super) fn participants(tables: &Tables) -> Vec<ParticipantActivity> {
        type Latest = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);
        let mut last: HashMap<&str, Latest> = HashMap::new();
        for d in &tables.decisions {
            let e = last.entry(d.user_id.as_str()).or_default();
            e.0 = e.0.max(Some(d.requested_at));
        }
        for u in &tables.uploads {
            let e = last.entry(u.record.user_id.as_str()).or_default();
            e.1 = e.1.max(Some(u.record.received_at));
        }
        let mut rows: Vec<ParticipantActivity> = tables
            .users
            .iter()
            .map(|(id, row)| {
                let (last_decision, last_upload) =
                    last.get(id.as_str()).copied().unwrap_or_default();
                ParticipantActivity {
                    user_id: id.as_str().to_owned(),
                    created_at: row.created_at,
                    study_start: row.enrollment.start.as_ref().map(|s| s.at),
                    study_end: row.enrollment.end.as_ref().map(|e| e.at),
                    withdrawn_at: row.withdrawal.as_ref().map(|w| w.at),
                    erased_at: row.erased_at,
                    last_decision,
                    last_upload,
                }
            })
            .collect();
        rows.sort_by(|a, b| a.user_id.as_bytes().cmp(b.user_id.as_bytes()));
        rows
    }
}

// ---- The watchdog: its reads, the refusals, the shared verdict and the alerts. ----

/// The watchdog's rows.
#[derive(Debug, Default, Clone)]
struct MonitorTables {
    refusals: Vec<RefusedUpload>,
    state: Option<Severity>,
    alerts: Vec<MemoryAlert>,
}

#[derive(Debug, Clone)]
struct MemoryAlert {
    id: i64,
    payload: serde_json::Value,
    attempts: u32,
    held_until: DateTime<Utc>,
    done: bool,
}

impl MonitorTables {
    fn advance(&mut self, change: &StateChange) -> StateAdvance {
        let previous = self.state;
        if previous == Some(change.state) {
            return StateAdvance {
                previous,
                changed: false,
                alert: None,
            };
        }
        self.state = Some(change.state);
        let alert = match (&change.alert, previous) {
            (Some(payload), _) if previous.is_some() || change.state != Severity::Green => {
                let mut payload = payload.clone();
                payload["previous"] =
                    previous.map_or(serde_json::Value::Null, |p| p.as_str().into());
                let id = self.alerts.last().map_or(1, |a| a.id + 1);
                self.alerts.push(MemoryAlert {
                    id,
                    payload: payload.clone(),
                    attempts: 0,
                    held_until: change.lease_until,
                    done: false,
                });
                Some(Alert {
                    id,
                    payload: payload.clone(),
                    attempts: 0,
                })
            }
            _ => None,
        };
        StateAdvance {
            previous,
            changed: true,
            alert,
        }
    }

    fn claim(&mut self, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Option<Alert> {
        let alert = self
            .alerts
            .iter_mut()
            .find(|a| !a.done && a.held_until < now)?;
        alert.held_until = lease_until;
        Some(Alert {
            id: alert.id,
            payload: alert.payload.clone(),
            attempts: alert.attempts,
        })
    }
}

impl Tables {
    fn monitor_facts(&self, query: &MonitorQuery) -> MonitorFacts {
        let now = query.now;
        let live = |row: &UserRow| row.erased_at.is_none() && row.withdrawal.is_none();
        let listed = !query.decision_types.is_empty();
        let mut participants: Vec<ActiveParticipant> = self
            .users
            .iter()
            .filter(|_| listed)
            .filter(|(_, row)| live(row))
            .filter(|(_, row)| {
                row.enrollment.start.as_ref().is_none_or(|s| s.at <= now)
                    && row.enrollment.end.as_ref().is_none_or(|e| e.at > now)
            })
            .map(|(user, row)| {
                let mut latest: Vec<(String, DateTime<Utc>)> = Vec::new();
                for t in &query.decision_types {
                    let newest = self
                        .decisions
                        .iter()
                        .filter(|d| d.user_id == *user && d.decision_type.as_str() == t)
                        .max_by_key(|d| d.decision_idx.get());
                    if let Some(d) = newest {
                        latest.push((t.clone(), d.requested_at));
                    }
                }
                latest.sort();
                ActiveParticipant {
                    user_id: user.as_str().to_owned(),
                    since: row
                        .enrollment
                        .start
                        .as_ref()
                        .map_or(row.created_at, |s| s.at),
                    latest,
                }
            })
            .collect();
        participants.sort_by(|a, b| a.user_id.cmp(&b.user_id));

        let mut overdue: Vec<OverdueOutcomes> = Vec::new();
        for d in &self.decisions {
            let counted = matches!(d.availability, Availability::Available)
                && d.requested_at < query.outcome_due_before
                && d.requested_at >= query.outcome_lookback_from
                && self.users.get(&d.user_id).is_some_and(live)
                && !self.upload_index.contains_key(&key(
                    &d.user_id,
                    &d.decision_type,
                    d.decision_idx,
                ));
            if !counted {
                continue;
            }
            match overdue.iter_mut().find(|o| o.user_id == d.user_id.as_str()) {
                Some(o) => {
                    o.count += 1;
                    o.oldest = o.oldest.min(d.requested_at);
                }
                None => overdue.push(OverdueOutcomes {
                    user_id: d.user_id.as_str().to_owned(),
                    count: 1,
                    oldest: d.requested_at,
                }),
            }
        }
        overdue.sort_by(|a, b| a.user_id.cmp(&b.user_id));

        let mut facts = MonitorFacts {
            participants,
            overdue,
            ..MonitorFacts::default()
        };
        let u = &mut facts.updates;
        u.first_version_at = self.parameters.first().map(|p| p.created_at);
        u.last_completed = self
            .updates
            .iter()
            .filter(|r| r.status == UpdateStatus::Completed)
            .filter_map(|r| r.finished_at)
            .max();
        for r in &self.updates {
            let Some(finished) = r.finished_at else {
                u.oldest_unfinished = Some(
                    u.oldest_unfinished
                        .map_or(r.received_at, |o| o.min(r.received_at)),
                );
                continue;
            };
            if r.status == UpdateStatus::Failed
                && finished >= query.window_from
                && u.last_completed.is_none_or(|c| finished > c)
            {
                u.failed_since_completed += 1;
                u.first_failed_at = Some(u.first_failed_at.map_or(finished, |f| f.min(finished)));
            }
            if r.callback.status == crate::domain::CallbackStatus::Failed
                && finished >= query.window_from
            {
                u.callbacks_failed += 1;
                u.first_callback_failed_at = Some(
                    u.first_callback_failed_at
                        .map_or(finished, |f| f.min(finished)),
                );
            }
        }

        let w = &mut facts.window;
        for d in self
            .decisions
            .iter()
            .filter(|d| d.decided_at >= query.window_from)
        {
            if !matches!(d.availability, Availability::Available) {
                continue;
            }
            match d.policy {
                Policy::Host { .. } => {}
                Policy::Fallback { .. } => {
                    w.drawn += 1;
                    w.fallbacks += 1;
                }
                Policy::Warmup => w.drawn += 1,
                Policy::Algorithm => {
                    w.drawn += 1;
                    w.algorithm += 1;
                    let p = d.action_prob.get();
                    if query
                        .clip
                        .is_some_and(|(lo, hi)| p <= lo + 1e-9 || p >= hi - 1e-9)
                    {
                        w.at_clip += 1;
                    }
                }
            }
        }
        w.uploads = self
            .uploads
            .iter()
            .filter(|u| u.record.received_at >= query.window_from)
            .count() as u64;
        w.refused = self
            .monitor
            .refusals
            .iter()
            .filter(|r| r.refused_at >= query.window_from)
            .count() as u64;
        facts
    }
}
