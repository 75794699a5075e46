//! Streaming a table in id order without loading it: keyset pages (`id > last AND id <= bound
//! ORDER BY id LIMIT n`), with the bound read when the stream starts (for the export, which
//! joins each decision with its upload and says which update first used it, the largest upload
//! id and the newest update's version too).
//!
//! On SQLite the bound alone keeps later rows out: writers take turns on one write lock and
//! `AUTOINCREMENT` never hands out an id twice, so any row committed after the bound was read
//! has a larger id, and any update completed after it has a larger version. [`PoolStream`]
//! therefore holds no transaction and no connection between pages (each page checks one out),
//! which keeps the pool free and lets WAL checkpoints run while a caller consumes a long
//! stream slowly, and every page still shows the database as it was when the stream started.
//! What an update reads, its uploads and then the decisions it imputes rewards for, is an
//! [`UpdateCursor`]: on the update job's connection, in its snapshot and within the bounds it
//! read there ([`BorrowedUpdateStream`]), or later over the pool for `update_rows`
//! ([`PoolUpdateStream`]), within the bounds its provenance recorded.

use chrono::{DateTime, Utc};
use diesel::dsl::{max, sql};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Bool, Double, Nullable};
use justin_core::{
    Decision, ExportLine, ExportRow, StoreError, StudyRecord, UpdateInclusion, UpdateRecord,
};

use crate::error::from_diesel;
use crate::models::{fmt_time, parse_time, ActionRow, ExportRecord, StudyRow, UploadColumns};
use crate::schema::{
    actions, model_update_requests, study_data, study_data_corrections, update_provenance, users,
};
use crate::store::SqliteStore;

/// Rows read per query: large enough that page queries do not dominate, small enough that a
/// page of JSON-heavy rows stays a few megabytes.
pub(crate) const PAGE_SIZE: i64 = 5000;

/// A table that can be paged by its integer id.
pub(crate) trait KeysetRow: Sized {
    /// What a row becomes for the core.
    type Item: TryFrom<Self, Error = StoreError>;

    /// What the stream fixes when it starts: at least the largest id it will read.
    type Bound: Copy;

    /// The row's id.
    fn id(&self) -> i64;

    /// The bound as stored now; `None` when there are no rows.
    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<Self::Bound>>;

    /// The largest id within `bound`.
    fn upto(bound: Self::Bound) -> i64;

    /// Up to `limit` rows with `after < id` within `bound`, by id.
    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        bound: Self::Bound,
        limit: i64,
    ) -> QueryResult<Vec<Self>>;
}

impl KeysetRow for StudyRow {
    type Item = StudyRecord;
    type Bound = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
        study_data::table.select(max(study_data::id)).first(conn)
    }

    fn upto(bound: i64) -> i64 {
        bound
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        study_data::table
            .filter(study_data::id.gt(after))
            .filter(study_data::id.le(upto))
            .order(study_data::id)
            .limit(limit)
            .select(StudyRow::as_select())
            .load(conn)
    }
}

/// A study record an update may read: one of an available decision, of a participant who had
/// not withdrawn when the job started (as the job's snapshot shows it; the rule of
/// [`USED_IN_VERSION`] and `update_rows`), whose logged decision's policy the update learns
/// from (or with no logged decision).
///
/// Each comes with its newest correction at or below the bound's correction watermark, whose
/// values it streams in place of the original's.
pub(crate) struct AvailableStudyRow(StudyRow, Option<crate::corrections::CorrectionRow>);

/// What an update's stream of study records reads up to, which policies it includes, and when
/// the job started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct UpdateBound {
    /// The largest upload id in the job's snapshot.
    pub upto: i64,
    /// The kinds of decision the update learns from.
    pub include: UpdateInclusion,
    /// When the job started (`None`: before every withdrawal).
    pub started_at: Option<DateTime<Utc>>,
    /// The largest correction id the update reads (0: none).
    pub corrections_upto: i64,
}

impl TryFrom<AvailableStudyRow> for StudyRecord {
    type Error = StoreError;

    fn try_from(row: AvailableStudyRow) -> Result<Self, StoreError> {
        let mut record: StudyRecord = row.0.try_into()?;
        if let Some(correction) = row.1 {
            correction.apply(&mut record)?;
        }
        Ok(record)
    }
}

