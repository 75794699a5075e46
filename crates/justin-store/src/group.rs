//! Group commit for decisions: requests to record a decision that arrive while another batch
//! is being written queue, and the next of them to run writes every queued decision in one
//! multi-row `INSERT` (one statement, one transaction, one commit), answering each only after
//! that commit.
//!
//! Leadership passes from caller to caller: there is no thread of its own. A request that finds
//! no batch running writes at once, with whatever has queued (at one connection, its own
//! decision alone, by the same statement as without grouping). A request that finds a batch
//! running waits; when the batch ends, the oldest waiter leads the next one, taking everything
//! that queued meanwhile. The ending batch calls the next leader before it answers its own
//! waiters, so the next batch starts without waiting for the threads those answers wake. At
//! most [`MAX_IN_FLIGHT`] batches run at once and each holds at most [`MAX_BATCH`] decisions.
//!
//! The batch's insert reports which decisions it stored. A decision it did not store (its key
//! was taken, its participant is out of the study, its parameter version is stale, or the
//! whole statement failed) is recorded again by its own request, alone, on the path that says
//! why; that path is idempotent, so a decision the batch did store and could not report (a
//! connection lost after the commit) is found there as the stored one.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Nullable, SmallInt, Text, Timestamptz};
use justin_core::StoreError;

use crate::error::{from_diesel, other};
use crate::models::DecisionValues;

/// Batches written at once. One batch at a time keeps the tail short: a second batch would
/// compete with the first for the same two CPUs, and a decision that waits for the running
/// batch is written in the next one with everything else that queued meanwhile.
pub(crate) const MAX_IN_FLIGHT: usize = 1;

/// Decisions written by one statement at most.
pub(crate) const MAX_BATCH: usize = 128;

/// A decision's values, owned, as the batch's arrays take them.
#[derive(Debug)]
pub(crate) struct BatchRow {
    user_id: String,
    decision_type: String,
    decision_idx: i64,
    requested_at: DateTime<Utc>,
    decided_at: DateTime<Utc>,
    context: String,
    state: String,
    action: i16,
    action_prob: f64,
    parameter_version: i64,
    rng_seed: i64,
    available: bool,
    unavailable_reason: Option<String>,
    sent_timestamp: String,
    policy: &'static str,
    fallback_reason: Option<String>,
    decided_by: Option<String>,
    in_study: bool,
    /// Stored only while the participant is in the study (`DecisionGuard::InStudy` without
    /// counts); otherwise unguarded (`DecisionGuard::None`).
    guarded: bool,
}

impl BatchRow {
    /// The row for `v`, serialising its JSON here, on the caller's thread.
    pub(crate) fn new(v: &DecisionValues<'_>, guarded: bool) -> Result<Self, StoreError> {
        Ok(Self {
            user_id: v.user_id.to_owned(),
            decision_type: v.decision_type.to_owned(),
            decision_idx: v.decision_idx,
            requested_at: v.requested_at,
            decided_at: v.decided_at,
            context: serde_json::to_string(v.context.0).map_err(other)?,
            state: serde_json::to_string(&v.state).map_err(other)?,
            action: v.action,
            action_prob: v.action_prob,
            parameter_version: v.parameter_version,
            rng_seed: v.rng_seed,
            available: v.available,
            unavailable_reason: v.unavailable_reason.map(str::to_owned),
            sent_timestamp: v.sent_timestamp.to_owned(),
            policy: v.policy,
            fallback_reason: v.fallback_reason.map(str::to_owned),
            decided_by: v.decided_by.map(str::to_owned),
            in_study: v.in_study,
            guarded,
        })
    }

    fn key(&self) -> (&str, &str, i64) {
        (&self.user_id, &self.decision_type, self.decision_idx)
    }
}

/// Where a queued request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// In the queue.
    Waiting,
    /// Called to lead the next batch.
    Lead,
    /// Its batch ran: whether it stored this request's decision.
    Written { stored: bool },
}

/// One request in the queue or in a batch.
#[derive(Debug)]
pub(crate) struct Waiter {
    row: BatchRow,
    turn: Mutex<Turn>,
    woken: Condvar,
}

impl Waiter {
    fn set(&self, turn: Turn) {
        *lock(&self.turn) = turn;
        self.woken.notify_one();
    }

