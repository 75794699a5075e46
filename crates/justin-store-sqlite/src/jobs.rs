//! Update requests as durable jobs: [`claim`] and [`SqliteUpdateJob`], the adapter's
//! [`UpdateJob`].
//!
//! # The update lease
//!
//! At most one update runs per database file, across every process sharing it, because a job
//! holds the lease: the one row of `update_lease`, naming the job's random holder token and
//! the time the claim lapses (`SqliteConfig::update_lease` after the claim, by the wall
//! clock). A claim is one short `BEGIN IMMEDIATE` transaction that
//!
//! 1. finds the lease free, or held past its expiry (the holder died or hung), and otherwise
//!    claims nothing;
//! 2. counts an attempt on the oldest unfinished request and takes the lease for it.
//!
//! Committed on its own, so the attempt is on record whatever happens to the job afterwards.
//! The job then reads in a deferred read transaction on its own connection: in WAL mode that
//! is a snapshot, which blocks no writer. `complete` ends the snapshot and, in one `BEGIN
//! IMMEDIATE` transaction, checks that the lease is still this job's, stores the next
//! parameter version, the completion and the provenance, and frees the lease; `fail` does the
//! same with the failure. Holding a write transaction for the job's whole run instead would
//! make every decision and upload wait behind the update.
//!
//! # What an update read
//!
//! The job's watermark is the largest study-data id in its snapshot. Writes take turns on one
//! lock and `AUTOINCREMENT` hands out ids in that order, so the snapshot holds exactly the
//! rows up to the watermark, and every row stored while the job runs has a larger id. The job
//! streams the rows up to it that are available, of participants not withdrawn (in the
//! snapshot) at or before the job's start and of the policies the update learns from, and
//! `complete` stores the watermark and those policies in the provenance (`last_study_data_id`,
//! `included_policies`): an available upload was first used by the completed update with the smallest watermark at or above its id that
//! learned from its policy and started before its participant withdrew, which the export looks
//! up. So completing writes one row whatever the number of uploads the update read, where
//! marking each upload would write every new one while holding the write lock. The largest
//! correction id in the snapshot is the job's correction watermark, stored beside it: the job
//! reads each upload's newest correction up to it.
//!
//! A job dropped without an outcome rolls its snapshot back and frees the lease at once. A
//! job that outlives its lease (slower than the configured length) finds the lease gone or
//! someone else's when it completes, and stores nothing.
//!
//! # A holder that died
//!
//! A process that dies (kill -9, a crash, the OOM killer, a power cut) cannot free its lease.
//! So that a restarted process need not wait the lease out, a job also holds an exclusive OS
//! file lock (`flock`, through std's `File::try_lock`) on its lease file, `<database>-lease-
//! <holder token>` beside the database, from before its claim commits until after its outcome
//! (or its drop) has freed the lease. The kernel drops the locks of a process when it ends,
//! however it ends, so a claim that finds the lease held and unexpired tries that lock: when
//! it gets it, the holder is gone, and the claim takes the request over at once (a new
//! attempt), logs that it did, and removes the dead holder's file. When the lock is taken, the
//! holder is alive and the claim waits. The lock is the holder's own open file, not its process
//! id, so a reused pid, a pid namespace (containers) or a second process on the same file
//! cannot make a live holder look dead nor a dead one alive. When the file is missing (a
//! holder from a build without lease files, or one whose file could not be locked), the claim
//! cannot tell and waits for the lease to expire, as before. The expiry stays the bound for a
//! holder that is alive but hung.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::dsl::max;
use diesel::prelude::*;
use justin_core::recording::superseded_update;
use justin_core::{
    Imputation, ModelParameters, Provenance, StoreError, UpdateInclusion, UpdateJob, UpdateRecord,
    UpdateRequest,
};

use crate::error::{from_diesel, other};
use crate::models::{
    fmt_time, parse_time, update_request, uuid_text, ParametersRow, ProvenanceRow, UpdateRow,
};
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_lease, update_provenance,
};
use crate::store::{PooledSqlite, SqliteStore};
use crate::stream::{BorrowedUpdateStream, ImputedBound, UpdateBound, UpdateCursor};

