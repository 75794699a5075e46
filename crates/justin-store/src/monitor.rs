//! The watchdog's storage on PostgreSQL: its aggregate reads (a handful of statements, each
//! an index lookup per participant or one pass over the window's rows, never the study in
//! memory), the refusals it counts, the verdict the instances share and the alerts queued when
//! it changes.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Double, Jsonb, Nullable, Text, Timestamptz};
use justin_core::monitor::{
    ActiveParticipant, Alert, AlertDelivery, MonitorFacts, MonitorQuery, OverdueOutcomes,
    RefusedUpload, Severity, StateAdvance, StateChange,
};
use justin_core::StoreError;

use crate::error::{from_diesel, other};

#[derive(QueryableByName)]
struct LatestRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Timestamptz)]
    since: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Text>)]
    decision_type: Option<String>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    latest: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct OverdueRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Timestamptz)]
    oldest: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct UpdatesRow {
    #[diesel(sql_type = Nullable<Timestamptz>)]
    last_completed: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    first_version_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    first_failed_at: Option<DateTime<Utc>>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    oldest_unfinished: Option<DateTime<Utc>>,
    #[diesel(sql_type = BigInt)]
    callbacks_failed: i64,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    first_callback_failed_at: Option<DateTime<Utc>>,
}

#[derive(QueryableByName)]
struct WindowRow {
    #[diesel(sql_type = BigInt)]
    drawn: i64,
    #[diesel(sql_type = BigInt)]
    fallbacks: i64,
    #[diesel(sql_type = BigInt)]
    algorithm: i64,
    #[diesel(sql_type = BigInt)]
    at_clip: i64,
    #[diesel(sql_type = BigInt)]
    uploads: i64,
    #[diesel(sql_type = BigInt)]
    refused: i64,
}

/// Active participants with the latest decision of each asked type: one index lookup on the
/// decision key (user, type, idx) per participant and type.
const LATEST: &str = "\
SELECT u.user_id, coalesce(u.study_start, u.created_at) AS since, t.decision_type, \
       (SELECT a.request_timestamp FROM actions a \
         WHERE a.user_id = u.user_id AND a.decision_type = t.decision_type \
         ORDER BY a.decision_idx DESC LIMIT 1) AS latest \
  FROM users u LEFT JOIN unnest($2::text[]) AS t(decision_type) ON true \
 WHERE u.withdrawn_at IS NULL AND u.erased_at IS NULL \
   AND (u.study_start IS NULL OR u.study_start <= $1) \
   AND (u.study_end IS NULL OR u.study_end > $1) \
 ORDER BY u.user_id, t.decision_type";

const OVERDUE: &str = "\
SELECT a.user_id, count(*) AS count, min(a.request_timestamp) AS oldest \
  FROM actions a JOIN users u ON u.user_id = a.user_id \
 WHERE a.available AND a.request_timestamp >= $1 AND a.request_timestamp < $2 \
   AND u.withdrawn_at IS NULL AND u.erased_at IS NULL \
   AND NOT EXISTS (SELECT 1 FROM study_data s WHERE s.user_id = a.user_id \
                   AND s.decision_type = a.decision_type AND s.decision_idx = a.decision_idx) \
 GROUP BY a.user_id ORDER BY a.user_id";

const UPDATES: &str = "\
WITH done AS (SELECT max(finished_at) AS at FROM model_update_requests WHERE status = 'completed') \
SELECT (SELECT at FROM done) AS last_completed, \
       (SELECT created_at FROM model_parameters WHERE version = 1) AS first_version_at, \
       (SELECT count(*) FROM model_update_requests r WHERE r.status = 'failed' \
         AND r.finished_at >= $1 AND ((SELECT at FROM done) IS NULL OR r.finished_at > (SELECT at FROM done))) AS failed, \
       (SELECT min(r.finished_at) FROM model_update_requests r WHERE r.status = 'failed' \
         AND r.finished_at >= $1 AND ((SELECT at FROM done) IS NULL OR r.finished_at > (SELECT at FROM done))) AS first_failed_at, \
       (SELECT min(created_at) FROM model_update_requests WHERE status = 'processing') AS oldest_unfinished, \
       (SELECT count(*) FROM model_update_requests WHERE callback_status = 'failed' AND finished_at >= $1) AS callbacks_failed, \
       (SELECT min(finished_at) FROM model_update_requests WHERE callback_status = 'failed' AND finished_at >= $1) AS first_callback_failed_at";