impl KeysetRow for AvailableStudyRow {
    type Item = StudyRecord;
    type Bound = UpdateBound;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<UpdateBound>> {
        Ok(StudyRow::bound(conn)?.map(|upto| UpdateBound {
            upto,
            include: UpdateInclusion::default(),
            started_at: None,
            corrections_upto: 0,
        }))
    }

    fn upto(bound: UpdateBound) -> i64 {
        bound.upto
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        bound: UpdateBound,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        let included: Vec<&str> = ["algorithm", "warmup", "fallback", "host"]
            .into_iter()
            .filter(|word| bound.include.includes(Some(word)))
            .collect();
        // Times are stored as `fmt_time` writes them, which sort as text in time order; an
        // unknown start (the empty text) sorts before every withdrawal.
        let started = bound.started_at.map_or_else(String::new, fmt_time);
        let not_withdrawn = diesel::dsl::exists(
            users::table
                .filter(users::user_id.eq(study_data::user_id))
                .filter(
                    users::withdrawn_at
                        .is_null()
                        .or(users::withdrawn_at.gt(started)),
                ),
        );
        let rows = study_data::table
            .filter(study_data::id.gt(after))
            .filter(study_data::id.le(bound.upto))
            .filter(study_data::available)
            .filter(
                study_data::policy
                    .is_null()
                    .or(study_data::policy.eq_any(included)),
            )
            .filter(not_withdrawn)
            .order(study_data::id)
            .limit(limit)
            .select(StudyRow::as_select())
            .load::<StudyRow>(conn)?;
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut newest = crate::corrections::in_force(conn, &ids, bound.corrections_upto)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let correction = newest.remove(&r.id).map(|(c, _)| c);
                Self(r, correction)
            })
            .collect())
    }
}

/// A decision an update learns from with the default reward
/// ([`justin_core::UpdateJob::update_data`]): available, of a policy it includes, of a
/// participant neither erased nor withdrawn when it started, made at or before its cut-off,
/// and without an upload at or below its study-data watermark.
pub(crate) struct UnrewardedRow {
    row: ActionRow,
    reward: f64,
}

/// What an update imputes rewards for: the decisions up to `actions_upto` that
/// [`UnrewardedRow`] selects, with `reward`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ImputedBound {
    /// The largest decision id in the job's snapshot.
    pub actions_upto: i64,
    /// The largest upload id in the job's snapshot: a decision with an upload at or below it
    /// has its outcome.
    pub uploads_upto: i64,
    /// The kinds of decision the update learns from.
    pub include: UpdateInclusion,
    /// When the job started (`None`: before every withdrawal).
    pub started_at: Option<DateTime<Utc>>,
    /// Decisions made at or before this are past the outcome window.
    pub decided_by: DateTime<Utc>,
    /// The default reward.
    pub reward: f64,
}

impl TryFrom<UnrewardedRow> for StudyRecord {
    type Error = StoreError;

    fn try_from(row: UnrewardedRow) -> Result<Self, StoreError> {
        Ok(StudyRecord::imputed(row.row.try_into()?, row.reward))
    }
}

/// The policy words `include` takes.
fn included_words(include: UpdateInclusion) -> Vec<&'static str> {
    ["algorithm", "warmup", "fallback", "host"]
        .into_iter()
        .filter(|word| include.includes(Some(word)))
        .collect()
}

impl KeysetRow for UnrewardedRow {
    type Item = StudyRecord;
    type Bound = ImputedBound;

    fn id(&self) -> i64 {
        self.row.id
    }

    fn bound(_conn: &mut SqliteConnection) -> QueryResult<Option<ImputedBound>> {
        // Only ever streamed within the bound an update job or its provenance fixed.
        Ok(None)
    }

