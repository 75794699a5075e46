//! The routes, one handler per file under `<noun>/<verb>.rs`: parse the request, make one call
//! into the core, map the result. [`configure`] mounts them all.

use actix_web::http::header::{HeaderValue, ALLOW};
use actix_web::{web, HttpResponse, ResponseError};

use crate::error::ApiError;

pub mod action;
pub mod dashboard;
pub mod data;
pub mod export;
pub mod health;
pub mod host_decision;
pub mod metrics;
pub mod monitor;
pub mod openapi;
pub mod parameters;
pub mod update;
pub mod users;

/// Mounts every route; wrong methods answer 405 and unknown paths 404, both in JSON.
pub fn configure(cfg: &mut web::ServiceConfig) {
    crate::openapi::prepare();
    cfg.service(
        web::scope("/api/v1")
            .service(
                web::resource("/add_user")
                    .route(web::post().to(users::add::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/users/{user_id}")
                    .route(web::get().to(users::show::handle))
                    .route(web::patch().to(users::change::handle))
                    .default_service(method_not_allowed("GET, PATCH")),
            )
            .service(
                web::resource("/users/{user_id}/decisions/{decision_idx}")
                    .route(web::get().to(data::history::handle))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/users/{user_id}/withdraw")
                    .route(web::post().to(users::withdraw::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/users/{user_id}/erase")
                    .route(web::post().to(users::erase::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/host_decision")
                    .route(web::post().to(host_decision::record::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/action")
                    .route(web::post().to(action::request::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/upload_data")
                    .route(web::post().to(data::upload::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/update")
                    .route(web::post().to(update::request::handle))
                    .default_service(method_not_allowed("POST")),
            )
            .service(
                web::resource("/update/{update_id}")
                    .route(web::get().to(update::status::handle))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/parameters")
                    .route(web::get().to(parameters::show::current))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/parameters/{version}")
                    .route(web::get().to(parameters::show::version))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/export")
                    .route(web::get().to(export::download::handle))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/monitor")
                    .route(web::get().to(monitor::show::handle))
                    .default_service(method_not_allowed("GET")),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(openapi::show))
                    .default_service(method_not_allowed("GET")),
            ),
    )
    .service(
        web::resource("/metrics")
            .route(web::get().to(metrics::show))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource(["/dashboard", "/dashboard/"])
            .route(web::get().to(dashboard::overview::handle))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/dashboard/participants")
            .route(web::get().to(dashboard::participants::handle))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/dashboard/updates")
            .route(web::get().to(dashboard::updates::handle))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/dashboard/updates/{update_id}")
            .route(web::get().to(dashboard::update::handle))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/dashboard/{rest:.*}")
            .route(web::get().to(dashboard::not_found))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(method_not_allowed("GET")),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(method_not_allowed("GET")),
    )
    .default_service(web::to(not_found));
}

/// 405 in JSON for every method but `allowed`, which the `Allow` header names (RFC 9110
/// requires it on a 405).
fn method_not_allowed(allowed: &'static str) -> actix_web::Route {
    web::to(move || async move {
        let mut response = ApiError::MethodNotAllowed.error_response();
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allowed));
        response
    })
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found.".into()))
}

#[cfg(test)]
mod tests {
    use actix_web::{http::Method, test, App};

    use super::*;

    #[actix_web::test]
    async fn a_wrong_method_answers_405_naming_the_one_allowed() {
        let app = test::init_service(App::new().configure(configure)).await;
        let cases = [
            (Method::GET, "/api/v1/add_user", "POST"),
            (Method::PUT, "/api/v1/action", "POST"),
            (Method::DELETE, "/api/v1/update/x", "GET"),
            (Method::POST, "/api/v1/parameters", "GET"),
            (Method::TRACE, "/healthz", "GET"),
            (Method::HEAD, "/readyz", "GET"),
            (Method::POST, "/api/v1/users/u1", "GET, PATCH"),
            (Method::GET, "/api/v1/users/u1/withdraw", "POST"),
            (Method::DELETE, "/api/v1/users/u1/erase", "POST"),
            (Method::GET, "/api/v1/host_decision", "POST"),
        ];

        for (method, path, allowed) in cases {
            let request = test::TestRequest::default()
                .method(method.clone())
                .uri(path)
                .to_request();
            let response = test::call_service(&app, request).await;

            assert_eq!(response.status(), 405, "{method} {path}");
            assert_eq!(
                response.headers().get(ALLOW).and_then(|v| v.to_str().ok()),
                Some(allowed),
                "{method} {path}"
            );
            let body: serde_json::Value = test::read_body_json(response).await;
            assert_eq!(
                body,
                serde_json::json!({"status": "failed", "message": "Method not allowed."})
            );
        }
    }
}
