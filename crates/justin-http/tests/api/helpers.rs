//! Test wiring: start the service in-process against a fresh database ([`spawn_app`]), talk to
//! it over HTTP ([`Client`]), receive its update callbacks ([`CallbackReceiver`]) and check
//! tables of error cases ([`check_cases`]). Every wait is bounded by [`WAIT`]; nothing sleeps.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use justin_http::config::Config;
use justin_http::startup::{start, RunningServer};
use serde_json::{json, Value};

/// The longest a test waits for an answer or a callback before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The client-side timestamp most requests carry.
pub const TIMESTAMP: &str = "2025-01-01T12:00:00Z";

/// A directory under the system's temp dir, removed at drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new, empty directory.
    pub fn new() -> Self {
        let path =
            std::env::temp_dir().join(format!("justin-http-api-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&path).expect("can create a scratch directory");
        Self(path)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir is harmless.
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// An HTTP client for one running service. Cheap to clone, so threads can each hold one.
#[derive(Debug, Clone)]
pub struct Client {
    base_url: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base_url: String) -> Self {
        let agent = ureq::Agent::config_builder()
            // Error statuses are what many tests are about: they are answers, not failures.
            .http_status_as_error(false)
            .timeout_global(Some(WAIT))
            .build()
            .into();
        Self { base_url, agent }
    }

    /// POSTs `body` as JSON; the status and the JSON answer.
    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .send_json(body);
        answer("POST", path, response)
    }

    /// POSTs `body` as it is, declared as `content_type`; the status and the JSON answer.
    pub fn post_raw(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        let response = self
            .agent
            .post(format!("{}{path}", self.base_url))
            .header("Content-Type", content_type)
            .send(body);
        answer("POST", path, response)
    }

    /// GETs `path`; the status and the JSON answer.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let response = self.agent.get(format!("{}{path}", self.base_url)).call();
        answer("GET", path, response)
    }

    /// DELETEs `path`; the status and the JSON answer.
    pub fn delete(&self, path: &str) -> (u16, Value) {
        let response = self.agent.delete(format!("{}{path}", self.base_url)).call();
        answer("DELETE", path, response)
    }
}

/// Every answer of this service is JSON, errors included; anything else fails the test.
fn answer(
    method: &str,
    path: &str,
    response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, Value) {
    let mut response = response.unwrap_or_else(|e| panic!("{method} {path}: no HTTP answer: {e}"));
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {path}: unreadable body ({status}): {e}"));
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {path}: answer {status} is not JSON ({e}): {text:?}"));
    (status, json)
}

/// The environment variable choosing the storage backend the API tests run against:
/// `postgres` (the default) or `sqlite`. `make test` runs the suite once with each.
pub const BACKEND_VAR: &str = "JUSTIN_TEST_BACKEND";

/// A fresh database of the backend [`BACKEND_VAR`] names, dropped with the value.
pub enum TestDatabase {
    /// A database on the test PostgreSQL server.
    Postgres(justin_store::testing::TestDatabase),
    /// A SQLite file in a scratch directory.
    Sqlite(justin_store_sqlite::testing::TestDatabase),
}

impl TestDatabase {
    /// Creates one, or fails the test naming the variable when its value is unknown.
    pub fn create() -> Self {
        match std::env::var(BACKEND_VAR).as_deref() {
            Ok("sqlite") => Self::Sqlite(justin_store_sqlite::testing::TestDatabase::create()),
            Ok("postgres") | Err(_) => {
                Self::Postgres(justin_store::testing::TestDatabase::create())
            }
            Ok(other) => panic!("{BACKEND_VAR}={other:?}: expected postgres or sqlite"),
        }
    }

    /// The storage port on this database, for tests that drive the core directly.
    pub fn store(&self) -> std::sync::Arc<dyn justin_core::Store> {
        match self {
            Self::Postgres(db) => std::sync::Arc::new(db.store().clone()),
            Self::Sqlite(db) => std::sync::Arc::new(db.store().clone()),
        }
    }

