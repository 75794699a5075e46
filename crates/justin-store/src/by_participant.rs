//! The export ordered by participant ([`justin_core::Store::export_by_participant`]): the
//! participants in the byte order of their ids, and each one's decisions in storage order,
//! read in one read-only repeatable-read transaction.
//!
//! No index orders decisions by (participant, id), so one keyset over that pair would sort the
//! whole table for every page. Instead the participants are paged from `users` (by
//! `user_id COLLATE "C"`, which compares bytes), a batch at a time, and each participant's
//! decisions are paged by id through the key's unique index, which starts with `user_id`: one
//! query per participant (and per [`EXPORT_PAGE_SIZE`] of their decisions), each reading that
//! participant's rows only. Decisions name registered participants (a foreign key; an erased
//! one's pseudonym replaced the id in both tables), so every decision is reached.

use std::collections::VecDeque;

use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Text};
use justin_core::{ExportRow, StoreError};

use crate::error::from_diesel;
use crate::models::{ActionRow, ExportDbRow};
use crate::pg::PooledPg;
use crate::schema::users;
use crate::stream::{
    end_transaction, export_page, updates_seen, KeysetRow, UpdatesSeen, EXPORT_PAGE_SIZE,
};

/// Participants read per query.
const USER_BATCH: i64 = 1000;

/// The next participants after `last` (from the first when `None`), by byte order.
fn next_users(conn: &mut PgConnection, last: Option<&str>) -> QueryResult<Vec<String>> {
    let mut query = users::table
        .select(users::user_id)
        .order(sql::<Text>("user_id COLLATE \"C\""))
        .limit(USER_BATCH)
        .into_boxed();
    if let Some(last) = last {
        query = query.filter(
            sql::<Bool>("user_id COLLATE \"C\" > ")
                .bind::<Text, _>(last.to_owned())
                .sql(" COLLATE \"C\""),
        );
    }
    query.load(conn)
}

/// The decisions of one participant being paged.
struct Current {
    user: String,
    last_id: i64,
    /// Whether the last page was full, so that another may follow.
    more: bool,
    page: std::vec::IntoIter<ExportDbRow>,
}

/// See the module's documentation. The connection goes back to the pool as soon as the
/// stream ends or is dropped.
pub(crate) struct ByParticipantStream {
    /// `None` once the stream has ended.
    conn: Option<PooledPg>,
    /// The largest decision id in the snapshot.
    max_id: i64,
    /// The completed updates in the snapshot, read once for every page.
    updates: UpdatesSeen,
    /// Participants fetched and not yet read.
    users: VecDeque<String>,
    /// The last participant fetched, where the next batch starts.
    last_user: Option<String>,
    /// Whether every participant has been fetched.
    users_done: bool,
    current: Option<Current>,
}

impl ByParticipantStream {
    pub(crate) fn open(mut conn: PooledPg) -> Result<Self, StoreError> {
        use diesel::connection::AnsiTransactionManager;
        AnsiTransactionManager::begin_transaction_sql(
            &mut *conn,
            "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
        )
        .map_err(from_diesel)?;
        // The first query fixes the snapshot.
        let started =
            ActionRow::max_id(&mut conn).and_then(|max_id| Ok((max_id, updates_seen(&mut conn)?)));
        match started {
            Ok((max_id, updates)) => {
                let mut stream = Self {
                    conn: Some(conn),
                    max_id: max_id.unwrap_or(0),
                    updates,
                    users: VecDeque::new(),
                    last_user: None,
                    users_done: max_id.is_none(),
                    current: None,
                };
                if stream.users_done {
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
        self.users.clear();
        self.users_done = true;
        self.current = None;
        if let Some(conn) = self.conn.take() {
            end_transaction(conn);
        }
    }

    /// The next item, or `None` at the end; errors end the stream.
    fn step(&mut self) -> Result<Option<ExportRow>, StoreError> {
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Ok(None);
            };
            if let Some(current) = self.current.as_mut() {
                if let Some(row) = current.page.next() {
                    return <ExportRow>::try_from(row).map(Some);
                }
                if current.more {
                    let rows = export_page(
                        conn,
                        &self.updates,
                        Some(&current.user),
                        current.last_id,
                        self.max_id,
                        EXPORT_PAGE_SIZE,
                    )
                    .map_err(from_diesel)?;
                    current.more = rows.len() as i64 == EXPORT_PAGE_SIZE;
                    if let Some(last) = rows.last() {
                        current.last_id = last.id();
                    }
                    current.page = rows.into_iter();
                    continue;
                }
                self.current = None;
            }
            if self.users.is_empty() && !self.users_done {
                let batch = next_users(conn, self.last_user.as_deref()).map_err(from_diesel)?;
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

impl Drop for ByParticipantStream {
    fn drop(&mut self) {
        self.finish();
    }
}
