//! The dashboard's reads on SQLite: the rollup of `migrations/sqlite/…_dashboard`, brought up
//! to date by [`justin_core::dashboard::refresh_step`], each step in an immediate transaction
//! (the write lock keeps two refreshes apart), then read; see `justin_core::dashboard`.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use justin_core::dashboard::{
    refresh_step, CorrectionFact, DashboardDays, DashboardSettings, DecisionDay, DecisionFact,
    ParticipantActivity, RollupState, RollupTx, StoredDecisionDay, StoredUploadDay, UploadDay,
    UploadFact,
};
use justin_core::StoreError;

use crate::error::{from_diesel, other};
use crate::models::{fmt_time, parse_time};

/// The rollup's tables, emptied by a reset and a restore.
pub(crate) const TABLES: [&str; 4] = [
    "dashboard_state",
    "dashboard_decision_days",
    "dashboard_upload_days",
    "dashboard_participants",
];

/// Empties the rollup; the caller owns the transaction.
pub(crate) fn clear(conn: &mut SqliteConnection) -> QueryResult<()> {
    let sql: String = TABLES
        .iter()
        .map(|t| format!("DELETE FROM {t}; "))
        .collect();
    conn.batch_execute(&sql)
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct ActionFactRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    decision_type: String,
    #[diesel(sql_type = BigInt)]
    parameter_version: i64,
    #[diesel(sql_type = Text)]
    request_timestamp: String,
    #[diesel(sql_type = Double)]
    action_prob: f64,
    #[diesel(sql_type = Bool)]
    available: bool,
}

#[derive(QueryableByName)]
struct UploadFactRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    decision_type: String,
    #[diesel(sql_type = Text)]
    request_timestamp: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Double)]
    reward: f64,
}

#[derive(QueryableByName)]
struct DecisionDayRow {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    decision_type: String,
    #[diesel(sql_type = BigInt)]
    parameter_version: i64,
    #[diesel(sql_type = BigInt)]
    decisions: i64,
    #[diesel(sql_type = BigInt)]
    available: i64,
    #[diesel(sql_type = BigInt)]
    at_lower: i64,
    #[diesel(sql_type = BigInt)]
    at_upper: i64,
    #[diesel(sql_type = Nullable<Double>)]
    q1: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    q2: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    q3: Option<f64>,
    #[diesel(sql_type = BigInt)]
    min_id: i64,
    #[diesel(sql_type = BigInt)]
    max_id: i64,
}

#[derive(QueryableByName)]
struct UploadDayRow {
    #[diesel(sql_type = Text)]
    day: String,
    #[diesel(sql_type = Text)]
    decision_type: String,
    #[diesel(sql_type = BigInt)]
    uploads: i64,
    #[diesel(sql_type = Double)]
    reward_sum: f64,
    #[diesel(sql_type = BigInt)]
    min_id: i64,
    #[diesel(sql_type = BigInt)]
    max_id: i64,
}

#[derive(QueryableByName)]
struct ProbRow {
    #[diesel(sql_type = Double)]
    action_prob: f64,
    #[diesel(sql_type = Bool)]
    available: bool,
}

#[derive(QueryableByName)]
struct SumRow {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Nullable<Double>)]
    total: Option<f64>,
}

#[derive(QueryableByName)]
struct ParticipantRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    created_at: String,
    #[diesel(sql_type = Nullable<Text>)]
    study_start: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    study_end: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    withdrawn_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    erased_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_decision: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    last_upload: Option<String>,
}

fn time(raw: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_time(raw).map_err(other)
}

fn opt_time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, StoreError> {
    raw.map(time).transpose()
}

fn day(raw: &str) -> Result<NaiveDate, StoreError> {
    raw.parse().map_err(other)
}

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(other)
}

fn signed(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(other)
}

impl TryFrom<ActionFactRow> for DecisionFact {
    type Error = StoreError;
    fn try_from(r: ActionFactRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            user_id: r.user_id,
            decision_type: r.decision_type,
            parameter_version: r.parameter_version,
            requested_at: time(&r.request_timestamp)?,
            probability: r.action_prob,
            available: r.available,
        })
    }
}

