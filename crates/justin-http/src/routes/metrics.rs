//! `GET /metrics`: the service's metrics in the Prometheus text format (see `crate::metrics`).

use actix_web::{web, HttpResponse};

use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::metrics::CONTENT_TYPE;
use crate::state::AppState;

/// Every metric, with the parameter version this instance draws from read at the scrape.
///
/// # Errors
/// 404 when `[metrics] enabled = false`.
pub async fn show(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let Some(metrics) = state.metrics.clone() else {
        return Err(ApiError::NotFound("Not found.".into()));
    };
    let service = state.service.clone();
    // The version in memory; read from the database only when none is (then a database that
    // does not answer leaves the gauge as it was rather than failing the scrape).
    if let Ok(current) = run_blocking(move || service.current_parameters()).await {
        metrics.set_parameter_version(current.version);
    }
    let text = metrics
        .encode()
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(text))
}
