//! [`PgStore`]: the [`Store`] port over a pool of PostgreSQL connections.
//!
//! Each port method checks out one connection and, where the contract allows, does its work in
//! one statement, leaving exactly-once rules to the database's constraints rather than to
//! read-then-write logic that concurrent requests could interleave.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::dsl::exists;
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Bool, Double, Json, Nullable, SmallInt, Text, Timestamptz};
use justin_core::recording::{host_decision_against_upload, refused_decision, refused_upload};
use justin_core::tables::{count_rows_statement, in_table_order, TABLES};
use justin_core::{
    Action, ActionChoice, BackupReport, CallbackDelivery, Decision, DecisionGuard, DecisionStream,
    Enrollment, Erasure, ExportLineStream, ExportStream, ModelParameters, Participant,
    ParticipantFacts, Policy, Probability, Recorded, RestoreReport, Store, StoreError, StudyRecord,
    UpdateJob, UpdateRequest, UploadRecorded, UserId,
};
use justin_core::{NoTelemetry, Telemetry};
use uuid::Uuid;

use crate::backup::Failure;
use crate::error::{from_diesel, from_pool, is_lost_connection, other, SetupError};
use crate::group::{BatchRow, GroupCommit, Joined};
use crate::models::{
    count_column, update_request, ActionRow, DecisionValues, ErasureRow, ExportDbRow,
    ParametersRow, ProvenanceRow, StudyValues, UpdateRow, UserRow, WindowValues,
};
use crate::schema::{
    actions, erasures, model_parameters, model_update_requests, participant_events, study_data,
    update_provenance, users,
};
use crate::setup::{self, mask_password, PgUrl};
use crate::stream::{updates_seen, ExportLineDbRow, SnapshotStream};

pub(crate) type Manager = ConnectionManager<PgConnection>;
pub(crate) type PooledPg = PooledConnection<Manager>;

/// Serialises writers of `model_parameters` (publishing, seeding, completing an update)
/// without blocking readers or the foreign-key checks of decisions being recorded, which take
/// ROW SHARE.
pub(crate) fn lock_for_publishing(conn: &mut PgConnection) -> QueryResult<()> {
    conn.batch_execute("LOCK TABLE model_parameters IN SHARE ROW EXCLUSIVE MODE")
}

/// How to reach the database and what to do on connecting.
#[derive(Clone)]
pub struct PgConfig {
    /// A `postgres://` URL (a libpq key/value string also works when `create_if_missing` is
    /// off).
    pub url: String,
    /// Most connections held at once.
    pub pool_size: u32,
    /// How long to wait for a connection, at start-up and for every checkout.
    pub connect_timeout: Duration,
    /// Create the database (through the server's `postgres` database) when it is missing.
    pub create_if_missing: bool,
    /// Apply pending migrations on connecting.
    pub run_migrations: bool,
}

// Written out so that logging a configuration never prints the password.
impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &mask_password(&self.url))
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("create_if_missing", &self.create_if_missing)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

/// The PostgreSQL storage adapter. Cheap to clone: clones share one pool.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool<Manager>,
    /// Decisions waiting to be written together.
    group: Arc<GroupCommit>,
    /// The URL with its password masked, for messages.
    url: Arc<str>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .field("pool", &self.pool.state())
            .finish()
    }
}

impl PgStore {
    /// Connects as `config` says: creates the database if asked and missing, opens the pool
    /// (failing when no connection can be made within `connect_timeout`) and applies pending
    /// migrations if asked.
    ///
    /// # Errors
    /// [`SetupError`] naming the step that failed and why.
    pub fn connect(config: &PgConfig) -> Result<Self, SetupError> {
        Self::connect_observed(config, Arc::new(NoTelemetry))
    }

