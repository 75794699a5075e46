//! `GET /metrics`: the service's metrics in the Prometheus text format.

use actix_web::HttpResponse;

use crate::error::ApiError;

/// The metrics. (Being built for issue 17.)
///
/// # Errors
/// 404 until the metrics are built.
pub async fn show() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found.".into()))
}