/// What went wrong inside a job's write transaction. Diesel's transaction needs an error type
/// it can convert its own errors into; the port's error is kept as is.
enum Failure {
    Db(diesel::result::Error),
    Store(StoreError),
}

impl From<diesel::result::Error> for Failure {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Db(e) => from_diesel(e),
            Failure::Store(e) => e,
        }
    }
}

/// Who holds the lease now, for which update and until when, as stored.
type LeaseRow = (Option<String>, Option<String>, Option<String>);

fn read_lease(conn: &mut SqliteConnection) -> QueryResult<LeaseRow> {
    // The migration stores the row; recreating it keeps a hand-edited database working.
    diesel::insert_or_ignore_into(update_lease::table)
        .values(update_lease::id.eq(1))
        .execute(conn)?;
    update_lease::table
        .find(1)
        .select((
            update_lease::holder,
            update_lease::update_id,
            update_lease::expires_at,
        ))
        .first(conn)
}

/// The lease file of holder `token`: beside the database, named after it and the token.
fn lease_file_path(database: &Path, token: &str) -> PathBuf {
    let mut name = database
        .file_name()
        .map(std::ffi::OsStr::to_os_string)
        .unwrap_or_default();
    name.push(format!("-lease-{token}"));
    database.with_file_name(name)
}

/// A job's lease file, locked exclusively while the job lives; removed (then unlocked) on drop.
struct LeaseFile {
    path: PathBuf,
    _file: File,
}

impl LeaseFile {
    /// Creates and locks the lease file of `token`. `None` (logged) when that fails: the job
    /// then runs without one, and a claim finding its lease waits for it to expire.
    fn create(database: &Path, token: &str) -> Option<Self> {
        let path = lease_file_path(database, token);
        let file = match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(file) => file,
            Err(e) => {
                log::warn!(
                    "cannot create the update lease file {}: {e}; if this process dies during \
                     the update, the next one waits for the lease to expire",
                    path.display()
                );
                return None;
            }
        };
        if let Err(e) = file.try_lock() {
            // An unlocked file would tell a claimant this live holder is gone.
            let _ = std::fs::remove_file(&path);
            log::warn!(
                "cannot lock the update lease file {}: {e}; if this process dies during the \
                 update, the next one waits for the lease to expire",
                path.display()
            );
            return None;
        }
        Some(Self { path, _file: file })
    }
}