    fn upto(bound: ImputedBound) -> i64 {
        bound.actions_upto
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        bound: ImputedBound,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        // Times are stored as `fmt_time` writes them, which sort as text in time order; an
        // unknown start (the empty text) sorts before every withdrawal.
        let started = bound.started_at.map_or_else(String::new, fmt_time);
        let live = diesel::dsl::exists(
            users::table
                .filter(users::user_id.eq(actions::user_id))
                .filter(users::erased_at.is_null())
                .filter(
                    users::withdrawn_at
                        .is_null()
                        .or(users::withdrawn_at.gt(started)),
                ),
        );
        let uploaded = diesel::dsl::exists(
            study_data::table
                .filter(study_data::user_id.eq(actions::user_id))
                .filter(study_data::decision_type.eq(actions::decision_type))
                .filter(study_data::decision_idx.eq(actions::decision_idx))
                .filter(study_data::id.le(bound.uploads_upto)),
        );
        let rows = actions::table
            .filter(actions::id.gt(after))
            .filter(actions::id.le(bound.actions_upto))
            .filter(actions::available)
            .filter(actions::policy.eq_any(included_words(bound.include)))
            .filter(actions::created_at.le(fmt_time(bound.decided_by)))
            .filter(live)
            .filter(diesel::dsl::not(uploaded))
            .order(actions::id)
            .limit(limit)
            .select(ActionRow::as_select())
            .load(conn)?;
        Ok(rows
            .into_iter()
            .map(|row| Self {
                row,
                reward: bound.reward,
            })
            .collect())
    }
}

/// Where an [`UpdateCursor`] reads its pages: the update job's own connection, or the pool.
pub(crate) trait PageSource {
    /// Reads a page of `R` with `after < id` within `bound`.
    fn page<R: KeysetRow>(
        &mut self,
        after: i64,
        bound: R::Bound,
    ) -> Result<QueryResult<Vec<R>>, StoreError>;
}

impl PageSource for &mut SqliteConnection {
    fn page<R: KeysetRow>(
        &mut self,
        after: i64,
        bound: R::Bound,
    ) -> Result<QueryResult<Vec<R>>, StoreError> {
        Ok(R::page(self, after, bound, PAGE_SIZE))
    }
}

impl PageSource for SqliteStore {
    fn page<R: KeysetRow>(
        &mut self,
        after: i64,
        bound: R::Bound,
    ) -> Result<QueryResult<Vec<R>>, StoreError> {
        let mut conn = self.conn()?;
        Ok(R::page(&mut conn, after, bound, PAGE_SIZE))
    }
}

/// What an update reads, in order: its uploads, then, when it imputes rewards, the decisions
/// it learns from with the default reward.
pub(crate) struct UpdateCursor {
    uploads: Keyset<AvailableStudyRow>,
    /// `None` when the update imputes nothing, or once the uploads failed.
    imputed: Option<Keyset<UnrewardedRow>>,
}

impl UpdateCursor {
    /// The uploads within `uploads`, then the decisions within `imputed`.
    pub(crate) fn new(uploads: Option<UpdateBound>, imputed: Option<ImputedBound>) -> Self {
        Self {
            uploads: Keyset::within(uploads),
            imputed: imputed.map(|bound| Keyset::within(Some(bound))),
        }
    }

    /// The next record, reading pages from `source` as needed.
    pub(crate) fn next(
        &mut self,
        source: &mut impl PageSource,
    ) -> Option<Result<UpdateRecord, StoreError>> {
        if self.uploads.bound.is_some() || self.uploads.page.len() > 0 {
            match self
                .uploads
                .next_with(|after, bound| source.page::<AvailableStudyRow>(after, bound))
            {
                Some(Ok(record)) => return Some(Ok(UpdateRecord::Uploaded(record))),
                Some(Err(e)) => {
                    self.imputed = None;
                    return Some(Err(e));
                }
                None => {}
            }
        }
        let imputed = self.imputed.as_mut()?;
        let item = imputed.next_with(|after, bound| source.page::<UnrewardedRow>(after, bound));
        match item {
            Some(Ok(record)) => Some(Ok(UpdateRecord::Imputed(record))),
            Some(Err(e)) => {
                self.imputed = None;
                Some(Err(e))
            }
            None => {
                self.imputed = None;
                None
            }
        }
    }
}

/// [`UpdateCursor`] on the update job's connection, in its snapshot.
pub(crate) struct BorrowedUpdateStream<'c> {
    pub conn: &'c mut SqliteConnection,
    pub cursor: UpdateCursor,
}

