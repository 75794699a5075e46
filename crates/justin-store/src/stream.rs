//! Streaming a table in id order without loading it: keyset pages (`id > last ORDER BY id
//! LIMIT n`) read inside one repeatable-read transaction.
//!
//! The transaction's snapshot is what keeps rows committed after the stream started out,
//! including rows whose id was drawn before the start but committed after it; the id bound
//! read first lets the last page end the stream without one more, empty, query.
//!
//! [`SnapshotStream`] owns a pooled connection and its transaction (the port's `study_data`,
//! `decisions` and `export`). What an update reads, its uploads up to its watermark and then
//! the decisions it imputes rewards for, is an [`UpdateCursor`]: on the update job's own
//! connection and transaction ([`BorrowedUpdateStream`]), with the imputed decisions read ahead
//! on a second connection in the same snapshot ([`ReadAhead`]), or again later for
//! `update_rows` ([`UpdateRowsStream`]).

use std::collections::HashMap;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use chrono::{DateTime, Utc};
use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::dsl::max;
use diesel::prelude::*;
use justin_core::{
    Decision, ExportLine, ExportRow, StoreError, StudyRecord, UpdateInclusion, UpdateRecord,
};

use crate::error::{from_diesel, other};
use crate::models::{ActionRow, ExportDbRow, ExportedActionRow, ExportedUploadRow, StudyRow};
use crate::pg::PooledPg;
use crate::schema::{actions, model_update_requests, study_data, update_provenance, users};

/// Rows read per query: large enough that round trips do not dominate, small enough that a
/// page of JSON-heavy rows stays a few megabytes.
pub(crate) const PAGE_SIZE: i64 = 5000;

/// Rows read per query by a model update, which reads every row of a study: with pages of
/// [`PAGE_SIZE`] the allocator kept some 60 MB of freed pages resident while an update read a
/// million rows (`make bench`), with pages of this size about 5 MB.
pub(crate) const UPDATE_PAGE_SIZE: i64 = 1000;

/// Rows read per query by the export, which also reads every decision of a study: as for an
/// update, small pages keep what the allocator holds on to small.
pub(crate) const EXPORT_PAGE_SIZE: i64 = 1000;

/// A table that can be paged by its `BIGINT` id.
pub(crate) trait KeysetRow: Sized {
    /// What a row becomes for the core.
    type Item: TryFrom<Self, Error = StoreError>;

    /// Rows per page.
    const PAGE: i64 = PAGE_SIZE;

    /// What selects the rows beyond their ids (`()` for every row).
    type Filter;

    /// The row's id.
    fn id(&self) -> i64;

    /// The largest id visible to the transaction.
    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>>;

    /// Up to `limit` rows with `after < id <= upto` that `filter` selects, by id.
    fn page(
        conn: &mut PgConnection,
        filter: &Self::Filter,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>>;
}

impl KeysetRow for StudyRow {
    type Item = StudyRecord;
    type Filter = ();

    fn id(&self) -> i64 {
        self.id
    }

    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>> {
        study_data::table.select(max(study_data::id)).first(conn)
    }

    fn page(
        conn: &mut PgConnection,
        (): &(),
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

/// A row of `study_data` an update job reads: of an available decision, of a participant who
/// had not withdrawn when the job started (as the job's snapshot shows it; the rule the export
/// applies), and of a policy the update includes (or of no logged decision). `update_rows`
/// streams the same rows again, with the filter read back from the update's provenance
/// ([`update_read`]). Each comes with its newest correction at or below the filter's
/// correction watermark, whose values it streams in place of the original's.
pub(crate) struct AvailableStudyRow(StudyRow, Option<crate::corrections::CorrectionRow>);

/// What an update job reads beyond its watermark: the policy words it includes and when it
/// started.
pub(crate) struct JobFilter {
    pub included: Vec<&'static str>,
    pub started_at: Option<DateTime<Utc>>,
    /// The largest correction id the update reads (0: none).
    pub corrections_upto: i64,
}

/// The policy words an update includes, as [`UpdateInclusion::includes`] says.
pub(crate) fn included_words(include: UpdateInclusion) -> Vec<&'static str> {
    ["algorithm", "warmup", "fallback", "host"]
        .into_iter()
        .filter(|word| include.includes(Some(word)))
        .collect()
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
    type Filter = JobFilter;
    const PAGE: i64 = UPDATE_PAGE_SIZE;

    fn id(&self) -> i64 {
        self.0.id
    }

    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>> {
        StudyRow::max_id(conn)
    }

    fn page(
        conn: &mut PgConnection,
        filter: &JobFilter,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        // Two fixed shapes rather than one boxed query, so that each is a prepared statement
        // planned once, not once per page.
        let query = study_data::table
            .inner_join(users::table.on(users::user_id.eq(study_data::user_id)))
            .filter(study_data::id.gt(after))
            .filter(study_data::id.le(upto))
            .filter(study_data::available)
            .filter(
                study_data::policy
                    .is_null()
                    .or(study_data::policy.eq_any(&filter.included)),
            )
            .order(study_data::id)
            .limit(limit)
            .select(StudyRow::as_select());
        let rows: Vec<StudyRow> = match filter.started_at {
            Some(started_at) => query
                .filter(
                    users::withdrawn_at
                        .is_null()
                        .or(users::withdrawn_at.gt(started_at)),
                )
                .load(conn)?,
            // An update whose start is not known predates every withdrawal.
            None => query.load(conn)?,
        };
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        let mut newest = crate::corrections::in_force(conn, &ids, filter.corrections_upto)?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let correction = newest.remove(&r.id).map(|(c, _)| c);
                Self(r, correction)
            })
            .collect())
    }
}