impl Drop for LeaseFile {
    fn drop(&mut self) {
        // Removed while still locked; the lock goes with the file handle right after.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the process holding the lease as `token` is gone: its lease file exists and its
/// lock can be taken (the kernel dropped it with the process). A gone holder's file is removed.
fn holder_is_gone(database: &Path, token: &str) -> bool {
    let path = lease_file_path(database, token);
    let Ok(file) = File::open(&path) else {
        // Missing (or unreadable): nothing tells whether the holder lives.
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(&path);
            true
        }
        Err(std::fs::TryLockError::WouldBlock) => false,
        Err(std::fs::TryLockError::Error(e)) => {
            log::warn!(
                "cannot check the update lease file {}: {e}; waiting for the lease to expire",
                path.display()
            );
            false
        }
    }
}

/// Frees the lease if `token` still holds it; returns whether it did.
fn free_lease(conn: &mut SqliteConnection, token: &str) -> QueryResult<bool> {
    diesel::update(
        update_lease::table
            .find(1)
            .filter(update_lease::holder.eq(token)),
    )
    .set((
        update_lease::holder.eq(None::<String>),
        update_lease::update_id.eq(None::<String>),
        update_lease::expires_at.eq(None::<String>),
    ))
    .execute(conn)
    .map(|n| n == 1)
}

/// Fails unless `token` holds the lease.
fn check_lease(conn: &mut SqliteConnection, token: &str, id: uuid::Uuid) -> Result<(), Failure> {
    let (holder, _, _) = read_lease(conn)?;
    if holder.as_deref() == Some(token) {
        Ok(())
    } else {
        Err(Failure::Store(other(format!(
            "update {id} lost its lease (it ran longer than the update lease, and another \
             worker took the request over or the lease was freed); nothing was stored"
        ))))
    }
}

/// Claims the oldest unfinished update request; see [`justin_core::Store::claim_update`] and
/// the module documentation.
pub(crate) fn claim(
    store: &SqliteStore,
    started_at: DateTime<Utc>,
) -> Result<Option<SqliteUpdateJob>, StoreError> {
    let mut conn = store.conn()?;
    let token = uuid::Uuid::new_v4().simple().to_string();
    let now = Utc::now();
    let lease = chrono::Duration::from_std(store.update_lease()).map_err(other)?;
    let expires_at = fmt_time(now + lease);
    let database = store.path();
    let mut lease_file = None;
    let claimed = conn
        .immediate_transaction::<_, diesel::result::Error, _>(|conn| {
            let (holder, held_for, held_until) = read_lease(conn)?;
            if let (Some(holder), Some(until)) = (holder, held_until) {
                let update = held_for.as_deref().unwrap_or("(unknown)");
                // Both times are stored as fixed-width UTC text, so text order is time order.
                if until > fmt_time(now) {
                    // The write lock held here keeps the holder from freeing the lease
                    // meanwhile, so a free lock means it is gone, not finishing.
                    if !holder_is_gone(database, &holder) {
                        return Ok(None);
                    }
                    log::warn!(
                        "taking over update {update} at once: the process that held it is gone \
                         (its lease file is no longer locked; the lease would have expired at \
                         {until})"
                    );
                } else {
                    log::warn!(
                        "taking over update {update}: the update lease of worker {holder} \
                         expired at {until}"
                    );
                }
            }
            let oldest = model_update_requests::table
                .filter(model_update_requests::status.eq("processing"))
                .order((model_update_requests::created_at, model_update_requests::id))
                .select((model_update_requests::id, model_update_requests::created_at))
                .first::<(String, String)>(conn)
                .optional()?;
            let Some((id, received_at)) = oldest else {
                return Ok(None);
            };
            // The worker read its clock before it claimed, so a request received meanwhile
            // starts when it was received. An unreadable time fails the request's reading below.
            let started_at =
                parse_time(&received_at).map_or(started_at, |received| started_at.max(received));
            // Locked before the lease is taken, so no claimant ever sees this live holder's
            // lease without its lock.
            lease_file = LeaseFile::create(database, &token);
            let row = diesel::update(model_update_requests::table.find(&id))
                .set((
                    model_update_requests::attempts.eq(model_update_requests::attempts + 1),
                    model_update_requests::started_at.eq(Some(fmt_time(started_at))),
                ))
                .returning(UpdateRow::as_returning())
                .get_result::<UpdateRow>(conn)?;
            diesel::update(update_lease::table.find(1))
                .set((
                    update_lease::holder.eq(Some(&token)),
                    update_lease::update_id.eq(Some(&id)),
                    update_lease::expires_at.eq(Some(&expires_at)),
                ))
                .execute(conn)?;
            Ok(Some(row))
        })
        .map_err(from_diesel)?;
    let Some(row) = claimed else {
        return Ok(None);
    };
    let mut job = SqliteUpdateJob {
        conn: Some(conn),
        in_snapshot: false,
        token,
        lease_file,
        request: update_request(row, None)?,
        snapshot_version: None,
        snapshot_last_upload: None,
        snapshot_last_decision: None,
        snapshot_last_correction: 0,
    };
    // On error, dropping the job frees the lease.
    job.open_snapshot()?;
    Ok(Some(job))
}

/// A claimed update request with its connection, its read snapshot and its lease.
pub(crate) struct SqliteUpdateJob {
    /// `None` once the outcome is stored (or the lease was freed).
    conn: Option<PooledSqlite>,
    /// Whether the read transaction is open.
    in_snapshot: bool,
    token: String,
    /// Locked while the job lives, so claimants can tell this process is alive; dropped after
    /// the lease is freed.
    lease_file: Option<LeaseFile>,
    request: UpdateRequest,
    /// The newest parameter version in the snapshot; a different newest version at
    /// completion means another writer published meanwhile.
    snapshot_version: Option<i64>,
    /// The largest study-data id in the snapshot (none without study data): the job reads
    /// the rows up to it, and `complete` stores it as the update's watermark.
    snapshot_last_upload: Option<i64>,
    /// The largest decision id in the snapshot (none without decisions): the job imputes
    /// rewards for decisions up to it, and `complete` stores it when it did.
    snapshot_last_decision: Option<i64>,
    /// The largest correction id in the snapshot (0 for none): the job reads each upload's
    /// newest correction up to it, and `complete` stores it with the watermark.
    snapshot_last_correction: i64,
}

impl SqliteUpdateJob {
    fn conn(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        match self.conn.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(other("the update job has ended already")),
        }
    }

