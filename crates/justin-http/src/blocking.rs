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