    fn wait(&self) -> Turn {
        let mut turn = lock(&self.turn);
        while *turn == Turn::Waiting {
            turn = self
                .woken
                .wait(turn)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *turn
    }
}

/// A lock whose holder panicked is still consistent here: every critical section only moves
/// waiters between the queue and a batch, or sets a turn.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Arc<Waiter>>,
    in_flight: usize,
}

/// The queue of decisions waiting for a batch. Shared by the clones of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupCommit {
    queue: Mutex<Queue>,
}

/// What [`GroupCommit::join`] gives its caller.
pub(crate) enum Joined {
    /// The caller leads this batch (its own decision first). It must write it and hand every
    /// waiter its outcome through [`Batch::finish`]; dropping the batch unfinished answers
    /// each waiter "not stored", so they record their decision alone.
    Lead(Batch),
    /// Another request's batch ran; whether it stored this decision.
    Written { stored: bool },
}

impl GroupCommit {
    /// The lead of a batch of the caller's decision alone, when no batch is being written
    /// (then none waits either: a waiter is called to lead as soon as a batch ends). The
    /// caller writes its decision as without grouping, and does not make a [`BatchRow`].
    pub(crate) fn lead_alone(self: &Arc<Self>) -> Option<Batch> {
        let mut queue = lock(&self.queue);
        if queue.in_flight >= MAX_IN_FLIGHT {
            return None;
        }
        queue.in_flight += 1;
        Some(Batch {
            group: Arc::clone(self),
            waiters: Vec::new(),
            stored: None,
            ended: false,
        })
    }

    /// Queues `row` and returns when the caller may go on: to lead a batch, or with the
    /// outcome of the batch that held its decision.
    pub(crate) fn join(self: &Arc<Self>, row: BatchRow) -> Joined {
        let me = Arc::new(Waiter {
            row,
            turn: Mutex::new(Turn::Waiting),
            woken: Condvar::new(),
        });
        {
            let mut queue = lock(&self.queue);
            if queue.in_flight < MAX_IN_FLIGHT {
                queue.in_flight += 1;
                return Joined::Lead(self.take(&mut queue, me));
            }
            queue.waiting.push_back(Arc::clone(&me));
        }
        match me.wait() {
            Turn::Lead => {
                // The batch that ended counted this one in flight when it called it.
                let mut queue = lock(&self.queue);
                Joined::Lead(self.take(&mut queue, me))
            }
            Turn::Written { stored } => Joined::Written { stored },
            Turn::Waiting => Joined::Written { stored: false },
        }
    }

    /// A batch led by `leader`, with what queued before it, oldest first.
    fn take(self: &Arc<Self>, queue: &mut Queue, leader: Arc<Waiter>) -> Batch {
        let more = queue.waiting.len().min(MAX_BATCH - 1);
        let mut waiters = Vec::with_capacity(more + 1);
        waiters.push(leader);
        waiters.extend(queue.waiting.drain(..more));
        Batch {
            group: Arc::clone(self),
            waiters,
            stored: None,
            ended: false,
        }
    }

    /// Decisions waiting for a batch (not those of a batch being written).
    #[cfg(feature = "testing")]
    pub(crate) fn waiting(&self) -> usize {
        lock(&self.queue).waiting.len()
    }

    /// A batch ended: the oldest waiter, if any, leads the next.
    fn ended(&self) {
        let mut queue = lock(&self.queue);
        queue.in_flight -= 1;
        if let Some(next) = queue.waiting.pop_front() {
            queue.in_flight += 1;
            next.set(Turn::Lead);
        }
    }
}

/// Decisions to write together. The first is the leader's (none when it leads alone:
/// [`GroupCommit::lead_alone`]).
pub(crate) struct Batch {
    group: Arc<GroupCommit>,
    waiters: Vec<Arc<Waiter>>,
    /// Which were stored, once written.
    stored: Option<Vec<bool>>,
    /// Whether the queue knows the batch ended.
    ended: bool,
}

