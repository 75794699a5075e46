//! `POST /api/v1/users/{user_id}/withdraw`: withdraw a participant.

use actix_web::{web, HttpResponse};
use justin_core::domain::MAX_WITHDRAWAL_REASON_LEN;

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{ErrorResponse, ParticipantResponse, WithdrawRequest};
use crate::blocking::run_blocking;
use crate::body::{self, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Withdraw a participant.
///
/// Records the withdrawal with its time and reason. From then on the participant's decisions
/// are stored without a draw (`unavailable_reason` `withdrawn`, `in_study` false), and none of
/// their study data reaches a model update, including data uploaded before.
///
/// # Errors
/// 400 for a missing or malformed reason, 404 for a participant not registered, 409 for one
/// withdrawn already.
#[utoipa::path(
    post,
    path = "/api/v1/users/{user_id}/withdraw",
    operation_id = "withdraw_user",
    tag = "participants",
    params(("user_id" = String, Path, description = "The participant's id (percent-encoded).")),
    request_body = WithdrawRequest,
    responses(
        (status = 200, description = "Withdrawn; the participant as now stored.", body = ParticipantResponse),
        (status = 400, description = "The id is not valid, or `reason` is missing (`reason is required.`), not a string, longer than 1024 bytes or holds control characters.", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
        (status = 409, description = "The participant was withdrawn already (`User already withdrawn.`); nothing changed.", body = ErrorResponse),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    path: web::Path<String>,
    JsonBody(input, _): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = body::path_user_id(&path.into_inner())?;
    let reason = body::note(&input, "reason", MAX_WITHDRAWAL_REASON_LEN)?;
    let service = state.service.clone();
    let view = run_blocking(move || service.withdraw(&user, &reason)).await?;
    Ok(HttpResponse::Ok().json(ParticipantResponse::from(view)))
}
