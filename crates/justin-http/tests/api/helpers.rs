//! Test wiring: start the service in-process against a fresh database ([`spawn_app`]), talk to
//! it over HTTP ([`Client`]), receive its update callbacks ([`CallbackReceiver`]) and check
//! tables of error cases ([`check_cases`]). Every wait is bounded by [`WAIT`]; nothing sleeps.
//! What the other suites need too (the scratch directory, the test database, SQL on it, the
//! client and the receiver) comes from justin-testkit.

use std::path::{Path, PathBuf};

use justin_http::config::Config;
use justin_http::startup::{start, RunningServer};
pub use justin_testkit::{
    execute, sql_lines, CallbackReceiver, Client, ScratchDir, TestDatabase, WAIT,
};
use serde_json::{json, Value};

/// The client-side timestamp most requests carry.
pub const TIMESTAMP: &str = "2025-01-01T12:00:00Z";

/// The service, its database and its backup directory, for one test.
pub struct TestApp {
    client: Client,
    backup_dir: PathBuf,
    // Stopped in `drop`, before the fields below go: the database outlives the server.
    server: Option<RunningServer>,
    _scratch: ScratchDir,
    _db: TestDatabase,
}

/// Starts the service with the test defaults: a fresh database, a free port, backups on into a
/// fresh directory.
pub fn spawn_app() -> TestApp {
    spawn_app_with(|_| {})
}

/// Like [`spawn_app`], with `configure` changing the configuration last.
pub fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_with_algorithms(configure, &justin_algos::builtin())
}

/// Like [`spawn_app_with`], with `algorithms` as the algorithms `algorithm.name` may name.
pub fn spawn_app_with_algorithms(
    configure: impl FnOnce(&mut Config),
    algorithms: &justin_core::Registry,
) -> TestApp {
    let db = TestDatabase::create();
    let scratch = ScratchDir::new();
    let mut config = Config::default();
    config.database.url = db.url().to_owned();
    config.server.port = 0;
    config.backup.dir = scratch.path().to_path_buf();
    configure(&mut config);
    let backup_dir = config.backup.dir.clone();
    let server =
        start(config, algorithms).unwrap_or_else(|e| panic!("the service did not start: {e}"));
    TestApp {
        client: Client::new(server.base_url(), Some(WAIT)),
        backup_dir,
        server: Some(server),
        _scratch: scratch,
        _db: db,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

impl TestApp {
    /// A client of its own, for another thread.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// `http://127.0.0.1:<port>`, for requests the [`Client`] cannot make (other headers).
    pub fn base_url(&self) -> &str {
        self.client.base_url()
    }

    /// The configured `backup.dir`.
    pub fn backup_dir(&self) -> &Path {
        &self.backup_dir
    }

    /// The URL of the test's database, for checks in SQL ([`sql_lines`]).
    pub fn database_url(&self) -> &str {
        self._db.url()
    }

    /// `GET /api/v1/update/{id}`, which must answer 200.
    pub fn update_status(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/update/{id}"));
        assert_eq!(status, 200, "update {id}: {body}");
        body
    }

    /// Polls the update's status until `done` holds for it, for at most [`WAIT`]; the status
    /// that satisfied it.
    pub fn wait_for_update(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let body = self.update_status(id);
            if done(&body) {
                return body;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "update {id} did not reach the expected state within {WAIT:?}; last: {body}"
            );
            std::thread::yield_now();
        }
    }

    /// See [`Client::post_json`].
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        self.client.post_json(path, body)
    }

    /// POSTs `body` as JSON, which must get `expected`; the answer.
    pub fn post_expecting(&self, path: &str, body: &Value, expected: u16) -> Value {
        let (status, answer) = self.post_json(path, body);
        assert_eq!(status, expected, "{path} {body}: {answer}");
        answer
    }

    /// See [`Client::post_raw`].
    pub fn post_raw(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        self.client.post_raw(path, body, content_type)
    }

    /// See [`Client::get`].
    pub fn get(&self, path: &str) -> (u16, Value) {
        self.client.get(path)
    }

    /// PATCHes `body` as JSON; the status and the answer.
    pub fn patch_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let reply = self.client.send("PATCH", path, Some(body), &[]);
        (reply.status, reply.json)
    }

    /// POSTs with no body at all; the status and the answer.
    pub fn post_empty(&self, path: &str) -> (u16, Value) {
        let reply = self.client.send("POST", path, None, &[]);
        (reply.status, reply.json)
    }

    /// `GET /api/v1/users/{user}`, which must answer 200; the `user` object.
    pub fn participant(&self, user: &str) -> Value {
        let (status, body) = self.get(&format!("/api/v1/users/{user}"));
        assert_eq!(status, 200, "users/{user}: {body}");
        body["user"].clone()
    }

    /// See [`Client::delete`].
    pub fn delete(&self, path: &str) -> (u16, Value) {
        self.client.delete(path)
    }

    /// Registers `user`, which must succeed.
    pub fn add_user(&self, user: &str) {
        let (status, body) = self.post_json("/api/v1/add_user", &json!({ "user_id": user }));
        assert_eq!(status, 201, "add_user {user}: {body}");
    }

    /// Asks for the action of `(user, idx)` with the given temperature; the status and answer.
    pub fn action(&self, user: &str, idx: i64, temperature: f64) -> (u16, Value) {
        self.post_json("/api/v1/action", &action_body(user, idx, temperature))
    }

    /// Uploads study data for `(user, idx)` with the given temperature, which must succeed.
    pub fn upload(&self, user: &str, idx: i64, temperature: f64) {
        let (status, body) =
            self.post_json("/api/v1/upload_data", &upload_body(user, idx, temperature));
        assert_eq!(status, 201, "upload_data {user}/{idx}: {body}");
    }

    /// Asks for a model update calling back `callback_url`; the update id of the 202.
    pub fn request_update(&self, callback_url: &str) -> String {
        let (status, body) = self.post_json(
            "/api/v1/update",
            &json!({ "timestamp": TIMESTAMP, "callback_url": callback_url }),
        );
        assert_eq!(status, 202, "update: {body}");
        body["update_id"]
            .as_str()
            .unwrap_or_else(|| panic!("update_id is a string: {body}"))
            .to_owned()
    }

    /// The current parameters: their version and flat_prob's probability of action.
    pub fn current_parameters(&self) -> (i64, f64) {
        let (status, body) = self.get("/api/v1/parameters");
        assert_eq!(status, 200, "parameters: {body}");
        let version = body["version"].as_i64().expect("version is an integer");
        let p = body["parameters"]["probability_of_action"]
            .as_f64()
            .expect("probability_of_action is a number");
        (version, p)
    }
}

