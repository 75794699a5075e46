//! [`SqliteStore`]: the [`Store`] port over a pool of SQLite connections to one database file.
//!
//! Concurrency follows from SQLite's model: any number of readers, one writer at a time. The
//! database runs in WAL mode, so readers never block the writer nor it them; every connection
//! waits up to the busy timeout for the write lock instead of failing at once. A write that
//! must read first (publishing the next version, claiming a job) runs in `BEGIN IMMEDIATE`,
//! which takes the write lock up front: a deferred transaction that reads and then writes can
//! fail with "database is locked" without waiting, when another writer committed since its
//! read. Single-statement writes take the lock at their start and need no transaction.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::dsl::exists;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, SmallInt, Text};
use justin_core::recording::{refused_decision, refused_upload};
use justin_core::tables::{count_rows_statement, in_table_order, TABLES};
use justin_core::{
    BackupReport, CallbackDelivery, Decision, DecisionStream, ExportStream, ModelParameters,
    Probability, Recorded, RestoreReport, Store, StoreError, StudyRecord, UpdateJob, UpdateRequest,
    UploadRecorded, UserId,
};
use uuid::Uuid;

use crate::error::{from_diesel, from_pool, is_foreign_key_violation, other, SetupError};
use crate::models::{
    count_column, fmt_time, update_request, uuid_text, ActionRow, DecisionValues, ExportRecord,
    ParametersRow, ProvenanceRow, StudyValues, UpdateRow,
};
use crate::schema::{
    actions, model_parameters, model_update_requests, study_data, update_provenance, users,
};
use crate::setup::{self, ConnectionSetup, Location, Throwaway};
use crate::stream::PoolStream;

type Manager = ConnectionManager<SqliteConnection>;
pub(crate) type PooledSqlite = PooledConnection<Manager>;

/// How to open the database and what to do on opening it.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// `sqlite://<path>` (relative to the working directory unless absolute) or
    /// `sqlite://:memory:` for a throwaway database.
    pub url: String,
    /// Most connections held at once. SQLite writes one at a time whatever this is; more
    /// connections serve more concurrent readers.
    pub pool_size: u32,
    /// How long a connection waits for SQLite's write lock before giving up, and how long a
    /// caller waits for a pooled connection.
    pub busy_timeout: Duration,
    /// Apply pending migrations on connecting.
    pub run_migrations: bool,
    /// How long a claimed update job holds the update lease (see [`crate::jobs`]). A job that
    /// runs longer loses its claim and its result is refused; a worker that dies holding the
    /// lease blocks updates until it expires.
    pub update_lease: Duration,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://justin.db".into(),
            pool_size: 8,
            busy_timeout: Duration::from_secs(5),
            run_migrations: true,
            update_lease: Duration::from_secs(10 * 60),
        }
    }
}

/// What every clone of a store shares. Fields drop in order: the pool's connections close
/// before a throwaway database's files are removed.
struct Inner {
    pool: Pool<Manager>,
    url: String,
    /// The database file; update lease files are created beside it (see [`crate::jobs`]).
    path: PathBuf,
    update_lease: Duration,
    _throwaway: Option<Throwaway>,
}

/// The SQLite storage adapter. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("url", &self.inner.url)
            .field("pool", &self.inner.pool.state())
            .finish()
    }
}

