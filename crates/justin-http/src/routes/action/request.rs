//! `POST /api/v1/action`: draw (or return the stored) action for one decision.

use actix_web::{web, HttpResponse};
use justin_core::{ActionRequest, Algorithm, DomainError, JsonObject};
use serde_json::Value;

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{ActionRequest as ActionRequestBody, ActionResponse, ErrorResponse};
use crate::body::{self, JsonBody, Literals};
use crate::error::ApiError;
use crate::state::AppState;

/// Checks the request in the template's order: missing fields, then the context fields the
/// algorithm needs, then wrong types. The algorithm's checks of those fields' types come
/// after, in the core.
fn parse(
    mut input: JsonObject,
    literals: &Literals,
    algorithm: &dyn Algorithm,
    zone: chrono_tz::Tz,
) -> Result<ActionRequest, ApiError> {
    let sent = body::decision_fields(&input)?;
    // An unavailable decision draws nothing, so its context need not suit the algorithm.
    if body::field(&input, "available") != Some(&Value::Bool(false)) {
        algorithm
            .check_context_names(sent.context)
            .map_err(|e| ApiError::from(DomainError::from(e)))?;
    }
    let key = sent.parse(&input, literals, zone)?;
    // The checks above passed, so the context is present; move it out rather than copy it.
    let context = input.remove("context").unwrap_or_default();
    Ok(ActionRequest {
        user_id: key.user_id,
        decision_type: key.decision_type,
        decision_idx: key.decision_idx,
        requested_at: key.timestamp.at,
        sent_timestamp: key.timestamp.sent,
        availability: key.availability,
        context: body::stored_object(context, "context")?,
    })
}

/// Draw the action for one decision.
///
/// Answers 201 with a new decision, or 200 with the one stored for this decision before. A
/// decision is keyed by `(user_id, decision_type, decision_idx)`; with `available: false` it
/// is stored without a draw, as action 0 with probability 0. So is a decision whose
/// `timestamp` lies outside the participant's time in the study, or of a withdrawn
/// participant: the answer then says `"in_study": false` with `unavailable_reason`
/// `not_in_study` or `withdrawn`. A context value that is missing (absent or `null`) follows
/// the algorithm's rule for it: refused (400, the default), imputed (the `state` shows it), or
/// the decision stored as not available with `unavailable_reason` `missing_context`. During a
/// configured warm-up, or when the algorithm fails and a fallback is configured, the answer
/// names the `policy` that gave the probability.
///
/// # Errors
/// 400 for a malformed request or context, 404 for an unknown participant, 400 when study data
/// was uploaded for the decision already.
#[utoipa::path(
    post,
    path = "/api/v1/action",
    operation_id = "request_action",
    tag = "decisions",
    request_body = ActionRequestBody,
    responses(
        (status = 200, description = "The decision stored for this `(user_id, decision_type, decision_idx)` before; nothing new is stored.", body = ActionResponse),
        (status = 201, description = "A new decision, stored.", body = ActionResponse, links(
            ("UploadData" = (
                operation_id = "upload_data",
                request_body = json!({
                    "user_id": "$response.body#/user_id",
                    "decision_idx": "$request.body#/decision_idx",
                }),
                description = "What happened after this decision; `data.action` and \
                    `data.action_prob` must be this answer's.",
            )),
        )),
        (status = 400, description = "A field is missing or malformed, the algorithm refuses the context, or study data was uploaded for this decision already (`Decision index already exists.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
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
    let request = parse(
        input,
        &literals,
        state.service.algorithm(),
        state.naive_time_zone,
    )?;
    let service = state.service.clone();
    let in_progress = state.metrics.as_ref().map(|m| m.decision_in_progress());
    let outcome = state
        .deciding
        .run(move || service.request_action(request))
        .await?;
    drop(in_progress);
    if let Some(metrics) = &state.metrics {
        metrics.decision(&outcome);
    }
    let body = ActionResponse::from(outcome.decision);
    Ok(if outcome.created {
        HttpResponse::Created().json(body)
    } else {
        HttpResponse::Ok().json(body)
    })
}
