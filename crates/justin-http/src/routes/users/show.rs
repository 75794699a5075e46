//! `GET /api/v1/users/{user_id}`: a participant, where they stand and what is stored for them.

use actix_web::{web, HttpResponse};

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::{ErrorResponse, ParticipantResponse};
use crate::blocking::run_blocking;
use crate::body;
use crate::error::ApiError;
use crate::state::AppState;

/// Show a participant.
///
/// Their status by the service's clock (`not_started`, `active`, `ended`, `withdrawn`), their
/// time in the study as sent, their withdrawal and the counts of their decisions and uploads.
///
/// # Errors
/// 400 for an id that is not valid, 404 for a participant not registered (or erased).
#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}",
    operation_id = "show_user",
    tag = "participants",
    params(("user_id" = String, Path, description = "The participant's id (percent-encoded).")),
    responses(
        (status = 200, description = "The participant.", body = ParticipantResponse),
        (status = 400, description = "The id is not a valid id.", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`); an erased participant's id is gone.", body = ErrorResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = body::path_user_id(&path.into_inner())?;
    let service = state.service.clone();
    let view = run_blocking(move || service.participant(&user)).await?;
    Ok(HttpResponse::Ok().json(ParticipantResponse::from(view)))
}