    /// Opens the deferred read transaction and fixes its snapshot with a first read.
    fn open_snapshot(&mut self) -> Result<(), StoreError> {
        let conn = self.conn()?;
        AnsiTransactionManager::begin_transaction_sql(conn, "BEGIN DEFERRED")
            .map_err(from_diesel)?;
        self.in_snapshot = true;
        let conn = self.conn()?;
        let (version, last_upload, last_decision) = diesel::select((
            model_parameters::table
                .select(max(model_parameters::version))
                .single_value(),
            study_data::table.select(max(study_data::id)).single_value(),
            actions::table.select(max(actions::id)).single_value(),
        ))
        .get_result::<(Option<i64>, Option<i64>, Option<i64>)>(conn)
        .map_err(from_diesel)?;
        self.snapshot_version = version;
        self.snapshot_last_upload = last_upload;
        self.snapshot_last_decision = last_decision;
        self.snapshot_last_correction =
            crate::corrections::watermark(self.conn()?).map_err(from_diesel)?;
        Ok(())
    }

    /// Ends the read transaction, if open.
    fn close_snapshot(&mut self) -> Result<(), StoreError> {
        if self.in_snapshot {
            self.in_snapshot = false;
            let conn = self.conn()?;
            AnsiTransactionManager::rollback_transaction(conn).map_err(from_diesel)?;
        }
        Ok(())
    }

    /// Stores an outcome with `write` in one IMMEDIATE transaction that first checks the lease
    /// and last frees it. On success the connection goes back to the pool with nothing left
    /// to undo.
    fn store_outcome<T>(
        &mut self,
        write: impl FnOnce(&mut SqliteConnection, &Self) -> Result<T, Failure>,
    ) -> Result<T, StoreError> {
        self.close_snapshot()?;
        let token = self.token.clone();
        let id = self.request.id;
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| other("the update job has ended already"))?;
        let result = conn.immediate_transaction::<_, Failure, _>(|conn| {
            check_lease(conn, &token, id)?;
            let stored = write(conn, self)?;
            free_lease(conn, &token)?;
            Ok(stored)
        });
        match result {
            Ok(stored) => {
                self.lease_file = None;
                Ok(stored)
            }
            Err(e) => {
                // Nothing was stored; give the connection back so `Drop` frees the lease.
                self.conn = Some(conn);
                Err(e.into())
            }
        }
    }
}

/// Marks a processing request finished; fails when it no longer is (a reset or restore since
/// the claim).
fn finish(
    conn: &mut SqliteConnection,
    id: uuid::Uuid,
    status: &str,
    finished_at: DateTime<Utc>,
    error: Option<&str>,
    parameter_version: Option<i64>,
) -> Result<(), Failure> {
    let updated = diesel::update(
        model_update_requests::table
            .find(uuid_text(id))
            .filter(model_update_requests::status.eq("processing")),
    )
    .set((
        model_update_requests::status.eq(status),
        model_update_requests::finished_at.eq(Some(fmt_time(finished_at))),
        model_update_requests::error.eq(error),
        model_update_requests::parameter_version.eq(parameter_version),
    ))
    .execute(conn)?;
    if updated == 0 {
        return Err(Failure::Store(other(format!(
            "update request {id} is no longer processing (was the database reset or restored?)"
        ))));
    }
    Ok(())
}

impl UpdateJob for SqliteUpdateJob {
    fn request(&self) -> &UpdateRequest {
        &self.request
    }

    fn current_parameters(&mut self) -> Result<ModelParameters, StoreError> {
        let row = model_parameters::table
            .order(model_parameters::version.desc())
            .select(ParametersRow::as_select())
            .first(self.conn()?)
            .optional()
            .map_err(from_diesel)?;
        row.map(ModelParameters::try_from)
            .transpose()?
            .ok_or_else(|| other("no model parameters are stored; nothing to update"))
    }

