//! Parsing at the edge: reading a JSON request body and turning its fields into core types,
//! each with the template's exact message. Handlers decide the order in which fields are
//! checked; the functions here check one field each.

use std::future::Future;
use std::pin::Pin;

use actix_web::{dev, http::header, web, FromRequest, HttpRequest};
use chrono::{DateTime, Utc};
use justin_core::JsonObject;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::AppState;

/// The request body as a JSON object, read within the configured size limit: the extractor
/// every POST handler takes.
#[derive(Debug)]
pub struct JsonBody(pub JsonObject);

impl FromRequest for JsonBody {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let req = req.clone();
        let payload = web::Payload::from_request(&req, payload).into_inner();
        Box::pin(async move {
            let limit = req
                .app_data::<web::Data<AppState>>()
                .map_or(DEFAULT_LIMIT, |state| state.max_body_bytes);
            // Taking the payload cannot fail; keep the text of an error should that change.
            let payload = payload
                .map_err(|e| ApiError::Internal(Box::new(std::io::Error::other(e.to_string()))))?;
            json_object(&req, payload, limit).await.map(JsonBody)
        })
    }
}

/// The body limit when no application state is mounted (never the case when serving).
const DEFAULT_LIMIT: usize = 1024 * 1024;

/// Reads the body as a JSON object, within `limit` bytes.
///
/// # Errors
/// 415 when the body is not declared as JSON, 413 when it is too large, 400 when it is not a
/// JSON object.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<JsonObject, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = match payload.to_bytes_limited(limit).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            return Err(ApiError::BadRequest(format!(
                "The request body could not be read: {e}."
            )))
        }
        Err(_) => return Err(ApiError::PayloadTooLarge(limit)),
    };
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::BadRequest(
            "Request body must be a JSON object.".into(),
        )),
        Err(_) => Err(ApiError::BadRequest(
            "Request body must be valid JSON.".into(),
        )),
    }
}

/// A field's value, treating JSON `null` as absent (as the template did).
pub fn field<'a>(object: &'a JsonObject, key: &str) -> Option<&'a Value> {
    object.get(key).filter(|v| !v.is_null())
}

fn bad(message: &str) -> ApiError {
    ApiError::BadRequest(message.into())
}

/// The field, or 400 `<key> is required.`; like the template, an empty string counts as
/// missing.
///
/// # Errors
/// When the field is missing, null or an empty string.
pub fn required<'a>(object: &'a JsonObject, key: &str) -> Result<&'a Value, ApiError> {
    field(object, key)
        .filter(|v| v.as_str() != Some(""))
        .ok_or_else(|| ApiError::BadRequest(format!("{key} is required.")))
}

/// A participant id.
///
/// # Errors
/// When the value is not a string, or not a valid id.
pub fn user_id(value: &Value) -> Result<justin_core::UserId, ApiError> {
    let raw = value
        .as_str()
        .ok_or_else(|| bad("user_id must be a string."))?;
    justin_core::UserId::parse(raw).map_err(|e| ApiError::BadRequest(e.0))
}

/// The optional `decision_type` of a request: absent or `null` is the default type.
///
/// # Errors
/// When the value is not a string, or not a valid decision type.
pub fn decision_type(object: &JsonObject) -> Result<justin_core::DecisionType, ApiError> {
    match field(object, "decision_type") {
        None => Ok(justin_core::DecisionType::default()),
        Some(value) => {
            let raw = value
                .as_str()
                .ok_or_else(|| bad("decision_type must be a string."))?;
            justin_core::DecisionType::parse(raw).map_err(|e| ApiError::BadRequest(e.0))
        }
    }
}