/// The decisions an update learns from with the default reward ([`UpdateJob::update_data`]):
/// available, of a policy it includes, of a participant neither erased nor withdrawn when it
/// started, made at or before its cut-off, and without an upload at or below its study-data
/// watermark; read in id order through one server-side cursor in the caller's transaction.
/// `update_rows` streams the same decisions again, with the filter read back from the update's
/// provenance ([`update_read`]).
///
/// One cursor rather than keyset pages: the anti-join with `study_data` is planned and run
/// once. Paged, a page where decisions without an upload are dense was planned as a hash
/// anti-join over the whole of `study_data`, once per page.
///
/// The cursor is read to its end, so it is planned for all its rows ([`PLAN_FOR_ALL_ROWS`]):
/// planned for its first rows, as a cursor is by default, the anti-join probed
/// `study_data`'s key index once per decision, three times slower than hashing the keys once.
///
/// [`UpdateJob::update_data`]: justin_core::UpdateJob::update_data
pub(crate) struct Unrewarded {
    filter: UnrewardedFilter,
    /// The newest decision the update could read.
    upto: i64,
    state: CursorState,
    page: std::vec::IntoIter<ActionRow>,
}

/// Where the cursor of [`Unrewarded`] stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CursorState {
    NotDeclared,
    Open,
    Done,
}

/// What selects an [`Unrewarded`] decision, and the reward it is learned from with.
pub(crate) struct UnrewardedFilter {
    pub included: Vec<&'static str>,
    pub started_at: Option<DateTime<Utc>>,
    pub decided_by: DateTime<Utc>,
    pub uploads_upto: i64,
    pub reward: f64,
}

/// The cursor's name; an update job or an `update_rows` stream reads one at a time per
/// transaction.
const UNREWARDED_CURSOR: &str = "justin_unrewarded";

/// Settings for the rest of the transaction, before the cursor is declared: plan it for all
/// its rows (a hash anti-join over `study_data`'s keys, then a sort by id, rather than an index
/// probe per decision), with room for that hash and sort in memory (at least 256 MB, or the
/// server's `work_mem` when larger; PostgreSQL spills to disk beyond it), and without JIT
/// compilation, which costs more than it saves on a query whose rows are fetched a page at a
/// time.
const PLAN_FOR_ALL_ROWS: &str = "\
SET LOCAL cursor_tuple_fraction = 1; SET LOCAL jit = off; \
SELECT set_config('work_mem', \
    (GREATEST(pg_size_bytes(current_setting('work_mem')), 268435456) / 1024)::text || 'kB', true);";

/// A time as an SQL literal.
fn time_literal(t: DateTime<Utc>) -> String {
    format!(
        "'{}'::timestamptz",
        t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
    )
}

impl Unrewarded {
    pub(crate) fn new(filter: UnrewardedFilter, upto: i64) -> Self {
        Self {
            filter,
            upto,
            state: CursorState::NotDeclared,
            page: Vec::new().into_iter(),
        }
    }