impl SqliteStore {
    /// Opens the database as `config` says: creates the file when missing, switches it to WAL,
    /// opens the pool and applies pending migrations if asked.
    ///
    /// # Errors
    /// [`SetupError`] naming the step that failed and why.
    pub fn connect(config: &SqliteConfig) -> Result<Self, SetupError> {
        if config.pool_size == 0 {
            return Err(SetupError::InvalidConfig(
                "the connection pool size must be at least 1".into(),
            ));
        }
        if config.busy_timeout.is_zero() {
            return Err(SetupError::InvalidConfig(
                "the busy timeout must be longer than zero".into(),
            ));
        }
        if config.update_lease.is_zero() {
            return Err(SetupError::InvalidConfig(
                "the update lease must be longer than zero".into(),
            ));
        }
        let url = config.url.clone();
        let (path, throwaway) = match Location::parse(&url)? {
            Location::File(path) => {
                setup::check_directory(&url, &path)?;
                (path, None)
            }
            Location::Memory => {
                let throwaway = Throwaway::new();
                (throwaway.path().to_owned(), Some(throwaway))
            }
        };
        let path_text = path.to_str().ok_or_else(|| SetupError::InvalidUrl {
            url: url.clone(),
            reason: "the path is not valid UTF-8".into(),
        })?;
        let failed = |reason: String| SetupError::Connect {
            url: url.clone(),
            reason,
        };
        let connection_setup = ConnectionSetup {
            busy_timeout: config.busy_timeout,
        };
        // One connection first: it creates the file and switches it to WAL before the pool's
        // connections race to do the same.
        {
            let mut conn =
                SqliteConnection::establish(path_text).map_err(|e| failed(e.to_string()))?;
            conn.batch_execute(&connection_setup.sql())
                .map_err(|e| failed(e.to_string()))?;
            let mode = setup::journal_mode(&mut conn).map_err(|e| failed(e.to_string()))?;
            if mode != "wal" {
                return Err(failed(format!(
                    "the database stays in journal mode {mode:?} instead of WAL (is it on a \
                     network file system?)"
                )));
            }
        }
        let pool = Pool::builder()
            .max_size(config.pool_size)
            .min_idle(Some(1))
            .connection_timeout(config.busy_timeout)
            // A dead SQLite connection is rare (no network); its query then fails and, with
            // its transaction state unknown, the pool discards it.
            .test_on_check_out(false)
            .connection_customizer(Box::new(connection_setup))
            .build(ConnectionManager::new(path_text))
            .map_err(|e| failed(e.to_string()))?;
        let store = Self {
            inner: Arc::new(Inner {
                pool,
                url,
                path: path.clone(),
                update_lease: config.update_lease,
                _throwaway: throwaway,
            }),
        };
        if config.run_migrations {
            let applied = store.run_migrations()?;
            if !applied.is_empty() {
                log::info!("applied migrations: {}", applied.join(", "));
            }
        }
        Ok(store)
    }

    /// Applies the pending embedded migrations; returns the names of those applied, oldest
    /// first (empty when the schema is current).
    ///
    /// # Errors
    /// [`SetupError::Connect`] without a connection, [`SetupError::Migrate`] when a migration
    /// fails (the schema is then left as it was).
    pub fn run_migrations(&self) -> Result<Vec<String>, SetupError> {
        let mut conn = self.inner.pool.get().map_err(|e| SetupError::Connect {
            url: self.inner.url.clone(),
            reason: e.to_string(),
        })?;
        setup::run_migrations(&mut conn)
    }

    /// The URL the store was opened with.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    pub(crate) fn conn(&self) -> Result<PooledSqlite, StoreError> {
        self.inner.pool.get().map_err(from_pool)
    }

    pub(crate) fn update_lease(&self) -> Duration {
        self.inner.update_lease
    }

    /// The database file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// Inserts the decision unless one exists for its key (user, type, index) or study data was
/// uploaded for it; the unique constraint, not the `NOT EXISTS`, is what makes concurrent
/// inserts store one row. (The `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join
/// constraint.)
const INSERT_DECISION: &str = "\
INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state, \
                     action, action_prob, parameter_version, rng_seed, decision_type, \
                     available, unavailable_reason, sent_timestamp) \
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14 \
WHERE NOT EXISTS (SELECT 1 FROM study_data \
                  WHERE user_id = ?1 AND decision_type = ?11 AND decision_idx = ?2) \
ON CONFLICT (user_id, decision_type, decision_idx) DO NOTHING \
RETURNING id";

/// Inserts the upload unless a decision logged for its key differs from it, and records
/// whether one was logged and that decision's availability (available when none was: the
/// record's own claim is not trusted). When no row comes back the upload was refused, and what
/// stands on the key ([`on_key`]) says why.
const INSERT_STUDY_DATA: &str = "\
INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, context, action, \
                        action_prob, state, outcome, reward, action_logged, decision_type, \
                        available, sent_timestamp) \
SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, \
       EXISTS (SELECT 1 FROM actions \
               WHERE user_id = ?1 AND decision_type = ?12 AND decision_idx = ?2), \
       ?12, \
       coalesce((SELECT available FROM actions \
                 WHERE user_id = ?1 AND decision_type = ?12 AND decision_idx = ?2), 1), \
       ?13 \
WHERE NOT EXISTS (SELECT 1 FROM actions \
                  WHERE user_id = ?1 AND decision_type = ?12 AND decision_idx = ?2 \
                  AND (action <> ?6 OR abs(action_prob - ?7) > ?11)) \
RETURNING action_logged";

