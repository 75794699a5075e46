//! Update requests as durable jobs: [`claim`] and [`PgUpdateJob`], the adapter's
//! [`UpdateJob`].
//!
//! At most one update runs per database, across every process sharing it, because a job holds
//! a session-level advisory lock on its own pooled connection for its whole life. A session
//! lock (not a transaction lock) is needed because the claim is committed on its own, before
//! the job's transaction begins: the attempt must count even if the process dies during the
//! update. If the process does die, PostgreSQL ends the session, which rolls the job's
//! transaction back and releases the lock; the request is still `processing`, so the next
//! claim picks it up again with its attempts counted.
//!
//! Session locks outlive transactions, so a connection must never go back to the pool still
//! holding one: the next claim on that connection would take the lock again (session locks
//! are re-entrant) and two updates would run. [`UpdateLock`]'s `Drop` therefore unlocks, and
//! when it cannot, marks the connection broken so that the pool closes it (closing the
//! session releases the lock).
//!
//! A job reads the study data up to a watermark, the largest `study_data` id when it starts,
//! and its completion records that watermark instead of marking every row it read (which cost
//! more than the rest of an update over a large study). For that, every row up to the
//! watermark must be in the job's snapshot and no row committed later may have an id at or
//! below it. Ids come from an identity sequence, in the order inserts draw them, but commit in
//! any order; so the watermark is read under a SHARE lock on `study_data`, in a short
//! transaction of its own before the job's: the lock waits for every insert in flight to end,
//! and holds new ones back (before they draw an id) only until it commits. The job's
//! correction watermark is read the same way right after, on `study_data_corrections`
//! ([`crate::corrections::watermark`]).
//!
//! An update that imputes rewards reads the decisions without an upload on a second pooled
//! connection, in a thread, while it streams the uploads on its own: the second connection
//! imports the job's snapshot (`pg_export_snapshot`, `SET TRANSACTION SNAPSHOT`), so both
//! read the same rows ([`crate::stream::ReadAhead`]). With no connection to spare it reads them
//! after the uploads on its own connection.

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::dsl::max;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::r2d2::Pool;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
use justin_core::recording::superseded_update;
use justin_core::{
    Imputation, ModelParameters, Provenance, StoreError, UpdateInclusion, UpdateJob, UpdateRecord,
    UpdateRequest,
};

use crate::error::{from_diesel, other};
use crate::models::{update_request, ParametersRow, ProvenanceRow, UpdateRow};
use crate::pg::{lock_for_publishing, Manager, PooledPg};
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance,
};
use crate::stream::{
    included_words, BorrowedUpdateStream, JobFilter, UnrewardedFilter, UpdateCursor,
};

/// Key of the advisory lock held by the one running update job of a database.
const UPDATE_LOCK_KEY: i64 = 0x6a75_7374_696e_5531; // "justinU1"

/// Counts an attempt on the oldest unfinished request and returns it. Committed on its own
/// (autocommit), so the attempt is on record whatever happens to the job afterwards. The lock
/// makes `SKIP LOCKED` redundant among claimers; it keeps a claim from waiting on a row some
/// other statement holds. A worker reads its clock before it claims, so a request received
/// meanwhile starts when it was received, not before.
const CLAIM: &str = "\
UPDATE model_update_requests SET attempts = attempts + 1, started_at = GREATEST($1, created_at) \
WHERE id = (SELECT id FROM model_update_requests WHERE status = 'processing' \
            ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) \
RETURNING *";

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    locked: bool,
}

fn advisory(conn: &mut PgConnection, function: &str) -> QueryResult<bool> {
    diesel::sql_query(format!("SELECT {function}($1) AS locked"))
        .bind::<BigInt, _>(UPDATE_LOCK_KEY)
        .get_result::<Locked>(conn)
        .map(|row| row.locked)
}

/// A pooled connection holding the update lock. Dropping it ends any open transaction and
/// releases the lock before the connection goes back to the pool, or keeps the connection out
/// of the pool when that fails.
pub(crate) struct UpdateLock {
    /// `None` once released.
    conn: Option<PooledPg>,
}

