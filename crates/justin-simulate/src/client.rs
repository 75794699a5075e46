//! The simulator's HTTP client of the JustIn API: one method per request it makes, each
//! turning any answer other than the expected success into a message with the status and the
//! service's own message. Request bodies (contexts, outcomes) never appear in a message.

use std::time::Duration;

use serde_json::{json, Value};

/// An API key: never shown, not even by `{:?}`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: String) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<hidden>)")
    }
}

impl std::str::FromStr for ApiKey {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A decision as `/action` answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// 0 or 1.
    pub action: u8,
    /// The probability of action 1.
    pub action_prob: f64,
    /// What the algorithm made of the context, to send back with the upload (`[]` when the
    /// answer has none).
    pub state: Value,
    /// Whether the participant was in the study at the decision's time (the answer says
    /// `"in_study": false` when not).
    pub in_study: bool,
    /// Whether the decision was available (the answer says `"available": false` when the
    /// study server or the algorithm said it was not).
    pub available: bool,
}

/// The current parameters, as far as the simulator needs them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parameters {
    /// Their version.
    pub version: i64,
    /// `min_probability` and `max_probability`, when the algorithm stores both.
    pub clip: Option<(f64, f64)>,
}

/// The service, at one base URL.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    key: Option<ApiKey>,
}

/// An answer: its status and its body, JSON when it parses (`null` otherwise).
struct Answer {
    status: u16,
    json: Value,
    text: String,
}

