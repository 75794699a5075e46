//! The watchdog's storage on SQLite: its aggregate reads (an index lookup per participant or
//! one pass over the window's rows, never the study in memory), the refusals it counts, the
//! verdict the instances share and the alerts queued when it changes. Writes run in
//! `BEGIN IMMEDIATE`, which takes the database's one write lock up front, so of instances
//! moving the shared state at once one changes it.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel::sqlite::SqliteConnection;
use justin_core::monitor::{
    ActiveParticipant, Alert, AlertDelivery, MonitorFacts, MonitorQuery, OverdueOutcomes,
    RefusedUpload, Severity, StateAdvance, StateChange, UpdateFacts, WindowFacts,
};
use justin_core::StoreError;

use crate::error::{from_diesel, other};
use crate::models::{fmt_time, parse_time};

#[derive(QueryableByName)]
struct LatestRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    since: String,
    #[diesel(sql_type = Nullable<Text>)]
    decision_type: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    latest: Option<String>,
}

#[derive(QueryableByName)]
struct OverdueRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    count: i64,
    #[diesel(sql_type = Text)]
    oldest: String,
}

#[derive(QueryableByName)]
struct UpdatesRow {
    #[diesel(sql_type = Nullable<Text>)]
    last_completed: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    first_version_at: Option<String>,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    first_failed_at: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    oldest_unfinished: Option<String>,
    #[diesel(sql_type = BigInt)]
    callbacks_failed: i64,
    #[diesel(sql_type = Nullable<Text>)]
    first_callback_failed_at: Option<String>,
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

/// Active participants with the latest decision of each asked type (`?2`, a JSON array): one
/// lookup on the decision key's index (user, type, idx) per participant and type.
const LATEST: &str = "\
SELECT u.user_id, coalesce(u.study_start, u.created_at) AS since, t.value AS decision_type, \
       (SELECT a.request_timestamp FROM actions a \
         WHERE a.user_id = u.user_id AND a.decision_type = t.value \
         ORDER BY a.decision_idx DESC LIMIT 1) AS latest \
  FROM users u LEFT JOIN json_each(?2) AS t ON 1 \
 WHERE u.withdrawn_at IS NULL AND u.erased_at IS NULL \
   AND (u.study_start IS NULL OR u.study_start <= ?1) \
   AND (u.study_end IS NULL OR u.study_end > ?1) \
 ORDER BY u.user_id, t.value";

const OVERDUE: &str = "\
SELECT a.user_id, count(*) AS count, min(a.request_timestamp) AS oldest \
  FROM actions a JOIN users u ON u.user_id = a.user_id \
 WHERE a.available AND a.request_timestamp >= ?1 AND a.request_timestamp < ?2 \
   AND u.withdrawn_at IS NULL AND u.erased_at IS NULL \
   AND NOT EXISTS (SELECT 1 FROM study_data s WHERE s.user_id = a.user_id \
                   AND s.decision_type = a.decision_type AND s.decision_idx = a.decision_idx) \
 GROUP BY a.user_id ORDER BY a.user_id";

const UPDATES: &str = "\
WITH done AS (SELECT max(finished_at) AS at FROM model_update_requests WHERE status = 'completed') \
SELECT (SELECT at FROM done) AS last_completed, \
       (SELECT created_at FROM model_parameters WHERE version = 1) AS first_version_at, \
       (SELECT count(*) FROM model_update_requests r WHERE r.status = 'failed' \
         AND r.finished_at >= ?1 AND ((SELECT at FROM done) IS NULL OR r.finished_at > (SELECT at FROM done))) AS failed, \
       (SELECT min(r.finished_at) FROM model_update_requests r WHERE r.status = 'failed' \
         AND r.finished_at >= ?1 AND ((SELECT at FROM done) IS NULL OR r.finished_at > (SELECT at FROM done))) AS first_failed_at, \
       (SELECT min(created_at) FROM model_update_requests WHERE status = 'processing') AS oldest_unfinished, \
       (SELECT count(*) FROM model_update_requests WHERE callback_status = 'failed' AND finished_at >= ?1) AS callbacks_failed, \
       (SELECT min(finished_at) FROM model_update_requests WHERE callback_status = 'failed' AND finished_at >= ?1) AS first_callback_failed_at";

const WINDOW: &str = "\
SELECT coalesce(sum(CASE WHEN policy <> 'host' THEN 1 ELSE 0 END), 0) AS drawn, \
       coalesce(sum(CASE WHEN policy = 'fallback' THEN 1 ELSE 0 END), 0) AS fallbacks, \
       coalesce(sum(CASE WHEN policy = 'algorithm' THEN 1 ELSE 0 END), 0) AS algorithm, \
       coalesce(sum(CASE WHEN policy = 'algorithm' AND (action_prob <= ?2 OR action_prob >= ?3) \
                    THEN 1 ELSE 0 END), 0) AS at_clip, \
       (SELECT count(*) FROM study_data WHERE created_at >= ?1) AS uploads, \
       (SELECT count(*) FROM upload_refusals WHERE refused_at >= ?1) AS refused \
  FROM actions WHERE available AND created_at >= ?1";

fn count(n: i64) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(other)
}

