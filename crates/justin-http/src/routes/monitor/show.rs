//! `GET /api/v1/monitor`: the watchdog's report, green, yellow or red with each finding.

use actix_web::HttpResponse;

use crate::error::ApiError;

/// The watchdog's report. (Being built for issue 17.)
///
/// # Errors
/// 404 until the watchdog is built.
pub async fn handle() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found.".into()))
}
