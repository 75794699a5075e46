//! `GET /api/v1/parameters` and `GET /api/v1/parameters/{version}`: the model the service
//! draws from now, or drew from before.

use actix_web::{web, HttpResponse};
use justin_core::ModelParameters;

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::{ErrorResponse, ParametersResponse};
use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

fn respond(p: &ModelParameters) -> HttpResponse {
    HttpResponse::Ok().json(ParametersResponse::from(p))
}

/// The current model parameters.
///
/// The parameters this process draws decisions from now.
///
/// # Errors
/// 503 when the database is unavailable.
#[utoipa::path(
    get,
    path = "/api/v1/parameters",
    operation_id = "get_current_parameters",
    tag = "parameters",
    responses(
        (status = 200, description = "The current version.", body = ParametersResponse),
        (status = 401, response = Unauthorized),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn current(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let service = state.service.clone();
    let p = run_blocking(move || service.current_parameters()).await?;
    Ok(respond(&p))
}

/// A past version of the model parameters.
///
/// Version 1 holds the priors; every completed update adds one.
///
/// # Errors
/// 400 for a version that is not a number, 404 for one that does not exist.
#[utoipa::path(
    get,
    path = "/api/v1/parameters/{version}",
    operation_id = "get_parameters",
    tag = "parameters",
    params(("version" = i64, Path, description = "The parameter version, from 1.")),
    responses(
        (status = 200, description = "That version.", body = ParametersResponse),
        (status = 400, description = "The version is not an integer (`version must be an integer.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No such version (`Parameter version not found.`).", body = ErrorResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
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
