//! `POST /api/v1/upload_data`: store what happened after a decision.

use actix_web::{web, HttpResponse};
use justin_core::{JsonObject, UploadRequest};
use serde_json::json;

use crate::blocking::run_blocking;
use crate::body::{self, required, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Checks each field in the template's order: present, then of the right type.
fn parse(input: &JsonObject) -> Result<UploadRequest, ApiError> {
    let user_id = body::user_id(required(input, "user_id")?)?;
    let decision_idx = body::decision_idx(required(input, "decision_idx")?)?;
    let requested_at = body::timestamp(required(input, "timestamp")?)?;
    let data = body::object(required(input, "data")?, "data")?;
    let context = body::stored_object(required(&data, "context")?.clone(), "context")?;
    let action = body::action(required(&data, "action")?)?;
    let action_prob = body::action_prob(required(&data, "action_prob")?)?;
    let state = body::state(required(&data, "state")?)?;
    let outcome = body::stored_object(required(&data, "outcome")?.clone(), "outcome")?;
    Ok(UploadRequest {
        user_id,
        decision_idx,
        requested_at,
        context,
        action,
        action_prob,
        state,
        outcome,
    })
}

/// Answers 201 once the data is stored.
///
/// # Errors
/// 400 for a malformed request, context or outcome, 404 for an unknown participant, 400 for a
/// second upload of the same decision.
pub async fn handle(
    JsonBody(input): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let upload = parse(&input)?;
    let service = state.service.clone();
    run_blocking(move || service.upload_data(upload)).await?;
    Ok(HttpResponse::Created().json(json!({
        "status": "success",
        "message": "Data uploaded successfully.",
    })))
}
