//! `PATCH /api/v1/users/{user_id}`: change a participant's time in the study.

use actix_web::{web, HttpResponse};
use justin_core::{DomainError, Enrollment, SentTime};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{ChangeEnrollmentRequest, ErrorResponse, ParticipantResponse};
use crate::blocking::run_blocking;
use crate::body::{self, JsonBody};
use crate::error::ApiError;
use crate::state::AppState;

/// The fields a change may hold.
const FIELDS: [&str; 2] = ["study_start", "study_end"];

/// What a change does to one bound.
enum Change {
    Keep,
    Set(Option<SentTime>),
}

impl Change {
    fn apply(self, current: Option<SentTime>) -> Option<SentTime> {
        match self {
            Self::Keep => current,
            Self::Set(new) => new,
        }
    }
}

/// Change a participant's time in the study.
///
/// A bound sent replaces the stored one (kept exactly as sent), `null` removes it (the window
/// is open on that side), an absent one is kept. The change is recorded in the participant's
/// history. Decisions stored before keep what they got; decisions from now on follow the new
/// window.
///
/// # Errors
/// 400 for a field other than the two, a bound that is not a timestamp, or an end not after
/// the start; 404 for a participant not registered.
#[utoipa::path(
    patch,
    path = "/api/v1/users/{user_id}",
    operation_id = "change_user",
    tag = "participants",
    params(("user_id" = String, Path, description = "The participant's id (percent-encoded).")),
    request_body = ChangeEnrollmentRequest,
    responses(
        (status = 200, description = "Changed; the participant as now stored.", body = ParticipantResponse),
        (status = 400, description = "The id is not valid, the body holds another field, a bound is not a timestamp, or the end is not later than the start (`study_end must be later than study_start.`).", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "The participant is not registered (`User not found.`).", body = ErrorResponse),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    path: web::Path<String>,
    JsonBody(input, _): JsonBody,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let user = body::path_user_id(&path.into_inner())?;
    if let Some(other) = input.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "{other} cannot be changed; send study_start and/or study_end."
        )));
    }
    let zone = state.naive_time_zone;
    // `null` is a change here (it opens the bound), so absent and null are told apart.
    let change = |key: &str| match input.get(key) {
        None => Ok(Change::Keep),
        Some(value) => body::study_time(value, key, zone).map(Change::Set),
    };
    let start = change("study_start")?;
    let end = change("study_end")?;
    let service = state.service.clone();
    let view = run_blocking(move || {
        let current = service.participant(&user)?.participant.enrollment;
        let enrollment = Enrollment::new(start.apply(current.start), end.apply(current.end))
            .map_err(|e| DomainError::InvalidInput(e.0))?;
        service.change_enrollment(&user, &enrollment)
    })
    .await?;
    Ok(HttpResponse::Ok().json(ParticipantResponse::from(view)))
}