fn time(raw: &str) -> Result<DateTime<Utc>, StoreError> {
    parse_time(raw).map_err(other)
}

fn optional_time(raw: Option<&str>) -> Result<Option<DateTime<Utc>>, StoreError> {
    raw.map(time).transpose()
}

/// See `Store::monitor_facts`: one read transaction, so every count comes from one snapshot.
pub(crate) fn facts(
    conn: &mut SqliteConnection,
    q: &MonitorQuery,
) -> Result<MonitorFacts, StoreError> {
    let types = serde_json::to_string(&q.decision_types).map_err(other)?;
    let (latest, overdue, updates, window) = conn
        .transaction(|conn| {
            // Without decision types (no schedule) nothing judges the participants: none is
            // read.
            let latest = if q.decision_types.is_empty() {
                Vec::new()
            } else {
                diesel::sql_query(LATEST)
                    .bind::<Text, _>(fmt_time(q.now))
                    .bind::<Text, _>(&types)
                    .load::<LatestRow>(conn)?
            };
            let overdue = diesel::sql_query(OVERDUE)
                .bind::<Text, _>(fmt_time(q.outcome_lookback_from))
                .bind::<Text, _>(fmt_time(q.outcome_due_before))
                .load::<OverdueRow>(conn)?;
            let updates = diesel::sql_query(UPDATES)
                .bind::<Text, _>(fmt_time(q.window_from))
                .get_result::<UpdatesRow>(conn)?;
            // Without clip bounds no probability is at one (probabilities lie in [0, 1]).
            let (low, high) = q.clip.unwrap_or((-1.0, 2.0));
            let window = diesel::sql_query(WINDOW)
                .bind::<Text, _>(fmt_time(q.window_from))
                .bind::<Double, _>(low + 1e-9)
                .bind::<Double, _>(high - 1e-9)
                .get_result::<WindowRow>(conn)?;
            Ok::<_, diesel::result::Error>((latest, overdue, updates, window))
        })
        .map_err(from_diesel)?;

    let mut participants: Vec<ActiveParticipant> = Vec::new();
    for row in latest {
        if participants.last().is_none_or(|p| p.user_id != row.user_id) {
            participants.push(ActiveParticipant {
                user_id: row.user_id.clone(),
                since: time(&row.since)?,
                latest: Vec::new(),
            });
        }
        if let (Some(t), Some(at), Some(p)) =
            (row.decision_type, row.latest, participants.last_mut())
        {
            p.latest.push((t, time(&at)?));
        }
    }
    let overdue = overdue
        .into_iter()
        .map(|r| {
            Ok(OverdueOutcomes {
                user_id: r.user_id,
                count: count(r.count)?,
                oldest: time(&r.oldest)?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(MonitorFacts {
        participants,
        overdue,
        updates: UpdateFacts {
            last_completed: optional_time(updates.last_completed.as_deref())?,
            first_version_at: optional_time(updates.first_version_at.as_deref())?,
            failed_since_completed: count(updates.failed)?,
            first_failed_at: optional_time(updates.first_failed_at.as_deref())?,
            oldest_unfinished: optional_time(updates.oldest_unfinished.as_deref())?,
            callbacks_failed: count(updates.callbacks_failed)?,
            first_callback_failed_at: optional_time(updates.first_callback_failed_at.as_deref())?,
        },
        window: WindowFacts {
            drawn: count(window.drawn)?,
            fallbacks: count(window.fallbacks)?,
            algorithm: count(window.algorithm)?,
            at_clip: count(window.at_clip)?,
            uploads: count(window.uploads)?,
            refused: count(window.refused)?,
        },
    })
}

/// See `Store::record_refused_upload`.
pub(crate) fn record_refusal(
    conn: &mut SqliteConnection,
    r: &RefusedUpload,
) -> Result<(), StoreError> {
    diesel::sql_query("INSERT INTO upload_refusals (decision_type, refused_at) VALUES (?1, ?2)")
        .bind::<Text, _>(&r.decision_type)
        .bind::<Text, _>(fmt_time(r.refused_at))
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
    #[diesel(sql_type = Text)]
    payload: String,
    #[diesel(sql_type = Integer)]
    attempts: i32,
}

impl AlertRow {
    fn alert(self) -> Result<Alert, StoreError> {
        Ok(Alert {
            id: self.id,
            payload: serde_json::from_str(&self.payload).map_err(other)?,
            attempts: u32::try_from(self.attempts).unwrap_or(0),
        })
    }
}

/// See `Store::advance_monitor_state`. Runs on the writer in a savepoint of its own
/// (`Writer::write`), which makes its read and writes one unit.
pub(crate) fn advance(
    conn: &mut SqliteConnection,
    c: &StateChange,
) -> Result<StateAdvance, StoreError> {
    let row = (|conn: &mut SqliteConnection| {
        let stored = diesel::sql_query("SELECT state FROM monitor_state WHERE id = 1")
            .get_result::<StateRow>(conn)
            .optional()?;
        let previous = stored.as_ref().and_then(|s| Severity::parse(&s.state));
        if stored.is_some() && previous == Some(c.state) {
            return Ok((previous, false, None));
        }
        diesel::sql_query(
            "INSERT INTO monitor_state (id, state, changed_at) VALUES (1, ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, \
                 changed_at = excluded.changed_at",
        )
        .bind::<Text, _>(c.state.as_str())
        .bind::<Text, _>(fmt_time(c.at))
        .execute(conn)?;
        let alert = match &c.alert {
            Some(payload) if previous.is_some() || c.state != Severity::Green => {
                let mut payload = payload.clone();
                payload["previous"] =
                    previous.map_or(serde_json::Value::Null, |p| p.as_str().into());
                let row = diesel::sql_query(
                    "INSERT INTO monitor_alerts (created_at, state, payload, held_until) \
                         VALUES (?1, ?2, ?3, ?4) RETURNING id, payload, attempts",
                )
                .bind::<Text, _>(fmt_time(c.at))
                .bind::<Text, _>(c.state.as_str())
                .bind::<Text, _>(payload.to_string())
                .bind::<Text, _>(fmt_time(c.lease_until))
                .get_result::<AlertRow>(conn)?;
                Some(row)
            }
            _ => None,
        };
        Ok::<_, diesel::result::Error>((previous, true, alert))
    })(conn)
    .map_err(from_diesel)?;
    let (previous, changed, alert) = row;
    Ok(StateAdvance {
        previous,
        changed,
        alert: alert.map(AlertRow::alert).transpose()?,
    })
}

/// See `Store::claim_alert`.
pub(crate) fn claim(
    conn: &mut SqliteConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Result<Option<Alert>, StoreError> {
    diesel::sql_query(
        "UPDATE monitor_alerts SET held_until = ?2 WHERE id = ( \
           SELECT id FROM monitor_alerts WHERE status = 'pending' AND held_until < ?1 \
           ORDER BY id LIMIT 1) \
         RETURNING id, payload, attempts",
    )
    .bind::<Text, _>(fmt_time(now))
    .bind::<Text, _>(fmt_time(lease_until))
    .get_result::<AlertRow>(conn)
    .optional()
    .map_err(from_diesel)?
    .map(AlertRow::alert)
    .transpose()
}

/// See `Store::record_alert`.
pub(crate) fn record(
    conn: &mut SqliteConnection,
    id: i64,
    d: &AlertDelivery,
) -> Result<(), StoreError> {
    diesel::sql_query(
        "UPDATE monitor_alerts SET status = ?2, attempts = ?3, last_error = ?4, finished_at = ?5 \
         WHERE id = ?1",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(if d.delivered { "delivered" } else { "failed" })
    .bind::<Integer, _>(i32::try_from(d.attempts).unwrap_or(i32::MAX))
    .bind::<Nullable<Text>, _>(d.error.as_deref())
    .bind::<Text, _>(fmt_time(d.finished_at))
    .execute(conn)
    .map(drop)
    .map_err(from_diesel)
}