/// A valid `/action` body.
pub fn action_body(user: &str, idx: i64, temperature: f64) -> Value {
    json!({
        "user_id": user,
        "timestamp": TIMESTAMP,
        "decision_idx": idx,
        "context": { "temperature": temperature },
    })
}

/// A valid `/upload_data` body for the decision `answer` of `/action`: its action and
/// probability, so the upload agrees with the logged decision.
pub fn upload_body_for(user: &str, idx: i64, temperature: f64, answer: &Value) -> Value {
    let mut body = upload_body(user, idx, temperature);
    body["data"]["action"] = answer["action"].clone();
    body["data"]["action_prob"] = answer["action_prob"].clone();
    body
}

/// A valid `/upload_data` body.
pub fn upload_body(user: &str, idx: i64, temperature: f64) -> Value {
    json!({
        "user_id": user,
        "timestamp": TIMESTAMP,
        "decision_idx": idx,
        "data": {
            "context": { "temperature": temperature },
            "action": 1,
            "action_prob": 0.5,
            "state": [temperature],
            "outcome": { "clicks": 4 },
        },
    })
}

/// The service's error envelope.
pub fn error(message: &str) -> Value {
    json!({ "status": "failed", "message": message })
}

/// A request body, the status it must get and the error message it must carry.
pub type Case = (Value, u16, &'static str);

/// POSTs every case to `path` and fails listing every case that got another answer.
pub fn check_cases(app: &TestApp, path: &str, cases: &[Case]) {
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(body, status, message)| {
            let got = app.post_json(path, body);
            let expected = (*status, error(message));
            (got != expected).then(|| {
                format!(
                    "  {body}\n    expected {} {}\n    got      {} {}",
                    expected.0, expected.1, got.0, got.1
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases on {path} failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A copy of `base` with `key` set to `value` (or removed when `value` is `None`), at the top
/// level or, with `parent`, inside that object.
pub fn with(base: &Value, parent: Option<&str>, key: &str, value: Option<Value>) -> Value {
    let mut body = base.clone();
    let object = match parent {
        Some(parent) => &mut body[parent],
        None => &mut body,
    };
    let object = object
        .as_object_mut()
        .expect("the base body has that object");
    match value {
        Some(value) => object.insert(key.to_owned(), value),
        None => object.remove(key),
    };
    body
}

/// Parses an RFC 3339 timestamp or fails the test naming what it was.
pub fn rfc3339(value: &Value, what: &str) -> chrono::DateTime<chrono::Utc> {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} is a string: {value}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{what} {text:?} is RFC 3339: {e}"))
        .with_timezone(&chrono::Utc)
}