#[derive(QueryableByName)]
struct Logged {
    #[diesel(sql_type = Bool)]
    action_logged: bool,
}

#[derive(QueryableByName)]
struct InsertedId {
    #[diesel(sql_type = BigInt)]
    #[allow(dead_code)] // Only its presence matters: a row means the insert happened.
    id: i64,
}

#[derive(QueryableByName)]
struct TableCount {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = BigInt)]
    rows: i64,
}

/// Counts every table in one statement, so the counts come from one snapshot, and lists them
/// in [`TABLES`] order.
pub(crate) fn count_rows(conn: &mut SqliteConnection) -> Result<Vec<(String, u64)>, StoreError> {
    let counts = diesel::sql_query(count_rows_statement())
        .load::<TableCount>(conn)
        .map_err(from_diesel)?;
    in_table_order(counts.into_iter().map(|c| (c.name, c.rows)))
}

/// Says why a write broke a foreign key: SQLite does not name the key, so look. Only the
/// participant and the parameter version are referenced by the writes that call this.
fn classify_foreign_key(
    conn: &mut SqliteConnection,
    user: &str,
    parameter_version: Option<i64>,
) -> StoreError {
    let user_exists = diesel::select(exists(users::table.filter(users::user_id.eq(user))))
        .get_result::<bool>(conn);
    match user_exists {
        Ok(false) => return StoreError::UnknownUser,
        Ok(true) => {}
        Err(e) => return from_diesel(e),
    }
    if let Some(version) = parameter_version {
        match diesel::select(exists(model_parameters::table.find(version))).get_result::<bool>(conn)
        {
            Ok(false) => return StoreError::UnknownParameterVersion,
            Ok(true) => {}
            Err(e) => return from_diesel(e),
        }
    }
    other("a foreign key failed, but the participant and the parameter version both exist")
}

/// What stands on a decision's key after an insert of the key stored nothing: the decision
/// logged for it, if any, and whether study data is uploaded for it. One statement when a
/// decision is logged, so both facts come from one snapshot.
fn on_key(
    conn: &mut SqliteConnection,
    user_id: &str,
    decision_type: &str,
    decision_idx: i64,
) -> Result<(Option<ActionRow>, bool), StoreError> {
    let same_key = study_data::user_id
        .eq(user_id)
        .and(study_data::decision_type.eq(decision_type))
        .and(study_data::decision_idx.eq(decision_idx));
    let logged = actions::table
        .filter(actions::user_id.eq(user_id))
        .filter(actions::decision_type.eq(decision_type))
        .filter(actions::decision_idx.eq(decision_idx))
        .select((
            ActionRow::as_select(),
            exists(study_data::table.filter(same_key)),
        ))
        .first::<(ActionRow, bool)>(conn)
        .optional()
        .map_err(from_diesel)?;
    match logged {
        Some((row, uploaded)) => Ok((Some(row), uploaded)),
        None => {
            let uploaded = diesel::select(exists(study_data::table.filter(same_key)))
                .get_result::<bool>(conn)
                .map_err(from_diesel)?;
            Ok((None, uploaded))
        }
    }
}

fn newest_parameters(conn: &mut SqliteConnection) -> Result<Option<ModelParameters>, StoreError> {
    model_parameters::table
        .order(model_parameters::version.desc())
        .select(ParametersRow::as_select())
        .first(conn)
        .optional()
        .map_err(from_diesel)?
        .map(ModelParameters::try_from)
        .transpose()
}

impl Store for SqliteStore {
    fn add_user(&self, user: &UserId, created_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(users::table)
            .values((
                users::user_id.eq(user.as_str()),
                users::created_at.eq(fmt_time(created_at)),
            ))
            .execute(&mut conn)
            .map_err(from_diesel)?;
        Ok(())
    }

