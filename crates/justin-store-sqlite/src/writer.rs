//! The write queue: one thread with one connection writes what the requests ask, in the order
//! they ask it, several requests per transaction.
//!
//! SQLite lets one connection write at a time. Pooled connections that all write take turns
//! through SQLite's busy handler, which sleeps and polls: under load a writer can sleep for
//! tens or hundreds of milliseconds while the lock is free, and the order in which waiting
//! writers get the lock is left to chance. Here the requests queue instead, first come first
//! served, and none of them sleeps on the lock.
//!
//! The thread takes what has queued (at most [`MAX_BATCH`]), opens one `BEGIN IMMEDIATE`
//! transaction and runs each request in a savepoint of its own: a request that fails rolls
//! back to its savepoint and leaves the others' writes standing, exactly as if it had run in a
//! transaction of its own. A request of one writing statement needs no savepoint (a statement
//! that fails changes nothing), and the hot paths, a decision and an upload, are such
//! requests. Then it commits once, and only then is every request of the batch answered, by a
//! thread of its own while the writer goes on with the next batch: a caller never hears of a
//! write that is not committed. When the commit fails, every request whose writes it held gets
//! that failure, and nothing of the batch is stored.
//!
//! Readers keep the pool's connections; in WAL mode they never wait for the writer. Writes
//! that are rare and long (an update's outcome, an erasure, a restore, a reset) take a pooled
//! connection and SQLite's write lock as before.
//!
//! A thread of its own copies the write-ahead log into the database file (see [`checkpoint`]).
//! SQLite writes the log from its top again only when a write transaction begins with every
//! frame of the log already copied; under a steady stream of writes the checkpoint thread is
//! always a few batches behind, so the log would grow for as long as the stream lasts (a
//! gigabyte in half a minute at the benchmark's rate), every commit appending to new blocks of
//! the file and every page the writer reads looked up in a longer index of the log. Once the
//! log has grown past [`Tuning::restart_frames`], the checkpoint thread catches up, flushes
//! the database file and asks the writer to copy the few frames written since its own copy,
//! between two batches; the next batch then starts the log from its top. That copy holds up
//! the queue for two flushes of the disk, so the checkpoint thread asks only when its own
//! last flush was quick, or when the log has reached [`Tuning::bound_frames`].

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::prelude::*;
use justin_core::StoreError;

use crate::error::{is_unavailable, other};
use crate::setup::ConnectionSetup;

/// Most requests written in one transaction. A batch answers when its commit does, so a
/// bound keeps the first request of a long queue from waiting for all of it.
pub(crate) const MAX_BATCH: usize = 128;

/// The writer connection's page cache, in KiB, for a database file of [`LARGE_FILE`] bytes
/// or more (see [`Cache`]).
const LARGE_CACHE_KIB: u32 = 64 * 1024;

/// The writer connection's page cache, in KiB, for a smaller database file.
const SMALL_CACHE_KIB: u32 = 8 * 1024;

/// The size of a database file from which the writer's page cache is large: the offset of
/// SQLite's lock page, 1 GiB.
const LARGE_FILE: i64 = 1 << 30;

/// When the checkpoint thread runs and when the log starts again from its top.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Requests written between two wake-ups of the checkpoint thread. A decision adds a few
    /// pages to the log; SQLite's own default is a checkpoint per 1,000 pages.
    pub checkpoint_every: usize,
    /// Frames (pages) the log holds, after a copy by the checkpoint thread, at which the
    /// writer copies the rest itself so that its next batch starts the log from its top,
    /// when the disk flushes quickly (see `quick_pass`). That copy holds up the queue for
    /// its two flushes. 16,384 frames (64 MiB at 4 KiB pages) fill in a few seconds of the
    /// benchmark's 64 connections; a study's usual load never reaches them, its log starting
    /// again whenever the writer finds it copied.
    pub restart_frames: i64,
    /// Frames at which the log starts again however slowly the disk flushes: what bounds the
    /// log while the disk stays busy (1 GiB at 4 KiB pages).
    pub bound_frames: i64,
    /// Longest time the checkpoint thread's last pass, with its flush of the log, may take
    /// for the writer to be asked to copy the rest below `bound_frames`: the writer's copy
    /// flushes the log and the database file, so a slow pass foretells a long hold-up.
    pub quick_pass: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            checkpoint_every: 256,
            restart_frames: 16_384,
            bound_frames: 262_144,
            quick_pass: Duration::from_millis(5),
        }
    }
}

