//! Corrections of uploads on SQLite: storing one (`record`), a decision's history (`of_key`),
//! and the value in force for a page of uploads (`in_force`), which the job's stream,
//! `update_rows` and the export lay over the original rows.
//!
//! A correction is stored in one `BEGIN IMMEDIATE` transaction, so corrections take turns with
//! every other write and their numbers follow their ids. An update job's correction watermark
//! is the largest correction id in its snapshot, read with its study-data watermark
//! (`crate::jobs`): as for uploads, every correction committed later has a larger id.

use std::collections::HashMap;

use diesel::dsl::max;
use diesel::prelude::*;
use justin_core::{
    Action, Correction, CorrectionRecorded, DecisionIdx, DecisionType, Probability, StoreError,
    StudyRecord, UserId,
};

use crate::error::{from_diesel, other};
use crate::models::{invalid, json_object, parse_time, state, StudyValues};
use crate::schema::{study_data, study_data_corrections};

/// A stored correction.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = study_data_corrections, check_for_backend(diesel::sqlite::Sqlite))]
pub(crate) struct CorrectionRow {
    pub id: i64,
    pub study_data_id: i64,
    pub user_id: String,
    pub decision_type: String,
    pub decision_idx: i64,
    pub request_timestamp: String,
    pub sent_timestamp: String,
    pub created_at: String,
    pub context: String,
    pub state: String,
    pub outcome: String,
    pub reward: f64,
}

impl CorrectionRow {
    /// The correction as the core sees it, numbered `number` among its upload's.
    pub(crate) fn into_correction(self, number: u32) -> Result<Correction, StoreError> {
        let id = self.id;
        let bad = |e| invalid("study_data_corrections", id, e);
        Ok(Correction {
            number,
            requested_at: parse_time(&self.request_timestamp).map_err(bad)?,
            sent_timestamp: self.sent_timestamp,
            received_at: parse_time(&self.created_at).map_err(bad)?,
            context: json_object(&self.context).map_err(bad)?,
            state: state(&self.state).map_err(bad)?,
            outcome: json_object(&self.outcome).map_err(bad)?,
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

/// What a correction's transaction found.
enum Found {
    Stored(i64),
    Refused(StoreError),
}

/// Stores `record` as a correction of its key's upload; see
/// [`justin_core::Store::record_correction`]. Runs on the writer in a savepoint of its own
/// (`Writer::write`), which makes its reads and insert one unit.
pub(crate) fn record(
    conn: &mut SqliteConnection,
    record: &StudyRecord,
) -> Result<CorrectionRecorded, StoreError> {
    let v = StudyValues::new(record)?;
    let found = (|conn: &mut SqliteConnection| {
        let original: Option<(i64, i16, f64)> = study_data::table
            .filter(study_data::user_id.eq(v.user_id))
            .filter(study_data::decision_type.eq(v.decision_type))
            .filter(study_data::decision_idx.eq(v.decision_idx))
            .select((study_data::id, study_data::action, study_data::action_prob))
            .first(conn)
            .optional()?;
        let Some((original_id, action, action_prob)) = original else {
            return Ok(Found::Refused(StoreError::NothingToCorrect));
        };
        let bad = |e| Found::Refused(invalid("study_data", original_id, e));
        let logged_action = match Action::from_i64(action.into()) {
            Ok(a) => a,
            Err(e) => return Ok(bad(e)),
        };
        let logged_prob = match Probability::new(action_prob) {
            Ok(p) => p,
            Err(e) => return Ok(bad(e)),
        };
        if logged_action != record.action || !logged_prob.agrees_with(record.action_prob) {
            return Ok(Found::Refused(StoreError::UploadMismatch {
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
                study_data_corrections::request_timestamp.eq(&v.requested_at),
                study_data_corrections::sent_timestamp.eq(v.sent_timestamp),
                study_data_corrections::created_at.eq(&v.received_at),
                study_data_corrections::context.eq(&v.context),
                study_data_corrections::state.eq(&v.state),
                study_data_corrections::outcome.eq(&v.outcome),
                study_data_corrections::reward.eq(v.reward),
            ))
            .execute(conn)?;
        Ok::<_, diesel::result::Error>(Found::Stored(before + 1))
    })(conn)
    .map_err(from_diesel)?;
    match found {
        Found::Stored(number) => Ok(CorrectionRecorded {
            number: u32::try_from(number).map_err(other)?,
        }),
        Found::Refused(e) => Err(e),
    }
}

/// The corrections stored for a key, oldest first.
pub(crate) fn of_key(
    conn: &mut SqliteConnection,
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

/// The largest correction id in the caller's snapshot (0 for none).
pub(crate) fn watermark(conn: &mut SqliteConnection) -> QueryResult<i64> {
    let newest = study_data_corrections::table
        .select(max(study_data_corrections::id))
        .first::<Option<i64>>(conn)?;
    Ok(newest.unwrap_or(0))
}

/// For each of the uploads `ids` with corrections at or below `upto`, the newest of them and
/// how many there are.
pub(crate) fn in_force(
    conn: &mut SqliteConnection,
    ids: &[i64],
    upto: i64,
) -> QueryResult<HashMap<i64, (CorrectionRow, u32)>> {
    let mut newest: HashMap<i64, (CorrectionRow, u32)> = HashMap::new();
    if ids.is_empty() || upto <= 0 {
        return Ok(newest);
    }
    // SQLite limits the variables of one statement; a page's ids are bound in chunks.
    for chunk in ids.chunks(500) {
        let rows: Vec<CorrectionRow> = study_data_corrections::table
            .filter(study_data_corrections::study_data_id.eq_any(chunk))
            .filter(study_data_corrections::id.le(upto))
            .order(study_data_corrections::id)
            .select(CorrectionRow::as_select())
            .load(conn)?;
        for row in rows {
            let count = newest.get(&row.study_data_id).map_or(1, |(_, n)| n + 1);
            newest.insert(row.study_data_id, (row, count));
        }
    }
    Ok(newest)
}