    fn record_decision(&self, decision: &Decision) -> Result<Recorded, StoreError> {
        let v = DecisionValues::new(decision)?;
        let mut conn = self.conn()?;
        let inserted = diesel::sql_query(INSERT_DECISION)
            .bind::<Text, _>(v.user_id)
            .bind::<BigInt, _>(v.decision_idx)
            .bind::<Text, _>(&v.requested_at)
            .bind::<Text, _>(&v.decided_at)
            .bind::<Text, _>(&v.context)
            .bind::<Text, _>(&v.state)
            .bind::<SmallInt, _>(v.action)
            .bind::<Double, _>(v.action_prob)
            .bind::<BigInt, _>(v.parameter_version)
            .bind::<BigInt, _>(v.rng_seed)
            .bind::<Text, _>(v.decision_type)
            .bind::<Bool, _>(v.available)
            .bind::<Nullable<Text>, _>(v.unavailable_reason)
            .bind::<Text, _>(v.sent_timestamp)
            .load::<InsertedId>(&mut conn);
        let inserted = match inserted {
            Ok(rows) => rows,
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(classify_foreign_key(
                    &mut conn,
                    v.user_id,
                    Some(v.parameter_version),
                ))
            }
            Err(e) => return Err(from_diesel(e)),
        };
        if !inserted.is_empty() {
            return Ok(Recorded::Inserted);
        }
        let (logged, uploaded) = on_key(&mut conn, v.user_id, v.decision_type, v.decision_idx)?;
        refused_decision(decision, logged, uploaded)
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
        let v = StudyValues::new(record)?;
        let mut conn = self.conn()?;
        let inserted = diesel::sql_query(INSERT_STUDY_DATA)
            .bind::<Text, _>(v.user_id)
            .bind::<BigInt, _>(v.decision_idx)
            .bind::<Text, _>(&v.requested_at)
            .bind::<Text, _>(&v.received_at)
            .bind::<Text, _>(&v.context)
            .bind::<SmallInt, _>(v.action)
            .bind::<Double, _>(v.action_prob)
            .bind::<Text, _>(&v.state)
            .bind::<Text, _>(&v.outcome)
            .bind::<Double, _>(v.reward)
            .bind::<Double, _>(Probability::TOLERANCE)
            .bind::<Text, _>(v.decision_type)
            .bind::<Text, _>(v.sent_timestamp)
            .load::<Logged>(&mut conn);
        let inserted = match inserted {
            Ok(rows) => rows,
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(classify_foreign_key(&mut conn, v.user_id, None))
            }
            Err(e) => return Err(from_diesel(e)),
        };
        if let Some(row) = inserted.first() {
            return Ok(UploadRecorded {
                action_logged: row.action_logged,
            });
        }
        let (logged, uploaded) = on_key(&mut conn, v.user_id, v.decision_type, v.decision_idx)?;
        Err(refused_upload(record, logged, uploaded))
    }

    fn decisions(&self) -> Result<DecisionStream, StoreError> {
        PoolStream::<ActionRow>::open(self).map(|s| Box::new(s) as DecisionStream)
    }

    fn export(&self) -> Result<ExportStream, StoreError> {
        PoolStream::<ExportRecord>::open(self).map(|s| Box::new(s) as ExportStream)
    }

    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError> {
        newest_parameters(&mut *self.conn()?)
    }

    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError> {
        let mut conn = self.conn()?;
        model_parameters::table
            .find(version)
            .select(ParametersRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?
            .map(ModelParameters::try_from)
            .transpose()
    }

    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let row = ParametersRow::new(1, algorithm, values, created_at)?;
        let mut conn = self.conn()?;
        diesel::insert_into(model_parameters::table)
            .values(&row)
            .on_conflict(model_parameters::version)
            .do_nothing()
            .execute(&mut conn)
            .map_err(from_diesel)?;
        newest_parameters(&mut conn)?.ok_or_else(|| {
            other("model parameters vanished right after seeding (concurrent reset?)")
        })
    }

    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError> {
        let row = UpdateRow::try_from(request)?;
        let mut conn = self.conn()?;
        diesel::insert_into(model_update_requests::table)
            .values(&row)
            .execute(&mut conn)
            .map_err(from_diesel)?;
        Ok(())
    }

    fn claim_update(
        &self,
        started_at: DateTime<Utc>,
    ) -> Result<Option<Box<dyn UpdateJob + '_>>, StoreError> {
        let job = crate::jobs::claim(self, started_at)?;
        Ok(job.map(|job| Box::new(job) as Box<dyn UpdateJob>))
    }

    fn record_callback(&self, id: Uuid, delivery: &CallbackDelivery) -> Result<(), StoreError> {
        use model_update_requests::dsl as u;
        let attempts = count_column(delivery.attempts, "callback attempts")?;
        let mut conn = self.conn()?;
        let updated = diesel::update(u::model_update_requests.find(uuid_text(id)))
            .set((
                u::callback_status.eq(delivery.status.as_str()),
                u::callback_attempts.eq(attempts),
                u::callback_error.eq(delivery.last_error.as_deref()),
                u::callback_finished_at.eq(delivery.finished_at.map(fmt_time)),
            ))
            .execute(&mut conn)
            .map_err(from_diesel)?;
        if updated == 0 {
            return Err(StoreError::UnknownUpdate);
        }
        Ok(())
    }

    fn undelivered_callbacks(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        let mut conn = self.conn()?;
        let rows = model_update_requests::table
            .left_join(update_provenance::table)
            .filter(model_update_requests::status.ne("processing"))
            .filter(model_update_requests::callback_status.eq("pending"))
            .order((model_update_requests::created_at, model_update_requests::id))
            .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
            .load::<(UpdateRow, Option<ProvenanceRow>)>(&mut conn)
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(row, provenance)| update_request(row, provenance))
            .collect()
    }

    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError> {
        let mut conn = self.conn()?;
        let row = model_update_requests::table
            .left_join(update_provenance::table)
            .filter(model_update_requests::id.eq(uuid_text(id)))
            .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
            .first::<(UpdateRow, Option<ProvenanceRow>)>(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        row.map(|(row, provenance)| update_request(row, provenance))
            .transpose()
    }

    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
        let mut conn = self.conn()?;
        crate::backup::write_backup(&mut conn, self.url(), dir, taken_at)
    }

    fn check_backup(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        let mut conn = self.conn()?;
        crate::restore::check(&mut conn, file)
    }

    fn restore(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        let mut conn = self.conn()?;
        crate::restore::restore(&mut conn, file)
    }

    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        count_rows(&mut *self.conn()?)
    }

    fn reset(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.immediate_transaction(delete_all).map_err(from_diesel)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.batch_execute("SELECT 1")
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

/// The storage methods only tests call, for this crate's tests and the conformance suite.
#[cfg(feature = "testing")]
impl justin_core::TestingStore for SqliteStore {
    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let mut row = ParametersRow::new(0, algorithm, values, created_at)?;
        let mut conn = self.conn()?;
        // IMMEDIATE: the read of the newest version and the insert of the next one happen
        // under the write lock, so concurrent publishers leave no gap and never collide.
        let stored = conn
            .immediate_transaction::<_, diesel::result::Error, _>(|conn| {
                let newest = model_parameters::table
                    .select(diesel::dsl::max(model_parameters::version))
                    .first::<Option<i64>>(conn)?;
                row.version = newest.unwrap_or(0) + 1;
                diesel::insert_into(model_parameters::table)
                    .values(&row)
                    .returning(ParametersRow::as_returning())
                    .get_result(conn)
            })
            .map_err(from_diesel)?;
        ModelParameters::try_from(stored)
    }

    fn study_data(&self) -> Result<justin_core::StudyDataStream, StoreError> {
        PoolStream::<crate::models::StudyRow>::open(self)
            .map(|s| Box::new(s) as justin_core::StudyDataStream)
    }
}

/// Deletes every row of every study table, children first, and restarts the `AUTOINCREMENT`
/// counters, which SQLite keeps in `sqlite_sequence`. The caller owns the transaction.
pub(crate) fn delete_all(conn: &mut SqliteConnection) -> QueryResult<()> {
    let mut sql = String::new();
    for table in TABLES.iter().rev() {
        sql.push_str(&format!("DELETE FROM {table}; "));
    }
    let names = TABLES
        .iter()
        .map(|t| format!("'{t}'"))
        .collect::<Vec<_>>()
        .join(", ");
    sql.push_str(&format!(
        "DELETE FROM sqlite_sequence WHERE name IN ({names});"
    ));
    conn.batch_execute(&sql)
}