impl Iterator for BorrowedUpdateStream<'_> {
    type Item = Result<UpdateRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut conn: &mut SqliteConnection = self.conn;
        self.cursor.next(&mut conn)
    }
}

/// [`UpdateCursor`] over the pool, a connection per page, for `update_rows`.
pub(crate) struct PoolUpdateStream {
    pub store: SqliteStore,
    pub cursor: UpdateCursor,
}

impl Iterator for PoolUpdateStream {
    type Item = Result<UpdateRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next(&mut self.store)
    }
}

impl KeysetRow for ActionRow {
    type Item = Decision;
    type Bound = i64;

    fn id(&self) -> i64 {
        self.id
    }

    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
        actions::table.select(max(actions::id)).first(conn)
    }

    fn upto(bound: i64) -> i64 {
        bound
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        actions::table
            .filter(actions::id.gt(after))
            .filter(actions::id.le(upto))
            .order(actions::id)
            .limit(limit)
            .select(ActionRow::as_select())
            .load(conn)
    }
}

/// The export's bound: the largest decision id, the largest upload id, so that an upload
/// stored after the export started is not joined to a decision stored before, and the newest
/// update's version, so that an update completed after the export started is not shown as
/// using an upload on a later page.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportBound {
    decisions: i64,
    uploads: i64,
    updates: i64,
    /// Whether any update imputed rewards: most studies never do, and their export skips the
    /// per-row search of the updates ([`FIRST_IMPUTING_UPDATE`]).
    imputing: bool,
    /// The largest correction id: the value in force is read up to it.
    corrections: i64,
}

/// The parameter version of the first update that used the row's upload, split around the
/// bound on update versions: of the updates completed when the export started, the one with
/// the smallest `last_study_data_id` at or above the upload's id (the earliest version on a
/// tie) that learned from the upload's kind of decision (any update, for an upload without a
/// logged decision) and whose request started before the participant withdrew (the `users`
/// row joined to the decision); none when the upload is unavailable (no update reads it) or
/// there is no upload. `update_provenance_last_study_data_idx` (watermark, version, policies,
/// request) serves it from the index alone, one seek per upload, even when many updates share
/// a watermark. The `+` keeps the version's bound from being considered for the version's
/// unique index, so that choice does not rest on the planner's estimates: through that index
/// every upload would visit every update.
pub(crate) const USED_IN_VERSION: [&str; 2] = [
    "CASE WHEN study_data.available THEN \
     (SELECT p.parameter_version FROM update_provenance p \
      WHERE p.last_study_data_id >= study_data.id AND +p.parameter_version <= ",
    " AND (study_data.policy IS NULL \
           OR instr(',' || p.included_policies || ',', ',' || study_data.policy || ',') > 0) \
      AND (users.withdrawn_at IS NULL \
           OR EXISTS (SELECT 1 FROM model_update_requests r \
                      WHERE r.id = p.update_id \
                        AND coalesce(r.started_at, r.created_at) < users.withdrawn_at)) \
      ORDER BY p.last_study_data_id, p.parameter_version LIMIT 1) END",
];

impl KeysetRow for ExportRecord {
    type Item = ExportRow;
    type Bound = ExportBound;

    fn id(&self) -> i64 {
        self.decision.id
    }

    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<ExportBound>> {
        // One statement, so all four come from one snapshot.
        let (decisions, uploads, updates, imputing, corrections) = diesel::select((
            actions::table.select(max(actions::id)).single_value(),
            study_data::table.select(max(study_data::id)).single_value(),
            update_provenance::table
                .select(max(update_provenance::parameter_version))
                .single_value(),
            diesel::dsl::exists(
                update_provenance::table
                    .filter(update_provenance::imputed_decided_by.is_not_null()),
            ),
            study_data_corrections::table
                .select(max(study_data_corrections::id))
                .single_value(),
        ))
        .get_result::<(Option<i64>, Option<i64>, Option<i64>, bool, Option<i64>)>(conn)?;
        Ok(decisions.map(|decisions| ExportBound {
            decisions,
            // Ids and versions start at 1: with no uploads, 0 joins none, and with no
            // updates, 0 finds none.
            uploads: uploads.unwrap_or(0),
            updates: updates.unwrap_or(0),
            imputing,
            corrections: corrections.unwrap_or(0),
        }))
    }

