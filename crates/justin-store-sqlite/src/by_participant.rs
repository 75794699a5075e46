//! The export ordered by participant ([`justin_core::Store::export_by_participant`]): the
//! participants in the byte order of their ids (SQLite's `BINARY` collation), and each one's
//! decisions in storage order, within the export's bound read when the stream starts (see
//! `stream`: on SQLite the bound alone keeps later rows out, so no transaction is held and
//! each query checks a connection out of the pool).
//!
//! No index orders decisions by (participant, id), so one keyset over that pair would sort the
//! whole table for every page. Instead the participants are paged from `users` through its
//! unique index, a batch at a time, and each participant's decisions are paged by id through
//! the key's unique index, which starts with `user_id`: one query per participant (and per
//! [`PAGE_SIZE`] of their decisions), each reading that participant's rows only. Decisions name
//! registered participants (a foreign key; an erased one's pseudonym replaced the id in both
//! tables), so every decision is reached.

use std::collections::VecDeque;

use diesel::prelude::*;
use justin_core::{ExportRow, StoreError};

use crate::error::from_diesel;
use crate::models::ExportRecord;
use crate::schema::users;
use crate::store::SqliteStore;
use crate::stream::{export_page, ExportBound, KeysetRow, PAGE_SIZE};

/// Participants read per query.
const USER_BATCH: i64 = 1000;

/// The next participants after `last` (from the first when `None`), by byte order.
fn next_users(conn: &mut SqliteConnection, last: Option<&str>) -> QueryResult<Vec<String>> {
    let mut query = users::table
        .select(users::user_id)
        .order(users::user_id)
        .limit(USER_BATCH)
        .into_boxed();
    if let Some(last) = last {
        query = query.filter(users::user_id.gt(last.to_owned()));
    }
    query.load(conn)
}

/// The decisions of one participant being paged.
struct Current {
    user: String,
    last_id: i64,
    /// Whether the last page was full, so that another may follow.
    more: bool,
    page: std::vec::IntoIter<ExportRecord>,
}

/// See the module's documentation.
pub(crate) struct ByParticipantStream {
    store: SqliteStore,
    /// `None` once the stream has ended (or when there is nothing to export).
    bound: Option<ExportBound>,
    /// Participants fetched and not yet read.
    users: VecDeque<String>,
    /// The last participant fetched, where the next batch starts.
    last_user: Option<String>,
    /// Whether every participant has been fetched.
    users_done: bool,
    current: Option<Current>,
}

impl ByParticipantStream {
    pub(crate) fn open(store: &SqliteStore) -> Result<Self, StoreError> {
        let bound = ExportRecord::bound(&mut *store.conn()?).map_err(from_diesel)?;
        Ok(Self {
            store: store.clone(),
            bound,
            users: VecDeque::new(),
            last_user: None,
            users_done: false,
            current: None,
        })
    }

    fn finish(&mut self) {
        self.bound = None;
        self.users.clear();
        self.current = None;
    }

    /// The next item, or `None` at the end; errors end the stream.
    fn step(&mut self) -> Result<Option<ExportRow>, StoreError> {
        loop {
            let Some(bound) = self.bound else {
                return Ok(None);
            };
            if let Some(current) = self.current.as_mut() {
                if let Some(row) = current.page.next() {
                    return <ExportRow>::try_from(row).map(Some);
                }
                if current.more {
                    let rows = export_page(
                        &mut *self.store.conn()?,
                        Some(&current.user),
                        current.last_id,
                        bound,
                        PAGE_SIZE,
                    )
                    .map_err(from_diesel)?;
                    current.more = rows.len() as i64 == PAGE_SIZE;
                    if let Some(last) = rows.last() {
                        current.last_id = last.id();
                    }
                    current.page = rows.into_iter();
                    continue;
                }
                self.current = None;
            }
            if self.users.is_empty() && !self.users_done {
                let batch = next_users(&mut *self.store.conn()?, self.last_user.as_deref())
                    .map_err(from_diesel)?;
                self.users_done = (batch.len() as i64) < USER_BATCH;
                self.last_user = batch.last().cloned();
                self.users.extend(batch);
            }
            let Some(user) = self.users.pop_front() else {
                self.finish();
                return Ok(None);
            };
            self.current = Some(Current {
                user,
                last_id: i64::MIN,
                more: true,
                page: Vec::new().into_iter(),
            });
        }
    }
}

impl Iterator for ByParticipantStream {
    type Item = Result<ExportRow, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(row)) => Some(Ok(row)),
            Ok(None) => None,
            Err(e) => {
                self.finish();
                Some(Err(e))
            }
        }
    }
}