impl UpdateLock {
    /// Takes the update lock on `conn`, or returns `None` (and the connection to the pool)
    /// when another session holds it.
    pub(crate) fn try_take(mut conn: PooledPg) -> Result<Option<Self>, StoreError> {
        if advisory(&mut conn, "pg_try_advisory_lock").map_err(from_diesel)? {
            Ok(Some(Self { conn: Some(conn) }))
        } else {
            Ok(None)
        }
    }

    fn conn(&mut self) -> Result<&mut PgConnection, StoreError> {
        match self.conn.as_mut() {
            Some(conn) => Ok(&mut **conn),
            None => Err(other("the update job's connection was released already")),
        }
    }

    /// Rolls back any open transaction and releases the lock. Whatever the outcome, the
    /// connection is given up: to the pool when the lock was released, otherwise closed.
    pub(crate) fn release(&mut self) -> Result<(), StoreError> {
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        let released = (|| {
            let status =
                <AnsiTransactionManager as TransactionManager<PgConnection>>::transaction_manager_status_mut(&mut conn);
            if status.transaction_depth()?.is_some() {
                AnsiTransactionManager::rollback_transaction(&mut *conn)?;
            }
            advisory(&mut conn, "pg_advisory_unlock")
        })();
        let result = match released {
            Ok(true) => Ok(()),
            Ok(false) => Err(other(
                "the update lock was not held by the job's connection when released",
            )),
            Err(e) => Err(from_diesel(e)),
        };
        if result.is_err() {
            // The session may still hold the lock. A broken transaction manager makes the
            // pool close the connection instead of reusing it, and closing it ends the
            // session and with it the lock.
            <AnsiTransactionManager as TransactionManager<PgConnection>>::transaction_manager_status_mut(&mut conn)
                .set_in_error();
        }
        result
    }
}

impl Drop for UpdateLock {
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            log::warn!("releasing the update lock failed; its connection is closed: {e}");
        }
    }
}

/// Claims the oldest unfinished update request on `conn`; see [`justin_core::Store::claim_update`].
pub(crate) fn claim(
    conn: PooledPg,
    pool: Pool<Manager>,
    started_at: DateTime<Utc>,
) -> Result<Option<PgUpdateJob>, StoreError> {
    let Some(mut lock) = UpdateLock::try_take(conn)? else {
        return Ok(None);
    };
    let claimed = diesel::sql_query(CLAIM)
        .bind::<Timestamptz, _>(started_at)
        .get_result::<UpdateRow>(lock.conn()?)
        .optional()
        .map_err(from_diesel)?;
    // Without a request, dropping the lock releases it.
    let Some(row) = claimed else {
        return Ok(None);
    };
    let request = update_request(row, None)?;
    let (last_study_data_id, last_action_id) = watermark(lock.conn()?).map_err(from_diesel)?;
    let last_correction_id = crate::corrections::watermark(lock.conn()?).map_err(from_diesel)?;
    // The snapshot is taken by the job's first read, not here; either way after the watermark
    // committed, so it holds every row up to it.
    AnsiTransactionManager::begin_transaction_sql(
        lock.conn()?,
        "BEGIN ISOLATION LEVEL REPEATABLE READ",
    )
    .map_err(from_diesel)?;
    Ok(Some(PgUpdateJob {
        lock,
        pool,
        request,
        last_study_data_id,
        last_action_id,
        last_correction_id,
    }))
}

/// The largest `study_data` id and the largest `actions` id once every insert in flight has
/// ended (0 for no rows); see the module's documentation (decisions an update imputes rewards
/// for need the same guarantee as uploads). Waits as long as an open transaction has inserted
/// into either table, and uploads and decisions queue behind it meanwhile: the service's own
/// inserts each commit at once, but a bulk load or a session left open in a transaction holds
/// back updates, uploads and decisions alike. The tables are locked in the order an erasure
/// writes them, so the two never wait for each other in a cycle.
fn watermark(conn: &mut PgConnection) -> QueryResult<(i64, i64)> {
    conn.transaction(|conn| {
        conn.batch_execute("LOCK TABLE study_data, actions IN SHARE MODE")?;
        let uploads = study_data::table
            .select(max(study_data::id))
            .first::<Option<i64>>(conn)?;
        let decisions = actions::table
            .select(max(actions::id))
            .first::<Option<i64>>(conn)?;
        Ok((uploads.unwrap_or(0), decisions.unwrap_or(0)))
    })
}