    fn upto(bound: ExportBound) -> i64 {
        bound.decisions
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        bound: ExportBound,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        export_page(conn, None, after, bound, limit)
    }
}

/// The rows of [`ExportRecord`] with their JSON passed through as the stored text.
pub(crate) struct ExportLineRecord(ExportRecord);

impl TryFrom<ExportLineRecord> for ExportLine {
    type Error = StoreError;

    fn try_from(row: ExportLineRecord) -> Result<Self, StoreError> {
        Self::try_from(row.0)
    }
}

impl KeysetRow for ExportLineRecord {
    type Item = ExportLine;
    type Bound = ExportBound;

    fn id(&self) -> i64 {
        self.0.decision.id
    }

    fn bound(conn: &mut SqliteConnection) -> QueryResult<Option<ExportBound>> {
        ExportRecord::bound(conn)
    }

    fn upto(bound: ExportBound) -> i64 {
        bound.decisions
    }

    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        bound: ExportBound,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        let rows = export_page(conn, None, after, bound, limit)?;
        Ok(rows.into_iter().map(ExportLineRecord).collect())
    }
}

/// The first update (smallest version, among those completed when the export started) that
/// learned from the export row's decision with its default reward: one that imputed rewards,
/// could read the decision (its id at most the update's `last_action_id`, made at or before
/// its `imputed_decided_by`), found no upload for it at or below its watermark, included its
/// policy and started before its participant withdrew; the rule [`UnrewardedRow`] streams by.
/// Split around the bound on versions, like [`USED_IN_VERSION`].
const FIRST_IMPUTING_UPDATE: [&str; 2] = [
    " FROM update_provenance p JOIN model_update_requests r ON r.id = p.update_id \
      WHERE p.imputed_decided_by IS NOT NULL AND actions.available \
        AND p.last_action_id >= actions.id AND actions.created_at <= p.imputed_decided_by \
        AND +p.parameter_version <= ",
    " AND instr(',' || p.included_policies || ',', ',' || actions.policy || ',') > 0 \
        AND (study_data.id IS NULL OR study_data.id > p.last_study_data_id) \
        AND (users.withdrawn_at IS NULL \
             OR coalesce(r.started_at, r.created_at) < users.withdrawn_at) \
      ORDER BY p.parameter_version LIMIT 1",
];

/// Up to `limit` rows of the export with `after < id` within `bound` (of participant `user`
/// only, when given), by decision id: each decision with its upload and the first update that
/// used it ([`USED_IN_VERSION`]).
pub(crate) fn export_page(
    conn: &mut SqliteConnection,
    user: Option<&str>,
    after: i64,
    bound: ExportBound,
    limit: i64,
) -> QueryResult<Vec<ExportRecord>> {
    let upload_of_the_decision = study_data::user_id
        .eq(actions::user_id)
        .and(study_data::decision_type.eq(actions::decision_type))
        .and(study_data::decision_idx.eq(actions::decision_idx))
        .and(study_data::id.le(bound.uploads));
    let [before_bound, after_bound] = USED_IN_VERSION;
    let used_in_version = sql::<Nullable<BigInt>>(before_bound)
        .bind::<BigInt, _>(bound.updates)
        .sql(after_bound);
    // NULL without a search when no update imputed rewards: SQLite evaluates a `CASE` branch
    // only when it is taken.
    let [before_version_bound, after_version_bound] = FIRST_IMPUTING_UPDATE;
    let after_version_bound = format!("{after_version_bound}) END");
    let imputed_in_version = sql::<Nullable<BigInt>>("CASE WHEN ")
        .bind::<Bool, _>(bound.imputing)
        .sql(&format!(
            " THEN (SELECT p.parameter_version{before_version_bound}"
        ))
        .bind::<BigInt, _>(bound.updates)
        .sql(&after_version_bound);
    let imputed_reward = sql::<Nullable<Double>>("CASE WHEN ")
        .bind::<Bool, _>(bound.imputing)
        .sql(&format!(
            " THEN (SELECT p.default_reward{before_version_bound}"
        ))
        .bind::<BigInt, _>(bound.updates)
        .sql(&after_version_bound);
    let mut query = actions::table
        .left_join(study_data::table.on(upload_of_the_decision))
        .left_join(users::table.on(users::user_id.eq(actions::user_id)))
        .filter(actions::id.gt(after))
        .filter(actions::id.le(bound.decisions))
        .order(actions::id)
        .limit(limit)
        .select((
            ActionRow::as_select(),
            Option::<UploadColumns>::as_select(),
            used_in_version,
            imputed_in_version,
            imputed_reward,
        ))
        .into_boxed();
    if let Some(user) = user {
        query = query.filter(actions::user_id.eq(user));
    }
    type Row = (
        ActionRow,
        Option<UploadColumns>,
        Option<i64>,
        Option<i64>,
        Option<f64>,
    );
    let rows = query.load::<Row>(conn)?;
    // The value in force now: every correction stored when the stream started, whose ids
    // are below those of any stored later.
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|(_, upload, ..)| upload.as_ref().map(|u| u.id))
        .collect();
    let mut newest = crate::corrections::in_force(conn, &ids, bound.corrections)?;
    Ok(rows
        .into_iter()
        .map(
            |(decision, upload, used_in_version, imputed_in_version, imputed_reward)| {
                let correction = upload.as_ref().and_then(|u| newest.remove(&u.id));
                ExportRecord {
                    decision,
                    upload,
                    used_in_version,
                    correction,
                    imputed_in_version,
                    imputed_reward,
                }
            },
        )
        .collect())
}

