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
    if !state.callback_allowed_hosts.is_empty() {
        let host = body::url_host(&callback_url);
        if !state
            .callback_allowed_hosts
            .iter()
            .any(|allowed| allowed.eq_ignore_ascii_case(host))
        {
            return Err(ApiError::BadRequest(format!(
                "callback_url host {host:?} is not in update.callback_allowed_hosts."
            )));
        }
    }
    let service = state.service.clone();
    let request = run_blocking(move || service.request_update(requested_at, callback_url)).await?;
    let id = request.id;
    state.updates.wake();
    Ok(HttpResponse::Accepted().json(json!({ "status": "processing", "update_id": id })))
}
