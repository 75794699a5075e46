//! `POST /api/v1/upload_data`: store what happened after a decision.

use actix_web::{web, HttpResponse};
use justin_core::{JsonObject, UploadRequest};

use crate::blocking::run_blocking;
use crate::body::{self, required, JsonBody};
use crate::error::ApiError;
use crate::schema::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::schema::{ErrorResponse, UploadDataRequest, UploadDataResponse};
use crate::state::AppState;

/// Checks each field in the template's order: present, then of the right type.
fn parse(input: &JsonObject, zone: chrono_tz::Tz) -> Result<UploadRequest, ApiError> {
    let user_id = body::user_id(required(input, "user_id")?)?;
    let decision_idx = body::decision_idx(required(input, "decision_idx")?)?;
    let decision_type = body::decision_type(input)?;
    let timestamp = body::timestamp(required(input, "timestamp")?, zone)?;
    let data = body::object(required(input, "data")?, "data")?;
    let context = body::stored_object(required(&data, "context")?.clone(), "context")?;
    let action = body::action(required(&data, "action")?)?;
    let action_prob = body::action_prob(required(&data, "action_prob")?)?;
    let state = body::state(required(&data, "state")?)?;
    let outcome = body::stored_object(required(&data, "outcome")?.clone(), "outcome")?;
    Ok(UploadRequest {
        user_id,
        decision_type,
        decision_idx,
        requested_at: timestamp.at,
        sent_timestamp: timestamp.sent,
        context,
        action,
        action_prob,
        state,
        outcome,
    })
}

/// Store what happened after a decision.
///
/// Answers 201 once the data is stored. The data belongs to the decision keyed by
/// `(user_id, decision_type, decision_idx)`; study data of an unavailable decision is stored
/// but never used by a model update.
///
/// # Errors
/// 400 for a malformed request, context or outcome, 404 for an unknown participant, 400 for a
/// second upload of the same decision, 409 for an upload that contradicts the logged decision.
#[utoipa::path(
    post,
    path = "/api/v1/upload_data",
    operation_id = "upload_data",
    tag = "decisions",
    request_body = UploadDataRequest,
    responses(
        (status = 201, description = "Stored.", body = UploadDataResponse),
        (status = 400, description = "A field is missing or malformed, the algorithm refuses the context or outcome, or data was uploaded for this decision already (`Decision index already exists.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
        (status = 409, description = "The service logged this decision with another `action`, or an `action_prob` more than 1e-9 away; nothing is stored.", body = ErrorResponse),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
    security(("bearer" = [])),
)]
pub async fn handle(
    JsonBody(input): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let upload = parse(&input, state.naive_time_zone)?;
    let service = state.service.clone();
    run_blocking(move || service.upload_data(upload)).await?;
    Ok(HttpResponse::Created().json(UploadDataResponse::default()))
}