/// The optional `available` and `unavailable_reason` of an action request: absent or `null`
/// `available` means available; a reason is only accepted with `available: false`.
///
/// # Errors
/// When `available` is not a boolean, the reason is not a string or too long, or a reason is
/// given for an available decision.
pub fn availability(object: &JsonObject) -> Result<justin_core::Availability, ApiError> {
    let available = match field(object, "available") {
        None => true,
        Some(value) => value
            .as_bool()
            .ok_or_else(|| bad("available must be true or false."))?,
    };
    let reason = match field(object, "unavailable_reason") {
        None => None,
        Some(value) => Some(
            value
                .as_str()
                .ok_or_else(|| bad("unavailable_reason must be a string."))?
                .to_owned(),
        ),
    };
    match (available, reason) {
        (true, None) => Ok(justin_core::Availability::Available),
        (true, Some(_)) => Err(bad(
            "unavailable_reason is only allowed with available: false.",
        )),
        (false, reason) => {
            justin_core::Availability::unavailable(reason).map_err(|e| ApiError::BadRequest(e.0))
        }
    }
}

/// A decision index.
///
/// # Errors
/// When the value is not a whole number, or is negative.
pub fn decision_idx(value: &Value) -> Result<justin_core::DecisionIdx, ApiError> {
    let raw = match value.as_i64() {
        Some(raw) => raw,
        // Whole numbers beyond i64 are integers, but no study has that many decisions.
        None if value.is_u64() => {
            return Err(bad("decision_idx is too large."));
        }
        None => return Err(bad("decision_idx must be an integer.")),
    };
    justin_core::DecisionIdx::new(raw).map_err(|e| ApiError::BadRequest(e.0))
}

/// A timestamp, in any form [`crate::timestamp`] reads; without an offset it is local time in
/// `zone`. The text is kept as sent, next to the instant it was read as.
///
/// # Errors
/// When the value is not a string, or a string [`crate::timestamp::parse`] refuses.
pub fn timestamp(value: &Value, zone: chrono_tz::Tz) -> Result<Timestamp, ApiError> {
    let raw = value
        .as_str()
        .ok_or_else(|| bad("timestamp must be a string or datetime object."))?;
    let at = crate::timestamp::parse(raw, zone).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Timestamp {
        at,
        sent: raw.to_owned(),
    })
}

/// A request's `timestamp`: the instant it names and the text as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timestamp {
    /// The instant, in UTC, to the microsecond.
    pub at: DateTime<Utc>,
    /// The text exactly as the client sent it.
    pub sent: String,
}

/// A JSON object field such as a context or an outcome.
///
/// # Errors
/// 400 `<key> must be a dictionary.` for anything else.
pub fn object(value: &Value, key: &str) -> Result<JsonObject, ApiError> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a dictionary.")))
}

/// A JSON object that will be stored as the client sent it (a context or an outcome).
///
/// # Errors
/// 400 `<key> must be a dictionary.` for anything else, and 400 when a string or key in it
/// holds U+0000.
pub fn stored_object(value: Value, key: &str) -> Result<JsonObject, ApiError> {
    // Taken by value: the request's own map becomes the stored one, with no copy.
    let Value::Object(object) = value else {
        return Err(ApiError::BadRequest(format!("{key} must be a dictionary.")));
    };
    if object.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
        // PostgreSQL's JSONB cannot store U+0000; refuse it here rather than fail on write.
        return Err(ApiError::BadRequest(format!(
            "{key} must not contain the character \\u0000."
        )));
    }
    Ok(object)
}

/// Whether a JSON value holds U+0000 in any string or key, at any depth.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        Value::Null | Value::Bool(_) | Value::Number(_) => false,
    }
}

/// An action: the integer 0 or 1.
///
/// # Errors
/// For any other value.
pub fn action(value: &Value) -> Result<justin_core::Action, ApiError> {
    value
        .as_i64()
        .and_then(|raw| justin_core::Action::from_i64(raw).ok())
        .ok_or_else(|| bad("action must be 0 or 1."))
}

/// A probability of action 1.
///
/// # Errors
/// When the value is not a number in [0, 1].
pub fn action_prob(value: &Value) -> Result<justin_core::Probability, ApiError> {
    value
        .as_f64()
        .and_then(|raw| justin_core::Probability::new(raw).ok())
        .ok_or_else(|| bad("action_prob must be a number between 0 and 1."))
}

