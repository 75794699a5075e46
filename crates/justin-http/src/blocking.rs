//! The one way handlers reach the (synchronous) core: run the call on actix's blocking thread
//! pool, so a slow database never stalls the async workers. The pool connection is checked out
//! inside the closure, by the store, never by a handler.

use actix_web::web;
use justin_core::DomainError;

use crate::error::ApiError;

/// Runs a core call off the async workers and maps its error to an HTTP error.
///
/// # Errors
/// The call's own error, or 500 when the blocking pool is gone (shutting down).
pub async fn run_blocking<T, F>(call: F) -> Result<T, ApiError>
where
    F: FnOnce() -> Result<T, DomainError> + Send + 'static,
    T: Send + 'static,
{
    web::block(call)
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(ApiError::from)
}

/// Threads of their own for `/action`, apart from the blocking pool every other route shares.
///
/// A decision waiting for its batch ([`justin_store`]'s group commit on PostgreSQL, the
/// writer's queue on SQLite) holds no pool connection, so many can wait at once; the more wait,
/// the more each transaction writes. On the shared pool, whose threads are as many as the
/// pool's connections, decisions would take the threads uploads and reads need, and a batch
/// could hold no more decisions than there are connections. Threads start when decisions need
/// them, up to `server.decision_threads`; decisions beyond that wait in the threads' queue,
/// first come first served.
#[derive(Debug)]
pub struct DecisionThreads {
    /// `None` once dropped.
    runtime: Option<tokio::runtime::Runtime>,
    deciding: Deciding,
}

impl DecisionThreads {
    /// Up to `threads` threads, started when needed.
    ///
    /// # Errors
    /// When the operating system refuses what the threads need.
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(threads.max(1))
            .thread_name("justin-decide")
            .build()?;
        Ok(Self {
            deciding: Deciding(runtime.handle().clone()),
            runtime: Some(runtime),
        })
    }

    /// What handlers run decisions on.
    pub fn deciding(&self) -> Deciding {
        self.deciding.clone()
    }
}

impl Drop for DecisionThreads {
    fn drop(&mut self) {
        // The server has stopped by now, so no decision is running; shutting down in the
        // background is also the one way allowed where the dropping thread is itself async.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A handle on [`DecisionThreads`], cheap to clone.
#[derive(Debug, Clone)]
pub struct Deciding(tokio::runtime::Handle);

impl Deciding {
    /// [`run_blocking`] on the decision threads.
    ///
    /// # Errors
    /// The call's own error, or 500 when the threads are gone (shutting down) or the call
    /// panicked.
    pub async fn run<T, F>(&self, call: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, DomainError> + Send + 'static,
        T: Send + 'static,
    {
        self.0
            .spawn_blocking(call)
            .await
            .map_err(|e| ApiError::Internal(Box::new(e)))?
            .map_err(ApiError::from)
    }
}
