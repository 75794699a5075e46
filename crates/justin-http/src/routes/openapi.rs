//! `GET /api/v1/openapi.json`: the OpenAPI document of this API (see [`crate::openapi`]).
//! Open, like the probes: it describes the API and holds no study data, and a study server's
//! team generates its client from a keyed service's URL without handing the key to the
//! generator (see [`crate::auth::OPENAPI_PATH`]).

use actix_web::http::header::ContentType;
use actix_web::HttpResponse;

use crate::api_types::responses::InternalError;
use crate::error::ApiError;

/// This document.
///
/// The OpenAPI 3.1 document of this API, as committed in `docs/openapi.json`. Open: needs no
/// API key.
///
/// # Errors
/// 500 when the document could not be serialized at start-up.
#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "get_openapi",
    tag = "document",
    responses(
        (status = 200, description = "The document.", body = std::collections::BTreeMap<String, serde_json::Value>, content_type = "application/json"),
        (status = 500, response = InternalError),
    ),
)]
pub async fn show() -> Result<HttpResponse, ApiError> {
    let text = crate::openapi::served()?;
    Ok(HttpResponse::Ok()
        .content_type(ContentType::json())
        .body(text))
}
