//! `GET /healthz` (the process runs) and `GET /readyz` (the database answers).

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

/// 200 while the process serves requests.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when the database answers, 503 otherwise.
///
/// # Errors
/// 503 when the database does not answer.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    run_blocking(move || service.ready()).await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
