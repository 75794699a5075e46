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
/// every POST handler takes. The body's bytes stay with it, for the few checks that need a
/// number as it was written ([`Literals`]).
#[derive(Debug)]
pub struct JsonBody(pub JsonObject, pub Literals);

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
            let (object, text) = json_object(&req, payload, limit).await?;
            Ok(JsonBody(object, Literals(text)))
        })
    }
}

/// The text of a request body, to read a top-level member as the client wrote it.
///
/// The parsed body cannot tell `-0` from `-0.0`, nor an integer literal beyond 64 bits from a
/// float: serde_json reads all of them as floats. The template's Python reads `-0` and every
/// integer literal as integers, so where it requires an integer the literal decides.
#[derive(Debug, Clone, Default)]
pub struct Literals(web::Bytes);

impl Literals {
    /// The JSON text of the top-level member `key`, as sent; `None` when it is absent (the
    /// last one counts when the key repeats, as in the parsed body).
    pub fn member(&self, key: &str) -> Option<Box<serde_json::value::RawValue>> {
        let mut members: std::collections::HashMap<String, Box<serde_json::value::RawValue>> =
            serde_json::from_slice(without_bom(&self.0)).ok()?;
        members.remove(key)
    }
}

/// The body limit when no application state is mounted (never the case when serving).
const DEFAULT_LIMIT: usize = 1024 * 1024;

/// The body timeout when no application state is mounted (never the case when serving).
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The UTF-8 byte order mark, which some clients write before a JSON body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The body without a leading UTF-8 byte order mark.
fn without_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(BOM).unwrap_or(bytes)
}

/// Whether the request declares a JSON body as the template's framework (Flask) counts it:
/// `application/json` or any `application/*+json` type, with or without parameters, in any
/// letter case.
fn declares_json(req: &HttpRequest) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = mime.split_once('/') else {
        return false;
    };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// Reads the body as a JSON object, within `limit` bytes; the object and the body's bytes.
