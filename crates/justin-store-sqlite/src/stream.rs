//! Streaming a table in id order without loading it: keyset pages (`id > last AND id <= bound
//! ORDER BY id LIMIT n`), with the bound read when the stream starts.
//!
//! On SQLite the bound alone keeps later rows out: writers take turns on one write lock and
//! `AUTOINCREMENT` never hands out an id twice, so any row committed after the bound was read
//! has a larger id. [`PoolStream`] therefore holds no transaction and no connection between
//! pages (each page checks one out), which keeps the pool free and lets WAL checkpoints run
//! while a caller consumes a long stream slowly. [`BorrowedStream`] reads on a connection whose
//! transaction someone else owns (an update job's snapshot).

use diesel::dsl::max;
use diesel::prelude::*;
use justin_core::{Decision, StoreError, StudyRecord};

use crate::error::from_diesel;
use crate::models::{ActionRow, StudyRow};
use crate::schema::{actions, study_data};
use crate::store::SqliteStore;

/// Rows read per query: large enough that page queries do not dominate, small enough that a
/// page of JSON-heavy rows stays a few megabytes.
pub(crate) const PAGE_SIZE: i64 = 5000;

/// A table that can be paged by its integer id.
pub(crate) trait KeysetRow: Sized {
    /// What a row becomes for the core.
    type Item: TryFrom<Self, Error = StoreError>;

    /// The row's id.
    fn id(&self) -> i64;

    /// The largest id stored.
    fn max_id(conn: &mut SqliteConnection) -> QueryResult<Option<i64>>;

    /// Up to `limit` rows with `after < id <= upto`, by id.
    fn page(
        conn: &mut SqliteConnection,
        after: i64,
        upto: i64,
        limit: i64,
    ) -> QueryResult<Vec<Self>>;
}

impl KeysetRow for StudyRow {
    type Item = StudyRecord;

    fn id(&self) -> i64 {
        self.id
    }

    fn max_id(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
        study_data::table.select(max(study_data::id)).first(conn)
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

impl KeysetRow for ActionRow {
    type Item = Decision;

    fn id(&self) -> i64 {
        self.id
    }

    fn max_id(conn: &mut SqliteConnection) -> QueryResult<Option<i64>> {
        actions::table.select(max(actions::id)).first(conn)
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

/// What the paging state asks for next.
enum Step<T> {
    /// An item of the current page (or the error converting its row).
    Item(Result<T, StoreError>),
    /// The page of ids `after < id <= upto` must be read first.
    Read { after: i64, upto: i64 },
}

/// The paging state, independent of where the connection comes from.
pub(crate) struct Keyset<R> {
    last_id: i64,
    /// `None` once the stream has ended (no rows, all read, or an error).
    max_id: Option<i64>,
    page: std::vec::IntoIter<R>,
}

impl<R> Keyset<R> {
    fn end(&mut self) {
        self.max_id = None;
        self.page = Vec::new().into_iter();
    }
}

impl<R: KeysetRow> Keyset<R> {
    /// Reads the id bound.
    pub(crate) fn start(conn: &mut SqliteConnection) -> Result<Self, StoreError> {
        let max_id = R::max_id(conn).map_err(from_diesel)?;
        Ok(Self {
            last_id: i64::MIN,
            max_id,
            page: Vec::new().into_iter(),
        })
    }

    /// The next row from the current page, or the bounds of the page to read next; `None`
    /// when the stream has ended.
    fn next_buffered(&mut self) -> Option<Step<R::Item>> {
        if let Some(row) = self.page.next() {
            let item = R::Item::try_from(row);
            if item.is_err() {
                self.end();
            }
            return Some(Step::Item(item));
        }
        let max_id = self.max_id?;
        if self.last_id >= max_id {
            self.end();
            return None;
        }
        Some(Step::Read {
            after: self.last_id,
            upto: max_id,
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
        mut read: impl FnMut(i64, i64) -> Result<QueryResult<Vec<R>>, StoreError>,
    ) -> Option<Result<R::Item, StoreError>> {
        loop {
            match self.next_buffered()? {
                Step::Item(item) => return Some(item),
                Step::Read { after, upto } => {
                    let rows = match read(after, upto) {
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
pub(crate) struct PoolStream<R> {
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
        self.keyset.next_with(|after, upto| {
            let mut conn = store.conn()?;
            Ok(R::page(&mut conn, after, upto, PAGE_SIZE))
        })
    }
}

/// A stream reading on a borrowed connection, in whatever transaction its owner has open.
pub(crate) struct BorrowedStream<'c, R> {
    conn: &'c mut SqliteConnection,
    keyset: Keyset<R>,
}

impl<'c, R: KeysetRow> BorrowedStream<'c, R> {
    pub(crate) fn open(conn: &'c mut SqliteConnection) -> Result<Self, StoreError> {
        let keyset = Keyset::start(conn)?;
        Ok(Self { conn, keyset })
    }
}

impl<R: KeysetRow> Iterator for BorrowedStream<'_, R> {
    type Item = Result<R::Item, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let conn = &mut *self.conn;
        self.keyset
            .next_with(|after, upto| Ok(R::page(conn, after, upto, PAGE_SIZE)))
    }
}
