//! [`SqliteStore`]: the [`Store`] port over one database file: a write queue for the requests'
//! writes and a pool of connections for everything else.
//!
//! Concurrency follows from SQLite's model: any number of readers, one writer at a time. The
//! database runs in WAL mode, so readers never block the writer nor it them. The writes of
//! requests (decisions, uploads, corrections, registering, changing and withdrawing
//! participants, update requests and their callbacks, the monitor's state and alerts) go
//! through the write queue ([`crate::writer`]): one connection writes them first come first
//! served, several per transaction (a write of several statements in a savepoint of its own),
//! and answers each after the commit. Rare, long writes (an update's outcome, claiming an update, erasing a participant, a
//! reset, a restore) take a pooled connection and run in `BEGIN IMMEDIATE`, which takes the
//! write lock up front and waits up to the busy timeout for it: a deferred transaction that
//! reads and then writes can fail with "database is locked" without waiting, when another
//! writer committed since its read.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::dsl::exists;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Bool, Double, Nullable, SmallInt, Text};
use justin_core::recording::{host_decision_against_upload, refused_decision, refused_upload};
use justin_core::tables::{count_rows_statement, in_table_order, TABLES};
use justin_core::{
    Action, ActionChoice, BackupReport, CallbackDelivery, Decision, DecisionGuard, DecisionStream,
    Enrollment, Erasure, ExportLineStream, ExportStream, InvalidValue, ModelParameters,
    Participant, ParticipantFacts, Policy, Probability, Recorded, RestoreReport, Store, StoreError,
    StudyRecord, UpdateJob, UpdateRequest, UploadRecorded, UserId,
};
use justin_core::{NoTelemetry, Telemetry};
use uuid::Uuid;

use crate::backup::Failure;
use crate::error::{from_diesel, from_pool, is_foreign_key_violation, other, SetupError};
use crate::models::{
    count_column, enrollment, fmt_time, update_request, uuid_text, window_columns, ActionRow,
    DecisionText, DecisionValues, ErasureRow, ExportRecord, NewEvent, ParametersRow, ProvenanceRow,
    StudyValues, UpdateRow, UserRow,
};
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    update_provenance, users,
};
use crate::setup::{self, ConnectionSetup, Location, Throwaway};
use crate::stream::PoolStream;
use crate::writer::Writer;

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
    /// The write queue: its connection closes first of all.
    writer: Writer,
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
        Self::connect_observed(config, Arc::new(NoTelemetry))
    }

    /// Opens the database as [`SqliteStore::connect`] does, telling `telemetry` how long each
    /// checkout of a pooled connection waited and when one gave up at `busy_timeout`.
    ///
    /// # Errors
    /// [`SetupError`] naming the step that failed and why.
    pub fn connect_observed(
        config: &SqliteConfig,
        telemetry: Arc<dyn Telemetry>,
    ) -> Result<Self, SetupError> {
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
            .event_handler(Box::new(crate::pool_events::PoolEvents(telemetry)))
            .build(ConnectionManager::new(path_text))
            .map_err(|e| failed(e.to_string()))?;
        let writer = Writer::start(path.clone(), connection_setup).map_err(failed)?;
        let store = Self {
            inner: Arc::new(Inner {
                writer,
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

    /// Runs `write` on the write queue (see [`crate::writer`]).
    pub(crate) fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(write)
    }

    pub(crate) fn update_lease(&self) -> Duration {
        self.inner.update_lease
    }

    /// The database file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// What the slow path of a guarded insert reads about the participant: their window, whether
/// they withdrew, and the guard's counts, each stopped at its limit (a limit of 0 counts
/// nothing); with the newest stored parameter version. One statement, so all come from one snapshot; no row when the participant is not
/// registered (or was erased).
const PARTICIPANT_FACTS: &str = "\
SELECT u.study_start, u.study_start_sent, u.study_end, u.study_end_sent, \
       u.withdrawn_at IS NOT NULL AS withdrawn, \
       (SELECT count(*) FROM (SELECT 1 FROM actions \
         WHERE user_id = ?1 AND decision_type = ?2 AND decision_idx < ?3 AND available \
           AND policy <> 'host' LIMIT ?4)) AS earlier_in_study, \
       (SELECT count(*) FROM (SELECT 1 FROM users \
         WHERE coalesce(study_start, created_at) <= ?5 LIMIT ?6)) AS started_participants, \
       (SELECT coalesce(max(version), 0) FROM model_parameters) AS newest_version \
FROM users u WHERE u.user_id = ?1 AND u.erased_at IS NULL";

#[derive(QueryableByName)]
struct FactsRow {
    #[diesel(sql_type = Nullable<Text>)]
    study_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    study_start_sent: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    study_end: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    study_end_sent: Option<String>,
    #[diesel(sql_type = Bool)]
    withdrawn: bool,
    #[diesel(sql_type = BigInt)]
    earlier_in_study: i64,
    #[diesel(sql_type = BigInt)]
    started_participants: i64,
    #[diesel(sql_type = BigInt)]
    newest_version: i64,
}

/// Inserts the upload unless a decision logged for its key differs from it, and records
/// whether one was logged, that decision's availability (available when none was: the
/// record's own claim is not trusted) and its policy (none when none was), in one statement
/// that finds the logged decision once by the key's unique index. When no row comes back the
/// upload was refused, and what stands on the key ([`on_key`]) says why. Every value is bound,
/// so the text is the same for every upload and Diesel prepares it once per connection: on the
/// writer, which serves every write in turn, an upload costs SQLite no parsing or planning.
struct UploadInsert<'a> {
    v: &'a StudyValues<'a>,
}

impl diesel::query_builder::QueryId for UploadInsert<'_> {
    type QueryId = ();
    // No type names the statement; Diesel keys its statement cache by the text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for UploadInsert<'_> {
    type SqlType = Bool;
}

impl RunQueryDsl<SqliteConnection> for UploadInsert<'_> {}

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for UploadInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        let v = self.v;
        out.push_sql(
            "INSERT INTO study_data (user_id, decision_idx, request_timestamp, created_at, \
             context, action, action_prob, state, outcome, reward, action_logged, \
             decision_type, available, sent_timestamp, policy) SELECT ",
        );
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.received_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.context)?;
        out.push_sql(", ");
        out.push_bind_param::<SmallInt, _>(&v.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.action_prob)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.state)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.reward)?;
        out.push_sql(", a.id IS NOT NULL, ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", coalesce(a.available, 1), ");
        out.push_bind_param::<Text, _>(v.sent_timestamp)?;
        // The decision logged for the key, when there is one.
        out.push_sql(", a.policy FROM (SELECT 1) AS upload LEFT JOIN actions a ON a.user_id = ");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(" AND a.decision_type = ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(" AND a.decision_idx = ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        // Stored when none is logged, or when the logged one has this action and probability.
        out.push_sql(" WHERE a.id IS NULL OR (a.action = ");
        out.push_bind_param::<SmallInt, _>(&v.action)?;
        out.push_sql(" AND abs(a.action_prob - ");
        out.push_bind_param::<Double, _>(&v.action_prob)?;
        out.push_sql(") <= ");
        out.push_bind_param::<Double, _>(&Probability::TOLERANCE)?;
        out.push_sql(") RETURNING action_logged");
        Ok(())
    }
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

/// Whether `version` is older than the newest stored parameter version.
fn behind(conn: &mut SqliteConnection, version: i64) -> Result<bool, StoreError> {
    let newest = model_parameters::table
        .select(diesel::dsl::max(model_parameters::version))
        .get_result::<Option<i64>>(conn)
        .map_err(from_diesel)?;
    Ok(newest.is_some_and(|n| n > version))
}

/// [`refused_decision`] for an insert that stored nothing, unless the key does not explain it
/// (no decision stands on it, and for a decision of the service no upload either) and the
/// decision's parameter version is older than the newest stored one: then
/// [`StoreError::UnknownParameterVersion`].
fn refused_or_stale(
    conn: &mut SqliteConnection,
    decision: &Decision,
    logged: Option<ActionRow>,
    uploaded: bool,
) -> Result<Recorded, StoreError> {
    let host = matches!(decision.policy, Policy::Host { .. });
    if logged.is_none() && (host || !uploaded) && behind(conn, decision.parameter_version)? {
        return Err(StoreError::UnknownParameterVersion);
    }
    refused_decision(decision, logged, uploaded)
}

/// What a decision's insert checks before it stores the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertCheck {
    /// Nothing but the key (a host decision over the upload its transaction compared it with).
    KeyOnly,
    /// That no study data is uploaded for the key.
    NoUpload,
    /// That, and what the guard asks of the participant.
    InStudy {
        warmup_first_decisions: Option<u32>,
        warmup_until_participants: Option<u32>,
    },
}