impl Batch {
    /// How many decisions the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Writes the batch in one statement on `conn` and keeps which decisions it stored. A
    /// failure stores nothing (the statement is its own transaction) and is returned; the
    /// batch then answers every decision "not stored".
    pub(crate) fn write(&mut self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let stored = insert_batch(conn, &self.waiters)?;
        self.stored = Some(stored);
        Ok(())
    }

    /// Lets the next batch start, then answers every other request of the batch; returns
    /// whether the leader's own decision was stored.
    pub(crate) fn finish(mut self) -> bool {
        // The next leader is called first: the answers below wake many threads at once, and
        // the next batch should not wait for them to be scheduled.
        self.end();
        let stored = self.stored.take().unwrap_or_default();
        let own = stored.first().copied().unwrap_or(false);
        for (i, waiter) in self.waiters.iter().enumerate().skip(1) {
            waiter.set(Turn::Written {
                stored: stored.get(i).copied().unwrap_or(false),
            });
        }
        self.waiters.truncate(1);
        own
    }

    /// Ends the batch for the queue (once): the next batch may start.
    fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            self.group.ended();
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        self.end();
        // Reached unfinished only when the leader unwound: whoever still waits records alone.
        for waiter in self.waiters.iter().skip(1) {
            waiter.set(Turn::Written { stored: false });
        }
    }
}

/// The batch's insert: one row per array element, each with the conditions of the one-row
/// inserts in `pg.rs` (its participant in the study if guarded, no study data on its key, its
/// version the newest), and its participant registered even when unguarded, so that one
/// unknown participant skips its row rather than failing the batch on the foreign key. The
/// key's lock (`justin_decision_key_uploaded`) is taken once per row in the order of the
/// arrays, which [`insert_batch`] sorts by key, so batches lock keys in one order.
///
/// Its text is the same for every batch (the rows are bound as arrays), so Diesel prepares it
/// once per connection.
struct BatchInsert<'a> {
    user_id: Vec<&'a str>,
    decision_type: Vec<&'a str>,
    decision_idx: Vec<i64>,
    requested_at: Vec<DateTime<Utc>>,
    decided_at: Vec<DateTime<Utc>>,
    context: Vec<&'a str>,
    state: Vec<&'a str>,
    action: Vec<i16>,
    action_prob: Vec<f64>,
    parameter_version: Vec<i64>,
    rng_seed: Vec<i64>,
    available: Vec<bool>,
    unavailable_reason: Vec<Option<&'a str>>,
    sent_timestamp: Vec<&'a str>,
    policy: Vec<&'a str>,
    fallback_reason: Vec<Option<&'a str>>,
    decided_by: Vec<Option<&'a str>>,
    in_study: Vec<bool>,
    guarded: Vec<bool>,
}

impl<'a> BatchInsert<'a> {
    fn new(rows: &[&'a BatchRow]) -> Self {
        fn each<'a, T>(rows: &[&'a BatchRow], f: impl Fn(&'a BatchRow) -> T) -> Vec<T> {
            rows.iter().map(|r| f(r)).collect()
        }
        Self {
            user_id: each(rows, |r| r.user_id.as_str()),
            decision_type: each(rows, |r| r.decision_type.as_str()),
            decision_idx: each(rows, |r| r.decision_idx),
            requested_at: each(rows, |r| r.requested_at),
            decided_at: each(rows, |r| r.decided_at),
            context: each(rows, |r| r.context.as_str()),
            state: each(rows, |r| r.state.as_str()),
            action: each(rows, |r| r.action),
            action_prob: each(rows, |r| r.action_prob),
            parameter_version: each(rows, |r| r.parameter_version),
            rng_seed: each(rows, |r| r.rng_seed),
            available: each(rows, |r| r.available),
            unavailable_reason: each(rows, |r| r.unavailable_reason.as_deref()),
            sent_timestamp: each(rows, |r| r.sent_timestamp.as_str()),
            policy: each(rows, |r| r.policy),
            fallback_reason: each(rows, |r| r.fallback_reason.as_deref()),
            decided_by: each(rows, |r| r.decided_by.as_deref()),
            in_study: each(rows, |r| r.in_study),
            guarded: each(rows, |r| r.guarded),
        }
    }
}

impl diesel::query_builder::QueryId for BatchInsert<'_> {
    type QueryId = ();
    // No type names the statement; Diesel keys its statement cache by the text instead.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl diesel::query_builder::Query for BatchInsert<'_> {
    type SqlType = (Text, Text, BigInt);
}