    /// The cursor's query. Every value in it is the service's own (ids, times, the fixed
    /// policy words), written as literals: a cursor's query takes no bound parameters.
    fn declare(&self) -> String {
        let f = &self.filter;
        let included = f
            .included
            .iter()
            .map(|word| format!("'{word}'"))
            .collect::<Vec<_>>()
            .join(",");
        let withdrawn = f.started_at.map_or_else(String::new, |t| {
            format!(
                " AND (u.withdrawn_at IS NULL OR u.withdrawn_at > {})",
                time_literal(t)
            )
        });
        format!(
            "CLOSE ALL; {PLAN_FOR_ALL_ROWS} DECLARE {UNREWARDED_CURSOR} NO SCROLL CURSOR FOR \
             SELECT a.* FROM actions a JOIN users u ON u.user_id = a.user_id \
             WHERE a.id <= {upto} AND a.available \
             AND a.policy = ANY (ARRAY[{included}]::text[]) \
             AND a.created_at <= {decided_by} AND u.erased_at IS NULL{withdrawn} \
             AND NOT EXISTS (SELECT 1 FROM study_data s WHERE s.user_id = a.user_id \
             AND s.decision_type = a.decision_type AND s.decision_idx = a.decision_idx \
             AND s.id <= {uploads_upto}) \
             ORDER BY a.id",
            upto = self.upto,
            decided_by = time_literal(f.decided_by),
            uploads_upto = f.uploads_upto,
        )
    }

    /// The next decision as its imputed record, fetching a page on `conn` when needed.
    fn next(&mut self, conn: &mut PgConnection) -> Option<Result<StudyRecord, StoreError>> {
        loop {
            if let Some(row) = self.page.next() {
                let record = Decision::try_from(row)
                    .map(|decision| StudyRecord::imputed(decision, self.filter.reward));
                if record.is_err() {
                    self.end();
                }
                return Some(record);
            }
            let step = match self.state {
                CursorState::Done => return None,
                CursorState::NotDeclared => conn.batch_execute(&self.declare()).map(|()| {
                    self.state = CursorState::Open;
                }),
                CursorState::Open => diesel::sql_query(format!(
                    "FETCH FORWARD {UPDATE_PAGE_SIZE} FROM {UNREWARDED_CURSOR}"
                ))
                .load::<ActionRow>(conn)
                .and_then(|rows| {
                    if rows.is_empty() {
                        self.state = CursorState::Done;
                        conn.batch_execute(&format!("CLOSE {UNREWARDED_CURSOR}"))
                    } else {
                        self.page = rows.into_iter();
                        Ok(())
                    }
                }),
            };
            if let Err(e) = step {
                self.end();
                return Some(Err(from_diesel(e)));
            }
        }
    }

    fn end(&mut self) {
        self.state = CursorState::Done;
        self.page = Vec::new().into_iter();
    }

    fn ended(&self) -> bool {
        self.state == CursorState::Done && self.page.len() == 0
    }
}

/// The decisions an update learns from with the default reward, and where they are read.
enum Imputed {
    /// After the uploads, on the same connection.
    Inline(Unrewarded),
    /// On a connection of their own, while the uploads are read.
    Ahead(ReadAhead),
}

/// A record [`read_ahead`] passes on; `None` marks the end of the decisions.
type AheadItem = Option<Result<StudyRecord, StoreError>>;

/// [`Unrewarded`] read by a thread of its own on a second connection that imported the
/// update's snapshot, a page ahead of the update: the database plans, joins and sorts the
/// decisions while the update reads its uploads on the job's connection, rather than after.
pub(crate) struct ReadAhead {
    records: Receiver<AheadItem>,
    ended: bool,
}

impl ReadAhead {
    /// Starts reading `unrewarded` on `conn`, which is in a transaction with the update's
    /// snapshot. The thread stops, and rolls back and returns its connection, at the end of
    /// the decisions or as soon as this value is dropped.
    fn start(conn: PooledPg, unrewarded: Unrewarded) -> Result<Self, StoreError> {
        let page = usize::try_from(UPDATE_PAGE_SIZE).unwrap_or(1);
        let (sender, records) = sync_channel(page);
        std::thread::Builder::new()
            .name("justin-imputed-reader".into())
            .spawn(move || read_ahead(conn, unrewarded, &sender))
            .map_err(|e| other(format!("cannot start the imputed decisions' reader: {e}")))?;
        Ok(Self {
            records,
            ended: false,
        })
    }

