//! `POST /api/v1/users/{user_id}/erase`: erase a participant's data.

use actix_web::{web, HttpResponse};

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::{ErasureResponse, ErrorResponse, Success};
use crate::blocking::run_blocking;
use crate::body;
use crate::error::ApiError;
use crate::state::AppState;

/// Erase a participant.
///
/// Takes a backup into `backup.dir` (always, whatever `backup.enabled` says), then, in one
/// transaction, deletes the participant's uploads and history and keeps their decisions
/// without context, state or reason under a pseudonym, so the trial's randomization record
/// stays whole. Afterwards no table holds the participant's id, contexts, states or outcomes;
/// the answer is the audit record, which holds no id either. Backups taken before still hold
/// the data (see docs/operations.md). A body, if sent, is not read.
///
/// # Errors
/// 400 for an id that is not valid, 404 for a participant not registered (or erased
/// already); a failed backup erases nothing (500).
#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/erase",
    operation_id = "erase_user",
    tag = "participants",
    params(("user_id" = String, Path, description = "The participant's id (percent-encoded).")),
    responses(
        (status = 200, description = "Erased; the audit record.", body = ErasureResponse),
        (status = 400, description = "The id is not a valid id.", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered, or was erased already (`User not found.`).", body = ErrorResponse),
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
    let erasure = run_blocking(move || service.erase_participant(&user)).await?;
    Ok(HttpResponse::Ok().json(ErasureResponse {
        erasure: erasure.into(),
        status: Success::Success,
    }))
}
