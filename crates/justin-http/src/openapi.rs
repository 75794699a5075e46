//! The OpenAPI 3.1 document of the HTTP API, derived from the handlers' `#[utoipa::path]`
//! annotations and the types in [`crate::api_types`], so that it changes with the code.
//!
//! It is serialized once per process, served at `GET /api/v1/openapi.json`, printed by
//! `justin openapi` and committed as `docs/openapi.json`: `make openapi` rewrites that file,
//! and a test fails when it differs from the served document.

use std::sync::LazyLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, LicenseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::error::ApiError;
use crate::routes;

/// The name of the security scheme of every `/api/v1` operation.
pub const BEARER: &str = "bearer";

/// What the document says about the API as a whole: what the operations cannot.
const DESCRIPTION: &str = "\
JustIn runs decision algorithms for digital-health studies; a study's app server calls this \
API. The four endpoints of the JustIn template (`add_user`, `action`, `upload_data`, `update`) \
keep the template's requests, answers and messages.

Request bodies are JSON objects sent with `Content-Type: application/json`. A field whose \
value is `null` or `\"\"` counts as missing. Every refusal or failure answers \
`{\"message\": ..., \"status\": \"failed\"}`. Besides the statuses each operation lists, any \
other method on these paths answers 405 (`Method not allowed.`) and any other path 404 \
(`Not found.`), in the same envelope.

When API keys are configured (`auth.api_keys`), every `/api/v1` route requires \
`Authorization: Bearer <key>`; `/healthz` and `/readyz` stay open.";

#[derive(OpenApi)]
#[openapi(
    paths(
        routes::users::add::handle,
        routes::users::show::handle,
        routes::users::change::handle,
        routes::users::withdraw::handle,
        routes::users::erase::handle,
        routes::action::request::handle,
        routes::host_decision::record::handle,
        routes::data::upload::handle,
        routes::update::request::handle,
        routes::update::status::handle,
        routes::parameters::show::current,
        routes::parameters::show::version,
        routes::export::download::handle,
        routes::monitor::show::handle,
        routes::openapi::show,
        routes::health::healthz,
        routes::health::readyz,
    ),
    components(responses(
        Unauthorized,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unavailable,
        InternalError
    )),
    modifiers(&Overview),
    tags(
        (name = "participants", description = "The participants of a study: registration, their time in the study, withdrawal and erasure."),
        (name = "decisions", description = "Decisions and what followed them."),
        (name = "updates", description = "Model updates, run in the background."),
        (name = "parameters", description = "The algorithm's model parameters, by version."),
        (name = "analysis", description = "The study's decisions and outcomes as one table."),
        (name = "monitor", description = "The watchdog: the running study against its schedule."),
        (name = "probes", description = "Liveness and readiness, for orchestrators; open."),
        (name = "document", description = "This document."),
    )
)]
struct ApiDoc;

/// Sets what the derive cannot: the title and description, the licence and the bearer scheme.
struct Overview;

impl Modify for Overview {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.info = InfoBuilder::new()
            .title("JustIn")
            .version(env!("CARGO_PKG_VERSION"))
            .description(Some(DESCRIPTION))
            .license(Some(
                LicenseBuilder::new()
                    .name("MIT OR Apache-2.0")
                    .identifier(Some("MIT OR Apache-2.0"))
                    .build(),
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
                BEARER,
                SecurityScheme::Http(
                    HttpBuilder::new()
                        .scheme(HttpAuthScheme::Bearer)
                        .description(Some(
                            "One of the keys in `auth.api_keys`, as `Authorization: Bearer <key>`.",
                        ))
                        .build(),
                ),
            );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as the service serves it and `docs/openapi.json` holds it: pretty-printed
/// JSON ending in a newline.
///
/// # Errors
/// When the document cannot be serialized (it always can: its maps have string keys).
pub fn document_json() -> Result<String, serde_json::Error> {
    document().to_pretty_json().map(|mut text| {
        text.push('\n');
        text
    })
}

/// The serialized document, built on first use: [`prepare`] makes that the start-up.
static SERVED: LazyLock<Result<String, String>> =
    LazyLock::new(|| document_json().map_err(|e| e.to_string()));

/// Builds the served document now, so no request pays for it.
pub fn prepare() {
    LazyLock::force(&SERVED);
}

/// The served document.
///
/// # Errors
/// 500 when it could not be serialized.
pub fn served() -> Result<&'static str, ApiError> {
    match &*SERVED {
        Ok(text) => Ok(text.as_str()),
        Err(e) => Err(ApiError::Internal(Box::new(std::io::Error::other(
            format!("cannot serialize the OpenAPI document: {e}"),
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_serializes() {
        let text = document_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();

        assert_eq!(value["openapi"], "3.1.0");
        assert_eq!(value["info"]["title"], "JustIn");
        assert_eq!(
            value["components"]["securitySchemes"][BEARER],
            serde_json::json!({
                "type": "http",
                "scheme": "bearer",
                "description": "One of the keys in `auth.api_keys`, as `Authorization: Bearer <key>`."
            })
        );
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn every_user_id_in_a_request_carries_the_user_id_pattern() {
        let value = serde_json::to_value(document()).unwrap();
        let schemas = value["components"]["schemas"].as_object().unwrap();

        for name in [
            "AddUserRequest",
            "ActionRequest",
            "UploadDataRequest",
            "HostDecisionRequest",
        ] {
            assert_eq!(
                schemas[name]["properties"]["user_id"]["pattern"],
                crate::api_types::USER_ID_PATTERN,
                "{name}"
            );
        }
    }
}