/// One queued request: runs on the writer's connection and says whether its writes stand,
/// with how to answer once the batch's transaction has ended.
struct Job {
    /// Run it in a savepoint of its own (see [`Writer::write_one`] for when it needs none).
    savepoint: bool,
    run: Box<dyn FnOnce(&mut SqliteConnection) -> Ran + Send>,
}

/// What a request left after running.
struct Ran {
    /// Its writes stand (it succeeded); otherwise they are rolled back to its savepoint.
    keep: bool,
    /// Answers the caller; given the commit's failure when the commit of kept writes failed.
    answer: Box<dyn FnOnce(Option<StoreError>) + Send>,
}

/// The queue's sending side and its thread. Dropping it lets the thread finish what has
/// queued, close its connection and end.
pub(crate) struct Writer {
    queue: Option<Sender<Job>>,
    /// Callers whose request is queued or running, not yet answered.
    waiting: AtomicUsize,
    thread: Option<JoinHandle<()>>,
    /// Copies the write-ahead log into the database file (see [`checkpoint`]).
    checkpointer: Option<JoinHandle<()>>,
    /// Answers the callers of each committed batch (see [`answer`]).
    answerer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer").finish_non_exhaustive()
    }
}

impl Writer {
    /// Opens the writer's connection to `path` with `setup` and starts its thread.
    pub(crate) fn start(path: PathBuf, setup: ConnectionSetup) -> Result<Self, String> {
        Self::start_tuned(path, setup, Tuning::default())
    }

    /// [`Writer::start`] with checkpoints run as `tuning` says.
    pub(crate) fn start_tuned(
        path: PathBuf,
        setup: ConnectionSetup,
        tuning: Tuning,
    ) -> Result<Self, String> {
        let (conn, cache) = open_writer(&path, setup)?;
        let checkpoints = open(&path, setup)?;
        // Flushes the database file for the checkpoint thread (Linux flushes a file's pages
        // through any descriptor of it).
        let database = std::fs::File::open(&path)
            .map_err(|e| format!("cannot open {} to flush it: {e}", path.display()))?;
        let (queue, jobs) = mpsc::channel::<Job>();
        let (wake, woken) = mpsc::sync_channel::<()>(1);
        let restart = Arc::new(Restart::default());
        let asked = Arc::clone(&restart);
        let checkpointer = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint(checkpoints, &database, &woken, &asked, &tuning))
            .map_err(|e| format!("cannot start the checkpoint thread: {e}"))?;
        let checkpoints = Checkpoints {
            wake,
            every: tuning.checkpoint_every,
            restart,
        };
        let (answers, to_answer) = mpsc::channel::<Answers>();
        let answerer = std::thread::Builder::new()
            .name("sqlite-answers".into())
            .spawn(move || answer(&to_answer))
            .map_err(|e| format!("cannot start the thread that answers writes: {e}"))?;
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || serve(conn, cache, &jobs, &answers, &path, setup, &checkpoints))
            .map_err(|e| format!("cannot start the writer thread: {e}"))?;
        Ok(Self {
            queue: Some(queue),
            waiting: AtomicUsize::new(0),
            thread: Some(thread),
            checkpointer: Some(checkpointer),
            answerer: Some(answerer),
        })
    }

    /// Runs `write` on the writer's connection, in its turn, in a savepoint of the batch's
    /// transaction, and returns its result once that transaction has committed (or its own
    /// failure, with its writes rolled back). The calling thread waits meanwhile.
    ///
    /// `write` must not open a transaction with `BEGIN` itself: it runs inside one.
    pub(crate) fn write<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue_job(true, write)
    }

    /// [`Writer::write`] for a request that changes the database with at most one statement
    /// and, when it fails, has changed nothing: a statement is atomic by itself, so it runs
    /// without a savepoint of its own (two statements fewer).
    pub(crate) fn write_one<T, F>(&self, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        self.queue_job(false, write)
    }

    fn queue_job<T, F>(&self, savepoint: bool, write: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel::<Result<T, StoreError>>(1);
        let job = Job {
            savepoint,
            run: Box::new(move |conn| run_job(conn, write, reply)),
        };
        self.queue
            .as_ref()
            .ok_or_else(|| other("the store is closing; nothing more is written"))?
            .send(job)
            .map_err(|_| other("the writer thread has stopped; nothing was written"))?;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let answered = answer.recv();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        answered.map_err(|_| other("the writer thread stopped before answering"))?
    }

    /// How many callers wait for their request's answer.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            // The thread ends once the queue is empty and closed; a panic there was logged.
            let _ = thread.join();
        }
        // The writer's end closed the checkpoint thread's and the answers' channels.
        if let Some(thread) = self.checkpointer.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.answerer.take() {
            let _ = thread.join();
        }
    }
}

