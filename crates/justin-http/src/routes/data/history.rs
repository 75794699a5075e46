//! `GET /api/v1/users/{user_id}/decisions/{decision_idx}`: everything stored for one decision,
//! its upload and the upload's corrections.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::api_types::responses::{InternalError, Unauthorized, Unavailable};
use crate::api_types::{DecisionHistoryResponse, ErrorResponse};
use crate::blocking::run_blocking;
use crate::body;
use crate::error::ApiError;
use crate::state::AppState;

/// The query of the route.
#[derive(Debug, Deserialize)]
struct HistoryQuery {
    decision_type: Option<String>,
}

/// The decision type the query names, checked as a request body's `decision_type` is
/// (absent: `default`). A query that does not parse (a field twice, say) is 400 in the JSON
/// envelope, which actix's own extractor would not answer in.
fn query_decision_type(query: &str) -> Result<justin_core::DecisionType, ApiError> {
    let parsed = web::Query::<HistoryQuery>::from_query(query)
        .map_err(|_| ApiError::BadRequest("The query must be at most one decision_type.".into()))?;
    let mut fields = justin_core::JsonObject::new();
    if let Some(kind) = parsed.into_inner().decision_type {
        fields.insert("decision_type".into(), kind.into());
    }
    body::decision_type(&fields)
}

/// The decision index of the path: a non-negative integer, written in decimal.
fn path_decision_idx(raw: &str) -> Result<justin_core::DecisionIdx, ApiError> {
    let refused = || ApiError::BadRequest("decision_idx must be a non-negative integer.".into());
    let value: i64 = raw.parse().map_err(|_| refused())?;
    justin_core::DecisionIdx::new(value).map_err(|_| refused())
}

/// Show what is stored for one decision.
///
/// The decision as `/action` answered it, the original upload and every correction of it,
/// oldest first, each with its values and times as sent and when it was received. The newest
/// correction is the value in force (the upload's when there is none).
///
/// # Errors
/// 400 for an invalid id, index, type or query, 404 when neither a decision nor an upload is
/// stored for the key.
#[utoipa::path(
    get,
    path = "/api/v1/users/{user_id}/decisions/{decision_idx}",
    operation_id = "show_decision",
    tag = "decisions",
    params(
        ("user_id" = String, Path, description = "The participant's id (percent-encoded)."),
        ("decision_idx" = i64, Path, minimum = 0, description = "The decision's index."),
        ("decision_type" = Option<String>, Query, description = "The decision's type; absent means `default`."),
    ),
    responses(
        (status = 200, description = "The decision, its upload and the upload's corrections.", body = DecisionHistoryResponse),
        (status = 400, description = "The id, index or type is not valid, or the query names more than a `decision_type`.", body = ErrorResponse),
        (status = 401, response = Unauthorized),
        (status = 404, description = "Nothing is stored for this decision (`Decision not found.`).", body = ErrorResponse),
        (status = 500, response = InternalError),
        (status = 503, response = Unavailable),
    ),
)]
pub async fn handle(
    request: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let (user, idx) = path.into_inner();
    let user = body::path_user_id(&user)?;
    let decision_idx = path_decision_idx(&idx)?;
    let decision_type = query_decision_type(request.query_string())?;
    let service = state.service.clone();
    let (u, t) = (user.clone(), decision_type.clone());
    let history = run_blocking(move || service.decision_history(&u, &t, decision_idx)).await?;
    let history = history.ok_or_else(|| ApiError::NotFound("Decision not found.".into()))?;
    Ok(HttpResponse::Ok().json(DecisionHistoryResponse::new(
        user,
        decision_type,
        decision_idx,
        history,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_names_at_most_one_valid_decision_type() {
        assert_eq!(query_decision_type("").unwrap().as_str(), "default");
        assert_eq!(
            query_decision_type("decision_type=evening")
                .unwrap()
                .as_str(),
            "evening"
        );
        for bad in [
            "decision_type=a&decision_type=b",
            "decision_type=no%20spaces",
            "decision_type=",
        ] {
            assert!(query_decision_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_index_is_a_non_negative_decimal_integer() {
        assert_eq!(path_decision_idx("12").unwrap().get(), 12);
        for bad in ["-1", "1.5", "x", "", "99999999999999999999"] {
            assert!(path_decision_idx(bad).is_err(), "{bad}");
        }
    }
}
