//! [`PgStore`]: the [`Store`] port over a pool of PostgreSQL connections.
//!
//! Each port method checks out one connection and, where the contract allows, does its work in
//! one statement, leaving exactly-once rules to the database's constraints rather than to
//! read-then-write logic that concurrent requests could interleave.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::dsl::{exists, max};
use diesel::prelude::*;
use diesel::r2d2::{ConnectionManager, Pool, PooledConnection};
use diesel::sql_types::{BigInt, Double, Jsonb, SmallInt, Text, Timestamptz};
use justin_core::{
    BackupReport, Decision, ModelParameters, Recorded, Store, StoreError, StudyDataStream,
    StudyRecord, UpdateOutcome, UpdateRequest, UserId,
};
use uuid::Uuid;

use crate::error::{from_diesel, from_pool, other, SetupError};
use crate::models::{ActionRow, DecisionValues, NewStudyRow, ParametersRow, StudyRow, UpdateRow};
use crate::schema::{actions, model_parameters, model_update_requests, study_data, users};
use crate::setup::{self, mask_password, PgUrl};

type Manager = ConnectionManager<PgConnection>;
type PooledPg = PooledConnection<Manager>;

/// The tables of a study, in the order reports and backups list them.
pub(crate) const TABLES: [&str; 5] = [
    "users",
    "model_parameters",
    "actions",
    "study_data",
    "model_update_requests",
];

/// How many study records [`Store::study_data`] reads per query.
const STUDY_DATA_PAGE: i64 = 5000;

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
            .build(ConnectionManager::new(config.url.clone()))
            .map_err(|e| SetupError::Connect {
                url: masked.clone(),
                reason: e.to_string(),
            })?;
        let store = Self {
            pool,
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

    fn conn(&self) -> Result<PooledPg, StoreError> {
        self.pool.get().map_err(from_pool)
    }
}

