//! The access log: one line per request, under the target [`ACCESS_TARGET`], with the method,
//! the path (without the query string), the status, the latency, the request id and the name
//! of the API key used (`-` without one):
//!
//! ```text
//! POST /api/v1/action 201 1.799ms request_id=4b0c2f6e-... key=study-app
//! ```
//!
//! Bodies, and so contexts and outcomes, are not logged: the data is health data. Only with
//! `logging.log_bodies = true`, for debugging, does the line end with the request body.
//!
//! Paths under `/api/v1/users/` carry a participant's id, which is personal data (and must be
//! gone from everywhere once the participant is erased): they are logged as their route's
//! pattern (`PATCH /api/v1/users/{user_id} 200 ...`), or as [`PARTICIPANT_PATH`] when no route
//! matched.
//!
//! Every response carries its request id in `X-Request-Id`. A request may bring its own (a
//! proxy's or the study server's, up to 64 letters, digits, `-`, `_` or `.`), which is then
//! used; any other value is replaced by a fresh UUID.

use std::time::Instant;

use actix_web::body::{self, BodyStream, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpMessage;

use crate::auth::KeyName;
use crate::error::ApiError;

/// The log target of every access line.
pub const ACCESS_TARGET: &str = "justin::access";

/// The header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Paths under this prefix name a participant.
const PARTICIPANT_PREFIX: &str = "/api/v1/users/";

/// What the log shows for a path under [`PARTICIPANT_PREFIX`] that matched no route.
pub const PARTICIPANT_PATH: &str = "/api/v1/users/{...}";

/// The path as the access log shows it: as sent, except that a path naming a participant is
/// replaced by the pattern of the route it matched (`pattern`), or [`PARTICIPANT_PATH`].
fn logged_path(path: &str, pattern: Option<String>) -> String {
    if !path.starts_with(PARTICIPANT_PREFIX) {
        return path.to_owned();
    }
    pattern
        .filter(|p| p.starts_with(PARTICIPANT_PREFIX))
        .unwrap_or_else(|| PARTICIPANT_PATH.to_owned())
}

/// The longest request id taken from a request.
const MAX_REQUEST_ID_CHARS: usize = 64;

/// What the access log writes.
#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    /// Also log each request body (health data): for debugging only.
    pub log_bodies: bool,
    /// The largest body buffered for logging; a larger one gets 413, as the API gives it.
    pub max_body_bytes: usize,
    /// How long the body may take to arrive; a slower one gets 408, as the API gives it.
    pub body_timeout: std::time::Duration,
}

/// Middleware: logs one line per request and sets `X-Request-Id` on the response.
///
/// # Errors
/// Only those of the inner service, logged with their status first.
pub async fn log_request<B: MessageBody>(
    settings: AccessLog,
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(req.headers().get(REQUEST_ID_HEADER));
    let method = req.method().clone();
    // The path as sent, without the query string (which may carry anything).
    let sent_path = req.path().to_owned();
    let line = |path: String, status: u16, key: Option<&KeyName>, body: &Option<String>| {
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        let key = key.map_or("-", KeyName::as_str);
        match body {
            None => log::info!(
                target: ACCESS_TARGET,
                "{method} {path} {status} {latency_ms:.3}ms request_id={id} key={key}"
            ),
            Some(body) => log::info!(
                target: ACCESS_TARGET,
                "{method} {path} {status} {latency_ms:.3}ms request_id={id} key={key} body={body:?}"
            ),
        }
    };

    let mut logged_body = None;
    if settings.log_bodies {
        match buffer_body(&mut req, settings.max_body_bytes, settings.body_timeout).await {
            Ok(text) => logged_body = Some(text),
            Err(e) => {
                let mut res = req.error_response(e);
                line(
                    logged_path(&sent_path, None),
                    res.status().as_u16(),
                    None,
                    &Some("<not read>".into()),
                );
                set_request_id(res.headers_mut(), &id);
                return Ok(res.map_into_right_body());
            }
        }
    }

    match next.call(req).await {
        Ok(mut res) => {
            line(
                logged_path(&sent_path, res.request().match_pattern()),
                res.status().as_u16(),
                res.request().extensions().get::<KeyName>(),
                &logged_body,
            );
            set_request_id(res.headers_mut(), &id);
            Ok(res.map_into_left_body())
        }
        Err(e) => {
            let status = e.as_response_error().status_code().as_u16();
            line(logged_path(&sent_path, None), status, None, &logged_body);
            Err(e)
        }
    }
}