impl Client {
    /// A client of the service at `base` (without the `/api/v1`), whose requests give up
    /// after `timeout`.
    pub fn new(base: &str, key: Option<ApiKey>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            key,
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Answer, String> {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(ApiKey(key)) = &self.key {
            request = request.header("Authorization", format!("Bearer {key}"));
        }
        let built = match body {
            Some(body) => request
                .header("Content-Type", "application/json")
                .body(body.to_string())
                .map(|r| self.agent.run(r)),
            None => request.body(()).map(|r| self.agent.run(r)),
        };
        let mut response = built
            .map_err(|e| format!("cannot make a request to {url}: {e}"))?
            .map_err(|e| {
                format!(
                    "cannot reach the service at {} ({method} {path}): {e}",
                    self.base
                )
            })?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("{method} {path}: cannot read the answer: {e}"))?;
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, json, text })
    }

    /// Registers a participant; one registered already (by an earlier run) is fine.
    ///
    /// # Errors
    /// When the service cannot be reached or refuses otherwise.
    pub fn add_user(&self, body: &Value) -> Result<(), String> {
        let answer = self.send("POST", "/api/v1/add_user", Some(body))?;
        let exists = answer.status == 409
            || (answer.status == 400 && answer.json["message"] == "User already exists.");
        if answer.status == 201 || exists {
            Ok(())
        } else {
            Err(refused("POST /api/v1/add_user", &answer))
        }
    }

    /// Asks for a decision.
    ///
    /// # Errors
    /// When the service cannot be reached, refuses, or answers without an action or a
    /// probability.
    pub fn action(&self, body: &Value) -> Result<Decision, String> {
        const WHAT: &str = "POST /api/v1/action";
        let answer = self.send("POST", "/api/v1/action", Some(body))?;
        if !matches!(answer.status, 200 | 201) {
            return Err(refused_decision(WHAT, &answer));
        }
        // The decision's fields, at the top or under `data`.
        let fields = match answer.json.get("data") {
            Some(data) if data.is_object() => data,
            _ => &answer.json,
        };
        let action = match fields["action"].as_u64() {
            Some(0) => 0,
            Some(1) => 1,
            _ => return Err(format!("{WHAT} answered without an action of 0 or 1")),
        };
        let action_prob = fields["action_prob"]
            .as_f64()
            .ok_or_else(|| format!("{WHAT} answered without an action_prob"))?;
        let state = match &fields["state"] {
            Value::Null => json!([]),
            state => state.clone(),
        };
        Ok(Decision {
            action,
            action_prob,
            state,
            in_study: fields["in_study"] != Value::Bool(false),
            available: fields["available"] != Value::Bool(false),
        })
    }

    /// Withdraws a participant.
    ///
    /// # Errors
    /// When the service cannot be reached or refuses.
    pub fn withdraw(&self, user_id: &str, reason: &str) -> Result<(), String> {
        let path = format!("/api/v1/users/{}/withdraw", path_segment(user_id));
        let answer = self.send("POST", &path, Some(&json!({"reason": reason})))?;
        if answer.status == 200 {
            return Ok(());
        }
        Err(refused("POST /api/v1/users/{user_id}/withdraw", &answer))
    }

    /// Erases a participant; the pseudonym their kept decisions carry from then on.
    ///
    /// # Errors
    /// When the service cannot be reached, refuses, or answers without the audit record.
    pub fn erase(&self, user_id: &str) -> Result<String, String> {
        const WHAT: &str = "POST /api/v1/users/{user_id}/erase";
        let path = format!("/api/v1/users/{}/erase", path_segment(user_id));
        let answer = self.send("POST", &path, None)?;
        if answer.status != 200 {
            return Err(refused(WHAT, &answer));
        }
        answer.json["erasure"]["pseudonym"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{WHAT} answered without the erasure's pseudonym"))
    }

    /// Uploads what happened after a decision.
    ///
    /// # Errors
    /// When the service cannot be reached or refuses.
    pub fn upload(&self, body: &Value) -> Result<(), String> {
        let answer = self.send("POST", "/api/v1/upload_data", Some(body))?;
        if answer.status == 201 {
            return Ok(());
        }
        Err(refused_decision("POST /api/v1/upload_data", &answer))
    }

    /// Requests an update; its id.
    ///
    /// # Errors
    /// When the service cannot be reached, refuses, or answers without an id.
    pub fn request_update(&self, timestamp: &str, callback_url: &str) -> Result<String, String> {
        const WHAT: &str = "POST /api/v1/update";
        let body = json!({"timestamp": timestamp, "callback_url": callback_url});
        let answer = self.send("POST", "/api/v1/update", Some(&body))?;
        if answer.status != 202 {
            return Err(refused(WHAT, &answer));
        }
        answer.json["update_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("{WHAT} answered without an update_id"))
    }

    /// Where an update stands: `processing`, `completed` or `failed`.
    ///
    /// # Errors
    /// When the service cannot be reached, refuses, or answers without a status.
    pub fn update_status(&self, update_id: &str) -> Result<String, String> {
        let path = format!("/api/v1/update/{update_id}");
        let answer = self.send("GET", &path, None)?;
        if answer.status != 200 {
            return Err(refused(&format!("GET {path}"), &answer));
        }
        answer.json["update_status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("GET {path} answered without an update_status"))
    }

    /// The current parameters.
    ///
    /// # Errors
    /// When the service cannot be reached, refuses, or answers without a version.
    pub fn parameters(&self) -> Result<Parameters, String> {
        const WHAT: &str = "GET /api/v1/parameters";
        let answer = self.send("GET", "/api/v1/parameters", None)?;
        if answer.status != 200 {
            return Err(refused(WHAT, &answer));
        }
        let version = answer.json["version"]
            .as_i64()
            .ok_or_else(|| format!("{WHAT} answered without a version"))?;
        Ok(Parameters {
            version,
            clip: clip_bounds(&answer.json["parameters"]),
        })
    }
}

/// A participant id as one segment of a URL path: every byte but the unreserved ones
/// percent-encoded.
fn path_segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `min_probability` and `max_probability` of a parameter set, when it holds both.
fn clip_bounds(values: &Value) -> Option<(f64, f64)> {
    Some((
        values.get("min_probability")?.as_f64()?,
        values.get("max_probability")?.as_f64()?,
    ))
}

/// [`refused`], with a hint when an earlier run with the same participant ids got there first.
fn refused_decision(what: &str, answer: &Answer) -> String {
    let mut message = refused(what, answer);
    if answer.json["message"] == "Decision index already exists." {
        message.push_str(
            " (an earlier run used these participant ids: give another --user-prefix or --seed)",
        );
    }
    message
}

/// The message for an answer that is not the expected success: the status and the service's
/// message (or the start of a body that is not the service's JSON, from a proxy say).
fn refused(what: &str, answer: &Answer) -> String {
    let said = match answer.json["message"].as_str() {
        Some(message) => message.to_owned(),
        None => answer.text.chars().take(200).collect(),
    };
    format!("{what} answered {}: {said}", answer.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_never_shown() {
        let key = ApiKey::new("s3cret-key-0123456789".into());
        assert!(!format!("{key:?}").contains("s3cret"));
        let client = Client::new("http://127.0.0.1:1/", Some(key), Duration::from_secs(1));
        assert!(!format!("{client:?}").contains("s3cret"));
        assert_eq!(client.base(), "http://127.0.0.1:1");
    }

    #[test]
    fn ids_are_encoded_as_one_path_segment() {
        assert_eq!(path_segment("sim-7-0"), "sim-7-0");
        assert_eq!(path_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(path_segment("\u{e9}"), "%C3%A9");
    }

    #[test]
    fn clip_bounds_need_both_values() {
        let both = json!({"min_probability": 0.1, "max_probability": 0.9, "mu": [0.0]});
        assert_eq!(clip_bounds(&both), Some((0.1, 0.9)));
        assert_eq!(clip_bounds(&json!({"min_probability": 0.1})), None);
        assert_eq!(clip_bounds(&json!({"probability_of_action": 0.5})), None);
    }

    #[test]
    fn a_refusal_names_the_request_status_and_message() {
        let answer = Answer {
            status: 401,
            json: json!({"status": "failed", "message": "Invalid credentials."}),
            text: String::new(),
        };
        assert_eq!(
            refused("GET /api/v1/parameters", &answer),
            "GET /api/v1/parameters answered 401: Invalid credentials."
        );
        let proxy = Answer {
            status: 502,
            json: Value::Null,
            text: "Bad Gateway".into(),
        };
        assert_eq!(refused("X", &proxy), "X answered 502: Bad Gateway");
    }
}