#[derive(QueryableByName)]
struct CorrectionFactRow {
    #[diesel(sql_type = BigInt)]
    correction_id: i64,
    #[diesel(embed)]
    upload: UploadFactRow,
}

impl TryFrom<CorrectionFactRow> for CorrectionFact {
    type Error = StoreError;
    fn try_from(r: CorrectionFactRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.correction_id,
            upload: r.upload.try_into()?,
        })
    }
}

impl TryFrom<UploadFactRow> for UploadFact {
    type Error = StoreError;
    fn try_from(r: UploadFactRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.id,
            user_id: r.user_id,
            decision_type: r.decision_type,
            requested_at: time(&r.request_timestamp)?,
            received_at: time(&r.created_at)?,
            reward: r.reward,
        })
    }
}

impl TryFrom<DecisionDayRow> for StoredDecisionDay {
    type Error = StoreError;
    fn try_from(r: DecisionDayRow) -> Result<Self, StoreError> {
        let quartiles = match (r.q1, r.q2, r.q3) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        };
        Ok(Self {
            figures: DecisionDay {
                day: day(&r.day)?,
                decision_type: r.decision_type,
                parameter_version: r.parameter_version,
                decisions: count(r.decisions)?,
                available: count(r.available)?,
                at_lower: count(r.at_lower)?,
                at_upper: count(r.at_upper)?,
                quartiles,
            },
            min_id: r.min_id,
            max_id: r.max_id,
        })
    }
}

impl TryFrom<UploadDayRow> for StoredUploadDay {
    type Error = StoreError;
    fn try_from(r: UploadDayRow) -> Result<Self, StoreError> {
        Ok(Self {
            figures: UploadDay {
                day: day(&r.day)?,
                decision_type: r.decision_type,
                uploads: count(r.uploads)?,
                reward_sum: r.reward_sum,
            },
            min_id: r.min_id,
            max_id: r.max_id,
        })
    }
}

const ACTION_FACTS: &str = "SELECT id, user_id, decision_type, parameter_version, \
     request_timestamp, action_prob, available FROM actions";
/// An upload's reward in force: its newest correction's, else its own (`study_data` is the
/// upload's row).
const REWARD_IN_FORCE: &str = "coalesce((SELECT n.reward FROM study_data_corrections n \
     WHERE n.study_data_id = study_data.id ORDER BY n.id DESC LIMIT 1), study_data.reward)";
const UPLOAD_FACTS: &str = "SELECT study_data.id, user_id, decision_type, request_timestamp, \
     created_at, coalesce((SELECT n.reward FROM study_data_corrections n \
     WHERE n.study_data_id = study_data.id ORDER BY n.id DESC LIMIT 1), study_data.reward) AS reward FROM study_data";
/// Corrections, each with the upload it corrects (its reward in force).
const CORRECTION_FACTS: &str = "SELECT c.id AS correction_id, study_data.id, \
     study_data.user_id, study_data.decision_type, study_data.request_timestamp, \
     study_data.created_at, coalesce((SELECT n.reward FROM study_data_corrections n \
     WHERE n.study_data_id = study_data.id ORDER BY n.id DESC LIMIT 1), study_data.reward) AS reward \
     FROM study_data_corrections c JOIN study_data ON study_data.id = c.study_data_id";

/// The rollup's reads and writes on one connection inside the refresh's transaction.
struct Tx<'a>(&'a mut SqliteConnection);

/// The decisions or uploads `sql` selects (a query over `ACTION_FACTS` or `UPLOAD_FACTS` with
/// two whole-number parameters: an id and a limit, or an id range), as the refresh reads them.
fn facts<R, F>(
    conn: &mut SqliteConnection,
    sql: String,
    (a, b): (i64, i64),
) -> Result<Vec<F>, StoreError>
where
    R: QueryableByName<diesel::sqlite::Sqlite> + 'static,
    F: TryFrom<R, Error = StoreError>,
{
    diesel::sql_query(sql)
        .bind::<BigInt, _>(a)
        .bind::<BigInt, _>(b)
        .load::<R>(conn)
        .map_err(from_diesel)?
        .into_iter()
        .map(F::try_from)
        .collect()
}