    /// Connects as [`PgStore::connect`] does, telling `telemetry` how long each checkout of a
    /// pooled connection waited and when one gave up at `connect_timeout`.
    ///
    /// # Errors
    /// [`SetupError`] naming the step that failed and why.
    pub fn connect_observed(
        config: &PgConfig,
        telemetry: Arc<dyn Telemetry>,
    ) -> Result<Self, SetupError> {
        let masked = mask_password(&config.url);
        if config.pool_size == 0 {
            return Err(SetupError::InvalidConfig(
                "the connection pool size must be at least 1".into(),
            ));
        }
        if config.connect_timeout.is_zero() {
            return Err(SetupError::InvalidConfig(
                "the connect timeout must be longer than zero".into(),
            ));
        }
        if config.create_if_missing {
            let url = PgUrl::parse(&config.url)?;
            setup::create_database_if_missing(&url, config.connect_timeout)?;
        }
        let pool = Pool::builder()
            .max_size(config.pool_size)
            // One connection proves the database is reachable at start-up; the rest open on
            // demand, so idle services and test databases hold few server connections.
            .min_idle(Some(1))
            .connection_timeout(config.connect_timeout)
            // A validity query on every checkout would double the round trips of the request
            // path. A dead connection instead fails its query as `Unavailable` and, its
            // transaction state now unknown, is discarded by the pool when returned.
            .test_on_check_out(false)
            // During an outage the pool's threads fail to connect many times a second with
            // multi-line messages: one line each, at most one a second.
            .error_handler(Box::new(crate::pool_log::PoolErrorLog::default()))
            .event_handler(Box::new(crate::pool_events::PoolEvents(telemetry)))
            .build(ConnectionManager::new(config.url.clone()))
            .map_err(|e| SetupError::Connect {
                url: masked.clone(),
                reason: e.to_string(),
            })?;
        let store = Self {
            pool,
            group: Arc::default(),
            url: masked.into(),
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
        let mut conn = self.pool.get().map_err(|e| SetupError::Connect {
            url: self.url.to_string(),
            reason: e.to_string(),
        })?;
        setup::run_migrations(&mut conn)
    }

    /// Decisions waiting for the batch being written to end (see [`crate::group`]): tests
    /// use it to know that a batch has formed.
    #[cfg(feature = "testing")]
    #[must_use]
    pub fn decisions_waiting(&self) -> usize {
        self.group.waiting()
    }

    fn conn(&self) -> Result<PooledPg, StoreError> {
        self.pool.get().map_err(from_pool)
    }

    /// A pooled connection that has just answered a round trip (`SELECT 1`). Pooled
    /// connections are not checked on checkout (that would double the round trips of
    /// `/action`), so one the server closed while it sat idle (PostgreSQL restarted) is found
    /// here and discarded, and another is taken. Every idle connection may be such a one, so
    /// this tries up to one more than the pool holds; while the server is really down, the
    /// next checkout fails within the connect timeout.
    fn checked_conn(&self) -> Result<PooledPg, StoreError> {
        let mut retries = self.pool.max_size();
        loop {
            let mut conn = self.conn()?;
            match conn.batch_execute("SELECT 1").map_err(from_diesel) {
                Ok(()) => return Ok(conn),
                Err(e) if retries > 0 && lost_connection(&mut conn, &e) => {
                    retries -= 1;
                    discard(&mut conn);
                    log::warn!(
                        "a pooled database connection was closed by the server; using another"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs `work` on a pooled connection and, when the connection turns out to be lost (see
    /// [`lost_connection`]), discards it and, as `resend` allows, runs `work` again on
    /// another; see [`Resend`]. A connection lost when `work` may not be sent again is
    /// [`StoreError::Unavailable`] (503), since what the server did with it is unknown.
    fn with_connection<T>(
        &self,
        resend: Resend,
        mut work: impl FnMut(&mut PgConnection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut retries = self.pool.max_size();
        loop {
            let mut conn = match resend {
                Resend::Always => self.conn()?,
                Resend::Unsent => self.checked_conn()?,
            };
            match work(&mut conn) {
                Ok(value) => return Ok(value),
                Err(e) if lost_connection(&mut conn, &e) => {
                    discard(&mut conn);
                    if resend == Resend::Always && retries > 0 {
                        retries -= 1;
                        log::warn!(
                            "a database connection was lost; running the work again on another"
                        );
                    } else {
                        return Err(unavailable(e));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether work may be sent again after its connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// Safe to send twice: a read, or a write whose repetition ends as the first did (an
    /// insert that finds the first one's row, an update to absolute values, a restore).
    Always,
    /// A write that must not be sent twice: it runs on a connection that has just answered a
    /// round trip ([`PgStore::checked_conn`]), so a connection the server closed while it was
    /// idle is replaced before the write is sent. A connection lost while the write runs is
    /// [`StoreError::Unavailable`].
    Unsent,
}

/// Whether `e`, the failure of work on `conn`, means the connection is lost: an error Diesel
/// names as such ([`from_diesel`] maps those to [`StoreError::Unavailable`]), or any other
/// failure after which the connection cannot run a trivial query. The second case covers the
/// server's own last words, such as "terminating connection due to administrator command",
/// which Diesel reports as an ordinary database error.
fn lost_connection(conn: &mut PgConnection, e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(_) => true,
        StoreError::Other(_) => conn
            .batch_execute("SELECT 1")
            .is_err_and(|e| is_lost_connection(&e)),
        _ => false,
    }
}

/// Keeps a lost connection out of the pool: a broken transaction manager makes the pool
/// close it when it is returned.
fn discard(conn: &mut PgConnection) {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    <AnsiTransactionManager as TransactionManager<PgConnection>>::transaction_manager_status_mut(
        conn,
    )
    .set_in_error();
}

/// `e` as [`StoreError::Unavailable`].
fn unavailable(e: StoreError) -> StoreError {
    match e {
        StoreError::Unavailable(_) => e,
        StoreError::Other(source) => StoreError::Unavailable(source),
        other => StoreError::Unavailable(Box::new(other)),
    }
}

/// The decision's values as a `SELECT` list, in the column order of [`insert_into_actions`].
macro_rules! decision_select_list {
    ($v:expr) => {
        (
            $v.user_id.into_sql::<Text>(),
            $v.decision_type.into_sql::<Text>(),
            $v.decision_idx.into_sql::<BigInt>(),
            $v.requested_at.into_sql::<Timestamptz>(),
            $v.decided_at.into_sql::<Timestamptz>(),
            $v.context.into_sql::<Json>(),
            (&$v.state).into_sql::<Json>(),
            $v.action.into_sql::<SmallInt>(),
            $v.action_prob.into_sql::<Double>(),
            $v.parameter_version.into_sql::<BigInt>(),
            $v.rng_seed.into_sql::<BigInt>(),
            $v.available.into_sql::<Bool>(),
            $v.unavailable_reason.into_sql::<Nullable<Text>>(),
            $v.sent_timestamp.into_sql::<Text>(),
            $v.policy.into_sql::<Text>(),
            $v.fallback_reason.into_sql::<Nullable<Text>>(),
            $v.decided_by.into_sql::<Nullable<Text>>(),
            $v.in_study.into_sql::<Bool>(),
        )
    };
}

/// The condition that keeps a decision from being stored under a parameter version older than
/// the newest stored one: `$version >= (SELECT max(version) FROM model_parameters)`. Part of
/// every insert of a decision, so it holds in the insert's own snapshot (a version published
/// while the statement runs comes after the decision). `max` reads the primary key's last
/// entry: one index probe.
macro_rules! version_is_newest {
    ($v:expr) => {
        $v.parameter_version
            .into_sql::<BigInt>()
            .nullable()
            .ge(model_parameters::table
                .select(diesel::dsl::max(model_parameters::version))
                .single_value())
    };
}

/// `INSERT INTO actions (...) <rows> ON CONFLICT (key) DO NOTHING RETURNING id`, for the rows
/// of a `SELECT` of [`decision_select_list`].
macro_rules! insert_into_actions {
    ($rows:expr) => {
        diesel::insert_into(actions::table)
            .values($rows)
            .into_columns((
                actions::user_id,
                actions::decision_type,
                actions::decision_idx,
                actions::request_timestamp,
                actions::created_at,
                actions::context,
                actions::state,
                actions::action,
                actions::action_prob,
                actions::parameter_version,
                actions::rng_seed,
                actions::available,
                actions::unavailable_reason,
                actions::sent_timestamp,
                actions::policy,
                actions::fallback_reason,
                actions::decided_by,
                actions::in_study,
            ))
            .on_conflict((
                actions::user_id,
                actions::decision_type,
                actions::decision_idx,
            ))
            .do_nothing()
            .returning(actions::id)
    };
}

/// Whether a decision under `guard` is written in a batch ([`crate::group`]), and if so
/// whether its row is guarded by the participant's window: decisions of the service, unguarded
/// or guarded without warm-up counts (the counts compare a decision with those stored before
/// it, which a batch would write in the same statement).
fn grouped(decision: &Decision, guard: DecisionGuard) -> Option<bool> {
    if matches!(decision.policy, Policy::Host { .. }) {
        return None;
    }
    match guard {
        DecisionGuard::None => Some(false),
        DecisionGuard::InStudy {
            warmup_first_decisions: None,
            warmup_until_participants: None,
        } => Some(true),
        DecisionGuard::InStudy { .. } => None,
    }
}

/// [`Store::record_decision`] on `conn`: the insert the guard asks for, and when it stored
/// nothing, what stopped it.
fn record_decision_on(
    conn: &mut PgConnection,
    decision: &Decision,
    v: &DecisionValues<'_>,
    guard: DecisionGuard,
) -> Result<Recorded, StoreError> {
    // A host decision is stored as the study server sent it: no guard applies to it.
    if matches!(decision.policy, Policy::Host { .. }) {
        return record_host_decision_on(conn, decision, v);
    }
    let inserted = match guard {
        DecisionGuard::None => insert_decision_query(v).get_results::<i64>(conn),
        DecisionGuard::InStudy {
            warmup_first_decisions: None,
            warmup_until_participants: None,
        } => insert_in_study_query(v).get_results::<i64>(conn),
        DecisionGuard::InStudy {
            warmup_first_decisions,
            warmup_until_participants,
        } => insert_counted(
            conn,
            v,
            limit(warmup_first_decisions),
            limit(warmup_until_participants),
        ),
    }
    .map_err(from_diesel)?;
    if !inserted.is_empty() {
        return Ok(Recorded::Inserted);
    }
    let DecisionGuard::InStudy {
        warmup_first_decisions,
        warmup_until_participants,
    } = guard
    else {
        let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
        return refused_or_stale(conn, decision, logged, uploaded);
    };
    // A guard that failed is the common reason (a participant out of the study): one read says
    // so, and whether the key is taken, which comes first and takes the reads of `on_key`; then
    // whether the version is behind, which comes before the guard.
    match participant_facts(
        conn,
        v,
        limit(warmup_first_decisions),
        limit(warmup_until_participants),
    )? {
        Some((_, false, newest)) if newest > v.parameter_version => {
            Err(StoreError::UnknownParameterVersion)
        }
        Some((facts, false, _)) => Ok(Recorded::Ineligible(facts)),
        Some((_, true, _)) => {
            let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
            refused_or_stale(conn, decision, logged, uploaded)
        }
        // Nothing stands on the key of an unregistered participant.
        None => Err(StoreError::UnknownUser),
    }
}

/// [`refused_decision`] for an insert that stored nothing, unless the key does not explain it
/// (no decision stands on it, and for a decision of the service no upload either) and the
/// decision's parameter version is older than the newest stored one: then
/// [`StoreError::UnknownParameterVersion`].
fn refused_or_stale(
    conn: &mut PgConnection,
    decision: &Decision,
    logged: Option<ActionRow>,
    uploaded: bool,
) -> Result<Recorded, StoreError> {
    let host = matches!(decision.policy, Policy::Host { .. });
    if logged.is_none() && (host || !uploaded) {
        let newest = model_parameters::table
            .select(diesel::dsl::max(model_parameters::version))
            .get_result::<Option<i64>>(conn)
            .map_err(from_diesel)?;
        if newest.is_some_and(|n| n > decision.parameter_version) {
            return Err(StoreError::UnknownParameterVersion);
        }
    }
    refused_decision(decision, logged, uploaded)
}

/// Runs `work` in a transaction on `conn`: committed when it succeeds, rolled back when it
/// fails.
fn in_transaction<T>(
    conn: &mut PgConnection,
    work: impl FnOnce(&mut PgConnection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    conn.transaction::<_, Failure, _>(|conn| work(conn).map_err(Failure::Store))
        .map_err(StoreError::from)
}

/// A guard's count limit as bound: 0 when the count does not apply (a count of at least 0
/// always holds, and `LIMIT 0` reads nothing).
fn limit(n: Option<u32>) -> i64 {
    n.map_or(0, i64::from)
}

/// A host decision: stored once per key like any other, and also when study data was uploaded
/// for the key before it, if the upload agrees with it; the upload then counts as logged under
/// the decision's policy. In one transaction that holds the key's lock (migration 2025-04-03),
/// so an upload of the key waits for it and then sees the decision.
fn record_host_decision_on(
    conn: &mut PgConnection,
    decision: &Decision,
    v: &DecisionValues<'_>,
) -> Result<Recorded, StoreError> {
    in_transaction(conn, |conn| {
        diesel::sql_query("SELECT justin_lock_decision_key($1, $2, $3)")
            .bind::<Text, _>(v.user_id)
            .bind::<Text, _>(v.decision_type)
            .bind::<BigInt, _>(v.decision_idx)
            .execute(conn)
            .map_err(from_diesel)?;
        let logged = actions::table
            .filter(actions::user_id.eq(v.user_id))
            .filter(actions::decision_type.eq(v.decision_type))
            .filter(actions::decision_idx.eq(v.decision_idx))
            .select(ActionRow::as_select())
            .first::<ActionRow>(conn)
            .optional()
            .map_err(from_diesel)?;
        if let Some(row) = logged {
            return Ok(Recorded::Existing(row.try_into()?));
        }
        let same_key = study_data::user_id
            .eq(v.user_id)
            .and(study_data::decision_type.eq(v.decision_type))
            .and(study_data::decision_idx.eq(v.decision_idx));
        let uploaded = study_data::table
            .filter(same_key)
            .select((study_data::id, study_data::action, study_data::action_prob))
            .for_update()
            .first::<(i64, i16, f64)>(conn)
            .optional()
            .map_err(from_diesel)?;
        if let Some((id, action, action_prob)) = uploaded {
            let bad = |e: justin_core::InvalidValue| {
                other(format!("invalid row {id} in study_data: {e}"))
            };
            let draw = ActionChoice {
                action: Action::from_i64(action.into()).map_err(bad)?,
                action_prob: Probability::new(action_prob).map_err(bad)?,
            };
            host_decision_against_upload(decision, draw)?;
        }
        // No decision can be stored for the key meanwhile: every insert of one takes its lock.
        let row = diesel::select(decision_select_list!(v)).filter(version_is_newest!(v));
        let inserted = insert_into_actions!(row)
            .get_results::<i64>(conn)
            .map_err(from_diesel)?;
        if inserted.is_empty() {
            let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
            return refused_or_stale(conn, decision, logged, uploaded);
        }
        if let Some((id, _, _)) = uploaded {
            diesel::update(study_data::table.find(id))
                .set((
                    study_data::action_logged.eq(true),
                    study_data::available.eq(v.available),
                    study_data::policy.eq(Some(v.policy)),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
        }
        Ok(Recorded::Inserted)
    })
}

/// What stands on a decision's key after an insert of the key stored nothing: the decision
/// logged for it, if any, and whether study data is uploaded for it. One statement when a
/// decision is logged, so both facts come from one snapshot.
fn on_key(
    conn: &mut PgConnection,
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

/// Inserts the decision unless one exists for its key (user, decision type, decision index),
/// study data was uploaded for the key, or its parameter version is not the newest, in one
/// statement: `INSERT INTO actions (...) SELECT $1, ... WHERE NOT
/// justin_decision_key_uploaded(key) AND $version >= (SELECT max(version) FROM
/// model_parameters) ON CONFLICT DO NOTHING RETURNING id`.
/// The function locks the key for the rest of the transaction and then looks for study data
/// with a snapshot of its own, taken after the lock: an upload of the key that committed while
/// this waited for the lock is seen (see migration 2025-04-03). The unique constraint is what
/// makes concurrent inserts of one decision store one row.
/// Written with Diesel's query builder, not as SQL text, so that Diesel prepares it once per
/// connection and reuses it: the hot path of every decision pays no parsing or planning.
fn insert_decision_query<'a>(
    v: &'a DecisionValues<'a>,
) -> impl diesel::query_dsl::LoadQuery<'a, PgConnection, i64>
       + diesel::query_builder::QueryFragment<diesel::pg::Pg>
       + diesel::query_builder::QueryId
       + 'a {
    use diesel::dsl::not;
    let uploaded = justin_decision_key_uploaded(v.user_id, v.decision_type, v.decision_idx);
    let row = diesel::select(decision_select_list!(v))
        .filter(not(uploaded))
        .filter(version_is_newest!(v));
    insert_into_actions!(row)
}

/// [`insert_decision_query`] guarded by the participant's row, the hot path of `/action`: the
/// `SELECT` reads from `users` and yields the decision's row only when the participant is
/// registered, their window contains the decision's `requested_at` and they have neither
/// withdrawn nor been erased (and, as there, the version is the newest). Still one statement,
/// prepared once per connection.
fn insert_in_study_query<'a>(
    v: &'a DecisionValues<'a>,
) -> impl diesel::query_dsl::LoadQuery<'a, PgConnection, i64>
       + diesel::query_builder::QueryFragment<diesel::pg::Pg>
       + diesel::query_builder::QueryId
       + 'a {
    use diesel::dsl::not;
    let uploaded = justin_decision_key_uploaded(v.user_id, v.decision_type, v.decision_idx);
    let at = v.requested_at;
    let row = users::table
        .filter(users::user_id.eq(v.user_id))
        .filter(users::study_start.is_null().or(users::study_start.le(at)))
        .filter(users::study_end.is_null().or(users::study_end.gt(at)))
        .filter(users::withdrawn_at.is_null())
        .filter(users::erased_at.is_null())
        .filter(not(uploaded))
        .filter(version_is_newest!(v))
        .select(decision_select_list!(v));
    insert_into_actions!(row)
}

/// The columns of a decision's row, in the order of [`decision_select_list`].
const DECISION_COLUMNS: &str = "user_id, decision_type, decision_idx, request_timestamp, \
    created_at, context, state, action, action_prob, parameter_version, rng_seed, available, \
    unavailable_reason, sent_timestamp, policy, fallback_reason, decided_by, in_study";

/// The guarded insert when the warm-up's counts apply: as [`insert_in_study_query`], with the
/// counts in the same statement, each stopping at its limit. Every decision of a study whose
/// warm-up counts first decisions takes it, and those of a study waiting for its cohort until
/// the cohort is reached; so its text is the same for every call (the limits are bound values)
/// and Diesel prepares it once per connection, keyed by that text.
struct CountedInsert<'a> {
    v: &'a DecisionValues<'a>,
    /// The first-decisions limit, 0 when that count does not apply.
    first_decisions: i64,
    /// The cohort size, 0 when that count does not apply.
    participants: i64,
}

impl diesel::query_builder::QueryId for CountedInsert<'_> {
    type QueryId = ();
    // No type names the statement; Diesel keys its statement cache by the text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for CountedInsert<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<PgConnection> for CountedInsert<'_> {}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for CountedInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        let v = self.v;
        out.push_sql("INSERT INTO actions (");
        out.push_sql(DECISION_COLUMNS);
        out.push_sql(") SELECT ");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&v.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&v.decided_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Json, _>(&v.context)?;
        out.push_sql(", ");
        out.push_bind_param::<Json, _>(&v.state)?;
        out.push_sql(", ");
        out.push_bind_param::<SmallInt, _>(&v.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.action_prob)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.parameter_version)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.rng_seed)?;
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
        // The participant: registered, in their window, neither withdrawn nor erased.
        out.push_sql(" FROM users u WHERE u.user_id = ");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(" AND (u.study_start IS NULL OR u.study_start <= ");
        out.push_bind_param::<Timestamptz, _>(&v.requested_at)?;
        out.push_sql(") AND (u.study_end IS NULL OR u.study_end > ");
        out.push_bind_param::<Timestamptz, _>(&v.requested_at)?;
        out.push_sql(") AND u.withdrawn_at IS NULL AND u.erased_at IS NULL");
        // Past the first decisions: that many earlier ones of the type, drawn by the service.
        out.push_sql(" AND (SELECT count(*) FROM (SELECT 1 FROM actions e WHERE e.user_id = ");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(" AND e.decision_type = ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(" AND e.decision_idx < ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(" AND e.available AND e.policy <> 'host' LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.first_decisions)?;
        out.push_sql(") c) >= ");
        out.push_bind_param::<BigInt, _>(&self.first_decisions)?;
        // Past the cohort: that many participants started at the decision's time.
        out.push_sql(
            " AND (SELECT count(*) FROM (SELECT 1 FROM users s \
             WHERE coalesce(s.study_start, s.created_at) <= ",
        );
        out.push_bind_param::<Timestamptz, _>(&v.requested_at)?;
        out.push_sql(" LIMIT ");
        out.push_bind_param::<BigInt, _>(&self.participants)?;
        out.push_sql(") c) >= ");
        out.push_bind_param::<BigInt, _>(&self.participants)?;
        // Not behind on parameters: the version is the newest stored.
        out.push_sql(" AND ");
        out.push_bind_param::<BigInt, _>(&v.parameter_version)?;
        out.push_sql(" >= (SELECT max(version) FROM model_parameters)");
        out.push_sql(" AND NOT justin_decision_key_uploaded(");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(
            ") ON CONFLICT (user_id, decision_type, decision_idx) DO NOTHING RETURNING id",
        );
        Ok(())
    }
}

/// Runs [`CountedInsert`] for the decision `v` with the two count limits.
fn insert_counted(
    conn: &mut PgConnection,
    v: &DecisionValues<'_>,
    first_decisions: i64,
    participants: i64,
) -> QueryResult<Vec<i64>> {
    CountedInsert {
        v,
        first_decisions,
        participants,
    }
    .get_results(conn)
}

/// The participant's facts for a guarded decision that was not stored: their window, whether
/// they withdrew, and the guard's two counts capped at their limits (0 for a count that does
/// not apply), with whether a decision or study data stands on the decision's key and the
/// newest stored parameter version, in one statement. `None` when the participant is not
/// registered.
fn participant_facts(
    conn: &mut PgConnection,
    v: &DecisionValues<'_>,
    first_decisions: i64,
    participants: i64,
) -> Result<Option<(ParticipantFacts, bool, i64)>, StoreError> {
    #[derive(QueryableByName)]
    struct Facts {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        study_start: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        study_start_sent: Option<String>,
        #[diesel(sql_type = Nullable<Timestamptz>)]
        study_end: Option<DateTime<Utc>>,
        #[diesel(sql_type = Nullable<Text>)]
        study_end_sent: Option<String>,
        #[diesel(sql_type = Bool)]
        withdrawn: bool,
        #[diesel(sql_type = BigInt)]
        earlier: i64,
        #[diesel(sql_type = BigInt)]
        started: i64,
        #[diesel(sql_type = Bool)]
        key_taken: bool,
        #[diesel(sql_type = BigInt)]
        newest_version: i64,
    }
    let facts = diesel::sql_query(
        "SELECT u.study_start, u.study_start_sent, u.study_end, u.study_end_sent, \
                u.withdrawn_at IS NOT NULL AS withdrawn, \
                (SELECT count(*) FROM (SELECT 1 FROM actions e WHERE e.user_id = $1 \
                    AND e.decision_type = $2 AND e.decision_idx < $3 AND e.available \
                    AND e.policy <> 'host' LIMIT $5) c) AS earlier, \
                (SELECT count(*) FROM (SELECT 1 FROM users s \
                    WHERE coalesce(s.study_start, s.created_at) <= $4 LIMIT $6) c) AS started, \
                EXISTS (SELECT 1 FROM actions k WHERE k.user_id = $1 AND k.decision_type = $2 \
                        AND k.decision_idx = $3) \
                OR EXISTS (SELECT 1 FROM study_data k WHERE k.user_id = $1 \
                           AND k.decision_type = $2 AND k.decision_idx = $3) AS key_taken, \
                (SELECT coalesce(max(version), 0) FROM model_parameters) AS newest_version \
         FROM users u WHERE u.user_id = $1 AND u.erased_at IS NULL",
    )
    .bind::<Text, _>(v.user_id)
    .bind::<Text, _>(v.decision_type)
    .bind::<BigInt, _>(v.decision_idx)
    .bind::<Timestamptz, _>(v.requested_at)
    .bind::<BigInt, _>(first_decisions)
    .bind::<BigInt, _>(participants)
    .get_result::<Facts>(conn)
    .optional()
    .map_err(from_diesel)?;
    let Some(f) = facts else {
        return Ok(None);
    };
    let window = |at: Option<DateTime<Utc>>, sent: Option<String>| match (at, sent) {
        (Some(at), Some(sent)) => Ok(Some(justin_core::SentTime { at, sent })),
        (None, None) => Ok(None),
        _ => Err(other(format!(
            "the window of {} is stored with a bound but not its text",
            v.user_id
        ))),
    };
    let count = |n: i64| u64::try_from(n).map_err(other);
    let facts = ParticipantFacts {
        enrollment: Enrollment {
            start: window(f.study_start, f.study_start_sent)?,
            end: window(f.study_end, f.study_end_sent)?,
        },
        withdrawn: f.withdrawn,
        earlier_in_study: count(f.earlier)?,
        started_participants: count(f.started)?,
    };
    Ok(Some((facts, f.key_taken, f.newest_version)))
}

/// A registered participant's row with their decision and upload counts, which the row holds
/// (migration 2026-12-05's triggers keep them).
fn participant_on(conn: &mut PgConnection, user: &str) -> Result<Option<Participant>, StoreError> {
    let row = users::table
        .filter(users::user_id.eq(user))
        .filter(users::erased_at.is_null())
        .select((UserRow::as_select(), users::decisions, users::uploads))
        .first::<(UserRow, i64, i64)>(conn)
        .optional()
        .map_err(from_diesel)?;
    row.map(|(row, decisions, uploads)| row.participant(decisions, uploads))
        .transpose()
}

/// Records an event of a participant's history, with the window in force after it.
fn insert_event(
    conn: &mut PgConnection,
    user: &str,
    kind: &str,
    at: DateTime<Utc>,
    enrollment: &Enrollment,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let w = WindowValues::new(enrollment);
    diesel::insert_into(participant_events::table)
        .values((
            participant_events::user_id.eq(user),
            participant_events::kind.eq(kind),
            participant_events::recorded_at.eq(at),
            participant_events::study_start.eq(w.study_start),
            participant_events::study_start_sent.eq(w.study_start_sent),
            participant_events::study_end.eq(w.study_end),
            participant_events::study_end_sent.eq(w.study_end_sent),
            participant_events::reason.eq(reason),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
    Ok(())
}

/// The registered participant's row, locked for the rest of the transaction.
fn lock_user(conn: &mut PgConnection, user: &str) -> Result<Option<UserRow>, StoreError> {
    users::table
        .filter(users::user_id.eq(user))
        .filter(users::erased_at.is_null())
        .select(UserRow::as_select())
        .for_update()
        .first::<UserRow>(conn)
        .optional()
        .map_err(from_diesel)
}

/// [`Store::erase_participant`] in the caller's transaction.
fn erase_on(conn: &mut PgConnection, user: &str, erasure: &Erasure) -> Result<Erasure, StoreError> {
    let row = lock_user(conn, user)?.ok_or(StoreError::UnknownUser)?;
    // Deleting the uploads would take their corrections too (ON DELETE CASCADE); deleted here
    // first, they are counted in the audit record.
    let corrections = diesel::delete(
        crate::schema::study_data_corrections::table
            .filter(crate::schema::study_data_corrections::user_id.eq(user)),
    )
    .execute(conn)
    .map_err(from_diesel)?;
    let uploads = diesel::delete(study_data::table.filter(study_data::user_id.eq(user)))
        .execute(conn)
        .map_err(from_diesel)?;
    let events =
        diesel::delete(participant_events::table.filter(participant_events::user_id.eq(user)))
            .execute(conn)
            .map_err(from_diesel)?;
    // Decisions keep their draw, policy and times; the context and state go, and so does the
    // client's reason for unavailability (a decision out of the study keeps the service's).
    let decisions = diesel::update(actions::table.filter(actions::user_id.eq(user)))
        .set((
            actions::context.eq(serde_json::json!({})),
            actions::state.eq(serde_json::json!([])),
            actions::unavailable_reason.eq(diesel::dsl::case_when(
                actions::in_study,
                None::<String>.into_sql::<Nullable<Text>>(),
            )
            .otherwise(actions::unavailable_reason)),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
    // The rename reaches the decisions through their foreign key (ON UPDATE CASCADE).
    diesel::update(users::table.find(row.id))
        .set((
            users::user_id.eq(&erasure.pseudonym),
            users::study_start.eq(None::<DateTime<Utc>>),
            users::study_start_sent.eq(None::<String>),
            users::study_end.eq(None::<DateTime<Utc>>),
            users::study_end_sent.eq(None::<String>),
            users::withdrawal_reason.eq(None::<String>),
            users::erased_at.eq(Some(erasure.erased_at)),
        ))
        .execute(conn)
        .map_err(from_diesel)?;
    let count = |n: usize| u64::try_from(n).map_err(other);
    let mut row_counts = vec![
        ("actions".to_owned(), count(decisions)?),
        ("study_data".to_owned(), count(uploads)?),
        ("participant_events".to_owned(), count(events)?),
        ("users".to_owned(), 1),
    ];
    justin_core::tables::count_erased_corrections(&mut row_counts, count(corrections)?);
    let record = ErasureRow::new(erasure, row.id, &row_counts);
    diesel::insert_into(erasures::table)
        .values(&record)
        .execute(conn)
        .map_err(from_diesel)?;
    Ok(Erasure {
        participant_number: row.id,
        row_counts,
        ..erasure.clone()
    })
}

diesel::define_sql_function! {
    /// Locks a decision's key until the end of the transaction, then says whether study data
    /// is stored for it (migration 2025-04-03).
    fn justin_decision_key_uploaded(user_id: Text, decision_type: Text, decision_idx: BigInt) -> Bool;
}

/// Inserts the upload unless a decision logged for its key differs from it, and records
/// whether one was logged and, from it, whether the decision was available (true when none was
/// logged) and its policy (NULL when none was logged), in one statement: `INSERT INTO
/// study_data (...) SELECT ... FROM (SELECT) AS upload LEFT JOIN justin_decision_key_logged(key)
/// a ON true WHERE a.id IS NULL OR (a.action = $action AND abs(a.action_prob - $prob) <=
/// $tolerance) RETURNING action_logged`. The function first locks the key (as recording a
/// decision does) and reads with a snapshot taken after the lock, so a decision of the key
/// committed while this waited is seen (migration 2025-04-03). When no row comes back the
/// upload was refused, and what stands on the key ([`on_key`]) says why. Its text is the same
/// for every upload (every value is bound), so Diesel prepares it once per connection, keyed by
/// that text, as it does the decision's insert.
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

impl RunQueryDsl<PgConnection> for UploadInsert<'_> {}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for UploadInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        let v = self.v;
        out.push_sql(
            "INSERT INTO study_data (user_id, decision_type, decision_idx, request_timestamp, \
             created_at, context, action, action_prob, state, outcome, reward, action_logged, \
             available, sent_timestamp, policy) SELECT ",
        );
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&v.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Timestamptz, _>(&v.received_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Json, _>(&v.context)?;
        out.push_sql(", ");
        out.push_bind_param::<SmallInt, _>(&v.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.action_prob)?;
        out.push_sql(", ");
        out.push_bind_param::<Json, _>(&v.state)?;
        out.push_sql(", ");
        out.push_bind_param::<Json, _>(&v.outcome)?;
        out.push_sql(", ");
        out.push_bind_param::<Double, _>(&v.reward)?;
        out.push_sql(", a.id IS NOT NULL, coalesce(a.available, true), ");
        out.push_bind_param::<Text, _>(v.sent_timestamp)?;
        out.push_sql(", a.policy FROM (SELECT) AS upload LEFT JOIN justin_decision_key_logged(");
        out.push_bind_param::<Text, _>(v.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(v.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&v.decision_idx)?;
        out.push_sql(") a ON true WHERE a.id IS NULL OR (a.action = ");
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
/// Every completed update with its provenance, by version.
fn completed_updates_on(
    conn: &mut PgConnection,
) -> Result<Vec<justin_core::CompletedUpdate>, StoreError> {
    let rows = model_update_requests::table
        .inner_join(update_provenance::table)
        .filter(model_update_requests::status.eq("completed"))
        .order(update_provenance::parameter_version)
        .select((UpdateRow::as_select(), ProvenanceRow::as_select()))
        .load::<(UpdateRow, ProvenanceRow)>(conn)
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

pub(crate) fn count_rows(conn: &mut PgConnection) -> Result<Vec<(String, u64)>, StoreError> {
    let counts = diesel::sql_query(count_rows_statement())
        .load::<TableCount>(conn)
        .map_err(from_diesel)?;
    in_table_order(counts.into_iter().map(|c| (c.name, c.rows)))
}

impl Store for PgStore {
    fn add_user(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        created_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let w = WindowValues::new(enrollment);
        self.with_connection(Resend::Unsent, |conn| {
            in_transaction(conn, |conn| {
                diesel::insert_into(users::table)
                    .values((
                        users::user_id.eq(user.as_str()),
                        users::created_at.eq(created_at),
                        users::study_start.eq(w.study_start),
                        users::study_start_sent.eq(w.study_start_sent),
                        users::study_end.eq(w.study_end),
                        users::study_end_sent.eq(w.study_end_sent),
                    ))
                    .execute(conn)
                    .map_err(from_diesel)?;
                insert_event(
                    conn,
                    user.as_str(),
                    "enrolled",
                    created_at,
                    enrollment,
                    None,
                )
            })
        })
    }

    fn participant(&self, user: &UserId) -> Result<Option<Participant>, StoreError> {
        self.with_connection(Resend::Always, |conn| participant_on(conn, user.as_str()))
    }

    fn change_enrollment(
        &self,
        user: &UserId,
        enrollment: &Enrollment,
        changed_at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let w = WindowValues::new(enrollment);
        let user = user.as_str();
        self.with_connection(Resend::Unsent, |conn| {
            in_transaction(conn, |conn| {
                lock_user(conn, user)?.ok_or(StoreError::UnknownUser)?;
                diesel::update(users::table.filter(users::user_id.eq(user)))
                    .set((
                        users::study_start.eq(w.study_start),
                        users::study_start_sent.eq(w.study_start_sent),
                        users::study_end.eq(w.study_end),
                        users::study_end_sent.eq(w.study_end_sent),
                    ))
                    .execute(conn)
                    .map_err(from_diesel)?;
                insert_event(
                    conn,
                    user,
                    "enrollment_changed",
                    changed_at,
                    enrollment,
                    None,
                )?;
                participant_on(conn, user)?.ok_or(StoreError::UnknownUser)
            })
        })
    }

    fn withdraw(
        &self,
        user: &UserId,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<Participant, StoreError> {
        let user = user.as_str();
        self.with_connection(Resend::Unsent, |conn| {
            in_transaction(conn, |conn| {
                let row = lock_user(conn, user)?.ok_or(StoreError::UnknownUser)?;
                if row.withdrawn_at.is_some() {
                    return Err(StoreError::AlreadyWithdrawn);
                }
                let enrollment = row.enrollment()?;
                diesel::update(users::table.find(row.id))
                    .set((
                        users::withdrawn_at.eq(Some(at)),
                        users::withdrawal_reason.eq(Some(reason)),
                    ))
                    .execute(conn)
                    .map_err(from_diesel)?;
                insert_event(conn, user, "withdrawn", at, &enrollment, Some(reason))?;
                participant_on(conn, user)?.ok_or(StoreError::UnknownUser)
            })
        })
    }

    fn erase_participant(&self, user: &UserId, erasure: &Erasure) -> Result<Erasure, StoreError> {
        self.with_connection(Resend::Unsent, |conn| {
            in_transaction(conn, |conn| erase_on(conn, user.as_str(), erasure))
        })
    }

    fn erased_pseudonyms(&self) -> Result<Vec<String>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            erasures::table
                .order((erasures::erased_at, erasures::id))
                .select(erasures::pseudonym)
                .load::<String>(conn)
                .map_err(from_diesel)
        })
    }

    fn record_decision(
        &self,
        decision: &Decision,
        guard: DecisionGuard,
    ) -> Result<Recorded, StoreError> {
        let v = DecisionValues::new(decision)?;
        // Safe to send again: a second insert of the key stores nothing and finds the first
        // (so a decision stored by an attempt whose answer was lost is found as `Existing`).
        let alone = |store: &Self| {
            store.with_connection(Resend::Always, |conn| {
                record_decision_on(conn, decision, &v, guard)
            })
        };
        let Some(guarded) = grouped(decision, guard) else {
            return alone(self);
        };
        if let Some(batch) = self.group.lead_alone() {
            // No batch running: the one-row insert, as without grouping. Decisions arriving
            // meanwhile queue; the next batch starts when this one is dropped, after the commit.
            let recorded = alone(self);
            drop(batch);
            return recorded;
        }
        match self.group.join(BatchRow::new(&v, guarded)?) {
            Joined::Written { stored: true } => Ok(Recorded::Inserted),
            // Not stored by the batch: recorded alone, which stores it or says why not.
            Joined::Written { stored: false } => alone(self),
            Joined::Lead(batch) if batch.len() == 1 => {
                // Nothing else queued: the one-row insert, as without grouping.
                let recorded = alone(self);
                drop(batch);
                recorded
            }
            Joined::Lead(mut batch) => {
                if let Err(e) = self.with_connection(Resend::Always, |conn| batch.write(conn)) {
                    log::warn!(
                        "a batch of {} decisions failed ({e}); recording each alone",
                        batch.len()
                    );
                }
                if batch.finish() {
                    Ok(Recorded::Inserted)
                } else {
                    alone(self)
                }
            }
        }
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<UploadRecorded, StoreError> {
        let v = StudyValues::new(record)?;
        self.with_connection(Resend::Unsent, |conn| {
            let inserted = UploadInsert { v: &v }
                .load::<bool>(conn)
                .map_err(from_diesel)?;
            if let Some(&action_logged) = inserted.first() {
                return Ok(UploadRecorded { action_logged });
            }
            let (logged, uploaded) = on_key(conn, v.user_id, v.decision_type, v.decision_idx)?;
            Err(refused_upload(record, logged, uploaded))
        })
    }

    fn record_correction(
        &self,
        record: &StudyRecord,
    ) -> Result<justin_core::CorrectionRecorded, StoreError> {
        self.with_connection(Resend::Unsent, |conn| {
            crate::corrections::record(conn, record)
        })
    }

    fn decision_history(
        &self,
        user: &UserId,
        decision_type: &justin_core::DecisionType,
        decision_idx: justin_core::DecisionIdx,
    ) -> Result<Option<justin_core::DecisionHistory>, StoreError> {
        // Read one after the other: a correction stored in between shows or not, as if it
        // had been stored after the call.
        self.with_connection(Resend::Always, |conn| {
            let decision = actions::table
                .filter(actions::user_id.eq(user.as_str()))
                .filter(actions::decision_type.eq(decision_type.as_str()))
                .filter(actions::decision_idx.eq(decision_idx.get()))
                .select(ActionRow::as_select())
                .first(conn)
                .optional()
                .map_err(from_diesel)?;
            let upload = study_data::table
                .filter(study_data::user_id.eq(user.as_str()))
                .filter(study_data::decision_type.eq(decision_type.as_str()))
                .filter(study_data::decision_idx.eq(decision_idx.get()))
                .select(crate::models::StudyRow::as_select())
                .first(conn)
                .optional()
                .map_err(from_diesel)?;
            if decision.is_none() && upload.is_none() {
                return Ok(None);
            }
            let corrections = crate::corrections::of_key(conn, user, decision_type, decision_idx)?;
            Ok(Some(justin_core::DecisionHistory {
                decision: decision.map(TryInto::try_into).transpose()?,
                upload: upload.map(TryInto::try_into).transpose()?,
                corrections,
            }))
        })
    }

    fn decisions(&self) -> Result<DecisionStream, StoreError> {
        SnapshotStream::<ActionRow>::open(self.checked_conn()?)
            .map(|s| Box::new(s) as DecisionStream)
    }

    fn export_by_participant(&self) -> Result<ExportStream, StoreError> {
        crate::by_participant::ByParticipantStream::open(self.checked_conn()?)
            .map(|s| Box::new(s) as ExportStream)
    }

    fn completed_updates(&self) -> Result<Vec<justin_core::CompletedUpdate>, StoreError> {
        self.with_connection(Resend::Always, completed_updates_on)
    }

    fn update_rows(&self, version: i64) -> Result<justin_core::UpdateRecordStream, StoreError> {
        crate::stream::UpdateRowsStream::open(self.checked_conn()?, version)
            .map(|s| Box::new(s) as justin_core::UpdateRecordStream)
    }

    fn export(&self) -> Result<ExportStream, StoreError> {
        SnapshotStream::<ExportDbRow>::open_with(self.checked_conn()?, updates_seen)
            .map(|s| Box::new(s) as ExportStream)
    }

    fn export_lines(&self) -> Result<ExportLineStream, StoreError> {
        SnapshotStream::<ExportLineDbRow>::open_with(self.checked_conn()?, updates_seen)
            .map(|s| Box::new(s) as ExportLineStream)
    }

    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            let row = model_parameters::table
                .order(model_parameters::version.desc())
                .select(ParametersRow::as_select())
                .first(conn)
                .optional()
                .map_err(from_diesel)?;
            Ok(row.map(ModelParameters::from))
        })
    }

    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            let row = model_parameters::table
                .find(version)
                .select(ParametersRow::as_select())
                .first(conn)
                .optional()
                .map_err(from_diesel)?;
            Ok(row.map(ModelParameters::from))
        })
    }

    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            diesel::insert_into(model_parameters::table)
                .values((
                    model_parameters::version.eq(1),
                    model_parameters::algorithm.eq(algorithm),
                    model_parameters::parameters.eq(values),
                    model_parameters::created_at.eq(created_at),
                ))
                .on_conflict(model_parameters::version)
                .do_nothing()
                .execute(conn)
                .map_err(from_diesel)?;
            let current = model_parameters::table
                .order(model_parameters::version.desc())
                .select(ParametersRow::as_select())
                .first(conn)
                .optional()
                .map_err(from_diesel)?;
            current.map(ModelParameters::from).ok_or_else(|| {
                other("model parameters vanished right after seeding (concurrent reset?)")
            })
        })
    }

    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError> {
        self.with_connection(Resend::Unsent, |conn| {
            diesel::insert_into(model_update_requests::table)
                .values(UpdateRow::try_from(request)?)
                .execute(conn)
                .map_err(from_diesel)?;
            Ok(())
        })
    }

    fn claim_update(
        &self,
        started_at: DateTime<Utc>,
    ) -> Result<Option<Box<dyn UpdateJob + '_>>, StoreError> {
        // The claim counts an attempt durably: it must not be sent twice.
        let job = crate::jobs::claim(self.checked_conn()?, self.pool.clone(), started_at)?;
        Ok(job.map(|job| Box::new(job) as Box<dyn UpdateJob>))
    }

    fn record_callback(&self, id: Uuid, delivery: &CallbackDelivery) -> Result<(), StoreError> {
        use model_update_requests::dsl as u;
        let attempts = count_column(delivery.attempts, "callback attempts")?;
        self.with_connection(Resend::Always, |conn| {
            let updated = diesel::update(u::model_update_requests.find(id))
                .set((
                    u::callback_status.eq(delivery.status.as_str()),
                    u::callback_attempts.eq(attempts),
                    u::callback_error.eq(delivery.last_error.as_deref()),
                    u::callback_finished_at.eq(delivery.finished_at),
                ))
                .execute(conn)
                .map_err(from_diesel)?;
            if updated == 0 {
                return Err(StoreError::UnknownUpdate);
            }
            Ok(())
        })
    }

    fn undelivered_callbacks(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            let rows = model_update_requests::table
                .left_join(update_provenance::table)
                .filter(model_update_requests::status.ne("processing"))
                .filter(model_update_requests::callback_status.eq("pending"))
                .order((model_update_requests::created_at, model_update_requests::id))
                .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
                .load::<(UpdateRow, Option<ProvenanceRow>)>(conn)
                .map_err(from_diesel)?;
            rows.into_iter()
                .map(|(row, provenance)| update_request(row, provenance))
                .collect()
        })
    }

    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            let row = model_update_requests::table
                .left_join(update_provenance::table)
                .filter(model_update_requests::id.eq(id))
                .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
                .first::<(UpdateRow, Option<ProvenanceRow>)>(conn)
                .optional()
                .map_err(from_diesel)?;
            row.map(|(row, provenance)| update_request(row, provenance))
                .transpose()
        })
    }

    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            crate::backup::write_backup(conn, dir, taken_at)
        })
    }

    fn check_backup(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        self.with_connection(Resend::Always, |conn| crate::restore::check(conn, file))
    }

    fn restore(&self, file: &Path) -> Result<RestoreReport, StoreError> {
        self.with_connection(Resend::Always, |conn| crate::restore::restore(conn, file))
    }

    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.with_connection(Resend::Always, count_rows)
    }

    fn reset(&self) -> Result<(), StoreError> {
        self.with_connection(Resend::Always, |conn| {
            conn.batch_execute(&format!(
                "TRUNCATE {}, {} RESTART IDENTITY CASCADE",
                TABLES.join(", "),
                crate::dashboard::TABLES.join(", ")
            ))
            .map_err(from_diesel)
        })
    }

    fn monitor_facts(
        &self,
        query: &justin_core::monitor::MonitorQuery,
    ) -> Result<justin_core::monitor::MonitorFacts, StoreError> {
        self.with_connection(Resend::Always, |c| crate::monitor::facts(c, query))
    }

    fn record_refused_upload(
        &self,
        refusal: &justin_core::monitor::RefusedUpload,
    ) -> Result<(), StoreError> {
        self.with_connection(Resend::Unsent, |c| {
            crate::monitor::record_refusal(c, refusal)
        })
    }

    fn advance_monitor_state(
        &self,
        change: &justin_core::monitor::StateChange,
    ) -> Result<justin_core::monitor::StateAdvance, StoreError> {
        self.with_connection(Resend::Unsent, |c| crate::monitor::advance(c, change))
    }

    fn claim_alert(
        &self,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<justin_core::monitor::Alert>, StoreError> {
        self.with_connection(Resend::Unsent, |c| {
            crate::monitor::claim(c, now, lease_until)
        })
    }

    fn record_alert(
        &self,
        id: i64,
        delivery: &justin_core::monitor::AlertDelivery,
    ) -> Result<(), StoreError> {
        self.with_connection(Resend::Always, |c| crate::monitor::record(c, id, delivery))
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.with_connection(Resend::Always, |conn| {
            conn.batch_execute("SELECT 1").map_err(from_diesel)
        })
        .map_err(|e| match e {
            StoreError::Unavailable(_) => e,
            other => StoreError::Unavailable(Box::new(other)),
        })
    }

    // ---- The dashboard (crate::dashboard). ----

    fn dashboard_days(
        &self,
        settings: &justin_core::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<justin_core::dashboard::DashboardDays, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            crate::dashboard::days(conn, settings, now)
        })
    }

    fn dashboard_participants(
        &self,
        settings: &justin_core::dashboard::DashboardSettings,
        now: DateTime<Utc>,
    ) -> Result<Vec<justin_core::dashboard::ParticipantActivity>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            crate::dashboard::participants(conn, settings, now)
        })
    }

    fn dashboard_participant_counts(&self) -> Result<(u64, u64), StoreError> {
        self.with_connection(Resend::Always, crate::dashboard::participant_counts)
    }

    fn dashboard_updates(&self) -> Result<Vec<UpdateRequest>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            let rows = model_update_requests::table
                .left_join(update_provenance::table)
                .order((
                    model_update_requests::created_at.desc(),
                    model_update_requests::id.desc(),
                ))
                .select((UpdateRow::as_select(), Option::<ProvenanceRow>::as_select()))
                .load::<(UpdateRow, Option<ProvenanceRow>)>(conn)
                .map_err(from_diesel)?;
            rows.into_iter()
                .map(|(row, provenance)| update_request(row, provenance))
                .collect()
        })
    }

    fn dashboard_recent_decisions(
        &self,
        version: i64,
        limit: u32,
    ) -> Result<Vec<Decision>, StoreError> {
        self.with_connection(Resend::Always, |conn| {
            actions::table
                .filter(actions::parameter_version.eq(version))
                .filter(actions::available.eq(true))
                .order(actions::id.desc())
                .limit(i64::from(limit))
                .select(ActionRow::as_select())
                .load::<ActionRow>(conn)
                .map_err(from_diesel)?
                .into_iter()
                .map(Decision::try_from)
                .collect()
        })
    }
}