/// A leading UTF-8 byte order mark is skipped.
///
/// # Errors
/// 415 when the body is not declared as JSON, 413 when it is too large, 408 when it has not
/// all arrived within `server.body_timeout_secs`, 400 when it is not a JSON object.
pub async fn json_object(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
) -> Result<(JsonObject, web::Bytes), ApiError> {
    if !declares_json(req) {
        return Err(ApiError::UnsupportedMediaType);
    }
    // A client that stalls mid-body would hold its connection for ever: after
    // `server.body_timeout_secs` it gets 408, and answering before the body is read closes
    // the connection.
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map_or(DEFAULT_TIMEOUT, |state| state.body_timeout);
    let read = actix_web::rt::time::timeout(timeout, payload.to_bytes_limited(limit)).await;
    let bytes = match read {
        Err(_elapsed) => return Err(ApiError::RequestTimeout),
        Ok(Ok(Ok(bytes))) => bytes,
        Ok(Ok(Err(e))) => {
            return Err(ApiError::BadRequest(format!(
                "The request body could not be read: {e}."
            )))
        }
        Ok(Err(_)) => return Err(ApiError::PayloadTooLarge(limit)),
    };
    match serde_json::from_slice::<Value>(without_bom(&bytes)) {
        Ok(Value::Object(map)) => Ok((map, bytes)),
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
    participant_id(raw)
}

/// The prefix of the pseudonyms erased participants' decisions are kept under; no request may
/// name such an id, so nothing is ever recorded for an erased participant, and no participant
/// can be registered under an id an erasure may give.
pub const ERASED_PREFIX: &str = "erased-";

/// A participant id sent by a client: valid, and not in the erased participants' namespace.
fn participant_id(raw: &str) -> Result<justin_core::UserId, ApiError> {
    if raw.starts_with(ERASED_PREFIX) {
        return Err(bad(
            "user_id must not start with 'erased-': such ids name erased participants.",
        ));
    }
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

/// What an integer literal means as a decision index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IndexLiteral {
    /// It fits.
    Fits(i64),
    /// A negative integer.
    Negative,
    /// An integer beyond 2^63 − 1.
    TooLarge,
}

/// The `decision_idx` of a request as the template's Python reads it: an integer literal of any
/// size (`-0` included), or `None` for anything else, whole floats such as `1.0` or `1e2`
/// included (Python reads those as floats, which the template refuses).
fn index_literal(value: &Value, literals: &Literals) -> Option<IndexLiteral> {
    if let Some(raw) = value.as_i64() {
        return Some(if raw < 0 {
            IndexLiteral::Negative
        } else {
            IndexLiteral::Fits(raw)
        });
    }
    if value.is_u64() {
        return Some(IndexLiteral::TooLarge);
    }
    // serde_json reads `-0` and integers beyond 64 bits as floats: the text decides.
    if !value.is_f64() {
        return None;
    }
    let text = literals.member("decision_idx")?;
    let text = text.get();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(if digits.bytes().all(|b| b == b'0') {
        IndexLiteral::Fits(0)
    } else if negative {
        IndexLiteral::Negative
    } else {
        IndexLiteral::TooLarge
    })
}

/// Whether the request's `decision_idx` is an integer as the template sees it (see
/// [`decision_idx`]), whatever its range.
pub fn is_integer_index(value: &Value, literals: &Literals) -> bool {
    index_literal(value, literals).is_some()
}

/// A decision index: an integer literal from 0 to 2^63 − 1, `-0` read as 0.
///
/// # Errors
/// When the value is not an integer literal, or is negative, or too large.
pub fn decision_idx(
    value: &Value,
    literals: &Literals,
) -> Result<justin_core::DecisionIdx, ApiError> {
    match index_literal(value, literals) {
        Some(IndexLiteral::Fits(raw)) => {
            justin_core::DecisionIdx::new(raw).map_err(|e| ApiError::BadRequest(e.0))
        }
        Some(IndexLiteral::Negative) => Err(bad("decision_idx must be a non-negative integer.")),
        // No study has that many decisions.
        Some(IndexLiteral::TooLarge) => Err(bad("decision_idx is too large.")),
        None => Err(bad("decision_idx must be an integer.")),
    }
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

/// A bound of a participant's time in the study (`study_start`, `study_end`), read as a
/// `timestamp` is and kept as sent; `None` for JSON `null`.
///
/// # Errors
/// When the value is not a string, or a string [`crate::timestamp::parse`] refuses; the
/// message names `key`.
pub fn study_time(
    value: &Value,
    key: &str,
    zone: chrono_tz::Tz,
) -> Result<Option<justin_core::SentTime>, ApiError> {
    if value.is_null() {
        return Ok(None);
    }
    let raw = value
        .as_str()
        .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a string.")))?;
    let at = crate::timestamp::parse(raw, zone).map_err(|e| {
        // The parser's messages name `timestamp`; this field has another name.
        let why = e.to_string();
        let why = why.strip_prefix("timestamp").unwrap_or(&why);
        ApiError::BadRequest(format!("{key}{why}"))
    })?;
    Ok(Some(justin_core::SentTime {
        at,
        sent: raw.to_owned(),
    }))
}

/// A required note the service stores as sent (a withdrawal's `reason`, a host decision's
/// `decided_by`): 1 to `max` bytes without control characters.
///
/// # Errors
/// 400 `<key> is required.` when missing, `null` or `""`, and 400 naming the rule broken
/// otherwise.
pub fn note(object: &JsonObject, key: &str, max: usize) -> Result<String, ApiError> {
    let raw = required(object, key)?
        .as_str()
        .ok_or_else(|| ApiError::BadRequest(format!("{key} must be a string.")))?;
    if raw.len() > max {
        return Err(ApiError::BadRequest(format!(
            "{key} must be at most {max} bytes long."
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(format!(
            "{key} must not contain control characters."
        )));
    }
    Ok(raw.to_owned())
}

/// A participant id taken from the path (`/api/v1/users/{user_id}`).
///
/// # Errors
/// When it is not a valid id.
pub fn path_user_id(raw: &str) -> Result<justin_core::UserId, ApiError> {
    participant_id(raw)
}

/// The fields of a decision request (`/action`, `/host_decision`) in the order the template
/// looks for them: `user_id` and `timestamp` (an empty string counts as missing, for both),
/// then `decision_idx`, then `context`.
pub struct DecisionFieldsSent<'a> {
    /// `user_id`, as sent.
    pub user: &'a Value,
    /// `timestamp`, as sent.
    pub timestamp: &'a Value,
    /// `decision_idx`, as sent.
    pub idx: &'a Value,
    /// `context`, as sent.
    pub context: &'a Value,
}

/// The decision fields of a request, each present.
///
/// # Errors
/// 400 naming the first missing one, in the template's order.
pub fn decision_fields(input: &JsonObject) -> Result<DecisionFieldsSent<'_>, ApiError> {
    let user = field(input, "user_id").filter(|v| v.as_str() != Some(""));
    let timestamp = field(input, "timestamp").filter(|v| v.as_str() != Some(""));
    let (Some(user), Some(timestamp)) = (user, timestamp) else {
        return Err(bad("user_id and timestamp are required."));
    };
    let idx = field(input, "decision_idx").ok_or_else(|| bad("decision_idx is required."))?;
    let context = field(input, "context").ok_or_else(|| bad("context is required."))?;
    Ok(DecisionFieldsSent {
        user,
        timestamp,
        idx,
        context,
    })
}

/// A decision request's key, time and availability, parsed.
pub struct DecisionKey {
    /// The participant.
    pub user_id: justin_core::UserId,
    /// The kind of decision.
    pub decision_type: justin_core::DecisionType,
    /// The decision time.
    pub decision_idx: justin_core::DecisionIdx,
    /// The request's `timestamp`.
    pub timestamp: Timestamp,
    /// `available` and `unavailable_reason`.
    pub availability: justin_core::Availability,
}

impl DecisionFieldsSent<'_> {
    /// Checks the fields' types in the template's order, then parses them with the request's
    /// optional `decision_type`, `available` and `unavailable_reason`. The context stays in
    /// `input` (checked to be an object), for the caller to move out.
    ///
    /// # Errors
    /// 400 naming the first field of the wrong type or value.
    pub fn parse(
        &self,
        input: &JsonObject,
        literals: &Literals,
        zone: chrono_tz::Tz,
    ) -> Result<DecisionKey, ApiError> {
        if !self.user.is_string() {
            return Err(bad("user_id must be a string."));
        }
        if !self.timestamp.is_string() {
            return Err(bad("timestamp must be a string or datetime object."));
        }
        if !is_integer_index(self.idx, literals) {
            return Err(bad("decision_idx must be an integer."));
        }
        if !self.context.is_object() {
            return Err(bad("context must be a dictionary."));
        }
        Ok(DecisionKey {
            user_id: user_id(self.user)?,
            decision_idx: decision_idx(self.idx, literals)?,
            timestamp: timestamp(self.timestamp, zone)?,
            decision_type: decision_type(input)?,
            availability: availability(input)?,
        })
    }
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

/// An action: 0 or 1, written as an integer or as a whole float (`1.0`, which the template's
/// integer column takes as 1).
///
/// # Errors
/// For any other value.
pub fn action(value: &Value) -> Result<justin_core::Action, ApiError> {
    let whole = value.as_i64().or_else(|| {
        value
            .as_f64()
            .and_then(|x| [0.0, 1.0].contains(&x).then_some(x as i64))
    });
    whole
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

    /// The `decision_idx` of a body written as `literal`, read as a handler reads it.
    fn index_of(literal: &str) -> Result<justin_core::DecisionIdx, ApiError> {
        let text = format!(r#"{{"decision_idx": {literal}}}"#);
        let literals = Literals(web::Bytes::from(text.clone()));
        let body: Value = serde_json::from_str(&text).unwrap();
        decision_idx(&body["decision_idx"], &literals)
    }

    #[test]
    fn decision_idx_is_an_integer_literal_from_0_to_2_to_the_63_minus_1() {
        for (literal, expected) in [
            ("3", 3),
            ("0", 0),
            ("-0", 0),
            ("9223372036854775807", i64::MAX),
        ] {
            assert_eq!(index_of(literal).unwrap().get(), expected, "{literal}");
        }
        for (literal, expected) in [
            ("1.5", "decision_idx must be an integer."),
            ("1.0", "decision_idx must be an integer."),
            ("-0.0", "decision_idx must be an integer."),
            ("1e2", "decision_idx must be an integer."),
            ("\"1\"", "decision_idx must be an integer."),
            ("true", "decision_idx must be an integer."),
            ("-1", "decision_idx must be a non-negative integer."),
            (
                "-99999999999999999999",
                "decision_idx must be a non-negative integer.",
            ),
            ("9223372036854775808", "decision_idx is too large."),
            ("18446744073709551615", "decision_idx is too large."),
            ("18446744073709551616", "decision_idx is too large."),
            (
                "1000000000000000000000000000000",
                "decision_idx is too large.",
            ),
        ] {
            assert_eq!(
                message(index_of(literal).unwrap_err()),
                expected,
                "{literal}"
            );
        }
    }

    #[test]
    fn literals_read_the_last_of_repeated_members_like_the_parsed_body() {
        let literals = Literals(web::Bytes::from_static(
            b"\xEF\xBB\xBF{\"decision_idx\": 1, \"decision_idx\": -0}",
        ));
        assert_eq!(literals.member("decision_idx").unwrap().get(), "-0");
        assert!(literals.member("context").is_none());
    }

    #[test]
    fn json_is_declared_as_flask_counts_it() {
        let declared = |content_type: &str| {
            let req = actix_web::test::TestRequest::default()
                .insert_header((header::CONTENT_TYPE, content_type))
                .to_http_request();
            declares_json(&req)
        };
        for json_type in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/vnd.api+json",
            "application/merge-patch+json; charset=UTF-8",
            "application/LD+JSON",
        ] {
            assert!(declared(json_type), "{json_type}");
        }
        for other in [
            "text/json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            "application/json-seq",
            "json",
            "",
        ] {
            assert!(!declared(other), "{other}");
        }
        let none = actix_web::test::TestRequest::default().to_http_request();
        assert!(!declares_json(&none));
    }

    #[test]
    fn a_leading_byte_order_mark_is_skipped() {
        assert_eq!(without_bom(b"\xEF\xBB\xBF{}"), b"{}");
        assert_eq!(without_bom(b"{}"), b"{}");
        // Only one, and only at the start.
        assert_eq!(
            without_bom(b"\xEF\xBB\xBF\xEF\xBB\xBF{}"),
            b"\xEF\xBB\xBF{}"
        );
    }

    #[test]
    fn actions_are_0_or_1_written_as_integers_or_whole_floats() {
        for (value, expected) in [
            (json!(0), 0),
            (json!(1), 1),
            (json!(0.0), 0),
            (json!(1.0), 1),
            (json!(-0.0), 0),
        ] {
            assert_eq!(action(&value).unwrap().as_i16(), expected, "{value}");
        }
        for value in [
            json!(2),
            json!(0.5),
            json!(-1),
            json!("1"),
            json!(true),
            json!(2.0),
        ] {
            assert_eq!(
                message(action(&value).unwrap_err()),
                "action must be 0 or 1.",
                "{value}"
            );
        }
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