impl InsertCheck {
    fn of(guard: DecisionGuard) -> Self {
        match guard {
            DecisionGuard::None => Self::NoUpload,
            DecisionGuard::InStudy {
                warmup_first_decisions,
                warmup_until_participants,
            } => Self::InStudy {
                warmup_first_decisions,
                warmup_until_participants,
            },
        }
    }
}

/// A decision's insert: one statement that stores the decision unless its key is taken, its
/// parameter version is older than the newest stored one, or `check` fails, and returns its
/// id when it stored it. One statement, so the check and the
/// insert happen under one write lock. With [`InsertCheck::InStudy`] without counts it is the
/// path of an active participant outside warm-up: the unguarded insert with one lookup of the
/// participant by its unique index.
///
/// Its text depends only on the check (the warm-up's limits are numbers from the
/// configuration, written into it as such), and every value is bound, so Diesel prepares each
/// form once per connection and keeps it: a decision costs SQLite no parsing or planning.
struct DecisionInsert<'a> {
    v: &'a DecisionValues<'a>,
    check: InsertCheck,
}

impl diesel::query_builder::QueryId for DecisionInsert<'_> {
    type QueryId = ();
    // The text varies with the check, so Diesel keys its statement cache by the text.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for DecisionInsert<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<SqliteConnection> for DecisionInsert<'_> {}

