//! `POST /api/v1/upload_data`: store what happened after a decision.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse, ResponseError};
use justin_core::{names, Algorithm, DomainError, JsonObject, UploadRequest};
use serde_json::Value;

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{ErrorResponse, UploadDataRequest, UploadDataResponse};
use crate::blocking::run_blocking;
use crate::body::{self, required, JsonBody, Literals};
use crate::error::ApiError;
use crate::state::AppState;

/// Whether Python counts a JSON value as false: the template's `not data` check.
fn falsy(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => map.is_empty(),
    }
}

/// The context or outcome of an upload's data, or 400 `<key> is required.`. Unlike other
/// fields, an empty string is present: the template reports it as lacking the algorithm's
/// fields, and a type check as not being an object.
fn object_field<'a>(data: &'a JsonObject, key: &str) -> Result<&'a Value, ApiError> {
    body::field(data, key).ok_or_else(|| ApiError::BadRequest(format!("{key} is required.")))
}

/// Checks that every field is present, in the template's order, with the context and outcome
/// fields the algorithm needs; then that each is of the right type.
fn parse(
    input: &JsonObject,
    literals: &Literals,
    algorithm: &dyn Algorithm,
    zone: chrono_tz::Tz,
) -> Result<UploadRequest, ApiError> {
    let algorithm_error = |e| ApiError::from(DomainError::from(e));
    let user = required(input, "user_id")?;
    let idx = required(input, "decision_idx")?;
    let timestamp = required(input, "timestamp")?;
    let data = required(input, "data")?;
    if falsy(data) || !names(data, "context") {
        return Err(ApiError::BadRequest("context is required.".into()));
    }
    // A `data` that is no object names no fields: its type check below says so.
    if let Some(fields) = data.as_object() {
        algorithm
            .check_context_names(object_field(fields, "context")?)
            .map_err(algorithm_error)?;
        for key in ["action", "action_prob", "state"] {
            required(fields, key)?;
        }
        algorithm
            .check_outcome_names(object_field(fields, "outcome")?)
            .map_err(algorithm_error)?;
    }

    let user_id = body::user_id(user)?;
    let decision_idx = body::decision_idx(idx, literals)?;
    let decision_type = body::decision_type(input)?;
    let timestamp = body::timestamp(timestamp, zone)?;
    let data = body::object(data, "data")?;
    let context = body::stored_object(object_field(&data, "context")?.clone(), "context")?;
    let action = body::action(required(&data, "action")?)?;
    let action_prob = body::action_prob(required(&data, "action_prob")?)?;
    let state = body::state(required(&data, "state")?)?;
    let outcome = body::stored_object(object_field(&data, "outcome")?.clone(), "outcome")?;
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

/// `correction`: absent or `null` is false; anything but a boolean is refused.
fn correction(input: &JsonObject) -> Result<bool, ApiError> {
    match body::field(input, "correction") {
        None => Ok(false),
        Some(value) => value
            .as_bool()
            .ok_or_else(|| ApiError::BadRequest("correction must be true or false.".into())),
    }
}

/// Store what happened after a decision, or (with `correction: true`) a correction of what
/// was stored for it.
///
/// Answers 201 once the data is stored. A correction is stored beside the original upload,
/// which is kept; updates that start after it learn from the corrected values, and the
/// answer's `correction` says which correction of the decision it is. The data belongs to the decision keyed by
/// `(user_id, decision_type, decision_idx)`; study data of an unavailable decision is stored
/// but never used by a model update.
///
/// # Errors
/// 400 for a malformed request, context or outcome, 404 for an unknown participant, 400 for a
/// second upload of the same decision or a correction of a decision without an upload, 409 for
/// an upload that contradicts the logged decision or a correction that contradicts the
/// original upload.
#[utoipa::path(
    post,
    path = "/api/v1/upload_data",
    operation_id = "upload_data",
    tag = "decisions",
    request_body = UploadDataRequest,
    responses(
        (status = 201, description = "Stored.", body = UploadDataResponse),
        (status = 400, description = "A field is missing or malformed, the algorithm refuses the context or outcome, data was uploaded for this decision already (`Decision index already exists.`), or a correction names a decision without an upload (`No upload to correct for this decision index.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
        (status = 409, description = "The service logged this decision with another `action`, or an `action_prob` more than 1e-9 away, or a correction's differ from the original upload's; nothing is stored.", body = ErrorResponse),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    JsonBody(input, literals): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let upload = parse(
        &input,
        &literals,
        state.service.algorithm(),
        state.naive_time_zone,
    )?;
    let service = state.service.clone();
    if correction(&input)? {
        let stored = run_blocking(move || service.correct_upload(upload)).await?;
        return Ok(HttpResponse::Created().json(UploadDataResponse {
            correction: Some(stored.number),
            ..UploadDataResponse::default()
        }));
    }
    let decision_time = upload.requested_at;
    let stored = run_blocking(move || service.upload_data(upload)).await;
    if let Some(metrics) = &state.metrics {
        match &stored {
            Ok(_) => metrics.upload_stored(decision_time, chrono::Utc::now()),
            Err(e) if e.status_code() == StatusCode::CONFLICT => metrics.upload_refused(),
            Err(_) => {}
        }
    }
    stored?;
    Ok(HttpResponse::Created().json(UploadDataResponse::default()))
}
