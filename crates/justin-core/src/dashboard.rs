//! The study dashboard's figures, and the per-day rollup the databases keep them in.
//!
//! A page of the dashboard must answer quickly on a study of millions of decisions, so the
//! stores do not group the decisions for every page: they keep a rollup, one row per (day,
//! decision type, parameter version) of decisions and per (day, decision type) of uploads, and
//! one per participant with their last decision and upload. A page first brings the rollup up
//! to date ([`refresh_step`], repeated) with what was stored since the last refresh, then
//! reads it. The rules
//! of that refresh are here, written once over [`RollupTx`], which each database adapter
//! implements inside one transaction; the SQL stays the adapter's.
//!
//! How the refresh finds what is new without a trigger or a second statement on `/action`:
//!
//! - It reads the rows whose id is above the largest id it has seen (its watermark), in id
//!   order, one chunk per transaction, so that a first build over millions of rows never
//!   holds a lock for long.
//! - Ids are not committed in order: a row may become visible after a row with a larger id.
//!   Every id below the watermark that was missing when the refresh passed it is remembered as
//!   a gap (with when it was first seen missing), and each refresh reads the gaps again, for
//!   [`LATE_COMMIT_GRACE_SECS`]: a decision or upload is one short statement, so an id that
//!   has not appeared by then never will (a refused insert or a rolled-back transaction used
//!   it up).
//! - A group that a new row falls into is recomputed whole, from the rows of its id range and
//!   its day (exact quartiles, counts and sums), so reading a row twice changes nothing; a
//!   group first seen in this refresh is computed from the rows the refresh read, which are
//!   all of its rows.
//! - Days are the decision's `request_timestamp` (the upload's for uploads) in the schedule's
//!   time zone; a late upload for an old day lands in that day.
//! - An upload's reward is the value in force: its newest correction's, else its own. A
//!   correction is read like a new row (by its own id watermark and gaps) and makes the group
//!   of the upload it corrects be recomputed whole, so the day's reward sum takes it in
//!   exactly once. A correction of an upload the refresh has not read yet changes nothing:
//!   the upload, when read, comes with the value in force.
//! - A reset or restore empties the rollup with the study's tables; an erasure (it deletes
//!   uploads and renames decisions), another time zone or other clip bounds make the next
//!   refresh start again from nothing.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::ports::StoreError;

/// How long an id missing below the watermark is looked for again, in seconds.
pub const LATE_COMMIT_GRACE_SECS: i64 = 600;

/// Rows read per chunk by a refresh.
pub const REFRESH_CHUNK: i64 = 50_000;

/// At most this many gaps are remembered per table (the newest are kept).
pub const MAX_GAPS: usize = 2_000;

/// Two probabilities this close count as equal when a decision is compared with a clip bound.
pub const BOUND_TOLERANCE: f64 = 1e-9;

/// What the figures depend on besides the stored rows.
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardSettings {
    /// The zone whose calendar days the figures are per (the schedule's, UTC without one).
    pub zone: Tz,
    /// The algorithm's clip bounds on P(action = 1), when it has them.
    pub clip_bounds: Option<(f64, f64)>,
}

impl DashboardSettings {
    /// The settings as the rollup's state stores them: a refresh under other settings starts
    /// again from nothing.
    pub fn fingerprint(&self) -> String {
        match self.clip_bounds {
            Some((lo, hi)) => format!("{} {lo:?} {hi:?}", self.zone.name()),
            None => format!("{} -", self.zone.name()),
        }
    }

    /// The calendar day of `at` in the zone.
    pub fn day_of(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.zone).date_naive()
    }

    /// The instants `[from, to)` that make up `day` in the zone.
    pub fn day_bounds(&self, day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = |d: NaiveDate| {
            let midnight = d.and_hms_opt(0, 0, 0).unwrap_or_default();
            // A zone may skip midnight (a clock change at 00:00): the day then starts at the
            // first instant that exists, which is at most a few hours later.
            (0..24)
                .find_map(|h| {
                    self.zone
                        .from_local_datetime(&(midnight + chrono::Duration::hours(h)))
                        .earliest()
                })
                .map_or_else(|| midnight.and_utc(), |t| t.with_timezone(&Utc))
        };
        (start(day), start(day.succ_opt().unwrap_or(day)))
    }
}

/// The decisions of one (day, decision type, parameter version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecisionDay {
    /// The calendar day.
    pub day: NaiveDate,
    /// The decision type.
    pub decision_type: String,
    /// The parameter version the decisions were drawn under.
    pub parameter_version: i64,
    /// Decisions stored.
    pub decisions: u64,
    /// Of those, available ones (randomized).
    pub available: u64,
    /// Available decisions at the lower clip bound.
    pub at_lower: u64,
    /// Available decisions at the upper clip bound.
    pub at_upper: u64,
    /// The quartiles (25 %, median, 75 %) of P(action = 1) over the available decisions,
    /// interpolated linearly between order statistics; `None` without any.
    pub quartiles: Option<[f64; 3]>,
}

/// The uploads of one (day, decision type).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadDay {
    /// The calendar day (of the upload's decision time).
    pub day: NaiveDate,
    /// The decision type.
    pub decision_type: String,
    /// Uploads stored.
    pub uploads: u64,
    /// The sum of their rewards.
    pub reward_sum: f64,
}

/// The per-day figures of the whole study.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DashboardDays {
    /// Decisions, by day, then decision type, then parameter version.
    pub decisions: Vec<DecisionDay>,
    /// Uploads, by day, then decision type.
    pub uploads: Vec<UploadDay>,
}

