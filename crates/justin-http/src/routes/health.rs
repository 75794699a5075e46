//! `GET /healthz` (the process runs) and `GET /readyz` (the database answers).

use actix_web::{web, HttpResponse};

use crate::api_types::responses::{InternalError, Unavailable};
use crate::api_types::{HealthResponse, Live, Ready, ReadyResponse};
use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

/// Whether the process runs.
///
/// 200 while the process serves requests. Open: needs no API key.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses((status = 200, description = "The process serves requests.", body = HealthResponse)),
)]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(HealthResponse { status: Live::Ok })
}

/// Whether the database answers.
///
/// 200 when the database answers, 503 otherwise. Open: needs no API key.
///
/// # Errors
/// 503 when the database does not answer.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses(
        (status = 200, description = "The database answers.", body = ReadyResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    run_blocking(move || service.ready()).await?;
    Ok(HttpResponse::Ok().json(ReadyResponse {
        status: Ready::Ready,
    }))
}