/// Reads the whole body (within `limit` and `timeout`), puts it back for the handler
/// unchanged, and returns it as text for the log.
async fn buffer_body(
    req: &mut ServiceRequest,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<String, ApiError> {
    let read = body::to_bytes_limited(BodyStream::new(req.take_payload()), limit);
    let bytes = match actix_web::rt::time::timeout(timeout, read).await {
        Err(_elapsed) => return Err(ApiError::RequestTimeout),
        Ok(Ok(Ok(bytes))) => bytes,
        Ok(Ok(Err(e))) => {
            return Err(ApiError::BadRequest(format!(
                "The request body could not be read: {e}."
            )))
        }
        Ok(Err(_)) => return Err(ApiError::PayloadTooLarge(limit)),
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    req.set_payload(Payload::from(bytes));
    Ok(text)
}

/// The request's own id when it is well formed, else a fresh one.
fn request_id(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|value| value.to_str().ok())
        .filter(|id| is_acceptable_id(id))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

fn is_acceptable_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID_CHARS).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn set_request_id(headers: &mut actix_web::http::header::HeaderMap, id: &str) {
    // Ids are checked or generated to be plain ASCII, so this always succeeds.
    if let Ok(value) = HeaderValue::from_str(id) {
        headers.insert(HeaderName::from_static(REQUEST_ID_HEADER), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn the_routes_naming_a_participant_give_their_pattern_to_the_log() {
        use actix_web::{middleware::from_fn, test, App};
        use std::sync::{Arc, Mutex};

        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let app = test::init_service(
            App::new()
                .wrap(from_fn(move |req: ServiceRequest, next: Next<_>| {
                    let record = record.clone();
                    async move {
                        let path = req.path().to_owned();
                        let res = next.call(req).await?;
                        let logged = logged_path(&path, res.request().match_pattern());
                        record.lock().unwrap().push(logged);
                        Ok::<_, actix_web::Error>(res)
                    }
                }))
                .configure(crate::routes::configure),
        )
        .await;

        for (method, uri) in [
            ("GET", "/api/v1/users/alice%20smith"),
            ("PATCH", "/api/v1/users/alice"),
            ("POST", "/api/v1/users/alice/withdraw"),
            ("POST", "/api/v1/users/alice/erase"),
            ("GET", "/api/v1/users/alice/decisions/3"),
            ("GET", "/api/v1/users/alice/unknown"),
            ("POST", "/api/v1/action"),
        ] {
            let request = test::TestRequest::default()
                .method(method.parse().unwrap())
                .uri(uri)
                .to_request();
            test::call_service(&app, request).await;
        }

        assert_eq!(
            *seen.lock().unwrap(),
            [
                "/api/v1/users/{user_id}",
                "/api/v1/users/{user_id}",
                "/api/v1/users/{user_id}/withdraw",
                "/api/v1/users/{user_id}/erase",
                "/api/v1/users/{user_id}/decisions/{decision_idx}",
                PARTICIPANT_PATH,
                "/api/v1/action",
            ]
        );
    }

    #[test]
    fn paths_naming_a_participant_are_logged_as_their_pattern() {
        assert_eq!(logged_path("/api/v1/action", None), "/api/v1/action");
        assert_eq!(
            logged_path(
                "/api/v1/update/abc",
                Some("/api/v1/update/{update_id}".into())
            ),
            "/api/v1/update/abc"
        );
        assert_eq!(
            logged_path(
                "/api/v1/users/alice/withdraw",
                Some("/api/v1/users/{user_id}/withdraw".into())
            ),
            "/api/v1/users/{user_id}/withdraw"
        );
        assert_eq!(
            logged_path("/api/v1/users/alice/x/y", None),
            PARTICIPANT_PATH
        );
        // A pattern of some other route (the catch-all) does not bring the path back.
        assert_eq!(
            logged_path("/api/v1/users/alice", Some(String::new())),
            PARTICIPANT_PATH
        );
    }

    #[test]
    fn a_well_formed_incoming_id_is_kept() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        assert_eq!(request_id(Some(&header("abc-123_x.y"))), "abc-123_x.y");
        let long = "a".repeat(64);
        assert_eq!(request_id(Some(&header(&long))), long);
    }

    #[test]
    fn any_other_id_is_replaced() {
        for bad in ["", "has space", "a=b", &"a".repeat(65), "ünï"] {
            let value = HeaderValue::from_bytes(bad.as_bytes()).unwrap();
            let id = request_id(Some(&value));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");
        }
        assert!(uuid::Uuid::parse_str(&request_id(None)).is_ok());
    }
}