impl diesel::query_builder::QueryFragment<diesel::sqlite::Sqlite> for DecisionInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        let v = self.v;
        out.push_sql(
            "INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, \
             state, action, action_prob, parameter_version, rng_seed, decision_type, available, \
             unavailable_reason, sent_timestamp, policy, fallback_reason, decided_by, in_study) \
             SELECT ",
        );
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.decided_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.context)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&v.state)?;
        out.push_sql(", ");
        out.push_bind_param::<SmallInt, _>(&v.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.action_prob)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.parameter_version)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.rng_seed)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&v.available)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.unavailable_reason)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.sent_timestamp)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.policy)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.fallback_reason)?;
        out.push_sql(", ");
        out.push_bind_param::<Nullable<Text>, _>(&v.decided_by)?;
        out.push_sql(", ");
        out.push_bind_param::<Bool, _>(&v.in_study)?;
        match self.check {
            // The `WHERE` also keeps SQLite from reading `ON CONFLICT` as a join constraint.
            InsertCheck::KeyOnly => {
                out.push_sql(" WHERE ");
                self.version_is_newest(&mut out)?;
            }
            InsertCheck::NoUpload => {
                out.push_sql(" WHERE ");
                self.version_is_newest(&mut out)?;
                out.push_sql(" AND ");
                self.no_upload(&mut out)?;
            }
            InsertCheck::InStudy {
                warmup_first_decisions,
                warmup_until_participants,
            } => {
                // The participant's row, only when they are in the study at the decision's
                // time (times compare as text: they are stored fixed-width in UTC), have not
                // withdrawn and were not erased. Without the row nothing is stored, as for a
                // participant out of the study; the caller tells the two apart afterwards.
                out.push_sql(" FROM users u WHERE u.user_id = ");
                out.push_bind_param::<Text, _>(v.user_id)?;
                out.push_sql(" AND (u.study_start IS NULL OR u.study_start <= ");
                out.push_bind_param::<Text, _>(&v.requested_at)?;
                out.push_sql(") AND (u.study_end IS NULL OR ");
                out.push_bind_param::<Text, _>(&v.requested_at)?;
                out.push_sql(
                    " < u.study_end) AND u.withdrawn_at IS NULL AND u.erased_at IS NULL AND ",
                );
                if let Some(n) = warmup_first_decisions {
                    // At least n decisions of the participant and type with a smaller index
                    // were available and drawn by the service, counted no further than n.
                    out.push_sql("(SELECT count(*) FROM (SELECT 1 FROM actions WHERE user_id = ");
                    out.push_bind_param::<Text, _>(v.user_id)?;
                    out.push_sql(" AND decision_type = ");
                    out.push_bind_param::<Text, _>(v.decision_type)?;
                    out.push_sql(" AND decision_idx < ");
                    out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
                    out.push_sql(&format!(
                        " AND available AND policy <> 'host' LIMIT {n})) >= {n} AND "
                    ));
                }
                if let Some(k) = warmup_until_participants {
                    // At least k registered participants had started at the decision's time,
                    // counted no further than k (through `users_started_idx`).
                    out.push_sql(
                        "(SELECT count(*) FROM (SELECT 1 FROM users \
                         WHERE coalesce(study_start, created_at) <= ",
                    );
                    out.push_bind_param::<Text, _>(&v.requested_at)?;
                    out.push_sql(&format!(" LIMIT {k})) >= {k} AND "));
                }
                self.version_is_newest(&mut out)?;
                out.push_sql(" AND ");
                self.no_upload(&mut out)?;
            }
        }
        // The unique constraint, not the checks, makes concurrent inserts store one row.
        out.push_sql(" ON CONFLICT (user_id, decision_type, decision_idx) DO NOTHING RETURNING id");
        Ok(())
    }
}

impl DecisionInsert<'_> {
    /// The decision's parameter version is the newest stored (`max` of the primary key: one
    /// probe), so that no decision is stored under a version older than one another process
    /// has published.
    fn version_is_newest<'b>(
        &'b self,
        out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        out.push_bind_param::<BigInt, _>(&self.v.parameter_version)?;
        out.push_sql(" >= (SELECT max(version) FROM model_parameters)");
        Ok(())
    }

    /// No study data is uploaded for the key.
    fn no_upload<'b>(
        &'b self,
        out: &mut diesel::query_builder::AstPass<'_, 'b, diesel::sqlite::Sqlite>,
    ) -> QueryResult<()> {
        out.push_sql("NOT EXISTS (SELECT 1 FROM study_data WHERE user_id = ");
        out.push_bind_param::<Text, _>(self.v.user_id)?;
        out.push_sql(" AND decision_type = ");
        out.push_bind_param::<Text, _>(self.v.decision_type)?;
        out.push_sql(" AND decision_idx = ");
        out.push_bind_param::<BigInt, _>(&self.v.decision_idx)?;
        out.push_sql(")");
        Ok(())
    }
}

/// Runs a decision's insert with `check`; true when it stored the decision.
fn insert_decision(
    conn: &mut SqliteConnection,
    check: InsertCheck,
    v: &DecisionValues<'_>,
) -> QueryResult<bool> {
    DecisionInsert { v, check }
        .load::<i64>(conn)
        .map(|ids| !ids.is_empty())
}

