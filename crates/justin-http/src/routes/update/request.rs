//! `POST /api/v1/update`: accept a model update; it runs in the background.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::blocking::run_blocking;
use crate::body::{self, required, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Stores the request, queues it and answers 202 with its id.
///
/// # Errors
/// 400 for a missing or malformed timestamp or callback URL.
pub async fn handle(
    JsonBody(input): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let timestamp = required(&input, "timestamp")?;
    let callback = required(&input, "callback_url")?;
    let requested_at = body::timestamp(timestamp)?;
    let callback_url = body::callback_url(callback)?;
    let service = state.service.clone();
    let request = run_blocking(move || service.request_update(requested_at, callback_url)).await?;
    let id = request.id;
    state
        .updates
        .enqueue(request)
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    Ok(HttpResponse::Accepted().json(json!({ "status": "processing", "update_id": id })))
}