/// What the update that produced `version` read: its uploads as the bound of an
/// [`AvailableStudyRow`] stream (its watermark, the policies it included, when its job started
/// and its correction watermark) and, when it imputed rewards, the decisions as the bound of an
/// [`UnrewardedRow`] stream; nothing for an unknown version, the initial one, or one stored by
/// no update.
pub(crate) fn update_read(conn: &mut SqliteConnection, version: i64) -> QueryResult<UpdateCursor> {
    type Read = (
        i64,
        String,
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<f64>,
        Option<i64>,
    );
    let found: Option<Read> = update_provenance::table
        .inner_join(model_update_requests::table)
        .filter(update_provenance::parameter_version.eq(version))
        .select((
            update_provenance::last_study_data_id,
            update_provenance::included_policies,
            model_update_requests::started_at,
            update_provenance::last_action_id,
            update_provenance::imputed_decided_by,
            update_provenance::default_reward,
            update_provenance::last_correction_id,
        ))
        .first(conn)
        .optional()?;
    let Some((upto, included, started_at, actions_upto, decided_by, reward, corrections_upto)) =
        found
    else {
        return Ok(UpdateCursor::new(None, None));
    };
    let time = |t: Option<String>| {
        t.map(|t| parse_time(&t))
            .transpose()
            .map_err(|e| diesel::result::Error::DeserializationError(e.into()))
    };
    let started_at = time(started_at)?;
    let include = UpdateInclusion::from_stored(&included);
    let imputed = match (actions_upto, time(decided_by)?, reward) {
        (Some(actions_upto), Some(decided_by), Some(reward)) => Some(ImputedBound {
            actions_upto,
            uploads_upto: upto,
            include,
            started_at,
            decided_by,
            reward,
        }),
        _ => None,
    };
    Ok(UpdateCursor::new(
        Some(UpdateBound {
            upto,
            include,
            started_at,
            // An update stored before corrections existed read none.
            corrections_upto: corrections_upto.unwrap_or(0),
        }),
        imputed,
    ))
}

/// What the paging state asks for next.
enum Step<T, B> {
    /// An item of the current page (or the error converting its row).
    Item(Result<T, StoreError>),
    /// The page of ids `after < id` within `bound` must be read first.
    Read { after: i64, bound: B },
}

/// The paging state, independent of where the connection comes from.
pub(crate) struct Keyset<R: KeysetRow> {
    last_id: i64,
    /// `None` once the stream has ended (no rows, all read, or an error).
    bound: Option<R::Bound>,
    page: std::vec::IntoIter<R>,
}

impl<R: KeysetRow> Keyset<R> {
    fn end(&mut self) {
        self.bound = None;
        self.page = Vec::new().into_iter();
    }

