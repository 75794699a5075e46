//! `POST /api/v1/add_user`: register a participant.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::blocking::run_blocking;
use crate::body::{self, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Registers the participant named in `{"user_id": ...}`.
///
/// # Errors
/// 400 when the id is missing, not a string or registered already.
pub async fn handle(
    JsonBody(input): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = match body::field(&input, "user_id") {
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        other => other,
    }
    .ok_or_else(|| ApiError::BadRequest("user_id is required.".into()))?;
    let user = body::user_id(user)?;
    let service = state.service.clone();
    let added = user.clone();
    run_blocking(move || service.add_user(&added)).await?;
    Ok(HttpResponse::Created().json(json!({
        "status": "success",
        "user_id": user,
        "message": "User added successfully.",
    })))
}
