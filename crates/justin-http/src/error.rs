//! The one HTTP error type. Client errors carry their message in the service's JSON envelope
//! (`{"status": "failed", "message": ...}`); server errors answer with an opaque message and
//! log their cause once, here at the boundary.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use justin_core::service::error_chain;
use justin_core::DomainError;
use serde_json::json;

/// An error answered to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid API key; the message says whether it was missing or wrong.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: the API key is valid but may not make this request (a read-only or metrics key).
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: the thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// 409: the request contradicts what is stored (an upload against its logged decision, a
    /// second withdrawal).
    #[error("{0}")]
    Conflict(String),
    /// 405: the route exists but not for this method.
    #[error("Method not allowed.")]
    MethodNotAllowed,
    /// 408: the client did not send the request in time (`server.header_timeout_secs`,
    /// `server.body_timeout_secs`); the connection is closed after the answer.
    #[error("The request was not received in time.")]
    RequestTimeout,
    /// 413: the body is larger than allowed.
    #[error("Request body is larger than {0} bytes.")]
    PayloadTooLarge(usize),
    /// 415: the body is not declared as JSON.
    #[error("Content-Type must be application/json.")]
    UnsupportedMediaType,
    /// 503: the database is unavailable.
    #[error("The database is unavailable. Try again shortly.")]
    Unavailable(#[source] DomainError),
    /// 500: anything else; the cause is logged, not shown.
    #[error("Internal server error.")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        match e {
            DomainError::InvalidInput(msg) => Self::BadRequest(msg),
            e @ (DomainError::UserExists
            | DomainError::DecisionExists
            | DomainError::NothingToCorrect
            | DomainError::InvalidBackup(_)) => Self::BadRequest(e.to_string()),
            e @ (DomainError::UploadMismatch { .. }
            | DomainError::CorrectionMismatch { .. }
            | DomainError::AlreadyWithdrawn
            | DomainError::DecisionDiffers(_)) => Self::Conflict(e.to_string()),
            e @ (DomainError::UserNotFound
            | DomainError::UpdateNotFound
            | DomainError::ParametersNotFound) => Self::NotFound(e.to_string()),
            e @ DomainError::Unavailable(_) => Self::Unavailable(e),
            e @ (DomainError::Setup(_) | DomainError::Algorithm(_) | DomainError::Store(_)) => {
                Self::Internal(Box::new(e))
            }
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::Unavailable(cause) => {
                log::warn!("database unavailable: {}", one_line(&error_chain(cause)));
            }
            Self::Internal(cause) => {
                log::error!("internal error: {}", one_line(&error_chain(cause.as_ref())));
            }
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let Self::Unauthorized(_) = self {
            response.insert_header((
                actix_web::http::header::WWW_AUTHENTICATE,
                r#"Bearer realm="justin""#,
            ));
        }
        response.json(json!({ "status": "failed", "message": self.to_string() }))
    }
}

/// `text` on one log line: libpq's messages span several ("... Connection refused\n\tIs the
/// server running ..."); their lines are joined with "; ".
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_errors_map_to_the_templates_statuses() {
        let cases = [
            (DomainError::UserExists, 400, "User already exists."),
            (DomainError::UserNotFound, 404, "User not found."),
            (
                DomainError::DecisionExists,
                400,
                "Decision index already exists.",
            ),
            (DomainError::InvalidInput("bad".into()), 400, "bad"),
            (
                DomainError::AlreadyWithdrawn,
                409,
                "User already withdrawn.",
            ),
        ];
        for (domain, status, message) in cases {
            let api = ApiError::from(domain);
            assert_eq!(api.status_code().as_u16(), status);
            assert_eq!(api.to_string(), message);
        }
        let internal = ApiError::from(DomainError::Setup("secret detail".into()));
        assert_eq!(internal.status_code().as_u16(), 500);
        assert!(!internal.to_string().contains("secret"));
    }
}