/// Runs one request and wraps its result into what the batch needs.
fn run_job<T, F>(
    conn: &mut SqliteConnection,
    write: F,
    reply: SyncSender<Result<T, StoreError>>,
) -> Ran
where
    T: Send + 'static,
    F: FnOnce(&mut SqliteConnection) -> Result<T, StoreError>,
{
    let result = match catch_unwind(AssertUnwindSafe(|| write(conn))) {
        Ok(result) => result,
        Err(_) => Err(other("a write panicked; its writes were rolled back")),
    };
    let keep = result.is_ok();
    Ran {
        keep,
        answer: Box::new(move |commit_failed| {
            let answer = match commit_failed {
                Some(e) if keep => Err(e),
                _ => result,
            };
            // A caller that stopped waiting has nobody to tell.
            let _ = reply.send(answer);
        }),
    }
}

/// The writer's connection: [`open`] with its page cache sized for the file (see [`Cache`])
/// and without checkpoints of its own (the checkpoint thread runs them).
fn open_writer(
    path: &std::path::Path,
    setup: ConnectionSetup,
) -> Result<(SqliteConnection, Option<Cache>), String> {
    let mut conn = open(path, setup)?;
    conn.batch_execute("PRAGMA wal_autocheckpoint = 0;")
        .map_err(|e| e.to_string())?;
    let cache = Cache::fit(&mut conn, None, LARGE_FILE);
    Ok((conn, cache))
}

/// The size of the writer's page cache.
///
/// Every write looks its key up in the indexes of `actions` and `study_data`, whose pages for
/// a large study are spread over all its participants: with SQLite's default cache (2 MB) the
/// writer would read most of them back from the file for each write, hence a large cache.
/// Below 1 GiB, though, a large cache costs every commit a walk of all its pages: when an
/// index page splits, SQLite swaps page numbers through that of its lock page, at 1 GiB, and
/// at the commit it drops from the cache every page numbered past the file's end, walking the
/// whole cache whenever the highest number it has held lies far past that end. A file that
/// small stays in the operating system's cache, so reading a page back costs the writer little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    Small,
    Large,
}

impl Cache {
    /// Sets the cache of `conn` for its file's size now, large from `large_file` bytes, unless
    /// it is `current` already, and returns the size set. `current` when the file's size
    /// cannot be read or the cache not set (it stays as it was: a size is a matter of speed
    /// only).
    fn fit(conn: &mut SqliteConnection, current: Option<Self>, large_file: i64) -> Option<Self> {
        let wanted = match file_size(conn) {
            Ok(bytes) if bytes >= large_file => Self::Large,
            Ok(_) => Self::Small,
            Err(e) => {
                log::warn!("cannot read the size of the database file: {e}");
                return current;
            }
        };
        if current == Some(wanted) {
            return current;
        }
        let kib = match wanted {
            Self::Small => SMALL_CACHE_KIB,
            Self::Large => LARGE_CACHE_KIB,
        };
        match conn.batch_execute(&format!("PRAGMA cache_size = -{kib};")) {
            Ok(()) => Some(wanted),
            Err(e) => {
                log::warn!("cannot size the writer's page cache: {e}");
                current
            }
        }
    }
}

/// The size of the database file of `conn`, in bytes, as SQLite counts its pages.
fn file_size(conn: &mut SqliteConnection) -> QueryResult<i64> {
    diesel::sql_query(
        "SELECT page_count * page_size AS bytes FROM pragma_page_count(), pragma_page_size()",
    )
    .get_result::<FileSize>(conn)
    .map(|size| size.bytes)
}

/// What [`file_size`] reads.
#[derive(QueryableByName)]
struct FileSize {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    bytes: i64,
}

