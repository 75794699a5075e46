//! `POST /api/v1/host_decision`: store a decision the study server made itself while the
//! service was unreachable.

use actix_web::{web, HttpResponse};
use justin_core::domain::MAX_POLICY_NOTE_LEN;
use justin_core::{Action, DomainError, HostDecisionRequest, JsonObject, Probability};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{
    ActionResponse, DecisionConflict, ErrorResponse, Failed, HostDecisionRequest as Body,
    StoredDecision,
};
use crate::body::{self, JsonBody, Literals};
use crate::error::ApiError;
use crate::state::AppState;

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// Checks the request in `/action`'s order (missing fields, then wrong types, then values),
/// then the fields `/action` does not have.
fn parse(
    mut input: JsonObject,
    literals: &Literals,
    zone: chrono_tz::Tz,
) -> Result<HostDecisionRequest, ApiError> {
    let sent = body::decision_fields(&input)?;
    let action = body::field(&input, "action").ok_or_else(|| bad("action is required."))?;
    let action_prob =
        body::field(&input, "action_prob").ok_or_else(|| bad("action_prob is required."))?;
    let key = sent.parse(&input, literals, zone)?;
    let action = body::action(action)?;
    let action_prob = body::action_prob(action_prob)?;
    let decided_by = body::note(&input, "decided_by", MAX_POLICY_NOTE_LEN)?;
    if !key.availability.is_available()
        && (action != Action::Zero || action_prob != Probability::ZERO)
    {
        return Err(bad(
            "An unavailable decision has action 0 and action_prob 0.",
        ));
    }
    let context = input.remove("context").unwrap_or_default();
    Ok(HostDecisionRequest {
        user_id: key.user_id,
        decision_type: key.decision_type,
        decision_idx: key.decision_idx,
        requested_at: key.timestamp.at,
        sent_timestamp: key.timestamp.sent,
        availability: key.availability,
        context: body::stored_object(context, "context")?,
        action,
        action_prob,
        decided_by,
    })
}

/// Store a decision the study server made itself.
///
/// While the service was unreachable, the study server decided on its own (drawing with a
/// probability it knows). Sent afterwards with its action, probability and who decided, the
/// decision is stored as sent and marked as decided by the host (`policy` `host`), so the
/// participant × decision time grid stays complete. Study data uploaded for the key before
/// must agree with it, and then counts as logged. Such decisions reach model updates only when
/// `update.include_host` is set. Sending the same decision again answers 200.
///
/// # Errors
/// 400 for a malformed request or when study data uploaded for the key disagrees, 404 for an
/// unknown participant, 409 when another decision is stored for the key.
#[utoipa::path(
    post,
    path = "/api/v1/host_decision",
    operation_id = "record_host_decision",
    tag = "decisions",
    request_body = Body,
    responses(
        (status = 200, description = "The same decision was stored before; nothing new is stored.", body = ActionResponse),
        (status = 201, description = "Stored.", body = ActionResponse),
        (status = 400, description = "A field is missing or malformed (the messages of `/action`, and `action must be 0 or 1.`, `action_prob must be a number between 0 and 1.`, `decided_by is required.` ...), an unavailable decision has another action or probability than 0, or study data uploaded for the key has another action or probability.", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
        (status = 409, description = "Another decision is stored for this `(user_id, decision_type, decision_idx)` (`A different decision is stored for this decision index.`); the answer holds it.", body = DecisionConflict),
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
    let request = parse(input, &literals, state.naive_time_zone)?;
    let service = state.service.clone();
    let outcome = web::block(move || service.record_host_decision(request))
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e @ DomainError::DecisionDiffers(_)) => {
            let message = e.to_string();
            let DomainError::DecisionDiffers(stored) = e else {
                return Err(ApiError::Conflict(message));
            };
            return Ok(HttpResponse::Conflict().json(DecisionConflict {
                decision: StoredDecision::from(*stored),
                message,
                status: Failed::Failed,
            }));
        }
        // The core names the upload's values `uploaded_*` and this decision's `logged_*`.
        Err(DomainError::UploadMismatch {
            uploaded_action,
            uploaded_prob,
            logged_action,
            logged_prob,
        }) => {
            return Err(ApiError::BadRequest(format!(
                "The study data uploaded for this decision (action {uploaded_action}, \
                 action_prob {uploaded_prob}) must match it (action {logged_action}, \
                 action_prob {logged_prob})."
            )))
        }
        Err(e) => return Err(e.into()),
    };
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
