//! `GET /api/v1/parameters` and `GET /api/v1/parameters/{version}`: the model the service
//! draws from now, or drew from before.

use actix_web::{web, HttpResponse};
use justin_core::ModelParameters;
use serde_json::json;

use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

fn respond(p: &ModelParameters) -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "status": "success",
        "version": p.version,
        "algorithm": p.algorithm,
        "parameters": p.values,
        "created_at": p.created_at,
    }))
}

/// The current parameters.
///
/// # Errors
/// 503 when the database is unavailable.
pub async fn current(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let p = run_blocking(move || service.current_parameters()).await?;
    Ok(respond(&p))
}

/// A past version.
///
/// # Errors
/// 400 for a version that is not a number, 404 for one that does not exist.
pub async fn version(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let version: i64 = path
        .into_inner()
        .parse()
        .map_err(|_| ApiError::BadRequest("version must be an integer.".into()))?;
    let service = state.service.clone();
    let p = run_blocking(move || service.parameters(version)).await?;
    Ok(respond(&p))
}
