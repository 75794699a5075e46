//! `GET /dashboard/participants`: every participant with status, last decision and upload.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::blocking::run_blocking;
use crate::dashboard::participants::render;
use crate::error::ApiError;
use crate::state::AppState;

/// The participants page.
///
/// # Errors
/// On storage failure.
pub async fn handle(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let zone = state.dashboard_zone;
    let (participants, now) =
        run_blocking(move || Ok((service.dashboard_participants(zone)?, service.now()))).await?;
    Ok(super::html(StatusCode::OK, render(&participants, now)))
}