/// A state: a list of numbers.
///
/// # Errors
/// For anything else.
pub fn state(value: &Value) -> Result<justin_core::State, ApiError> {
    let message = "state must be a list of numbers.";
    let items = value.as_array().ok_or_else(|| bad(message))?;
    let numbers = items
        .iter()
        .map(Value::as_f64)
        .collect::<Option<Vec<f64>>>()
        .ok_or_else(|| bad(message))?;
    justin_core::State::new(numbers).map_err(|_| bad(message))
}

/// The host of an http or https URL (without user info or port; IPv6 keeps its brackets).
pub fn url_host(url: &str) -> &str {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port.split(':').next().unwrap_or(host_port)
}

/// A callback URL: an absolute http or https URL with a host.
///
/// # Errors
/// When the value is not a string, or not such a URL.
pub fn callback_url(value: &Value) -> Result<String, ApiError> {
    let raw = value
        .as_str()
        .ok_or_else(|| bad("callback_url must be a string."))?;
    let rest = raw
        .strip_prefix("http://")
        .or_else(|| raw.strip_prefix("https://"));
    let authority = rest.and_then(|r| r.split(['/', '?', '#']).next());
    let host_port = authority.map(|a| a.rsplit_once('@').map_or(a, |(_, h)| h));
    // The port is what follows the host (after the closing bracket of an IPv6 address).
    let port = host_port.and_then(|hp| {
        let after_host = match hp.find(']') {
            Some(end) if hp.starts_with('[') => &hp[end + 1..],
            _ => hp.find(':').map_or("", |at| &hp[at..]),
        };
        after_host.strip_prefix(':')
    });
    let valid = rest.is_some()
        && !url_host(raw).is_empty()
        && port.is_none_or(|p| p.parse::<u16>().is_ok())
        && !raw
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '\\');
    if valid {
        Ok(raw.to_owned())
    } else {
        Err(bad("callback_url must be an absolute http or https URL."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(e: ApiError) -> String {
        e.to_string()
    }

    #[test]
    fn null_counts_as_missing() {
        let obj = json!({"a": null, "b": 1});
        let obj = obj.as_object().unwrap();
        assert!(field(obj, "a").is_none());
        assert!(field(obj, "b").is_some());
        assert_eq!(message(required(obj, "a").unwrap_err()), "a is required.");
    }

    #[test]
    fn empty_strings_count_as_missing() {
        let obj = json!({"timestamp": ""});
        assert_eq!(
            message(required(obj.as_object().unwrap(), "timestamp").unwrap_err()),
            "timestamp is required."
        );
    }

    #[test]
    fn objects_with_nul_characters_are_refused() {
        for bad_object in [
            json!({"note": "a\0b"}),
            json!({"a\0": 1}),
            json!({"deep": [{"x": ["\0"]}]}),
        ] {
            assert_eq!(
                message(stored_object(bad_object, "context").unwrap_err()),
                "context must not contain the character \\u0000."
            );
        }
        assert!(stored_object(json!({"temperature": 23, "note": "fine"}), "context").is_ok());
    }

    #[test]
    fn user_id_must_be_a_string() {
        assert_eq!(
            message(user_id(&json!(5)).unwrap_err()),
            "user_id must be a string."
        );
        assert_eq!(user_id(&json!("u1")).unwrap().as_str(), "u1");
    }

    #[test]
    fn decision_idx_must_be_a_non_negative_integer() {
        assert_eq!(decision_idx(&json!(3)).unwrap().get(), 3);
        assert_eq!(
            message(decision_idx(&json!(1.5)).unwrap_err()),
            "decision_idx must be an integer."
        );
        assert_eq!(
            message(decision_idx(&json!("1")).unwrap_err()),
            "decision_idx must be an integer."
        );
        assert_eq!(
            message(decision_idx(&json!(-1)).unwrap_err()),
            "decision_idx must be a non-negative integer."
        );
        assert!(decision_idx(&json!(u64::MAX)).is_err());
    }

    #[test]
    fn timestamps_keep_the_text_sent_next_to_the_instant() {
        use chrono_tz::Tz;
        let t = timestamp(&json!("2025-01-01T12:00:00Z"), Tz::UTC).unwrap();
        assert_eq!(t.at.to_rfc3339(), "2025-01-01T12:00:00+00:00");
        assert_eq!(t.sent, "2025-01-01T12:00:00Z");
        // The template's own form: no offset, read in the configured zone.
        let naive = timestamp(&json!("2025-01-01T12:00:00"), Tz::UTC).unwrap();
        assert_eq!(
            (naive.at, naive.sent.as_str()),
            (t.at, "2025-01-01T12:00:00")
        );
        let berlin = timestamp(&json!("2025-01-01 13:00:00"), Tz::Europe__Berlin).unwrap();
        assert_eq!(
            (berlin.at, berlin.sent.as_str()),
            (t.at, "2025-01-01 13:00:00")
        );
        for not_a_string in [json!(12), json!(true), json!(["2025-01-01"]), json!({})] {
            assert_eq!(
                message(timestamp(&not_a_string, Tz::UTC).unwrap_err()),
                "timestamp must be a string or datetime object."
            );
        }
        assert_eq!(
            message(timestamp(&json!("yesterday"), Tz::UTC).unwrap_err()),
            crate::timestamp::TimestampError::Format(Tz::UTC).to_string()
        );
        assert_eq!(
            message(timestamp(&json!("9999-12-31T23:59:59-23:59"), Tz::UTC).unwrap_err()),
            crate::timestamp::TimestampError::OutOfRange.to_string()
        );
    }

    #[test]
    fn action_and_probability_ranges() {
        assert!(action(&json!(1)).is_ok());
        assert_eq!(
            message(action(&json!(2)).unwrap_err()),
            "action must be 0 or 1."
        );
        assert_eq!(
            message(action(&json!(true)).unwrap_err()),
            "action must be 0 or 1."
        );
        assert!(action_prob(&json!(0.5)).is_ok());
        assert_eq!(
            message(action_prob(&json!(1.5)).unwrap_err()),
            "action_prob must be a number between 0 and 1."
        );
    }

    #[test]
    fn state_is_a_list_of_numbers() {
        assert_eq!(state(&json!([30, 1.5])).unwrap().values(), &[30.0, 1.5]);
        for bad_state in [json!("30"), json!([30, "x"]), json!({"a": 1})] {
            assert_eq!(
                message(state(&bad_state).unwrap_err()),
                "state must be a list of numbers."
            );
        }
    }

    #[test]
    fn url_hosts_drop_user_info_and_port() {
        assert_eq!(url_host("http://example.com/cb"), "example.com");
        assert_eq!(url_host("https://user:pw@study.org:8443/x?y"), "study.org");
        assert_eq!(url_host("http://[::1]:9000/cb"), "[::1]");
        assert_eq!(url_host("http://127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn callback_urls_must_be_absolute_http() {
        assert!(callback_url(&json!("http://example.com/callback")).is_ok());
        assert!(callback_url(&json!("https://127.0.0.1:9000")).is_ok());
        assert!(callback_url(&json!("http://[::1]:9000/cb")).is_ok());
        assert!(callback_url(&json!("http://user:pw@study.org/cb")).is_ok());
        for bad_url in [
            "example.com/cb",
            "ftp://x/y",
            "http://",
            "http:///path",
            "http://a b",
            "http://@/",
            "http://h:99999999/",
            "http://h:port/",
            "http://h\\@x/",
        ] {
            assert_eq!(
                message(callback_url(&json!(bad_url)).unwrap_err()),
                "callback_url must be an absolute http or https URL.",
                "{bad_url}"
            );
        }
        assert_eq!(
            message(callback_url(&json!(1)).unwrap_err()),
            "callback_url must be a string."
        );
    }
}