fn open(path: &std::path::Path, setup: ConnectionSetup) -> Result<SqliteConnection, String> {
    let text = path
        .to_str()
        .ok_or_else(|| "the database path is not valid UTF-8".to_owned())?;
    let mut conn = SqliteConnection::establish(text).map_err(|e| e.to_string())?;
    conn.batch_execute(&setup.sql())
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// What the writer thread shares with the checkpoint thread.
struct Checkpoints {
    /// Wakes the checkpoint thread.
    wake: SyncSender<()>,
    /// Requests written between two wake-ups.
    every: usize,
    /// Asks the writer to start the log again.
    restart: Arc<Restart>,
}

/// How the checkpoint thread asks the writer to start the log again.
#[derive(Default)]
struct Restart {
    /// Set by the checkpoint thread when the log should start again from its top.
    asked: AtomicBool,
    /// Held by whichever thread copies the log: two copies at once would leave one of them
    /// with nothing done (SQLite lets one checkpoint run at a time and answers the other at
    /// once). The writer only tries it, so it never waits for the checkpoint thread's copy.
    copying: Mutex<()>,
}

/// The thread: batches until the queue closes.
fn serve(
    mut conn: SqliteConnection,
    mut cache: Option<Cache>,
    jobs: &Receiver<Job>,
    answers: &Sender<Answers>,
    path: &std::path::Path,
    setup: ConnectionSetup,
    checkpoints: &Checkpoints,
) {
    let mut batch = VecDeque::with_capacity(MAX_BATCH);
    let mut since_checkpoint = 0_usize;
    while let Ok(first) = jobs.recv() {
        batch.push_back(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push_back(job),
                Err(_) => break,
            }
        }
        since_checkpoint += batch.len();
        while !batch.is_empty() {
            let (ran, ended) = run_batch(&mut conn, &mut batch);
            if let Err(mpsc::SendError(ran)) = answers.send(ran) {
                // The answering thread has gone; the writer answers itself.
                ran.answer();
            }
            if !ended {
                // A transaction that could not end cleanly leaves the connection in a state
                // nobody can vouch for; what is left of the batch gets a fresh one.
                match open_writer(path, setup) {
                    Ok(fresh) => (conn, cache) = fresh,
                    Err(e) => log::error!("cannot reopen the writer's connection: {e}"),
                }
            }
        }
        let restart = &checkpoints.restart;
        let copying = match restart.asked.load(Ordering::Acquire) {
            // The checkpoint thread is copying: the writer tries again after its next batch.
            true => restart.copying.try_lock().ok(),
            false => None,
        };
        if let Some(_copying) = copying {
            restart.asked.store(false, Ordering::Release);
            // The frames written since the checkpoint thread's copy: once they are in the
            // database file too, the next batch starts the log from its top (SQLite does that
            // when a write transaction begins with the whole log copied and no reader in it).
            // Passive: it waits for no reader; what one still needs stays, and the checkpoint
            // thread asks again after its next copy.
            copy_log(&mut conn);
        }
        if since_checkpoint >= checkpoints.every {
            since_checkpoint = 0;
            cache = Cache::fit(&mut conn, cache, LARGE_FILE);
            // One wake-up pending is enough: the checkpoint copies whatever the log holds.
            let _ = checkpoints.wake.try_send(());
        }
    }
}

/// What `PRAGMA wal_checkpoint` answers.
#[derive(QueryableByName)]
struct Checkpointed {
    /// Frames in the log, counted from its top.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
}