    fn update_data(
        &mut self,
        include: UpdateInclusion,
        imputation: Option<Imputation>,
    ) -> Result<Box<dyn Iterator<Item = Result<UpdateRecord, StoreError>> + '_>, StoreError> {
        let started_at = self.request.started_at;
        let uploads = self.snapshot_last_upload.map(|upto| UpdateBound {
            upto,
            include,
            started_at,
            corrections_upto: self.snapshot_last_correction,
        });
        let imputed = imputation.and_then(|rule| {
            self.snapshot_last_decision
                .map(|actions_upto| ImputedBound {
                    actions_upto,
                    // Ids start at 1: without study data, no decision has an upload.
                    uploads_upto: self.snapshot_last_upload.unwrap_or(0),
                    include,
                    started_at,
                    decided_by: rule.decided_by,
                    reward: rule.reward,
                })
        });
        Ok(Box::new(BorrowedUpdateStream {
            conn: self.conn()?,
            cursor: UpdateCursor::new(uploads, imputed),
        }))
    }

    fn complete(
        mut self: Box<Self>,
        algorithm: &str,
        values: &serde_json::Value,
        provenance: &Provenance,
        finished_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let id = self.request.id;
        let stored = self.store_outcome(|conn, job| {
            let newest = model_parameters::table
                .select(max(model_parameters::version))
                .first::<Option<i64>>(conn)?;
            // The job computed from its snapshot's newest version; storing on top of one it
            // never read would silently drop that version's update.
            if newest != job.snapshot_version {
                return Err(Failure::Store(superseded_update(newest.unwrap_or(0), id)));
            }
            let version = newest.unwrap_or(0) + 1;
            let row = ParametersRow::new(version, algorithm, values, finished_at)
                .map_err(Failure::Store)?;
            let stored = diesel::insert_into(model_parameters::table)
                .values(&row)
                .returning(ParametersRow::as_returning())
                .get_result::<ParametersRow>(conn)?;
            finish(conn, id, "completed", finished_at, None, Some(version))?;
            // Ids start at 1: a job that could read no study data read up to 0.
            let watermarks = (
                job.snapshot_last_upload.unwrap_or(0),
                job.snapshot_last_decision.unwrap_or(0),
            );
            let mut record = ProvenanceRow::new(id, version, provenance, finished_at, watermarks)
                .map_err(Failure::Store)?;
            record.last_correction_id = Some(job.snapshot_last_correction);
            diesel::insert_into(update_provenance::table)
                .values(record)
                .execute(conn)?;
            Ok(stored)
        })?;
        ModelParameters::try_from(stored)
    }

    fn fail(
        mut self: Box<Self>,
        error: &str,
        finished_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let id = self.request.id;
        self.store_outcome(|conn, _| finish(conn, id, "failed", finished_at, Some(error), None))
    }

    fn requeue(mut self: Box<Self>) -> Result<(), StoreError> {
        let id = self.request.id;
        self.store_outcome(|conn, _| {
            // No row changes when the request was reset or restored meanwhile.
            diesel::update(
                model_update_requests::table
                    .find(uuid_text(id))
                    .filter(model_update_requests::status.eq("processing"))
                    .filter(model_update_requests::attempts.gt(0)),
            )
            .set((
                model_update_requests::attempts.eq(model_update_requests::attempts - 1),
                model_update_requests::started_at.eq(None::<String>),
            ))
            .execute(conn)?;
            Ok(())
        })
    }
}

impl Drop for SqliteUpdateJob {
    fn drop(&mut self) {
        if self.conn.is_none() {
            return;
        }
        if let Err(e) = self.close_snapshot() {
            log::warn!(
                "ending the snapshot of update {} failed: {e}",
                self.request.id
            );
        }
        let token = self.token.clone();
        let freed = self
            .conn()
            .and_then(|conn| free_lease(conn, &token).map_err(from_diesel));
        if let Err(e) = freed {
            // The lease then lapses on its own after its configured length.
            log::warn!(
                "freeing the update lease of update {} failed; it expires on its own: {e}",
                self.request.id
            );
        }
    }
}