    fn next(&mut self) -> Option<Result<StudyRecord, StoreError>> {
        if self.ended {
            return None;
        }
        match self.records.recv() {
            Ok(Some(item)) => Some(item),
            Ok(None) => {
                self.ended = true;
                None
            }
            // The thread ended without marking the end: nothing says every decision came.
            Err(_) => {
                self.ended = true;
                Some(Err(other(
                    "the imputed decisions' reader stopped before their end",
                )))
            }
        }
    }
}

/// The thread of [`ReadAhead`]: every decision, then the end mark; it stops early when the
/// update no longer reads.
fn read_ahead(mut conn: PooledPg, mut unrewarded: Unrewarded, sender: &SyncSender<AheadItem>) {
    while let Some(item) = unrewarded.next(&mut conn) {
        if sender.send(Some(item)).is_err() {
            end_transaction(conn);
            return;
        }
    }
    end_transaction(conn);
    // A receiver gone by now no longer needs the mark.
    sender.send(None).ok();
}

/// What an update reads: its uploads, then, when it imputes rewards, the decisions it learns
/// from with the default reward (read on the same connection, or ahead on another).
pub(crate) struct UpdateCursor {
    uploads: Keyset<AvailableStudyRow>,
    /// `None` when the update imputes nothing, or once the uploads failed.
    imputed: Option<Imputed>,
}

impl UpdateCursor {
    /// The uploads `uploads` selects up to id `uploads_upto`, then, with `imputed`, the
    /// decisions it selects up to id `actions_upto`.
    pub(crate) fn new(
        uploads: JobFilter,
        uploads_upto: Option<i64>,
        imputed: Option<(UnrewardedFilter, i64)>,
    ) -> Self {
        Self {
            uploads: Keyset::upto(uploads, uploads_upto),
            imputed: imputed.map(|(filter, upto)| Imputed::Inline(Unrewarded::new(filter, upto))),
        }
    }

    /// Reads the imputed decisions ahead on `conn` ([`ReadAhead`]), which is in a transaction
    /// with the snapshot of the connection the uploads are read on. Without imputed decisions
    /// to read, `conn`'s transaction is rolled back and it goes back to the pool.
    pub(crate) fn read_imputed_ahead(&mut self, conn: PooledPg) -> Result<(), StoreError> {
        match self.imputed.take() {
            Some(Imputed::Inline(unrewarded)) => {
                self.imputed = Some(Imputed::Ahead(ReadAhead::start(conn, unrewarded)?));
            }
            unchanged => {
                self.imputed = unchanged;
                end_transaction(conn);
            }
        }
        Ok(())
    }

    /// The next record, reading a page on `conn` when needed.
    pub(crate) fn next(
        &mut self,
        conn: &mut PgConnection,
    ) -> Option<Result<UpdateRecord, StoreError>> {
        if !self.uploads.ended() {
            match self.uploads.next(conn) {
                Some(Ok(record)) => return Some(Ok(UpdateRecord::Uploaded(record))),
                Some(Err(e)) => {
                    self.imputed = None;
                    return Some(Err(e));
                }
                None => {}
            }
        }
        let (item, ended) = match self.imputed.as_mut()? {
            Imputed::Inline(unrewarded) => {
                let item = unrewarded.next(conn);
                (item, unrewarded.ended())
            }
            Imputed::Ahead(ahead) => {
                let item = ahead.next();
                (item, ahead.ended)
            }
        };
        if ended {
            self.imputed = None;
        }
        item.map(|r| r.map(UpdateRecord::Imputed))
    }

    fn ended(&self) -> bool {
        self.uploads.ended() && self.imputed.is_none()
    }
}

/// [`UpdateCursor`] over a borrowed connection, in the update job's transaction.
pub(crate) struct BorrowedUpdateStream<'c> {
    pub conn: &'c mut PgConnection,
    pub cursor: UpdateCursor,
}

impl Iterator for BorrowedUpdateStream<'_> {
    type Item = Result<UpdateRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.cursor.next(self.conn)
    }
}

/// [`UpdateCursor`] owning a pooled connection in a read-only repeatable-read transaction, for
/// `update_rows`; the connection goes back to the pool when the stream ends or is dropped.
pub(crate) struct UpdateRowsStream {
    conn: Option<PooledPg>,
    cursor: UpdateCursor,
}

