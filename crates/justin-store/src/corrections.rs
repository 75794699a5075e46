//! Corrections of uploads on PostgreSQL: storing one (`record`), a decision's history
//! (`history`), the correction watermark of an update job (`watermark`) and the value in force
//! for a page of uploads (`in_force`), which the job's stream, `update_rows` and the export
//! lay over the original rows.
//!
//! A correction locks its original `study_data` row (`FOR UPDATE`) before counting the
//! corrections already stored for it, so concurrent corrections of one upload take turns and
//! get different numbers. The watermark is read like the study-data watermark
//! (`crate::jobs`): under a SHARE lock on the table, which waits for every insert in flight to
//! end, so no correction committed later has an id at or below it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use diesel::connection::SimpleConnection;
use diesel::dsl::max;
use diesel::prelude::*;
use justin_core::{
    Action, Correction, CorrectionRecorded, DecisionIdx, DecisionType, Probability, StoreError,
    StudyRecord, UserId,
};

use crate::error::{from_diesel, other};
use crate::models::{invalid, json_object, state, StudyValues};
use crate::schema::{study_data, study_data_corrections};

/// A stored correction.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = study_data_corrections, check_for_backend(diesel::pg::Pg))]
pub(crate) struct CorrectionRow {
    pub id: i64,
    pub study_data_id: i64,
    pub request_timestamp: DateTime<Utc>,
    pub sent_timestamp: String,
    pub created_at: DateTime<Utc>,
    pub context: serde_json::Value,
    pub state: serde_json::Value,
    pub outcome: serde_json::Value,
    pub reward: f64,
}

impl CorrectionRow {
    /// The correction as the core sees it, numbered `number` among its upload's.
    pub(crate) fn into_correction(self, number: u32) -> Result<Correction, StoreError> {
        let id = self.id;
        let bad = |e| invalid("study_data_corrections", id, e);
        Ok(Correction {
            number,
            requested_at: self.request_timestamp,
            sent_timestamp: self.sent_timestamp,
            received_at: self.created_at,
            context: json_object(self.context).map_err(bad)?,
            state: state(self.state).map_err(bad)?,
            outcome: json_object(self.outcome).map_err(bad)?,
            reward: self.reward,
        })
    }

    /// Lays the correction's values over `record`.
    pub(crate) fn apply(self, record: &mut StudyRecord) -> Result<(), StoreError> {
        let c = self.into_correction(0)?;
        record.context = c.context;
        record.state = c.state;
        record.outcome = c.outcome;
        record.reward = c.reward;
        Ok(())
    }
}

/// Stores `record` as a correction of its key's upload; see
/// [`justin_core::Store::record_correction`].
pub(crate) fn record(
    conn: &mut PgConnection,
    record: &StudyRecord,
) -> Result<CorrectionRecorded, StoreError> {
    let v = StudyValues::new(record)?;
    conn.transaction(|conn| {
        let original: Option<(i64, i16, f64)> = study_data::table
            .filter(study_data::user_id.eq(v.user_id))
            .filter(study_data::decision_type.eq(v.decision_type))
            .filter(study_data::decision_idx.eq(v.decision_idx))
            .select((study_data::id, study_data::action, study_data::action_prob))
            .for_update()
            .first(conn)
            .optional()?;
        let Some((original_id, action, action_prob)) = original else {
            return Ok(Err(StoreError::NothingToCorrect));
        };
        let logged_action = Action::from_i64(action.into()).map_err(|e| {
            diesel::result::Error::QueryBuilderError(Box::new(InvalidStored(e.to_string())))
        })?;
        let logged_prob = Probability::new(action_prob).map_err(|e| {
            diesel::result::Error::QueryBuilderError(Box::new(InvalidStored(e.to_string())))
        })?;
        if logged_action != record.action || !logged_prob.agrees_with(record.action_prob) {
            return Ok(Err(StoreError::UploadMismatch {
                logged_action,
                logged_prob,
            }));
        }
        let before: i64 = study_data_corrections::table
            .filter(study_data_corrections::study_data_id.eq(original_id))
            .count()
            .get_result(conn)?;
        diesel::insert_into(study_data_corrections::table)
            .values((
                study_data_corrections::study_data_id.eq(original_id),
                study_data_corrections::user_id.eq(v.user_id),
                study_data_corrections::decision_type.eq(v.decision_type),
                study_data_corrections::decision_idx.eq(v.decision_idx),
                study_data_corrections::request_timestamp.eq(v.requested_at),
                study_data_corrections::sent_timestamp.eq(v.sent_timestamp),
                study_data_corrections::created_at.eq(v.received_at),
                study_data_corrections::context.eq(&v.context),
                study_data_corrections::state.eq(&v.state),
                study_data_corrections::outcome.eq(&v.outcome),
                study_data_corrections::reward.eq(v.reward),
            ))
            .execute(conn)?;
        Ok(Ok(before + 1))
    })
    .map_err(from_diesel)?
    .and_then(|number| {
        Ok(CorrectionRecorded {
            number: u32::try_from(number).map_err(other)?,
        })
    })
}

/// A stored value that is not what the schema promises.
#[derive(Debug, thiserror::Error)]
#[error("invalid original upload: {0}")]
struct InvalidStored(String);

/// The corrections of the upload stored for a key, oldest first (none when there is no
/// upload).
pub(crate) fn of_key(
    conn: &mut PgConnection,
    user: &UserId,
    decision_type: &DecisionType,
    decision_idx: DecisionIdx,
) -> Result<Vec<Correction>, StoreError> {
    let rows: Vec<CorrectionRow> = study_data_corrections::table
        .filter(study_data_corrections::user_id.eq(user.as_str()))
        .filter(study_data_corrections::decision_type.eq(decision_type.as_str()))
        .filter(study_data_corrections::decision_idx.eq(decision_idx.get()))
        .order(study_data_corrections::id)
        .select(CorrectionRow::as_select())
        .load(conn)
        .map_err(from_diesel)?;
    rows.into_iter()
        .zip(1..)
        .map(|(row, n)| row.into_correction(n))
        .collect()
}

/// The largest correction id once every insert in flight has ended (0 for none); see the
/// module's documentation. Read in a transaction of its own before the job's snapshot.
pub(crate) fn watermark(conn: &mut PgConnection) -> QueryResult<i64> {
    conn.transaction(|conn| {
        conn.batch_execute("LOCK TABLE study_data_corrections IN SHARE MODE")?;
        let newest = study_data_corrections::table
            .select(max(study_data_corrections::id))
            .first::<Option<i64>>(conn)?;
        Ok(newest.unwrap_or(0))
    })
}

/// For each of the uploads `ids` with corrections at or below `upto`, the newest of them and
/// how many there are, read in the caller's snapshot.
pub(crate) fn in_force(
    conn: &mut PgConnection,
    ids: &[i64],
    upto: i64,
) -> QueryResult<HashMap<i64, (CorrectionRow, u32)>> {
    let mut newest: HashMap<i64, (CorrectionRow, u32)> = HashMap::new();
    if ids.is_empty() || upto <= 0 {
        return Ok(newest);
    }
    let rows: Vec<CorrectionRow> = study_data_corrections::table
        .filter(study_data_corrections::study_data_id.eq_any(ids))
        .filter(study_data_corrections::id.le(upto))
        .order(study_data_corrections::id)
        .select(CorrectionRow::as_select())
        .load(conn)?;
    for row in rows {
        let entry = newest.entry(row.study_data_id);
        match entry {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let count = e.get().1 + 1;
                e.insert((row, count));
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert((row, 1));
            }
        }
    }
    Ok(newest)
}