/// A registered participant as the dashboard lists them.
#[derive(Debug, Clone, PartialEq)]
pub struct ParticipantActivity {
    /// Their id (the pseudonym `erased-…` once erased).
    pub user_id: String,
    /// When they were registered.
    pub created_at: DateTime<Utc>,
    /// The start of their time in the study, if bounded.
    pub study_start: Option<DateTime<Utc>>,
    /// The end of their time in the study, if bounded.
    pub study_end: Option<DateTime<Utc>>,
    /// When they withdrew.
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// When they were erased.
    pub erased_at: Option<DateTime<Utc>>,
    /// The decision time (`request_timestamp`) of their latest decision.
    pub last_decision: Option<DateTime<Utc>>,
    /// When their latest upload was received.
    pub last_upload: Option<DateTime<Utc>>,
}

/// Where a participant stands, as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityStatus {
    /// Their time in the study has not started.
    NotStarted,
    /// In the study.
    Active,
    /// Their time in the study has ended.
    Ended,
    /// Withdrawn.
    Withdrawn,
    /// Erased (their id is gone).
    Erased,
}

impl ActivityStatus {
    /// The status as shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotStarted => "not started",
            Self::Active => "active",
            Self::Ended => "ended",
            Self::Withdrawn => "withdrawn",
            Self::Erased => "erased",
        }
    }
}

impl ParticipantActivity {
    /// Where the participant stands at `at`.
    pub fn status_at(&self, at: DateTime<Utc>) -> ActivityStatus {
        if self.erased_at.is_some() {
            ActivityStatus::Erased
        } else if self.withdrawn_at.is_some() {
            ActivityStatus::Withdrawn
        } else if self.study_start.is_some_and(|s| at < s) {
            ActivityStatus::NotStarted
        } else if self.study_end.is_some_and(|e| e <= at) {
            ActivityStatus::Ended
        } else {
            ActivityStatus::Active
        }
    }
}

/// The quartiles of `values` (sorted in place), linearly interpolated between order
/// statistics (as PostgreSQL's `percentile_cont` and NumPy's default); `None` when empty.
pub fn quartiles(values: &mut [f64]) -> Option<[f64; 3]> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(clippy::cast_precision_loss)]
        let pos = q * (values.len() - 1) as f64;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let lo = pos.floor() as usize;
        let hi = (lo + 1).min(values.len() - 1);
        #[allow(clippy::cast_precision_loss)]
        let frac = pos - lo as f64;
        values[lo] + (values[hi] - values[lo]) * frac
    };
    Some([at(0.25), at(0.5), at(0.75)])
}

/// One decision as a refresh reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionFact {
    /// Its row id.
    pub id: i64,
    /// The participant.
    pub user_id: String,
    /// The decision type.
    pub decision_type: String,
    /// The parameter version.
    pub parameter_version: i64,
    /// The decision time.
    pub requested_at: DateTime<Utc>,
    /// P(action = 1).
    pub probability: f64,
    /// Whether it was randomized.
    pub available: bool,
}

/// One upload as a refresh reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadFact {
    /// Its row id.
    pub id: i64,
    /// The participant.
    pub user_id: String,
    /// The decision type.
    pub decision_type: String,
    /// The decision time the upload names.
    pub requested_at: DateTime<Utc>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// Its reward: the value in force (its newest correction's, else its own).
    pub reward: f64,
}

/// One correction as a refresh reads it: its id and the upload it corrects.
#[derive(Debug, Clone, PartialEq)]
pub struct CorrectionFact {
    /// The correction's row id.
    pub id: i64,
    /// The upload it corrects, with the value in force.
    pub upload: UploadFact,
}

/// A range of ids that was missing when a refresh passed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// The first missing id.
    pub lo: i64,
    /// The last missing id.
    pub hi: i64,
    /// When it was first seen missing (seconds since the epoch).
    pub seen: i64,
}

/// Where the rollup's refresh stands: one row, read locked at the start of a refresh.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RollupState {
    /// [`DashboardSettings::fingerprint`] of the settings the rollup was built under.
    pub settings: String,
    /// Erasures stored when the rollup was last brought up to date.
    pub erasures: i64,
    /// The largest decision id read.
    pub actions_after: i64,
    /// The largest upload id read.
    pub study_data_after: i64,
    /// Decision ids missing below `actions_after`.
    pub action_gaps: Vec<Gap>,
    /// Upload ids missing below `study_data_after`.
    pub upload_gaps: Vec<Gap>,
    /// The largest correction id read (0 in a state stored before corrections existed).
    #[serde(default)]
    pub corrections_after: i64,
    /// Correction ids missing below `corrections_after`.
    #[serde(default)]
    pub correction_gaps: Vec<Gap>,
}

/// A decision group's key and the range of ids its rows have.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDecisionDay {
    /// The figures.
    pub figures: DecisionDay,
    /// The smallest id of its rows.
    pub min_id: i64,
    /// The largest id of its rows.
    pub max_id: i64,
}

/// An upload group and the range of ids its rows have.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUploadDay {
    /// The figures.
    pub figures: UploadDay,
    /// The smallest id of its rows.
    pub min_id: i64,
    /// The largest id of its rows.
    pub max_id: i64,
}