impl UpdateRowsStream {
    /// Streams what the update that produced `version` read ([`update_read`]).
    pub(crate) fn open(mut conn: PooledPg, version: i64) -> Result<Self, StoreError> {
        AnsiTransactionManager::begin_transaction_sql(
            &mut *conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .map_err(from_diesel)?;
        match update_read(&mut conn, version) {
            Ok(cursor) => {
                let mut stream = Self {
                    conn: Some(conn),
                    cursor,
                };
                if stream.cursor.ended() {
                    stream.finish();
                }
                Ok(stream)
            }
            Err(e) => {
                end_transaction(conn);
                Err(from_diesel(e))
            }
        }
    }

    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            end_transaction(conn);
        }
    }
}

impl Iterator for UpdateRowsStream {
    type Item = Result<UpdateRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let conn = self.conn.as_mut()?;
        let item = self.cursor.next(conn);
        if item.is_none() || self.cursor.ended() {
            self.finish();
        }
        item
    }
}

impl Drop for UpdateRowsStream {
    fn drop(&mut self) {
        self.finish();
    }
}

impl KeysetRow for ActionRow {
    type Item = Decision;
    type Filter = ();

    fn id(&self) -> i64 {
        self.id
    }

    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>> {
        actions::table.select(max(actions::id)).first(conn)
    }