/// The storage methods only tests call, for this crate's tests and the conformance suite.
#[cfg(feature = "testing")]
impl justin_core::TestingStore for PgStore {
    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        self.with_connection(Resend::Unsent, |conn| {
            let row = conn
                .transaction::<_, diesel::result::Error, _>(|conn| {
                    lock_for_publishing(conn)?;
                    let newest = model_parameters::table
                        .select(diesel::dsl::max(model_parameters::version))
                        .first::<Option<i64>>(conn)?;
                    diesel::insert_into(model_parameters::table)
                        .values((
                            model_parameters::version.eq(newest.unwrap_or(0) + 1),
                            model_parameters::algorithm.eq(algorithm),
                            model_parameters::parameters.eq(values),
                            model_parameters::created_at.eq(created_at),
                        ))
                        .returning(ParametersRow::as_returning())
                        .get_result(conn)
                })
                .map_err(from_diesel)?;
            Ok(row.into())
        })
    }

    fn study_data(&self) -> Result<justin_core::StudyDataStream, StoreError> {
        SnapshotStream::<crate::models::StudyRow>::open(self.checked_conn()?)
            .map(|s| Box::new(s) as justin_core::StudyDataStream)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use diesel::query_builder::QueryFragment;

    use super::*;

    #[test]
    fn the_decision_insert_is_prepared_once_per_connection() {
        let at = Utc.timestamp_opt(0, 0).single().unwrap();
        let context = justin_core::JsonObject::new();
        let v = DecisionValues {
            user_id: "u",
            decision_type: "default",
            decision_idx: 0,
            requested_at: at,
            sent_timestamp: "1970-01-01T00:00:00Z",
            decided_at: at,
            context: crate::models::JsonObjectText(&context),
            state: serde_json::json!([1.0]),
            action: 1,
            action_prob: 0.5,
            parameter_version: 1,
            rng_seed: 7,
            available: true,
            unavailable_reason: None,
            policy: "algorithm",
            fallback_reason: None,
            decided_by: None,
            in_study: true,
        };
        let query = insert_decision_query(&v);
        // Diesel keeps a prepared statement per connection for every query that says it is
        // safe to cache (keyed by its SQL text when its type has no static id); SQL text from
        // `sql_query` never is.
        assert!(query.is_safe_to_cache_prepared(&diesel::pg::Pg).unwrap());
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
        assert!(
            sql.contains("NOT (justin_decision_key_uploaded($19, $20, $21))"),
            "{sql}"
        );
        assert!(
            sql.contains(
                "ON CONFLICT (\"user_id\", \"decision_type\", \"decision_idx\") DO NOTHING"
            ),
            "{sql}"
        );

        // The guarded insert of an active participant outside warm-up: the same statement
        // reading from the participant's row, still cached.
        let guarded = insert_in_study_query(&v);
        assert!(guarded.is_safe_to_cache_prepared(&diesel::pg::Pg).unwrap());
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&guarded).to_string();
        assert!(sql.contains("FROM \"users\" WHERE"), "{sql}");
        assert!(sql.contains("\"users\".\"withdrawn_at\" IS NULL"), "{sql}");
        assert!(sql.contains("justin_decision_key_uploaded("), "{sql}");
    }

    #[test]
    fn the_upload_insert_is_prepared_once_per_connection() {
        let at = Utc.timestamp_opt(0, 0).single().unwrap();
        let v = StudyValues {
            user_id: "u",
            decision_type: "default",
            decision_idx: 3,
            requested_at: at,
            sent_timestamp: "1970-01-01T00:00:00Z",
            received_at: at,
            context: serde_json::json!({"x": 1}),
            action: 1,
            action_prob: 0.5,
            state: serde_json::json!([1.0]),
            outcome: serde_json::json!({"y": 2}),
            reward: 2.0,
        };
        let query = UploadInsert { v: &v };
        assert!(query.is_safe_to_cache_prepared(&diesel::pg::Pg).unwrap());
        let sql = diesel::debug_query::<diesel::pg::Pg, _>(&query).to_string();
        // Every value is bound, so the text, and with it the prepared statement, is the same
        // for every upload.
        let other = StudyValues {
            user_id: "another",
            decision_type: "evening",
            decision_idx: 9,
            action: 0,
            ..v
        };
        let other_sql =
            diesel::debug_query::<diesel::pg::Pg, _>(&UploadInsert { v: &other }).to_string();
        let text = |s: &str| s.split(" -- binds").next().map(str::to_owned);
        assert_eq!(text(&sql), text(&other_sql));
        assert!(
            sql.contains("LEFT JOIN justin_decision_key_logged($13, $14, $15) a ON true"),
            "{sql}"
        );
        assert!(sql.contains("RETURNING action_logged"), "{sql}");
    }
}
