//! `GET /api/v1/update/{update_id}`: where an update request stands.

use actix_web::{web, HttpResponse};
use serde_json::json;
use uuid::Uuid;

use crate::blocking::run_blocking;
use crate::error::ApiError;
use crate::state::AppState;

/// Answers with the request's status, times, error and the parameter version it produced.
///
/// # Errors
/// 400 for an id that is not a UUID, 404 for an unknown one.
pub async fn handle(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::parse_str(&path.into_inner())
        .map_err(|_| ApiError::BadRequest("update_id must be a UUID.".into()))?;
    let service = state.service.clone();
    let u = run_blocking(move || service.update_request(id)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "status": "success",
        "update_id": u.id,
        "update_status": u.status,
        "requested_at": u.requested_at,
        "received_at": u.received_at,
        "started_at": u.started_at,
        "finished_at": u.finished_at,
        "attempts": u.attempts,
        "error": u.error,
        "parameter_version": u.parameter_version,
        "callback": {
            "url": u.callback_url,
            "status": u.callback.status,
            "attempts": u.callback.attempts,
            "last_error": u.callback.last_error,
            "finished_at": u.callback.finished_at,
        },
        "provenance": u.provenance,
    })))
}