impl RunQueryDsl<PgConnection> for BatchInsert<'_> {}

impl diesel::query_builder::QueryFragment<diesel::pg::Pg> for BatchInsert<'_> {
    fn walk_ast<'b>(
        &'b self,
        mut out: diesel::query_builder::AstPass<'_, 'b, diesel::pg::Pg>,
    ) -> QueryResult<()> {
        // The key's lock is taken, and its study data looked up, in the materialised list:
        // once per row, in the order of the arrays, whatever plan the insert gets.
        out.push_sql(
            "WITH r AS MATERIALIZED (SELECT r.*, \
             justin_decision_key_uploaded(r.user_id, r.decision_type, r.decision_idx) \
             AS uploaded FROM unnest(",
        );
        out.push_bind_param::<Array<Text>, _>(&self.user_id)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.decision_type)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.decision_idx)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.requested_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.decided_at)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.context)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.state)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SmallInt>, _>(&self.action)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Double>, _>(&self.action_prob)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.parameter_version)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<BigInt>, _>(&self.rng_seed)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.available)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.unavailable_reason)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.sent_timestamp)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.policy)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.fallback_reason)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.decided_by)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.in_study)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Bool>, _>(&self.guarded)?;
        out.push_sql(
            ") AS r(user_id, decision_type, decision_idx, requested_at, decided_at, context, \
             state, action, action_prob, parameter_version, rng_seed, available, \
             unavailable_reason, sent_timestamp, policy, fallback_reason, decided_by, in_study, \
             guarded)) \
             INSERT INTO actions (user_id, decision_type, decision_idx, request_timestamp, \
             created_at, context, state, action, action_prob, parameter_version, rng_seed, \
             available, unavailable_reason, sent_timestamp, policy, fallback_reason, \
             decided_by, in_study) \
             SELECT r.user_id, r.decision_type, r.decision_idx, r.requested_at, r.decided_at, \
             r.context::json, r.state::json, r.action, r.action_prob, r.parameter_version, \
             r.rng_seed, r.available, r.unavailable_reason, r.sent_timestamp, r.policy, \
             r.fallback_reason, r.decided_by, r.in_study FROM r \
             WHERE NOT r.uploaded AND EXISTS (SELECT 1 FROM users u WHERE u.user_id = r.user_id \
                 AND (NOT r.guarded \
                      OR ((u.study_start IS NULL OR u.study_start <= r.requested_at) \
                          AND (u.study_end IS NULL OR u.study_end > r.requested_at) \
                          AND u.withdrawn_at IS NULL AND u.erased_at IS NULL))) \
             AND r.parameter_version >= (SELECT max(version) FROM model_parameters) \
             ON CONFLICT (user_id, decision_type, decision_idx) DO NOTHING \
             RETURNING user_id, decision_type, decision_idx",
        );
        Ok(())
    }
}

/// Inserts the waiters' decisions in one statement; for each waiter, in order, whether its
/// decision was stored. Of two decisions on one key, the one that queued first is written first
/// (the second finds the key taken).
fn insert_batch(conn: &mut PgConnection, waiters: &[Arc<Waiter>]) -> Result<Vec<bool>, StoreError> {
    let mut order: Vec<usize> = (0..waiters.len()).collect();
    // Stable: equal keys keep their queue order.
    order.sort_by(|&a, &b| waiters[a].row.key().cmp(&waiters[b].row.key()));
    let rows: Vec<&BatchRow> = order.iter().map(|&i| &waiters[i].row).collect();
    let stored_keys = BatchInsert::new(&rows)
        .load::<(String, String, i64)>(conn)
        .map_err(from_diesel)?;
    let mut stored = vec![false; waiters.len()];
    for (user_id, decision_type, decision_idx) in &stored_keys {
        let k = (user_id.as_str(), decision_type.as_str(), *decision_idx);
        // The first waiter, in queue order, on the key: the one the insert wrote.
        if let Some(i) = (0..waiters.len()).find(|&i| !stored[i] && waiters[i].row.key() == k) {
            stored[i] = true;
        }
    }
    Ok(stored)
}
