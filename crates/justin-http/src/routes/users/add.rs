//! `POST /api/v1/add_user`: register a participant.

use actix_web::{web, HttpResponse};
use justin_core::{Enrollment, JsonObject};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{AddUserRequest, AddUserResponse, ErrorResponse};
use crate::blocking::run_blocking;
use crate::body::{self, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Register a participant.
///
/// Registers the participant named in `{"user_id": ...}`, optionally with when their time in
/// the study starts (`study_start`) and ends (`study_end`); the answer is the same either way.
///
/// # Errors
/// 400 when the id is missing, not a string or registered already, or a bound is not a
/// timestamp, or the end is not after the start.
#[utoipa::path(
    post,
    path = "/api/v1/add_user",
    operation_id = "add_user",
    tag = "participants",
    request_body = AddUserRequest,
    responses(
        (status = 201, description = "Registered.", body = AddUserResponse, links(
            ("RequestAction" = (
                operation_id = "request_action",
                request_body = json!({ "user_id": "$response.body#/user_id" }),
                description = "Decisions for the participant just registered.",
            )),
            ("UploadData" = (
                operation_id = "upload_data",
                request_body = json!({ "user_id": "$response.body#/user_id" }),
                description = "Study data for the participant just registered.",
            )),
        )),
        (status = 400, description = "`user_id` is missing, not a string or not a valid id, `study_start` or `study_end` is not a timestamp, the end is not later than the start (`study_end must be later than study_start.`), or the participant is registered already (`User already exists.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    JsonBody(input, _): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = match body::field(&input, "user_id") {
        Some(serde_json::Value::String(s)) if s.is_empty() => None,
        other => other,
    }
    .ok_or_else(|| ApiError::BadRequest("user_id is required.".into()))?;
    let user = body::user_id(user)?;
    let enrollment = enrollment(&input, state.naive_time_zone)?;
    let service = state.service.clone();
    let added = user.clone();
    run_blocking(move || service.add_user(&added, &enrollment)).await?;
    Ok(HttpResponse::Created().json(AddUserResponse::new(user)))
}

/// The optional `study_start` and `study_end` of a registration; absent or `null` is open.
fn enrollment(input: &JsonObject, zone: chrono_tz::Tz) -> Result<Enrollment, ApiError> {
    let bound = |key: &str| match input.get(key) {
        None => Ok(None),
        Some(value) => body::study_time(value, key, zone),
    };
    let start = bound("study_start")?;
    let end = bound("study_end")?;
    Enrollment::new(start, end).map_err(|e| ApiError::BadRequest(e.0))
}
