//! `POST /api/v1/update`: accept a model update; it runs in the background.

use actix_web::{web, HttpResponse};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{ErrorResponse, Processing, UpdateAccepted, UpdateRequest};
use crate::blocking::run_blocking;
use crate::body::{self, required, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// Request a model update.
///
/// Stores the request, queues it and answers 202 with its id; the update runs in the
/// background and its outcome is POSTed to `callback_url`.
///
/// # Errors
/// 400 for a missing or malformed timestamp or callback URL, or a callback host that is not
/// allowed.
#[utoipa::path(
    post,
    path = "/api/v1/update",
    operation_id = "request_update",
    tag = "updates",
    request_body = UpdateRequest,
    responses(
        (status = 202, description = "Stored and queued.", body = UpdateAccepted, links(
            ("GetUpdate" = (
                operation_id = "get_update",
                parameters(("update_id" = "$response.body#/update_id")),
                description = "Where this update stands.",
            )),
        )),
        (status = 400, description = "`timestamp` or `callback_url` is missing or malformed, or the callback host is not in `update.callback_allowed_hosts`.", body = ErrorResponse),
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
    let timestamp = required(&input, "timestamp")?;
    let callback = required(&input, "callback_url")?;
    let timestamp = body::timestamp(timestamp, state.naive_time_zone)?;
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
    let request =
        run_blocking(move || service.request_update(timestamp.at, timestamp.sent, callback_url))
            .await?;
    state.updates.wake();
    Ok(HttpResponse::Accepted().json(UpdateAccepted {
        status: Processing::Processing,
        update_id: request.id,
    }))
}