const WINDOW: &str = "\
SELECT coalesce(sum(CASE WHEN policy <> 'host' THEN 1 ELSE 0 END), 0)::bigint AS drawn, \
       coalesce(sum(CASE WHEN policy = 'fallback' THEN 1 ELSE 0 END), 0)::bigint AS fallbacks, \
       coalesce(sum(CASE WHEN policy = 'algorithm' THEN 1 ELSE 0 END), 0)::bigint AS algorithm, \
       coalesce(sum(CASE WHEN policy = 'algorithm' AND (action_prob <= $2 OR action_prob >= $3) \
                    THEN 1 ELSE 0 END), 0)::bigint AS at_clip, \
       (SELECT count(*) FROM study_data WHERE created_at >= $1) AS uploads, \
       (SELECT count(*) FROM upload_refusals WHERE refused_at >= $1) AS refused \
  FROM actions WHERE available AND created_at >= $1";

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(other)
}

/// See `Store::monitor_facts`.
pub(crate) fn facts(conn: &mut PgConnection, q: &MonitorQuery) -> Result<MonitorFacts, StoreError> {
    conn.transaction(|conn| {
        diesel::sql_query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(conn)?;
        // Without decision types (no schedule) nothing judges the participants: none is read.
        let latest = if q.decision_types.is_empty() {
            Vec::new()
        } else {
            diesel::sql_query(LATEST)
                .bind::<Timestamptz, _>(q.now)
                .bind::<Array<Text>, _>(&q.decision_types)
                .load::<LatestRow>(conn)?
        };
        let overdue = diesel::sql_query(OVERDUE)
            .bind::<Timestamptz, _>(q.outcome_lookback_from)
            .bind::<Timestamptz, _>(q.outcome_due_before)
            .load::<OverdueRow>(conn)?;
        let updates = diesel::sql_query(UPDATES)
            .bind::<Timestamptz, _>(q.window_from)
            .get_result::<UpdatesRow>(conn)?;
        // Without clip bounds no probability is at one (probabilities lie in [0, 1]).
        let (low, high) = q.clip.unwrap_or((-1.0, 2.0));
        let window = diesel::sql_query(WINDOW)
            .bind::<Timestamptz, _>(q.window_from)
            .bind::<Double, _>(low + 1e-9)
            .bind::<Double, _>(high - 1e-9)
            .get_result::<WindowRow>(conn)?;
        Ok::<_, diesel::result::Error>((latest, overdue, updates, window))
    })
    .map_err(from_diesel)
    .and_then(|(latest, overdue, updates, window)| assemble(latest, overdue, &updates, &window))
}

