//! `GET /dashboard/updates`: the update history with provenance and callback delivery.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::blocking::run_blocking;
use crate::dashboard::updates::render_list;
use crate::error::ApiError;
use crate::state::AppState;

/// The update history page.
///
/// # Errors
/// On storage failure.
pub async fn handle(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let updates = run_blocking(move || service.dashboard_updates()).await?;
    Ok(super::html(StatusCode::OK, render_list(&updates)))
}
