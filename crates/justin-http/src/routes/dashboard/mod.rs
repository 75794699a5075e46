//! `/dashboard`: the study dashboard's pages (HTML with SVG charts, nothing fetched from
//! elsewhere), one handler per file; `crate::dashboard` renders them.

use actix_web::http::StatusCode;
use actix_web::HttpResponse;

use crate::dashboard::html::{esc, page};

pub mod overview;
pub mod participants;
pub mod update;
pub mod updates;

/// A page as the answer.
pub(crate) fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-store"))
        .body(body)
}

/// A 4xx page saying `message` (plain text).
pub(crate) fn refusal(status: StatusCode, title: &str, message: &str) -> HttpResponse {
    html(
        status,
        page(title, &format!("<p id=\"error\">{}</p>", esc(message))),
    )
}

/// Any other path under `/dashboard/`: a 404 page.
pub async fn not_found() -> HttpResponse {
    refusal(
        StatusCode::NOT_FOUND,
        "Not found",
        "No dashboard page has this address.",
    )
}
