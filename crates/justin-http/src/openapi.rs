//! The OpenAPI 3.1 document of the HTTP API, derived from the handlers' `#[utoipa::path]`
//! annotations and the types in [`crate::api_types`], so that it changes with the code.
//!
//! It is serialized once per process, served at `GET /api/v1/openapi.json`, printed by
//! `justin openapi` and committed as `docs/openapi.json`: `make openapi` rewrites that file,
//! and a test fails when it differs from the served document. `make clients` lints it and
//! generates a Python client and TypeScript types from it (docs/clients.md).
//!
//! What the derive cannot say, the modifiers here add: the security of each operation (from
//! the rule [`crate::auth::requires_key`] applies), the headers every answer carries, the
//! callback of `POST /api/v1/update`, and the descriptions of nullable references.

use std::sync::LazyLock;

use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Callback, Operation, OperationBuilder, PathItem};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, InfoBuilder, LicenseBuilder, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::api_types::responses::{
    InternalError, PayloadTooLarge, Unauthorized, Unavailable, UnsupportedMediaType,
};
use crate::api_types::{UpdateCallback, UpdateCompleted, UpdateFailed};
use crate::auth::requires_key;
use crate::error::ApiError;
use crate::routes;

/// The name of the security scheme of the `/api/v1` operations.
pub const BEARER: &str = "bearer";

/// The header naming the request in the service's log, on every answer.
pub const REQUEST_ID: &str = "X-Request-Id";

/// The header of a 401 saying which credentials the API takes.
pub const WWW_AUTHENTICATE: &str = "WWW-Authenticate";

/// The name of the callback of `POST /api/v1/update`.
pub const UPDATE_CALLBACK: &str = "update_finished";

/// What the document says about the API as a whole: what the operations cannot.
const DESCRIPTION: &str = "\
JustIn runs decision algorithms for digital-health studies; a study's app server calls this \
API. The four endpoints of the JustIn template (`add_user`, `action`, `upload_data`, `update`) \
keep the template's requests, answers and messages.

Request bodies are JSON objects sent with `Content-Type: application/json`. A field whose \
value is `null` counts as missing: a required one is refused as missing, an optional one takes \
its default. An empty string `\"\"` counts as missing only for the fields the template checks \
for presence (`user_id`, `timestamp`, `callback_url`, an upload's `decision_idx`, `data`, \
`data.action`, `data.action_prob` and `data.state`, a withdrawal's `reason`, a host \
decision's `decided_by`), which are then refused with `<field> is required.`; anywhere else it \
is a value, checked by the field's own rules (`\"decision_type\": \"\"` and \
`\"available\": \"\"` get 400). Every refusal or failure answers \
`{\"message\": ..., \"status\": \"failed\"}`. Besides the statuses each operation lists, any \
other method on these paths answers 405 (`Method not allowed.`) and any other path 404 \
(`Not found.`), in the same envelope. Every answer carries `X-Request-Id`.

Optional answer fields are absent when they do not apply, never `null`; a field that can be \
`null` is always present.

When API keys are configured (`auth.api_keys`), every `/api/v1` route requires \
`Authorization: Bearer <key>`; without keys none does. Hence the two security alternatives \
(the key, or nothing): a client sends the key to a service that has keys, and nothing to one \
that has none. `/healthz`, `/readyz` and this document stay open either way.";

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
        routes::data::history::handle,
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
    components(
        schemas(UpdateCallback, UpdateCompleted, UpdateFailed),
        responses(
            Unauthorized,
            PayloadTooLarge,
            UnsupportedMediaType,
            Unavailable,
            InternalError
        )
    ),
    modifiers(&Overview, &Security, &Headers, &Callbacks, &NullableReferences),
    servers((
        url = "http://127.0.0.1:5000",
        description = "The address `make run` serves on (`server.host` and `server.port` in config.toml); a deployment has its own."
    )),
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

/// The title and description, the licence and the bearer scheme.
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

/// Security. A route under `/api/v1` needs a key when the service has keys and nothing when it
/// has none, so the document offers both alternatives, once, for every operation: the bearer
/// key or nothing (`[{"bearer": []}, {}]`). The operations [`requires_key`] lets through
/// without a key (the probes and this document) declare `[]` instead. A generated client can
/// then call a keyless service without credentials.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.security = Some(vec![
            SecurityRequirement::new(BEARER, Vec::<String>::new()),
            SecurityRequirement::default(),
        ]);
        for (path, item) in &mut openapi.paths.paths {
            let open = !requires_key(path);
            for operation in operations(item) {
                operation.security = open.then(Vec::new);
            }
        }
    }
}