/// What a database adapter gives [`refresh_step`], inside one transaction that no other refresh
/// runs at the same time (the state row is locked by [`RollupTx::state`]).
pub trait RollupTx {
    /// The state, locked until the transaction ends; `None` before the first refresh.
    ///
    /// # Errors
    /// On storage failure.
    fn state(&mut self) -> Result<Option<RollupState>, StoreError>;
    /// Erasures stored.
    ///
    /// # Errors
    /// On storage failure.
    fn erasures(&mut self) -> Result<i64, StoreError>;
    /// Empties the rollup (not its state).
    ///
    /// # Errors
    /// On storage failure.
    fn clear(&mut self) -> Result<(), StoreError>;
    /// Decisions with an id above `after`, in id order, at most `limit`.
    ///
    /// # Errors
    /// On storage failure.
    fn decisions_after(&mut self, after: i64, limit: i64) -> Result<Vec<DecisionFact>, StoreError>;
    /// Decisions with an id in `lo..=hi`.
    ///
    /// # Errors
    /// On storage failure.
    fn decisions_between(&mut self, lo: i64, hi: i64) -> Result<Vec<DecisionFact>, StoreError>;
    /// Uploads with an id above `after`, in id order, at most `limit`.
    ///
    /// # Errors
    /// On storage failure.
    fn uploads_after(&mut self, after: i64, limit: i64) -> Result<Vec<UploadFact>, StoreError>;
    /// Uploads with an id in `lo..=hi`.
    ///
    /// # Errors
    /// On storage failure.
    fn uploads_between(&mut self, lo: i64, hi: i64) -> Result<Vec<UploadFact>, StoreError>;
    /// Corrections with an id above `after`, in id order, at most `limit`, each with the
    /// upload it corrects.
    ///
    /// # Errors
    /// On storage failure.
    fn corrections_after(
        &mut self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<CorrectionFact>, StoreError>;
    /// Corrections with an id in `lo..=hi`, each with the upload it corrects.
    ///
    /// # Errors
    /// On storage failure.
    fn corrections_between(&mut self, lo: i64, hi: i64) -> Result<Vec<CorrectionFact>, StoreError>;
    /// Every stored decision group.
    ///
    /// # Errors
    /// On storage failure.
    fn decision_days(&mut self) -> Result<Vec<StoredDecisionDay>, StoreError>;
    /// Every stored upload group.
    ///
    /// # Errors
    /// On storage failure.
    fn upload_days(&mut self) -> Result<Vec<StoredUploadDay>, StoreError>;
    /// P(action = 1) and availability of the decisions of a type and version with an id in
    /// `lo..=hi` and a decision time in `[from, to)`.
    ///
    /// # Errors
    /// On storage failure.
    fn group_decisions(
        &mut self,
        decision_type: &str,
        parameter_version: i64,
        ids: (i64, i64),
        times: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<Vec<(f64, bool)>, StoreError>;
    /// The count and reward sum (of the values in force) of the uploads of a type with an id in
    /// `lo..=hi` and a decision time in `[from, to)`.
    ///
    /// # Errors
    /// On storage failure.
    fn group_uploads(
        &mut self,
        decision_type: &str,
        ids: (i64, i64),
        times: (DateTime<Utc>, DateTime<Utc>),
    ) -> Result<(u64, f64), StoreError>;
    /// Stores a decision group (inserting or replacing).
    ///
    /// # Errors
    /// On storage failure.
    fn put_decision_day(&mut self, day: &StoredDecisionDay) -> Result<(), StoreError>;
    /// Stores an upload group (inserting or replacing).
    ///
    /// # Errors
    /// On storage failure.
    fn put_upload_day(&mut self, day: &StoredUploadDay) -> Result<(), StoreError>;
    /// Raises a participant's last decision and last upload to at least these.
    ///
    /// # Errors
    /// On storage failure.
    fn raise_participant(
        &mut self,
        user_id: &str,
        last_decision: Option<DateTime<Utc>>,
        last_upload: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError>;
    /// Stores the state.
    ///
    /// # Errors
    /// On storage failure.
    fn put_state(&mut self, state: &RollupState) -> Result<(), StoreError>;
}

type DecisionKey = (NaiveDate, String, i64);
type UploadKey = (NaiveDate, String);
/// A touched decision group: the id range of the rows read, and their (probability,
/// availability).
type DecisionsRead = (i64, i64, Vec<(f64, bool)>);
/// A touched upload group: the id range of the rows read, their count and reward sum.
type UploadsRead = (i64, i64, (u64, f64));
/// A participant's latest decision time and upload arrival among the rows read.
type Latest = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// What one refresh has read and not yet written.
#[derive(Default)]
struct Pending {
    /// Groups touched: the id range of the rows read, and what those rows hold. For a group
    /// not stored yet these are all of its visible rows (any earlier row would have been read
    /// by an earlier step, which would have stored the group), so it needs no second read.
    decisions: HashMap<DecisionKey, DecisionsRead>,
    uploads: HashMap<UploadKey, UploadsRead>,
    /// Upload groups a correction touched: recomputed from their rows even when new, since
    /// the correction may have been committed after their rows were read.
    recompute: std::collections::HashSet<UploadKey>,
    participants: HashMap<String, Latest>,
}

fn later(a: Option<DateTime<Utc>>, b: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Some(a.map_or(b, |a| a.max(b)))
}

impl Pending {
    fn decision(&mut self, settings: &DashboardSettings, d: DecisionFact) {
        let key = (
            settings.day_of(d.requested_at),
            d.decision_type,
            d.parameter_version,
        );
        let entry = self
            .decisions
            .entry(key)
            .or_insert_with(|| (d.id, d.id, Vec::new()));
        entry.0 = entry.0.min(d.id);
        entry.1 = entry.1.max(d.id);
        entry.2.push((d.probability, d.available));
        let p = self.participants.entry(d.user_id).or_default();
        p.0 = later(p.0, d.requested_at);
    }

    fn upload(&mut self, settings: &DashboardSettings, u: UploadFact) {
        let key = (settings.day_of(u.requested_at), u.decision_type);
        let entry = self
            .uploads
            .entry(key)
            .or_insert_with(|| (u.id, u.id, (0, 0.0)));
        entry.0 = entry.0.min(u.id);
        entry.1 = entry.1.max(u.id);
        entry.2 .0 += 1;
        entry.2 .1 += u.reward;
        let p = self.participants.entry(u.user_id).or_default();
        p.1 = later(p.1, u.received_at);
    }

    /// A correction of upload `u`, read before: its group is recomputed from its rows, so it
    /// is touched without adding to what was read.
    fn corrected(&mut self, settings: &DashboardSettings, u: &UploadFact) {
        let key = (settings.day_of(u.requested_at), u.decision_type.clone());
        let entry = self
            .uploads
            .entry(key.clone())
            .or_insert_with(|| (u.id, u.id, (0, 0.0)));
        entry.0 = entry.0.min(u.id);
        entry.1 = entry.1.max(u.id);
        self.recompute.insert(key);
    }
}

/// The ids missing from `ids` (sorted) between `after` (exclusive) and their last, as gaps
/// first seen `now`.
fn missing(after: i64, ids: &[i64], now: i64) -> Vec<Gap> {
    let mut gaps = Vec::new();
    let mut previous = after;
    for &id in ids {
        if id > previous + 1 {
            gaps.push(Gap {
                lo: previous + 1,
                hi: id - 1,
                seen: now,
            });
        }
        previous = previous.max(id);
    }
    gaps
}

/// Keeps the gaps still within the grace period, the newest [`MAX_GAPS`].
fn keep(mut gaps: Vec<Gap>, now: i64) -> Vec<Gap> {
    gaps.retain(|g| now - g.seen < LATE_COMMIT_GRACE_SECS);
    if gaps.len() > MAX_GAPS {
        gaps.drain(..gaps.len() - MAX_GAPS);
    }
    gaps
}

/// Brings the rollup up to date with the next rows committed since the last refresh (see the
/// module documentation): at most [`REFRESH_CHUNK`] decisions and as many uploads, through
/// `tx`, which the adapter then commits. Returns whether more rows may be waiting: the adapter
/// calls it again, in a new transaction, until it answers `false`. Each step is whole, so a
/// first build over millions of rows holds no lock for long and keeps what it has done if it
/// stops half-way.
///
/// # Errors
/// On storage failure; the adapter then rolls back and the rollup stays as the last step
/// left it.
pub fn refresh_step(
    tx: &mut dyn RollupTx,
    settings: &DashboardSettings,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let now_secs = now.timestamp();
    let erasures = tx.erasures()?;
    let fingerprint = settings.fingerprint();
    let stored = tx.state()?;
    let mut state = match stored.clone() {
        Some(s) if s.settings == fingerprint && s.erasures == erasures => s,
        _ => {
            tx.clear()?;
            RollupState {
                settings: fingerprint,
                erasures,
                ..RollupState::default()
            }
        }
    };
    let mut pending = Pending::default();

    // Late rows in the gaps: their groups exist or are new, like any other.
    for gap in &state.action_gaps {
        for d in tx.decisions_between(gap.lo, gap.hi)? {
            pending.decision(settings, d);
        }
    }
    for gap in &state.upload_gaps {
        for u in tx.uploads_between(gap.lo, gap.hi)? {
            pending.upload(settings, u);
        }
    }

    let chunk = tx.decisions_after(state.actions_after, REFRESH_CHUNK)?;
    let mut more = chunk.len() as u64 >= REFRESH_CHUNK.unsigned_abs();
    if let Some(last) = chunk.last().map(|d| d.id) {
        let ids: Vec<i64> = chunk.iter().map(|d| d.id).collect();
        state
            .action_gaps
            .extend(missing(state.actions_after, &ids, now_secs));
        state.actions_after = last;
        for d in chunk {
            pending.decision(settings, d);
        }
    }
    state.action_gaps = keep(std::mem::take(&mut state.action_gaps), now_secs);

    let chunk = tx.uploads_after(state.study_data_after, REFRESH_CHUNK)?;
    more |= chunk.len() as u64 >= REFRESH_CHUNK.unsigned_abs();
    if let Some(last) = chunk.last().map(|u| u.id) {
        let ids: Vec<i64> = chunk.iter().map(|u| u.id).collect();
        state
            .upload_gaps
            .extend(missing(state.study_data_after, &ids, now_secs));
        state.study_data_after = last;
        for u in chunk {
            pending.upload(settings, u);
        }
    }
    state.upload_gaps = keep(std::mem::take(&mut state.upload_gaps), now_secs);

    // Corrections of uploads read before (an upload not read yet comes with its value in
    // force when it is). Those in a gap are read before any of the rows read now.
    let mut corrections = Vec::new();
    for gap in &state.correction_gaps {
        corrections.extend(tx.corrections_between(gap.lo, gap.hi)?);
    }
    let chunk = tx.corrections_after(state.corrections_after, REFRESH_CHUNK)?;
    more |= chunk.len() as u64 >= REFRESH_CHUNK.unsigned_abs();
    if let Some(last) = chunk.last().map(|c| c.id) {
        let ids: Vec<i64> = chunk.iter().map(|c| c.id).collect();
        state
            .correction_gaps
            .extend(missing(state.corrections_after, &ids, now_secs));
        state.corrections_after = last;
        corrections.extend(chunk);
    }
    state.correction_gaps = keep(std::mem::take(&mut state.correction_gaps), now_secs);
    let read = |id: i64| {
        id <= state.study_data_after
            && !state
                .upload_gaps
                .iter()
                .any(|g| (g.lo..=g.hi).contains(&id))
    };
    for c in corrections {
        if read(c.upload.id) {
            pending.corrected(settings, &c.upload);
        }
    }

    write_decisions(tx, settings, pending.decisions)?;
    write_uploads(tx, settings, pending.uploads, &pending.recompute)?;
    let mut participants: Vec<_> = pending.participants.into_iter().collect();
    participants.sort_by(|a, b| a.0.cmp(&b.0));
    for (user, (decision, upload)) in participants {
        tx.raise_participant(&user, decision, upload)?;
    }
    // A refresh that found nothing new writes nothing: a page load on a quiet study stays a
    // read.
    if stored.as_ref() != Some(&state) {
        tx.put_state(&state)?;
    }
    Ok(more)
}

fn write_decisions(
    tx: &mut dyn RollupTx,
    settings: &DashboardSettings,
    touched: HashMap<DecisionKey, DecisionsRead>,
) -> Result<(), StoreError> {
    if touched.is_empty() {
        return Ok(());
    }
    let stored: HashMap<DecisionKey, (i64, i64)> = tx
        .decision_days()?
        .into_iter()
        .map(|s| {
            let f = s.figures;
            (
                (f.day, f.decision_type, f.parameter_version),
                (s.min_id, s.max_id),
            )
        })
        .collect();
    let touched: BTreeMap<_, _> = touched.into_iter().collect();
    for (key, (lo, hi, read)) in touched {
        let (min_id, max_id, values) = match stored.get(&key) {
            None => (lo, hi, read),
            Some(&(a, b)) => {
                let (min_id, max_id) = (a.min(lo), b.max(hi));
                let values = tx.group_decisions(
                    &key.1,
                    key.2,
                    (min_id, max_id),
                    settings.day_bounds(key.0),
                )?;
                (min_id, max_id, values)
            }
        };
        tx.put_decision_day(&StoredDecisionDay {
            figures: figures(settings, key, &values),
            min_id,
            max_id,
        })?;
    }
    Ok(())
}

/// The figures of a decision group from its decisions' probabilities and availability.
fn figures(settings: &DashboardSettings, key: DecisionKey, values: &[(f64, bool)]) -> DecisionDay {
    let mut available: Vec<f64> = values.iter().filter(|v| v.1).map(|v| v.0).collect();
    let (at_lower, at_upper) = settings.clip_bounds.map_or((0, 0), |(lo, hi)| {
        let count = |bound: f64| {
            available
                .iter()
                .filter(|p| (**p - bound).abs() <= BOUND_TOLERANCE)
                .count() as u64
        };
        (count(lo), count(hi))
    });
    DecisionDay {
        day: key.0,
        decision_type: key.1,
        parameter_version: key.2,
        decisions: values.len() as u64,
        available: available.len() as u64,
        at_lower,
        at_upper,
        quartiles: quartiles(&mut available),
    }
}

fn write_uploads(
    tx: &mut dyn RollupTx,
    settings: &DashboardSettings,
    touched: HashMap<UploadKey, UploadsRead>,
    recompute: &std::collections::HashSet<UploadKey>,
) -> Result<(), StoreError> {
    if touched.is_empty() {
        return Ok(());
    }
    let stored: HashMap<UploadKey, (i64, i64)> = tx
        .upload_days()?
        .into_iter()
        .map(|s| {
            (
                (s.figures.day, s.figures.decision_type),
                (s.min_id, s.max_id),
            )
        })
        .collect();
    let touched: BTreeMap<_, _> = touched.into_iter().collect();
    for (key, (lo, hi, read)) in touched {
        let (min_id, max_id, (uploads, reward_sum)) = match stored.get(&key) {
            None if !recompute.contains(&key) => (lo, hi, read),
            None => {
                let sums = tx.group_uploads(&key.1, (lo, hi), settings.day_bounds(key.0))?;
                (lo, hi, sums)
            }
            Some(&(a, b)) => {
                let (min_id, max_id) = (a.min(lo), b.max(hi));
                let sums =
                    tx.group_uploads(&key.1, (min_id, max_id), settings.day_bounds(key.0))?;
                (min_id, max_id, sums)
            }
        };
        tx.put_upload_day(&StoredUploadDay {
            figures: UploadDay {
                day: key.0,
                decision_type: key.1,
                uploads,
                reward_sum,
            },
            min_id,
            max_id,
        })?;
    }
    Ok(())
}

/// The per-day figures computed directly from every decision and upload, for a store that
/// keeps no rollup (the in-memory one) and for tests to compare a rollup with.
pub fn days_of(
    settings: &DashboardSettings,
    decisions: impl IntoIterator<Item = DecisionFact>,
    uploads: impl IntoIterator<Item = UploadFact>,
) -> DashboardDays {
    let mut groups: BTreeMap<DecisionKey, Vec<(f64, bool)>> = BTreeMap::new();
    for d in decisions {
        groups
            .entry((
                settings.day_of(d.requested_at),
                d.decision_type,
                d.parameter_version,
            ))
            .or_default()
            .push((d.probability, d.available));
    }
    let mut upload_groups: BTreeMap<UploadKey, (u64, f64)> = BTreeMap::new();
    for u in uploads {
        let e = upload_groups
            .entry((settings.day_of(u.requested_at), u.decision_type))
            .or_default();
        e.0 += 1;
        e.1 += u.reward;
    }
    DashboardDays {
        decisions: groups
            .into_iter()
            .map(|(key, values)| figures(settings, key, &values))
            .collect(),
        uploads: upload_groups
            .into_iter()
            .map(|((day, decision_type), (uploads, reward_sum))| UploadDay {
                day,
                decision_type,
                uploads,
                reward_sum,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_between_order_statistics() {
        assert_eq!(quartiles(&mut []), None);
        assert_eq!(quartiles(&mut [0.3]), Some([0.3, 0.3, 0.3]));
        assert_eq!(
            quartiles(&mut [4.0, 1.0, 3.0, 2.0, 5.0]),
            Some([2.0, 3.0, 4.0])
        );
        assert_eq!(quartiles(&mut [1.0, 2.0]), Some([1.25, 1.5, 1.75]));
    }

    #[test]
    fn missing_ids_become_gaps() {
        assert_eq!(missing(0, &[1, 2, 3], 7), vec![]);
        assert_eq!(
            missing(2, &[5, 6, 9], 7),
            vec![
                Gap {
                    lo: 3,
                    hi: 4,
                    seen: 7
                },
                Gap {
                    lo: 7,
                    hi: 8,
                    seen: 7
                }
            ]
        );
    }

    #[test]
    fn gaps_are_dropped_after_the_grace_period() {
        let g = |seen| Gap { lo: 1, hi: 1, seen };
        assert_eq!(
            keep(vec![g(0), g(100)], LATE_COMMIT_GRACE_SECS + 50),
            vec![g(100)]
        );
    }

    /// A database in memory whose rows become visible when a test commits them, in any
    /// order of ids, with the rollup's tables beside them.
    #[derive(Default)]
    struct Db {
        decisions: Vec<DecisionFact>,
        uploads: Vec<UploadFact>,
        /// Corrections: their id, the upload's id and the corrected reward.
        corrections: Vec<(i64, i64, f64)>,
        state: Option<RollupState>,
        decision_days: BTreeMap<DecisionKey, StoredDecisionDay>,
        upload_days: BTreeMap<UploadKey, StoredUploadDay>,
        participants: BTreeMap<String, Latest>,
        /// How many times the state was written.
        state_writes: u32,
    }

    impl RollupTx for Db {
        fn state(&mut self) -> Result<Option<RollupState>, StoreError> {
            Ok(self.state.clone())
        }
        fn erasures(&mut self) -> Result<i64, StoreError> {
            Ok(0)
        }
        fn clear(&mut self) -> Result<(), StoreError> {
            self.decision_days.clear();
            self.upload_days.clear();
            self.participants.clear();
            Ok(())
        }
        fn decisions_after(
            &mut self,
            after: i64,
            limit: i64,
        ) -> Result<Vec<DecisionFact>, StoreError> {
            let mut rows: Vec<_> = self
                .decisions
                .iter()
                .filter(|d| d.id > after)
                .cloned()
                .collect();
            rows.sort_by_key(|d| d.id);
            rows.truncate(usize::try_from(limit).unwrap());
            Ok(rows)
        }
        fn decisions_between(&mut self, lo: i64, hi: i64) -> Result<Vec<DecisionFact>, StoreError> {
            Ok(self
                .decisions
                .iter()
                .filter(|d| (lo..=hi).contains(&d.id))
                .cloned()
                .collect())
        }
        fn uploads_after(&mut self, after: i64, limit: i64) -> Result<Vec<UploadFact>, StoreError> {
            let mut rows: Vec<_> = self
                .in_force()
                .into_iter()
                .filter(|u| u.id > after)
                .collect();
            rows.sort_by_key(|u| u.id);
            rows.truncate(usize::try_from(limit).unwrap());
            Ok(rows)
        }
        fn uploads_between(&mut self, lo: i64, hi: i64) -> Result<Vec<UploadFact>, StoreError> {
            Ok(self
                .in_force()
                .into_iter()
                .filter(|u| (lo..=hi).contains(&u.id))
                .collect())
        }
        fn corrections_after(
            &mut self,
            after: i64,
            limit: i64,
        ) -> Result<Vec<CorrectionFact>, StoreError> {
            let mut rows = self.correction_facts(|id| id > after);
            rows.truncate(usize::try_from(limit).unwrap());
            Ok(rows)
        }
        fn corrections_between(
            &mut self,
            lo: i64,
            hi: i64,
        ) -> Result<Vec<CorrectionFact>, StoreError> {
            Ok(self.correction_facts(|id| (lo..=hi).contains(&id)))
        }
        fn decision_days(&mut self) -> Result<Vec<StoredDecisionDay>, StoreError> {
            Ok(self.decision_days.values().cloned().collect())
        }
        fn upload_days(&mut self) -> Result<Vec<StoredUploadDay>, StoreError> {
            Ok(self.upload_days.values().cloned().collect())
        }
        fn group_decisions(
            &mut self,
            decision_type: &str,
            parameter_version: i64,
            ids: (i64, i64),
            times: (DateTime<Utc>, DateTime<Utc>),
        ) -> Result<Vec<(f64, bool)>, StoreError> {
            Ok(self
                .decisions
                .iter()
                .filter(|d| {
                    (ids.0..=ids.1).contains(&d.id)
                        && d.decision_type == decision_type
                        && d.parameter_version == parameter_version
                        && times.0 <= d.requested_at
                        && d.requested_at < times.1
                })
                .map(|d| (d.probability, d.available))
                .collect())
        }
        fn group_uploads(
            &mut self,
            decision_type: &str,
            ids: (i64, i64),
            times: (DateTime<Utc>, DateTime<Utc>),
        ) -> Result<(u64, f64), StoreError> {
            let rows: Vec<f64> = self
                .in_force()
                .iter()
                .filter(|u| {
                    (ids.0..=ids.1).contains(&u.id)
                        && u.decision_type == decision_type
                        && times.0 <= u.requested_at
                        && u.requested_at < times.1
                })
                .map(|u| u.reward)
                .collect();
            Ok((rows.len() as u64, rows.iter().sum()))
        }
        fn put_decision_day(&mut self, day: &StoredDecisionDay) -> Result<(), StoreError> {
            let f = &day.figures;
            self.decision_days.insert(
                (f.day, f.decision_type.clone(), f.parameter_version),
                day.clone(),
            );
            Ok(())
        }
        fn put_upload_day(&mut self, day: &StoredUploadDay) -> Result<(), StoreError> {
            let f = &day.figures;
            self.upload_days
                .insert((f.day, f.decision_type.clone()), day.clone());
            Ok(())
        }
        fn raise_participant(
            &mut self,
            user_id: &str,
            last_decision: Option<DateTime<Utc>>,
            last_upload: Option<DateTime<Utc>>,
        ) -> Result<(), StoreError> {
            let e = self.participants.entry(user_id.to_owned()).or_default();
            e.0 = e.0.max(last_decision);
            e.1 = e.1.max(last_upload);
            Ok(())
        }
        fn put_state(&mut self, state: &RollupState) -> Result<(), StoreError> {
            self.state = Some(state.clone());
            self.state_writes += 1;
            Ok(())
        }
    }

    impl Db {
        /// The uploads with the reward in force.
        fn in_force(&self) -> Vec<UploadFact> {
            self.uploads
                .iter()
                .map(|u| {
                    let newest = self
                        .corrections
                        .iter()
                        .filter(|c| c.1 == u.id)
                        .max_by_key(|c| c.0);
                    UploadFact {
                        reward: newest.map_or(u.reward, |c| c.2),
                        ..u.clone()
                    }
                })
                .collect()
        }

        /// The corrections whose id `take` selects, by id, with their uploads.
        fn correction_facts(&self, take: impl Fn(i64) -> bool) -> Vec<CorrectionFact> {
            let uploads = self.in_force();
            let mut rows: Vec<CorrectionFact> = self
                .corrections
                .iter()
                .filter(|c| take(c.0))
                .filter_map(|c| {
                    let upload = uploads.iter().find(|u| u.id == c.1)?.clone();
                    Some(CorrectionFact { id: c.0, upload })
                })
                .collect();
            rows.sort_by_key(|c| c.id);
            rows
        }

        fn refresh(&mut self, settings: &DashboardSettings, now: DateTime<Utc>) -> DashboardDays {
            while refresh_step(self, settings, now).unwrap() {}
            DashboardDays {
                decisions: self
                    .decision_days
                    .values()
                    .map(|d| d.figures.clone())
                    .collect(),
                uploads: self
                    .upload_days
                    .values()
                    .map(|u| u.figures.clone())
                    .collect(),
            }
        }

        fn truth(&self, settings: &DashboardSettings) -> DashboardDays {
            days_of(settings, self.decisions.clone(), self.in_force())
        }
    }

    fn fact(id: i64, hour: i64, p: f64) -> DecisionFact {
        DecisionFact {
            id,
            user_id: format!("u{}", id % 3),
            decision_type: "default".into(),
            parameter_version: 1,
            requested_at: DateTime::from_timestamp(1_750_000_000 + hour * 3600, 0).unwrap(),
            probability: p,
            available: true,
        }
    }

    fn moment(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_row_committed_after_a_larger_id_is_counted_within_the_grace_period() {
        let settings = DashboardSettings {
            zone: chrono_tz::UTC,
            clip_bounds: Some((0.2, 0.8)),
        };
        let mut db = Db::default();
        // Ids 1, 2, 4 and 6 are visible; 3 and 5 are still being committed.
        for (id, p) in [(1, 0.2), (2, 0.5), (4, 0.8), (6, 0.4)] {
            db.decisions.push(fact(id, id, p));
        }
        assert_eq!(db.refresh(&settings, moment(0)), db.truth(&settings));
        let gaps: Vec<(i64, i64)> = db
            .state
            .as_ref()
            .unwrap()
            .action_gaps
            .iter()
            .map(|g| (g.lo, g.hi))
            .collect();
        assert_eq!(gaps, [(3, 3), (5, 5)]);

        // 3 commits within the grace period: counted, its group's quartiles recomputed whole.
        db.decisions.push(fact(3, 3, 0.3));
        assert_eq!(db.refresh(&settings, moment(60)), db.truth(&settings));
        // Reading again changes nothing.
        assert_eq!(db.refresh(&settings, moment(61)), db.truth(&settings));

        // After the grace period the gap is given up (5 was a refused insert).
        db.refresh(&settings, moment(LATE_COMMIT_GRACE_SECS + 1));
        assert!(db.state.as_ref().unwrap().action_gaps.is_empty());
    }

    fn upload_fact(id: i64, hour: i64, reward: f64) -> UploadFact {
        UploadFact {
            id,
            user_id: format!("u{}", id % 3),
            decision_type: "default".into(),
            requested_at: DateTime::from_timestamp(1_750_000_000 + hour * 3600, 0).unwrap(),
            received_at: DateTime::from_timestamp(1_750_000_000 + hour * 3600 + 60, 0).unwrap(),
            reward,
        }
    }

    #[test]
    fn a_correction_changes_its_days_reward_sum_exactly_once() {
        let settings = DashboardSettings {
            zone: chrono_tz::UTC,
            clip_bounds: None,
        };
        let mut db = Db::default();
        for (id, hour, reward) in [(1, 1, 1.0), (2, 2, 2.0), (3, 30, 4.0)] {
            db.uploads.push(upload_fact(id, hour, reward));
        }
        assert_eq!(db.refresh(&settings, moment(0)), db.truth(&settings));
        let sum = |days: &DashboardDays| -> Vec<f64> {
            days.uploads.iter().map(|u| u.reward_sum).collect()
        };

        // Correction 2 commits before 1: 2 is read, 1 is remembered as a gap.
        db.corrections.push((2, 3, 10.0));
        let days = db.refresh(&settings, moment(10));
        assert_eq!(days, db.truth(&settings));
        assert_eq!(sum(&days), [3.0, 10.0]);
        db.corrections.push((1, 1, 5.0));
        let days = db.refresh(&settings, moment(20));
        assert_eq!(sum(&days), [7.0, 10.0]);
        // Read again, and a second correction of the same upload: the newest counts, once.
        assert_eq!(db.refresh(&settings, moment(21)), days);
        db.corrections.push((3, 1, 0.5));
        let days = db.refresh(&settings, moment(30));
        assert_eq!(sum(&days), [2.5, 10.0]);
        assert_eq!(days, db.truth(&settings));

        // An upload and its correction new in one refresh: the value in force, once.
        db.uploads.push(upload_fact(5, 2, 1.0));
        db.corrections.push((4, 5, 3.0));
        let days = db.refresh(&settings, moment(40));
        assert_eq!(sum(&days), [5.5, 10.0]);
        assert_eq!(days, db.truth(&settings));
        assert_eq!(db.refresh(&settings, moment(41)), days);
    }

    #[test]
    fn a_refresh_that_finds_nothing_new_writes_nothing() {
        let settings = DashboardSettings {
            zone: chrono_tz::UTC,
            clip_bounds: None,
        };
        let mut db = Db::default();
        db.decisions.push(fact(1, 1, 0.5));
        db.refresh(&settings, moment(0));
        assert_eq!(db.state_writes, 1);

        db.refresh(&settings, moment(1));
        assert_eq!(db.state_writes, 1, "nothing new: the state is not written");

        db.decisions.push(fact(2, 2, 0.5));
        db.refresh(&settings, moment(2));
        assert_eq!(db.state_writes, 2);
        assert_eq!(db.refresh(&settings, moment(3)), db.truth(&settings));
        // Other settings start again from nothing, which is a change.
        let berlin = DashboardSettings {
            zone: chrono_tz::Europe::Berlin,
            clip_bounds: None,
        };
        assert_eq!(db.refresh(&berlin, moment(4)), db.truth(&berlin));
        assert_eq!(db.state_writes, 3);
    }

    #[test]
    fn a_first_build_in_many_steps_counts_every_row_once() {
        let settings = DashboardSettings {
            zone: chrono_tz::Europe::Berlin,
            clip_bounds: None,
        };
        let mut db = Db::default();
        let n = REFRESH_CHUNK * 2 + 17;
        for id in 1..=n {
            #[allow(clippy::cast_precision_loss)]
            db.decisions
                .push(fact(id, id / 500, (id % 97) as f64 / 97.0));
        }
        for id in 1..=n / 3 {
            db.uploads.push(UploadFact {
                id,
                user_id: "u1".into(),
                decision_type: "default".into(),
                requested_at: fact(id, id / 300, 0.0).requested_at,
                received_at: moment(id),
                reward: 1.0,
            });
        }

        let got = db.refresh(&settings, moment(0));

        let want = db.truth(&settings);
        assert_eq!(got.decisions, want.decisions);
        assert_eq!(got.uploads, want.uploads);
        assert_eq!(db.participants["u1"].1, Some(moment(n / 3)));
    }

    #[test]
    fn days_follow_the_zone_and_a_day_spans_its_local_midnights() {
        let settings = DashboardSettings {
            zone: chrono_tz::Europe::Berlin,
            clip_bounds: None,
        };
        let late = "2026-03-28T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(settings.day_of(late).to_string(), "2026-03-29");
        let (from, to) = settings.day_bounds(NaiveDate::from_ymd_opt(2026, 3, 29).unwrap());
        assert_eq!(from.to_rfc3339(), "2026-03-28T23:00:00+00:00");
        // The clocks go forward that day: it lasts 23 hours.
        assert_eq!(to.to_rfc3339(), "2026-03-29T22:00:00+00:00");
    }
}
