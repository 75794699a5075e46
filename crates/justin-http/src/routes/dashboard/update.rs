//! `GET /dashboard/updates/{id}`: one update, the policy before and after it.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use uuid::Uuid;

use crate::blocking::run_blocking;
use crate::dashboard::updates::render_one;
use crate::error::ApiError;
use crate::state::AppState;

/// One update's page: 400 for an id that is not a UUID, 404 for an unknown one (both pages).
///
/// # Errors
/// On storage failure.
pub async fn handle(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Ok(id) = Uuid::parse_str(&path.into_inner()) else {
        return Ok(super::refusal(
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The update id must be a UUID.",
        ));
    };
    let service = state.service.clone();
    let zone = state.dashboard_zone;
    let found = run_blocking(move || {
        let Some(comparison) = service.dashboard_update(id)? else {
            return Ok(None);
        };
        let drawn = match (&comparison.before, &comparison.after) {
            (Some(b), Some(a)) => {
                let days = service.dashboard_days(zone)?;
                let count = |v: i64| {
                    days.decisions
                        .iter()
                        .filter(|d| d.parameter_version == v)
                        .map(|d| d.decisions)
                        .sum::<u64>()
                };
                (count(b.version), count(a.version))
            }
            _ => (0, 0),
        };
        Ok(Some((comparison, drawn)))
    })
    .await?;
    Ok(match found {
        Some((comparison, drawn)) => super::html(StatusCode::OK, render_one(&comparison, drawn)),
        None => super::refusal(
            StatusCode::NOT_FOUND,
            "Not found",
            "No update request has this id.",
        ),
    })
}