/// Records a decision the study server made itself, inside the caller's write transaction: as
/// any decision when its key is free; the decision stored before when one is; and over the
/// upload stored for its key when they agree, which then counts as logged (with this
/// decision's policy and availability).
fn record_host_decision(
    conn: &mut SqliteConnection,
    decision: &Decision,
    v: &DecisionValues<'_>,
) -> Result<Recorded, Failure> {
    let foreign_key = |conn: &mut SqliteConnection, e: diesel::result::Error| {
        if is_foreign_key_violation(&e) {
            Failure::Store(classify_foreign_key(
                conn,
                v.user_id,
                Some(v.parameter_version),
            ))
        } else {
            Failure::Db(e)
        }
    };
    match insert_decision(conn, InsertCheck::NoUpload, v) {
        Ok(true) => return Ok(Recorded::Inserted),
        Ok(false) => {}
        Err(e) => return Err(foreign_key(conn, e)),
    }
    let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
    if logged.is_some() || !uploaded {
        return Ok(refused_or_stale(conn, decision, logged, uploaded)?);
    }
    let same_key = study_data::user_id
        .eq(v.user_id)
        .and(study_data::decision_type.eq(v.decision_type))
        .and(study_data::decision_idx.eq(v.decision_idx));
    let (id, action, action_prob) = study_data::table
        .filter(same_key)
        .select((study_data::id, study_data::action, study_data::action_prob))
        .first::<(i64, i16, f64)>(conn)?;
    let unreadable = |e: InvalidValue| other(format!("invalid row {id} in study_data: {e}"));
    let upload = ActionChoice {
        action: Action::from_i64(action.into()).map_err(unreadable)?,
        action_prob: Probability::new(action_prob).map_err(unreadable)?,
    };
    host_decision_against_upload(decision, upload)?;
    match insert_decision(conn, InsertCheck::KeyOnly, v) {
        Ok(true) => {}
        Ok(false) if behind(conn, v.parameter_version)? => {
            return Err(Failure::Store(StoreError::UnknownParameterVersion))
        }
        Ok(false) => {
            return Err(Failure::Store(other(
                "a decision appeared on the key inside the write transaction",
            )))
        }
        Err(e) => return Err(foreign_key(conn, e)),
    }
    diesel::update(study_data::table.filter(same_key))
        .set((
            study_data::action_logged.eq(true),
            study_data::policy.eq(Some(v.policy)),
            study_data::available.eq(v.available),
        ))
        .execute(conn)?;
    Ok(Recorded::Inserted)
}

/// A registered participant's row (not an erased one's: its id is a pseudonym).
fn registered(
    user: &str,
) -> diesel::dsl::Filter<
    diesel::dsl::Filter<users::table, diesel::dsl::Eq<users::user_id, &str>>,
    diesel::dsl::IsNull<users::erased_at>,
> {
    users::table
        .filter(users::user_id.eq(user))
        .filter(users::erased_at.is_null())
}

/// A registered participant with their counts, read in the caller's transaction.
fn read_participant(
    conn: &mut SqliteConnection,
    user: &str,
) -> Result<Option<Participant>, Failure> {
    // The row holds the counts (migration 2026-12-05's triggers keep them).
    let Some((row, decisions, uploads)) = registered(user)
        .select((UserRow::as_select(), users::decisions, users::uploads))
        .first::<(UserRow, i64, i64)>(conn)
        .optional()?
    else {
        return Ok(None);
    };
    row.participant(decisions, uploads)
        .map(Some)
        .map_err(Failure::Store)
}

/// Erases `user` inside the caller's write transaction (see [`Store::erase_participant`]).
///
/// The participant's id is replaced by the pseudonym in `users` and `actions`, whose
/// `user_id` references it. SQLite checks foreign keys at the end of each statement unless
/// told to defer them, and neither order of the two renames is consistent in between, so the
/// checks are deferred to the commit (which resets the setting), where every reference holds
/// again. The `users` row keeps its id, which the audit record names.
fn erase(conn: &mut SqliteConnection, user: &str, erasure: &Erasure) -> Result<Erasure, Failure> {
    let Some(number) = registered(user)
        .select(users::id)
        .first::<i64>(conn)
        .optional()?
    else {
        return Err(Failure::Store(StoreError::UnknownUser));
    };
    conn.batch_execute("PRAGMA defer_foreign_keys = ON")?;
    let pseudonym = erasure.pseudonym.as_str();
    // Deleting the uploads would take their corrections too (ON DELETE CASCADE); deleted here
    // first, they are counted in the audit record.
    let corrections = diesel::delete(
        crate::schema::study_data_corrections::table
            .filter(crate::schema::study_data_corrections::user_id.eq(user)),
    )
    .execute(conn)?;
    let uploads =
        diesel::delete(study_data::table.filter(study_data::user_id.eq(user))).execute(conn)?;
    let events =
        diesel::delete(participant_events::table.filter(participant_events::user_id.eq(user)))
            .execute(conn)?;
    // An out-of-study decision keeps its reason: the service's word, not the client's.
    let decisions = diesel::update(actions::table.filter(actions::user_id.eq(user)))
        .set((
            actions::user_id.eq(pseudonym),
            actions::context.eq("{}"),
            actions::state.eq("[]"),
            actions::unavailable_reason.eq(diesel::dsl::sql::<Nullable<Text>>(
                "CASE WHEN in_study THEN NULL ELSE unavailable_reason END",
            )),
        ))
        .execute(conn)?;
    diesel::update(users::table.find(number))
        .set((
            users::user_id.eq(pseudonym),
            users::study_start.eq(None::<String>),
            users::study_start_sent.eq(None::<String>),
            users::study_end.eq(None::<String>),
            users::study_end_sent.eq(None::<String>),
            users::withdrawal_reason.eq(None::<String>),
            users::erased_at.eq(Some(fmt_time(erasure.erased_at))),
        ))
        .execute(conn)?;
    let rows = |n: usize| u64::try_from(n).map_err(|e| Failure::Store(other(e)));
    let mut row_counts = vec![
        ("actions".to_owned(), rows(decisions)?),
        ("study_data".to_owned(), rows(uploads)?),
        ("participant_events".to_owned(), rows(events)?),
        ("users".to_owned(), 1),
    ];
    justin_core::tables::count_erased_corrections(&mut row_counts, rows(corrections)?);
    let erased = Erasure {
        participant_number: number,
        row_counts,
        ..erasure.clone()
    };
    diesel::insert_into(erasures::table)
        .values(ErasureRow::new(&erased).map_err(Failure::Store)?)
        .execute(conn)?;
    Ok(erased)
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

/// Stores a decision (see [`Store::record_decision`]); runs on the writer. Only a host
/// decision over an upload writes more than one statement; it runs in the request's savepoint.
fn record_decision(
    conn: &mut SqliteConnection,
    decision: &Decision,
    v: &DecisionValues<'_>,
    guard: DecisionGuard,
) -> Result<Recorded, StoreError> {
    if matches!(decision.policy, Policy::Host { .. }) && guard == DecisionGuard::None {
        // The request's savepoint on the writer makes its reads and writes one unit.
        return record_host_decision(conn, decision, v).map_err(StoreError::from);
    }
    let inserted = match insert_decision(conn, InsertCheck::of(guard), v) {
        Ok(inserted) => inserted,
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(classify_foreign_key(
                conn,
                v.user_id,
                Some(v.parameter_version),
            ))
        }
        Err(e) => return Err(from_diesel(e)),
    };
    if inserted {
        return Ok(Recorded::Inserted);
    }
    let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
    let DecisionGuard::InStudy {
        warmup_first_decisions,
        warmup_until_participants,
    } = guard
    else {
        return refused_or_stale(conn, decision, logged, uploaded);
    };
    if logged.is_some() || uploaded {
        return refused_decision(decision, logged, uploaded);
    }
    let facts = diesel::sql_query(PARTICIPANT_FACTS)
        .bind::<Text, _>(v.user_id)
        .bind::<Text, _>(v.decision_type)
        .bind::<BigInt, _>(v.decision_idx)
        .bind::<BigInt, _>(i64::from(warmup_first_decisions.unwrap_or(0)))
        .bind::<Text, _>(&v.requested_at)
        .bind::<BigInt, _>(i64::from(warmup_until_participants.unwrap_or(0)))
        .get_result::<FactsRow>(conn)
        .optional()
        .map_err(from_diesel)?
        .ok_or(StoreError::UnknownUser)?;
    // Behind on parameters comes before the guard.
    if facts.newest_version > v.parameter_version {
        return Err(StoreError::UnknownParameterVersion);
    }
    let count = |n: i64| u64::try_from(n).map_err(other);
    Ok(Recorded::Ineligible(ParticipantFacts {
        enrollment: enrollment(
            facts.study_start.as_deref(),
            facts.study_start_sent,
            facts.study_end.as_deref(),
            facts.study_end_sent,
        )
        .map_err(|e| other(format!("invalid window of participant {}: {e}", v.user_id)))?,
        withdrawn: facts.withdrawn,
        earlier_in_study: count(facts.earlier_in_study)?,
        started_participants: count(facts.started_participants)?,
    }))
}