    fn page(
        conn: &mut PgConnection,
        (): &(),
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

/// Decisions in storage order, each with its upload and the first update that read it; see
/// [`export_page`]. The filter is the completed updates, read once when the stream starts.
impl KeysetRow for ExportDbRow {
    type Item = ExportRow;
    type Filter = UpdatesSeen;

    /// Small pages keep the memory the allocator holds on to small, as for an update's pages.
    const PAGE: i64 = EXPORT_PAGE_SIZE;

    fn id(&self) -> i64 {
        self.decision.id
    }

    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>> {
        ActionRow::max_id(conn)
    }

    fn page(
        conn: &mut PgConnection,
        updates: &UpdatesSeen,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        export_page(conn, updates, None, after, upto, limit)
    }
}

/// The rows of [`ExportDbRow`] with their JSON passed through as the stored text.
pub(crate) struct ExportLineDbRow(ExportDbRow);

impl TryFrom<ExportLineDbRow> for ExportLine {
    type Error = StoreError;

    fn try_from(row: ExportLineDbRow) -> Result<Self, StoreError> {
        Self::try_from(row.0)
    }
}

impl KeysetRow for ExportLineDbRow {
    type Item = ExportLine;
    type Filter = UpdatesSeen;

    const PAGE: i64 = EXPORT_PAGE_SIZE;

    fn id(&self) -> i64 {
        self.0.decision.id
    }

    fn max_id(conn: &mut PgConnection) -> QueryResult<Option<i64>> {
        ActionRow::max_id(conn)
    }

    fn page(
        conn: &mut PgConnection,
        updates: &UpdatesSeen,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>> {
        let rows = export_page(conn, updates, None, after, upto, limit)?;
        Ok(rows.into_iter().map(ExportLineDbRow).collect())
    }
}

/// A completed update as the export needs it to say which update first read each row.
struct UpdateSeen {
    version: i64,
    last_study_data_id: i64,
    included_policies: String,
    started_at: Option<DateTime<Utc>>,
    /// The newest decision it could impute a reward for, its cut-off and its default reward,
    /// when it imputed rewards.
    imputed: Option<(Option<i64>, DateTime<Utc>, Option<f64>)>,
}

impl UpdateSeen {
    fn includes(&self, policy: &str) -> bool {
        self.included_policies.split(',').any(|word| word == policy)
    }

    /// Whether it started before the participant withdrew: an update whose start is not known
    /// (one completed before starts were recorded) predates every withdrawal.
    fn before_withdrawal(&self, withdrawn_at: Option<DateTime<Utc>>) -> bool {
        match (withdrawn_at, self.started_at) {
            (Some(withdrawn), Some(started)) => withdrawn > started,
            _ => true,
        }
    }
}

/// Every completed update in a snapshot, by watermark then version ([`first_reading`]'s
/// order), those that imputed rewards, by version ([`first_imputing`]'s), and when each
/// participant who withdrew did so.
pub(crate) struct UpdatesSeen {
    reading: Vec<UpdateSeen>,
    imputing: Vec<UpdateSeen>,
    /// Withdrawals by participant; only an update that started before a withdrawal reads the
    /// participant's rows. Empty without updates, which no withdrawal can change.
    withdrawn: HashMap<String, DateTime<Utc>>,
}

impl UpdatesSeen {
    fn withdrawn_at(&self, user_id: &str) -> Option<DateTime<Utc>> {
        self.withdrawn.get(user_id).copied()
    }
}

/// Every completed update in the caller's snapshot: a few hundred rows for a long study, read
/// once per export stream so that no row of the export searches the updates in SQL (a
/// correlated subquery per row cost some 100 µs a row with 32 updates). With them, the
/// participants who withdrew, one row each, so that no row of the export looks its participant
/// up either (a quarter of a page's time in the database).
pub(crate) fn updates_seen(conn: &mut PgConnection) -> QueryResult<UpdatesSeen> {
    type Row = (
        i64,
        i64,
        String,
        Option<DateTime<Utc>>,
        Option<i64>,
        Option<DateTime<Utc>>,
        Option<f64>,
    );
    let rows: Vec<Row> = update_provenance::table
        .inner_join(model_update_requests::table)
        .order((
            update_provenance::last_study_data_id,
            update_provenance::parameter_version,
        ))
        .select((
            update_provenance::parameter_version,
            update_provenance::last_study_data_id,
            update_provenance::included_policies,
            model_update_requests::started_at,
            update_provenance::last_action_id,
            update_provenance::imputed_decided_by,
            update_provenance::default_reward,
        ))
        .load(conn)?;
    let mut reading = Vec::with_capacity(rows.len());
    let mut imputing = Vec::new();
    for (version, last_study_data_id, included_policies, started_at, upto, cut_off, reward) in rows
    {
        let update = |imputed| UpdateSeen {
            version,
            last_study_data_id,
            included_policies: included_policies.clone(),
            started_at,
            imputed,
        };
        if let Some(cut_off) = cut_off {
            imputing.push(update(Some((upto, cut_off, reward))));
        }
        reading.push(update(None));
    }
    imputing.sort_by_key(|u| u.version);
    let withdrawn = if reading.is_empty() {
        HashMap::new()
    } else {
        users::table
            .filter(users::withdrawn_at.is_not_null())
            .select((users::user_id, users::withdrawn_at.assume_not_null()))
            .load::<(String, DateTime<Utc>)>(conn)?
            .into_iter()
            .collect()
    };
    Ok(UpdatesSeen {
        reading,
        imputing,
        withdrawn,
    })
}

/// The first update that read `upload`: of the updates whose watermark is at or above the
/// upload's id, that included the upload's policy (any update includes an upload without a
/// logged decision) and that started before the participant withdrew, the one with the smallest
/// watermark (the smallest version among equal ones); `reading` is in that order. None for an
/// upload of an unavailable decision.
fn first_reading(
    reading: &[UpdateSeen],
    upload: &ExportedUploadRow,
    withdrawn_at: Option<DateTime<Utc>>,
) -> Option<i64> {
    if !upload.available {
        return None;
    }
    let from = reading.partition_point(|u| u.last_study_data_id < upload.id);
    reading[from..]
        .iter()
        .find(|u| {
            upload
                .policy
                .as_deref()
                .is_none_or(|policy| u.includes(policy))
                && u.before_withdrawal(withdrawn_at)
        })
        .map(|u| u.version)
}

/// The first update (smallest version; `imputing` is in that order) that learned from
/// `decision` with its default reward, and that reward: one that could read the decision (its
/// id at most the update's newest decision, made at or before its cut-off), found no upload
/// for it at or below its watermark, included its policy and started before its participant
/// withdrew; the rule [`Unrewarded`] streams by.
fn first_imputing(
    imputing: &[UpdateSeen],
    decision: &ExportedActionRow,
    upload_id: Option<i64>,
    withdrawn_at: Option<DateTime<Utc>>,
) -> (Option<i64>, Option<f64>) {
    if !decision.available {
        return (None, None);
    }
    imputing
        .iter()
        .find_map(|u| {
            let (upto, cut_off, reward) = u.imputed?;
            let learned = upto.is_some_and(|upto| upto >= decision.id)
                && decision.created_at <= cut_off
                && u.includes(&decision.policy)
                && upload_id.is_none_or(|id| id > u.last_study_data_id)
                && u.before_withdrawal(withdrawn_at);
            learned.then_some((Some(u.version), reward))
        })
        .unwrap_or((None, None))
}

/// Up to `limit` rows of the export with `after < id <= upto` (of participant `user` only,
/// when given), by decision id: each decision with its upload, the first update of `updates`
/// that read the upload ([`first_reading`]) and the first that imputed its reward
/// ([`first_imputing`]). `updates` were read in the caller's snapshot like the rows, so an
/// update completing meanwhile shows on no page. Without `user` the query has one shape, which
/// the connection prepares once.
pub(crate) fn export_page(
    conn: &mut PgConnection,
    updates: &UpdatesSeen,
    user: Option<&str>,
    after: i64,
    upto: i64,
    limit: i64,
) -> QueryResult<Vec<ExportDbRow>> {
    type Row = (ExportedActionRow, Option<ExportedUploadRow>);
    let same_key = study_data::user_id
        .eq(actions::user_id)
        .and(study_data::decision_type.eq(actions::decision_type))
        .and(study_data::decision_idx.eq(actions::decision_idx));
    let query = actions::table
        .left_join(study_data::table.on(same_key))
        .filter(actions::id.gt(after))
        .filter(actions::id.le(upto))
        .order(actions::id)
        .limit(limit)
        .select((
            ExportedActionRow::as_select(),
            Option::<ExportedUploadRow>::as_select(),
        ));
    let rows: Vec<Row> = match user {
        Some(user) => query
            .into_boxed()
            .filter(actions::user_id.eq(user))
            .load(conn)?,
        None => query.load(conn)?,
    };
    // The value in force now: every correction the snapshot holds.
    let ids: Vec<i64> = rows
        .iter()
        .filter_map(|(_, upload)| upload.as_ref().map(|u| u.id))
        .collect();
    let mut newest = crate::corrections::in_force(conn, &ids, i64::MAX)?;
    Ok(rows
        .into_iter()
        .map(|(decision, upload)| {
            let withdrawn_at = updates.withdrawn_at(&decision.user_id);
            let used_in_version = upload
                .as_ref()
                .and_then(|u| first_reading(&updates.reading, u, withdrawn_at));
            let (imputed_in_version, imputed_reward) = first_imputing(
                &updates.imputing,
                &decision,
                upload.as_ref().map(|u| u.id),
                withdrawn_at,
            );
            let correction = upload.as_ref().and_then(|u| newest.remove(&u.id));
            ExportDbRow {
                decision,
                upload,
                used_in_version,
                correction,
                imputed_in_version,
                imputed_reward,
            }
        })
        .collect())
}

/// What the update that produced `version` read, in the stream's snapshot: the uploads
/// [`AvailableStudyRow`] selects with the policies it included, its start and its correction
/// watermark, up to its watermark, then, when it imputed rewards, the decisions [`Unrewarded`]
/// selects with its cut-off and default reward, up to its newest decision. An unknown version,
/// the initial one, or one stored by no update streams nothing.
pub(crate) fn update_read(conn: &mut PgConnection, version: i64) -> QueryResult<UpdateCursor> {
    type Read = (
        i64,
        String,
        Option<DateTime<Utc>>,
        Option<i64>,
        Option<DateTime<Utc>>,
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
    Ok(match found {
        Some((upto, included, started_at, actions_upto, decided_by, reward, corrections_upto)) => {
            let included = included_words(UpdateInclusion::from_stored(&included));
            let imputed = match (actions_upto, decided_by, reward) {
                (Some(actions_upto), Some(decided_by), Some(reward)) => Some((
                    UnrewardedFilter {
                        included: included.clone(),
                        started_at,
                        decided_by,
                        uploads_upto: upto,
                        reward,
                    },
                    actions_upto,
                )),
                _ => None,
            };
            UpdateCursor::new(
                JobFilter {
                    included,
                    started_at,
                    // An update stored before corrections existed read none.
                    corrections_upto: corrections_upto.unwrap_or(0),
                },
                Some(upto),
                imputed,
            )
        }
        None => UpdateCursor::new(
            JobFilter {
                included: Vec::new(),
                started_at: None,
                corrections_upto: 0,
            },
            None,
            None,
        ),
    })
}

/// The paging state, independent of who owns the connection.
pub(crate) struct Keyset<R: KeysetRow> {
    filter: R::Filter,
    last_id: i64,
    /// `None` once the stream has ended (no rows, all read, or an error).
    max_id: Option<i64>,
    page: std::vec::IntoIter<R>,
}

impl<R: KeysetRow> Keyset<R> {
    fn end(&mut self) {
        self.max_id = None;
        self.page = Vec::new().into_iter();
    }

    fn ended(&self) -> bool {
        self.max_id.is_none()
    }
}

impl<R: KeysetRow> Keyset<R> {
    /// Reads the id bound. In a repeatable-read transaction this first query also fixes the
    /// snapshot, so the bound and the pages agree.
    pub(crate) fn start(conn: &mut PgConnection, filter: R::Filter) -> Result<Self, StoreError> {
        let max_id = R::max_id(conn).map_err(from_diesel)?;
        Ok(Self::upto(filter, max_id))
    }

    /// Pages the rows `filter` selects with ids up to `max_id` (none when `None`).
    pub(crate) fn upto(filter: R::Filter, max_id: Option<i64>) -> Self {
        Self {
            filter,
            last_id: i64::MIN,
            max_id,
            page: Vec::new().into_iter(),
        }
    }

    /// The next item, reading a page on `conn` when the current one is used up.
    pub(crate) fn next(&mut self, conn: &mut PgConnection) -> Option<Result<R::Item, StoreError>> {
        loop {
            if let Some(row) = self.page.next() {
                let item = R::Item::try_from(row);
                if item.is_err() {
                    self.end();
                }
                return Some(item);
            }
            let max_id = self.max_id?;
            if self.last_id >= max_id {
                self.end();
                return None;
            }
            match R::page(conn, &self.filter, self.last_id, max_id, R::PAGE) {
                Ok(rows) => match rows.last() {
                    Some(last) => {
                        self.last_id = last.id();
                        self.page = rows.into_iter();
                    }
                    None => {
                        self.end();
                        return None;
                    }
                },
                Err(e) => {
                    self.end();
                    return Some(Err(from_diesel(e)));
                }
            }
        }
    }
}

/// A stream owning a pooled connection in a read-only repeatable-read transaction; the
/// connection goes back to the pool as soon as the stream ends or is dropped.
pub(crate) struct SnapshotStream<R: KeysetRow> {
    /// `None` once the stream has ended.
    conn: Option<PooledPg>,
    keyset: Keyset<R>,
}

impl<R: KeysetRow<Filter = ()>> SnapshotStream<R> {
    pub(crate) fn open(conn: PooledPg) -> Result<Self, StoreError> {
        Self::open_with(conn, |_| Ok(()))
    }
}

impl<R: KeysetRow> SnapshotStream<R> {
    /// Opens the stream with the filter `filter` reads in the stream's snapshot.
    pub(crate) fn open_with(
        mut conn: PooledPg,
        filter: impl FnOnce(&mut PgConnection) -> QueryResult<R::Filter>,
    ) -> Result<Self, StoreError> {
        AnsiTransactionManager::begin_transaction_sql(
            &mut *conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .map_err(from_diesel)?;
        let started = filter(&mut conn)
            .map_err(from_diesel)
            .and_then(|filter| Keyset::start(&mut conn, filter));
        match started {
            Ok(keyset) => {
                let mut stream = Self {
                    conn: Some(conn),
                    keyset,
                };
                if stream.keyset.ended() {
                    stream.finish();
                }
                Ok(stream)
            }
            Err(e) => {
                end_transaction(conn);
                Err(e)
            }
        }
    }
}

impl<R: KeysetRow> SnapshotStream<R> {
    /// Ends the transaction and returns the connection to the pool.
    fn finish(&mut self) {
        self.keyset.end();
        if let Some(conn) = self.conn.take() {
            end_transaction(conn);
        }
    }
}

/// Rolls back the stream's read-only transaction; the connection then goes back to the pool.
/// Should the rollback fail, Diesel marks the connection broken and the pool drops it instead
/// of reusing it.
pub(crate) fn end_transaction(mut conn: PooledPg) {
    if let Err(e) = AnsiTransactionManager::rollback_transaction(&mut *conn) {
        log::warn!("ending a streaming transaction failed: {e}");
    }
}

impl<R: KeysetRow> Iterator for SnapshotStream<R> {
    type Item = Result<R::Item, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let conn = self.conn.as_mut()?;
        let item = self.keyset.next(conn);
        if self.keyset.ended() {
            self.finish();
        }
        item
    }
}

impl<R: KeysetRow> Drop for SnapshotStream<R> {
    fn drop(&mut self) {
        self.finish();
    }
}