    /// Reads the bound.
    pub(crate) fn start(conn: &mut SqliteConnection) -> Result<Self, StoreError> {
        R::bound(conn).map(Self::within).map_err(from_diesel)
    }

    /// Streams within a bound the caller read; `None` streams nothing.
    pub(crate) fn within(bound: Option<R::Bound>) -> Self {
        Self {
            last_id: i64::MIN,
            bound,
            page: Vec::new().into_iter(),
        }
    }

    /// The next row from the current page, or the bounds of the page to read next; `None`
    /// when the stream has ended.
    fn next_buffered(&mut self) -> Option<Step<R::Item, R::Bound>> {
        if let Some(row) = self.page.next() {
            let item = R::Item::try_from(row);
            if item.is_err() {
                self.end();
            }
            return Some(Step::Item(item));
        }
        let bound = self.bound?;
        if self.last_id >= R::upto(bound) {
            self.end();
            return None;
        }
        Some(Step::Read {
            after: self.last_id,
            bound,
        })
    }

    /// Takes in a page read for `next_buffered`'s bounds; false when it was empty (the
    /// stream has then ended).
    fn fill(&mut self, rows: QueryResult<Vec<R>>) -> Result<bool, StoreError> {
        match rows {
            Ok(rows) => match rows.last() {
                Some(last) => {
                    self.last_id = last.id();
                    self.page = rows.into_iter();
                    Ok(true)
                }
                None => {
                    self.end();
                    Ok(false)
                }
            },
            Err(e) => {
                self.end();
                Err(from_diesel(e))
            }
        }
    }

    /// The next item, reading pages through `read` as needed.
    fn next_with(
        &mut self,
        mut read: impl FnMut(i64, R::Bound) -> Result<QueryResult<Vec<R>>, StoreError>,
    ) -> Option<Result<R::Item, StoreError>> {
        loop {
            match self.next_buffered()? {
                Step::Item(item) => return Some(item),
                Step::Read { after, bound } => {
                    let rows = match read(after, bound) {
                        Ok(rows) => rows,
                        Err(e) => {
                            self.end();
                            return Some(Err(e));
                        }
                    };
                    match self.fill(rows) {
                        Ok(true) => {}
                        Ok(false) => return None,
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
        }
    }
}

/// A stream that checks a connection out of the store's pool for each page.
pub(crate) struct PoolStream<R: KeysetRow> {
    store: SqliteStore,
    keyset: Keyset<R>,
}

impl<R: KeysetRow> PoolStream<R> {
    pub(crate) fn open(store: &SqliteStore) -> Result<Self, StoreError> {
        let keyset = Keyset::start(&mut *store.conn()?)?;
        Ok(Self {
            store: store.clone(),
            keyset,
        })
    }
}

impl<R: KeysetRow> Iterator for PoolStream<R> {
    type Item = Result<R::Item, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let store = &self.store;
        self.keyset.next_with(|after, bound| {
            let mut conn = store.conn()?;
            Ok(R::page(&mut conn, after, bound, PAGE_SIZE))
        })
    }
}

#[cfg(test)]
mod tests {
    use diesel::sql_types::Text;

    use super::*;
    use crate::setup::{run_migrations, Throwaway};

    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    #[test]
    fn the_first_update_of_an_upload_is_found_through_the_watermark_index() {
        let file = Throwaway::new();
        let path = file.path().to_str().unwrap();
        let mut conn = SqliteConnection::establish(path).unwrap();
        run_migrations(&mut conn).unwrap();
        let [before_bound, after_bound] = USED_IN_VERSION;
        let plan = diesel::sql_query(format!(
            "EXPLAIN QUERY PLAN SELECT {before_bound}?{after_bound} FROM study_data \
             LEFT JOIN users ON users.user_id = study_data.user_id"
        ))
        .bind::<BigInt, _>(7)
        .load::<Plan>(&mut conn)
        .unwrap();
        let details: Vec<&str> = plan.iter().map(|p| p.detail.as_str()).collect();
        assert!(
            details.iter().any(|d| d.contains(
                "SEARCH p USING COVERING INDEX update_provenance_last_study_data_idx (last_study_data_id>?)"
            )),
            "{details:?}"
        );
    }
}