/// Stores an upload (see [`Store::record_study_data`]); runs on the writer.
fn record_study_data(
    conn: &mut SqliteConnection,
    record: &StudyRecord,
) -> Result<UploadRecorded, StoreError> {
    let v = StudyValues::new(record)?;
    let inserted = UploadInsert { v: &v }.load::<bool>(conn);
    let inserted = match inserted {
        Ok(rows) => rows,
        Err(e) if is_foreign_key_violation(&e) => {
            return Err(classify_foreign_key(conn, v.user_id, None))
        }
        Err(e) => return Err(from_diesel(e)),
    };
    if let Some(&action_logged) = inserted.first() {
        return Ok(UploadRecorded { action_logged });
    }
    let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
    Err(refused_upload(record, logged, uploaded))
}

impl Store for SqliteStore {
    fn add_user(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let (start, start_sent, end, end_sent) = window_columns(enrollment);
        let user = user.clone();
        self.write(move |conn| {
            diesel::insert_into(users::table)
                .values((
                    users::user_id.eq(user.as_str()),
                    users::created_at.eq(fmt_time(created_at)),
                    users::study_start.eq(&start),
                    users::study_start_sent.eq(&start_sent),
                    users::study_end.eq(&end),
                    users::study_end_sent.eq(&end_sent),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            let window = (
                start.clone(),
                start_sent.clone(),
                end.clone(),
                end_sent.clone(),
            );
            diesel::insert_into(participant_events::table)
                .values(NewEvent::new(
                    user.as_str(),
                    "enrolled",
                    created_at,
                    window,
                    None,
                ))
                .execute(conn)
                .map_err(from_diesel)
        })?;
        Ok(())
    }

    fn participant(&self, user: &UserId) -> Result<Option<Participant>, StoreError> {
        // One statement: the row holds its counts.
        let mut conn = self.conn()?;
        read_participant(&mut conn, user.as_str()).map_err(StoreError::from)
    }

    fn change_enrollment(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        changed_at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let window = window_columns(enrollment);
        let user = user.clone();
        self.write(move |conn| -> Result<Participant, StoreError> {
            let (start, start_sent, end, end_sent) = &window;
            let changed = diesel::update(registered(user.as_str()))
                .set((
                    users::study_start.eq(start),
                    users::study_start_sent.eq(start_sent),
                    users::study_end.eq(end),
                    users::study_end_sent.eq(end_sent),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            if changed == 0 {
                return Err(StoreError::UnknownUser);
            }
            diesel::insert_into(participant_events::table)
                .values(NewEvent::new(
                    user.as_str(),
                    "enrollment_changed",
                    changed_at,
                    window.clone(),
                    None,
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            read_participant(conn, user.as_str())?.ok_or(StoreError::UnknownUser)
        })
    }

    fn withdraw(
        &self,
        user: &UserId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let user = user.clone();
        let reason = reason.to_owned();
        self.write(move |conn| -> Result<Participant, StoreError> {
            let reason = reason.as_str();
            let row = registered(user.as_str())
                .select(UserRow::as_select())
                .first::<UserRow>(conn)
                .optional()
                .map_err(from_diesel)?
                .ok_or(StoreError::UnknownUser)?;
            if row.withdrawn_at.is_some() {
                return Err(StoreError::AlreadyWithdrawn);
            }
            diesel::update(registered(user.as_str()))
                .set((
                    users::withdrawn_at.eq(Some(fmt_time(at))),
                    users::withdrawal_reason.eq(Some(reason)),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            let window = (
                row.study_start,
                row.study_start_sent,
                row.study_end,
                row.study_end_sent,
            );
            diesel::insert_into(participant_events::table)
                .values(NewEvent::new(
                    user.as_str(),
                    "withdrawn",
                    at,
                    window,
                    Some(reason),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            read_participant(conn, user.as_str())?.ok_or(StoreError::UnknownUser)
        })
    }

    fn erase_participant(&self, user: &UserId, erasure: &Erasure) -> Result<Erasure, StoreError> {
        let mut conn = self.conn()?;
        // Every connection overwrites deleted content with zeros (see `ConnectionSetup`).
        let erased = conn
            .immediate_transaction::<_, Failure, _>(|conn| erase(conn, user.as_str(), erasure))
            .map_err(StoreError::from);
        if erased.is_ok() {
            // The pages written before the erasure stay in the write-ahead log until a
            // checkpoint has copied the log and the next writer starts it over. A passive
            // checkpoint waits for no one; what it cannot copy now, the next one does.
            if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE)") {
                log::warn!("cannot checkpoint the write-ahead log after an erasure: {e}");
            }
        }
        erased
    }

    fn erased_pseudonyms(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn()?;
        erasures::table
            .order((erasures::erased_at, erasures::id))
            .select(erasures::pseudonym)
            .load(&mut conn)
            .map_err(from_diesel)
    }

    fn record_decision(
        &self,
        decision: &Decision,
        guard: DecisionGuard,
    ) -> Result<Recorded, StoreError> {
        let host = matches!(decision.policy, Policy::Host { .. }) && guard == DecisionGuard::None;
        let text = DecisionText::new(decision)?;
        let decision = decision.clone();
        let record = move |conn: &mut SqliteConnection| {
            let v = DecisionValues::with_text(&decision, text);
            record_decision(conn, &decision, &v, guard)
        };
        if host {
            // It may write two rows: the decision, and the upload it now counts as logged.
            self.write(record)
        } else {
            self.inner.writer.write_one(record)
        }
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
        let record = record.clone();
        self.inner
            .writer
            .write_one(move |conn| record_study_data(conn, &record))
    }

    fn record_correction(
        &self,
        record: &StudyRecord,
    ) -> Result<justin_core::CorrectionRecorded, StoreError> {
        let record = record.clone();
        self.write(move |conn| crate::corrections::record(conn, &record))
    }

    fn decision_history(
        &self,
        user: &UserId,
        decision_type: &justin_core::DecisionType,
        decision_idx: justin_core::DecisionIdx,
    ) -> Result<Option<justin_core::DecisionHistory>, StoreError> {
        let mut conn = self.conn()?;
        // Read one after the other: a correction stored in between shows or not, as if it
        // had been stored after the call.
        let decision = actions::table
            .filter(actions::user_id.eq(user.as_str()))
            .filter(actions::decision_type.eq(decision_type.as_str()))
            .filter(actions::decision_idx.eq(decision_idx.get()))
            .select(ActionRow::as_select())
            .first::<ActionRow>(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        let upload = study_data::table
            .filter(study_data::user_id.eq(user.as_str()))
            .filter(study_data::decision_type.eq(decision_type.as_str()))
            .filter(study_data::decision_idx.eq(decision_idx.get()))
            .select(crate::models::StudyRow::as_select())
            .first::<crate::models::StudyRow>(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        if decision.is_none() && upload.is_none() {
            return Ok(None);
        }
        let corrections = crate::corrections::of_key(&mut conn, user, decision_type, decision_idx)?;
        Ok(Some(justin_core::DecisionHistory {
            decision: decision.map(TryInto::try_into).transpose()?,
            upload: upload.map(TryInto::try_into).transpose()?,
            corrections,
        }))
    }

    fn decisions(&self) -> Result<DecisionStream, StoreError> {
        PoolStream::<ActionRow>::open(self).map(|s| Box::new(s) as DecisionStream)
    }

    fn export_by_participant(&self) -> Result<ExportStream, StoreError> {
        crate::by_participant::ByParticipantStream::open(self).map(|s| Box::new(s) as ExportStream)
    }

    fn completed_updates(&self) -> Result<Vec<justin_core::CompletedUpdate>, StoreError> {
        let rows = model_update_requests::table
            .inner_join(update_provenance::table)
            .filter(model_update_requests::status.eq("completed"))
            .order(update_provenance::parameter_version)
            .select((UpdateRow::as_select(), ProvenanceRow::as_select()))
            .load::<(UpdateRow, ProvenanceRow)>(&mut *self.conn()?)
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(row, provenance)| {
                let parameter_version = provenance.parameter_version;
                let request = update_request(row, Some(provenance))?;
                Ok(justin_core::CompletedUpdate {
                    update_id: request.id,
                    parameter_version,
                    started_at: request.started_at,
                    finished_at: request.finished_at,
                    provenance: request
                        .provenance
                        .ok_or_else(|| other("a completed update lost its provenance"))?,
                })
            })
            .collect()
    }

    fn update_rows(&self, version: i64) -> Result<justin_core::UpdateRecordStream, StoreError> {
        let cursor =
            crate::stream::update_read(&mut *self.conn()?, version).map_err(from_diesel)?;
        Ok(Box::new(crate::stream::PoolUpdateStream {
            store: self.clone(),
            cursor,
        }))
    }

    fn export(&self) -> Result<ExportStream, StoreError> {
        PoolStream::<ExportRecord>::open(self).map(|s| Box::new(s) as ExportStream)
    }

    fn export_lines(&self) -> Result<ExportLineStream, StoreError> {
        PoolStream::<crate::stream::ExportLineRecord>::open(self)
            .map(|s| Box::new(s) as ExportLineStream)
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
        self.inner.writer.write_one(move |conn| {
            diesel::insert_into(model_update_requests::table)
                .values(&row)
                .execute(conn)
                .map_err(from_diesel)
        })?;
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
        let delivery = delivery.clone();
        let updated = self.inner.writer.write_one(move |conn| {
            diesel::update(u::model_update_requests.find(uuid_text(id)))
                .set((
                    u::callback_status.eq(delivery.status.as_str()),
                    u::callback_attempts.eq(attempts),
                    u::callback_error.eq(delivery.last_error.as_deref()),
                    u::callback_finished_at.eq(delivery.finished_at.map(fmt_time)),
                ))
                .execute(conn)
                .map_err(from_diesel)
        })?;
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

    fn monitor_facts(
        &self,
        query: &justin_core::monitor::MonitorQuery,
    ) -> Result<justin_core::monitor::MonitorFacts, StoreError> {
        crate::monitor::facts(&mut *self.conn()?, query)
    }

    fn record_refused_upload(
        &self,
        refusal: &justin_core::monitor::RefusedUpload,
    ) -> Result<(), StoreError> {
        let refusal = refusal.clone();
        self.write(move |conn| crate::monitor::record_refusal(conn, &refusal))
    }

    fn advance_monitor_state(
        &self,
        change: &justin_core::monitor::StateChange,
    ) -> Result<justin_core::monitor::StateAdvance, StoreError> {
        let change = change.clone();
        self.write(move |conn| crate::monitor::advance(conn, &change))
    }

    fn claim_alert(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<justin_core::monitor::Alert>, StoreError> {
        self.write(move |conn| crate::monitor::claim(conn, now, lease_until))
    }

    fn record_alert(
        &self,
        id: i64,
        delivery: &justin_core::monitor::AlertDelivery,
    ) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.write(move |conn| crate::monitor::record(conn, id, &delivery))
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.batch_execute("SELECT 1")
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }

    // ---- The dashboard (crate::dashboard). ----

    fn dashboard_days(
        &self,
        settings: &justin_core::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<justin_core::dashboard::DashboardDays, StoreError> {
        crate::dashboard::days(&mut *self.conn()?, settings, now)
    }

    fn dashboard_participants(
        &self,
        settings: &justin_core::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<justin_core::dashboard::ParticipantActivity>, StoreError> {
        crate::dashboard::participants(&mut *self.conn()?, settings, now)
    }

    fn dashboard_participant_counts(&self) -> Result<(u64, u64), StoreError> {
        crate::dashboard::participant_counts(&mut *self.conn()?)
    }

    fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        let mut conn = self.conn()?;
        let rows = model_update_requests::table
            .left_join(update_provenance::table)
            .order((
                model_update_requests::created_at.desc(),
                model_update_requests::id.desc(),
            ))
            .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
            .load::<(UpdateRow, Option<ProvenanceRow>)>(&mut conn)
            .map_err(from_diesel)?;
        rows.into_iter()
            .map(|(row, provenance)| update_request(row, provenance))
            .collect()
    }

    fn dashboard_recent_decisions(
        &self,
        version: i64,
        limit: u32,
    ) -> Result<Vec<Decision>, StoreError> {
        let mut conn = self.conn()?;
        actions::table
            .filter(actions::parameter_version.eq(version))
            .filter(actions::available.eq(true))
            .order(actions::id.desc())
            .limit(i64::from(limit))
            .select(ActionRow::as_select())
            .load::<ActionRow>(&mut conn)
            .map_err(from_diesel)?
            .into_iter()
            .map(Decision::try_from)
            .collect()
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
    conn.batch_execute(&sql)?;
    // The dashboard's rollup is derived from the rows just deleted.
    crate::dashboard::clear(conn)
}

#[cfg(test)]
mod tests {
    use diesel::query_builder::QueryFragment;

    use super::*;
    use crate::setup::{run_migrations, Throwaway};

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    /// Whether a step of a plan reads a whole table (a scan of a subquery's few rows is not).
    fn scans_a_table(detail: &str) -> bool {
        detail.starts_with("SCAN") && !detail.starts_with("SCAN (subquery")
    }

    fn plan(conn: &mut SqliteConnection, sql: &str) -> Vec<String> {
        diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
            .load::<Plan>(conn)
            .unwrap()
            .into_iter()
            .map(|p| p.detail)
            .collect()
    }

    /// The text of a decision's insert with `check`, as SQLite gets it.
    fn insert_sql(check: InsertCheck) -> String {
        let decision = justin_core::builders::decision("alice", 3, 1);
        let v = DecisionValues::new(&decision).unwrap();
        let query = DecisionInsert { v: &v, check };
        let shown = diesel::debug_query::<diesel::sqlite::Sqlite, _>(&query).to_string();
        shown
            .split_once(" -- binds:")
            .map_or(shown.clone(), |(sql, _)| sql.to_owned())
    }

    fn in_study(n: Option<u32>, k: Option<u32>) -> InsertCheck {
        InsertCheck::InStudy {
            warmup_first_decisions: n,
            warmup_until_participants: k,
        }
    }

    /// Every guarded insert finds what it checks through an index; none reads a whole table.
    /// Without warm-up counts (the usual case) it is the unguarded insert with one lookup of
    /// the participant.
    #[test]
    fn guarded_inserts_read_through_indexes_only() {
        let file = Throwaway::new();
        let mut conn = SqliteConnection::establish(file.path().to_str().unwrap()).unwrap();
        run_migrations(&mut conn).unwrap();
        let guards = [
            (None, None),
            (Some(5), None),
            (None, Some(20)),
            (Some(5), Some(20)),
        ];
        for (n, k) in guards {
            let details = plan(&mut conn, &insert_sql(in_study(n, k)));
            assert!(
                !details.iter().any(|d| scans_a_table(d)),
                "{n:?} {k:?}: {details:?}"
            );
            assert!(
                details
                    .iter()
                    .any(|d| d.starts_with("SEARCH u USING INDEX sqlite_autoindex_users_1")),
                "{n:?} {k:?}: {details:?}"
            );
            if k.is_some() {
                assert!(
                    details.iter().any(|d| d.contains("users_started_idx")),
                    "{n:?} {k:?}: {details:?}"
                );
            }
        }
        let unguarded = plan(&mut conn, &insert_sql(InsertCheck::NoUpload));
        let hot = plan(&mut conn, &insert_sql(in_study(None, None)));
        // The unguarded insert selects its one row of values from nothing; the hot path selects
        // it from the participant's row, found by the unique index.
        assert_eq!(unguarded[0], "SCAN CONSTANT ROW");
        assert!(hot[0].starts_with("SEARCH u USING INDEX sqlite_autoindex_users_1 (user_id=?)"));
        assert_eq!(hot[1..], unguarded[1..], "{hot:?} / {unguarded:?}");
        let facts = plan(&mut conn, PARTICIPANT_FACTS);
        assert!(!facts.iter().any(|d| scans_a_table(d)), "{facts:?}");
    }

    /// The text of an upload's insert, as SQLite gets it, for `record`.
    fn upload_sql(record: &StudyRecord) -> String {
        let v = StudyValues::new(record).unwrap();
        let shown =
            diesel::debug_query::<diesel::sqlite::Sqlite, _>(&UploadInsert { v: &v }).to_string();
        shown
            .split_once(" -- binds:")
            .map_or(shown.clone(), |(sql, _)| sql.to_owned())
    }

    /// An upload's insert is one text for every upload, so the writer prepares it once, and it
    /// finds the decision logged for its key by the unique index, reading no whole table.
    #[test]
    fn the_upload_insert_is_prepared_once_and_reads_through_indexes_only() {
        let first = justin_core::builders::record("alice", 3);
        let mut second = justin_core::builders::record("bob", 9);
        second.reward = 0.25;
        second.decision_type = justin_core::DecisionType::parse("evening").unwrap();
        let v = StudyValues::new(&first).unwrap();
        let query = UploadInsert { v: &v };
        assert!(query
            .is_safe_to_cache_prepared(&diesel::sqlite::Sqlite)
            .unwrap());
        assert_eq!(upload_sql(&first), upload_sql(&second));

        let file = Throwaway::new();
        let mut conn = SqliteConnection::establish(file.path().to_str().unwrap()).unwrap();
        run_migrations(&mut conn).unwrap();
        let details = plan(&mut conn, &upload_sql(&first));
        // The one row the upload's values are selected from is the only thing scanned.
        assert!(
            !details
                .iter()
                .any(|d| scans_a_table(d) && d != "SCAN CONSTANT ROW" && d != "SCAN upload"),
            "{details:?}"
        );
        assert!(
            details
                .iter()
                .any(|d| d.starts_with("SEARCH a USING INDEX")),
            "{details:?}"
        );
    }

    #[test]
    fn the_counts_are_written_only_when_the_guard_has_them() {
        let plain = insert_sql(in_study(None, None));
        assert!(!plain.contains("count(*)"), "{plain}");
        let both = insert_sql(in_study(Some(3), Some(40)));
        assert!(both.contains("LIMIT 3)) >= 3"), "{both}");
        assert!(both.contains("LIMIT 40)) >= 40"), "{both}");
        for check in [
            InsertCheck::KeyOnly,
            InsertCheck::NoUpload,
            in_study(Some(3), None),
        ] {
            let sql = insert_sql(check);
            assert!(
                sql.ends_with(
                    "ON CONFLICT (user_id, decision_type, decision_idx) DO NOTHING RETURNING id"
                ),
                "{sql}"
            );
            assert_eq!(
                sql.contains("FROM study_data"),
                check != InsertCheck::KeyOnly,
                "{sql}"
            );
        }
    }

    /// A decision's insert is prepared once per connection: its text and bind types, not its
    /// values, key Diesel's statement cache.
    #[test]
    fn a_decision_insert_is_safe_to_prepare_once() {
        use diesel::query_builder::QueryFragment;
        let decision = justin_core::builders::decision("alice", 3, 1);
        let v = DecisionValues::new(&decision).unwrap();
        for check in [
            InsertCheck::NoUpload,
            in_study(None, None),
            in_study(Some(2), Some(9)),
        ] {
            let query = DecisionInsert { v: &v, check };
            assert!(query
                .is_safe_to_cache_prepared(&diesel::sqlite::Sqlite)
                .unwrap());
        }
    }
}