/// The checkpoint thread: on each wake-up, copies what the write-ahead log holds into the
/// database file, without waiting for readers (`PASSIVE`: what a reader still needs stays
/// for the next one). SQLite would otherwise run that copy, with its flush of the database
/// file, inside the commit of whichever write crossed the log's size limit: a pause of every
/// request queued behind it, longer the larger the study.
///
/// When the log has grown to `restart_frames` frames or more, it catches up with the writer,
/// flushes the database file and, when its last pass was quick or the log has reached
/// `bound_frames`, asks the writer (`restart`) to start the log again from its top (see the
/// module documentation).
fn checkpoint(
    mut conn: SqliteConnection,
    database: &std::fs::File,
    woken: &Receiver<()>,
    restart: &Restart,
    tuning: &Tuning,
) {
    while woken.recv().is_ok() {
        if restart.asked.load(Ordering::Acquire) {
            // The writer copies the rest after its batch, and the log starts again.
            continue;
        }
        // A poisoned lock guards nothing but the order of two copies.
        let _copying = restart
            .copying
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(mut frames) = copy_log(&mut conn) else {
            continue;
        };
        if frames < tuning.restart_frames {
            continue;
        }
        // Each pass copies what was written during the one before, until that is a few
        // frames: what the writer then copies itself, and flushes, is that small.
        for _ in 0..CATCH_UP_PASSES {
            let Some(now) = copy_log(&mut conn) else {
                break;
            };
            let added = now - frames;
            frames = now;
            if added <= TAIL_FRAMES {
                break;
            }
        }
        // SQLite flushes the database file only with a copy that reaches the log's end, so
        // the writer's copy would flush every page these passes wrote: flushed here, off the
        // queue, it leaves the writer its own few.
        // Without that flush the writer's copy would be long: the log then starts again only
        // at its bound.
        let flushed = match database.sync_data() {
            Ok(()) => true,
            Err(e) => {
                log::warn!("cannot flush the database file: {e}");
                false
            }
        };
        // One more pass, timed: it flushes the newest frames of the log as the writer's copy
        // will, so its time says whether the disk answers quickly now.
        let started = Instant::now();
        let Some(now) = copy_log(&mut conn) else {
            continue;
        };
        let quick = flushed && started.elapsed() <= tuning.quick_pass;
        // A log another connection has started again holds fewer frames: nothing to ask.
        if now >= tuning.bound_frames || (quick && now >= tuning.restart_frames) {
            restart.asked.store(true, Ordering::Release);
        }
    }
}

/// Passes the checkpoint thread runs back to back, at most, before asking the writer to start
/// the log again.
const CATCH_UP_PASSES: usize = 8;

/// Frames written during the checkpoint thread's last pass below which the writer copies the
/// rest itself.
const TAIL_FRAMES: i64 = 64;

/// One passive checkpoint; the frames the log holds, counted from its top.
fn copy_log(conn: &mut SqliteConnection) -> Option<i64> {
    match diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result::<Checkpointed>(conn) {
        Ok(done) => Some(i64::from(done.log)),
        Err(e) => {
            log::warn!("cannot checkpoint the write-ahead log: {e}");
            None
        }
    }
}

/// A savepoint's rollback asked for by a failed request, or the database's own failure.
enum Undo {
    Failed,
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for Undo {
    fn from(e: diesel::result::Error) -> Self {
        Self::Db(e)
    }
}

/// Runs the requests of `batch` in one transaction and returns their answers, to be given once
/// the transaction has ended. When the transaction is lost midway (a savepoint that cannot be
/// released or rolled back), the requests it had not reached stay in `batch` for the next one.
/// The flag is false when the transaction did not end cleanly.
fn run_batch(conn: &mut SqliteConnection, batch: &mut VecDeque<Job>) -> (Answers, bool) {
    let mut answers = Vec::with_capacity(batch.len());
    let outcome = conn.immediate_transaction::<_, diesel::result::Error, _>(|conn| {
        while let Some(job) = batch.pop_front() {
            if !job.savepoint {
                // One statement or none: when it failed it changed nothing.
                answers.push((job.run)(conn).answer);
                continue;
            }
            let mut answer = None;
            let ended = conn.transaction::<_, Undo, _>(|conn| {
                let ran = (job.run)(conn);
                answer = Some(ran.answer);
                if ran.keep {
                    Ok(())
                } else {
                    Err(Undo::Failed)
                }
            });
            answers.extend(answer);
            if let Err(Undo::Db(e)) = ended {
                return Err(e);
            }
        }
        Ok(())
    });
    let failure = outcome.as_ref().err().map(Failure::of);
    let ended = outcome.is_ok() || transaction_ended(conn);
    (Answers { answers, failure }, ended)
}

/// The answers of one batch whose transaction has ended, with the commit's failure if it
/// failed.
struct Answers {
    answers: Vec<Box<dyn FnOnce(Option<StoreError>) + Send>>,
    failure: Option<Failure>,
}

impl Answers {
    fn answer(self) {
        for answer in self.answers {
            answer(self.failure.as_ref().map(Failure::error));
        }
    }
}

/// The thread that answers each batch's callers once its transaction has ended, so that the
/// writer starts the next batch at once: waking some thirty waiting threads, a few
/// microseconds each, is work the writer would otherwise do between two batches while
/// everything queued waits for it.
fn answer(batches: &Receiver<Answers>) {
    while let Ok(batch) = batches.recv() {
        batch.answer();
    }
}

/// Why a batch's transaction failed, told to each request whose writes it held.
struct Failure {
    busy: bool,
    message: String,
}

impl Failure {
    fn of(e: &diesel::result::Error) -> Self {
        Self {
            busy: is_unavailable(e),
            message: format!("the transaction holding this write failed, nothing was stored: {e}"),
        }
    }

