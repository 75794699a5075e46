//! `GET /api/v1/update/{update_id}`: where an update request stands.

use actix_web::{web, HttpResponse};
use uuid::Uuid;

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::{ErrorResponse, UpdateStatusResponse};
use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

/// Where an update request stands.
///
/// Answers with the request's status, times, error, the parameter version it produced, how its
/// callback was delivered and what its parameters were computed from.
///
/// # Errors
/// 400 for an id that is not a UUID, 404 for an unknown one.
#[utoipa::path(
    get,
    path = "/api/v1/update/{update_id}",
    operation_id = "get_update",
    tag = "updates",
    params(("update_id" = String, Path, format = "uuid", description = "The `update_id` of the 202 answer.")),
    responses(
        (status = 200, description = "The request as it stands.", body = UpdateStatusResponse),
        (status = 400, description = "The id is not a UUID (`update_id must be a UUID.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No update request has this id (`Update not found.`).", body = ErrorResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path.into_inner())
        .map_err(|_| ApiError::BadRequest("update_id must be a UUID.".into()))?;
    let service = state.service.clone();
    let u = run_blocking(move || service.update_request(id)).await?;
    Ok(HttpResponse::Ok().json(UpdateStatusResponse::from(u)))
}