/// A claimed update request with its locked connection and open transaction.
pub(crate) struct PgUpdateJob {
    lock: UpdateLock,
    /// Where a second connection comes from, to read imputed decisions ahead.
    pool: Pool<Manager>,
    request: UpdateRequest,
    /// The job reads the study data up to this id; see [`watermark`].
    last_study_data_id: i64,
    /// The job imputes rewards for decisions up to this id; see [`watermark`].
    last_action_id: i64,
    /// The job reads corrections up to this id; see [`crate::corrections::watermark`].
    last_correction_id: i64,
}

impl PgUpdateJob {
    /// Stores the parameters, the completion and the provenance with the job's watermark, all
    /// in the job's transaction, and commits. On error the transaction is left open for `Drop`
    /// to roll back.
    fn store_completion(
        &mut self,
        algorithm: &str,
        values: &serde_json::Value,
        provenance: &Provenance,
        finished_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let id = self.request.id;
        let conn = self.lock.conn()?;
        // The publish lock serialises this with `publish_parameters` and seeding, so versions
        // have no gaps. The snapshot predates the lock: a version stored by someone else since
        // then collides with the one computed here, and the update fails instead of
        // overwriting parameters it never read.
        lock_for_publishing(conn).map_err(from_diesel)?;
        let newest = model_parameters::table
            .select(max(model_parameters::version))
            .first::<Option<i64>>(conn)
            .map_err(from_diesel)?;
        let version = newest.unwrap_or(0) + 1;
        let row = diesel::insert_into(model_parameters::table)
            .values((
                model_parameters::version.eq(version),
                model_parameters::algorithm.eq(algorithm),
                model_parameters::parameters.eq(values),
                model_parameters::created_at.eq(finished_at),
            ))
            .returning(ParametersRow::as_returning())
            .get_result(conn)
            .map_err(|e| match &e {
                DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
                    superseded_update(version, id)
                }
                _ => from_diesel(e),
            })?;
        let updated = diesel::update(
            model_update_requests::table
                .find(id)
                .filter(model_update_requests::status.eq("processing")),
        )
        .set((
            model_update_requests::status.eq("completed"),
            model_update_requests::finished_at.eq(Some(finished_at)),
            model_update_requests::error.eq(None::<String>),
            model_update_requests::parameter_version.eq(Some(version)),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
        if updated == 0 {
            return Err(other(format!(
                "update request {id} is no longer processing (was the database reset or restored?)"
            )));
        }
        let mut record = ProvenanceRow::new(
            id,
            version,
            provenance,
            finished_at,
            (self.last_study_data_id, self.last_action_id),
        )?;
        record.last_correction_id = Some(self.last_correction_id);
        diesel::insert_into(update_provenance::table)
            .values(record)
            .execute(conn)
            .map_err(from_diesel)?;
        AnsiTransactionManager::commit_transaction(conn).map_err(from_diesel)?;
        Ok(row.into())
    }

    /// Discards the job's reads and marks the request failed, outside the job's transaction.
    fn store_failure(&mut self, error: &str, finished_at: DateTime<Utc>) -> Result<(), StoreError> {
        let id = self.request.id;
        let conn = self.lock.conn()?;
        AnsiTransactionManager::rollback_transaction(conn).map_err(from_diesel)?;
        let updated = diesel::update(
            model_update_requests::table
                .find(id)
                .filter(model_update_requests::status.eq("processing")),
        )
        .set((
            model_update_requests::status.eq("failed"),
            model_update_requests::finished_at.eq(Some(finished_at)),
            model_update_requests::error.eq(Some(error)),
            model_update_requests::parameter_version.eq(None::<i64>),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
        if updated == 0 {
            return Err(other(format!(
                "update request {id} is no longer processing (was the database reset or restored?)"
            )));
        }
        Ok(())
    }

    /// A second connection in a read-only transaction with the job's snapshot, or `None` when
    /// the pool has none to spare (every connection open and in use) or none came within the
    /// pool's connection timeout: the caller then reads on the job's own connection.
    fn snapshot_reader(&mut self) -> Result<Option<PooledPg>, StoreError> {
        let state = self.pool.state();
        if state.idle_connections == 0 && state.connections >= self.pool.max_size() {
            return Ok(None);
        }
        let Ok(mut reader) = self.pool.get() else {
            return Ok(None);
        };
        let snapshot = diesel::select(sql::<Text>("pg_export_snapshot()"))
            .get_result::<String>(self.lock.conn()?)
            .map_err(from_diesel)?;
        AnsiTransactionManager::begin_transaction_sql(
            &mut *reader,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .map_err(from_diesel)?;
        // The identifier is PostgreSQL's own (hex digits and dashes), written as a literal
        // because the statement takes no bound parameters.
        let imported = if snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            reader
                .batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
                .map_err(from_diesel)
        } else {
            Err(other(format!(
                "unexpected snapshot identifier {snapshot:?}"
            )))
        };
        match imported {
            Ok(()) => Ok(Some(reader)),
            Err(e) => {
                crate::stream::end_transaction(reader);
                Err(e)
            }
        }
    }

    /// Releases the lock after the outcome is stored; a failure here does not undo the outcome
    /// (the connection is closed instead, which releases the lock too).
    fn release_after_outcome(&mut self) {
        if let Err(e) = self.lock.release() {
            log::warn!(
                "releasing the update lock after update {} failed; its connection is closed: {e}",
                self.request.id
            );
        }
    }
}

impl UpdateJob for PgUpdateJob {
    fn request(&self) -> &UpdateRequest {
        &self.request
    }

    fn current_parameters(&mut self) -> Result<ModelParameters, StoreError> {
        let row = model_parameters::table
            .order(model_parameters::version.desc())
            .select(ParametersRow::as_select())
            .first(self.lock.conn()?)
            .optional()
            .map_err(from_diesel)?;
        row.map(ModelParameters::from)
            .ok_or_else(|| other("no model parameters are stored; nothing to update"))
    }

    fn update_data(
        &mut self,
        include: UpdateInclusion,
        imputation: Option<Imputation>,
    ) -> Result<Box<dyn Iterator<Item = Result<UpdateRecord, StoreError>> + '_>, StoreError> {
        let included = included_words(include);
        let started_at = self.request.started_at;
        let imputed = imputation.map(|rule| {
            (
                UnrewardedFilter {
                    included: included.clone(),
                    started_at,
                    decided_by: rule.decided_by,
                    uploads_upto: self.last_study_data_id,
                    reward: rule.reward,
                },
                self.last_action_id,
            )
        });
        let imputing = imputed.is_some();
        let mut cursor = UpdateCursor::new(
            JobFilter {
                included,
                started_at,
                corrections_upto: self.last_correction_id,
            },
            Some(self.last_study_data_id),
            imputed,
        );
        if imputing {
            if let Some(reader) = self.snapshot_reader()? {
                cursor.read_imputed_ahead(reader)?;
            }
        }
        Ok(Box::new(BorrowedUpdateStream {
            conn: self.lock.conn()?,
            cursor,
        }))
    }

    fn complete(
        mut self: Box<Self>,
        algorithm: &str,
        values: &serde_json::Value,
        provenance: &Provenance,
        finished_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        // On error, dropping the job rolls back and releases the lock.
        let stored = self.store_completion(algorithm, values, provenance, finished_at)?;
        self.release_after_outcome();
        Ok(stored)
    }

    fn fail(
        mut self: Box<Self>,
        error: &str,
        finished_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.store_failure(error, finished_at)?;
        self.release_after_outcome();
        Ok(())
    }

    fn requeue(mut self: Box<Self>) -> Result<(), StoreError> {
        let id = self.request.id;
        let conn = self.lock.conn()?;
        AnsiTransactionManager::rollback_transaction(conn).map_err(from_diesel)?;
        // Autocommit, like the claim it undoes; no row changes when the request was reset or
        // restored meanwhile.
        diesel::update(
            model_update_requests::table
                .find(id)
                .filter(model_update_requests::status.eq("processing"))
                .filter(model_update_requests::attempts.gt(0)),
        )
        .set((
            model_update_requests::attempts.eq(model_update_requests::attempts - 1),
            model_update_requests::started_at.eq(None::<DateTime<Utc>>),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
        self.release_after_outcome();
        Ok(())
    }
}
