//! `GET /dashboard`: the watchdog's verdict, the study's size and its figures per day.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};

use crate::blocking::run_blocking;
use crate::dashboard::overview::{render, Overview};
use crate::error::ApiError;
use crate::state::AppState;

/// The overview page.
///
/// # Errors
/// On storage failure (500, or 503 when the database is unavailable).
pub async fn handle(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let zone = state.dashboard_zone;
    let overview = run_blocking(move || {
        let report = service.recent_monitor_report()?;
        let days = service.dashboard_days(zone)?;
        let participants = service.dashboard_participant_counts()?;
        Ok(Overview {
            report,
            participants,
            version: service.dashboard_latest_version()?,
            days,
            zone: zone.name().to_owned(),
        })
    })
    .await?;
    Ok(super::html(StatusCode::OK, render(&overview)))
}
