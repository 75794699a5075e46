//! A test client of the service's HTTP API. Every answer of the service is JSON, errors
//! included, so each request returns the status and the parsed body, and anything else (no
//! answer, a body that is not JSON) fails the test with what went wrong. Error statuses are
//! answers, not failures: many tests are about them.

use std::time::Duration;

use serde_json::Value;

/// A client of one running service. Cheap to clone, so threads can each hold one.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    agent: ureq::Agent,
}

/// An answer with its headers.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, parsed.
    pub json: Value,
    /// The headers.
    pub headers: ureq::http::HeaderMap,
}

impl Reply {
    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Client {
    /// A client of the service at `base_url` (`http://127.0.0.1:<port>`), whose requests give
    /// up after `timeout` when one is given.
    pub fn new(base_url: impl Into<String>, timeout: Option<Duration>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build()
            .into();
        Self {
            base_url: base_url.into(),
            agent,
        }
    }

    /// The service's base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// POSTs `body` as JSON; the status and the JSON answer.
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.agent.post(self.url(path)).send_json(body);
        let reply = answer("POST", path, response);
        (reply.status, reply.json)
    }

    /// POSTs `body` as it is, declared as `content_type`; the status and the JSON answer.
    pub fn post_raw(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        let response = self
            .agent
            .post(self.url(path))
            .header("Content-Type", content_type)
            .send(body);
        let reply = answer("POST", path, response);
        (reply.status, reply.json)
    }

    /// GETs `path`; the status and the JSON answer.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let reply = answer("GET", path, self.agent.get(self.url(path)).call());
        (reply.status, reply.json)
    }

    /// DELETEs `path`; the status and the JSON answer.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let reply = answer("DELETE", path, self.agent.delete(self.url(path)).call());
        (reply.status, reply.json)
    }

    /// Sends `method path` with extra headers and, when given, a JSON body; the answer with
    /// its headers.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = match body {
            Some(body) => self.agent.run(
                request
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .expect("a valid request"),
            ),
            None => self.agent.run(request.body(()).expect("a valid request")),
        };
        answer(method, path, response)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

/// The answer, which must be JSON; anything else fails the test.
fn answer(
    method: &str,
    path: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Reply {
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: no HTTP answer: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {path}: unreadable body ({status}): {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: answer {status} is not JSON ({e}): {text:?}"));
    Reply {
        status,
        json,
        headers,
    }
}
