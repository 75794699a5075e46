//! `/dashboard`: the study dashboard's pages (HTML with SVG charts, nothing fetched from
//! elsewhere).

use actix_web::HttpResponse;

use crate::error::ApiError;

/// Any dashboard page. (Being built for issue 17.)
///
/// # Errors
/// 404 until the dashboard is built.
pub async fn page() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found.".into()))
}