    /// The database's URL, as `database.url` takes it.
    pub fn url(&self) -> &str {
        match self {
            Self::Postgres(db) => db.url(),
            Self::Sqlite(db) => db.url(),
        }
    }
}

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
    let db = TestDatabase::create();
    let scratch = ScratchDir::new();
    let mut config = Config::default();
    config.database.url = db.url().to_owned();
    config.server.port = 0;
    config.backup.dir = scratch.path().to_path_buf();
    configure(&mut config);
    let backup_dir = config.backup.dir.clone();
    let server = start(config, &justin_algos::builtin())
        .unwrap_or_else(|e| panic!("the service did not start: {e}"));
    TestApp {
        client: Client::new(server.base_url()),
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
        &self.client.base_url
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

/// Runs a query whose rows are one text column named `out` against the test database
/// (either backend) and returns them joined by newlines. Write it in SQL both dialects share.
pub fn sql_lines(database_url: &str, sql: &str) -> String {
    use diesel::{Connection, PgConnection, RunQueryDsl, SqliteConnection};

    #[derive(diesel::QueryableByName)]
    struct Line {
        #[diesel(sql_type = diesel::sql_types::Text)]
        out: String,
    }

    let lines: Vec<Line> = match database_url.strip_prefix("sqlite://") {
        Some(path) => {
            let mut conn = SqliteConnection::establish(path)
                .unwrap_or_else(|e| panic!("cannot open the test database: {e}"));
            diesel::sql_query(sql).load(&mut conn)
        }
        None => {
            let mut conn = PgConnection::establish(database_url)
                .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"));
            diesel::sql_query(sql).load(&mut conn)
        }
    }
    .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"));
    lines
        .into_iter()
        .map(|l| l.out)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `sql` (one or more statements, in SQL both dialects share) against the test database.
pub fn sql_execute(database_url: &str, sql: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, PgConnection, SqliteConnection};

    match database_url.strip_prefix("sqlite://") {
        Some(path) => SqliteConnection::establish(path)
            .unwrap_or_else(|e| panic!("cannot open the test database: {e}"))
            .batch_execute(sql),
        None => PgConnection::establish(database_url)
            .unwrap_or_else(|e| panic!("cannot connect to the test database: {e}"))
            .batch_execute(sql),
    }
    .unwrap_or_else(|e| panic!("{sql:?} failed: {e}"));
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

/// A local HTTP server that answers 200 to every request (or, built with
/// [`CallbackReceiver::failing_first`], an error status to the first ones) and hands each JSON
/// body it receives to the test, answered with an error or not.
pub struct CallbackReceiver {
    url: String,
    bodies: mpsc::Receiver<Value>,
}

impl CallbackReceiver {
    /// Starts listening on a free loopback port.
    pub fn start() -> Self {
        Self::failing_first(0, 200)
    }

    /// Starts listening on a free loopback port; answers `status` to the first `failures`
    /// requests and 200 to every one after (`usize::MAX` failures: always `status`).
    pub fn failing_first(failures: usize, status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("can bind a loopback port");
        let url = format!(
            "http://{}/callback",
            listener
                .local_addr()
                .expect("a bound listener has an address")
        );
        let (tx, bodies) = mpsc::channel();
        std::thread::spawn(move || {
            for (seen, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let body = read_json_request(&mut stream);
                let status = if seen < failures { status } else { 200 };
                let answer = format!(
                    "HTTP/1.1 {status} Test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                stream.write_all(answer.as_bytes()).ok();
                if tx.send(body).is_err() {
                    break; // The test is over.
                }
            }
        });
        Self { url, bodies }
    }

    /// A body received already and not taken yet, without waiting.
    pub fn try_next(&self) -> Option<Value> {
        self.bodies.try_recv().ok()
    }

    /// Where to send callbacks.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next callback body, waiting at most `wait`; `None` when none came.
    pub fn next_within(&self, wait: Duration) -> Option<Value> {
        self.bodies.recv_timeout(wait).ok()
    }

    /// The next callback body, waiting at most [`WAIT`].
    pub fn next(&self) -> Value {
        self.bodies
            .recv_timeout(WAIT)
            .unwrap_or_else(|e| panic!("no callback arrived within {WAIT:?}: {e}"))
    }
}

/// Reads one request; its JSON body, or a `receiver_error` object saying what was wrong with
/// it, so that a malformed callback fails the test with a reason rather than a timeout.
fn read_json_request(stream: &mut TcpStream) -> Value {
    let failure = |why: String| json!({ "receiver_error": why });
    let Ok(clone) = stream.try_clone() else {
        return failure("cannot read the connection".into());
    };
    let mut reader = BufReader::new(clone);
    let mut length = None;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return failure("the connection closed inside the headers".into()),
            Ok(_) => {}
            Err(e) => return failure(format!("cannot read the headers: {e}")),
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let Some(length) = length else {
        return failure("the request has no Content-Length".into());
    };
    let mut body = vec![0; length];
    if let Err(e) = reader.read_exact(&mut body) {
        return failure(format!("cannot read the body: {e}"));
    }
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        failure(format!(
            "the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&body)
        ))
    })
}