fn assemble(
    latest: Vec<LatestRow>,
    overdue: Vec<OverdueRow>,
    u: &UpdatesRow,
    w: &WindowRow,
) -> Result<MonitorFacts, StoreError> {
    let mut participants: Vec<ActiveParticipant> = Vec::new();
    for row in latest {
        if participants.last().is_none_or(|p| p.user_id != row.user_id) {
            participants.push(ActiveParticipant {
                user_id: row.user_id.clone(),
                since: row.since,
                latest: Vec::new(),
            });
        }
        if let (Some(t), Some(at), Some(p)) =
            (row.decision_type, row.latest, participants.last_mut())
        {
            p.latest.push((t, at));
        }
    }
    let overdue = overdue
        .into_iter()
        .map(|r| {
            Ok(OverdueOutcomes {
                user_id: r.user_id,
                count: count(r.count)?,
                oldest: r.oldest,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(MonitorFacts {
        participants,
        overdue,
        updates: justin_core::monitor::UpdateFacts {
            last_completed: u.last_completed,
            first_version_at: u.first_version_at,
            failed_since_completed: count(u.failed)?,
            first_failed_at: u.first_failed_at,
            oldest_unfinished: u.oldest_unfinished,
            callbacks_failed: count(u.callbacks_failed)?,
            first_callback_failed_at: u.first_callback_failed_at,
        },
        window: justin_core::monitor::WindowFacts {
            drawn: count(w.drawn)?,
            fallbacks: count(w.fallbacks)?,
            algorithm: count(w.algorithm)?,
            at_clip: count(w.at_clip)?,
            uploads: count(w.uploads)?,
            refused: count(w.refused)?,
        },
    })
}

/// See `Store::record_refused_upload`.
pub(crate) fn record_refusal(conn: &mut PgConnection, r: &RefusedUpload) -> Result<(), StoreError> {
    diesel::sql_query("INSERT INTO upload_refusals (decision_type, refused_at) VALUES ($1, $2)")
        .bind::<Text, _>(&r.decision_type)
        .bind::<Timestamptz, _>(r.refused_at)
        .execute(conn)
        .map(drop)
        .map_err(from_diesel)
}

#[derive(QueryableByName)]
struct StateRow {
    #[diesel(sql_type = Text)]
    state: String,
}

#[derive(QueryableByName)]
struct AlertRow {
    #[diesel(sql_type = BigInt)]
    id: i64,
    #[diesel(sql_type = Jsonb)]
    payload: serde_json::Value,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    attempts: i32,
}

impl AlertRow {
    fn alert(self) -> Alert {
        Alert {
            id: self.id,
            payload: self.payload,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
        }
    }
}

/// See `Store::advance_monitor_state`: the row is locked (`FOR UPDATE`, or the insert's
/// unique key for the first one), so of instances moving the state at once one changes it.
pub(crate) fn advance(
    conn: &mut PgConnection,
    c: &StateChange,
) -> Result<StateAdvance, StoreError> {
    conn.transaction(|conn| {
        // The first check of a database inserts the row; a concurrent first insert waits on
        // the key and then finds it.
        let inserted = diesel::sql_query(
            "INSERT INTO monitor_state (id, state, changed_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind::<Text, _>(c.state.as_str())
        .bind::<Timestamptz, _>(c.at)
        .execute(conn)?;
        let previous = if inserted == 1 {
            None
        } else {
            let stored =
                diesel::sql_query("SELECT state FROM monitor_state WHERE id = 1 FOR UPDATE")
                    .get_result::<StateRow>(conn)?;
            let previous = Severity::parse(&stored.state);
            if previous == Some(c.state) {
                return Ok(StateAdvance {
                    previous,
                    changed: false,
                    alert: None,
                });
            }
            diesel::sql_query("UPDATE monitor_state SET state = $1, changed_at = $2 WHERE id = 1")
                .bind::<Text, _>(c.state.as_str())
                .bind::<Timestamptz, _>(c.at)
                .execute(conn)?;
            previous
        };
        let alert = match &c.alert {
            Some(payload) if previous.is_some() || c.state != Severity::Green => {
                let mut payload = payload.clone();
                payload["previous"] =
                    previous.map_or(serde_json::Value::Null, |p| p.as_str().into());
                let row = diesel::sql_query(
                    "INSERT INTO monitor_alerts (created_at, state, payload, held_until) \
                     VALUES ($1, $2, $3, $4) RETURNING id, payload, attempts",
                )
                .bind::<Timestamptz, _>(c.at)
                .bind::<Text, _>(c.state.as_str())
                .bind::<Jsonb, _>(&payload)
                .bind::<Timestamptz, _>(c.lease_until)
                .get_result::<AlertRow>(conn)?;
                Some(row.alert())
            }
            _ => None,
        };
        Ok(StateAdvance {
            previous,
            changed: true,
            alert,
        })
    })
    .map_err(from_diesel)
}

/// See `Store::claim_alert`: `SKIP LOCKED`, so concurrent claimers take different alerts.
pub(crate) fn claim(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Alert>, StoreError> {
    diesel::sql_query(
        "UPDATE monitor_alerts SET held_until = $2 WHERE id = ( \
           SELECT id FROM monitor_alerts WHERE status = 'pending' AND held_until < $1 \
           ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) \
         AND status = 'pending' AND held_until < $1 \
         RETURNING id, payload, attempts",
    )
    .bind::<Timestamptz, _>(now)
    .bind::<Timestamptz, _>(lease_until)
    .get_result::<AlertRow>(conn)
    .optional()
    .map(|row| row.map(AlertRow::alert))
    .map_err(from_diesel)
}

/// See `Store::record_alert`.
pub(crate) fn record(
    conn: &mut PgConnection,
    id: i64,
    d: &AlertDelivery,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE monitor_alerts SET status = $2, attempts = $3, last_error = $4, finished_at = $5 \
         WHERE id = $1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(if d.delivered { "delivered" } else { "failed" })
    .bind::<diesel::sql_types::Integer, _>(i32::try_from(d.attempts).unwrap_or(i32::MAX))
    .bind::<Nullable<Text>, _>(d.error.as_deref())
    .bind::<Timestamptz, _>(d.finished_at)
    .execute(conn)
    .map(drop)
    .map_err(from_diesel)
}