impl RollupTx for Tx<'_> {
    fn state(&mut self) -> Result<Option<RollupState>, StoreError> {
        let row = diesel::sql_query("SELECT state FROM dashboard_state WHERE id = 1")
            .get_result::<StateRow>(self.0)
            .optional()
            .map_err(from_diesel)?;
        row.map(|r| serde_json::from_str(&r.state).map_err(other))
            .transpose()
    }

    fn erasures(&mut self) -> Result<i64, StoreError> {
        Ok(diesel::sql_query("SELECT count(*) AS n FROM erasures")
            .get_result::<Count>(self.0)
            .map_err(from_diesel)?
            .n)
    }

    fn clear(&mut self) -> Result<(), StoreError> {
        clear(self.0).map_err(from_diesel)
    }

    fn decisions_after(&mut self, after: i64, limit: i64) -> Result<Vec<DecisionFact>, StoreError> {
        facts::<ActionFactRow, _>(
            self.0,
            format!("{ACTION_FACTS} WHERE id > ? ORDER BY id LIMIT ?"),
            (after, limit),
        )
    }

    fn decisions_between(&mut self, lo: i64, hi: i64) -> Result<Vec<DecisionFact>, StoreError> {
        facts::<ActionFactRow, _>(
            self.0,
            format!("{ACTION_FACTS} WHERE id BETWEEN ? AND ? ORDER BY id"),
            (lo, hi),
        )
    }

    fn uploads_after(&mut self, after: i64, limit: i64) -> Result<Vec<UploadFact>, StoreError> {
        facts::<UploadFactRow, _>(
            self.0,
            format!("{UPLOAD_FACTS} WHERE id > ? ORDER BY id LIMIT ?"),
            (after, limit),
        )
    }

    fn uploads_between(&mut self, lo: i64, hi: i64) -> Result<Vec<UploadFact>, StoreError> {
        facts::<UploadFactRow, _>(
            self.0,
            format!("{UPLOAD_FACTS} WHERE id BETWEEN ? AND ? ORDER BY id"),
            (lo, hi),
        )
    }

    fn corrections_after(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<CorrectionFact>, StoreError> {
        facts::<CorrectionFactRow, _>(
            self.0,
            format!("{CORRECTION_FACTS} WHERE c.id > ? ORDER BY c.id LIMIT ?"),
            (after, limit),
        )
    }

    fn corrections_between(&mut self, lo: i64, hi: i64) -> Result<Vec<CorrectionFact>, StoreError> {
        facts::<CorrectionFactRow, _>(
            self.0,
            format!("{CORRECTION_FACTS} WHERE c.id BETWEEN ? AND ? ORDER BY c.id"),
            (lo, hi),
        )
    }

    fn decision_days(&mut self) -> Result<Vec<StoredDecisionDay>, StoreError> {
        decision_days(self.0)
    }

    fn upload_days(&mut self) -> Result<Vec<StoredUploadDay>, StoreError> {
        upload_days(self.0)
    }

    fn group_decisions(
        &mut self,
        decision_type: &str,
        parameter_version: i64,
        ids: (i64, i64),
        times: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Vec<(f64, bool)>, StoreError> {
        Ok(diesel::sql_query(
            "SELECT action_prob, available FROM actions WHERE id BETWEEN ? AND ? \
             AND decision_type = ? AND parameter_version = ? \
             AND request_timestamp >= ? AND request_timestamp < ?",
        )
        .bind::<BigInt, _>(ids.0)
        .bind::<BigInt, _>(ids.1)
        .bind::<Text, _>(decision_type)
        .bind::<BigInt, _>(parameter_version)
        .bind::<Text, _>(fmt_time(times.0))
        .bind::<Text, _>(fmt_time(times.1))
        .load::<ProbRow>(self.0)
        .map_err(from_diesel)?
        .into_iter()
        .map(|r| (r.action_prob, r.available))
        .collect())
    }

    fn group_uploads(
        &mut self,
        decision_type: &str,
        ids: (i64, i64),
        times: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<(u64, f64), StoreError> {
        let row = diesel::sql_query(format!(
            "SELECT count(*) AS n, sum({REWARD_IN_FORCE}) AS total FROM study_data \
             WHERE id BETWEEN ? AND ? \
             AND decision_type = ? AND request_timestamp >= ? AND request_timestamp < ?"
        ))
        .bind::<BigInt, _>(ids.0)
        .bind::<BigInt, _>(ids.1)
        .bind::<Text, _>(decision_type)
        .bind::<Text, _>(fmt_time(times.0))
        .bind::<Text, _>(fmt_time(times.1))
        .get_result::<SumRow>(self.0)
        .map_err(from_diesel)?;
        Ok((count(row.n)?, row.total.unwrap_or(0.0)))
    }

    fn put_decision_day(&mut self, d: &StoredDecisionDay) -> Result<(), StoreError> {
        let f = &d.figures;
        let q = |i: usize| f.quartiles.map(|q| q[i]);
        diesel::sql_query(
            "INSERT OR REPLACE INTO dashboard_decision_days (day, decision_type, \
             parameter_version, decisions, available, at_lower, at_upper, q1, q2, q3, min_id, \
             max_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind::<Text, _>(f.day.to_string())
        .bind::<Text, _>(&f.decision_type)
        .bind::<BigInt, _>(f.parameter_version)
        .bind::<BigInt, _>(signed(f.decisions)?)
        .bind::<BigInt, _>(signed(f.available)?)
        .bind::<BigInt, _>(signed(f.at_lower)?)
        .bind::<BigInt, _>(signed(f.at_upper)?)
        .bind::<Nullable<Double>, _>(q(0))
        .bind::<Nullable<Double>, _>(q(1))
        .bind::<Nullable<Double>, _>(q(2))
        .bind::<BigInt, _>(d.min_id)
        .bind::<BigInt, _>(d.max_id)
        .execute(self.0)
        .map(drop)
        .map_err(from_diesel)
    }

    fn put_upload_day(&mut self, d: &StoredUploadDay) -> Result<(), StoreError> {
        let f = &d.figures;
        diesel::sql_query(
            "INSERT OR REPLACE INTO dashboard_upload_days (day, decision_type, uploads, \
             reward_sum, min_id, max_id) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind::<Text, _>(f.day.to_string())
        .bind::<Text, _>(&f.decision_type)
        .bind::<BigInt, _>(signed(f.uploads)?)
        .bind::<Double, _>(f.reward_sum)
        .bind::<BigInt, _>(d.min_id)
        .bind::<BigInt, _>(d.max_id)
        .execute(self.0)
        .map(drop)
        .map_err(from_diesel)
    }

    fn raise_participant(
        &mut self,
        user_id: &str,
        last_decision: Option<DateTime<Utc>>,
        last_upload: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        // Times are fixed-width text, so max() of two is the later one; max(NULL, x) is NULL
        // in SQLite, hence the coalesce.
        diesel::sql_query(
            "INSERT INTO dashboard_participants (user_id, last_decision, last_upload) \
             VALUES (?1, ?2, ?3) ON CONFLICT (user_id) DO UPDATE SET \
             last_decision = max(coalesce(last_decision, ?2), coalesce(?2, last_decision)), \
             last_upload = max(coalesce(last_upload, ?3), coalesce(?3, last_upload))",
        )
        .bind::<Text, _>(user_id)
        .bind::<Nullable<Text>, _>(last_decision.map(fmt_time))
        .bind::<Nullable<Text>, _>(last_upload.map(fmt_time))
        .execute(self.0)
        .map(drop)
        .map_err(from_diesel)
    }

    fn put_state(&mut self, state: &RollupState) -> Result<(), StoreError> {
        let text = serde_json::to_string(state).map_err(other)?;
        diesel::sql_query("INSERT OR REPLACE INTO dashboard_state (id, state) VALUES (1, ?)")
            .bind::<Text, _>(text)
            .execute(self.0)
            .map(drop)
            .map_err(from_diesel)
    }
}

fn decision_days(conn: &mut SqliteConnection) -> Result<Vec<StoredDecisionDay>, StoreError> {
    diesel::sql_query(
        "SELECT * FROM dashboard_decision_days ORDER BY day, decision_type, parameter_version",
    )
    .load::<DecisionDayRow>(conn)
    .map_err(from_diesel)?
    .into_iter()
    .map(StoredDecisionDay::try_from)
    .collect()
}

fn upload_days(conn: &mut SqliteConnection) -> Result<Vec<StoredUploadDay>, StoreError> {
    diesel::sql_query("SELECT * FROM dashboard_upload_days ORDER BY day, decision_type")
        .load::<UploadDayRow>(conn)
        .map_err(from_diesel)?
        .into_iter()
        .map(StoredUploadDay::try_from)
        .collect()
}

/// Brings the rollup up to date, one immediate transaction per step.
fn refreshed(
    conn: &mut SqliteConnection,
    settings: &DashboardSettings,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    while conn
        .immediate_transaction::<_, crate::backup::Failure, _>(|conn| {
            refresh_step(&mut Tx(conn), settings, now).map_err(crate::backup::Failure::Store)
        })
        .map_err(StoreError::from)?
    {}
    Ok(())
}

/// See [`justin_core::Store::dashboard_days`].
pub(crate) fn days(
    conn: &mut SqliteConnection,
    settings: &DashboardSettings,
    now: DateTime<Utc>,
) -> Result<DashboardDays, StoreError> {
    refreshed(conn, settings, now)?;
    conn.transaction::<_, crate::backup::Failure, _>(|conn| {
        let decisions = decision_days(conn).map_err(crate::backup::Failure::Store)?;
        let uploads = upload_days(conn).map_err(crate::backup::Failure::Store)?;
        Ok(DashboardDays {
            decisions: decisions.into_iter().map(|d| d.figures).collect(),
            uploads: uploads.into_iter().map(|u| u.figures).collect(),
        })
    })
    .map_err(StoreError::from)
}

#[derive(QueryableByName)]
struct ParticipantCounts {
    #[diesel(sql_type = BigInt)]
    registered: i64,
    #[diesel(sql_type = BigInt)]
    erased: i64,
}

/// See [`justin_core::Store::dashboard_participant_counts`].
pub(crate) fn participant_counts(conn: &mut SqliteConnection) -> Result<(u64, u64), StoreError> {
    let row =
        diesel::sql_query("SELECT count(*) AS registered, count(erased_at) AS erased FROM users")
            .get_result::<ParticipantCounts>(conn)
            .map_err(from_diesel)?;
    Ok((
        u64::try_from(row.registered).map_err(other)?,
        u64::try_from(row.erased).map_err(other)?,
    ))
}

/// See [`justin_core::Store::dashboard_participants`].
pub(crate) fn participants(
    conn: &mut SqliteConnection,
    settings: &DashboardSettings,
    now: DateTime<Utc>,
) -> Result<Vec<ParticipantActivity>, StoreError> {
    refreshed(conn, settings, now)?;
    diesel::sql_query(
        "SELECT u.user_id, u.created_at, u.study_start, u.study_end, u.withdrawn_at, \
         u.erased_at, p.last_decision, p.last_upload FROM users u \
         LEFT JOIN dashboard_participants p ON p.user_id = u.user_id ORDER BY u.user_id",
    )
    .load::<ParticipantRow>(conn)
    .map_err(from_diesel)?
    .into_iter()
    .map(|r| {
        Ok(ParticipantActivity {
            created_at: time(&r.created_at)?,
            study_start: opt_time(r.study_start.as_deref())?,
            study_end: opt_time(r.study_end.as_deref())?,
            withdrawn_at: opt_time(r.withdrawn_at.as_deref())?,
            erased_at: opt_time(r.erased_at.as_deref())?,
            last_decision: opt_time(r.last_decision.as_deref())?,
            last_upload: opt_time(r.last_upload.as_deref())?,
            user_id: r.user_id,
        })
    })
    .collect()
}
