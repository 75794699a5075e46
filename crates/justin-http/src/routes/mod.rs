//! The routes, one handler per file under `<noun>/<verb>.rs`: parse the request, make one call
//! into the core, map the result. [`configure`] mounts them all.

use actix_web::{web, HttpResponse};

use crate::error::ApiError;

pub mod action;
pub mod data;
pub mod health;
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
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/action")
                    .route(web::post().to(action::request::handle))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/upload_data")
                    .route(web::post().to(data::upload::handle))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/update")
                    .route(web::post().to(update::request::handle))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/update/{update_id}")
                    .route(web::get().to(update::status::handle))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/parameters")
                    .route(web::get().to(parameters::show::current))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/parameters/{version}")
                    .route(web::get().to(parameters::show::version))
                    .default_service(web::to(method_not_allowed)),
            )
            .service(
                web::resource("/openapi.json")
                    .route(web::get().to(openapi::show))
                    .default_service(web::to(method_not_allowed)),
            ),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::healthz))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::readyz))
            .default_service(web::to(method_not_allowed)),
    )
    .default_service(web::to(not_found));
}

async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound("Not found.".into()))
}