/// Inserts the decision unless one exists for the pair or study data was uploaded for it; the
/// unique constraint, not the `NOT EXISTS`, is what makes concurrent inserts store one row.
const INSERT_DECISION: &str = "\
INSERT INTO actions (user_id, decision_idx, request_timestamp, created_at, context, state, \
                     action, action_prob, parameter_version, rng_seed) \
SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 \
WHERE NOT EXISTS (SELECT 1 FROM study_data WHERE user_id = $1 AND decision_idx = $2) \
ON CONFLICT (user_id, decision_idx) DO NOTHING \
RETURNING id";

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
pub(crate) fn count_rows(conn: &mut PgConnection) -> Result<Vec<(String, u64)>, StoreError> {
    let sql = TABLES
        .iter()
        .map(|t| format!("SELECT '{t}' AS name, count(*) AS rows FROM {t}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut counts = diesel::sql_query(sql)
        .load::<TableCount>(conn)
        .map_err(from_diesel)?;
    // SQL does not promise UNION ALL keeps the branches' order; reports list TABLES' order.
    counts.sort_by_key(|c| TABLES.iter().position(|t| *t == c.name));
    counts
        .into_iter()
        .map(|c| Ok((c.name, u64::try_from(c.rows).map_err(other)?)))
        .collect()
}

impl Store for PgStore {
    fn add_user(&self, user: &UserId, created_at: DateTime<Utc>) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(users::table)
            .values((
                users::user_id.eq(user.as_str()),
                users::created_at.eq(created_at),
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
            .bind::<Timestamptz, _>(v.requested_at)
            .bind::<Timestamptz, _>(v.decided_at)
            .bind::<Jsonb, _>(&v.context)
            .bind::<Jsonb, _>(&v.state)
            .bind::<SmallInt, _>(v.action)
            .bind::<Double, _>(v.action_prob)
            .bind::<BigInt, _>(v.parameter_version)
            .bind::<BigInt, _>(v.rng_seed)
            .load::<InsertedId>(&mut conn)
            .map_err(from_diesel)?;
        if !inserted.is_empty() {
            return Ok(Recorded::Inserted);
        }
        // Nothing inserted: a decision exists, or study data does (which takes precedence).
        let same_pair = study_data::user_id
            .eq(v.user_id)
            .and(study_data::decision_idx.eq(v.decision_idx));
        let existing = actions::table
            .filter(actions::user_id.eq(v.user_id))
            .filter(actions::decision_idx.eq(v.decision_idx))
            .select((
                ActionRow::as_select(),
                exists(study_data::table.filter(same_pair)),
            ))
            .first::<(ActionRow, bool)>(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        match existing {
            Some((_, true)) => Err(StoreError::StudyDataExists),
            Some((row, false)) => Ok(Recorded::Existing(row.try_into()?)),
            None => {
                let uploaded = diesel::select(exists(study_data::table.filter(same_pair)))
                    .get_result::<bool>(&mut conn)
                    .map_err(from_diesel)?;
                if uploaded {
                    Err(StoreError::StudyDataExists)
                } else {
                    // Only a concurrent reset can remove the row that blocked the insert.
                    Err(other(format!(
                        "the decision of {} at index {} was neither stored nor found",
                        decision.user_id, v.decision_idx
                    )))
                }
            }
        }
    }

    fn record_study_data(&self, record: &StudyRecord) -> Result<(), StoreError> {
        let row = NewStudyRow::new(record)?;
        let mut conn = self.conn()?;
        diesel::insert_into(study_data::table)
            .values(&row)
            .execute(&mut conn)
            .map_err(from_diesel)?;
        Ok(())
    }

    fn current_parameters(&self) -> Result<Option<ModelParameters>, StoreError> {
        let mut conn = self.conn()?;
        let row = model_parameters::table
            .order(model_parameters::version.desc())
            .select(ParametersRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(ModelParameters::from))
    }

    fn parameters(&self, version: i64) -> Result<Option<ModelParameters>, StoreError> {
        let mut conn = self.conn()?;
        let row = model_parameters::table
            .find(version)
            .select(ParametersRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        Ok(row.map(ModelParameters::from))
    }

    fn seed_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(model_parameters::table)
            .values((
                model_parameters::version.eq(1),
                model_parameters::algorithm.eq(algorithm),
                model_parameters::parameters.eq(values),
                model_parameters::created_at.eq(created_at),
            ))
            .on_conflict(model_parameters::version)
            .do_nothing()
            .execute(&mut conn)
            .map_err(from_diesel)?;
        let current = model_parameters::table
            .order(model_parameters::version.desc())
            .select(ParametersRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        current.map(ModelParameters::from).ok_or_else(|| {
            other("model parameters vanished right after seeding (concurrent reset?)")
        })
    }

    fn publish_parameters(
        &self,
        algorithm: &str,
        values: &serde_json::Value,
        created_at: DateTime<Utc>,
    ) -> Result<ModelParameters, StoreError> {
        let mut conn = self.conn()?;
        let row = conn
            .transaction::<_, diesel::result::Error, _>(|conn| {
                // Serialises publishers (and seeding inserts) without blocking readers or the
                // foreign-key checks of decisions being recorded, which take ROW SHARE.
                conn.batch_execute("LOCK TABLE model_parameters IN SHARE ROW EXCLUSIVE MODE")?;
                let newest = model_parameters::table
                    .select(max(model_parameters::version))
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
    }

    fn study_data(&self) -> Result<StudyDataStream, StoreError> {
        StudyDataPages::open(self.conn()?).map(|pages| Box::new(pages) as StudyDataStream)
    }

    fn create_update_request(&self, request: &UpdateRequest) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        diesel::insert_into(model_update_requests::table)
            .values(UpdateRow::from(request))
            .execute(&mut conn)
            .map_err(from_diesel)?;
        Ok(())
    }

    fn finish_update_request(
        &self,
        id: Uuid,
        outcome: &UpdateOutcome,
        finished_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        use model_update_requests::dsl as u;
        let (status, error, version) = match outcome {
            UpdateOutcome::Completed { parameter_version } => {
                ("completed", None, Some(*parameter_version))
            }
            UpdateOutcome::Failed { error } => ("failed", Some(error.as_str()), None),
        };
        let mut conn = self.conn()?;
        let updated = diesel::update(u::model_update_requests.find(id))
            .set((
                u::status.eq(status),
                u::finished_at.eq(Some(finished_at)),
                u::error.eq(error),
                u::parameter_version.eq(version),
            ))
            .execute(&mut conn)
            .map_err(from_diesel)?;
        if updated == 0 {
            return Err(StoreError::UnknownUpdate);
        }
        Ok(())
    }

    fn update_request(&self, id: Uuid) -> Result<Option<UpdateRequest>, StoreError> {
        let mut conn = self.conn()?;
        let row = model_update_requests::table
            .find(id)
            .select(UpdateRow::as_select())
            .first(&mut conn)
            .optional()
            .map_err(from_diesel)?;
        row.map(UpdateRequest::try_from).transpose()
    }

    fn backup(&self, dir: &Path, taken_at: DateTime<Utc>) -> Result<BackupReport, StoreError> {
        let mut conn = self.conn()?;
        crate::backup::write_backup(&mut conn, dir, taken_at)
    }

    fn row_counts(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut conn = self.conn()?;
        count_rows(&mut conn)
    }

    fn reset(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.batch_execute(&format!(
            "TRUNCATE {} RESTART IDENTITY CASCADE",
            TABLES.join(", ")
        ))
        .map_err(from_diesel)
    }

    fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.batch_execute("SELECT 1")
            .map_err(|e| StoreError::Unavailable(Box::new(e)))
    }
}

/// The study data stream: pages through `study_data` by id inside one read-only
/// repeatable-read transaction on a connection it owns.
///
/// The transaction's snapshot is what keeps later uploads out, including ones whose id was
/// drawn before the call but committed after it; the id bound read at the start lets the last
/// page end the stream without one more, empty, query.
struct StudyDataPages {
    /// `None` once the stream has ended and the connection went back to the pool.
    conn: Option<PooledPg>,
    last_id: i64,
    max_id: i64,
    page: std::vec::IntoIter<StudyRow>,
}

impl StudyDataPages {
    fn open(mut conn: PooledPg) -> Result<Self, StoreError> {
        AnsiTransactionManager::begin_transaction_sql(
            &mut *conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .map_err(from_diesel)?;
        // The snapshot is taken by this first query, so it and the pages agree.
        let max_id = study_data::table
            .select(max(study_data::id))
            .first::<Option<i64>>(&mut *conn);
        let mut pages = Self {
            conn: Some(conn),
            last_id: i64::MIN,
            max_id: i64::MIN,
            page: Vec::new().into_iter(),
        };
        match max_id {
            Ok(Some(max_id)) => pages.max_id = max_id,
            Ok(None) => pages.finish(),
            Err(e) => {
                pages.finish();
                return Err(from_diesel(e));
            }
        }
        Ok(pages)
    }

    /// Ends the transaction and returns the connection to the pool. Should the rollback fail,
    /// Diesel marks the connection broken and the pool drops it instead of reusing it.
    fn finish(&mut self) {
        self.page = Vec::new().into_iter();
        if let Some(mut conn) = self.conn.take() {
            if let Err(e) = AnsiTransactionManager::rollback_transaction(&mut *conn) {
                log::warn!("ending the study data transaction failed: {e}");
            }
        }
    }

    fn next_page(&mut self) -> Option<Result<(), StoreError>> {
        let conn = self.conn.as_mut()?;
        if self.last_id >= self.max_id {
            self.finish();
            return None;
        }
        let rows = study_data::table
            .filter(study_data::id.gt(self.last_id))
            .filter(study_data::id.le(self.max_id))
            .order(study_data::id)
            .limit(STUDY_DATA_PAGE)
            .select(StudyRow::as_select())
            .load::<StudyRow>(&mut **conn);
        match rows {
            Ok(rows) => match rows.last() {
                Some(last) => {
                    self.last_id = last.id;
                    self.page = rows.into_iter();
                    Some(Ok(()))
                }
                None => {
                    self.finish();
                    None
                }
            },
            Err(e) => {
                self.finish();
                Some(Err(from_diesel(e)))
            }
        }
    }
}

impl Iterator for StudyDataPages {
    type Item = Result<StudyRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(row) = self.page.next() {
                let record = StudyRecord::try_from(row);
                if record.is_err() {
                    self.finish();
                }
                return Some(record);
            }
            match self.next_page()? {
                Ok(()) => continue,
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl Drop for StudyDataPages {
    fn drop(&mut self) {
        self.finish();
    }
}