    fn error(&self) -> StoreError {
        if self.busy {
            StoreError::Unavailable(self.message.clone().into())
        } else {
            other(self.message.clone())
        }
    }
}

/// Whether the connection is outside any transaction after a failed batch.
fn transaction_ended(conn: &mut SqliteConnection) -> bool {
    matches!(
        AnsiTransactionManager::transaction_manager_status_mut(conn).transaction_depth(),
        Ok(None)
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use diesel::sql_types::{BigInt, Text};

    use super::*;
    use crate::setup::Throwaway;

    #[derive(QueryableByName, Debug, PartialEq)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        v: String,
    }

    struct Fixture {
        writer: Arc<Writer>,
        file: Throwaway,
    }

    impl Fixture {
        fn new() -> Self {
            Self::tuned(Tuning::default())
        }

        fn tuned(tuning: Tuning) -> Self {
            let file = Throwaway::new();
            let setup = ConnectionSetup {
                busy_timeout: Duration::from_secs(5),
            };
            let mut conn = open(file.path(), setup).unwrap();
            conn.batch_execute(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL); \
                 CREATE TABLE parent (id INTEGER PRIMARY KEY); \
                 CREATE TABLE child (id INTEGER PRIMARY KEY, \
                                     parent INTEGER NOT NULL REFERENCES parent (id));",
            )
            .unwrap();
            let writer =
                Arc::new(Writer::start_tuned(file.path().to_owned(), setup, tuning).unwrap());
            Self { writer, file }
        }

        /// What another connection sees in `t`.
        fn rows(&self) -> Vec<Row> {
            let setup = ConnectionSetup {
                busy_timeout: Duration::from_secs(5),
            };
            let mut conn = open(self.file.path(), setup).unwrap();
            diesel::sql_query("SELECT id, v FROM t ORDER BY id")
                .load(&mut conn)
                .unwrap()
        }

        /// Occupies the writer until the returned sender sends or drops, and returns once
        /// the writer runs it.
        fn block(&self) -> (SyncSender<()>, std::thread::JoinHandle<()>) {
            let (release, released) = mpsc::sync_channel::<()>(0);
            let (running, is_running) = mpsc::sync_channel::<()>(0);
            let before = self.writer.waiting();
            let writer = Arc::clone(&self.writer);
            let thread = std::thread::spawn(move || {
                writer
                    .write(move |_| {
                        running.send(()).unwrap();
                        let _ = released.recv();
                        Ok(())
                    })
                    .unwrap();
            });
            is_running.recv().unwrap();
            // The caller counts itself as waiting only after queueing its request, so it can
            // still be about to when the writer runs it: [`Fixture::queue`] tells its own
            // request queued by the count changing, which this late one must not do.
            while self.writer.waiting() == before {
                std::thread::yield_now();
            }
            (release, thread)
        }

        /// Queues `write` from a thread of its own and returns once it is queued.
        fn queue<T: Send + 'static>(
            &self,
            write: impl FnOnce(&mut SqliteConnection) -> Result<T, StoreError> + Send + 'static,
        ) -> std::thread::JoinHandle<Result<T, StoreError>> {
            let before = self.writer.waiting();
            let writer = Arc::clone(&self.writer);
            let thread = std::thread::spawn(move || writer.write(write));
            while self.writer.waiting() == before {
                std::thread::yield_now();
            }
            thread
        }
    }

    fn insert(conn: &mut SqliteConnection, id: i64, v: &str) -> Result<(), StoreError> {
        diesel::sql_query("INSERT INTO t (id, v) VALUES (?1, ?2)")
            .bind::<BigInt, _>(id)
            .bind::<Text, _>(v)
            .execute(conn)
            .map(|_| ())
            .map_err(crate::error::from_diesel)
    }

    fn row(id: i64, v: &str) -> Row {
        Row { id, v: v.into() }
    }

    #[test]
    fn requests_queued_together_share_one_transaction_in_their_order() {
        let f = Fixture::new();
        let (release, blocker) = f.block();
        let file = f.file.path().to_owned();
        let first = f.queue(|conn| insert(conn, 1, "first"));
        let failing = f.queue(|conn| {
            insert(conn, 2, "failing")?;
            Err::<(), _>(StoreError::UnknownUser)
        });
        let third = f.queue(move |conn| {
            // Runs after the first two (it sees the first's row, not the failed one's), in
            // the same transaction as the first: another connection does not see it yet.
            let before: Vec<Row> = diesel::sql_query("SELECT id, v FROM t ORDER BY id")
                .load(conn)
                .map_err(crate::error::from_diesel)?;
            let setup = ConnectionSetup {
                busy_timeout: Duration::from_secs(5),
            };
            let mut other_conn = open(&file, setup).map_err(other)?;
            let outside: Vec<Row> = diesel::sql_query("SELECT id, v FROM t ORDER BY id")
                .load(&mut other_conn)
                .map_err(crate::error::from_diesel)?;
            insert(conn, 3, "third")?;
            Ok((before, outside))
        });
        release.send(()).unwrap();
        blocker.join().unwrap();

        first.join().unwrap().unwrap();
        assert!(matches!(
            failing.join().unwrap(),
            Err(StoreError::UnknownUser)
        ));
        let (before, outside) = third.join().unwrap().unwrap();
        assert_eq!(before, vec![row(1, "first")]);
        assert_eq!(
            outside,
            vec![],
            "the first write was committed before the third ran"
        );
        assert_eq!(f.rows(), vec![row(1, "first"), row(3, "third")]);
    }

    #[test]
    fn a_failed_one_statement_write_leaves_the_rest_of_its_batch_standing() {
        let f = Fixture::new();
        let (release, blocker) = f.block();
        let writer = |id: i64, v: &'static str| {
            let writer = Arc::clone(&f.writer);
            let before = f.writer.waiting();
            let thread =
                std::thread::spawn(move || writer.write_one(move |conn| insert(conn, id, v)));
            while f.writer.waiting() == before {
                std::thread::yield_now();
            }
            thread
        };
        let first = writer(1, "first");
        let duplicate = writer(1, "a duplicate key");
        let second = writer(2, "second");
        release.send(()).unwrap();
        blocker.join().unwrap();

        first.join().unwrap().unwrap();
        assert!(duplicate.join().unwrap().is_err());
        second.join().unwrap().unwrap();
        assert_eq!(f.rows(), vec![row(1, "first"), row(2, "second")]);
    }

    #[test]
    fn the_checkpoint_thread_copies_the_log_into_the_database_file() {
        let f = Fixture::new();
        let size = || {
            std::fs::metadata(f.file.path())
                .map(|m| m.len())
                .unwrap_or(0)
        };
        let before = size();
        // The writer's connection never checkpoints by itself: the rows reach the database
        // file only through the checkpoint thread, woken after `checkpoint_every` writes.
        let every = Tuning::default().checkpoint_every;
        let text = "x".repeat(4000);
        for id in 0..i64::try_from(every).unwrap() {
            let text = text.clone();
            f.writer
                .write_one(move |conn| insert(conn, id, &text))
                .unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while size() < before + 256 * 4000 && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            size() >= before + 256 * 4000,
            "the database file stayed at {} bytes (from {before})",
            size()
        );
        assert_eq!(f.rows().len(), every);
    }

    /// How many times the write-ahead log started again from its top during 4,000 writes of
    /// a page each, from four threads that keep the writer busy, checkpointed as `tuning`
    /// says: the checkpoint sequence number of the log's header, which SQLite counts up from
    /// 0 each time it writes the log from its top again.
    fn restarts_during_steady_writes(tuning: Tuning) -> u32 {
        let f = Fixture::tuned(tuning);
        let text = Arc::new("x".repeat(4000));
        let threads: Vec<_> = (0..4_i64)
            .map(|t| {
                let writer = Arc::clone(&f.writer);
                let text = Arc::clone(&text);
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let text = Arc::clone(&text);
                        writer
                            .write_one(move |conn| insert(conn, t * 1000 + i, &text))
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(f.rows().len(), 4000);
        let mut wal = f.file.path().to_owned().into_os_string();
        wal.push("-wal");
        let header = std::fs::read(PathBuf::from(wal)).unwrap();
        u32::from_be_bytes(header[12..16].try_into().unwrap())
    }

    /// A log started again at 64 frames, and the disk taken for quick or slow: every pass is
    /// quick with an hour allowed, none is with nothing allowed.
    fn small_log(bound_frames: i64, quick_pass: Duration) -> Tuning {
        Tuning {
            checkpoint_every: 16,
            restart_frames: 64,
            bound_frames,
            quick_pass,
        }
    }

    #[test]
    fn under_steady_writes_the_log_starts_again_from_its_top() {
        // Some 60 times here; without it these writes made a log of some 75 MB.
        let restarts =
            restarts_during_steady_writes(small_log(i64::MAX, Duration::from_secs(3600)));
        assert!(
            restarts >= 5,
            "the log started again {restarts} times during 4,000 writes of a page"
        );
    }

    #[test]
    fn while_the_disk_flushes_slowly_the_log_starts_again_only_at_its_bound() {
        // SQLite starts the log again by itself when the checkpoint thread happens to have
        // copied all of it as a batch begins: once or never in these writes.
        let unbounded = restarts_during_steady_writes(small_log(i64::MAX, Duration::ZERO));
        assert!(
            unbounded <= 3,
            "the log started again {unbounded} times though no pass was quick"
        );
        let bounded = restarts_during_steady_writes(small_log(64, Duration::ZERO));
        assert!(
            bounded >= 5,
            "the log started again {bounded} times past its bound of 64 frames"
        );
    }

    #[test]
    fn the_writers_cache_is_small_below_the_large_files_size_and_large_from_it() {
        let f = Fixture::new();
        let setup = ConnectionSetup {
            busy_timeout: Duration::from_secs(5),
        };
        let mut conn = open(f.file.path(), setup).unwrap();
        let kib = |conn: &mut SqliteConnection| {
            #[derive(QueryableByName)]
            struct Size {
                #[diesel(sql_type = BigInt)]
                cache_size: i64,
            }
            -diesel::sql_query("PRAGMA cache_size")
                .get_result::<Size>(conn)
                .unwrap()
                .cache_size
        };
        let bytes = file_size(&mut conn).unwrap();

        assert_eq!(Cache::fit(&mut conn, None, bytes + 1), Some(Cache::Small));
        assert_eq!(kib(&mut conn), i64::from(SMALL_CACHE_KIB));
        assert_eq!(
            Cache::fit(&mut conn, Some(Cache::Small), bytes),
            Some(Cache::Large)
        );
        assert_eq!(kib(&mut conn), i64::from(LARGE_CACHE_KIB));
        // The writer's own, on a file far below 1 GiB.
        let (mut writer, cache) = open_writer(f.file.path(), setup).unwrap();
        assert_eq!(cache, Some(Cache::Small));
        assert_eq!(kib(&mut writer), i64::from(SMALL_CACHE_KIB));
    }

    #[test]
    fn a_failed_commit_fails_every_request_it_held_and_the_writer_goes_on() {
        let f = Fixture::new();
        let (release, blocker) = f.block();
        let kept = f.queue(|conn| insert(conn, 1, "kept until the commit"));
        let breaks_commit = f.queue(|conn| {
            // A foreign key checked only at the commit, which then fails.
            conn.batch_execute(
                "PRAGMA defer_foreign_keys = ON; INSERT INTO child (id, parent) VALUES (1, 99);",
            )
            .map_err(crate::error::from_diesel)
        });
        release.send(()).unwrap();
        blocker.join().unwrap();

        let kept = kept.join().unwrap();
        let broke = breaks_commit.join().unwrap();
        for answer in [kept, broke] {
            let e = answer.expect_err("a write whose commit failed was acknowledged");
            assert!(
                format!("{e:?}").contains("FOREIGN KEY constraint failed"),
                "{e:?}"
            );
        }
        assert_eq!(f.rows(), vec![]);
        f.writer.write(|conn| insert(conn, 2, "after")).unwrap();
        assert_eq!(f.rows(), vec![row(2, "after")]);
    }

    #[test]
    fn a_panicking_request_is_rolled_back_and_answered() {
        let f = Fixture::new();
        let answer = f.writer.write(|conn| {
            let inserted = insert(conn, 1, "rolled back");
            if inserted.is_ok() {
                panic!("a request that panics after its write");
            }
            inserted
        });
        assert!(answer.is_err());
        f.writer.write(|conn| insert(conn, 2, "after")).unwrap();
        assert_eq!(f.rows(), vec![row(2, "after")]);
    }
}