/// The operations of a path item.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// The headers of the answers: `X-Request-Id` on every one (the access log sets it), and
/// `WWW-Authenticate` on a 401 ([`crate::error`] sets it).
struct Headers;

impl Modify for Headers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.headers.insert(
            REQUEST_ID.into(),
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .min_length(Some(1))
                        .max_length(Some(64)),
                ))
                .description(Some(
                    "The request's id in the service's log: the one the request sent in \
                     `X-Request-Id` when it is 1 to 64 letters, digits, `-`, `_` or `.`, a new \
                     UUID otherwise.",
                ))
                .build()
                .into(),
        );
        components.headers.insert(
            WWW_AUTHENTICATE.into(),
            HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some(
                    "The credentials the API takes: `Bearer realm=\"justin\"`.",
                ))
                .example(Some(serde_json::json!("Bearer realm=\"justin\"")))
                .build()
                .into(),
        );
        for response in components.responses.values_mut() {
            if let RefOr::T(response) = response {
                add_request_id(response);
            }
        }
        if let Some(RefOr::T(unauthorized)) = components.responses.get_mut("Unauthorized") {
            unauthorized.headers.insert(
                WWW_AUTHENTICATE.into(),
                RefOr::Ref(Ref::new(format!("#/components/headers/{WWW_AUTHENTICATE}"))),
            );
        }
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                for response in operation.responses.responses.values_mut() {
                    // A reference names a shared answer, which has the header already.
                    if let RefOr::T(response) = response {
                        add_request_id(response);
                    }
                }
            }
        }
    }
}

fn add_request_id(response: &mut Response) {
    response.headers.insert(
        REQUEST_ID.into(),
        RefOr::Ref(Ref::new(format!("#/components/headers/{REQUEST_ID}"))),
    );
}

/// The callback of `POST /api/v1/update`: what the service POSTs to `callback_url` when the
/// update ends ([`UpdateCallback`]), so that a study server's generated code has a model of it.
struct Callbacks;

impl Modify for Callbacks {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(update) = openapi
            .paths
            .paths
            .get_mut("/api/v1/update")
            .and_then(|item| item.post.as_mut())
        else {
            return;
        };
        let body = RequestBodyBuilder::new()
            .description(Some(
                "`completed` with the finishing time, or `failed`; `update_id` names the update.",
            ))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("UpdateCallback")))
                    .build(),
            )
            .required(Some(utoipa::openapi::Required::True))
            .build();
        let mut post = OperationBuilder::new()
            .operation_id(Some("update_callback"))
            .summary(Some(
                "The outcome of an update, POSTed to its callback_url.",
            ))
            .description(Some(
                "Sent once the update has completed or failed. A 2xx answer counts as \
                 delivered (its body is ignored). Anything else, a 3xx included (redirects are \
                 not followed), or no answer within `update.callback_timeout_secs`, is a failed \
                 attempt: the service tries again with a doubling wait, up to \
                 `update.callback_attempts` POSTs in all. Delivery is at least once: a receiver \
                 may get the same callback twice. The service sends no credentials.",
            ))
            .request_body(Some(body))
            .response("2XX", ResponseBuilder::new().description("Delivered."))
            .response(
                "4XX",
                ResponseBuilder::new().description(
                    "Not delivered: a refusal is a failed attempt like any other, tried again \
                     while attempts remain.",
                ),
            )
            .response(
                "default",
                ResponseBuilder::new()
                    .description("Not delivered: tried again while attempts remain."),
            )
            .build();
        // The service sends no credentials.
        post.security = Some(Vec::new());
        let mut callback = Callback::new();
        callback.insert(
            "{$request.body#/callback_url}".into(),
            RefOr::T(PathItem::new(utoipa::openapi::HttpMethod::Post, post)),
        );
        update
            .callbacks
            .insert(UPDATE_CALLBACK.into(), RefOr::T(callback));
    }
}

/// A nullable reference (`Option<Provenance>`) comes out of the derive as
/// `oneOf: [{$ref, description}, {type: null}]`, with its description inside the branch, where
/// generators do not look: it moves up to the property.
struct NullableReferences;

impl Modify for NullableReferences {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for schema in components.schemas.values_mut() {
            let RefOr::T(Schema::Object(object)) = schema else {
                continue;
            };
            for property in object.properties.values_mut() {
                let RefOr::T(Schema::OneOf(one_of)) = property else {
                    continue;
                };
                if one_of.description.is_some() {
                    continue;
                }
                for item in &mut one_of.items {
                    if let RefOr::Ref(reference) = item {
                        if !reference.description.is_empty() {
                            one_of.description = Some(std::mem::take(&mut reference.description));
                        }
                    }
                }
            }
        }
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
